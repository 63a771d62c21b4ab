//! Translation between etcd's protobuf messages and the shard's requests and
//! responses. Pure functions; no IO.

use corekv_engine as engine;
use corekv_engine::{LeaseId, Revision};

use super::pb::etcdserverpb as pb;
use super::pb::mvccpb;
use crate::protocol::{Header, Response};

/// A shard error as a gRPC status: etcd's code and message.
pub fn status(code: u32, message: String) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(code as i32), message)
}

/// The status for an answer of the wrong kind (a bug, never expected).
pub fn unexpected(response: &Response) -> tonic::Status {
    match response {
        Response::Error { code, message } => status(*code, message.clone()),
        other => tonic::Status::internal(format!("corekv: unexpected answer {other:?}")),
    }
}

/// etcd's `ResponseHeader`.
pub fn header(header: &Header) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: header.cluster_id,
        member_id: header.member_id,
        revision: header.revision.0,
        raft_term: header.raft_term,
    })
}

/// A stored key-value to etcd's message.
pub fn key_value(kv: engine::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision.0,
        mod_revision: kv.mod_revision.0,
        version: kv.version,
        value: kv.value,
        lease: kv.lease.0,
    }
}

/// A watch event to etcd's message.
pub fn event(event: engine::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match event.kind {
            engine::EventKind::Put => mvccpb::event::EventType::Put as i32,
            engine::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(event.kv)),
        prev_kv: event.prev_kv.map(key_value),
    }
}

/// etcd's RangeRequest to the engine's.
pub fn range_request(request: pb::RangeRequest) -> engine::RangeRequest {
    engine::RangeRequest {
        key: request.key,
        range_end: request.range_end,
        limit: request.limit,
        revision: Revision(request.revision),
        sort_order: match request.sort_order {
            1 => engine::SortOrder::Ascend,
            2 => engine::SortOrder::Descend,
            _ => engine::SortOrder::None,
        },
        sort_target: match request.sort_target {
            1 => engine::SortTarget::Version,
            2 => engine::SortTarget::Create,
            3 => engine::SortTarget::Mod,
            4 => engine::SortTarget::Value,
            _ => engine::SortTarget::Key,
        },
        serializable: request.serializable,
        keys_only: request.keys_only,
        count_only: request.count_only,
        min_mod_revision: Revision(request.min_mod_revision),
        max_mod_revision: Revision(request.max_mod_revision),
        min_create_revision: Revision(request.min_create_revision),
        max_create_revision: Revision(request.max_create_revision),
    }
}

/// etcd's PutRequest to the engine's.
pub fn put_request(request: pb::PutRequest) -> engine::PutRequest {
    engine::PutRequest {
        key: request.key,
        value: request.value,
        lease: LeaseId(request.lease),
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
    }
}

/// etcd's DeleteRangeRequest to the engine's.
pub fn delete_range_request(request: pb::DeleteRangeRequest) -> engine::DeleteRangeRequest {
    engine::DeleteRangeRequest {
        key: request.key,
        range_end: request.range_end,
        prev_kv: request.prev_kv,
    }
}

fn compare(compare: pb::Compare) -> engine::Compare {
    use pb::compare::TargetUnion;
    let union = compare.target_union;
    // As etcd: the target field decides what is compared; a missing or mismatched value
    // compares against the zero value.
    let target = match compare.target {
        1 => engine::CompareTarget::Create(Revision(match union {
            Some(TargetUnion::CreateRevision(value)) => value,
            _ => 0,
        })),
        2 => engine::CompareTarget::Mod(Revision(match union {
            Some(TargetUnion::ModRevision(value)) => value,
            _ => 0,
        })),
        3 => engine::CompareTarget::Value(match union {
            Some(TargetUnion::Value(value)) => value,
            _ => Vec::new(),
        }),
        4 => engine::CompareTarget::Lease(LeaseId(match union {
            Some(TargetUnion::Lease(value)) => value,
            _ => 0,
        })),
        _ => engine::CompareTarget::Version(match union {
            Some(TargetUnion::Version(value)) => value,
            _ => 0,
        }),
    };
    engine::Compare {
        result: match compare.result {
            1 => engine::CompareResult::Greater,
            2 => engine::CompareResult::Less,
            3 => engine::CompareResult::NotEqual,
            _ => engine::CompareResult::Equal,
        },
        target,
        key: compare.key,
        range_end: compare.range_end,
    }
}

