//! Log replication (thesis 3.5, 10.2): proposals, pipelined AppendEntries with flow
//! control, fast conflict backtracking, snapshots for members behind the log start,
//! heartbeats and the commit rule.
//!
//! The commit rule (thesis 3.6.2): the leader commits an index only when a quorum of
//! voters holds it durably *and* the entry there has the leader's current term. The
//! leader's own vote in that count is its durable (`persisted`) index, so it appends to
//! its own log in parallel with sending (thesis 10.2.1).

use crate::message::{MessageBody, RejectHint};
use crate::node::{Proposed, RawNode, Role};
use crate::progress::Mode;
use crate::types::{Entry, EntryKind, LogIndex, MemberId, Snapshot, Term};
use crate::Error;

impl RawNode {
    /// Leader: appends proposals to the log; they go out with the next Ready.
    pub(crate) fn append_proposals(
        &mut self,
        commands: Vec<Vec<u8>>,
        kind: EntryKind,
    ) -> Result<Proposed, Error> {
        assert_eq!(self.role, Role::Leader);
        if self.transfer_target.is_some() {
            return Err(Error::TransferInProgress);
        }
        let bytes: u64 = commands.iter().map(|c| 24 + c.len() as u64).sum();
        let limit = self.cfg.max_uncommitted_bytes;
        if self.uncommitted_bytes > 0 && self.uncommitted_bytes + bytes > limit {
            return Err(Error::TooManyUncommitted { limit_bytes: limit });
        }
        self.uncommitted_bytes += bytes;
        let term = self.term;
        let first = self.log.last_index().next();
        let mut index = first;
        let entries: Vec<Entry> = commands
            .into_iter()
            .map(|data| {
                let e = Entry {
                    term,
                    index,
                    kind,
                    data,
                };
                index = index.next();
                e
            })
            .collect();
        let last = entries.last().expect("non-empty batch").index;
        self.log.append(entries);
        self.needs_broadcast = true;
        if self.conf.voters == [self.id] {
            // Alone: nothing to wait for but our own fsync.
            self.maybe_commit();
        }
        Ok(Proposed::Appended { first, last, term })
    }

    /// Sends appends to every other member that is not paused.
    pub(crate) fn broadcast_append(&mut self) {
        let members: Vec<MemberId> = self
            .progress
            .keys()
            .copied()
            .filter(|m| *m != self.id)
            .collect();
        for member in members {
            self.send_append(member, true);
        }
    }

    /// Sends as many AppendEntries to `to` as flow control allows (one in probe mode).
    /// With `allow_empty`, an empty append still goes out to carry the commit index.
    pub(crate) fn send_append(&mut self, to: MemberId, allow_empty: bool) {
        let mut first = true;
        while self.send_one_append(to, allow_empty && first) {
            first = false;
            match self.progress.get(&to) {
                Some(pr) if pr.mode == Mode::Replicate => {}
                _ => break,
            }
        }
    }

