//! What a real etcd 3.4.23 wrote (the commands are in the parent module's doc), the
//! same messages built in Rust, and the tests that the generated serde code turns
//! one into the other byte for byte.

use serde::Serialize;

use crate::gateway::pb::etcdserverpb::*;
use crate::gateway::pb::mvccpb::{event::EventType, Event, KeyValue};

// ---- What etcd wrote ----

pub(super) const RANGE_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"3","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}],"count":"1"}"#;
pub(super) const PUT_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"}}"#;
pub(super) const PUT_PREV_KV_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"3","raft_term":"2"},"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}"#;
pub(super) const TXN_REQUEST: &str = r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_range":{"key":"Zm9v"}},{"request_put":{"key":"Zm9v","value":"cXV4"}}],"failure":[]}"#;
pub(super) const TXN_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"succeeded":true,"responses":[{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}],"count":"1"}},{"response_put":{"header":{"revision":"4"}}}]}"#;
pub(super) const LEASE_GRANT_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"ID":"777","TTL":"30"}"#;
pub(super) const LEASE_TIME_TO_LIVE_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"ID":"777","TTL":"29","grantedTTL":"30"}"#;
pub(super) const STATUS_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"version":"3.4.23","dbSize":"20480","leader":"3319814642761637952","raftIndex":"10","raftTerm":"2","raftAppliedIndex":"10","dbSizeInUse":"16384"}"#;
pub(super) const HASH_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"hash":3494796834}"#;
pub(super) const MEMBER_LIST_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","raft_term":"2"},"members":[{"ID":"3319814642761637952","name":"default","peerURLs":["http://127.0.0.1:23800"],"clientURLs":["http://127.0.0.1:23790"]}]}"#;
pub(super) const AUTHENTICATE_RESPONSE: &str = r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"7","raft_term":"2"},"token":"KJjeHwNJBQIiMPKU.19"}"#;

pub(super) const WATCH_LINES: [&str; 4] = [
    r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"created":true}}"#,
    r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"5","raft_term":"2"},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"5","version":"4","value":"djE="}}]}}"#,
    r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"6","raft_term":"2"},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"6","version":"5","value":"djI="}}]}}"#,
    r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"7","raft_term":"2"},"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"7"}}]}}"#,
];
pub(super) const WATCH_SECOND_CREATED_LINE: &str = r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"7","raft_term":"2"},"watch_id":"1","created":true}}"#;
pub(super) const WATCH_PROGRESS_LINE: &str = r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"7","raft_term":"2"},"watch_id":"-1"}}"#;
pub(super) const KEEPALIVE_LINE: &str = r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"7","raft_term":"2"},"ID":"777","TTL":"30"}}"#;
pub(super) const KEEPALIVE_UNKNOWN_LINE: &str = r#"{"result":{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"7","raft_term":"2"},"ID":"778"}}"#;

pub(super) const LEASE_NOT_FOUND_ERROR: &str = r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
pub(super) const KEY_NOT_PROVIDED_ERROR: &str = r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#;
pub(super) const FUTURE_REVISION_ERROR: &str = r#"{"error":"etcdserver: mvcc: required revision is a future revision","message":"etcdserver: mvcc: required revision is a future revision","code":11}"#;
pub(super) const INVALID_TOKEN_ERROR: &str = r#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#;
pub(super) const NO_LEADER_ERROR: &str =
    r#"{"error":"election: no leader","message":"election: no leader","code":2}"#;
pub(super) const SNAPSHOT_NO_USER_ERROR: &str = r#"{"error":{"grpc_code":2,"http_code":500,"message":"auth: user name is empty","http_status":"Internal Server Error"}}"#;

// ---- The same messages, built in Rust ----

pub(super) const CLUSTER_ID: u64 = 324952591200643719;
pub(super) const MEMBER_ID: u64 = 3319814642761637952;

pub(super) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: MEMBER_ID,
        revision,
        raft_term: 2,
    })
}

pub(super) fn key_value(mod_revision: i64, version: i64, value: &[u8]) -> KeyValue {
    KeyValue {
        key: b"foo".to_vec(),
        create_revision: 2,
        mod_revision,
        version,
        value: value.to_vec(),
        lease: 0,
    }
}

pub(super) fn range_response() -> RangeResponse {
    RangeResponse {
        header: header(3),
        kvs: vec![key_value(3, 2, b"baz")],
        more: false,
        count: 1,
    }
}

pub(super) fn txn_response() -> TxnResponse {
    let inner_header = |revision| {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    TxnResponse {
        header: header(4),
        succeeded: true,
        responses: vec![
            ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    header: inner_header(3),
                    ..range_response()
                })),
            },
            ResponseOp {
                response: Some(response_op::Response::ResponsePut(PutResponse {
                    header: inner_header(4),
                    prev_kv: None,
                })),
            },
        ],
    }
}

pub(super) fn status_response() -> StatusResponse {
    StatusResponse {
        header: header(4),
        version: "3.4.23".to_string(),
        db_size: 20480,
        leader: MEMBER_ID,
        raft_index: 10,
        raft_term: 2,
        raft_applied_index: 10,
        errors: Vec::new(),
        db_size_in_use: 16384,
        is_learner: false,
    }
}

