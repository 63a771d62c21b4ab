//! The deterministic simulator: N Raft members, their disks, a faulty network, clients
//! and an operator, all driven by one seed. Test support, but pure like the rest of the
//! crate: no IO, no clock, no threads; traces go to a caller-supplied sink.
//!
//! A run has two phases. In the **fault phase** the network drops, duplicates, delays
//! and reorders messages and is cut symmetrically and asymmetrically; members crash
//! (losing everything not yet durable) and restart; the operator adds learners,
//! promotes them, removes voters (the leader too) and transfers leadership; every member
//! compacts its log so lagging members need snapshots. In the **healing phase** all
//! faults stop and crashed members restart; a leader must appear within a bounded number
//! of ticks, every client operation must be resolved, and all members must converge.
//!
//! After every simulated millisecond the invariants are checked: at most one leader per
//! term; log matching (an (index, term) pair always names the same entry with the same
//! predecessor term); leader completeness (a new leader holds every committed entry);
//! state machine safety (no index is applied with two different entries, and members at
//! the same applied index have the same state); commit never goes backwards (in memory
//! within one life, and on disk across restarts); and the Ready contract (no
//! acknowledgement or vote leaves before the disk holds what it promises). At the end the client history must be
//! linearizable.
//!
//! A failing seed prints how to replay it: `cargo run --release -p corekv-raft --bin
//! raft-sim -- --seed N --trace`.

mod cluster;
pub mod kv;
pub mod linearizability;
pub mod network;

pub use cluster::{run_seed, run_seed_catching, SimFailure, SimOptions, SimReport};
