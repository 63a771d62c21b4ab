//! The client workload (put, get, compare-and-set through the log and ReadIndex) and
//! the operator (membership changes, leader transfers, log compaction).

use super::*;

impl Sim<'_> {
    pub(super) fn drive_clients(&mut self) -> Result<(), String> {
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

    pub(super) fn issue(&mut self, c: usize) {
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
            must_succeed: self.phase == Phase::Stable && self.caught_up(target),
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
    pub(super) fn operate(&mut self) {
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
            // Mostly etcd's recommended learner-then-promote; sometimes a plain add of
            // a voter with an empty log.
            let kind = if self.rng.chance(700_000) {
                ConfChangeKind::AddLearner
            } else {
                ConfChangeKind::AddVoter
            };
            ConfChange {
                kind,
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
        if change.member.0 == self.next_id {
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

    pub(super) fn maybe_compact(&mut self, id: MemberId) {
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
        node.disk.ever_snapshot_index = node.disk.ever_snapshot_index.max(index.0);
        node.disk.snapshot = Some(snapshot);
    }

    /// Whether `member` has applied everything the stable leader has committed: after
    /// healing, operations at such members must succeed within the client timeout (a
    /// member still catching up, say a voter just added with an empty log on a slow
    /// disk, may legitimately take longer; its convergence is checked by the drain).
    pub(super) fn caught_up(&self, member: MemberId) -> bool {
        let Some(leader) = self.stable_leader() else {
            return false;
        };
        let commit = self.nodes[&leader]
            .raft
            .as_ref()
            .expect("alive")
            .commit_index();
        self.nodes[&member]
            .raft
            .as_ref()
            .is_some_and(|r| r.status().applied >= commit)
    }
}
