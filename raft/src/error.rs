//! The crate's error type: operating errors a node returns to its caller. Programmer
//! errors (a broken Ready contract, a violated invariant) are assertions instead.

use crate::types::{LogIndex, MemberId};

/// What went wrong, and while doing what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A proposal or read arrived at a node that knows no leader. The message is etcd's,
    /// so that the node can return it to clients unchanged.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// A leader-only operation (membership change, leader transfer) was called on a
    /// follower; `leader` is the known leader to redirect to.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<MemberId> },
    /// The leader is handing over leadership and accepts no proposals until it is done.
    #[error("etcdserver: leader changed (leadership transfer in progress)")]
    TransferInProgress,
    /// The leader's uncommitted log exceeds `Config::max_uncommitted_bytes`.
    #[error("etcdserver: too many requests (uncommitted log over {limit_bytes} bytes)")]
    TooManyUncommitted { limit_bytes: u64 },
    /// More linearizable reads are waiting for a confirmation round than
    /// `MAX_WAITING_READS`.
    #[error("etcdserver: too many requests ({limit} reads already waiting)")]
    TooManyReads { limit: usize },
    /// A membership change was proposed while another is not yet applied, or before the
    /// leader committed an entry of its own term.
    #[error("a membership change is already in progress")]
    ConfChangeInProgress,
    /// A membership change that the current membership does not allow.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(&'static str),
    /// A leader transfer to a member that cannot become leader.
    #[error("cannot transfer leadership to {target}: {reason}")]
    InvalidTransfer {
        target: MemberId,
        reason: &'static str,
    },
    /// The application asked to compact at an index it has not applied, or below the
    /// current log start.
    #[error("cannot compact the log at index {index}: {reason}")]
    InvalidCompaction {
        index: LogIndex,
        reason: &'static str,
    },
    /// The bytes of a configuration-change entry do not decode.
    #[error("corrupt membership change entry: {0}")]
    CorruptConfChange(&'static str),
    /// The state given to `RawNode::restart` is inconsistent.
    #[error("inconsistent restart state: {0}")]
    InvalidRestartState(&'static str),
}
