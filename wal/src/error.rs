//! The crate's one error enum. Variants say what failed and what the WAL was doing.
//!
//! Invariant: an error that leaves durability unknown (a failed write or fdatasync)
//! becomes [`WalError::Poisoned`] for every later call; it is never retried.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A write or fdatasync failed earlier; the log accepts nothing more (fsyncgate:
    /// after a failed fsync the kernel may have dropped the dirty pages, so a retry
    /// could report success for data that is gone). Restart the process to recover.
    #[error("WAL is poisoned and accepts no more appends: {operation} failed earlier ({kind:?}: {message}); restart to recover")]
    Poisoned {
        operation: &'static str,
        kind: io::ErrorKind,
        message: String,
    },

    /// A record that is not the torn tail of the last segment failed its checks.
    #[error("corrupt WAL record in {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Entry indexes on disk jump forward (a hole in the log).
    #[error("WAL entry gap in {} at offset {offset}: expected index <= {expected_max}, found {found}", path.display())]
    EntryGap {
        path: PathBuf,
        offset: u64,
        expected_max: u64,
        found: u64,
    },

    /// Recovery was asked to replay from an index the log no longer holds.
    #[error(
        "WAL cannot replay from index {replay_from}: the first entry it holds is {first_available}"
    )]
    MissingEntries {
        replay_from: u64,
        first_available: u64,
    },

    /// Segment files are not numbered 0..n without holes.
    #[error("WAL segment sequence broken in {}: {reason}", dir.display())]
    SegmentSequence { dir: PathBuf, reason: String },

    /// An append would leave a hole in the entry indexes; nothing was written.
    #[error("append rejected: entry index {found} does not follow last index {last}")]
    NonContiguousAppend { last: u64, found: u64 },

    /// A record or one append call exceeds the configured limit; nothing was written.
    #[error("append rejected: {what} is {size} bytes, limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },

    #[error("invalid WAL configuration: {0}")]
    Config(String),

    /// The log was closed (its `Wal` handle dropped or `close` called).
    #[error("WAL is closed")]
    Closed,

    /// A snapshot of the same index and term is already being written.
    #[error("snapshot {} is already being written", path.display())]
    SnapshotInProgress { path: PathBuf },

    /// A snapshot writer's write or fdatasync failed earlier; it accepts nothing more
    /// (durability of its file is unknown and a failed write is never retried).
    #[error("snapshot writer for {} failed earlier ({operation}); abort it and start again", path.display())]
    SnapshotWriterFailed {
        path: PathBuf,
        operation: &'static str,
    },

    /// A snapshot file failed validation.
    #[error("invalid snapshot {}: {reason}", path.display())]
    InvalidSnapshot { path: PathBuf, reason: String },
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

impl WalError {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
