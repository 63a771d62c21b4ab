//! corekv-bench: load generators and microbenchmarks.
//!
//! Holds the `corekv-bench` load generator (binary protocol and etcd gRPC, arriving with
//! the server issue) and the microbenchmarks of the pure crates, each a binary under
//! `src/bin/` so that numbers are measured in release builds, never in timed unit tests.

pub mod load;
