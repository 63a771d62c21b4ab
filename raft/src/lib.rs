//! corekv-raft: Raft as a pure, deterministic state machine.
//!
//! Messages, ticks and proposals go in; a [`Ready`] comes out listing the work the
//! driver must do. The crate never does IO, never reads a clock, never spawns a thread;
//! its only randomness is the election-timeout generator seeded by [`Config::seed`].
//! The protocol follows Ongaro's thesis ("Consensus: Bridging Theory and Practice",
//! 2014); section numbers in the module docs refer to it.
//!
//! # The driver contract
//!
//! A driver owns one [`RawNode`], the durable storage (WAL + snapshot file), the
//! transport and the application state machine. It feeds inputs and handles readies:
//!
//! - **Inputs**, at any time: [`RawNode::tick`] once per heartbeat interval,
//!   [`RawNode::step`] for each message received, [`RawNode::propose`] /
//!   [`RawNode::propose_batch`] for commands, [`RawNode::read_index`] for linearizable
//!   reads, [`RawNode::propose_conf_change`], [`RawNode::transfer_leader`],
//!   [`RawNode::compact`] after the application made a snapshot durable.
//! - **Output**: while [`RawNode::has_ready`], take `let rd = node.ready()` and handle it
//!   in this order:
//!
//! 1. `rd.soft_state`: if set, the leader or role changed (redirect clients, metrics).
//! 2. `rd.messages`: **send them now**. None of them depends on this Ready's persistent
//!    parts: a leader's AppendEntries may leave before the leader's own write finishes
//!    (thesis 10.2.1), and every message that promises something durable (a vote, an
//!    append acknowledgement, a snapshot acknowledgement) is held back by Raft until
//!    the Ready it depends on is acknowledged, then released in a later Ready (or
//!    dropped, if the term changes first: its promise may never have become true).
//! 3. Persist, in one atomic, fsynced write: `rd.snapshot` (it replaces the whole log),
//!    then `rd.entries` (if the first entry's index is at or below the last durable
//!    index, first delete every durable entry from that index on), then `rd.hard_state`.
//!    Several readies may be in the write pipeline at once (group commit), but they must
//!    become durable in the order they were taken. A hard state that changes only the
//!    commit index need not be written at once (commit is volatile in Raft): the driver
//!    may carry it in a later write, as etcd skips the fsync for it.
//! 4. Once they are durable, call [`RawNode::on_persisted`]`(rd.number)`. This is the
//!    acknowledgement of persistence: it lets the leader count its own log toward the
//!    commit quorum, lets a follower's acknowledgements leave, and makes the newly
//!    durable committed entries applicable. Call it for every Ready, even one with
//!    nothing to persist ([`Ready::must_persist`] is false), in order; one call may
//!    acknowledge several readies at once by passing the last number.
//! 5. `rd.snapshot`, if set, must be installed into the state machine before applying
//!    anything else; then apply `rd.committed_entries` in order. They are committed and
//!    durable on this member, so they may be applied as soon as the Ready is taken, in
//!    parallel with step 3. Skip empty [`EntryKind::Normal`] entries (a new leader's
//!    no-op). [`EntryKind::ConfChange`] entries have already taken effect inside Raft
//!    when handed out; decode them with [`ConfChange::decode`] to update the node's
//!    member list.
//! 6. `rd.read_states`: each read may be answered from the state machine once it has
//!    applied `index`.
//!
//! A proposal accepted by the leader returns [`Proposed::Appended`]: the command took
//! effect if and only if the entry later applied at that index carries that term.
//! Proposals and reads that meet no leader fail with [`Error::NoLeader`], whose message
//! is etcd's "etcdserver: no leader". Reads and forwarded proposals pending when
//! leadership changes are dropped silently; the node times them out and retries.
//!
//! After a crash, rebuild with [`RawNode::restart`] from exactly what was durable.
//!
//! # Membership
//!
//! One change at a time (add voter, add learner, promote learner = add voter, remove),
//! effective when handed out for applying, not joint consensus: etcd's member API changes
//! one member per request, and majorities of two configurations one voter apart always
//! intersect (thesis 4.1). The leader accepts a change only after the previous one is
//! applied and after committing an entry of its own term (Ongaro's 2015 fix), and a member
//! with a committed but unapplied change does not campaign. New members start with
//! [`RawNode::join`].
//!
//! A forwarded proposal can reach the log twice if the transport duplicates the forward;
//! the application applies each request id once (as etcd does with request ids).
//!
//! # Testing
//!
//! [`sim`] is the deterministic simulator (test support, pure like the rest): N members,
//! a faulty network, disks that lose unsynced writes, clients checked for
//! linearizability, all from one seed. `cargo run --release -p corekv-raft --bin raft-sim
//! -- --seed N --trace` replays a seed. Interaction transcripts live in `raft/testdata/`.
//!
//! # Example
//!
//! A single-member cluster driven by a synchronous driver whose "disk" is a vector:
//!
//! ```
//! use corekv_raft::{Config, MemberId, RawNode, Role, EntryKind};
//!
//! let id = MemberId(1);
//! let mut node = RawNode::bootstrap(Config::new(id, 42), &[id]);
//! let mut wal = Vec::new();
//! let mut applied = Vec::new();
//! let mut drive = |node: &mut RawNode, wal: &mut Vec<_>, applied: &mut Vec<Vec<u8>>| {
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         assert!(rd.messages.is_empty(), "no peers to send to");
//!         wal.extend(rd.entries.iter().cloned()); // "fsync"
//!         node.on_persisted(rd.number);
//!         for e in rd.committed_entries {
//!             if e.kind == EntryKind::Normal && !e.data.is_empty() {
//!                 applied.push(e.data);
//!             }
//!         }
//!     }
//! };
//! drive(&mut node, &mut wal, &mut applied);
//! while node.role() != Role::Leader {
//!     node.tick();
//!     drive(&mut node, &mut wal, &mut applied);
//! }
//! node.propose(b"put a=1".to_vec()).unwrap();
//! drive(&mut node, &mut wal, &mut applied);
//! assert_eq!(applied, vec![b"put a=1".to_vec()]);
//! ```

mod config;
mod election;
mod error;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod reads;
mod ready;
mod replication;
pub mod rng;
pub mod sim;
mod step;
mod types;

pub use config::*;
pub use error::Error;
pub use message::{Message, MessageBody, RejectHint};
pub use node::{Proposed, RawNode, RestartState, Role, Status};
pub use reads::MAX_WAITING_READS;
pub use ready::{ReadState, Ready, SoftState};
pub use types::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, LogIndex, MemberId,
    Snapshot, SnapshotMeta, Term,
};
