//! The binary protocol's codec: every request and response survives a round trip,
//! encodings are deterministic, and no byte string makes a decoder panic, over-allocate
//! or accept trailing bytes.

use corekv_engine::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse, WatchRequest,
};
use corekv_net::protocol::codec::{
    self, ProtocolError, FRAME_BYTES_MAX_DEFAULT, HANDSHAKE_BYTES, MAGIC, PROTOCOL_VERSION,
    TXN_DEPTH_MAX,
};
use corekv_net::protocol::{
    AlarmAction, AlarmMember, AlarmType, Header, Member, MemberChange, MemberChangeKind, Request,
    Response, StatusResponse,
};
use futures_lite::future::block_on;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..12)
}

fn revision() -> impl Strategy<Value = Revision> {
    any::<i64>().prop_map(Revision)
}

fn lease() -> impl Strategy<Value = LeaseId> {
    any::<i64>().prop_map(LeaseId)
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u64>(), any::<u64>(), revision(), any::<u64>()).prop_map(
        |(cluster_id, member_id, revision, raft_term)| Header {
            cluster_id,
            member_id,
            revision,
            raft_term,
        },
    )
}

fn range_request() -> impl Strategy<Value = RangeRequest> {
    (
        (bytes(), bytes(), any::<i64>(), revision()),
        (0..3u8, 0..5u8, any::<[bool; 3]>()),
        (revision(), revision(), revision(), revision()),
    )
        .prop_map(
            |(
                (key, range_end, limit, revision),
                (order, target, [serializable, keys_only, count_only]),
                (min_mod_revision, max_mod_revision, min_create_revision, max_create_revision),
            )| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
                    [order as usize],
                sort_target: [
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][target as usize],
                serializable,
                keys_only,
                count_only,
                min_mod_revision,
                max_mod_revision,
                min_create_revision,
                max_create_revision,
            },
        )
}

fn put_request() -> impl Strategy<Value = PutRequest> {
    (bytes(), bytes(), lease(), any::<[bool; 3]>()).prop_map(
        |(key, value, lease, [prev_kv, ignore_value, ignore_lease])| PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        },
    )
}

fn delete_range_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        any::<i64>().prop_map(CompareTarget::Version),
        revision().prop_map(CompareTarget::Create),
        revision().prop_map(CompareTarget::Mod),
        bytes().prop_map(CompareTarget::Value),
        lease().prop_map(CompareTarget::Lease),
    ];
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::Greater),
        Just(CompareResult::Less),
        Just(CompareResult::NotEqual),
    ];
    (result, target, bytes(), bytes()).prop_map(|(result, target, key, range_end)| Compare {
        result,
        target,
        key,
        range_end,
    })
}

fn txn_request() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        range_request().prop_map(RequestOp::Range),
        put_request().prop_map(RequestOp::Put),
        delete_range_request().prop_map(RequestOp::DeleteRange),
    ];
    let op = leaf.prop_recursive(3, 12, 3, |inner| {
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| {
                RequestOp::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            })
    });
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..3),
        prop::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

