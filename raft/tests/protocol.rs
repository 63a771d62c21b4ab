//! Behaviour tests of the Raft state machine on small, hand-driven clusters: each test
//! names the rule it checks. The cluster here is synchronous: persistence is immediate
//! unless a test holds it back, and messages are delivered only when the test says so.

use std::collections::{BTreeMap, BTreeSet};

use corekv_raft::{
    ConfChange, ConfChangeKind, Config, Entry, EntryKind, Error, LogIndex, MemberId, Message,
    MessageBody, Proposed, RawNode, ReadState, Ready, Role, Term,
};

struct Cluster {
    nodes: BTreeMap<MemberId, RawNode>,
    /// Messages sent but not delivered.
    in_flight: Vec<Message>,
    /// Links that lose messages (from, to).
    cut: BTreeSet<(MemberId, MemberId)>,
    /// Members whose Readies are taken but not acknowledged as persisted.
    hold_persist: BTreeSet<MemberId>,
    held: BTreeMap<MemberId, Vec<u64>>,
    applied: BTreeMap<MemberId, Vec<Entry>>,
    reads: BTreeMap<MemberId, Vec<ReadState>>,
    sent: Vec<Message>,
}

fn id(n: u64) -> MemberId {
    MemberId(n)
}

fn config(n: u64) -> Config {
    let mut cfg = Config::new(id(n), n * 7919);
    cfg.max_inflight_messages = 4;
    cfg
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let ids: Vec<MemberId> = (1..=size).map(id).collect();
        let nodes = ids
            .iter()
            .map(|&m| (m, RawNode::bootstrap(config(m.0), &ids)))
            .collect();
        let mut c = Cluster {
            nodes,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            hold_persist: BTreeSet::new(),
            held: BTreeMap::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            sent: Vec::new(),
        };
        c.stabilize();
        c
    }

    fn node(&mut self, n: u64) -> &mut RawNode {
        self.nodes.get_mut(&id(n)).expect("member exists")
    }

    fn handle(&mut self, m: MemberId, rd: Ready) {
        for msg in &rd.messages {
            self.sent.push(msg.clone());
        }
        self.in_flight.extend(rd.messages);
        self.applied
            .entry(m)
            .or_default()
            .extend(rd.committed_entries);
        self.reads.entry(m).or_default().extend(rd.read_states);
        if self.hold_persist.contains(&m) {
            self.held.entry(m).or_default().push(rd.number);
        } else {
            self.nodes
                .get_mut(&m)
                .expect("member")
                .on_persisted(rd.number);
        }
    }

    /// Processes readies and delivers messages until nothing moves.
    fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<MemberId> = self.nodes.keys().copied().collect();
            for m in ids {
                while self.nodes[&m].has_ready() {
                    let rd = self.nodes.get_mut(&m).expect("member").ready();
                    self.handle(m, rd);
                    moved = true;
                }
            }
            for msg in std::mem::take(&mut self.in_flight) {
                moved = true;
                if self.cut.contains(&(msg.from, msg.to)) {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&msg.to) {
                    node.step(msg);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    fn release(&mut self, n: u64) {
        self.hold_persist.remove(&id(n));
        if let Some(numbers) = self.held.remove(&id(n)) {
            if let Some(last) = numbers.last() {
                self.node(n).on_persisted(*last);
            }
        }
    }

    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.stabilize();
        }
    }

    fn elect(&mut self, n: u64) {
        self.node(n).campaign();
        self.stabilize();
        assert_eq!(
            self.node(n).role(),
            Role::Leader,
            "member {n} won the election"
        );
    }

    fn isolate(&mut self, n: u64) {
        let ids: Vec<MemberId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id(n) {
                self.cut.insert((id(n), other));
                self.cut.insert((other, id(n)));
            }
        }
    }

    fn leaders(&self) -> Vec<MemberId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .map(|n| n.id())
            .collect()
    }

    fn applied_data(&self, n: u64) -> Vec<Vec<u8>> {
        self.applied
            .get(&id(n))
            .map(|es| {
                es.iter()
                    .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
                    .map(|e| e.data.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn count_sent(&self, pred: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| pred(m)).count()
    }
}

// Ticking alone elects exactly one leader, and every member follows it.
#[test]
fn election_by_timeout_yields_one_leader() {
    let mut c = Cluster::new(3);
    c.tick_all(30);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    for node in c.nodes.values() {
        assert_eq!(node.leader(), Some(leaders[0]));
    }
}

// Pre-vote: a partitioned member never raises its term, so rejoining does not depose a
// healthy leader (thesis 9.6).
#[test]
fn partitioned_member_does_not_disrupt_on_return() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick_all(100);
    assert_eq!(c.node(3).term(), term, "pre-vote kept the term");
    c.cut.clear();
    c.tick_all(5);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
}

// Check-quorum: a leader cut off from its quorum steps down within two election timeouts.
#[test]
fn isolated_leader_steps_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.tick_all(21);
    assert_eq!(c.node(1).role(), Role::Follower);
}

