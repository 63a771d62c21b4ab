//! corekv-net: the node.
//!
//! This crate will own everything that touches the outside world: the per-core glommio
//! executors, the shard driver that ties `corekv-raft`, `corekv-wal` and `corekv-engine`
//! together, the peer transport, the binary protocol server, the gRPC gateway and the HTTP
//! endpoints, and the `corekv` server binary.
//!
//! It must never hold business logic that belongs in the engine or in Raft. The server
//! arrives with the single-node server issue; until then this crate is empty on purpose.
