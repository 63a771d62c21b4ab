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

/// The engine's TxnResponse to etcd's. Nested responses carry the same header, as
/// etcd's do.
pub fn txn_response(
    header: Option<pb::ResponseHeader>,
    response: engine::TxnResponse,
) -> pb::TxnResponse {
    use pb::response_op::Response as Op;
    pb::TxnResponse {
        header,
        succeeded: response.succeeded,
        responses: response
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    engine::ResponseOp::Range(r) => Op::ResponseRange(range_response(header, r)),
                    engine::ResponseOp::Put(r) => Op::ResponsePut(put_response(header, r)),
                    engine::ResponseOp::DeleteRange(r) => {
                        Op::ResponseDeleteRange(delete_range_response(header, r))
                    }
                    engine::ResponseOp::Txn(r) => Op::ResponseTxn(txn_response(header, r)),
                }),
            })
            .collect(),
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
