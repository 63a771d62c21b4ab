//! corekv-raft: Raft as a pure state machine (in progress).
