//! Leader election (thesis 3.4) with pre-vote (9.6), check-quorum and leader leases that
//! keep removed or partitioned members from disrupting a healthy leader (4.2.3, 6.2),
//! and leader transfer by TimeoutNow (3.10).

use std::collections::BTreeSet;

use crate::message::MessageBody;
use crate::node::{RawNode, Role};
use crate::progress::{Mode, Progress};
use crate::types::{Entry, EntryKind, LogIndex, MemberId, Term};

impl RawNode {
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            if self.promotable() {
                self.start_campaign(false);
            }
        }
    }

    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.check_quorum_active() {
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            // A transfer that did not finish within an election timeout is abandoned.
            self.transfer_target = None;
        }
        // Snapshots whose acknowledgement never came are retried by probing again.
        let tick = self.tick_count;
        let timeout = 2 * self.cfg.election_tick as u64;
        for pr in self.progress.values_mut() {
            if let Mode::Snapshot { sent_tick, .. } = pr.mode {
                if tick.saturating_sub(sent_tick) > timeout {
                    pr.become_probe();
                }
            }
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum of voters was heard from since the previous check; resets the marks.
    fn check_quorum_active(&mut self) -> bool {
        let id = self.id;
        let mut active = BTreeSet::new();
        for (&member, pr) in self.progress.iter_mut() {
            if member == id || pr.recent_active {
                active.insert(member);
            }
            pr.recent_active = member == id;
        }
        self.quorum_of(&active)
    }

    /// Starts a pre-vote round, or a real election when pre-vote is off or `transfer`.
    pub(crate) fn start_campaign(&mut self, transfer: bool) {
        if !self.promotable() || self.role == Role::Leader {
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timeout();
        self.election_elapsed = 0;
        self.votes.insert(self.id, true);
        if self.tally_votes() == Some(true) {
            self.become_candidate(false);
            return;
        }
        let future = Term(self.term.0 + 1);
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for voter in self.voters() {
            if voter != self.id {
                self.send_with_term(
                    voter,
                    future,
                    MessageBody::RequestVote {
                        pre_vote: true,
                        last_index,
                        last_term,
                        transfer: false,
                    },
                );
            }
        }
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.reset_role(Term(self.term.0 + 1));
        self.role = Role::Candidate;
        self.vote = Some(self.id);
        self.votes.insert(self.id, true);
        if self.tally_votes() == Some(true) {
            self.become_leader();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let term = self.term;
        for voter in self.voters() {
            if voter != self.id {
                // The vote for ourselves must be durable before anyone can count on it.
                self.send_after_persist(
                    voter,
                    term,
                    MessageBody::RequestVote {
                        pre_vote: false,
                        last_index,
                        last_term,
                        transfer,
                    },
                );
            }
        }
    }

    /// Some(true) won, Some(false) lost, None undecided.
    pub(crate) fn tally_votes(&self) -> Option<bool> {
        let granted: BTreeSet<MemberId> = self
            .votes
            .iter()
            .filter(|(_, g)| **g)
            .map(|(m, _)| *m)
            .collect();
        let rejected = self
            .votes
            .iter()
            .filter(|(m, g)| !**g && self.conf.is_voter(**m))
            .count();
        if self.quorum_of(&granted) {
            Some(true)
        } else if self.conf.voters.len() - rejected < self.conf.quorum() {
            Some(false)
        } else {
            None
        }
    }

    pub(crate) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next = self.log.last_index().next();
        let tick = self.tick_count;
        self.progress.clear();
        for member in self.conf.voters.iter().chain(self.conf.learners.iter()) {
            self.progress.insert(*member, Progress::new(next, tick));
        }
        // A leader no longer in the membership still leads until it steps down; track it.
        self.progress
            .entry(self.id)
            .or_insert_with(|| Progress::new(next, tick));
        let persisted = self.log.persisted;
        let own = self.progress.get_mut(&self.id).expect("inserted above");
        own.maybe_update(persisted, tick);
        own.become_replicate();
        self.uncommitted_bytes = 0;
        // Thesis 6.4: commit an entry of our own term at once; reads and membership
        // changes wait for it.
        let noop = Entry {
            term: self.term,
            index: next,
            kind: EntryKind::Normal,
            data: Vec::new(),
        };
        self.log.append([noop]);
        self.pending_conf_index = next;
        self.needs_broadcast = true;
        self.maybe_commit();
    }

    /// Leaves any role for follower in `term`, following `leader` if known.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<MemberId>) {
        self.reset_role(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    /// Clears everything that belongs to one role in one term.
    fn reset_role(&mut self, term: Term) {
        if term != self.term {
            assert!(term > self.term, "terms never go backwards");
            self.term = term;
            self.vote = None;
            // Held-back acknowledgements and votes of older terms may never have become
            // true: the state they describe can be overwritten in the new term before it
            // reaches the disk (a follower's entries truncated by the new leader). Losing
            // them is always safe; sending them is not.
            self.messages_after_persist.retain(|(_, m)| m.term >= term);
        }
        self.leader = None;
        self.votes.clear();
        self.progress.clear();
        self.transfer_target = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_election_timeout();
        self.reads.clear();
        self.uncommitted_bytes = 0;
    }

    /// A RequestVote or PreVote (any role). Thesis 3.6.1 and 9.6.
    pub(crate) fn handle_vote_request(
        &mut self,
        from: MemberId,
        term: Term,
        pre_vote: bool,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            if pre_vote {
                self.send_with_term(
                    from,
                    term,
                    MessageBody::VoteResponse {
                        pre_vote,
                        granted: true,
                    },
                );
            } else {
                self.election_elapsed = 0;
                self.vote = Some(from);
                self.send_after_persist(
                    from,
                    term,
                    MessageBody::VoteResponse {
                        pre_vote,
                        granted: true,
                    },
                );
            }
        } else {
            let own = self.term;
            self.send_after_persist(
                from,
                own,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: false,
                },
            );
        }
    }

    pub(crate) fn handle_vote_response(&mut self, from: MemberId, pre_vote: bool, granted: bool) {
        let expected = match self.role {
            Role::PreCandidate => true,
            Role::Candidate => false,
            _ => return,
        };
        if pre_vote != expected {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match self.tally_votes() {
            Some(true) if pre_vote => self.become_candidate(false),
            Some(true) => self.become_leader(),
            Some(false) => {
                let term = self.term;
                self.become_follower(term, None);
            }
            None => {}
        }
    }

    /// Starts handing leadership to `target` (etcd's MoveLeader): stop taking proposals,
    /// bring the target up to date, then tell it to campaign at once.
    pub fn transfer_leader(&mut self, target: MemberId) -> Result<(), crate::Error> {
        if self.role != Role::Leader {
            return Err(crate::Error::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id {
            return Ok(());
        }
        if !self.conf.is_voter(target) {
            return Err(crate::Error::InvalidTransfer {
                target,
                reason: "not a voter",
            });
        }
        if self.transfer_target == Some(target) {
            return Ok(());
        }
        self.transfer_target = Some(target);
        self.election_elapsed = 0;
        self.maybe_send_timeout_now(target);
        Ok(())
    }

    pub(crate) fn maybe_send_timeout_now(&mut self, target: MemberId) {
        let last = self.log.last_index();
        match self.progress.get(&target) {
            Some(pr) if pr.matched == last => self.send(target, MessageBody::TimeoutNow),
            Some(_) => self.send_append(target, false),
            None => self.transfer_target = None,
        }
    }
}
