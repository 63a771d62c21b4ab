//! The safety invariants checked after every simulated millisecond and at every
//! election and Ready.

use super::*;

impl Sim<'_> {
    pub(super) fn check_invariants(&mut self) -> Result<(), String> {
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

    pub(super) fn check_log_matching(
        &mut self,
        id: MemberId,
        entries: &[Entry],
    ) -> Result<(), String> {
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

    pub(super) fn check_leader_completeness(&self, id: MemberId) -> Result<(), String> {
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

    /// The Ready contract, checked from the outside: a message that promises something
    /// durable leaves only once the simulated disk has held it. An acknowledgement of
    /// index i in term t needs an entry (i, t' <= t) to have been written (or a snapshot
    /// covering i); a vote, given or asked for, needs that vote to have been written.
    pub(super) fn check_durable_before_send(
        &self,
        id: MemberId,
        message: &crate::Message,
    ) -> Result<(), String> {
        use crate::MessageBody;
        let disk = &self.nodes[&id].disk;
        let durable_vote = |term: Term, vote: MemberId| disk.ever_votes.contains(&(term.0, vote.0));
        let ok = match &message.body {
            MessageBody::AppendResponse {
                index,
                reject: None,
            } => {
                index.0 <= disk.ever_snapshot_index
                    || disk
                        .ever_entries
                        .range((index.0, 0)..=(index.0, message.term.0))
                        .next()
                        .is_some()
            }
            MessageBody::VoteResponse {
                pre_vote: false,
                granted: true,
            } => durable_vote(message.term, message.to),
            MessageBody::RequestVote {
                pre_vote: false, ..
            } => durable_vote(message.term, id),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "Ready contract: {id} was allowed to send {message:?} before it was durable (disk: {:?})",
                disk.hard_state
            ))
        }
    }
}
