//! The simulated cluster: members with disks that lose unsynced writes on a crash, the
//! driver loop that follows the Ready contract, clients, the fault planner, the operator,
//! and the invariant checks run after every simulated millisecond.

mod driver;
mod invariants;
mod step;
mod workload;

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
    /// Everything that was ever durable here, for checking the Ready contract: a
    /// message may promise what was durable at some point after it was created (a late
    /// release is indistinguishable from network delay).
    ever_entries: std::collections::BTreeSet<(u64, u64)>,
    ever_votes: std::collections::BTreeSet<(u64, u64)>,
    ever_snapshot_index: u64,
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
    /// Each Ready's write takes 0..=this many milliseconds (writes stay in order).
    disk_latency_ms_max: u64,
    /// Acknowledge all writes that completed together with one `on_persisted` call.
    ack_per_group: bool,
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
            disk_latency_ms_max: if rng.chance(300_000) {
                rng.between(5, 30)
            } else {
                4
            },
            ack_per_group: rng.chance(500_000),
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
            "seed {seed}: {members} members, faults {faults:?}, snapshot every {} entries, check-quorum {}, disk latency <= {}ms, group acks {}",
            sim.snapshot_every, sim.check_quorum, sim.disk_latency_ms_max, sim.ack_per_group
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
        self.net.lose_in_flight();
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
}
