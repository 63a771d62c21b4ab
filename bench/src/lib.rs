//! corekv-bench: load generators and microbenchmarks.
//!
//! * [`load`]: the `corekv-bench` load generator over the binary protocol (put, get,
//!   mixed, txn and watch workloads; hdrhistogram percentiles; `--json`). An etcd gRPC
//!   mode, to drive real etcd with the same load, comes with the gRPC gateway.
//! * Microbenchmarks of the pure crates, each a binary under `src/bin/` (`engine_bench`,
//!   `wal_bench`, `raft_throughput`), so that numbers are measured in release builds,
//!   never in timed unit tests. docs/benchmarks.md holds the figures.

pub mod load;
