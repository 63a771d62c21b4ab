//! One simulated millisecond: faults planned, members restarted or shut down, messages
//! delivered, disk writes completed (in order; a crash loses the rest), ticks, clients.

use super::*;

impl Sim<'_> {
    pub(super) fn step_ms(&mut self) -> Result<(), String> {
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

    pub(super) fn plan_faults(&mut self) {
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

    pub(super) fn crash(&mut self, id: MemberId, back_in_ms: u64) {
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

    pub(super) fn restart(&mut self, id: MemberId) {
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

    pub(super) fn restart_and_shutdown(&mut self) {
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

    pub(super) fn complete_disk_writes(&mut self) -> Result<(), String> {
        let now = self.now;
        // Some drivers acknowledge a whole group commit with one call.
        let ack_per_group = self.ack_per_group;
        for (id, node) in self.nodes.iter_mut() {
            let mut durable_number = None;
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
                    for e in &job.entries {
                        disk.ever_entries.insert((e.index.0, e.term.0));
                    }
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
                    if let Some(vote) = hs.vote {
                        disk.ever_votes.insert((hs.term.0, vote.0));
                    }
                }
                if let Some(s) = &disk.snapshot {
                    disk.ever_snapshot_index = disk.ever_snapshot_index.max(s.meta.index.0);
                }
                disk.written = true;
                if ack_per_group {
                    durable_number = Some(job.number);
                } else {
                    node.raft
                        .as_mut()
                        .expect("jobs exist only while alive")
                        .on_persisted(job.number);
                }
            }
            if let Some(number) = durable_number {
                node.raft
                    .as_mut()
                    .expect("jobs exist only while alive")
                    .on_persisted(number);
            }
        }
        Ok(())
    }
}
