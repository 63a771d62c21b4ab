//! The driver of one member: handles each Ready exactly as the crate contract says
//! (send, persist in order, acknowledge, install snapshot, apply, answer reads) and
//! resolves client operations from what is applied.

use super::*;

impl Sim<'_> {
    pub(super) fn process_ready(&mut self, id: MemberId) -> Result<(), String> {
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
            for message in &rd.messages {
                self.check_durable_before_send(id, message)?;
            }
            for message in rd.messages {
                let now = self.now;
                self.net.send(&mut self.rng, now, message);
            }
            let latency = self.rng.between(0, self.disk_latency_ms_max);
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

    pub(super) fn install_snapshot(
        &mut self,
        id: MemberId,
        snapshot: Snapshot,
    ) -> Result<(), String> {
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

    pub(super) fn apply(&mut self, id: MemberId, entry: Entry) -> Result<(), String> {
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
    pub(super) fn applier_of_record(&self, index: LogIndex) -> MemberId {
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

    pub(super) fn serve_reads(&mut self, id: MemberId) {
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

    pub(super) fn next_event(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    /// Resolves an operation if its client is still waiting for it.
    pub(super) fn finish_op(&mut self, op: usize, status: OpStatus, output: Option<Output>) {
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
}