// A follower forwards proposals to its leader; with no leader the error is etcd's.
#[test]
fn proposals_forward_or_fail_with_no_leader() {
    let mut c = Cluster::new(3);
    assert_eq!(c.node(2).propose(b"x".to_vec()), Err(Error::NoLeader));
    assert_eq!(Error::NoLeader.to_string(), "etcdserver: no leader");
    c.elect(1);
    assert_eq!(
        c.node(2).propose(b"via 2".to_vec()),
        Ok(Proposed::Forwarded { leader: id(1) })
    );
    c.stabilize();
    for n in 1..=3 {
        assert_eq!(c.applied_data(n), vec![b"via 2".to_vec()]);
    }
}

// A follower's acknowledgement leaves only after its Ready is persisted.
#[test]
fn follower_acknowledges_only_after_persistence() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.hold_persist.insert(id(2));
    c.hold_persist.insert(id(3));
    c.sent.clear();
    c.node(1).propose(b"a".to_vec()).expect("leader");
    c.stabilize();
    let acks = |c: &Cluster| {
        c.count_sent(|m| matches!(m.body, MessageBody::AppendResponse { reject: None, .. }))
    };
    assert_eq!(acks(&c), 0, "nothing acknowledged before fsync");
    assert!(c.applied_data(1).is_empty(), "nothing committed");
    c.release(2);
    c.stabilize();
    assert!(acks(&c) > 0);
    assert_eq!(c.applied_data(1), vec![b"a".to_vec()]);
}

// The leader's own log counts toward the quorum only once the driver reports it durable.
#[test]
fn leader_counts_itself_only_when_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.hold_persist.insert(id(1));
    let Ok(Proposed::Appended { last, .. }) = c.node(1).propose(b"a".to_vec()) else {
        panic!("leader appends");
    };
    c.stabilize();
    assert_eq!(
        c.node(2).status().persisted,
        last,
        "member 2 holds a durably"
    );
    assert!(
        c.node(1).commit_index() < last,
        "one durable copy of three is no quorum"
    );
    c.release(1);
    c.stabilize();
    assert_eq!(
        c.node(1).commit_index(),
        last,
        "the leader's fsync completes the quorum"
    );
}

// Flow control: with a window of 4 messages, a silent follower receives exactly 4
// pipelined appends and no 5th until it answers.
#[test]
fn inflight_window_bounds_pipelining() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.cut.insert((id(2), id(1)));
    c.sent.clear();
    for k in 0..10u8 {
        c.node(1).propose(vec![k; 2_000_000]).expect("leader");
        c.stabilize();
    }
    let to_2 = c.count_sent(|m| {
        m.to == id(2)
            && matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty())
    });
    assert_eq!(to_2, 4, "limit 4 reached, limit + 1 never sent");
    c.cut.clear();
    c.tick_all(3);
    assert_eq!(
        c.applied_data(2).len(),
        10,
        "the follower catches up once it answers"
    );
}

// The leader refuses proposals past the uncommitted-bytes limit with "too many requests".
#[test]
fn uncommitted_limit_pushes_back() {
    let ids = [id(1), id(2), id(3)];
    let mut cfg = config(1);
    cfg.max_uncommitted_bytes = 1_000;
    let mut node = RawNode::bootstrap(cfg, &ids);
    let rd = node.ready();
    node.on_persisted(rd.number);
    let _ = node.ready();
    node.campaign();
    for peer in [2, 3] {
        node.step(Message {
            from: id(peer),
            to: id(1),
            term: Term(2),
            body: MessageBody::VoteResponse {
                pre_vote: true,
                granted: true,
            },
        });
    }
    for peer in [2, 3] {
        node.step(Message {
            from: id(peer),
            to: id(1),
            term: Term(2),
            body: MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            },
        });
    }
    assert_eq!(node.role(), Role::Leader);
    for _ in 0..9 {
        node.propose(vec![0; 76]).expect("within the limit");
    }
    assert_eq!(
        node.propose(vec![0; 100]),
        Err(Error::TooManyUncommitted { limit_bytes: 1_000 })
    );
}

