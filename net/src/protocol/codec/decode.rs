//! Decoding: bytes to messages. Never panics and never allocates from an unchecked
//! length: every byte string is checked against the bytes that remain, every list
//! count against the smallest encoding of its items, and nesting against
//! [`TXN_DEPTH_MAX`]. Strict: unknown tags, undefined flag bits and non-UTF-8 strings
//! are errors, so an accepted body has one meaning and re-encodes to the same bytes.

use corekv_engine::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse, WatchRequest,
};

use super::{tag, ProtocolError, FRAME_BODY_BYTES_MIN, RESPONSE_TAGS, TXN_DEPTH_MAX};
use crate::protocol::messages::{
    AlarmAction, AlarmMember, AlarmType, Header, Member, MemberChange, MemberChangeKind, Request,
    Response, StatusResponse,
};

/// Smallest encodings, used to bound list counts before allocating.
const KEY_VALUE_BYTES_MIN: usize = 4 + 8 + 8 + 8 + 4 + 8;
const COMPARE_BYTES_MIN: usize = 1 + 1 + 4 + 4 + 4;
const REQUEST_OP_BYTES_MIN: usize = 1 + 4 + 4 + 1;
const RESPONSE_OP_BYTES_MIN: usize = 1 + 1;
const EVENT_BYTES_MIN: usize = 1 + KEY_VALUE_BYTES_MIN + 1;
const MEMBER_BYTES_MIN: usize = 8 + 4 + 4 + 4 + 1;

/// Reads fields from one body, tracking the offset for error messages.
pub(super) struct Decoder<'a> {
    bytes: &'a [u8],
    offset: usize,
    txn_depth: usize,
}

