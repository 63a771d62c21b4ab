//! Encoding: messages to bytes, appended to a caller's buffer. Deterministic: one
//! message has exactly one encoding (the Raft log relies on it). Never fails; panics
//! only on a field longer than `u32::MAX` bytes, which no frame limit admits.

use corekv_engine::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder,
    SortTarget, TxnRequest, TxnResponse,
};

use super::tag;
use crate::protocol::messages::{
    AlarmAction, AlarmType, Header, MemberChangeKind, Request, Response,
};

pub(super) fn alarm_action_code(action: AlarmAction) -> u8 {
    match action {
        AlarmAction::Get => 0,
        AlarmAction::Activate => 1,
        AlarmAction::Deactivate => 2,
    }
}

pub(super) fn alarm_type_code(alarm: AlarmType) -> u8 {
    match alarm {
        AlarmType::None => 0,
        AlarmType::NoSpace => 1,
        AlarmType::Corrupt => 2,
    }
}

pub(super) fn begin_frame(request_id: u64, message_tag: u8, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.push(message_tag);
    start
}

pub(super) fn finish_frame(start: usize, out: &mut [u8]) {
    let body = out.len() - start - 4;
    let body = u32::try_from(body).expect("codec: a frame body fits in u32 (4 GiB)");
    out[start..start + 4].copy_from_slice(&body.to_le_bytes());
}

fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