// Reads waiting at the same moment share one heartbeat round and one read index.
#[test]
fn read_index_batches_reads_into_one_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.sent.clear();
    for request in 0..10 {
        c.node(1).read_index(request).expect("leader");
    }
    c.stabilize();
    let rounds = c.count_sent(
        |m| matches!(m.body, MessageBody::Heartbeat { read_round, .. } if read_round > 0),
    );
    assert_eq!(rounds, 2, "one heartbeat to each of the two followers");
    let reads = &c.reads[&id(1)];
    assert_eq!(reads.len(), 10);
    assert!(reads.iter().all(|r| r.index == reads[0].index));
}

// A follower's read goes through the leader and comes back as a read state.
#[test]
fn follower_read_index_is_answered_by_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node(1).propose(b"w".to_vec()).expect("leader");
    c.stabilize();
    c.node(3).read_index(77).expect("follower with a leader");
    c.stabilize();
    let r = c.reads[&id(3)].last().copied().expect("answered");
    assert_eq!(r.request, 77);
    assert_eq!(r.index, c.node(1).commit_index());
}

// Leader transfer hands leadership to the target, which campaigns at once; proposals
// during the transfer are refused.
#[test]
fn leader_transfer_moves_leadership() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(2);
    c.node(1).propose(b"before".to_vec()).expect("leader");
    c.stabilize();
    c.node(1).transfer_leader(id(2)).expect("voter target");
    assert_eq!(
        c.node(1).propose(b"x".to_vec()),
        Err(Error::TransferInProgress)
    );
    c.cut.clear();
    c.tick_all(2);
    assert_eq!(c.node(2).role(), Role::Leader);
    assert_eq!(c.applied_data(2), vec![b"before".to_vec()]);
}

// A member behind the log start receives a snapshot and then follows normally.
#[test]
fn lagging_member_catches_up_by_snapshot() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for k in 0..20u8 {
        c.node(1).propose(vec![k]).expect("leader");
        c.stabilize();
    }
    let applied = c.node(1).status().applied;
    c.node(1)
        .compact(applied, b"state at applied".to_vec())
        .expect("applied and durable");
    c.cut.clear();
    c.sent.clear();
    c.tick_all(3);
    assert_eq!(
        c.count_sent(|m| matches!(m.body, MessageBody::InstallSnapshot { .. })),
        1
    );
    c.node(1).propose(b"after".to_vec()).expect("leader");
    c.stabilize();
    assert_eq!(c.applied_data(3), vec![b"after".to_vec()]);
    assert_eq!(
        c.node(3).snapshot().map(|s| s.data.clone()),
        Some(b"state at applied".to_vec())
    );
}

// Membership: a learner receives the log but does not vote; it is promoted, one change
// at a time; removing the leader makes it step down and the rest elect a new leader.
#[test]
fn learner_add_promote_and_leader_removal() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node(1).propose(b"a".to_vec()).expect("leader");
    c.stabilize();
    c.nodes.insert(id(4), RawNode::join(config(4)));
    let add = ConfChange {
        kind: ConfChangeKind::AddLearner,
        member: id(4),
        context: vec![],
    };
    c.node(1)
        .propose_conf_change(add.clone())
        .expect("first change");
    assert_eq!(
        c.node(1).propose_conf_change(add),
        Err(Error::ConfChangeInProgress)
    );
    c.stabilize();
    assert!(c.node(4).conf_state().is_learner(id(4)));
    assert_eq!(c.applied_data(4), vec![b"a".to_vec()]);
    c.tick_all(40);
    assert_ne!(c.node(4).role(), Role::Leader, "learners never campaign");
    let promote = ConfChange {
        kind: ConfChangeKind::AddVoter,
        member: id(4),
        context: vec![],
    };
    c.node(1)
        .propose_conf_change(promote)
        .expect("learner caught up");
    c.stabilize();
    assert!(c.node(2).conf_state().is_voter(id(4)));
    let remove = ConfChange {
        kind: ConfChangeKind::RemoveMember,
        member: id(1),
        context: vec![],
    };
    c.node(1).propose_conf_change(remove).expect("valid");
    c.stabilize();
    assert_eq!(
        c.node(1).role(),
        Role::Follower,
        "a removed leader steps down"
    );
    c.nodes.remove(&id(1));
    c.tick_all(40);
    assert_eq!(c.leaders().len(), 1);
    assert!(c.leaders()[0] != id(1));
}

