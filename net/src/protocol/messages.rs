//! The messages of corekv's binary protocol: what a client may ask and what the server
//! answers. The byte encoding is in `codec` and docs/protocol.md.
//!
//! Requests and responses reuse the engine's request and response types, so that a
//! request decoded on a connection core reaches the shard (and, for writes, the Raft
//! log) without another translation.

use corekv_engine::{
    DeleteRangeRequest, DeleteRangeResponse, Event, LeaseId, PutRequest, PutResponse, RangeRequest,
    RangeResponse, Revision, TxnRequest, TxnResponse, WatchRequest,
};

/// etcd's `ResponseHeader`, carried by every successful response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The cluster's id.
    pub cluster_id: u64,
    /// The id of the member that answered.
    pub member_id: u64,
    /// The store revision when the request was served.
    pub revision: Revision,
    /// The Raft term when the request was served.
    pub raft_term: u64,
}

/// A client request. Each travels in a frame with a client-chosen request id; responses
/// carry the same id and may arrive in any order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read keys.
    Range(RangeRequest),
    /// Write one key.
    Put(PutRequest),
    /// Delete keys.
    DeleteRange(DeleteRangeRequest),
    /// A transaction.
    Txn(TxnRequest),
    /// Compact history at `revision`; `physical` waits until it is applied.
    Compact {
        /// Revision to compact at.
        revision: Revision,
        /// Wait for the compaction to be applied before answering.
        physical: bool,
    },
    /// Grant a lease (`id` NONE: the server chooses).
    LeaseGrant {
        /// Requested id, or NONE.
        id: LeaseId,
        /// TTL in seconds.
        ttl_seconds: i64,
    },
    /// Revoke a lease and delete its keys.
    LeaseRevoke {
        /// The lease.
        id: LeaseId,
    },
    /// Renew a lease once (a keep-alive stream is a sequence of these).
    LeaseKeepAlive {
        /// The lease.
        id: LeaseId,
    },
    /// Remaining TTL and optionally the keys of a lease.
    LeaseTimeToLive {
        /// The lease.
        id: LeaseId,
        /// Include the attached keys.
        keys: bool,
    },
    /// Every lease id.
    LeaseLeases,
    /// Start a watch; events arrive as [`Response::WatchEvents`] frames carrying this
    /// request's id until it is cancelled (by the client or by compaction).
    WatchCreate(WatchRequest),
    /// Cancel the watch started by the request with id `watch_id`.
    WatchCancel {
        /// Request id of the `WatchCreate`.
        watch_id: u64,
    },
    /// Ask for the current revision once every watch on this connection is synced.
    WatchProgress,
    /// Member status.
    Status,
    /// The cluster's members.
    MemberList {
        /// Answer only after a read index (etcd 3.5's `linearizable`).
        linearizable: bool,
    },
    /// List, raise or clear alarms. Raising and clearing go through the log.
    Alarm {
        /// What to do.
        action: AlarmAction,
        /// Member the alarm is about (0 with `Get`: every member).
        member_id: u64,
        /// Which alarm (`None` with `Get`: every alarm).
        alarm: AlarmType,
    },
    /// A hash of the whole store (etcd's Hash).
    Hash,
    /// A hash of the keys up to `revision` (0: current), equal on every member.
    HashKv {
        /// Revision to hash up to.
        revision: Revision,
    },
    /// Return memory the store freed to the operating system (etcd's Defragment).
    Defragment,
    /// Stream a consistent snapshot of the store as `SnapshotChunk` frames.
    Snapshot,
    /// Hand leadership to `target`.
    MoveLeader {
        /// Member id of the new leader.
        target: u64,
    },
    /// A member announces its name and client URLs to the cluster (through the log, as
    /// etcd's members publish their attributes); answered with the member list.
    PublishMember {
        /// The member.
        member_id: u64,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
    /// Add, remove, promote a member or change its peer URLs (etcd's MemberAdd,
    /// MemberRemove, MemberPromote, MemberUpdate); answered with the member list.
    MemberChange(MemberChange),
    /// The leader refusing a membership change it cannot make (internal: written to the
    /// log so that the member whose client asked can answer it).
    MemberChangeRefused {
        /// The member whose client asked.
        origin: u64,
        /// The proposal that carried the change on `origin`.
        proposal_id: u64,
        /// gRPC code of the answer.
        code: u32,
        /// Message of the answer.
        message: String,
    },
}

/// What a membership change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberChangeKind {
    /// Add a member (`id` is chosen by the member that takes the request).
    Add,
    /// Remove member `id`.
    Remove,
    /// Set member `id`'s peer URLs.
    Update,
    /// Make learner `id` a voter.
    Promote,
}

/// One membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChange {
    /// What to do.
    pub kind: MemberChangeKind,
    /// The member.
    pub id: u64,
    /// Peer URLs (`Add`, `Update`).
    pub peer_urls: Vec<String>,
    /// Add as a learner (`Add`).
    pub is_learner: bool,
}