impl<'a> Decoder<'a> {
    pub(super) fn frame(body: &'a [u8]) -> Result<Decoder<'a>, ProtocolError> {
        if body.len() < FRAME_BODY_BYTES_MIN {
            return Err(ProtocolError::FrameTooShort { length: body.len() });
        }
        Ok(Decoder {
            bytes: body,
            offset: 0,
            txn_depth: 0,
        })
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    fn take(&mut self, field: &'static str, needed: usize) -> Result<&'a [u8], ProtocolError> {
        if needed > self.remaining() {
            return Err(ProtocolError::Truncated {
                field,
                offset: self.offset,
                needed,
                remaining: self.remaining(),
            });
        }
        let taken = &self.bytes[self.offset..self.offset + needed];
        self.offset += needed;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let bytes = self.take(field, N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, ProtocolError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    fn revision(&mut self, field: &'static str) -> Result<Revision, ProtocolError> {
        Ok(Revision(self.i64(field)?))
    }

    fn lease(&mut self, field: &'static str) -> Result<LeaseId, ProtocolError> {
        Ok(LeaseId(self.i64(field)?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        let [value] = self.flags::<1>(field)?;
        Ok(value)
    }

    /// A flags byte with `N` defined bits, lowest first; other bits must be clear.
    fn flags<const N: usize>(&mut self, field: &'static str) -> Result<[bool; N], ProtocolError> {
        let offset = self.offset;
        let value = self.u8(field)?;
        if u32::from(value) >> N != 0 {
            return Err(ProtocolError::InvalidFlags {
                field,
                value,
                offset,
            });
        }
        let mut bits = [false; N];
        for (bit, set) in bits.iter_mut().enumerate() {
            *set = value & (1 << bit) != 0;
        }
        Ok(bits)
    }

    /// A list count whose items each take at least `item_bytes_min` bytes, checked
    /// against the rest of the body so that `Vec::with_capacity(count)` is bounded.
    fn count(
        &mut self,
        field: &'static str,
        item_bytes_min: usize,
    ) -> Result<usize, ProtocolError> {
        let offset = self.offset;
        let count = self.u32(field)? as usize;
        if count > self.remaining() / item_bytes_min.max(1) {
            return Err(ProtocolError::CountTooLarge {
                field,
                offset,
                count: count as u64,
                remaining: self.remaining(),
            });
        }
        Ok(count)
    }

    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, ProtocolError> {
        let length = self.u32(field)? as usize;
        Ok(self.take(field, length)?.to_vec())
    }

    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        let offset = self.offset;
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8 { field, offset })
    }

    fn strings(&mut self, field: &'static str) -> Result<Vec<String>, ProtocolError> {
        let count = self.count(field, 4)?;
        let mut strings = Vec::with_capacity(count);
        for _ in 0..count {
            strings.push(self.string(field)?);
        }
        Ok(strings)
    }

    fn alarm_action(&mut self, field: &'static str) -> Result<AlarmAction, ProtocolError> {
        Ok(match self.u8(field)? {
            0 => AlarmAction::Get,
            1 => AlarmAction::Activate,
            2 => AlarmAction::Deactivate,
            other => return Err(self.unknown(field, other)),
        })
    }

    fn alarm_type(&mut self, field: &'static str) -> Result<AlarmType, ProtocolError> {
        Ok(match self.u8(field)? {
            0 => AlarmType::None,
            1 => AlarmType::NoSpace,
            2 => AlarmType::Corrupt,
            other => return Err(self.unknown(field, other)),
        })
    }

    fn unknown(&self, field: &'static str, tag: u8) -> ProtocolError {
        ProtocolError::UnknownTag {
            field,
            tag,
            offset: self.offset - 1,
        }
    }

    pub(super) fn finish(&self) -> Result<(), ProtocolError> {
        if self.remaining() != 0 {
            return Err(ProtocolError::TrailingBytes {
                offset: self.offset,
                trailing: self.remaining(),
            });
        }
        Ok(())
    }

    fn header(&mut self) -> Result<Header, ProtocolError> {
        Ok(Header {
            cluster_id: self.u64("header cluster id")?,
            member_id: self.u64("header member id")?,
            revision: self.revision("header revision")?,
            raft_term: self.u64("header raft term")?,
        })
    }

    fn range_request(&mut self) -> Result<RangeRequest, ProtocolError> {
        let key = self.bytes("range key")?;
        let range_end = self.bytes("range end")?;
        let limit = self.i64("range limit")?;
        let revision = self.revision("range revision")?;
        let sort_order = match self.u8("range sort order")? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            other => return Err(self.unknown("range sort order", other)),
        };
        let sort_target = match self.u8("range sort target")? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            other => return Err(self.unknown("range sort target", other)),
        };
        let [serializable, keys_only, count_only] = self.flags("range flags")?;
        Ok(RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            serializable,
            keys_only,
            count_only,
            min_mod_revision: self.revision("range min mod revision")?,
            max_mod_revision: self.revision("range max mod revision")?,
            min_create_revision: self.revision("range min create revision")?,
            max_create_revision: self.revision("range max create revision")?,
        })
    }

    fn put_request(&mut self) -> Result<PutRequest, ProtocolError> {
        let key = self.bytes("put key")?;
        let value = self.bytes("put value")?;
        let lease = self.lease("put lease")?;
        let [prev_kv, ignore_value, ignore_lease] = self.flags("put flags")?;
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        })
    }