fn request_op(op: pb::RequestOp) -> Result<engine::RequestOp, tonic::Status> {
    use pb::request_op::Request;
    Ok(match op.request {
        Some(Request::RequestRange(range)) => engine::RequestOp::Range(range_request(range)),
        Some(Request::RequestPut(put)) => engine::RequestOp::Put(put_request(put)),
        Some(Request::RequestDeleteRange(delete)) => {
            engine::RequestOp::DeleteRange(delete_range_request(delete))
        }
        Some(Request::RequestTxn(txn)) => engine::RequestOp::Txn(txn_request(txn)?),
        // etcd rejects an empty operation in its request checks.
        None => return Err(tonic::Status::invalid_argument("etcdserver: key not found")),
    })
}

/// etcd's TxnRequest to the engine's.
pub fn txn_request(request: pb::TxnRequest) -> Result<engine::TxnRequest, tonic::Status> {
    Ok(engine::TxnRequest {
        compare: request.compare.into_iter().map(compare).collect(),
        success: request
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: request
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

/// The engine's RangeResponse to etcd's.
pub fn range_response(
    header: Option<pb::ResponseHeader>,
    response: engine::RangeResponse,
) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: response.kvs.into_iter().map(key_value).collect(),
        more: response.more,
        count: response.count,
    }
}

/// The engine's PutResponse to etcd's.
pub fn put_response(
    header: Option<pb::ResponseHeader>,
    response: engine::PutResponse,
) -> pb::PutResponse {
    pb::PutResponse {
        header,
        prev_kv: response.prev_kv.map(key_value),
    }
}

/// The engine's DeleteRangeResponse to etcd's.
pub fn delete_range_response(
    header: Option<pb::ResponseHeader>,
    response: engine::DeleteRangeResponse,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header,
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// The engine's TxnResponse to etcd's. As etcd's, the responses nested inside carry a
/// header with only the revision they saw: a read before the transaction's first change
/// sees the revision before it, everything else the transaction's own (a nested
/// transaction's own header is empty).
pub fn txn_response(
    header: Option<pb::ResponseHeader>,
    response: engine::TxnResponse,
) -> pb::TxnResponse {
    let revision = header.map_or(0, |h| h.revision);
    let before = if txn_changes(&response) {
        revision - 1
    } else {
        revision
    };
    let mut seen_change = false;
    nested_txn(header, response, revision, before, &mut seen_change)
}

/// Whether a transaction's executed operations changed anything (etcd bumps the
/// revision only then).
fn txn_changes(response: &engine::TxnResponse) -> bool {
    response.responses.iter().any(op_changes)
}

fn op_changes(op: &engine::ResponseOp) -> bool {
    match op {
        engine::ResponseOp::Range(_) => false,
        engine::ResponseOp::Put(_) => true,
        engine::ResponseOp::DeleteRange(r) => r.deleted > 0,
        engine::ResponseOp::Txn(r) => txn_changes(r),
    }
}

fn only_revision(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..pb::ResponseHeader::default()
    })
}

