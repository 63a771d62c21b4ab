//! `Ready`: one batch of work Raft hands the driver. The order of its fields is the order
//! in which the driver handles them; the crate documentation states the contract.

use crate::message::Message;
use crate::node::Role;
use crate::types::{Entry, HardState, LogIndex, MemberId, Snapshot};

/// Volatile state worth reporting when it changes (for metrics and for redirecting
/// clients); never persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<MemberId>,
    pub role: Role,
}

/// A linearizable read became servable: answer read `request` from the state machine
/// once it has applied `index` (thesis 6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request: u64,
    pub index: LogIndex,
}

/// One batch of work. See the crate documentation for how to handle it.
#[derive(Debug, Default)]
pub struct Ready {
    /// Pass to [`crate::RawNode::on_persisted`] once the persistent parts are durable.
    pub number: u64,
    /// Set when the leader or role changed since the previous Ready.
    pub soft_state: Option<SoftState>,
    /// Persist (atomically with `entries`) if set. A driver may defer one that changes
    /// only `commit` (same term and vote as the last written) and write it with a later
    /// Ready: a restart then takes the commit from the snapshot or learns it again.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader: persist it and install it into the state
    /// machine before applying `committed_entries`. It replaces the whole log.
    pub snapshot: Option<Snapshot>,
    /// Append to the durable log. If the first index is at or below the last durable
    /// index, first delete every durable entry from that index on (a conflict overwrote
    /// them; they were never committed).
    pub entries: Vec<Entry>,
    /// Send now, in parallel with persisting: none of them depends on this Ready's
    /// persistent parts (acknowledgements that do are held back until `on_persisted`).
    pub messages: Vec<Message>,
    /// Committed, locally durable entries to apply in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that may be served once the state machine reaches their index.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// Whether the driver must persist anything before calling `on_persisted`.
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}
