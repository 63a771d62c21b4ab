//! Tunables of one Raft member, each a named limit with the etcd flag it mirrors.

use crate::types::MemberId;

/// Ticks without hearing from a leader before a follower campaigns; the actual timeout
/// is randomized in `[election_tick, 2 * election_tick)`. etcd: `--election-timeout`
/// divided by `--heartbeat-interval` (1000 ms / 100 ms).
pub const ELECTION_TICK_DEFAULT: u32 = 10;
/// Ticks between leader heartbeats. etcd: one `--heartbeat-interval`.
pub const HEARTBEAT_TICK_DEFAULT: u32 = 1;
/// Most entry bytes in one AppendEntries (etcd's `maxSizePerMsg`, 1 MiB).
pub const MAX_ENTRIES_BYTES_PER_MESSAGE_DEFAULT: u64 = 1024 * 1024;
/// Most AppendEntries in flight to one member (etcd's server sets `maxInflightMsgs` to
/// 4096 / 8 = 512).
pub const MAX_INFLIGHT_MESSAGES_DEFAULT: usize = 512;
/// Most entry bytes in flight to one member (etcd 3.6 `MaxInflightBytes`).
pub const MAX_INFLIGHT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Most bytes of uncommitted entries on the leader before proposals are refused with
/// "too many requests" (backpressure instead of unbounded memory). corekv's own bound;
/// etcd leaves raft's `MaxUncommittedEntriesSize` unlimited.
pub const MAX_UNCOMMITTED_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// Most bytes of committed entries handed out in one Ready.
pub const MAX_COMMITTED_BYTES_PER_READY_DEFAULT: u64 = 64 * 1024 * 1024;

/// Configuration of one member.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: MemberId,
    pub election_tick: u32,
    pub heartbeat_tick: u32,
    pub max_entries_bytes_per_message: u64,
    pub max_inflight_messages: usize,
    pub max_inflight_bytes: u64,
    pub max_uncommitted_bytes: u64,
    pub max_committed_bytes_per_ready: u64,
    /// A leader that has not heard from a quorum within an election timeout steps down,
    /// and followers ignore vote requests while they have a live leader (thesis 6.2, 9.6).
    pub check_quorum: bool,
    /// Campaign with a pre-vote round first so a partitioned node cannot raise the term
    /// (thesis 9.6).
    pub pre_vote: bool,
    /// Seed for election-timeout randomization. Give each member a different one.
    pub seed: u64,
}

impl Config {
    /// etcd's defaults for member `id`.
    pub fn new(id: MemberId, seed: u64) -> Config {
        Config {
            id,
            election_tick: ELECTION_TICK_DEFAULT,
            heartbeat_tick: HEARTBEAT_TICK_DEFAULT,
            max_entries_bytes_per_message: MAX_ENTRIES_BYTES_PER_MESSAGE_DEFAULT,
            max_inflight_messages: MAX_INFLIGHT_MESSAGES_DEFAULT,
            max_inflight_bytes: MAX_INFLIGHT_BYTES_DEFAULT,
            max_uncommitted_bytes: MAX_UNCOMMITTED_BYTES_DEFAULT,
            max_committed_bytes_per_ready: MAX_COMMITTED_BYTES_PER_READY_DEFAULT,
            check_quorum: true,
            pre_vote: true,
            seed,
        }
    }

    pub(crate) fn validate(&self) {
        assert!(self.id != MemberId::ZERO, "member id 0 is reserved");
        assert!(self.heartbeat_tick > 0, "heartbeat_tick must be positive");
        assert!(
            self.election_tick > self.heartbeat_tick,
            "election_tick must exceed heartbeat_tick"
        );
        assert!(
            self.max_inflight_messages > 0,
            "max_inflight_messages must be positive"
        );
        assert!(self.max_entries_bytes_per_message > 0);
        assert!(self.max_inflight_bytes > 0);
    }
}
