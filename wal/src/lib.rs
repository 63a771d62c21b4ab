//! corekv-wal: the write-ahead log and snapshot files of one shard.
//!
//! What it is: a segmented, append-only log of framed, checksummed records (Raft entries,
//! hard state, metadata, snapshot markers, suffix truncations) with group commit over
//! io_uring, crash-safe recovery, and atomic snapshot files. Payloads are opaque: the WAL
//! knows nothing of Raft or MVCC rules beyond "entry indexes are contiguous, a re-used
//! index replaces the suffix". The byte layout is in docs/wal-format.md.
//!
//! # How a node drives it
//!
//! On the shard's core, inside a glommio `LocalExecutor`:
//!
//! 1. `SnapshotStore::new(disk, snap_dir, keep).load_newest()` gives the newest valid
//!    snapshot (or none); restore the engine from `data()`.
//! 2. `Wal::open(disk, wal_dir, config, snapshot_index)` recovers the log: metadata, hard
//!    state, every entry after the snapshot, and a report of any torn tail it cut off. It
//!    also returns a [`Flusher`]: spawn `flusher.run()` on the same executor.
//! 3. For each Raft `Ready`: `wal.append(&[entries..., hard state])` and await it before
//!    sending messages that promise durability (the append is atomic and resolves only
//!    once durable). Appends from many tasks coalesce into one write and one fdatasync.
//! 4. After applying up to index `i`: `snapshots.save(i, term, bytes)` (or, to stream a
//!    large snapshot in bounded memory, `snapshots.begin(i, term)`, `write` the chunks,
//!    `finish`; `abort` on any error or shutdown), then `wal.record_snapshot(marker)`,
//!    which appends a marker and removes segments wholly covered by the snapshot.
//!
//! If `append` ever returns [`WalError::Poisoned`], stop accepting writes and restart the
//! process: a failed write or fsync is never retried.
//!
//! ```no_run
//! use std::rc::Rc;
//! use corekv_wal::{GlommioDisk, LogIndex, Term, Wal, WalConfig, WalRecord};
//!
//! glommio::LocalExecutorBuilder::default()
//!     .spawn(|| async {
//!         let disk = Rc::new(GlommioDisk);
//!         let (wal, flusher, recovered) =
//!             Wal::open(disk, "/var/lib/corekv/shard-0/wal", WalConfig::default(), LogIndex(0))
//!                 .await
//!                 .expect("recover the WAL");
//!         glommio::spawn_local(flusher.run()).detach();
//!         let next = recovered.last_index.map_or(1, |last| last.0 + 1);
//!         let record = WalRecord::Entry { index: LogIndex(next), term: Term(1), data: b"put" };
//!         wal.append(&[record]).await.expect("durable append");
//!     })
//!     .expect("start executor")
//!     .join()
//!     .expect("executor finished");
//! ```
//!
//! Invariants: nothing is acknowledged that is not durable; a batch is recovered whole or
//! not at all; every length read from disk is checked before use. Never: Raft or MVCC
//! logic, buffered writes on the append path, retrying a failed fsync.

mod disk;
mod error;
mod flusher;
pub mod format;
mod glommio_disk;
mod replay;
mod segments;
pub mod sim;
mod snapshot;
mod types;
mod wal;

pub use disk::{Disk, DiskFile};
pub use error::{Result, WalError};
pub use flusher::Flusher;
pub use glommio_disk::{GlommioDisk, GlommioFile, MappedFile};
pub use replay::TornTail;
pub use snapshot::{
    validate_snapshot, LoadedSnapshot, SnapshotFileWriter, SnapshotMeta, SnapshotStore,
    SNAPSHOTS_KEPT_DEFAULT, SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT,
};
pub use types::{
    ClusterId, Entry, HardState, LogIndex, MemberId, Metadata, ShardId, SnapshotMarker, Term,
    WalRecord,
};
pub use wal::{
    Recovered, Wal, WalConfig, WalStats, MAX_BATCH_BYTES_DEFAULT, MAX_RECORD_BYTES_DEFAULT,
    SEGMENT_BYTES_DEFAULT, SYNC_BUCKETS, SYNC_BUCKET_BOUNDS_SECONDS,
};
