//! Linearizable reads by ReadIndex (thesis 6.4), batched: reads arriving while a
//! confirmation round is in flight wait together for the next one, so one heartbeat
//! round confirms leadership for every read waiting at that moment.
//!
//! A round records the commit index when it starts, then asks every member for a
//! heartbeat acknowledgement carrying the round number; once a quorum of voters has
//! answered, this member was still leader after the reads arrived, so serving them at
//! that commit index is linearizable. A leader serves reads only after it has committed
//! an entry of its own term (before that its commit index may be stale). Reads waiting
//! when leadership is lost are dropped; the node times them out and retries.

use std::collections::BTreeSet;

use crate::message::MessageBody;
use crate::node::{RawNode, Role};
use crate::ready::ReadState;
use crate::types::{LogIndex, MemberId};
use crate::Error;

/// Most reads waiting for the next round before `read_index` pushes back (etcd's
/// `--max-concurrent-streams`-style bound for the read loop).
pub const MAX_WAITING_READS: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadRequest {
    request: u64,
    from: MemberId,
}

#[derive(Debug)]
struct Round {
    number: u64,
    index: LogIndex,
    requests: Vec<ReadRequest>,
    acks: BTreeSet<MemberId>,
}

#[derive(Debug, Default)]
pub(crate) struct ReadTracker {
    waiting: Vec<ReadRequest>,
    round: Option<Round>,
    next_round_number: u64,
}

impl ReadTracker {
    /// The number of the round in flight, 0 if none.
    pub fn round_number(&self) -> u64 {
        self.round.as_ref().map_or(0, |r| r.number)
    }

    pub fn clear(&mut self) {
        self.waiting.clear();
        self.round = None;
    }
}

impl RawNode {
    /// Asks for a read index for read `request` (an id chosen by the caller). The answer
    /// arrives as a [`ReadState`] in a later Ready; on a follower the leader is asked.
    pub fn read_index(&mut self, request: u64) -> Result<(), Error> {
        match self.role {
            Role::Leader => {
                if self.reads.waiting.len() >= MAX_WAITING_READS {
                    return Err(Error::TooManyReads {
                        limit: MAX_WAITING_READS,
                    });
                }
                let id = self.id;
                // The round starts when the driver next takes a Ready, so every read that
                // arrives before then shares it.
                self.reads.waiting.push(ReadRequest { request, from: id });
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndex { request });
                    Ok(())
                }
                None => Err(Error::NoLeader),
            },
        }
    }

    /// Leader: a follower forwarded a read.
    pub(crate) fn handle_forwarded_read(&mut self, from: MemberId, request: u64) {
        if self.reads.waiting.len() >= MAX_WAITING_READS {
            return;
        }
        self.reads.waiting.push(ReadRequest { request, from });
    }

    /// Whether a round could start now (reads wait, none in flight, leadership usable).
    pub(crate) fn read_round_startable(&self) -> bool {
        self.role == Role::Leader
            && self.reads.round.is_none()
            && !self.reads.waiting.is_empty()
            && self.log.term(self.log.committed) == Some(self.term)
    }

    pub(crate) fn maybe_start_read_round(&mut self) {
        if self.role != Role::Leader || self.reads.round.is_some() || self.reads.waiting.is_empty()
        {
            return;
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            return;
        }
        self.reads.next_round_number += 1;
        let mut acks = BTreeSet::new();
        acks.insert(self.id);
        self.reads.round = Some(Round {
            number: self.reads.next_round_number,
            index: self.log.committed,
            requests: std::mem::take(&mut self.reads.waiting),
            acks,
        });
        if !self.maybe_finish_read_round() {
            self.broadcast_heartbeat();
        }
    }

    pub(crate) fn handle_read_ack(&mut self, from: MemberId, read_round: u64) {
        match self.reads.round.as_mut() {
            Some(round) if round.number == read_round => {
                round.acks.insert(from);
            }
            _ => return,
        }
        self.maybe_finish_read_round();
    }

    /// Completes the round in flight if a quorum acknowledged it. Returns true if it did.
    pub(crate) fn maybe_finish_read_round(&mut self) -> bool {
        let done = match &self.reads.round {
            Some(round) => self.quorum_of(&round.acks),
            None => false,
        };
        if !done {
            return false;
        }
        let round = self.reads.round.take().expect("checked above");
        for read in round.requests {
            if read.from == self.id {
                self.read_states.push(ReadState {
                    request: read.request,
                    index: round.index,
                });
            } else {
                self.send(
                    read.from,
                    MessageBody::ReadIndexResponse {
                        request: read.request,
                        index: round.index,
                    },
                );
            }
        }
        true
    }

    /// Follower: the leader answered a forwarded read.
    pub(crate) fn handle_read_index_response(&mut self, request: u64, index: LogIndex) {
        self.read_states.push(ReadState { request, index });
    }
}