    fn send_one_append(&mut self, to: MemberId, allow_empty: bool) -> bool {
        let max_messages = self.cfg.max_inflight_messages;
        let max_bytes = self.cfg.max_inflight_bytes;
        let tick = self.tick_count;
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused(max_messages, max_bytes) {
            return false;
        }
        let prev_index = pr.next.prev();
        let prev_term = self.log.term(prev_index);
        let entries = self
            .log
            .slice(pr.next, self.cfg.max_entries_bytes_per_message);
        let (Some(prev_term), Some(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to, tick);
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let pr = self.progress.get_mut(&to).expect("checked above");
        let commit = self.log.committed;
        if let Some(last) = entries.last() {
            let bytes = entries.iter().map(Entry::size_bytes).sum();
            pr.sent(last.index, bytes);
        } else if pr.mode == Mode::Probe {
            pr.probe_sent = true;
        }
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: MemberId, tick: u64) -> bool {
        let Some(snapshot) = self.snapshot.clone() else {
            // Entries are compacted only after a snapshot exists.
            unreachable!("log compacted without a snapshot to send");
        };
        let pr = self.progress.get_mut(&to).expect("caller checked");
        pr.become_snapshot(snapshot.meta.index, tick);
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        false
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let round = self.reads.round_number();
        let commit = self.log.committed;
        let members: Vec<(MemberId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(m, _)| **m != self.id)
            .map(|(m, p)| (*m, p.matched))
            .collect();
        for (member, matched) in members {
            // Never tell a member to commit past what it is known to hold.
            self.send(
                member,
                MessageBody::Heartbeat {
                    commit: commit.min(matched),
                    read_round: round,
                },
            );
        }
    }

    /// Follower: AppendEntries receiver (thesis Figure 3.1).
    pub(crate) fn handle_append(
        &mut self,
        from: MemberId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) {
        let term = self.term;
        if prev_index < self.log.committed {
            let committed = self.log.committed;
            self.send_after_persist(
                from,
                term,
                MessageBody::AppendResponse {
                    index: committed,
                    reject: None,
                },
            );
            return;
        }
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries)
        {
            Some(last_new) => self.send_after_persist(
                from,
                term,
                MessageBody::AppendResponse {
                    index: last_new,
                    reject: None,
                },
            ),
            None => {
                let (conflict_index, conflict_term) = self.log.conflict_hint(prev_index);
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        index: prev_index,
                        reject: Some(RejectHint {
                            conflict_index,
                            conflict_term,
                        }),
                    },
                );
            }
        }
    }

    pub(crate) fn handle_heartbeat(&mut self, from: MemberId, commit: LogIndex, read_round: u64) {
        // The leader sends at most our acknowledged match, which we hold.
        if commit <= self.log.last_index() {
            self.log.commit_to(commit);
        }
        self.send(from, MessageBody::HeartbeatResponse { read_round });
    }

    /// Follower: InstallSnapshot receiver (thesis 5.2).
    pub(crate) fn handle_snapshot(&mut self, from: MemberId, snapshot: Snapshot) {
        let term = self.term;
        let meta = &snapshot.meta;
        let index = if meta.index <= self.log.committed {
            self.log.committed
        } else if self.log.matches(meta.index, meta.term) {
            // We already hold everything it covers; just learn that it is committed.
            self.log.commit_to(meta.index);
            meta.index
        } else {
            let index = meta.index;
            self.log.restore(meta);
            self.conf = meta.conf_state.clone();
            self.conf.assert_well_formed();
            self.conf_history.clear();
            self.set_pending_snapshot(snapshot);
            index
        };
        self.send_after_persist(
            from,
            term,
            MessageBody::AppendResponse {
                index,
                reject: None,
            },
        );
    }

    /// Leader: an answer to AppendEntries or InstallSnapshot.
    pub(crate) fn handle_append_response(
        &mut self,
        from: MemberId,
        index: LogIndex,
        reject: Option<RejectHint>,
    ) {
        let tick = self.tick_count;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if let Some(hint) = reject {
            let guess = match hint.conflict_term {
                Some(term) => self
                    .log
                    .next_after_term(term, index)
                    .unwrap_or(hint.conflict_index),
                None => hint.conflict_index,
            };
            let pr = self.progress.get_mut(&from).expect("checked above");
            if pr.maybe_decrease(index, guess) {
                self.send_append(from, false);
            }
            return;
        }
        if !pr.maybe_update(index, tick) {
            if pr.mode == Mode::Replicate {
                // Space may have opened in the window.
                self.send_append(from, false);
            }
            return;
        }
        match pr.mode {
            Mode::Probe => pr.become_replicate(),
            Mode::Snapshot { pending, .. } if pr.matched >= pending => {
                pr.become_probe();
                pr.become_replicate();
            }
            _ => {}
        }
        if self.maybe_commit() {
            self.needs_broadcast = true;
        }
        self.send_append(from, false);
        if self.transfer_target == Some(from) {
            self.maybe_send_timeout_now(from);
        }
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: MemberId, read_round: u64) {
        let tick = self.tick_count;
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.mode == Mode::Replicate
            && pr.matched < last
            && tick.saturating_sub(pr.last_progress_tick) > 2 * self.cfg.heartbeat_tick as u64
            && pr.inflight_count() > 0
        {
            // The pipelined appends were lost: restart from what is known to match.
            pr.become_probe();
        }
        if pr.matched < last {
            // An empty append probes too: if pipelined entries were lost the follower
            // rejects it and the leader backs up at once instead of waiting.
            self.send_append(from, true);
        }
        self.handle_read_ack(from, read_round);
    }

    /// Advances the commit index by the quorum rule. Returns true if it moved.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<LogIndex> = self
            .conf
            .voters
            .iter()
            .map(|v| self.progress.get(v).map_or(LogIndex::ZERO, |p| p.matched))
            .collect();
        if matched.is_empty() {
            return false;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.conf.quorum() - 1];
        if candidate <= self.log.committed || self.log.term(candidate) != Some(self.term) {
            return false;
        }
        let mut freed = 0;
        let mut index = self.log.committed.next();
        while index <= candidate {
            freed += self.log.entry(index).map_or(0, Entry::size_bytes);
            index = index.next();
        }
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
        self.log.commit_to(candidate);
        true
    }
}