fn nested_txn(
    header: Option<pb::ResponseHeader>,
    response: engine::TxnResponse,
    revision: i64,
    before: i64,
    seen_change: &mut bool,
) -> pb::TxnResponse {
    use pb::response_op::Response as Op;
    let mut responses = Vec::with_capacity(response.responses.len());
    for op in response.responses {
        let changes = op_changes(&op);
        let response = match op {
            engine::ResponseOp::Range(r) => {
                let seen = if *seen_change { revision } else { before };
                Op::ResponseRange(range_response(only_revision(seen), r))
            }
            engine::ResponseOp::Put(r) => Op::ResponsePut(put_response(only_revision(revision), r)),
            engine::ResponseOp::DeleteRange(r) => {
                Op::ResponseDeleteRange(delete_range_response(only_revision(revision), r))
            }
            // etcd leaves a nested transaction's own header empty.
            engine::ResponseOp::Txn(r) => Op::ResponseTxn(nested_txn(
                Some(pb::ResponseHeader::default()),
                r,
                revision,
                before,
                seen_change,
            )),
        };
        *seen_change |= changes;
        responses.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    pb::TxnResponse {
        header,
        succeeded: response.succeeded,
        responses,
    }
}

/// A member to etcd's message.
pub fn member(member: crate::protocol::Member) -> pb::Member {
    pb::Member {
        id: member.id,
        name: member.name,
        peer_ur_ls: member.peer_urls,
        client_ur_ls: member.client_urls,
        is_learner: member.is_learner,
    }
}

/// An alarm to etcd's message.
pub fn alarm_member(alarm: crate::protocol::AlarmMember) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id: alarm.member_id,
        alarm: alarm_type_code(alarm.alarm),
    }
}

/// etcd's AlarmType number.
pub fn alarm_type_code(alarm: crate::protocol::AlarmType) -> i32 {
    match alarm {
        crate::protocol::AlarmType::None => 0,
        crate::protocol::AlarmType::NoSpace => 1,
        crate::protocol::AlarmType::Corrupt => 2,
    }
}

/// etcd's AlarmType name, as `Status.errors` and etcdctl print it.
pub fn alarm_type_name(alarm: crate::protocol::AlarmType) -> &'static str {
    match alarm {
        crate::protocol::AlarmType::None => "NONE",
        crate::protocol::AlarmType::NoSpace => "NOSPACE",
        crate::protocol::AlarmType::Corrupt => "CORRUPT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revisions(response: &pb::TxnResponse) -> Vec<i64> {
        use pb::response_op::Response as Op;
        response
            .responses
            .iter()
            .map(|op| match op.response.as_ref().expect("set") {
                Op::ResponseRange(r) => r.header.expect("header").revision,
                Op::ResponsePut(r) => r.header.expect("header").revision,
                Op::ResponseDeleteRange(r) => r.header.expect("header").revision,
                Op::ResponseTxn(r) => r.header.expect("header").revision,
            })
            .collect()
    }

    /// Nested headers carry only a revision: reads before the first change see the one
    /// before the transaction's; a transaction without changes sees its own throughout.
    #[test]
    fn txn_nested_headers_carry_the_revision_seen() {
        let top = Some(pb::ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 10,
            raft_term: 3,
        });
        let range = || engine::ResponseOp::Range(engine::RangeResponse::default());
        let writes = engine::TxnResponse {
            succeeded: true,
            responses: vec![
                range(),
                engine::ResponseOp::DeleteRange(engine::DeleteRangeResponse::default()),
                range(),
                engine::ResponseOp::Put(engine::PutResponse::default()),
                range(),
            ],
        };
        let converted = txn_response(top, writes);
        assert_eq!(converted.header, top);
        assert_eq!(revisions(&converted), vec![9, 10, 9, 10, 10]);
        let nested = match converted.responses[1].response.as_ref() {
            Some(pb::response_op::Response::ResponseDeleteRange(r)) => r.header.expect("set"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (nested.cluster_id, nested.member_id, nested.raft_term),
            (0, 0, 0)
        );

        let reads = engine::TxnResponse {
            succeeded: false,
            responses: vec![range(), range()],
        };
        assert_eq!(revisions(&txn_response(top, reads)), vec![10, 10]);

        // A nested transaction's own header is empty; its operations carry revisions.
        let nested = engine::TxnResponse {
            succeeded: true,
            responses: vec![engine::ResponseOp::Txn(engine::TxnResponse {
                succeeded: true,
                responses: vec![engine::ResponseOp::Put(engine::PutResponse::default())],
            })],
        };
        let converted = txn_response(top, nested);
        let inner = match converted.responses[0].response.as_ref() {
            Some(pb::response_op::Response::ResponseTxn(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(inner.header, Some(pb::ResponseHeader::default()));
        assert_eq!(revisions(inner), vec![10]);
    }
}