// Invalid membership changes are refused with a reason.
#[test]
fn invalid_membership_changes_are_refused() {
    let mut c = Cluster::new(1);
    c.elect(1);
    let again = ConfChange {
        kind: ConfChangeKind::AddVoter,
        member: id(1),
        context: vec![],
    };
    assert!(matches!(
        c.node(1).propose_conf_change(again),
        Err(Error::InvalidConfChange(_))
    ));
    let last = ConfChange {
        kind: ConfChangeKind::RemoveMember,
        member: id(1),
        context: vec![],
    };
    assert!(matches!(
        c.node(1).propose_conf_change(last),
        Err(Error::InvalidConfChange(_))
    ));
    assert!(matches!(
        c.node(1).compact(LogIndex(1_000), vec![]),
        Err(Error::InvalidCompaction { .. })
    ));
}

// Fast backtracking: a follower with a long divergent tail is repaired in a few round
// trips, not one per entry.
#[test]
fn divergent_tail_is_repaired_by_term_hints() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    for k in 0..50u8 {
        let _ = c.node(1).propose(vec![k]);
        c.stabilize();
    }
    // Members 2 and 3 elect a new leader once member 1's lease has expired.
    c.tick_all(30);
    let new = c
        .leaders()
        .into_iter()
        .find(|l| *l != id(1))
        .expect("2 or 3 leads")
        .0;
    for k in 0..5u8 {
        c.node(new).propose(vec![100 + k]).expect("new leader");
        c.stabilize();
    }
    c.cut.clear();
    c.sent.clear();
    c.tick_all(3);
    let rejects = c.count_sent(|m| {
        m.from == id(1)
            && matches!(
                m.body,
                MessageBody::AppendResponse {
                    reject: Some(_),
                    ..
                }
            )
    });
    assert!(rejects <= 3, "{rejects} rejections for a 50-entry conflict");
    let commit = c.node(new).commit_index();
    let expected = c.node(new).log_term(commit);
    assert_eq!(c.node(1).log_term(commit), expected);
}

// A restarted member keeps its term, vote and log from what was persisted.
#[test]
fn restart_restores_persisted_state() {
    let ids = [id(1)];
    let mut node = RawNode::bootstrap(config(1), &ids);
    let mut hard = Default::default();
    let mut entries: Vec<Entry> = Vec::new();
    let drive =
        |node: &mut RawNode, hard: &mut corekv_raft::HardState, entries: &mut Vec<Entry>| {
            while node.has_ready() {
                let rd = node.ready();
                if let Some(first) = rd.entries.first() {
                    entries.truncate(first.index.0 as usize - 1);
                }
                entries.extend(rd.entries.iter().cloned());
                if let Some(hs) = rd.hard_state {
                    *hard = hs;
                }
                node.on_persisted(rd.number);
            }
        };
    drive(&mut node, &mut hard, &mut entries);
    node.campaign();
    drive(&mut node, &mut hard, &mut entries);
    node.propose(b"kept".to_vec()).expect("leader");
    drive(&mut node, &mut hard, &mut entries);
    let state = corekv_raft::RestartState {
        hard_state: hard,
        snapshot: None,
        entries: entries.clone(),
        applied: LogIndex(0),
    };
    let mut again = RawNode::restart(config(1), state).expect("consistent");
    assert_eq!(again.term(), node.term());
    assert_eq!(again.status().vote, Some(id(1)));
    let rd = again.ready();
    assert!(
        rd.committed_entries.iter().any(|e| e.data == b"kept"),
        "re-applied after restart"
    );
    let bad = corekv_raft::RestartState {
        hard_state: corekv_raft::HardState {
            commit: LogIndex(99),
            ..hard
        },
        snapshot: None,
        entries,
        applied: LogIndex(0),
    };
    assert!(matches!(
        RawNode::restart(config(1), bad),
        Err(Error::InvalidRestartState(_))
    ));
}

