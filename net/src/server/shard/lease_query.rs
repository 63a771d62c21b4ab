//! Lease time-to-live asked of the leader. Only the leader tracks lease deadlines (see
//! docs/engine.md, "Leases"), so a follower that is asked a lease's remaining TTL asks
//! the leader, as etcd's followers do, over the peer transport in a Raft `Node` message,
//! and answers its client with what the leader said.
//!
//! Node message payloads (docs/peer-protocol.md): a tag byte, then
//! * 1, query: request u64, lease i64, keys u8 (0/1);
//! * 2, answer: request u64, TTL i64 (-1: no such lease), granted TTL i64, key count u32,
//!   then each key as length u32 and bytes;
//! * 3, not the leader: request u64 (the follower asks again once it knows the leader).
//!
//! A query is answered, or fails with etcd's "request timed out" (or "no leader" when no
//! leader is known) after the request timeout; until then it is asked again whenever the
//! leader changes and every half second. Only the member asked is believed. All members
//! must run a version that knows the `Node` message (an older one closes the connection
//! on it). Invariants: decoding never panics and
//! refuses trailing or unknown bytes; a follower never answers a remaining TTL from its
//! own store.

use std::time::{Duration, Instant};

use corekv_engine::LeaseId;
use corekv_raft::{MemberId, Message, MessageBody, Role};

use anyhow::{bail, ensure};

use super::{Client, Shard, CODE_UNAVAILABLE};
use crate::protocol::Response;
use crate::server::entry::Reader;

const TAG_QUERY: u8 = 1;
const TAG_ANSWER: u8 = 2;
const TAG_NOT_LEADER: u8 = 3;

/// What one node says to another about a lease's time-to-live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LeaseMessage {
    Query {
        request: u64,
        lease: i64,
        keys: bool,
    },
    Answer {
        request: u64,
        ttl_seconds: i64,
        granted_ttl_seconds: i64,
        keys: Vec<Vec<u8>>,
    },
    NotLeader {
        request: u64,
    },
}

impl LeaseMessage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            LeaseMessage::Query {
                request,
                lease,
                keys,
            } => {
                out.push(TAG_QUERY);
                out.extend_from_slice(&request.to_le_bytes());
                out.extend_from_slice(&lease.to_le_bytes());
                out.push(u8::from(*keys));
            }
            LeaseMessage::Answer {
                request,
                ttl_seconds,
                granted_ttl_seconds,
                keys,
            } => {
                out.push(TAG_ANSWER);
                out.extend_from_slice(&request.to_le_bytes());
                out.extend_from_slice(&ttl_seconds.to_le_bytes());
                out.extend_from_slice(&granted_ttl_seconds.to_le_bytes());
                out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
                for key in keys {
                    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    out.extend_from_slice(key);
                }
            }
            LeaseMessage::NotLeader { request } => {
                out.push(TAG_NOT_LEADER);
                out.extend_from_slice(&request.to_le_bytes());
            }
        }
        out
    }

    /// Decodes a payload; `None` for anything malformed (the caller drops it).
    pub(crate) fn decode(bytes: &[u8]) -> Option<LeaseMessage> {
        Self::read(&mut Reader::new(bytes)).ok()
    }

    fn read(reader: &mut Reader<'_>) -> anyhow::Result<LeaseMessage> {
        let message = match reader.u8()? {
            TAG_QUERY => LeaseMessage::Query {
                request: reader.u64()?,
                lease: reader.u64()? as i64,
                keys: match reader.u8()? {
                    0 => false,
                    1 => true,
                    other => bail!("keys flag {other}"),
                },
            },
            TAG_ANSWER => {
                let request = reader.u64()?;
                let ttl_seconds = reader.u64()? as i64;
                let granted_ttl_seconds = reader.u64()? as i64;
                let count = reader.u32()? as usize;
                // Every key takes at least its 4-byte length: no allocation beyond that.
                ensure!(count <= reader.remaining() / 4, "{count} keys claimed");
                let mut keys = Vec::with_capacity(count);
                for _ in 0..count {
                    let length = reader.u32()? as usize;
                    keys.push(reader.take(length)?.to_vec());
                }
                LeaseMessage::Answer {
                    request,
                    ttl_seconds,
                    granted_ttl_seconds,
                    keys,
                }
            }
            TAG_NOT_LEADER => LeaseMessage::NotLeader {
                request: reader.u64()?,
            },
            other => bail!("unknown node message tag {other}"),
        };
        ensure!(reader.remaining() == 0, "trailing bytes");
        Ok(message)
    }
}