    fn delete_range_request(&mut self) -> Result<DeleteRangeRequest, ProtocolError> {
        let key = self.bytes("delete key")?;
        let range_end = self.bytes("delete range end")?;
        let [prev_kv] = self.flags("delete flags")?;
        Ok(DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        })
    }

    fn compare(&mut self) -> Result<Compare, ProtocolError> {
        let result = match self.u8("compare result")? {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            3 => CompareResult::NotEqual,
            other => return Err(self.unknown("compare result", other)),
        };
        let target = match self.u8("compare target")? {
            0 => CompareTarget::Version(self.i64("compare version")?),
            1 => CompareTarget::Create(self.revision("compare create revision")?),
            2 => CompareTarget::Mod(self.revision("compare mod revision")?),
            3 => CompareTarget::Value(self.bytes("compare value")?),
            4 => CompareTarget::Lease(self.lease("compare lease")?),
            other => return Err(self.unknown("compare target", other)),
        };
        Ok(Compare {
            result,
            target,
            key: self.bytes("compare key")?,
            range_end: self.bytes("compare range end")?,
        })
    }

    fn request_op(&mut self) -> Result<RequestOp, ProtocolError> {
        Ok(match self.u8("txn op")? {
            tag::RANGE => RequestOp::Range(self.range_request()?),
            tag::PUT => RequestOp::Put(self.put_request()?),
            tag::DELETE_RANGE => RequestOp::DeleteRange(self.delete_range_request()?),
            tag::TXN => RequestOp::Txn(self.txn_request()?),
            other => return Err(self.unknown("txn op", other)),
        })
    }

    fn request_ops(&mut self, field: &'static str) -> Result<Vec<RequestOp>, ProtocolError> {
        let count = self.count(field, REQUEST_OP_BYTES_MIN)?;
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            ops.push(self.request_op()?);
        }
        Ok(ops)
    }

    fn enter_txn(&mut self) -> Result<(), ProtocolError> {
        if self.txn_depth >= TXN_DEPTH_MAX {
            return Err(ProtocolError::NestingTooDeep {
                offset: self.offset,
            });
        }
        self.txn_depth += 1;
        Ok(())
    }

    fn txn_request(&mut self) -> Result<TxnRequest, ProtocolError> {
        self.enter_txn()?;
        let count = self.count("txn compares", COMPARE_BYTES_MIN)?;
        let mut compare = Vec::with_capacity(count);
        for _ in 0..count {
            compare.push(self.compare()?);
        }
        let success = self.request_ops("txn success ops")?;
        let failure = self.request_ops("txn failure ops")?;
        self.txn_depth -= 1;
        Ok(TxnRequest {
            compare,
            success,
            failure,
        })
    }

    pub(super) fn request(&mut self) -> Result<Request, ProtocolError> {
        Ok(match self.u8("request tag")? {
            tag::RANGE => Request::Range(self.range_request()?),
            tag::PUT => Request::Put(self.put_request()?),
            tag::DELETE_RANGE => Request::DeleteRange(self.delete_range_request()?),
            tag::TXN => Request::Txn(self.txn_request()?),
            tag::COMPACT => {
                let revision = self.revision("compact revision")?;
                let [physical] = self.flags("compact flags")?;
                Request::Compact { revision, physical }
            }
            tag::LEASE_GRANT => Request::LeaseGrant {
                id: self.lease("lease grant id")?,
                ttl_seconds: self.i64("lease grant ttl")?,
            },
            tag::LEASE_REVOKE => Request::LeaseRevoke {
                id: self.lease("lease revoke id")?,
            },
            tag::LEASE_KEEP_ALIVE => Request::LeaseKeepAlive {
                id: self.lease("lease keep-alive id")?,
            },
            tag::LEASE_TIME_TO_LIVE => {
                let id = self.lease("lease time-to-live id")?;
                let [keys] = self.flags("lease time-to-live flags")?;
                Request::LeaseTimeToLive { id, keys }
            }
            tag::LEASE_LEASES => Request::LeaseLeases,
            tag::WATCH_CREATE => {
                let key = self.bytes("watch key")?;
                let range_end = self.bytes("watch range end")?;
                let start_revision = self.revision("watch start revision")?;
                let [no_put, no_delete, prev_kv] = self.flags("watch flags")?;
                Request::WatchCreate(WatchRequest {
                    key,
                    range_end,
                    start_revision,
                    no_put,
                    no_delete,
                    prev_kv,
                })
            }
            tag::WATCH_CANCEL => Request::WatchCancel {
                watch_id: self.u64("watch cancel id")?,
            },
            tag::WATCH_PROGRESS => Request::WatchProgress,
            tag::STATUS => Request::Status,
            tag::ALARM => Request::Alarm {
                action: self.alarm_action("alarm action")?,
                member_id: self.u64("alarm member")?,
                alarm: self.alarm_type("alarm type")?,
            },
            tag::HASH => Request::Hash,
            tag::HASH_KV => Request::HashKv {
                revision: self.revision("hash kv revision")?,
            },
            tag::DEFRAGMENT => Request::Defragment,
            tag::SNAPSHOT => Request::Snapshot,
            tag::MOVE_LEADER => Request::MoveLeader {
                target: self.u64("move leader target")?,
            },
            tag::MEMBER_LIST => Request::MemberList {
                linearizable: self.bool("member list linearizable")?,
            },
            tag::PUBLISH_MEMBER => Request::PublishMember {
                member_id: self.u64("publish member id")?,
                name: self.string("publish member name")?,
                client_urls: self.strings("publish member client urls")?,
            },
            tag::MEMBER_CHANGE => {
                let kind = match self.u8("member change kind")? {
                    1 => MemberChangeKind::Add,
                    2 => MemberChangeKind::Remove,
                    3 => MemberChangeKind::Update,
                    4 => MemberChangeKind::Promote,
                    other => return Err(self.unknown("member change kind", other)),
                };
                Request::MemberChange(MemberChange {
                    kind,
                    id: self.u64("member change id")?,
                    peer_urls: self.strings("member change peer urls")?,
                    is_learner: self.bool("member change learner")?,
                })
            }
            tag::MEMBER_CHANGE_REFUSED => Request::MemberChangeRefused {
                origin: self.u64("refusal origin")?,
                proposal_id: self.u64("refusal proposal")?,
                code: self.u64("refusal code")? as u32,
                message: self.string("refusal message")?,
            },
            other => return Err(self.unknown("request", other)),
        })
    }

    fn key_value(&mut self) -> Result<KeyValue, ProtocolError> {
        Ok(KeyValue {
            key: self.bytes("kv key")?,
            create_revision: self.revision("kv create revision")?,
            mod_revision: self.revision("kv mod revision")?,
            version: self.i64("kv version")?,
            value: self.bytes("kv value")?,
            lease: self.lease("kv lease")?,
        })
    }

    fn optional_key_value(
        &mut self,
        field: &'static str,
    ) -> Result<Option<KeyValue>, ProtocolError> {
        Ok(if self.bool(field)? {
            Some(self.key_value()?)
        } else {
            None
        })
    }

    fn key_values(&mut self, field: &'static str) -> Result<Vec<KeyValue>, ProtocolError> {
        let count = self.count(field, KEY_VALUE_BYTES_MIN)?;
        let mut kvs = Vec::with_capacity(count);
        for _ in 0..count {
            kvs.push(self.key_value()?);
        }
        Ok(kvs)
    }

    fn range_response(&mut self) -> Result<RangeResponse, ProtocolError> {
        Ok(RangeResponse {
            kvs: self.key_values("range kvs")?,
            more: self.bool("range more")?,
            count: self.i64("range count")?,
        })
    }

    fn delete_range_response(&mut self) -> Result<DeleteRangeResponse, ProtocolError> {
        Ok(DeleteRangeResponse {
            deleted: self.i64("delete deleted")?,
            prev_kvs: self.key_values("delete prev kvs")?,
        })
    }

    fn txn_response(&mut self) -> Result<TxnResponse, ProtocolError> {
        self.enter_txn()?;
        let succeeded = self.bool("txn succeeded")?;
        let count = self.count("txn responses", RESPONSE_OP_BYTES_MIN)?;
        let mut responses = Vec::with_capacity(count);
        for _ in 0..count {
            responses.push(match self.u8("txn response op")? {
                tag::RANGE => ResponseOp::Range(self.range_response()?),
                tag::PUT => ResponseOp::Put(PutResponse {
                    prev_kv: self.optional_key_value("put prev kv")?,
                }),
                tag::DELETE_RANGE => ResponseOp::DeleteRange(self.delete_range_response()?),
                tag::TXN => ResponseOp::Txn(self.txn_response()?),
                other => return Err(self.unknown("txn response op", other)),
            });
        }
        self.txn_depth -= 1;
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    fn event(&mut self) -> Result<Event, ProtocolError> {
        let kind = match self.u8("event kind")? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => return Err(self.unknown("event kind", other)),
        };
        Ok(Event {
            kind,
            kv: self.key_value()?,
            prev_kv: self.optional_key_value("event prev kv")?,
        })
    }

    pub(super) fn response(&mut self) -> Result<Response, ProtocolError> {
        let message_tag = self.u8("response tag")?;
        if message_tag == tag::ERROR {
            return Ok(Response::Error {
                code: self.u32("error code")?,
                message: self.string("error message")?,
            });
        }
        if !RESPONSE_TAGS.contains(&message_tag) {
            return Err(self.unknown("response", message_tag));
        }
        let header = self.header()?;
        Ok(match message_tag {
            tag::WATCH_CREATED => Response::WatchCreated(header),
            tag::WATCH_CANCELED => Response::WatchCanceled {
                header,
                compact_revision: self.revision("watch compact revision")?,
            },
            tag::WATCH_EVENTS => {
                let count = self.count("watch events", EVENT_BYTES_MIN)?;
                let mut events = Vec::with_capacity(count);
                for _ in 0..count {
                    events.push(self.event()?);
                }
                Response::WatchEvents(header, events)
            }
            other => match other & !tag::RESPONSE {
                tag::RANGE => Response::Range(header, self.range_response()?),
                tag::PUT => Response::Put(
                    header,
                    PutResponse {
                        prev_kv: self.optional_key_value("put prev kv")?,
                    },
                ),
                tag::DELETE_RANGE => Response::DeleteRange(header, self.delete_range_response()?),
                tag::TXN => Response::Txn(header, self.txn_response()?),
                tag::COMPACT => Response::Compact(header),
                tag::LEASE_GRANT => Response::LeaseGrant {
                    header,
                    id: self.lease("lease grant id")?,
                    ttl_seconds: self.i64("lease grant ttl")?,
                },
                tag::LEASE_REVOKE => Response::LeaseRevoke(header),
                tag::LEASE_KEEP_ALIVE => Response::LeaseKeepAlive {
                    header,
                    id: self.lease("lease keep-alive id")?,
                    ttl_seconds: self.i64("lease keep-alive ttl")?,
                },
                tag::LEASE_TIME_TO_LIVE => {
                    let id = self.lease("lease time-to-live id")?;
                    let ttl_seconds = self.i64("lease time-to-live ttl")?;
                    let granted_ttl_seconds = self.i64("lease time-to-live granted ttl")?;
                    let count = self.count("lease keys", 4)?;
                    let mut keys = Vec::with_capacity(count);
                    for _ in 0..count {
                        keys.push(self.bytes("lease key")?);
                    }
                    Response::LeaseTimeToLive {
                        header,
                        id,
                        ttl_seconds,
                        granted_ttl_seconds,
                        keys,
                    }
                }
                tag::LEASE_LEASES => {
                    let count = self.count("lease ids", 8)?;
                    let mut ids = Vec::with_capacity(count);
                    for _ in 0..count {
                        ids.push(self.lease("lease id")?);
                    }
                    Response::LeaseLeases(header, ids)
                }
                tag::WATCH_PROGRESS => Response::WatchProgress(header),
                tag::STATUS => Response::Status(StatusResponse {
                    header,
                    version: self.string("status version")?,
                    db_size: self.u64("status db size")?,
                    leader: self.u64("status leader")?,
                    raft_index: self.u64("status raft index")?,
                    raft_term: self.u64("status raft term")?,
                    raft_applied_index: self.u64("status raft applied index")?,
                    is_learner: self.bool("status learner")?,
                }),
                tag::MEMBER_LIST => {
                    let count = self.count("members", MEMBER_BYTES_MIN)?;
                    let mut members = Vec::with_capacity(count);
                    for _ in 0..count {
                        members.push(Member {
                            id: self.u64("member id")?,
                            name: self.string("member name")?,
                            peer_urls: self.strings("member peer urls")?,
                            client_urls: self.strings("member client urls")?,
                            is_learner: self.bool("member learner")?,
                        });
                    }
                    Response::MemberList(header, members)
                }
                tag::ALARM => {
                    let count = self.count("alarms", 9)?;
                    let mut alarms = Vec::with_capacity(count);
                    for _ in 0..count {
                        alarms.push(AlarmMember {
                            member_id: self.u64("alarm member")?,
                            alarm: self.alarm_type("alarm type")?,
                        });
                    }
                    Response::Alarm(header, alarms)
                }
                tag::HASH => Response::Hash {
                    header,
                    hash: self.u32("hash")?,
                },
                tag::HASH_KV => Response::HashKv {
                    header,
                    hash: self.u32("hash kv hash")?,
                    compact_revision: self.revision("hash kv compact revision")?,
                    hash_revision: self.revision("hash kv revision")?,
                },
                tag::DEFRAGMENT => Response::Defragment(header),
                tag::SNAPSHOT => Response::SnapshotChunk {
                    header,
                    remaining_bytes: self.u64("snapshot remaining bytes")?,
                    blob: self.bytes("snapshot blob")?,
                },
                tag::MOVE_LEADER => Response::MoveLeader(header),
                _ => unreachable!("codec: RESPONSE_TAGS lists only decodable tags"),
            },
        })
    }
}
