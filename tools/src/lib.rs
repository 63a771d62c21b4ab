//! corekv-tools: operator tools.
//!
//! * [`ctl`]: `corekvctl`, an etcdctl-like CLI over the binary protocol (put, get, del,
//!   txn, watch, lease, compaction, endpoint status; simple and json output).
//!
//! The WAL and snapshot inspectors will live here too.

pub mod ctl;
