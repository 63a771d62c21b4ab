//! corekv-net: the node, its protocols and its client.
//!
//! * [`protocol`]: the binary protocol's messages and codec (docs/protocol.md). Pure.
//! * [`client`]: an async client over the binary protocol, used by `corekvctl`,
//!   `corekv-bench` and the tests.
//! * [`server`]: the `corekv` server: one glommio executor per core, the shard driver
//!   that ties `corekv-raft`, `corekv-wal` and `corekv-engine` together on one core, and
//!   the connection handlers on every core.
//!
//! This crate owns every executor, socket and file; business logic lives in the engine
//! and in Raft.

pub mod client;
pub mod gateway;
pub mod protocol;
pub mod server;
