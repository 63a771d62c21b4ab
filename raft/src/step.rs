//! Message dispatch: the term rules every message goes through (thesis Figure 3.1 "all
//! servers"; pre-vote and lease exceptions from 9.6), then the per-role handlers.

use crate::message::{Message, MessageBody};
use crate::node::{RawNode, Role};
use crate::types::EntryKind;

impl RawNode {
    pub(crate) fn step_message(&mut self, m: Message) {
        if matches!(m.body, MessageBody::Node { .. }) {
            // The node's business, not Raft's: its term says nothing about elections.
            return;
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    let in_lease = self.cfg.check_quorum
                        && self.leader.is_some()
                        && self.election_elapsed < self.cfg.election_tick;
                    if in_lease && !transfer {
                        // A live leader exists: a removed or partitioned member must not
                        // disrupt it (thesis 4.2.3).
                        return;
                    }
                    if !pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                MessageBody::VoteResponse {
                    pre_vote: true,
                    granted: true,
                } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                    // Tell a stale leader about the newer term so it steps down; without
                    // this, pre-vote plus check-quorum could leave it stuck (etcd #8501).
                    self.send(m.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::RequestVote { pre_vote: true, .. } => {
                    self.send(
                        m.from,
                        MessageBody::VoteResponse {
                            pre_vote: true,
                            granted: false,
                        },
                    );
                }
                _ => {}
            }
            return;
        }
        let from = m.from;
        match m.body {
            MessageBody::RequestVote {
                pre_vote,
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(from, m.term, pre_vote, last_index, last_term),
            MessageBody::VoteResponse { pre_vote, granted } => {
                self.handle_vote_response(from, pre_vote, granted)
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.follow(from) {
                    self.handle_append(from, prev_index, prev_term, entries, commit);
                }
            }
            MessageBody::Heartbeat { commit, read_round } => {
                if self.follow(from) {
                    self.handle_heartbeat(from, commit, read_round);
                }
            }
            MessageBody::InstallSnapshot { snapshot } => {
                if self.follow(from) {
                    self.handle_snapshot(from, snapshot);
                }
            }
            MessageBody::AppendResponse { index, reject } => {
                if self.role == Role::Leader {
                    self.handle_append_response(from, index, reject);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(from, read_round);
                }
            }
            MessageBody::Propose { entries } => self.handle_forwarded_proposal(entries),
            MessageBody::ReadIndex { request } => {
                if self.role == Role::Leader {
                    self.handle_forwarded_read(from, request);
                }
            }
            MessageBody::ReadIndexResponse { request, index } => {
                if self.role != Role::Leader {
                    self.handle_read_index_response(request, index);
                }
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader {
                    self.start_campaign(true);
                }
            }
            MessageBody::Node { .. } => {}
        }
        self.assert_invariants();
    }

    /// A leader's message in our term: follow it. Returns false if we must not.
    fn follow(&mut self, from: crate::MemberId) -> bool {
        assert!(
            self.role != Role::Leader,
            "two leaders in term {}: {} and {}",
            self.term,
            self.id,
            from
        );
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.term;
            self.become_follower(term, Some(from));
        }
        self.election_elapsed = 0;
        true
    }

    fn handle_forwarded_proposal(&mut self, entries: Vec<crate::Entry>) {
        match self.role {
            Role::Leader => {
                // Only plain commands are forwarded; membership changes go through the
                // leader's own API. A refused forward is dropped: the proposer times out.
                let commands: Vec<Vec<u8>> = entries
                    .into_iter()
                    .filter(|e| e.kind == EntryKind::Normal)
                    .map(|e| e.data)
                    .collect();
                if !commands.is_empty() {
                    let _ = self.append_proposals(commands, EntryKind::Normal);
                }
            }
            _ => {
                if let Some(leader) = self.leader {
                    self.send(leader, MessageBody::Propose { entries });
                }
            }
        }
    }
}
