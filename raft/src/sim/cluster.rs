//! The simulated cluster: members with disks that lose unsynced writes on a crash, the
//! driver loop that follows the Ready contract, clients, the fault planner, the operator,
//! and the invariant checks run after every simulated millisecond.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use super::kv::{decode_command, encode_command, HistoryOp, KvState, OpKind, Output};
use super::linearizability::{check_history, Verdict};
use super::network::{Network, NetworkFaults};
use crate::rng::SplitMix64;
use crate::{
    ConfChange, ConfChangeKind, Config, Entry, EntryKind, HardState, LogIndex, MemberId, Proposed,
    RawNode, RestartState, Role, Snapshot, Term,
};

/// Members tick every this many simulated milliseconds.
const TICK_MS: u64 = 10;
const ELECTION_TICK: u32 = 10;
/// After healing, a leader must exist within this many ticks.
const LEADER_AFTER_HEAL_TICKS_MAX: u64 = 300;
/// A leader counts as stable once it has led this long without interruption.
const SETTLE_MS: u64 = 2 * ELECTION_TICK as u64 * TICK_MS;
/// After a leader exists, clients keep running this long and must all succeed.
const STABLE_WORKLOAD_MS: u64 = 1_000;
/// Then every operation must be resolved and every member converged within this long.
const DRAIN_MS_MAX: u64 = 3_000;
const KEYS: u64 = 3;
const CLIENTS: u32 = 3;
const CLIENT_TIMEOUT_MS: u64 = 400;

/// How long and how hard one run is.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Length of the fault phase in simulated milliseconds.
    pub fault_ms: u64,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions { fault_ms: 3_000 }
    }
}

/// Counts from a passing run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub members_initial: usize,
    pub simulated_ms: u64,
    pub ops_completed: u64,
    pub ops_unknown: u64,
    /// Writes whose client gave up but which were later seen applied.
    pub unknown_writes_seen_applied: u64,
    pub leaders_elected: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub conf_changes_applied: u64,
    pub snapshots_installed: u64,
    pub transfers: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub final_commit: u64,
}

/// A failed run: what broke, when, and how to replay it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub at_ms: u64,
    pub reason: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at t={}ms: {}\n  replay: cargo run --release -p corekv-raft --bin raft-sim -- --seed {} --trace",
            self.seed, self.at_ms, self.reason, self.seed
        )
    }
}

/// Runs one seed, turning a panic inside Raft (a failed assertion) into a failure that
/// carries the replay line.
pub fn run_seed_catching(
    seed: u64,
    options: &SimOptions,
    trace: &mut dyn FnMut(&str),
) -> Result<SimReport, SimFailure> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_seed(seed, options, &mut *trace)
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(SimFailure {
                seed,
                at_ms: 0,
                reason: format!("panic: {reason}"),
            })
        }
    }
}

/// Runs one seed. Assertion failures inside Raft panic; callers that want a replay line
/// for those too use `std::panic::catch_unwind` (the test suite and `raft-sim` do).
pub fn run_seed(
    seed: u64,
    options: &SimOptions,
    trace: &mut dyn FnMut(&str),
) -> Result<SimReport, SimFailure> {
    let mut sim = Sim::new(seed, options.clone(), trace);
    match sim.run() {
        Ok(()) => Ok(sim.report()),
        Err(reason) => Err(SimFailure {
            seed,
            at_ms: sim.now,
            reason,
        }),
    }
}

