//! corekv-engine: the MVCC store at the heart of corekv, with etcd's exact semantics.
//!
//! * [`Store`]: keys in an in-memory B-tree (ranges) and a hash index (exact keys), each
//!   key with its revision history and values;
//!   put, range, delete-range, txn (nested, with etcd's compare rules) and compaction,
//!   one main revision per request that changes something.
//! * Leases ([`Store::lease_grant`] and friends): TTLs, attached keys, revocation that
//!   deletes the keys as one revision, expiry from times the caller passes in.
//! * Watches ([`Store::watch_create`], [`Store::watch_poll`]): live events, catch-up
//!   from history, bounded buffers, cancellation on compaction.
//! * [`Store::hash_kv`] for consistency checks and [`Store::encode_snapshot`] /
//!   [`Store::decode_snapshot`] (rkyv) for snapshots.
//!
//! The engine is pure: no IO, no clock, no threads, no randomness. The same calls in
//! the same order give the same state, responses and hash on every node; that is what
//! lets Raft replicate it. Errors carry etcd's gRPC code and exact message
//! ([`Error::grpc_code`] and `Display`).
//!
//! ```
//! use corekv_engine::{PutRequest, RangeRequest, Revision, Store};
//!
//! let mut store = Store::default();
//! let put = store.put(&PutRequest { key: b"foo".to_vec(), value: b"bar".to_vec(), ..Default::default() })?;
//! assert_eq!(put.revision, Revision(2));
//! let read = store.range(&RangeRequest { key: b"foo".to_vec(), ..Default::default() })?;
//! assert_eq!(read.kvs[0].value, b"bar");
//! assert_eq!(read.kvs[0].version, 1);
//! # Ok::<(), corekv_engine::Error>(())
//! ```
//!
//! Memory layout and cost per key: see `index` and docs/engine.md.

mod arena;
mod error;
mod hash_index;
mod huge_pages;
mod index;
mod lease;
mod request;
mod snapshot;
mod store;
mod types;
mod watch;

pub use error::{Error, GrpcCode, Result};
pub use lease::{LeaseTimeToLive, LEASE_TTL_SECONDS_MAX, LEASE_TTL_SECONDS_MIN_DEFAULT};
pub use request::{
    validate_delete_range, validate_put, validate_range, validate_txn, Compare, CompareResult,
    CompareTarget, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
    TXN_OPS_MAX_DEFAULT,
};
pub use snapshot::{
    SnapshotHeader, SnapshotKey, SnapshotKeys, SnapshotLease, SnapshotTrailer, SnapshotVersion,
    SnapshotWriter, SNAPSHOT_CHUNK_BYTES_DEFAULT,
};
pub use store::{Applied, HashKv, LeaseGrant, Store, StoreConfig};
pub use types::{
    Event, EventKind, Key, KeyBytes, KeyValue, LeaseId, Revision, KEY_INLINE_BYTES_MAX,
};
pub use watch::{WatchPoll, WatchRequest, WatcherId, WATCH_BUFFER_EVENTS_MAX};