fn watch_request() -> impl Strategy<Value = WatchRequest> {
    (bytes(), bytes(), revision(), any::<[bool; 3]>()).prop_map(
        |(key, range_end, start_revision, [no_put, no_delete, prev_kv])| WatchRequest {
            key,
            range_end,
            start_revision,
            no_put,
            no_delete,
            prev_kv,
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        range_request().prop_map(Request::Range),
        put_request().prop_map(Request::Put),
        delete_range_request().prop_map(Request::DeleteRange),
        txn_request().prop_map(Request::Txn),
        (revision(), any::<bool>())
            .prop_map(|(revision, physical)| Request::Compact { revision, physical }),
        (lease(), any::<i64>())
            .prop_map(|(id, ttl_seconds)| Request::LeaseGrant { id, ttl_seconds }),
        lease().prop_map(|id| Request::LeaseRevoke { id }),
        lease().prop_map(|id| Request::LeaseKeepAlive { id }),
        (lease(), any::<bool>()).prop_map(|(id, keys)| Request::LeaseTimeToLive { id, keys }),
        Just(Request::LeaseLeases),
        watch_request().prop_map(Request::WatchCreate),
        any::<u64>().prop_map(|watch_id| Request::WatchCancel { watch_id }),
        Just(Request::WatchProgress),
        Just(Request::Status),
        any::<bool>().prop_map(|linearizable| Request::MemberList { linearizable }),
        (alarm_action(), any::<u64>(), alarm_type()).prop_map(|(action, member_id, alarm)| {
            Request::Alarm {
                action,
                member_id,
                alarm,
            }
        }),
        Just(Request::Hash),
        revision().prop_map(|revision| Request::HashKv { revision }),
        Just(Request::Defragment),
        Just(Request::Snapshot),
        any::<u64>().prop_map(|target| Request::MoveLeader { target }),
        (
            any::<u64>(),
            ".{0,8}",
            prop::collection::vec(".{0,12}", 0..3)
        )
            .prop_map(|(member_id, name, client_urls)| Request::PublishMember {
                member_id,
                name,
                client_urls,
            }),
        (
            0u8..4,
            any::<u64>(),
            prop::collection::vec(".{0,12}", 0..3),
            any::<bool>()
        )
            .prop_map(|(kind, id, peer_urls, is_learner)| {
                Request::MemberChange(MemberChange {
                    kind: [
                        MemberChangeKind::Add,
                        MemberChangeKind::Remove,
                        MemberChangeKind::Update,
                        MemberChangeKind::Promote,
                    ][kind as usize],
                    id,
                    peer_urls,
                    is_learner,
                })
            }),
        (any::<u64>(), any::<u64>(), any::<u32>(), ".{0,16}").prop_map(
            |(origin, proposal_id, code, message)| Request::MemberChangeRefused {
                origin,
                proposal_id,
                code,
                message,
            }
        ),
    ]
}

fn alarm_action() -> impl Strategy<Value = AlarmAction> {
    prop_oneof![
        Just(AlarmAction::Get),
        Just(AlarmAction::Activate),
        Just(AlarmAction::Deactivate),
    ]
}

fn alarm_type() -> impl Strategy<Value = AlarmType> {
    prop_oneof![
        Just(AlarmType::None),
        Just(AlarmType::NoSpace),
        Just(AlarmType::Corrupt),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    (
        any::<u64>(),
        ".{0,8}",
        prop::collection::vec(".{0,12}", 0..3),
        prop::collection::vec(".{0,12}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(id, name, peer_urls, client_urls, is_learner)| Member {
            id,
            name,
            peer_urls,
            client_urls,
            is_learner,
        })
}

fn key_value() -> impl Strategy<Value = KeyValue> {
    (
        bytes(),
        revision(),
        revision(),
        any::<i64>(),
        bytes(),
        lease(),
    )
        .prop_map(
            |(key, create_revision, mod_revision, version, value, lease)| KeyValue {
                key,
                create_revision,
                mod_revision,
                version,
                value,
                lease,
            },
        )
}

fn key_values() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(key_value(), 0..4)
}

fn range_response() -> impl Strategy<Value = RangeResponse> {
    (key_values(), any::<bool>(), any::<i64>()).prop_map(|(kvs, more, count)| RangeResponse {
        kvs,
        more,
        count,
    })
}

fn delete_range_response() -> impl Strategy<Value = DeleteRangeResponse> {
    (any::<i64>(), key_values())
        .prop_map(|(deleted, prev_kvs)| DeleteRangeResponse { deleted, prev_kvs })
}

fn put_response() -> impl Strategy<Value = PutResponse> {
    prop::option::of(key_value()).prop_map(|prev_kv| PutResponse { prev_kv })
}

fn txn_response() -> impl Strategy<Value = TxnResponse> {
    let leaf = prop_oneof![
        range_response().prop_map(ResponseOp::Range),
        put_response().prop_map(ResponseOp::Put),
        delete_range_response().prop_map(ResponseOp::DeleteRange),
    ];
    let op = leaf.prop_recursive(3, 12, 3, |inner| {
        (any::<bool>(), prop::collection::vec(inner, 0..3)).prop_map(|(succeeded, responses)| {
            ResponseOp::Txn(TxnResponse {
                succeeded,
                responses,
            })
        })
    });
    (any::<bool>(), prop::collection::vec(op, 0..3)).prop_map(|(succeeded, responses)| {
        TxnResponse {
            succeeded,
            responses,
        }
    })
}

fn event() -> impl Strategy<Value = Event> {
    (any::<bool>(), key_value(), prop::option::of(key_value())).prop_map(|(put, kv, prev_kv)| {
        Event {
            kind: if put {
                EventKind::Put
            } else {
                EventKind::Delete
            },
            kv,
            prev_kv,
        }
    })
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u32>(), ".{0,20}").prop_map(|(code, message)| Response::Error { code, message }),
        (header(), range_response()).prop_map(|(h, r)| Response::Range(h, r)),
        (header(), put_response()).prop_map(|(h, r)| Response::Put(h, r)),
        (header(), delete_range_response()).prop_map(|(h, r)| Response::DeleteRange(h, r)),
        (header(), txn_response()).prop_map(|(h, r)| Response::Txn(h, r)),
        header().prop_map(Response::Compact),
        (header(), lease(), any::<i64>()).prop_map(|(header, id, ttl_seconds)| {
            Response::LeaseGrant {
                header,
                id,
                ttl_seconds,
            }
        }),
        header().prop_map(Response::LeaseRevoke),
        (header(), lease(), any::<i64>()).prop_map(|(header, id, ttl_seconds)| {
            Response::LeaseKeepAlive {
                header,
                id,
                ttl_seconds,
            }
        }),
        (
            header(),
            lease(),
            any::<i64>(),
            any::<i64>(),
            prop::collection::vec(bytes(), 0..4)
        )
            .prop_map(|(header, id, ttl_seconds, granted_ttl_seconds, keys)| {
                Response::LeaseTimeToLive {
                    header,
                    id,
                    ttl_seconds,
                    granted_ttl_seconds,
                    keys,
                }
            }),
        (header(), prop::collection::vec(lease(), 0..5))
            .prop_map(|(h, ids)| Response::LeaseLeases(h, ids)),
        header().prop_map(Response::WatchCreated),
        (header(), prop::collection::vec(event(), 0..4))
            .prop_map(|(h, events)| Response::WatchEvents(h, events)),
        (header(), revision()).prop_map(|(header, compact_revision)| Response::WatchCanceled {
            header,
            compact_revision,
        }),
        header().prop_map(Response::WatchProgress),
        (header(), ".{0,10}", any::<[u64; 5]>(), any::<bool>()).prop_map(
            |(header, version, numbers, is_learner)| {
                Response::Status(StatusResponse {
                    header,
                    version,
                    db_size: numbers[0],
                    leader: numbers[1],
                    raft_index: numbers[2],
                    raft_term: numbers[3],
                    raft_applied_index: numbers[4],
                    is_learner,
                })
            }
        ),
        (header(), prop::collection::vec(member(), 0..4))
            .prop_map(|(h, members)| Response::MemberList(h, members)),
        (
            header(),
            prop::collection::vec((any::<u64>(), alarm_type()), 0..4)
        )
            .prop_map(|(h, alarms)| Response::Alarm(
                h,
                alarms
                    .into_iter()
                    .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                    .collect()
            )),
        (header(), any::<u32>()).prop_map(|(header, hash)| Response::Hash { header, hash }),
        (header(), any::<u32>(), revision(), revision()).prop_map(
            |(header, hash, compact_revision, hash_revision)| Response::HashKv {
                header,
                hash,
                compact_revision,
                hash_revision,
            }
        ),
        header().prop_map(Response::Defragment),
        (header(), any::<u64>(), bytes()).prop_map(|(header, remaining_bytes, blob)| {
            Response::SnapshotChunk {
                header,
                remaining_bytes,
                blob,
            }
        }),
        header().prop_map(Response::MoveLeader),
    ]
}