fn put_count(out: &mut Vec<u8>, count: usize) {
    put_u32(
        out,
        u32::try_from(count).expect("codec: a list or byte string fits in u32"),
    );
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_count(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn flags(bits: &[bool]) -> u8 {
    bits.iter()
        .enumerate()
        .fold(0u8, |acc, (bit, set)| acc | (u8::from(*set) << bit))
}

fn put_header(out: &mut Vec<u8>, header: &Header) {
    put_u64(out, header.cluster_id);
    put_u64(out, header.member_id);
    put_i64(out, header.revision.0);
    put_u64(out, header.raft_term);
}

fn put_range_request(out: &mut Vec<u8>, request: &RangeRequest) {
    put_bytes(out, &request.key);
    put_bytes(out, &request.range_end);
    put_i64(out, request.limit);
    put_i64(out, request.revision.0);
    put_u8(
        out,
        match request.sort_order {
            SortOrder::None => 0,
            SortOrder::Ascend => 1,
            SortOrder::Descend => 2,
        },
    );
    put_u8(
        out,
        match request.sort_target {
            SortTarget::Key => 0,
            SortTarget::Version => 1,
            SortTarget::Create => 2,
            SortTarget::Mod => 3,
            SortTarget::Value => 4,
        },
    );
    put_u8(
        out,
        flags(&[request.serializable, request.keys_only, request.count_only]),
    );
    put_i64(out, request.min_mod_revision.0);
    put_i64(out, request.max_mod_revision.0);
    put_i64(out, request.min_create_revision.0);
    put_i64(out, request.max_create_revision.0);
}

fn put_put_request(out: &mut Vec<u8>, request: &PutRequest) {
    put_bytes(out, &request.key);
    put_bytes(out, &request.value);
    put_i64(out, request.lease.0);
    put_u8(
        out,
        flags(&[request.prev_kv, request.ignore_value, request.ignore_lease]),
    );
}

fn put_delete_range_request(out: &mut Vec<u8>, request: &DeleteRangeRequest) {
    put_bytes(out, &request.key);
    put_bytes(out, &request.range_end);
    put_u8(out, flags(&[request.prev_kv]));
}

fn put_compare(out: &mut Vec<u8>, compare: &Compare) {
    put_u8(
        out,
        match compare.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        },
    );
    match &compare.target {
        CompareTarget::Version(version) => {
            put_u8(out, 0);
            put_i64(out, *version);
        }
        CompareTarget::Create(revision) => {
            put_u8(out, 1);
            put_i64(out, revision.0);
        }
        CompareTarget::Mod(revision) => {
            put_u8(out, 2);
            put_i64(out, revision.0);
        }
        CompareTarget::Value(value) => {
            put_u8(out, 3);
            put_bytes(out, value);
        }
        CompareTarget::Lease(lease) => {
            put_u8(out, 4);
            put_i64(out, lease.0);
        }
    }
    put_bytes(out, &compare.key);
    put_bytes(out, &compare.range_end);
}

fn put_request_op(out: &mut Vec<u8>, op: &RequestOp) {
    match op {
        RequestOp::Range(range) => {
            put_u8(out, tag::RANGE);
            put_range_request(out, range);
        }
        RequestOp::Put(put) => {
            put_u8(out, tag::PUT);
            put_put_request(out, put);
        }
        RequestOp::DeleteRange(delete) => {
            put_u8(out, tag::DELETE_RANGE);
            put_delete_range_request(out, delete);
        }
        RequestOp::Txn(txn) => {
            put_u8(out, tag::TXN);
            put_txn_request(out, txn);
        }
    }
}

fn put_txn_request(out: &mut Vec<u8>, request: &TxnRequest) {
    put_count(out, request.compare.len());
    for compare in &request.compare {
        put_compare(out, compare);
    }
    put_count(out, request.success.len());
    for op in &request.success {
        put_request_op(out, op);
    }
    put_count(out, request.failure.len());
    for op in &request.failure {
        put_request_op(out, op);
    }
}

pub(super) fn encode_request_payload(request: &Request, out: &mut Vec<u8>) {
    match request {
        Request::Range(range) => put_range_request(out, range),
        Request::Put(put) => put_put_request(out, put),
        Request::DeleteRange(delete) => put_delete_range_request(out, delete),
        Request::Txn(txn) => put_txn_request(out, txn),
        Request::Compact { revision, physical } => {
            put_i64(out, revision.0);
            put_u8(out, flags(&[*physical]));
        }
        Request::LeaseGrant { id, ttl_seconds } => {
            put_i64(out, id.0);
            put_i64(out, *ttl_seconds);
        }
        Request::LeaseRevoke { id } | Request::LeaseKeepAlive { id } => put_i64(out, id.0),
        Request::LeaseTimeToLive { id, keys } => {
            put_i64(out, id.0);
            put_u8(out, flags(&[*keys]));
        }
        Request::WatchCreate(watch) => {
            put_bytes(out, &watch.key);
            put_bytes(out, &watch.range_end);
            put_i64(out, watch.start_revision.0);
            put_u8(out, flags(&[watch.no_put, watch.no_delete, watch.prev_kv]));
        }
        Request::WatchCancel { watch_id } => put_u64(out, *watch_id),
        Request::LeaseLeases
        | Request::WatchProgress
        | Request::Status
        | Request::Hash
        | Request::Defragment
        | Request::Snapshot => {}
        Request::MemberList { linearizable } => put_u8(out, flags(&[*linearizable])),
        Request::Alarm {
            action,
            member_id,
            alarm,
        } => {
            put_u8(out, alarm_action_code(*action));
            put_u64(out, *member_id);
            put_u8(out, alarm_type_code(*alarm));
        }
        Request::HashKv { revision } => put_i64(out, revision.0),
        Request::MoveLeader { target } => put_u64(out, *target),
        Request::PublishMember {
            member_id,
            name,
            client_urls,
        } => {
            put_u64(out, *member_id);
            put_bytes(out, name.as_bytes());
            put_count(out, client_urls.len());
            for url in client_urls {
                put_bytes(out, url.as_bytes());
            }
        }
        Request::MemberChange(change) => {
            put_u8(
                out,
                match change.kind {
                    MemberChangeKind::Add => 1,
                    MemberChangeKind::Remove => 2,
                    MemberChangeKind::Update => 3,
                    MemberChangeKind::Promote => 4,
                },
            );
            put_u64(out, change.id);
            put_count(out, change.peer_urls.len());
            for url in &change.peer_urls {
                put_bytes(out, url.as_bytes());
            }
            put_u8(out, flags(&[change.is_learner]));
        }
        Request::MemberChangeRefused {
            origin,
            proposal_id,
            code,
            message,
        } => {
            put_u64(out, *origin);
            put_u64(out, *proposal_id);
            put_u64(out, u64::from(*code));
            put_bytes(out, message.as_bytes());
        }
    }
}

fn put_key_value(out: &mut Vec<u8>, kv: &KeyValue) {
    put_bytes(out, &kv.key);
    put_i64(out, kv.create_revision.0);
    put_i64(out, kv.mod_revision.0);
    put_i64(out, kv.version);
    put_bytes(out, &kv.value);
    put_i64(out, kv.lease.0);
}

fn put_optional_key_value(out: &mut Vec<u8>, kv: &Option<KeyValue>) {
    match kv {
        None => put_u8(out, 0),
        Some(kv) => {
            put_u8(out, 1);
            put_key_value(out, kv);
        }
    }
}

fn put_key_values(out: &mut Vec<u8>, kvs: &[KeyValue]) {
    put_count(out, kvs.len());
    for kv in kvs {
        put_key_value(out, kv);
    }
}

fn put_range_response(out: &mut Vec<u8>, response: &RangeResponse) {
    put_key_values(out, &response.kvs);
    put_bool(out, response.more);
    put_i64(out, response.count);
}

fn put_delete_range_response(out: &mut Vec<u8>, response: &DeleteRangeResponse) {
    put_i64(out, response.deleted);
    put_key_values(out, &response.prev_kvs);
}

fn put_txn_response(out: &mut Vec<u8>, response: &TxnResponse) {
    put_bool(out, response.succeeded);
    put_count(out, response.responses.len());
    for op in &response.responses {
        match op {
            ResponseOp::Range(range) => {
                put_u8(out, tag::RANGE);
                put_range_response(out, range);
            }
            ResponseOp::Put(put) => {
                put_u8(out, tag::PUT);
                put_optional_key_value(out, &put.prev_kv);
            }
            ResponseOp::DeleteRange(delete) => {
                put_u8(out, tag::DELETE_RANGE);
                put_delete_range_response(out, delete);
            }
            ResponseOp::Txn(txn) => {
                put_u8(out, tag::TXN);
                put_txn_response(out, txn);
            }
        }
    }
}

fn put_event(out: &mut Vec<u8>, event: &Event) {
    put_u8(
        out,
        match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        },
    );
    put_key_value(out, &event.kv);
    put_optional_key_value(out, &event.prev_kv);
}