// One AppendEntries carries at most `max_entries_bytes_per_message` of entries (but
// always at least one entry), so the limit + 1 byte splits a batch.
#[test]
fn append_size_limit_splits_batches() {
    let ids = [id(1), id(2)];
    let limit = 2 * (24 + 100);
    let mut cfg = config(1);
    cfg.max_entries_bytes_per_message = limit;
    cfg.max_inflight_messages = 64;
    let mut nodes = [
        RawNode::bootstrap(cfg, &ids),
        RawNode::bootstrap(config(2), &ids),
    ];
    let mut appends: Vec<Vec<usize>> = Vec::new();
    let pump = |nodes: &mut [RawNode; 2], appends: &mut Vec<Vec<usize>>| {
        for _ in 0..100 {
            let mut wire = Vec::new();
            for node in nodes.iter_mut() {
                while node.has_ready() {
                    let rd = node.ready();
                    wire.extend(rd.messages);
                    node.on_persisted(rd.number);
                }
            }
            if wire.is_empty() {
                return;
            }
            for m in wire {
                if let MessageBody::Append { entries, .. } = &m.body {
                    appends.push(entries.iter().map(|e| e.data.len()).collect());
                }
                nodes[(m.to.0 - 1) as usize].step(m);
            }
        }
    };
    pump(&mut nodes, &mut appends);
    nodes[0].campaign();
    pump(&mut nodes, &mut appends);
    assert_eq!(nodes[0].role(), Role::Leader);
    appends.clear();
    let mut batch = vec![vec![1; 100]; 4];
    batch.push(vec![2; 2 * limit as usize]);
    nodes[0].propose_batch(batch).expect("leader");
    pump(&mut nodes, &mut appends);
    let with_data: Vec<&Vec<usize>> = appends.iter().filter(|a| !a.is_empty()).collect();
    assert_eq!(
        with_data,
        vec![&vec![100, 100], &vec![100, 100], &vec![2 * limit as usize]]
    );
}

// The reads queue has a bound; the read past it is refused with "too many requests".
#[test]
fn waiting_reads_are_bounded() {
    let mut c = Cluster::new(1);
    c.elect(1);
    for request in 0..corekv_raft::MAX_WAITING_READS as u64 {
        c.node(1).read_index(request).expect("within the bound");
    }
    let over = c.node(1).read_index(u64::MAX);
    assert!(matches!(over, Err(Error::TooManyReads { .. })));
    assert!(over
        .unwrap_err()
        .to_string()
        .starts_with("etcdserver: too many requests"));
    c.stabilize();
    assert_eq!(c.reads[&id(1)].len(), corekv_raft::MAX_WAITING_READS);
}

// Regression (found by the simulator's Ready-contract check, seed 208969): an
// acknowledgement held back for persistence must not leave after the term changed and
// the acknowledged entry was overwritten before it ever reached the disk.
#[test]
fn regression_held_ack_dropped_when_entry_overwritten_in_new_term() {
    let ids = [id(1), id(2), id(3)];
    let mut follower = RawNode::bootstrap(config(3), &ids);
    let rd = follower.ready();
    follower.on_persisted(rd.number);
    let _ = follower.ready();
    let append = |from: u64, term: u64, data: &str| Message {
        from: id(from),
        to: id(3),
        term: Term(term),
        body: MessageBody::Append {
            prev_index: LogIndex(3),
            prev_term: Term(1),
            entries: vec![Entry {
                term: Term(term),
                index: LogIndex(4),
                kind: EntryKind::Normal,
                data: data.as_bytes().to_vec(),
            }],
            commit: LogIndex(3),
        },
    };
    // Leader 1 of term 2 sends entry 4; the ack waits for the fsync of (4, t2).
    follower.step(append(1, 2, "from term 2"));
    // Before any Ready is taken, leader 2 of term 3 overwrites index 4.
    follower.step(append(2, 3, "from term 3"));
    let mut sent = Vec::new();
    for _ in 0..3 {
        let rd = follower.ready();
        assert!(
            rd.entries.iter().all(|e| e.term == Term(3)),
            "(4, t2) never reaches the disk"
        );
        sent.extend(rd.messages);
        follower.on_persisted(rd.number);
    }
    assert!(
        sent.iter().all(|m| m.term == Term(3)),
        "no term-2 acknowledgement of an entry that was never durable: {sent:?}"
    );
    assert!(sent.iter().any(|m| m.to == id(2)
        && matches!(
            m.body,
            MessageBody::AppendResponse {
                index: LogIndex(4),
                reject: None
            }
        )));
}