/// Splits one encoded frame into its body, checking the length prefix.
fn body(frame: &[u8]) -> &[u8] {
    let length = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(length, frame.len() - 4, "length prefix counts the body");
    &frame[4..]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every request decodes to itself with its id, and re-encodes to the same bytes.
    #[test]
    fn request_round_trips(id in any::<u64>(), request in request()) {
        let mut frame = Vec::new();
        codec::encode_request(id, &request, &mut frame);
        let (decoded_id, decoded) = codec::decode_request(body(&frame)).expect("decodes");
        prop_assert_eq!(decoded_id, id);
        prop_assert_eq!(&decoded, &request);
        let mut again = Vec::new();
        codec::encode_request(id, &decoded, &mut again);
        prop_assert_eq!(again, frame);
    }

    /// Every response decodes to itself with its id, and re-encodes to the same bytes.
    #[test]
    fn response_round_trips(id in any::<u64>(), response in response()) {
        let mut frame = Vec::new();
        codec::encode_response(id, &response, &mut frame);
        let (decoded_id, decoded) = codec::decode_response(body(&frame)).expect("decodes");
        prop_assert_eq!(decoded_id, id);
        prop_assert_eq!(&decoded, &response);
        let mut again = Vec::new();
        codec::encode_response(id, &decoded, &mut again);
        prop_assert_eq!(again, frame);
    }

    /// Frames appended back to back are read back one by one by `read_frame`, then a
    /// clean end of stream.
    #[test]
    fn frames_stream_back_to_back(requests in prop::collection::vec(request(), 1..6)) {
        let mut stream = Vec::new();
        for (id, request) in requests.iter().enumerate() {
            codec::encode_request(id as u64 + 1, request, &mut stream);
        }
        let mut reader = futures_lite::io::Cursor::new(stream);
        let mut buf = Vec::new();
        for (id, request) in requests.iter().enumerate() {
            let more = block_on(codec::read_frame(&mut reader, &mut buf, FRAME_BYTES_MAX_DEFAULT));
            prop_assert!(more.expect("reads"));
            let (decoded_id, decoded) = codec::decode_request(&buf).expect("decodes");
            prop_assert_eq!(decoded_id, id as u64 + 1);
            prop_assert_eq!(&decoded, request);
        }
        let end = block_on(codec::read_frame(&mut reader, &mut buf, FRAME_BYTES_MAX_DEFAULT));
        prop_assert!(!end.expect("clean end"));
    }

    /// Random bytes never make either decoder panic.
    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = codec::decode_request(&body);
        let _ = codec::decode_response(&body);
    }

    /// Random bytes after a valid id and tag (where the interesting parsing is) never
    /// make a decoder panic either.
    #[test]
    fn random_payloads_never_panic(
        id in any::<u64>(),
        tag in any::<u8>(),
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut body = id.to_le_bytes().to_vec();
        body.push(tag);
        body.extend_from_slice(&payload);
        let _ = codec::decode_request(&body);
        let _ = codec::decode_response(&body);
    }

    /// Mutating one byte of a valid frame body, or cutting it short, gives an error or
    /// another message, never a panic; and truncation is always an error.
    #[test]
    fn mutated_frames_never_panic(
        request in request(),
        response in response(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut frame = Vec::new();
        codec::encode_request(7, &request, &mut frame);
        let mut request_body = body(&frame).to_vec();
        let mut frame = Vec::new();
        codec::encode_response(7, &response, &mut frame);
        let mut response_body = body(&frame).to_vec();
        let cut = position.index(request_body.len());
        prop_assert!(codec::decode_request(&request_body[..cut]).is_err());
        let cut = position.index(response_body.len());
        prop_assert!(codec::decode_response(&response_body[..cut]).is_err());
        let at = position.index(request_body.len());
        request_body[at] = byte;
        let _ = codec::decode_request(&request_body);
        let at = position.index(response_body.len());
        response_body[at] = byte;
        let _ = codec::decode_response(&response_body);
    }
}