pub(super) fn member_list_response() -> MemberListResponse {
    MemberListResponse {
        header: header(0),
        members: vec![Member {
            id: MEMBER_ID,
            name: "default".to_string(),
            peer_ur_ls: vec!["http://127.0.0.1:23800".to_string()],
            client_ur_ls: vec!["http://127.0.0.1:23790".to_string()],
            is_learner: false,
        }],
    }
}

fn watch_event(revision: i64, event: Event) -> WatchResponse {
    WatchResponse {
        header: header(revision),
        events: vec![event],
        ..Default::default()
    }
}

/// The responses etcd sent on the first watch of `foo` while it was put twice and
/// deleted.
pub(super) fn foo_watch_responses(watch_id: i64) -> Vec<WatchResponse> {
    let put = |revision, version, value: &[u8]| Event {
        r#type: EventType::Put as i32,
        kv: Some(key_value(revision, version, value)),
        prev_kv: None,
    };
    vec![
        WatchResponse {
            header: header(4),
            watch_id,
            created: true,
            ..Default::default()
        },
        watch_event(5, put(5, 4, b"v1")),
        watch_event(6, put(6, 5, b"v2")),
        watch_event(
            7,
            Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: b"foo".to_vec(),
                    mod_revision: 7,
                    ..Default::default()
                }),
                prev_kv: None,
            },
        ),
    ]
}

// ---- The JSON mapping ----

pub(super) fn to_json<T: Serialize>(message: &T) -> String {
    serde_json::to_string(message).expect("generated messages serialize")
}

#[test]
fn responses_serialize_byte_for_byte_as_etcd() {
    // Field names as in the .proto (snake_case and etcd's camelCase alike), 64-bit
    // integers as strings, uint32 as a number, bytes as base64, defaults left out.
    assert_eq!(to_json(&range_response()), RANGE_RESPONSE);
    assert_eq!(
        to_json(&PutResponse {
            header: header(2),
            prev_kv: None
        }),
        PUT_RESPONSE
    );
    assert_eq!(
        to_json(&PutResponse {
            header: header(3),
            prev_kv: Some(key_value(2, 1, b"bar")),
        }),
        PUT_PREV_KV_RESPONSE
    );
    assert_eq!(to_json(&txn_response()), TXN_RESPONSE);
    assert_eq!(
        to_json(&LeaseGrantResponse {
            header: header(4),
            id: 777,
            ttl: 30,
            error: String::new(),
        }),
        LEASE_GRANT_RESPONSE
    );
    assert_eq!(
        to_json(&LeaseTimeToLiveResponse {
            header: header(4),
            id: 777,
            ttl: 29,
            granted_ttl: 30,
            keys: Vec::new(),
        }),
        LEASE_TIME_TO_LIVE_RESPONSE
    );
    assert_eq!(to_json(&status_response()), STATUS_RESPONSE);
    assert_eq!(
        to_json(&HashResponse {
            header: header(4),
            hash: 3494796834,
        }),
        HASH_RESPONSE
    );
    assert_eq!(to_json(&member_list_response()), MEMBER_LIST_RESPONSE);
    // etcd 3.4 answers an alarm list without a header.
    assert_eq!(to_json(&AlarmResponse::default()), "{}");
}

#[test]
fn watch_responses_serialize_as_etcd_streamed_them() {
    // A delete event names its type; a put (the default) does not.
    let lines: Vec<String> = foo_watch_responses(0)
        .iter()
        .map(|response| format!("{{\"result\":{}}}", to_json(response)))
        .collect();
    assert_eq!(lines, WATCH_LINES);
}

#[test]
fn requests_parse_from_the_json_etcd_accepts() {
    // The txn etcd ran: enums by name, oneofs, nested requests, empty lists.
    let txn: TxnRequest = serde_json::from_str(TXN_REQUEST).expect("etcd's txn parses");
    assert_eq!(
        txn,
        TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Value as i32,
                key: b"foo".to_vec(),
                range_end: Vec::new(),
                target_union: Some(compare::TargetUnion::Value(b"baz".to_vec())),
            }],
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: b"foo".to_vec(),
                        ..Default::default()
                    })),
                },
                RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: b"foo".to_vec(),
                        value: b"qux".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            failure: Vec::new(),
        }
    );
    // int64 as string or number, enums by name or number, unknown fields ignored,
    // camelCase names accepted too: all of which etcd's gateway takes.
    let expected = RangeRequest {
        key: b"foo".to_vec(),
        limit: 5,
        revision: 100,
        sort_order: range_request::SortOrder::Descend as i32,
        keys_only: true,
        ..Default::default()
    };
    for json in [
        r#"{"key":"Zm9v","limit":"5","revision":100,"sort_order":"DESCEND","keys_only":true}"#,
        r#"{"key":"Zm9v","limit":5,"revision":"100","sort_order":2,"keysOnly":true,"foo":1}"#,
    ] {
        let parsed: RangeRequest = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed, expected, "{json}");
    }
    let grant: LeaseGrantRequest =
        serde_json::from_str(r#"{"TTL":"30","ID":"777"}"#).expect("parses");
    assert_eq!((grant.ttl, grant.id), (30, 777));
    // What etcd rejects with "illegal base64 data at input byte 0".
    assert!(serde_json::from_str::<RangeRequest>(r#"{"key":"!!!"}"#).is_err());
}
