//! `RawNode`: one Raft member as a pure state machine, and its driver-facing API
//! (constructors, inputs, `ready`, `on_persisted`). The protocol itself lives in the
//! sibling modules `election`, `replication`, `reads` and `membership`, which add
//! `impl RawNode` blocks.
//!
//! Never does IO, reads a clock or spawns anything: time is `tick()`, randomness is the
//! seeded generator in `Config::seed`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::Config;
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::reads::ReadTracker;
use crate::ready::{ReadState, Ready, SoftState};
use crate::rng::SplitMix64;
use crate::types::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryKind, HardState, LogIndex, MemberId,
    Snapshot, SnapshotMeta, Term,
};
use crate::Error;

/// The role a member plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Running a pre-vote round; has not raised its term.
    PreCandidate,
    Candidate,
    Leader,
}

/// What the driver persisted and hands back after a restart.
#[derive(Clone, Debug, Default)]
pub struct RestartState {
    pub hard_state: HardState,
    /// The latest durable snapshot, if any; `entries` continue right after it.
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    /// The index the application's state already reflects (its snapshot index or later).
    pub applied: LogIndex,
}

/// The outcome of a proposal accepted by this member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proposed {
    /// This member is the leader and appended the entries at `first..=last` in `term`.
    /// The proposal took effect iff the entry applied at `last` has term `term`.
    Appended {
        first: LogIndex,
        last: LogIndex,
        term: Term,
    },
    /// Forwarded to the leader; the outcome is only learnt by watching applied entries.
    Forwarded { leader: MemberId },
}

/// A read-only view of a member for drivers, tests and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: MemberId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<MemberId>,
    pub leader: Option<MemberId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub persisted: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub conf_state: ConfState,
}

/// What one Ready promised the driver would persist.
#[derive(Debug)]
struct ReadyRecord {
    number: u64,
    last_entry: Option<(LogIndex, Term)>,
    snapshot: Option<(LogIndex, Term)>,
}

/// One Raft member. See the crate documentation for the driver contract.
#[derive(Debug)]
pub struct RawNode {
    pub(crate) cfg: Config,
    pub(crate) id: MemberId,
    pub(crate) rng: SplitMix64,

    pub(crate) term: Term,
    pub(crate) vote: Option<MemberId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<MemberId>,
    pub(crate) log: RaftLog,

    /// Membership as of `log.applied` (changes take effect when handed out to apply).
    pub(crate) conf: ConfState,
    /// Membership after each applied change above the snapshot, for compaction.
    pub(crate) conf_history: Vec<(LogIndex, ConfState)>,
    /// The latest snapshot, sent to members behind the log start.
    pub(crate) snapshot: Option<Snapshot>,

    /// Leader only: every member's progress, this member included.
    pub(crate) progress: BTreeMap<MemberId, Progress>,
    pub(crate) votes: BTreeMap<MemberId, bool>,

    pub(crate) tick_count: u64,
    pub(crate) election_elapsed: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,

    pub(crate) transfer_target: Option<MemberId>,
    pub(crate) pending_conf_index: LogIndex,
    pub(crate) uncommitted_bytes: u64,
    /// Proposals or a commit advance since the last Ready: send appends before emitting.
    pub(crate) needs_broadcast: bool,

    pub(crate) reads: ReadTracker,
    pub(crate) read_states: Vec<ReadState>,

    pub(crate) messages: Vec<Message>,
    /// Messages that may leave only once the Ready numbered `.0` is durable.
    pub(crate) messages_after_persist: VecDeque<(u64, Message)>,
    pending_snapshot: Option<Snapshot>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
    next_ready_number: u64,
    persisted_ready_number: u64,
    readies_in_flight: VecDeque<ReadyRecord>,
}