/// A length prefix one byte over the limit is refused before the body is read or
/// allocated; exactly at the limit it is read.
#[test]
fn frame_limit_is_enforced_before_allocation() {
    let max = 64;
    let mut stream = ((max + 1) as u32).to_le_bytes().to_vec();
    let mut reader = futures_lite::io::Cursor::new(stream.clone());
    let mut buf = Vec::new();
    let error = block_on(codec::read_frame(&mut reader, &mut buf, max)).unwrap_err();
    assert!(matches!(
        error,
        ProtocolError::FrameTooLarge {
            length: 65,
            max: 64
        }
    ));
    assert_eq!(buf.capacity(), 0, "nothing allocated for a refused frame");

    stream = (max as u32).to_le_bytes().to_vec();
    stream.extend_from_slice(&[0u8; 64]);
    let mut reader = futures_lite::io::Cursor::new(stream);
    assert!(block_on(codec::read_frame(&mut reader, &mut buf, max)).expect("at the limit"));
    assert_eq!(buf.len(), max);
}

/// A huge length prefix (4 GiB - 1) with the default limit is refused, not allocated.
#[test]
fn huge_length_prefix_is_refused() {
    let mut reader = futures_lite::io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
    let mut buf = Vec::new();
    let error = block_on(codec::read_frame(
        &mut reader,
        &mut buf,
        FRAME_BYTES_MAX_DEFAULT,
    ));
    assert!(matches!(error, Err(ProtocolError::FrameTooLarge { .. })));
}