/// A client's time-to-live request waiting for the leader's answer.
pub(super) struct LeaseQuery {
    client: Client,
    lease: LeaseId,
    keys: bool,
    deadline: Instant,
    /// The member asked, or `None` while no leader is known (asked again at the tick).
    asked: Option<MemberId>,
    /// When it was asked last: a query or answer lost on the way is asked again after
    /// [`LEASE_QUERY_RETRY`].
    asked_at: Instant,
}

/// How long a follower waits for the leader's answer before asking again.
const LEASE_QUERY_RETRY: Duration = Duration::from_millis(500);

impl Shard {
    /// A follower's time-to-live request: asks the leader (now, or once one is known).
    pub(super) fn forward_lease_time_to_live(
        &mut self,
        client: Client,
        lease: LeaseId,
        keys: bool,
    ) {
        let request = self.next_lease_query;
        self.next_lease_query += 1;
        self.lease_queries.insert(
            request,
            LeaseQuery {
                client,
                lease,
                keys,
                deadline: Instant::now() + self.request_timeout(),
                asked: None,
                asked_at: Instant::now(),
            },
        );
        self.ask_leader(request);
    }

    /// Sends query `request` to the leader if one other than this member is known;
    /// answers it here if this member leads now.
    fn ask_leader(&mut self, request: u64) {
        let Some(query) = self.lease_queries.get_mut(&request) else {
            return;
        };
        if self.raft.role() == Role::Leader {
            let query = self
                .lease_queries
                .remove(&request)
                .expect("looked up above");
            let response = self.lease_time_to_live(query.lease, query.keys);
            self.reply(query.client, response, true);
            return;
        }
        let (Some(leader), Some(peers)) = (self.raft.leader(), self.peers.clone()) else {
            query.asked = None;
            return;
        };
        query.asked = Some(leader);
        query.asked_at = Instant::now();
        let message = LeaseMessage::Query {
            request,
            lease: query.lease.0,
            keys: query.keys,
        };
        peers.send(vec![self.node_message(leader, &message)]);
    }

    fn node_message(&self, to: MemberId, message: &LeaseMessage) -> Message {
        Message {
            from: MemberId(self.ids.member),
            to,
            term: self.raft.term(),
            body: MessageBody::Node {
                data: message.encode(),
            },
        }
    }

    /// A `Node` message from member `from`: a query to answer (as the leader) or an
    /// answer to pass on to the client.
    pub(super) fn handle_node_message(&mut self, from: MemberId, data: &[u8]) {
        let Some(message) = LeaseMessage::decode(data) else {
            eprintln!(
                "corekv: dropped a malformed node message of {} bytes from member {:x}",
                data.len(),
                from.0
            );
            return;
        };
        match message {
            LeaseMessage::Query {
                request,
                lease,
                keys,
            } => {
                let answer = if self.raft.role() == Role::Leader {
                    let ttl = self.lease_ttl(LeaseId(lease), keys);
                    LeaseMessage::Answer {
                        request,
                        ttl_seconds: ttl.ttl_seconds,
                        granted_ttl_seconds: ttl.granted_ttl_seconds,
                        keys: ttl.keys,
                    }
                } else {
                    LeaseMessage::NotLeader { request }
                };
                if let Some(peers) = self.peers.clone() {
                    peers.send(vec![self.node_message(from, &answer)]);
                }
            }
            LeaseMessage::Answer {
                request,
                ttl_seconds,
                granted_ttl_seconds,
                keys,
            } => {
                if self.lease_queries.get(&request).map(|q| q.asked) != Some(Some(from)) {
                    return; // timed out meanwhile, or an answer from a member not asked
                }
                let query = self
                    .lease_queries
                    .remove(&request)
                    .expect("looked up above");
                let response = Response::LeaseTimeToLive {
                    header: self.header(),
                    id: query.lease,
                    ttl_seconds,
                    granted_ttl_seconds,
                    keys,
                };
                self.reply(query.client, response, true);
            }
            LeaseMessage::NotLeader { request } => {
                // The member asked lost the lead: ask whoever leads now, or at the tick.
                let changed = self.raft.leader() != Some(from);
                if let Some(query) = self.lease_queries.get_mut(&request) {
                    query.asked = None;
                    if changed {
                        self.ask_leader(request);
                    }
                }
            }
        }
    }