impl RawNode {
    fn blank(cfg: Config) -> RawNode {
        cfg.validate();
        let id = cfg.id;
        let rng = SplitMix64::new(cfg.seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut node = RawNode {
            id,
            rng,
            term: Term::ZERO,
            vote: None,
            role: Role::Follower,
            leader: None,
            log: RaftLog::new(),
            conf: ConfState::default(),
            conf_history: Vec::new(),
            snapshot: None,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            tick_count: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            transfer_target: None,
            pending_conf_index: LogIndex::ZERO,
            uncommitted_bytes: 0,
            needs_broadcast: false,
            reads: ReadTracker::default(),
            read_states: Vec::new(),
            messages: Vec::new(),
            messages_after_persist: VecDeque::new(),
            pending_snapshot: None,
            last_hard_state: HardState::default(),
            last_soft_state: SoftState {
                leader: None,
                role: Role::Follower,
            },
            next_ready_number: 1,
            persisted_ready_number: 0,
            readies_in_flight: VecDeque::new(),
            cfg,
        };
        node.reset_election_timeout();
        node
    }

    /// A member of a brand-new cluster whose initial voters are `voters` (etcd's
    /// `--initial-cluster`). Every initial member must be given the same list: the
    /// membership is written as conf-change entries 1..=n of term 1, identical on all.
    pub fn bootstrap(cfg: Config, voters: &[MemberId]) -> RawNode {
        let mut sorted = voters.to_vec();
        sorted.sort();
        sorted.dedup();
        assert!(!sorted.is_empty(), "bootstrap needs at least one voter");
        assert!(
            sorted.contains(&cfg.id),
            "a bootstrapping member must be an initial voter"
        );
        let mut node = RawNode::blank(cfg);
        let entries = sorted.iter().enumerate().map(|(k, &member)| Entry {
            term: Term(1),
            index: LogIndex(k as u64 + 1),
            kind: EntryKind::ConfChange,
            data: ConfChange {
                kind: ConfChangeKind::AddVoter,
                member,
                context: Vec::new(),
            }
            .encode(),
        });
        node.log.append(entries);
        node.term = Term(1);
        node.log.commit_to(node.log.last_index());
        node
    }

    /// A member added to a running cluster (after `AddLearner`/`AddVoter` was proposed):
    /// an empty log and no membership; everything arrives from the leader.
    pub fn join(cfg: Config) -> RawNode {
        RawNode::blank(cfg)
    }

    /// A member restarting from what it persisted.
    pub fn restart(cfg: Config, state: RestartState) -> Result<RawNode, Error> {
        let mut node = RawNode::blank(cfg);
        let (snap_index, snap_term, snap_conf) = match &state.snapshot {
            Some(s) => (s.meta.index, s.meta.term, s.meta.conf_state.clone()),
            None => (LogIndex::ZERO, Term::ZERO, ConfState::default()),
        };
        for (k, e) in state.entries.iter().enumerate() {
            if e.index.0 != snap_index.0 + 1 + k as u64 {
                return Err(Error::InvalidRestartState(
                    "entries do not follow the snapshot",
                ));
            }
        }
        let last = LogIndex(snap_index.0 + state.entries.len() as u64);
        let commit = state.hard_state.commit.max(snap_index);
        if commit > last {
            return Err(Error::InvalidRestartState(
                "commit index beyond the last entry",
            ));
        }
        if state.applied < snap_index || state.applied > commit {
            return Err(Error::InvalidRestartState(
                "applied outside [snapshot, commit]",
            ));
        }
        let mut conf = snap_conf;
        let mut history = Vec::new();
        for e in &state.entries {
            if e.index > state.applied {
                break;
            }
            if e.kind == EntryKind::ConfChange {
                let change = ConfChange::decode(&e.data)?;
                if conf.apply(&change) {
                    history.push((e.index, conf.clone()));
                }
            }
        }
        node.log = RaftLog::restored(snap_index, snap_term, state.entries, commit, state.applied);
        node.term = state.hard_state.term;
        node.vote = state.hard_state.vote;
        node.last_hard_state = HardState {
            term: node.term,
            vote: node.vote,
            commit,
        };
        node.conf = conf;
        node.conf_history = history;
        node.snapshot = state.snapshot;
        Ok(node)
    }

    // ----- inputs -------------------------------------------------------------------

    /// Advances logical time by one tick (etcd: one `--heartbeat-interval`).
    pub fn tick(&mut self) {
        self.tick_count += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Proposes one command. See [`RawNode::propose_batch`].
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposed, Error> {
        self.propose_batch(vec![data])
    }

    /// Proposes commands, one entry each, replicated together in the next Ready. On a
    /// follower they are forwarded to the leader; with no leader the error is etcd's
    /// "etcdserver: no leader". An empty batch is a caller bug and panics.
    pub fn propose_batch(&mut self, commands: Vec<Vec<u8>>) -> Result<Proposed, Error> {
        assert!(!commands.is_empty(), "empty proposal batch");
        match self.role {
            Role::Leader => self.append_proposals(commands, EntryKind::Normal),
            _ => match self.leader {
                Some(leader) => {
                    let entries = commands
                        .into_iter()
                        .map(|data| Entry {
                            term: Term::ZERO,
                            index: LogIndex::ZERO,
                            kind: EntryKind::Normal,
                            data,
                        })
                        .collect();
                    self.send(leader, MessageBody::Propose { entries });
                    Ok(Proposed::Forwarded { leader })
                }
                None => Err(Error::NoLeader),
            },
        }
    }

    /// Proposes a membership change (leader only; one at a time, see the crate docs).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<Proposed, Error> {
        if self.role != Role::Leader {
            return Err(match self.leader {
                None => Error::NoLeader,
                leader => Error::NotLeader { leader },
            });
        }
        if self.pending_conf_index > self.log.applied {
            return Err(Error::ConfChangeInProgress);
        }
        self.conf
            .validate(&change)
            .map_err(Error::InvalidConfChange)?;
        let proposed = self.append_proposals(vec![change.encode()], EntryKind::ConfChange)?;
        if let Proposed::Appended { last, .. } = proposed {
            self.pending_conf_index = last;
        }
        Ok(proposed)
    }

    /// Feeds a message received from another member.
    pub fn step(&mut self, message: Message) {
        if message.to != self.id {
            return;
        }
        self.step_message(message);
    }

    /// Starts an election now (tests and operators; normally ticks do this).
    pub fn campaign(&mut self) {
        self.start_campaign(false);
    }

    /// The transport could not reach `member`: stop streaming to it and probe again.
    pub fn report_unreachable(&mut self, member: MemberId) {
        if let Some(pr) = self.progress.get_mut(&member) {
            if pr.mode == crate::progress::Mode::Replicate {
                pr.become_probe();
            }
        }
    }

    /// The transport finished (or failed) sending the snapshot to `member`.
    pub fn report_snapshot(&mut self, member: MemberId, succeeded: bool) {
        let tick = self.tick_count;
        if let Some(pr) = self.progress.get_mut(&member) {
            if let crate::progress::Mode::Snapshot { pending, .. } = pr.mode {
                if succeeded {
                    pr.maybe_update(pending, tick);
                }
                pr.become_probe();
                pr.probe_sent = succeeded;
            }
        }
    }

    /// The application made a snapshot of its state at `index` (which it has applied)
    /// durable: drop the log up to `index` and keep `data` to send to lagging members.
    pub fn compact(&mut self, index: LogIndex, data: Vec<u8>) -> Result<(), Error> {
        if index > self.log.applied {
            return Err(Error::InvalidCompaction {
                index,
                reason: "not yet applied",
            });
        }
        if index <= self.log.snapshot_index() {
            return Err(Error::InvalidCompaction {
                index,
                reason: "at or below the current log start",
            });
        }
        if index > self.log.persisted {
            return Err(Error::InvalidCompaction {
                index,
                reason: "not yet durable",
            });
        }
        let term = self
            .log
            .term(index)
            .expect("applied entries above the snapshot are present");
        let conf_state = self.conf_at(index);
        self.conf_history.retain(|(at, _)| *at > index);
        self.log.compact(index);
        self.snapshot = Some(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        });
        Ok(())
    }