/// A stream that ends inside a length prefix or a body is an error; one that ends
/// between frames is a clean end.
#[test]
fn truncated_streams_are_errors() {
    let mut buf = Vec::new();
    let mut reader = futures_lite::io::Cursor::new(vec![9u8, 0]);
    let error = block_on(codec::read_frame(&mut reader, &mut buf, 100)).unwrap_err();
    assert!(matches!(
        error,
        ProtocolError::UnexpectedEof { read: 2, .. }
    ));
    let mut reader = futures_lite::io::Cursor::new(vec![9u8, 0, 0, 0, 1, 2]);
    let error = block_on(codec::read_frame(&mut reader, &mut buf, 100)).unwrap_err();
    assert!(matches!(
        error,
        ProtocolError::UnexpectedEof {
            read: 2,
            expected: 9,
            ..
        }
    ));
    let mut reader = futures_lite::io::Cursor::new(Vec::new());
    assert!(!block_on(codec::read_frame(&mut reader, &mut buf, 100)).expect("clean end"));
}

/// A body shorter than id + tag is refused by the reader and by both decoders.
#[test]
fn short_bodies_are_refused() {
    let mut reader = futures_lite::io::Cursor::new(vec![8u8, 0, 0, 0]);
    let mut buf = Vec::new();
    let error = block_on(codec::read_frame(&mut reader, &mut buf, 100)).unwrap_err();
    assert!(matches!(error, ProtocolError::FrameTooShort { length: 8 }));
    assert!(matches!(
        codec::decode_request(&[0u8; 8]),
        Err(ProtocolError::FrameTooShort { length: 8 })
    ));
}

/// One byte after a complete message is refused, with where the message ended.
#[test]
fn trailing_bytes_are_refused() {
    let mut frame = Vec::new();
    codec::encode_request(3, &Request::Status, &mut frame);
    frame.push(0);
    let error = codec::decode_request(&frame[4..]).unwrap_err();
    assert!(matches!(
        error,
        ProtocolError::TrailingBytes {
            offset: 9,
            trailing: 1
        }
    ));
    let mut frame = Vec::new();
    codec::encode_response(3, &Response::Compact(Header::default()), &mut frame);
    frame.push(0);
    assert!(codec::decode_response(&frame[4..]).is_err());
}

/// A list count larger than the remaining bytes could hold is refused before any
/// allocation, naming the list.
#[test]
fn oversized_counts_are_refused() {
    let mut body = 1u64.to_le_bytes().to_vec();
    body.push(0x04); // txn
    body.extend_from_slice(&u32::MAX.to_le_bytes()); // compares
    let error = codec::decode_request(&body).unwrap_err();
    assert!(
        matches!(
            error,
            ProtocolError::CountTooLarge {
                field: "txn compares",
                offset: 9,
                ..
            }
        ),
        "{error}"
    );
}

/// A byte-string length past the end of the body is refused as truncated.
#[test]
fn oversized_byte_strings_are_refused() {
    let mut body = 1u64.to_le_bytes().to_vec();
    body.push(0x02); // put
    body.extend_from_slice(&1000u32.to_le_bytes());
    body.extend_from_slice(b"key");
    let error = codec::decode_request(&body).unwrap_err();
    assert!(
        matches!(
            error,
            ProtocolError::Truncated {
                field: "put key",
                ..
            }
        ),
        "{error}"
    );
}

