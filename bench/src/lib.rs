//! corekv-bench: load generators and microbenchmarks.
//!
//! * [`load`]: the `corekv-bench` load generator (put, get, mixed, txn and watch
//!   workloads; hdrhistogram percentiles; `--json`), over corekv's binary protocol or,
//!   with `--protocol etcd-grpc`, over etcd's v3 gRPC API, so that the same load runs
//!   against corekv's client URLs and real etcd. `--server-pid` adds the server's CPU
//!   time per 100k operations (read from /proc), next to the generator's own.
//! * `bench/compare-etcd.sh`: starts a fresh real etcd and a fresh corekv in turn on
//!   this machine, puts the same durable gRPC load on each and prints the medians and
//!   the corekv/etcd ratios (throughput, p99, server CPU per put).
//! * Microbenchmarks of the pure crates, each a binary under `src/bin/` (`engine_bench`,
//!   `wal_bench`, `raft_throughput`), so that numbers are measured in release builds,
//!   never in timed unit tests. docs/benchmarks.md holds the figures.

pub mod load;
