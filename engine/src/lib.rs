//! corekv-engine: the MVCC store (in progress).