    fn conf_at(&self, index: LogIndex) -> ConfState {
        // The newest recorded change at or below `index`, else the snapshot's membership.
        if let Some((_, conf)) = self.conf_history.iter().rev().find(|(at, _)| *at <= index) {
            return conf.clone();
        }
        match &self.snapshot {
            Some(s) => s.meta.conf_state.clone(),
            None => ConfState::default(),
        }
    }

    // ----- outputs ------------------------------------------------------------------

    /// Whether `ready()` would return any work.
    pub fn has_ready(&self) -> bool {
        self.needs_broadcast
            || !self.messages.is_empty()
            || self.pending_snapshot.is_some()
            || self.log.has_unstable()
            || self.hard_state() != self.last_hard_state
            || self.log.has_applicable()
            || !self.read_states.is_empty()
            || self.soft_state() != self.last_soft_state
            || self.read_round_startable()
    }

    /// Takes the next batch of work. Handle it as the crate documentation says, then
    /// call [`RawNode::on_persisted`] with its number.
    pub fn ready(&mut self) -> Ready {
        if self.needs_broadcast {
            self.needs_broadcast = false;
            if self.role == Role::Leader {
                self.broadcast_append();
            }
        }
        // Every read waiting now shares one confirmation round.
        self.maybe_start_read_round();
        let number = self.next_ready_number;
        self.next_ready_number += 1;

        let snapshot = self.pending_snapshot.take();
        let entries = self.log.take_unstable();
        let hard_state = self.hard_state();
        let hard_state = if hard_state != self.last_hard_state {
            self.last_hard_state = hard_state;
            Some(hard_state)
        } else {
            None
        };
        self.readies_in_flight.push_back(ReadyRecord {
            number,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot: snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
        });

        let committed_entries = self
            .log
            .take_applicable(self.cfg.max_committed_bytes_per_ready);
        for entry in &committed_entries {
            if entry.kind == EntryKind::ConfChange {
                self.apply_conf_change_entry(entry);
            }
        }
        if self.needs_broadcast && self.role == Role::Leader {
            self.needs_broadcast = false;
            self.broadcast_append();
        }

        let soft = self.soft_state();
        let soft_state = if soft != self.last_soft_state {
            self.last_soft_state = soft;
            Some(soft)
        } else {
            None
        };
        Ready {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages: std::mem::take(&mut self.messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// The driver made the snapshot, entries and hard state of every Ready up to
    /// `number` durable. Readies must be acknowledged in the order they were taken.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(
            number > self.persisted_ready_number && number < self.next_ready_number,
            "on_persisted({number}) out of order: last acknowledged {}, last issued {}",
            self.persisted_ready_number,
            self.next_ready_number - 1
        );
        while let Some(record) = self.readies_in_flight.front() {
            if record.number > number {
                break;
            }
            let record = self.readies_in_flight.pop_front().expect("front exists");
            for (index, term) in record.snapshot.into_iter().chain(record.last_entry) {
                // Durable and still ours: the Log Matching Property makes the prefix equal.
                if self.log.term(index) == Some(term) && index > self.log.persisted {
                    self.log.persisted = index;
                }
            }
        }
        self.persisted_ready_number = number;
        while let Some((needed, _)) = self.messages_after_persist.front() {
            if *needed > number {
                break;
            }
            let (_, message) = self
                .messages_after_persist
                .pop_front()
                .expect("front exists");
            self.messages.push(message);
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted;
            let tick = self.tick_count;
            let pr = self
                .progress
                .get_mut(&self.id)
                .expect("leader tracks itself");
            pr.maybe_update(persisted, tick);
            if self.maybe_commit() {
                self.needs_broadcast = true;
            }
        }
    }

    // ----- inspection ---------------------------------------------------------------

    pub fn id(&self) -> MemberId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn leader(&self) -> Option<MemberId> {
        self.leader
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            persisted: self.log.persisted,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            conf_state: self.conf.clone(),
        }
    }