#[derive(Debug, Default)]
struct Disk {
    written: bool,
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Job {
    done_at: u64,
    number: u64,
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct SimNode {
    raft: Option<RawNode>,
    disk: Disk,
    jobs: VecDeque<Job>,
    kv: KvState,
    /// Proposals this member accepted as leader: last index -> (term, op).
    proposals: BTreeMap<LogIndex, (Term, usize)>,
    /// Reads in progress: (op, read index once known).
    reads: Vec<(usize, Option<LogIndex>)>,
    initial: bool,
    tick_phase: u64,
    restart_at: Option<u64>,
    shutdown_at: Option<u64>,
    shut_down: bool,
    last_commit: LogIndex,
    incarnation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpStatus {
    Pending,
    Done,
    Unknown,
    Discarded,
}

#[derive(Debug)]
struct OpRecord {
    op: HistoryOp,
    status: OpStatus,
    /// Issued once the healed cluster had a leader: must succeed.
    must_succeed: bool,
}

#[derive(Debug)]
struct Client {
    busy: Option<(usize, u64)>,
    next_at: u64,
    counter: u64,
    last_seen: [u64; KEYS as usize],
    /// Clients stick to the member that last served them, as real clients do; this is
    /// what exposes a deposed leader that still answers.
    sticky: Option<MemberId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Faults,
    Healing,
    Stable,
    Drain,
}

struct Sim<'t> {
    options: SimOptions,
    rng: SplitMix64,
    now: u64,
    events: u64,
    net: Network,
    nodes: BTreeMap<MemberId, SimNode>,
    initial: Vec<MemberId>,
    next_id: u64,
    clients: Vec<Client>,
    ops: Vec<OpRecord>,
    trace: &'t mut dyn FnMut(&str),
    tracing: bool,
    phase: Phase,

    snapshot_every: u64,
    /// Some seeds run without check-quorum so that deposed leaders linger and ReadIndex
    /// must protect reads on its own.
    check_quorum: bool,
    crash_ppm: u64,
    partition_ppm: u64,
    conf_change_ppm: u64,
    transfer_ppm: u64,
    partition_until: Option<u64>,

    // Invariant bookkeeping.
    leaders: BTreeMap<Term, MemberId>,
    log_entries: HashMap<(u64, u64), (u64, u64)>,
    /// Committed index -> (entry term, term of the first member seen committing it).
    /// The second is at least the term in which the entry was committed, which is what
    /// Leader Completeness speaks about: leaders of later terms must hold it.
    committed: BTreeMap<u64, (Term, Term)>,
    applied_entries: HashMap<u64, (Term, u64)>,
    state_digests: HashMap<u64, u64>,

    report: SimReport,
}

fn entry_digest(e: &Entry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (e.kind == EntryKind::ConfChange) as u64;
    for b in &e.data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

impl<'t> Sim<'t> {
    fn new(seed: u64, options: SimOptions, trace: &'t mut dyn FnMut(&str)) -> Sim<'t> {
        let mut rng = SplitMix64::new(seed);
        let members = if rng.chance(500_000) { 3 } else { 5 };
        let faults = NetworkFaults {
            drop_ppm: rng.between(0, 100_000),
            duplicate_ppm: rng.between(0, 50_000),
            long_delay_ppm: rng.between(0, 50_000),
            delay_ms_max: rng.between(1, 8),
            long_delay_ms_max: rng.between(10, 300),
        };
        let initial: Vec<MemberId> = (1..=members).map(MemberId).collect();
        let mut sim = Sim {
            options,
            now: 0,
            events: 0,
            net: Network::new(faults),
            nodes: BTreeMap::new(),
            initial: initial.clone(),
            next_id: members + 1,
            clients: (0..CLIENTS)
                .map(|_| Client {
                    busy: None,
                    next_at: 0,
                    counter: 0,
                    last_seen: [0; KEYS as usize],
                    sticky: None,
                })
                .collect(),
            ops: Vec::new(),
            tracing: false,
            trace,
            phase: Phase::Faults,
            snapshot_every: rng.between(5, 200),
            check_quorum: rng.chance(750_000),
            crash_ppm: rng.between(0, 4_000),
            partition_ppm: rng.between(0, 4_000),
            conf_change_ppm: rng.between(0, 5_000),
            transfer_ppm: rng.between(0, 2_000),
            partition_until: None,
            leaders: BTreeMap::new(),
            log_entries: HashMap::new(),
            committed: BTreeMap::new(),
            applied_entries: HashMap::new(),
            state_digests: HashMap::new(),
            report: SimReport {
                seed,
                members_initial: members as usize,
                ..SimReport::default()
            },
            rng,
        };
        // Probe whether the sink wants lines; a no-op sink costs nothing either way.
        sim.tracing = true;
        sim.trace_line(format!(
            "seed {seed}: {members} members, faults {faults:?}, snapshot every {} entries, check-quorum {}",
            sim.snapshot_every, sim.check_quorum
        ));
        for id in initial {
            let phase = sim.rng.below(TICK_MS);
            let node = SimNode {
                raft: Some(RawNode::bootstrap(sim.config(id), &sim.initial)),
                disk: Disk::default(),
                jobs: VecDeque::new(),
                kv: KvState::default(),
                proposals: BTreeMap::new(),
                reads: Vec::new(),
                initial: true,
                tick_phase: phase,
                restart_at: None,
                shutdown_at: None,
                shut_down: false,
                last_commit: LogIndex::ZERO,
                incarnation: 0,
            };
            sim.nodes.insert(id, node);
        }
        sim
    }

    fn config(&mut self, id: MemberId) -> Config {
        let mut cfg = Config::new(id, self.rng.next_u64());
        cfg.election_tick = ELECTION_TICK;
        cfg.heartbeat_tick = 1;
        cfg.check_quorum = self.check_quorum;
        cfg.max_entries_bytes_per_message = self.rng.between(64, 4096);
        cfg.max_inflight_messages = self.rng.between(1, 16) as usize;
        cfg
    }

    fn trace_line(&mut self, line: String) {
        if self.tracing {
            (self.trace)(&format!("[{:>6}ms] {line}", self.now));
        }
    }

    fn report(&self) -> SimReport {
        let mut report = self.report.clone();
        report.simulated_ms = self.now;
        report.messages_sent = self.net.sent;
        report.messages_dropped = self.net.dropped;
        report.ops_completed = self
            .ops
            .iter()
            .filter(|o| o.status == OpStatus::Done)
            .count() as u64;
        report.ops_unknown = self
            .ops
            .iter()
            .filter(|o| o.status == OpStatus::Unknown)
            .count() as u64;
        report.final_commit = self.committed.keys().next_back().copied().unwrap_or(0);
        report
    }

    fn run(&mut self) -> Result<(), String> {
        let fault_end = self.options.fault_ms;
        while self.now < fault_end {
            self.step_ms()?;
        }
        // Healing: everything stops failing.
        self.phase = Phase::Healing;
        self.net.heal();
        self.net.faults = NetworkFaults::calm();
        self.partition_until = None;
        let ids: Vec<MemberId> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.nodes[&id].raft.is_none() && !self.nodes[&id].shut_down {
                self.restart(id);
            }
        }
        self.trace_line("healed: faults stop".into());
        let heal_at = self.now;
        // A leader must appear and keep leading for a settling period (a leader whose
        // removal was still in flight steps down once, legitimately).
        let mut leading: Option<(MemberId, u64)> = None;
        loop {
            if self.now - heal_at > LEADER_AFTER_HEAL_TICKS_MAX * TICK_MS {
                return Err(format!(
                    "liveness: no stable leader {LEADER_AFTER_HEAL_TICKS_MAX} ticks after healing"
                ));
            }
            match (self.stable_leader(), leading) {
                (Some(l), Some((same, since))) if l == same => {
                    if self.now - since >= SETTLE_MS {
                        break;
                    }
                }
                (Some(l), _) => leading = Some((l, self.now)),
                (None, _) => leading = None,
            }
            self.step_ms()?;
        }
        self.phase = Phase::Stable;
        let stable_at = self.now;
        while self.now - stable_at < STABLE_WORKLOAD_MS {
            self.step_ms()?;
        }
        self.phase = Phase::Drain;
        let drain_at = self.now;
        while !self.drained() {
            if self.now - drain_at > DRAIN_MS_MAX {
                return Err(self.undrained_reason());
            }
            if self.now % TICK_MS == 0 {
                if let Some(leader) = self.stable_leader() {
                    let raft = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut());
                    if let Some(raft) = raft {
                        let _ = raft.propose(Vec::new());
                    }
                }
            }
            self.step_ms()?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            if op.must_succeed && op.status != OpStatus::Done {
                return Err(format!(
                    "liveness: operation {i} issued after healing ended {:?}: {:?}",
                    op.status, op.op
                ));
            }
        }
        self.check_linearizable()
    }

    /// The alive leader with the highest term, if it has committed in its term.
    fn stable_leader(&self) -> Option<MemberId> {
        let mut best: Option<(Term, MemberId)> = None;
        for (id, node) in &self.nodes {
            if let Some(raft) = &node.raft {
                if raft.role() == Role::Leader
                    && raft.conf_state().is_voter(*id)
                    && raft.log_term(raft.commit_index()) == Some(raft.term())
                    && best.is_none_or(|(t, _)| raft.term() > t)
                {
                    best = Some((raft.term(), *id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    fn leader_hint(&self) -> Option<MemberId> {
        let mut best: Option<(Term, MemberId)> = None;
        for (id, node) in &self.nodes {
            if let Some(raft) = &node.raft {
                if raft.role() == Role::Leader && best.is_none_or(|(t, _)| raft.term() > t) {
                    best = Some((raft.term(), *id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    fn drained(&self) -> bool {
        if self.clients.iter().any(|c| c.busy.is_some()) {
            return false;
        }
        if self.nodes.values().any(|n| !n.proposals.is_empty()) {
            return false;
        }
        let Some(leader) = self.stable_leader() else {
            return false;
        };
        let raft = self.nodes[&leader].raft.as_ref().expect("leader alive");
        let commit = raft.commit_index();
        let conf = raft.conf_state().clone();
        self.nodes.iter().all(|(id, n)| {
            !conf.contains(*id)
                || n.raft
                    .as_ref()
                    .is_some_and(|r| r.status().applied == commit)
        })
    }

    fn undrained_reason(&self) -> String {
        let busy = self.clients.iter().filter(|c| c.busy.is_some()).count();
        let trackers: usize = self.nodes.values().map(|n| n.proposals.len()).sum();
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, n)| match &n.raft {
                Some(r) => {
                    let s = r.status();
                    format!(
                        "{id}:{:?} t{} commit {} applied {} last {}",
                        s.role, s.term, s.commit, s.applied, s.last_index
                    )
                }
                None => format!("{id}:down"),
            })
            .collect();
        format!(
            "liveness: not converged {DRAIN_MS_MAX}ms into the drain ({busy} clients busy, {trackers} proposals unresolved; {})",
            states.join(", ")
        )
    }

    fn check_linearizable(&mut self) -> Result<(), String> {
        let history: Vec<HistoryOp> = self
            .ops
            .iter()
            .filter(|o| matches!(o.status, OpStatus::Done | OpStatus::Unknown))
            .map(|o| o.op.clone())
            .collect();
        match check_history(&history) {
            Verdict::Linearizable => Ok(()),
            Verdict::NotLinearizable { key } => {
                // Report the shortest failing prefix (by call order): its last operations
                // are where to look.
                let mut ops: Vec<HistoryOp> =
                    history.iter().filter(|o| o.key == key).cloned().collect();
                ops.sort_by_key(|o| o.call);
                let mut shortest = ops.len();
                for n in 1..=ops.len() {
                    if check_history(&ops[..n]) != Verdict::Linearizable {
                        shortest = n;
                        break;
                    }
                }
                let tail: Vec<String> = ops[shortest.saturating_sub(12)..shortest]
                    .iter()
                    .map(|o| format!("{o:?}"))
                    .collect();
                Err(format!(
                    "history of key {key} is not linearizable; the first {shortest} operations already fail, ending with:\n    {}",
                    tail.join("\n    ")
                ))
            }
            Verdict::TooLarge { key } => {
                Err(format!("linearizability search too large for key {key}"))
            }
        }
    }

    // ----- one simulated millisecond -------------------------------------------------

    fn step_ms(&mut self) -> Result<(), String> {
        self.now += 1;
        if self.phase == Phase::Faults {
            self.plan_faults();
        }
        self.restart_and_shutdown();
        while let Some(message) = self.net.next_due(self.now) {
            let to = message.to;
            let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) else {
                continue;
            };
            if self.tracing {
                let line = format!(
                    "deliver {} -> {} t{} {:?}",
                    message.from, to, message.term, message.body
                );
                raft.step(message);
                self.trace_line(line);
            } else {
                raft.step(message);
            }
        }
        self.complete_disk_writes()?;
        let ids: Vec<MemberId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let now = self.now;
            let node = self.nodes.get_mut(&id).expect("listed");
            if (now + node.tick_phase) % TICK_MS == 0 {
                if let Some(raft) = node.raft.as_mut() {
                    raft.tick();
                }
            }
        }
        self.drive_clients()?;
        if self.phase == Phase::Faults {
            self.operate();
        }
        for &id in &ids {
            self.process_ready(id)?;
            self.maybe_compact(id);
        }
        self.check_invariants()
    }

    fn plan_faults(&mut self) {
        if let Some(until) = self.partition_until {
            if self.now >= until {
                self.net.heal();
                self.partition_until = None;
                self.trace_line("partition healed".into());
            }
        }
        let alive: Vec<MemberId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect();
        if self.rng.chance(self.crash_ppm) && !alive.is_empty() {
            let down = self
                .nodes
                .values()
                .filter(|n| n.raft.is_none() && !n.shut_down)
                .count();
            if down < self.initial.len() / 2 {
                let victim = alive[self.rng.below(alive.len() as u64) as usize];
                let back_in = self.rng.between(20, 600);
                self.crash(victim, back_in);
            }
        }
        if self.partition_until.is_none() && self.rng.chance(self.partition_ppm) {
            let ids: Vec<MemberId> = self.nodes.keys().copied().collect();
            let kind = self.rng.below(3);
            let what = match kind {
                0 => {
                    let lonely = ids[self.rng.below(ids.len() as u64) as usize];
                    for &other in &ids {
                        if other != lonely {
                            self.net.cut(lonely, other);
                            self.net.cut(other, lonely);
                        }
                    }
                    format!("isolate {lonely}")
                }
                1 => {
                    let side: Vec<bool> = ids.iter().map(|_| self.rng.chance(500_000)).collect();
                    for (i, &a) in ids.iter().enumerate() {
                        for (j, &b) in ids.iter().enumerate() {
                            if side[i] != side[j] {
                                self.net.cut(a, b);
                            }
                        }
                    }
                    format!("split {side:?}")
                }
                _ => {
                    let links = self.rng.between(1, ids.len() as u64 * 2);
                    for _ in 0..links {
                        let a = ids[self.rng.below(ids.len() as u64) as usize];
                        let b = ids[self.rng.below(ids.len() as u64) as usize];
                        if a != b {
                            self.net.cut(a, b);
                        }
                    }
                    format!("asymmetric cut of {} links", self.net.cut_links())
                }
            };
            self.report.partitions += 1;
            self.partition_until = Some(self.now + self.rng.between(50, 1_000));
            self.trace_line(format!("partition: {what}"));
        }
    }

    fn crash(&mut self, id: MemberId, back_in_ms: u64) {
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("crash of a known member");
        node.raft = None;
        // Unsynced writes are lost; so is everything in memory.
        node.jobs.clear();
        node.kv = KvState::default();
        node.proposals.clear();
        node.reads.clear();
        node.restart_at = Some(now + back_in_ms);
        self.report.crashes += 1;
        self.trace_line(format!("crash {id}, restart in {back_in_ms}ms"));
    }

    fn restart(&mut self, id: MemberId) {
        let cfg = self.config(id);
        let node = self.nodes.get_mut(&id).expect("restart of a known member");
        node.restart_at = None;
        node.incarnation += 1;
        node.last_commit = LogIndex::ZERO;
        let raft = if !node.disk.written && node.initial {
            // Crashed before its bootstrap reached the disk: bootstrap again, identically.
            RawNode::bootstrap(cfg, &self.initial)
        } else {
            let kv = match &node.disk.snapshot {
                Some(s) => KvState::decode(&s.data),
                None => KvState::default(),
            };
            let state = RestartState {
                hard_state: node.disk.hard_state,
                snapshot: node.disk.snapshot.clone(),
                entries: node.disk.entries.clone(),
                applied: kv.applied,
            };
            node.kv = kv;
            RawNode::restart(cfg, state).expect("the simulated disk is consistent")
        };
        node.raft = Some(raft);
        self.trace_line(format!("restart {id}"));
    }

    fn restart_and_shutdown(&mut self) {
        let now = self.now;
        let due: Vec<MemberId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.restart_at.is_some_and(|t| t <= now) && !n.shut_down)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.restart(id);
        }
        let leaving: Vec<MemberId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.shutdown_at.is_some_and(|t| t <= now) && !n.shut_down)
            .map(|(id, _)| *id)
            .collect();
        for id in leaving {
            let node = self.nodes.get_mut(&id).expect("listed");
            node.shut_down = true;
            node.raft = None;
            node.jobs.clear();
            node.proposals.clear();
            node.reads.clear();
            node.restart_at = None;
            self.trace_line(format!("shut down removed member {id}"));
        }
    }

    fn complete_disk_writes(&mut self) -> Result<(), String> {
        let now = self.now;
        for (id, node) in self.nodes.iter_mut() {
            while node.jobs.front().is_some_and(|j| j.done_at <= now) {
                let job = node.jobs.pop_front().expect("front exists");
                let disk = &mut node.disk;
                if let Some(snapshot) = job.snapshot {
                    disk.entries.clear();
                    disk.snapshot = Some(snapshot);
                }
                if let Some(first) = job.entries.first() {
                    let base = disk.snapshot.as_ref().map_or(0, |s| s.meta.index.0);
                    if first.index.0 <= base {
                        return Err(format!(
                            "{id}: persisting entry {} below the snapshot {base}",
                            first.index
                        ));
                    }
                    let keep = (first.index.0 - base - 1) as usize;
                    if keep > disk.entries.len() {
                        return Err(format!(
                            "{id}: persisting entry {} leaves a gap on disk",
                            first.index
                        ));
                    }
                    disk.entries.truncate(keep);
                    disk.entries.extend(job.entries);
                }
                if let Some(hs) = job.hard_state {
                    if hs.commit < disk.hard_state.commit || hs.term < disk.hard_state.term {
                        return Err(format!(
                            "{id}: durable hard state went backwards: {:?} -> {hs:?}",
                            disk.hard_state
                        ));
                    }
                    disk.hard_state = hs;
                }
                disk.written = true;
                node.raft
                    .as_mut()
                    .expect("jobs exist only while alive")
                    .on_persisted(job.number);
            }
        }
        Ok(())
    }

    // ----- the driver: one member's readies ---------------------------------------

    fn process_ready(&mut self, id: MemberId) -> Result<(), String> {
        for _ in 0..64 {
            let node = self.nodes.get_mut(&id).expect("listed");
            let Some(raft) = node.raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                return Ok(());
            }
            let rd = raft.ready();
            if let Some(soft) = rd.soft_state {
                self.trace_line(format!(
                    "{id} is now {:?} (leader {:?})",
                    soft.role, soft.leader
                ));
                if soft.role == Role::Leader {
                    self.report.leaders_elected += 1;
                    self.check_leader_completeness(id)?;
                }
            }
            self.check_log_matching(id, &rd.entries)?;
            for message in rd.messages {
                let now = self.now;
                self.net.send(&mut self.rng, now, message);
            }
            let latency = self.rng.between(0, 4);
            let now = self.now;
            let node = self.nodes.get_mut(&id).expect("listed");
            let done_at = node.jobs.back().map_or(0, |j| j.done_at).max(now + latency);
            node.jobs.push_back(Job {
                done_at,
                number: rd.number,
                hard_state: rd.hard_state,
                snapshot: rd.snapshot.clone(),
                entries: rd.entries,
            });
            if let Some(snapshot) = rd.snapshot {
                self.install_snapshot(id, snapshot)?;
            }
            for entry in rd.committed_entries {
                self.apply(id, entry)?;
            }
            let node = self.nodes.get_mut(&id).expect("listed");
            for rs in rd.read_states {
                if let Some(read) = node
                    .reads
                    .iter_mut()
                    .find(|(op, _)| *op as u64 == rs.request)
                {
                    read.1 = Some(rs.index);
                }
            }
            self.serve_reads(id);
        }
        Err(format!("{id}: more than 64 readies in one millisecond"))
    }

    fn install_snapshot(&mut self, id: MemberId, snapshot: Snapshot) -> Result<(), String> {
        let index = snapshot.meta.index;
        if let Some((term, _)) = self.committed.get(&index.0) {
            if *term != snapshot.meta.term {
                return Err(format!(
                    "{id}: snapshot at {index} has term {} but {term} was committed there",
                    snapshot.meta.term
                ));
            }
        }
        let kv = KvState::decode(&snapshot.data);
        if kv.applied != index {
            return Err(format!(
                "{id}: snapshot data at {} labelled {index}",
                kv.applied
            ));
        }
        if let Some(digest) = self.state_digests.get(&index.0) {
            if *digest != kv.digest() {
                return Err(format!(
                    "{id}: snapshot state at {index} differs from applied state"
                ));
            }
        }
        self.report.snapshots_installed += 1;
        self.trace_line(format!("{id} installs snapshot at {index}"));
        let node = self.nodes.get_mut(&id).expect("listed");
        node.kv = kv;
        // Proposals covered by the snapshot have an outcome this member cannot see.
        let covered: Vec<LogIndex> = node.proposals.range(..=index).map(|(i, _)| *i).collect();
        let ops: Vec<usize> = covered
            .iter()
            .map(|i| node.proposals.remove(i).expect("listed").1)
            .collect();
        for op in ops {
            self.finish_op(op, OpStatus::Unknown, None);
        }
        Ok(())
    }

    fn apply(&mut self, id: MemberId, entry: Entry) -> Result<(), String> {
        let digest = entry_digest(&entry);
        match self.applied_entries.get(&entry.index.0) {
            Some(&(term, d)) if term != entry.term || d != digest => {
                return Err(format!(
                    "state machine safety: {id} applied ({}, t{}) but another member applied t{term} there",
                    entry.index, entry.term
                ));
            }
            Some(_) => {}
            None => {
                self.applied_entries
                    .insert(entry.index.0, (entry.term, digest));
            }
        }
        let now_event = self.next_event();
        let node = self.nodes.get_mut(&id).expect("listed");
        if entry.index != node.kv.applied.next() {
            return Err(format!(
                "{id}: applied {} after {}",
                entry.index, node.kv.applied
            ));
        }
        node.kv.applied = entry.index;
        let mut output = None;
        let mut removed = None;
        match entry.kind {
            EntryKind::Normal if !entry.data.is_empty() => {
                let (op_id, key, kind) = decode_command(&entry.data);
                output = node.kv.apply(op_id, key, kind).map(|out| (op_id, out));
            }
            EntryKind::Normal => {}
            EntryKind::ConfChange => {
                let change = ConfChange::decode(&entry.data).map_err(|e| e.to_string())?;
                if change.kind == ConfChangeKind::RemoveMember {
                    removed = Some(change.member);
                }
            }
        }
        let digest = node.kv.digest();
        let resolved = node.proposals.remove(&entry.index);
        match self.state_digests.get(&entry.index.0) {
            Some(d) if *d != digest => {
                return Err(format!(
                    "{id}: state at applied index {} differs from another member's",
                    entry.index
                ));
            }
            Some(_) => {}
            None => {
                self.state_digests.insert(entry.index.0, digest);
            }
        }
        if let Some((op_id, _)) = output {
            let op = &mut self.ops[op_id as usize];
            if op.status == OpStatus::Unknown && op.op.ret.is_none() {
                // The write took effect no later than now.
                op.op.ret = Some(now_event);
                self.report.unknown_writes_seen_applied += 1;
            }
        }
        if let Some((term, op)) = resolved {
            if term == entry.term {
                let seen = output.map(|(op_id, out)| {
                    assert_eq!(
                        op_id as usize, op,
                        "the tracked entry carries its operation"
                    );
                    out
                });
                self.finish_op(op, OpStatus::Done, seen);
            } else {
                // Another entry is committed at that index: ours never took effect.
                self.finish_op(op, OpStatus::Discarded, None);
            }
        }
        if let Some(member) = removed {
            if entry.kind == EntryKind::ConfChange {
                let delay = if self.phase == Phase::Faults {
                    self.rng.between(0, 500)
                } else {
                    0
                };
                let now = self.now;
                if let Some(node) = self.nodes.get_mut(&member) {
                    if node.shutdown_at.is_none() {
                        node.shutdown_at = Some(now + delay);
                    }
                }
            }
        }
        if entry.kind == EntryKind::ConfChange && id == self.applier_of_record(entry.index) {
            self.report.conf_changes_applied += 1;
            self.trace_line(format!(
                "conf change at {} applied: {:?}",
                entry.index,
                ConfChange::decode(&entry.data).ok()
            ));
        }
        Ok(())
    }

    /// The first member to apply `index` counts it in the report.
    fn applier_of_record(&self, index: LogIndex) -> MemberId {
        let applied_here = self
            .nodes
            .iter()
            .filter(|(_, n)| n.kv.applied >= index)
            .count();
        if applied_here <= 1 {
            self.nodes
                .iter()
                .find(|(_, n)| n.kv.applied >= index)
                .map_or(MemberId::ZERO, |(id, _)| *id)
        } else {
            MemberId::ZERO
        }
    }

    fn serve_reads(&mut self, id: MemberId) {
        let node = self.nodes.get_mut(&id).expect("listed");
        let applied = node.kv.applied;
        let mut ready = Vec::new();
        node.reads.retain(|(op, index)| match index {
            Some(i) if *i <= applied => {
                ready.push(*op);
                false
            }
            _ => true,
        });
        for op in ready {
            let key = self.ops[op].op.key;
            let value = self.nodes[&id].kv.get(key);
            self.finish_op(op, OpStatus::Done, Some(Output::Get { value }));
        }
    }

    fn next_event(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    /// Resolves an operation if its client is still waiting for it.
    fn finish_op(&mut self, op: usize, status: OpStatus, output: Option<Output>) {
        if self.ops[op].status != OpStatus::Pending {
            return;
        }
        let ret = self.next_event();
        let record = &mut self.ops[op];
        record.status = status;
        if status == OpStatus::Done {
            record.op.ret = Some(ret);
            record.op.output = output;
        }
        let client = record.op.client as usize;
        if let (OpKind::Get, Some(Output::Get { value })) = (record.op.kind, output) {
            self.clients[client].last_seen[record.op.key as usize] = value;
        }
        if self.clients[client].busy.is_some_and(|(o, _)| o == op) {
            self.clients[client].busy = None;
            self.clients[client].next_at = self.now + self.rng.between(0, 30);
        }
    }

    // ----- clients and operator -----------------------------------------------------

    fn drive_clients(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            if let Some((op, deadline)) = self.clients[c].busy {
                if self.now >= deadline {
                    let status = if self.ops[op].op.kind == OpKind::Get {
                        OpStatus::Discarded
                    } else {
                        OpStatus::Unknown
                    };
                    self.ops[op].status = status;
                    self.clients[c].busy = None;
                    self.clients[c].sticky = None;
                    self.clients[c].next_at = self.now + self.rng.between(0, 30);
                    self.trace_line(format!("client {c} gives up on op {op}"));
                }
                continue;
            }
            if self.phase == Phase::Drain || self.now < self.clients[c].next_at {
                continue;
            }
            self.issue(c);
        }
        Ok(())
    }

    fn issue(&mut self, c: usize) {
        let key = self.rng.below(KEYS) as u8;
        self.clients[c].counter += 1;
        let value = ((c as u64 + 1) << 32) | self.clients[c].counter;
        let kind = match self.rng.below(100) {
            0..=39 => OpKind::Get,
            40..=74 => OpKind::Put { value },
            _ => OpKind::Cas {
                expected: self.clients[c].last_seen[key as usize],
                new: value,
            },
        };
        let candidates: Vec<MemberId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some() && n.shutdown_at.is_none())
            .map(|(id, _)| *id)
            .collect();
        if candidates.is_empty() {
            self.clients[c].next_at = self.now + 10;
            return;
        }
        let target = match self.leader_hint() {
            Some(leader)
                if self.rng.chance(700_000) && self.nodes[&leader].shutdown_at.is_none() =>
            {
                leader
            }
            _ => candidates[self.rng.below(candidates.len() as u64) as usize],
        };
        let op = self.ops.len();
        let call = self.next_event();
        self.ops.push(OpRecord {
            op: HistoryOp {
                client: c as u32,
                key,
                kind,
                call,
                ret: None,
                output: None,
            },
            status: OpStatus::Pending,
            must_succeed: self.phase == Phase::Stable,
        });
        let deadline = self.now + CLIENT_TIMEOUT_MS;
        let node = self.nodes.get_mut(&target).expect("candidate");
        let raft = node.raft.as_mut().expect("candidate is alive");
        let accepted = match kind {
            OpKind::Get => match raft.read_index(op as u64) {
                Ok(()) => {
                    node.reads.push((op, None));
                    true
                }
                Err(_) => false,
            },
            _ if raft.role() == Role::Leader => {
                match raft.propose(encode_command(op as u64, key, kind)) {
                    Ok(Proposed::Appended { last, term, .. }) => {
                        node.proposals.insert(last, (term, op));
                        true
                    }
                    _ => false,
                }
            }
            _ if self.phase == Phase::Faults && self.rng.chance(100_000) => {
                // Forwarded through a follower: the outcome is only known if it applies.
                let forwarded = raft.propose(encode_command(op as u64, key, kind)).is_ok();
                if forwarded {
                    self.ops[op].status = OpStatus::Unknown;
                }
                self.clients[c].next_at = self.now + self.rng.between(0, 30);
                return;
            }
            _ => false,
        };
        self.trace_line(format!(
            "client {c} op {op} {kind:?} key {key} at {target}: accepted {accepted}"
        ));
        if accepted {
            self.clients[c].busy = Some((op, deadline));
            self.clients[c].sticky = Some(target);
        } else {
            self.clients[c].sticky = None;
            // Refused outright (no leader, not the leader): nothing happened.
            self.ops[op].status = OpStatus::Discarded;
            self.ops[op].must_succeed = false;
            self.clients[c].next_at = self.now + self.rng.between(1, 20);
        }
    }

    /// The operator: membership changes and leader transfers during the fault phase.
    fn operate(&mut self) {
        let Some(leader) = self.leader_hint() else {
            return;
        };
        if self.rng.chance(self.transfer_ppm) {
            let voters = self.nodes[&leader]
                .raft
                .as_ref()
                .expect("alive")
                .conf_state()
                .voters
                .clone();
            let target = voters[self.rng.below(voters.len() as u64) as usize];
            let raft = self
                .nodes
                .get_mut(&leader)
                .and_then(|n| n.raft.as_mut())
                .expect("alive");
            if raft.transfer_leader(target).is_ok() {
                self.report.transfers += 1;
                self.trace_line(format!("transfer leadership {leader} -> {target}"));
            }
        }
        if !self.rng.chance(self.conf_change_ppm) {
            return;
        }
        let raft = self.nodes[&leader].raft.as_ref().expect("alive");
        let conf = raft.conf_state().clone();
        let commit = raft.commit_index();
        let change = if let Some(&learner) = conf.learners.first() {
            let caught_up = raft
                .progress_of(learner)
                .is_some_and(|(m, _)| m.0 + 5 >= commit.0);
            if !caught_up {
                return;
            }
            ConfChange {
                kind: ConfChangeKind::AddVoter,
                member: learner,
                context: Vec::new(),
            }
        } else if conf.voters.len() > self.initial.len() {
            let victim = conf.voters[self.rng.below(conf.voters.len() as u64) as usize];
            ConfChange {
                kind: ConfChangeKind::RemoveMember,
                member: victim,
                context: Vec::new(),
            }
        } else {
            ConfChange {
                kind: ConfChangeKind::AddLearner,
                member: MemberId(self.next_id),
                context: Vec::new(),
            }
        };
        let raft = self
            .nodes
            .get_mut(&leader)
            .and_then(|n| n.raft.as_mut())
            .expect("alive");
        if raft.propose_conf_change(change.clone()).is_err() {
            return;
        }
        self.trace_line(format!("operator proposes {change:?} at {leader}"));
        if change.kind == ConfChangeKind::AddLearner {
            let id = MemberId(self.next_id);
            self.next_id += 1;
            let cfg = self.config(id);
            let phase = self.rng.below(TICK_MS);
            self.nodes.insert(
                id,
                SimNode {
                    raft: Some(RawNode::join(cfg)),
                    disk: Disk::default(),
                    jobs: VecDeque::new(),
                    kv: KvState::default(),
                    proposals: BTreeMap::new(),
                    reads: Vec::new(),
                    initial: false,
                    tick_phase: phase,
                    restart_at: None,
                    shutdown_at: None,
                    shut_down: false,
                    last_commit: LogIndex::ZERO,
                    incarnation: 0,
                },
            );
        }
    }

    fn maybe_compact(&mut self, id: MemberId) {
        let every = self.snapshot_every;
        let node = self.nodes.get_mut(&id).expect("listed");
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let status = raft.status();
        let index = node.kv.applied.min(status.persisted);
        if index.0 < status.first_index.0.saturating_sub(1) + every {
            return;
        }
        let mut kv = node.kv.clone();
        if kv.applied != index {
            return;
        }
        kv.applied = index;
        if raft.compact(index, kv.encode()).is_err() {
            return;
        }
        let snapshot = raft.snapshot().expect("just compacted").clone();
        // The application's snapshot file is durable before the log is truncated.
        node.disk.entries.retain(|e| e.index > index);
        node.disk.snapshot = Some(snapshot);
    }

    // ----- invariants -----------------------------------------------------------------

    fn check_invariants(&mut self) -> Result<(), String> {
        for (id, node) in self.nodes.iter_mut() {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            if raft.role() == Role::Leader {
                let term = raft.term();
                let first = *self.leaders.entry(term).or_insert(*id);
                if first != *id {
                    return Err(format!(
                        "election safety: {first} and {id} both lead term {term}"
                    ));
                }
            }
            let commit = raft.commit_index();
            if commit < node.last_commit {
                return Err(format!(
                    "{id}: commit went back from {} to {commit}",
                    node.last_commit
                ));
            }
            let mut index = node.last_commit.next();
            while index <= commit {
                if let Some(term) = raft.log_term(index) {
                    let seen_in = raft.term();
                    let (known, _) = *self.committed.entry(index.0).or_insert((term, seen_in));
                    if known != term {
                        return Err(format!(
                            "{id} committed ({index}, t{term}) but t{known} was committed there"
                        ));
                    }
                }
                index = index.next();
            }
            node.last_commit = commit;
        }
        Ok(())
    }

    fn check_log_matching(&mut self, id: MemberId, entries: &[Entry]) -> Result<(), String> {
        let raft = self.nodes[&id].raft.as_ref().expect("alive");
        for e in entries {
            let prev = if e.index.0 == 1 {
                Some(Term::ZERO)
            } else {
                raft.log_term(e.index.prev())
            };
            let Some(prev) = prev else { continue };
            let record = (entry_digest(e), prev.0);
            let known = *self
                .log_entries
                .entry((e.index.0, e.term.0))
                .or_insert(record);
            if known != record {
                return Err(format!(
                    "log matching: {id} holds ({}, t{}) with a different content or predecessor",
                    e.index, e.term
                ));
            }
        }
        Ok(())
    }

    fn check_leader_completeness(&self, id: MemberId) -> Result<(), String> {
        let raft = self.nodes[&id].raft.as_ref().expect("alive");
        let first = raft.status().first_index;
        for (&index, &(term, committed_in)) in self.committed.range(first.0..) {
            if committed_in < raft.term() && raft.log_term(LogIndex(index)) != Some(term) {
                return Err(format!(
                    "leader completeness: new leader {id} of t{} lacks committed ({index}, t{term})",
                    raft.term()
                ));
            }
        }
        Ok(())
    }
}