/// etcd's `AlarmRequest.AlarmAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmAction {
    /// List alarms.
    Get,
    /// Raise an alarm.
    Activate,
    /// Clear an alarm.
    Deactivate,
}

/// etcd's `AlarmType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmType {
    /// No alarm (with `Get`: any alarm).
    None,
    /// The store exceeded `--quota-backend-bytes`: writes that add data are refused.
    NoSpace,
    /// A member's data differs from the others'.
    Corrupt,
}

/// One raised alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlarmMember {
    /// The member it is raised on.
    pub member_id: u64,
    /// The alarm.
    pub alarm: AlarmType,
}

/// One member of the cluster, as etcd's `Member`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Name (empty until the member has started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// A learner does not vote.
    pub is_learner: bool,
}

/// A server response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The request failed: gRPC status code and etcd's message.
    Error {
        /// gRPC status code (as etcd would send it).
        code: u32,
        /// etcd's message text.
        message: String,
    },
    /// Answer to [`Request::Range`].
    Range(Header, RangeResponse),
    /// Answer to [`Request::Put`].
    Put(Header, PutResponse),
    /// Answer to [`Request::DeleteRange`].
    DeleteRange(Header, DeleteRangeResponse),
    /// Answer to [`Request::Txn`].
    Txn(Header, TxnResponse),
    /// Answer to [`Request::Compact`].
    Compact(Header),
    /// Answer to [`Request::LeaseGrant`].
    LeaseGrant {
        /// Header.
        header: Header,
        /// The lease id.
        id: LeaseId,
        /// TTL in effect, seconds.
        ttl_seconds: i64,
    },
    /// Answer to [`Request::LeaseRevoke`].
    LeaseRevoke(Header),
    /// Answer to [`Request::LeaseKeepAlive`].
    LeaseKeepAlive {
        /// Header.
        header: Header,
        /// The lease id.
        id: LeaseId,
        /// New TTL in seconds (0 if the lease no longer exists, as etcd).
        ttl_seconds: i64,
    },
    /// Answer to [`Request::LeaseTimeToLive`].
    LeaseTimeToLive {
        /// Header.
        header: Header,
        /// The lease id.
        id: LeaseId,
        /// Seconds left, -1 if the lease does not exist (as etcd).
        ttl_seconds: i64,
        /// TTL granted.
        granted_ttl_seconds: i64,
        /// Attached keys, when asked for.
        keys: Vec<Vec<u8>>,
    },
    /// Answer to [`Request::LeaseLeases`].
    LeaseLeases(Header, Vec<LeaseId>),
    /// The watch was created (first frame for a `WatchCreate` id).
    WatchCreated(Header),
    /// Events of one watch, in revision order; a revision is never split across frames.
    WatchEvents(Header, Vec<Event>),
    /// The watch ended: cancelled by the client (`compact_revision` 0) or because it
    /// needed history below `compact_revision`.
    WatchCanceled {
        /// Header.
        header: Header,
        /// Compact revision when cancelled by compaction, else 0.
        compact_revision: Revision,
    },
    /// Answer to [`Request::WatchProgress`]: the header carries the revision.
    WatchProgress(Header),
    /// Answer to [`Request::Status`].
    Status(StatusResponse),
    /// Answer to [`Request::MemberList`].
    MemberList(Header, Vec<Member>),
    /// Answer to [`Request::Alarm`]: the alarms raised after the action.
    Alarm(Header, Vec<AlarmMember>),
    /// Answer to [`Request::Hash`].
    Hash {
        /// Header.
        header: Header,
        /// The hash.
        hash: u32,
    },
    /// Answer to [`Request::HashKv`].
    HashKv {
        /// Header.
        header: Header,
        /// The hash.
        hash: u32,
        /// The store's compaction revision.
        compact_revision: Revision,
        /// The revision hashed up to.
        hash_revision: Revision,
    },
    /// Answer to [`Request::Defragment`].
    Defragment(Header),
    /// One piece of a [`Request::Snapshot`] stream, in order; the last has
    /// `remaining_bytes` 0 and ends the request.
    SnapshotChunk {
        /// Header.
        header: Header,
        /// An estimate of the bytes still to come (0 exactly on the last chunk).
        remaining_bytes: u64,
        /// The bytes.
        blob: Vec<u8>,
    },
    /// Answer to [`Request::MoveLeader`] once the target leads.
    MoveLeader(Header),
}

/// Member status, like etcd's `StatusResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusResponse {
    /// Header.
    pub header: Header,
    /// Server version (corekv's, plus the etcd version it speaks).
    pub version: String,
    /// Approximate bytes held by the store.
    pub db_size: u64,
    /// Current leader's member id (0 = none).
    pub leader: u64,
    /// Raft log index of the last entry.
    pub raft_index: u64,
    /// Raft term.
    pub raft_term: u64,
    /// Raft index applied to the store.
    pub raft_applied_index: u64,
    /// Whether this member is a learner.
    pub is_learner: bool,
}