    /// At every tick: fails queries past their deadline; asks again those whose leader
    /// is gone or changed, or that waited [`LEASE_QUERY_RETRY`] (a query or an answer
    /// may be lost with a dead leader or a broken connection).
    pub(super) fn drive_lease_queries(&mut self) {
        let now = Instant::now();
        let leader = self.raft.leader();
        let mut expired = Vec::new();
        let mut again = Vec::new();
        for (&request, query) in &self.lease_queries {
            if query.deadline <= now {
                expired.push(request);
            } else if query.asked.is_none()
                || query.asked != leader
                || now.duration_since(query.asked_at) >= LEASE_QUERY_RETRY
            {
                again.push(request);
            }
        }
        let message = if leader.is_none() {
            "etcdserver: no leader"
        } else {
            "etcdserver: request timed out"
        };
        for request in expired {
            let query = self.lease_queries.remove(&request).expect("listed above");
            self.reply_error(query.client, CODE_UNAVAILABLE, message);
        }
        for request in again {
            self.ask_leader(request);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = LeaseMessage> {
        prop_oneof![
            (any::<u64>(), any::<i64>(), any::<bool>()).prop_map(|(request, lease, keys)| {
                LeaseMessage::Query {
                    request,
                    lease,
                    keys,
                }
            }),
            (
                any::<u64>(),
                any::<i64>(),
                any::<i64>(),
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..5)
            )
                .prop_map(|(request, ttl_seconds, granted_ttl_seconds, keys)| {
                    LeaseMessage::Answer {
                        request,
                        ttl_seconds,
                        granted_ttl_seconds,
                        keys,
                    }
                }),
            any::<u64>().prop_map(|request| LeaseMessage::NotLeader { request }),
        ]
    }

    proptest! {
        /// Every message decodes to itself; every strict prefix and every extension by
        /// a byte is refused.
        #[test]
        fn round_trip(message in message(), extra in any::<u8>()) {
            let bytes = message.encode();
            prop_assert_eq!(LeaseMessage::decode(&bytes), Some(message));
            for end in 0..bytes.len() {
                prop_assert_eq!(LeaseMessage::decode(&bytes[..end]), None);
            }
            let mut longer = bytes.clone();
            longer.push(extra);
            prop_assert_eq!(LeaseMessage::decode(&longer), None);
        }

        /// Random bytes never panic the decoder.
        #[test]
        fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = LeaseMessage::decode(&bytes);
        }
    }

    /// A key count larger than the bytes could hold is refused before allocating.
    #[test]
    fn huge_key_count_is_refused() {
        let mut bytes = vec![TAG_ANSWER];
        bytes.extend_from_slice(&[0; 24]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(LeaseMessage::decode(&bytes), None);
    }

    /// Unknown tags and a keys flag other than 0/1 are refused.
    #[test]
    fn unknown_bytes_are_refused() {
        assert_eq!(LeaseMessage::decode(&[9]), None);
        let mut query = LeaseMessage::Query {
            request: 1,
            lease: 2,
            keys: true,
        }
        .encode();
        *query.last_mut().unwrap() = 2;
        assert_eq!(LeaseMessage::decode(&query), None);
    }
}
