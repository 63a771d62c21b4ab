//! Vocabulary of the log: index, term and identity newtypes, and the records a caller
//! appends and gets back from recovery.
//!
//! Invariants: every on-disk integer is a `u64` written little-endian; `0` in a `vote`
//! means "voted for nobody", as in etcd's `HardState`. This module holds plain data
//! only: it never does IO and never interprets Raft rules (the WAL stores what it is
//! given).

/// Position of an entry in the Raft log (Raft thesis 3.5). Index 0 is "before the log".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

/// A Raft term (Raft thesis 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

/// Identifies a cluster; written in every segment so a data directory can't be used for
/// the wrong cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClusterId(pub u64);

/// Identifies a member of the cluster (etcd's member id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId(pub u64);

/// Identifies a shard (one Raft group, one WAL). Phase 1 has exactly one per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(pub u64);

/// Raft's persistent state besides the log: current term, vote, commit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: Term,
    /// Member voted for in `term`; `MemberId(0)` means no vote.
    pub vote: MemberId,
    pub commit: LogIndex,
}

/// Who this log belongs to. Repeated at the start of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metadata {
    pub cluster_id: ClusterId,
    pub member_id: MemberId,
    pub shard_id: ShardId,
}

/// Records that a snapshot covering everything up to `index` (whose entry had `term`)
/// was made durable. Recovery reports the newest marker it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotMarker {
    pub index: LogIndex,
    pub term: Term,
}

/// One record as a caller hands it to [`crate::Wal::append`]. Payload bytes are borrowed
/// and copied straight into the batch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalRecord<'a> {
    /// A Raft log entry; `data` is opaque to the WAL.
    Entry {
        index: LogIndex,
        term: Term,
        data: &'a [u8],
    },
    HardState(HardState),
    Metadata(Metadata),
    SnapshotMarker(SnapshotMarker),
    /// Discards every entry with index `>= from` (a Raft log conflict, thesis 3.5).
    TruncateSuffix {
        from: LogIndex,
    },
}

/// An entry as recovery returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub data: Vec<u8>,
}