    /// The term of the entry at `index`, if the log holds it (or it is the snapshot point).
    pub fn log_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    /// The entry at `index`, if the log holds it.
    pub fn log_entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The latest snapshot this member holds (made by `compact` or received).
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.log.committed
    }

    /// The membership as of the applied index.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf
    }

    /// Replication state of `member` as seen by this leader: (matched, next).
    pub fn progress_of(&self, member: MemberId) -> Option<(LogIndex, LogIndex)> {
        self.progress.get(&member).map(|p| (p.matched, p.next))
    }

    // ----- helpers shared by the protocol modules -----------------------------------

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    /// Queues a message that depends on nothing durable (appends from the leader,
    /// heartbeats, pre-votes, read-index traffic).
    pub(crate) fn send(&mut self, to: MemberId, body: MessageBody) {
        let term = self.term;
        self.send_with_term(to, term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: MemberId, term: Term, body: MessageBody) {
        assert!(to != self.id, "a member never messages itself");
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Queues a message that promises something about durable state (a vote, an append
    /// acknowledgement): it leaves only after everything changed so far is persisted.
    pub(crate) fn send_after_persist(&mut self, to: MemberId, term: Term, body: MessageBody) {
        assert!(to != self.id, "a member never messages itself");
        let message = Message {
            from: self.id,
            to,
            term,
            body,
        };
        let dirty = self.pending_snapshot.is_some()
            || self.log.has_unstable()
            || self.hard_state() != self.last_hard_state;
        let needed = if dirty {
            self.next_ready_number
        } else {
            self.next_ready_number - 1
        };
        if needed <= self.persisted_ready_number {
            self.messages.push(message);
        } else {
            self.messages_after_persist.push_back((needed, message));
        }
    }

    pub(crate) fn set_pending_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = Some(snapshot.clone());
        self.pending_snapshot = Some(snapshot);
    }

    pub(crate) fn reset_election_timeout(&mut self) {
        let base = self.cfg.election_tick as u64;
        self.randomized_election_timeout = (base + self.rng.below(base)) as u32;
    }

    /// Whether this member may campaign: a voter with no membership change committed but
    /// not yet applied (a change it does not act on yet could make its quorum wrong).
    pub(crate) fn promotable(&self) -> bool {
        if !self.conf.is_voter(self.id) || self.pending_snapshot.is_some() {
            return false;
        }
        let mut index = self.log.applied.next();
        while index <= self.log.committed {
            match self.log.entry(index) {
                Some(e) if e.kind == EntryKind::ConfChange => return false,
                _ => {}
            }
            index = index.next();
        }
        true
    }

    /// Asserts the cross-field invariants after every input.
    pub(crate) fn assert_invariants(&self) {
        self.log.assert_invariants();
        if self.role == Role::Leader {
            assert_eq!(self.leader, Some(self.id), "a leader leads itself");
            assert_eq!(self.vote, Some(self.id), "a leader voted for itself");
            assert!(
                self.progress.contains_key(&self.id),
                "a leader tracks itself"
            );
        } else {
            assert!(self.progress.is_empty(), "only a leader tracks progress");
        }
        if self.role == Role::Candidate {
            assert_eq!(self.vote, Some(self.id), "a candidate voted for itself");
        }
    }

    pub(crate) fn voters(&self) -> Vec<MemberId> {
        self.conf.voters.clone()
    }

    pub(crate) fn quorum_of(&self, ids: &BTreeSet<MemberId>) -> bool {
        let count = self.conf.voters.iter().filter(|v| ids.contains(v)).count();
        count >= self.conf.quorum()
    }
}
