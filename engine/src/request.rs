//! Requests and responses of the KV API, shaped like etcd's `etcdserverpb` messages, and
//! the validation etcd performs at its API edge (empty keys, txn op count, duplicate keys).
//!
//! Validation is a pure function of the request so that the node can run it on a
//! connection core before anything reaches Raft; the store runs it again before applying,
//! so an invalid request can never change state.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::types::{KeyValue, LeaseId, Revision};

/// etcd's default `--max-txn-ops`: the most compares, success ops or failure ops a txn
/// may carry (each list counted on its own).
pub const TXN_OPS_MAX_DEFAULT: usize = 128;

/// Sort order of a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order ascending, unless a non-key target asks for sorting (then ascending).
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// What a range is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// etcd's `RangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key of the range (or the single key).
    pub key: Vec<u8>,
    /// End of the range, exclusive; empty = the single `key`; `[0]` = every key >= `key`.
    pub range_end: Vec<u8>,
    /// At most this many key-values (0 = no limit); `more` says whether there were more.
    pub limit: i64,
    /// Read at this revision (0 = current).
    pub revision: Revision,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Served from the local store without a quorum round (the node's concern).
    pub serializable: bool,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Keep only key-values with mod_revision >= this (0 = no filter).
    pub min_mod_revision: Revision,
    /// Keep only key-values with mod_revision <= this (0 = no filter).
    pub max_mod_revision: Revision,
    /// Keep only key-values with create_revision >= this (0 = no filter).
    pub min_create_revision: Revision,
    /// Keep only key-values with create_revision <= this (0 = no filter).
    pub max_create_revision: Revision,
}

/// etcd's `RangeResponse` (the header revision is returned alongside).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The key-values, after filters, sort and limit.
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut the result.
    pub more: bool,
    /// Number of keys in the range at the read revision, before filters and limit.
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Attach the key to this lease (NONE detaches it).
    pub lease: LeaseId,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be NONE).
    pub ignore_lease: bool,
}

/// etcd's `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The previous key-value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// First key (or the single key).
    pub key: Vec<u8>,
    /// End of the range as in [`RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// etcd's `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a compare looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The version.
    Version(i64),
    /// The create revision.
    Create(Revision),
    /// The mod revision.
    Mod(Revision),
    /// The value.
    Value(Vec<u8>),
    /// The lease.
    Lease(LeaseId),
}

/// How a compare compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    /// `=`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

/// etcd's `Compare`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The comparison.
    pub result: CompareResult,
    /// The target and the operand.
    pub target: CompareTarget,
    /// The key (or first key of the range).
    pub key: Vec<u8>,
    /// End of the range as in [`RangeRequest::range_end`]; every key in it must match.
    pub range_end: Vec<u8>,
}

/// etcd's `RequestOp`: one operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A range.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete range.
    DeleteRange(DeleteRangeRequest),
    /// A nested txn.
    Txn(TxnRequest),
}

/// etcd's `ResponseOp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// Response to a range.
    Range(RangeResponse),
    /// Response to a put.
    Put(PutResponse),
    /// Response to a delete range.
    DeleteRange(DeleteRangeResponse),
    /// Response to a nested txn.
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// All must hold for the success branch to run.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Ops run otherwise.
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per op of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// Checks a range request as etcd's API edge does.
pub fn validate_range(request: &RangeRequest) -> Result<()> {
    if request.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Checks a put request as etcd's API edge does.
pub fn validate_put(request: &PutRequest) -> Result<()> {
    if request.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if request.ignore_lease && !request.lease.is_none() {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete-range request as etcd's API edge does.
pub fn validate_delete_range(request: &DeleteRangeRequest) -> Result<()> {
    if request.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Checks a txn as etcd's API edge does: op counts (each of compare, success and failure
/// at most `txn_ops_max`, nested txns against what the parent leaves), empty keys, and no
/// key written twice by one execution path.
pub fn validate_txn(request: &TxnRequest, txn_ops_max: usize) -> Result<()> {
    validate_txn_shape(request, txn_ops_max)?;
    check_intervals(&request.success)?;
    check_intervals(&request.failure)?;
    Ok(())
}

fn validate_txn_shape(request: &TxnRequest, txn_ops_max: usize) -> Result<()> {
    let ops = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if ops > txn_ops_max {
        return Err(Error::TooManyOps);
    }
    if request.compare.iter().any(|compare| compare.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in request.success.iter().chain(&request.failure) {
        match op {
            RequestOp::Range(range) => validate_range(range)?,
            RequestOp::Put(put) => validate_put(put)?,
            RequestOp::DeleteRange(delete) => validate_delete_range(delete)?,
            RequestOp::Txn(txn) => validate_txn_shape(txn, txn_ops_max - ops)?,
        }
    }
    Ok(())
}

/// A deleted interval `[start, end)`; `end` empty means unbounded.
#[derive(Clone, Debug)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn of(key: &[u8], range_end: &[u8]) -> Interval {
        if range_end.is_empty() {
            let mut end = key.to_vec();
            end.push(0);
            Interval {
                start: key.to_vec(),
                end: Some(end),
            }
        } else if range_end == [0] {
            Interval {
                start: key.to_vec(),
                end: None,
            }
        } else {
            Interval {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|end| key < end.as_slice())
    }
}

/// etcd's duplicate-key rule for one branch: a key may be put at most once on any
/// execution path, and never inside a range deleted on the same path. Puts in the two
/// branches of one nested txn may repeat a key, as only one branch runs.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Interval>)> {
    let mut deletes: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(delete) => Some(Interval::of(&delete.key, &delete.range_end)),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(txn) = op else { continue };
        let (puts_then, deletes_then) = check_intervals(&txn.success)?;
        let (puts_else, deletes_else) = check_intervals(&txn.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deletes.iter().any(|d| d.contains(key)) {
                return Err(Error::DuplicateKey);
            }
        }
        for key in &puts_else {
            if puts.contains(key) && !puts_then.contains(key) {
                return Err(Error::DuplicateKey);
            }
            if deletes.iter().any(|d| d.contains(key)) {
                return Err(Error::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }
    for op in ops {
        let RequestOp::Put(put) = op else { continue };
        if puts.contains(&put.key) || deletes.iter().any(|d| d.contains(&put.key)) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deletes))
}