pub(super) fn encode_response_payload(response: &Response, out: &mut Vec<u8>) {
    match response {
        Response::Error { code, message } => {
            put_u32(out, *code);
            put_bytes(out, message.as_bytes());
        }
        Response::Range(header, range) => {
            put_header(out, header);
            put_range_response(out, range);
        }
        Response::Put(header, put) => {
            put_header(out, header);
            put_optional_key_value(out, &put.prev_kv);
        }
        Response::DeleteRange(header, delete) => {
            put_header(out, header);
            put_delete_range_response(out, delete);
        }
        Response::Txn(header, txn) => {
            put_header(out, header);
            put_txn_response(out, txn);
        }
        Response::Compact(header)
        | Response::LeaseRevoke(header)
        | Response::WatchCreated(header)
        | Response::WatchProgress(header) => put_header(out, header),
        Response::LeaseGrant {
            header,
            id,
            ttl_seconds,
        }
        | Response::LeaseKeepAlive {
            header,
            id,
            ttl_seconds,
        } => {
            put_header(out, header);
            put_i64(out, id.0);
            put_i64(out, *ttl_seconds);
        }
        Response::LeaseTimeToLive {
            header,
            id,
            ttl_seconds,
            granted_ttl_seconds,
            keys,
        } => {
            put_header(out, header);
            put_i64(out, id.0);
            put_i64(out, *ttl_seconds);
            put_i64(out, *granted_ttl_seconds);
            put_count(out, keys.len());
            for key in keys {
                put_bytes(out, key);
            }
        }
        Response::LeaseLeases(header, ids) => {
            put_header(out, header);
            put_count(out, ids.len());
            for id in ids {
                put_i64(out, id.0);
            }
        }
        Response::WatchEvents(header, events) => {
            put_header(out, header);
            put_count(out, events.len());
            for event in events {
                put_event(out, event);
            }
        }
        Response::WatchCanceled {
            header,
            compact_revision,
        } => {
            put_header(out, header);
            put_i64(out, compact_revision.0);
        }
        Response::Status(status) => {
            put_header(out, &status.header);
            put_bytes(out, status.version.as_bytes());
            put_u64(out, status.db_size);
            put_u64(out, status.leader);
            put_u64(out, status.raft_index);
            put_u64(out, status.raft_term);
            put_u64(out, status.raft_applied_index);
            put_u8(out, flags(&[status.is_learner]));
        }
        Response::MemberList(header, members) => {
            put_header(out, header);
            put_count(out, members.len());
            for member in members {
                put_u64(out, member.id);
                put_bytes(out, member.name.as_bytes());
                put_count(out, member.peer_urls.len());
                for url in &member.peer_urls {
                    put_bytes(out, url.as_bytes());
                }
                put_count(out, member.client_urls.len());
                for url in &member.client_urls {
                    put_bytes(out, url.as_bytes());
                }
                put_u8(out, flags(&[member.is_learner]));
            }
        }
        Response::Alarm(header, alarms) => {
            put_header(out, header);
            put_count(out, alarms.len());
            for alarm in alarms {
                put_u64(out, alarm.member_id);
                put_u8(out, alarm_type_code(alarm.alarm));
            }
        }
        Response::Hash { header, hash } => {
            put_header(out, header);
            put_u32(out, *hash);
        }
        Response::HashKv {
            header,
            hash,
            compact_revision,
            hash_revision,
        } => {
            put_header(out, header);
            put_u32(out, *hash);
            put_i64(out, compact_revision.0);
            put_i64(out, hash_revision.0);
        }
        Response::Defragment(header) | Response::MoveLeader(header) => put_header(out, header),
        Response::SnapshotChunk {
            header,
            remaining_bytes,
            blob,
        } => {
            put_header(out, header);
            put_u64(out, *remaining_bytes);
            put_bytes(out, blob);
        }
    }
}