/// Undefined flag bits, booleans other than 0/1 and unknown tags are refused.
#[test]
fn undefined_bits_and_tags_are_refused() {
    let mut frame = Vec::new();
    codec::encode_request(
        1,
        &Request::Compact {
            revision: Revision(5),
            physical: true,
        },
        &mut frame,
    );
    let last = frame.len() - 1;
    frame[last] = 0b10;
    assert!(matches!(
        codec::decode_request(&frame[4..]),
        Err(ProtocolError::InvalidFlags {
            field: "compact flags",
            value: 2,
            ..
        })
    ));
    let mut body = 1u64.to_le_bytes().to_vec();
    body.push(0x7f);
    assert!(matches!(
        codec::decode_request(&body),
        Err(ProtocolError::UnknownTag {
            tag: 0x7f,
            offset: 8,
            ..
        })
    ));
    assert!(matches!(
        codec::decode_response(&body),
        Err(ProtocolError::UnknownTag {
            tag: 0x7f,
            offset: 8,
            ..
        })
    ));
    // A request tag is not a response tag and vice versa.
    let mut frame = Vec::new();
    codec::encode_request(1, &Request::Status, &mut frame);
    assert!(codec::decode_response(&frame[4..]).is_err());
}

/// Error messages are carried as UTF-8 and anything else is refused.
#[test]
fn error_messages_must_be_utf8() {
    let mut frame = Vec::new();
    let error = Response::Error {
        code: 3,
        message: "ab".into(),
    };
    codec::encode_response(1, &error, &mut frame);
    let last = frame.len() - 1;
    frame[last] = 0xff;
    assert!(matches!(
        codec::decode_response(&frame[4..]),
        Err(ProtocolError::InvalidUtf8 {
            field: "error message",
            ..
        })
    ));
}

fn nested_txn(depth: usize) -> TxnRequest {
    let mut txn = TxnRequest::default();
    for _ in 1..depth {
        txn = TxnRequest {
            success: vec![RequestOp::Txn(txn)],
            ..TxnRequest::default()
        };
    }
    txn
}

/// Transactions nested exactly `TXN_DEPTH_MAX` deep decode; one level more is refused
/// (for requests and responses), so hostile nesting cannot exhaust the stack.
#[test]
fn txn_nesting_is_bounded() {
    let mut frame = Vec::new();
    let request = Request::Txn(nested_txn(TXN_DEPTH_MAX));
    codec::encode_request(1, &request, &mut frame);
    assert_eq!(
        codec::decode_request(&frame[4..]).expect("at the limit").1,
        request
    );

    let mut frame = Vec::new();
    codec::encode_request(1, &Request::Txn(nested_txn(TXN_DEPTH_MAX + 1)), &mut frame);
    assert!(matches!(
        codec::decode_request(&frame[4..]),
        Err(ProtocolError::NestingTooDeep { .. })
    ));

    let mut response = TxnResponse::default();
    for _ in 0..TXN_DEPTH_MAX {
        response = TxnResponse {
            succeeded: true,
            responses: vec![ResponseOp::Txn(response)],
        };
    }
    let mut frame = Vec::new();
    codec::encode_response(1, &Response::Txn(Header::default(), response), &mut frame);
    assert!(matches!(
        codec::decode_response(&frame[4..]),
        Err(ProtocolError::NestingTooDeep { .. })
    ));
}

/// Hostile nesting of a million levels (a few bytes each) is refused without
/// overflowing the stack.
#[test]
fn deep_hostile_nesting_is_refused() {
    let mut body = 1u64.to_le_bytes().to_vec();
    body.push(0x04);
    for _ in 0..1_000_000 {
        body.extend_from_slice(&0u32.to_le_bytes()); // no compares
        body.extend_from_slice(&1u32.to_le_bytes()); // one success op
        body.push(0x04); // a txn
    }
    assert!(codec::decode_request(&body).is_err());
}

