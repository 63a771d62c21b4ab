//! Messages between Raft members. The node's transport carries them; their encoding on
//! the wire is the transport's business (the enum is plain data).
//!
//! Every message carries the sender's term. For a pre-vote request and a granted
//! pre-vote response the term is the *future* term the candidate would campaign in, and
//! the receiver does not adopt it (thesis 9.6).

use crate::types::{Entry, LogIndex, MemberId, Snapshot, Term};

/// A message from one member to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: MemberId,
    pub to: MemberId,
    pub term: Term,
    pub body: MessageBody,
}

/// Why an AppendEntries was refused, with the hint that lets the leader skip a whole
/// conflicting term at once (thesis 5.3's optimisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectHint {
    /// The follower's first index of `conflict_term`, or its last index + 1 if the
    /// follower's log is shorter than the probe.
    pub conflict_index: LogIndex,
    /// The term of the follower's entry at the probed index, if it has one.
    pub conflict_term: Option<Term>,
}

/// The kinds of message and their payloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// AppendEntries: `entries` follow the entry at (`prev_index`, `prev_term`).
    Append {
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    },
    /// The answer to `Append` and `Snapshot`. On success `index` is the highest index the
    /// follower now holds durably in agreement with the leader; on rejection it is the
    /// rejected `prev_index` and `reject` carries the hint.
    AppendResponse {
        index: LogIndex,
        reject: Option<RejectHint>,
    },
    /// Leader liveness plus commit propagation. `read_round` confirms leadership for the
    /// ReadIndex round of that number (0 = none).
    Heartbeat { commit: LogIndex, read_round: u64 },
    /// The answer to `Heartbeat`, echoing its `read_round`.
    HeartbeatResponse { read_round: u64 },
    /// RequestVote, or PreVote when `pre_vote` (thesis 9.6). `transfer` marks a campaign
    /// started by `TimeoutNow`, which voters honour even inside a leader lease.
    RequestVote {
        pre_vote: bool,
        last_index: LogIndex,
        last_term: Term,
        transfer: bool,
    },
    /// The answer to `RequestVote`.
    VoteResponse { pre_vote: bool, granted: bool },
    /// InstallSnapshot for a follower behind the leader's log start. The node's transport
    /// moves the bytes; Raft only carries them.
    InstallSnapshot { snapshot: Snapshot },
    /// Proposals forwarded by a follower to its leader.
    Propose { entries: Vec<Entry> },
    /// A follower asks the leader for a read index on behalf of request `request`.
    ReadIndex { request: u64 },
    /// The leader's answer: reads for `request` may be served once `index` is applied.
    ReadIndexResponse { request: u64, index: LogIndex },
    /// Leader transfer: start an election now, skipping pre-vote (thesis 3.10).
    TimeoutNow,
    /// The node's own message to another member's node, carried beside Raft's by the same
    /// transport (a follower asking the leader what only the leader knows). Raft never
    /// sends one and ignores one stepped: the node takes them out before stepping.
    Node { data: Vec<u8> },
}

impl MessageBody {
    /// A short name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::Node { .. } => "Node",
        }
    }
}