/// The encoding of one request is pinned byte by byte, as docs/protocol.md shows it:
/// changing it breaks every Raft log written before, so it needs a new version.
#[test]
fn put_encoding_is_pinned() {
    let mut frame = Vec::new();
    let put = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: LeaseId(0x10),
        prev_kv: true,
        ..PutRequest::default()
    };
    codec::encode_request(0x0102, &Request::Put(put), &mut frame);
    let expected: Vec<u8> = [
        &[28u8, 0, 0, 0][..],            // body length
        &[0x02, 0x01, 0, 0, 0, 0, 0, 0], // request id 0x0102
        &[0x02],                         // tag: put
        &[1, 0, 0, 0, b'k'],             // key
        &[1, 0, 0, 0, b'v'],             // value
        &[0x10, 0, 0, 0, 0, 0, 0, 0],    // lease
        &[0b001],                        // flags: prev_kv
    ]
    .concat();
    assert_eq!(frame, expected);
}

/// Client and server handshakes agree on an in-memory pipe; a wrong magic or version
/// is refused with a precise error.
#[test]
fn handshakes() {
    // The server's side reads the client's bytes and answers.
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&[0, 0]);
    let mut server = Duplex::new(hello);
    block_on(codec::server_handshake(&mut server)).expect("accepts");
    assert_eq!(server.written.len(), HANDSHAKE_BYTES);
    assert_eq!(&server.written[..8], &MAGIC);
    assert_eq!(&server.written[10..], &[0, 0]);

    // The client accepts that answer.
    let mut client = Duplex::new(server.written.clone());
    block_on(codec::client_handshake(&mut client)).expect("client accepts");
    assert_eq!(client.written[..8], MAGIC);

    // A client of version 2 is refused with the server's version in the reply.
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&2u16.to_le_bytes());
    hello.extend_from_slice(&[0, 0]);
    let mut server = Duplex::new(hello);
    let error = block_on(codec::server_handshake(&mut server)).unwrap_err();
    assert!(matches!(
        error,
        ProtocolError::UnsupportedVersion {
            client: 2,
            server: 1
        }
    ));
    let mut client = Duplex::new(server.written.clone());
    let error = block_on(codec::client_handshake(&mut client)).unwrap_err();
    assert!(matches!(
        error,
        ProtocolError::UnsupportedVersion {
            client: 1,
            server: 1
        }
    ));

    // An HTTP client is not corekv.
    let mut server = Duplex::new(b"GET / HTTP/1.1\r\n".to_vec());
    let error = block_on(codec::server_handshake(&mut server)).unwrap_err();
    assert!(matches!(error, ProtocolError::BadMagic { .. }), "{error}");
    assert!(server.written.is_empty(), "no reply to a stranger");

    // A peer that hangs up mid-handshake.
    let mut server = Duplex::new(MAGIC[..5].to_vec());
    let error = block_on(codec::server_handshake(&mut server)).unwrap_err();
    assert!(
        matches!(error, ProtocolError::UnexpectedEof { read: 5, .. }),
        "{error}"
    );
}

/// Every protocol error maps to a response with a gRPC code and a message that says
/// what went wrong.
#[test]
fn protocol_errors_become_error_frames() {
    let too_large = ProtocolError::FrameTooLarge { length: 10, max: 5 };
    assert_eq!(
        too_large.to_response(),
        Response::Error {
            code: 8,
            message: "corekv: protocol: frame of 10 bytes exceeds the limit of 5 bytes".into()
        }
    );
    let trailing = ProtocolError::TrailingBytes {
        offset: 9,
        trailing: 1,
    };
    assert_eq!(trailing.grpc_code(), 3);
    assert_eq!(
        codec::peek_request_id(&[1, 0, 0, 0, 0, 0, 0, 0, 9]),
        Some(1)
    );
    assert_eq!(codec::peek_request_id(&[1, 0]), None);
}

/// An in-memory stream: reads from `input`, records what is written.
struct Duplex {
    input: futures_lite::io::Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl Duplex {
    fn new(input: Vec<u8>) -> Duplex {
        Duplex {
            input: futures_lite::io::Cursor::new(input),
            written: Vec::new(),
        }
    }
}

impl futures_lite::AsyncRead for Duplex {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl futures_lite::AsyncWrite for Duplex {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
