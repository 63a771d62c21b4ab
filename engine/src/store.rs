//! The MVCC store: applies KV, lease and compaction requests in order, one main revision
//! per request that changes something, and answers reads at any retained revision.
//!
//! Every method is deterministic: the same sequence of calls (with the same `now_ms`
//! arguments for lease expiry bookkeeping, which is not replicated state) yields the same
//! responses, revisions and hash on every node.
//!
//! Compaction is logical at once (reads below the compact revision fail) and physical as
//! soon as no snapshot pins older history; a pinned snapshot defers the freeing, never
//! the outcome, so nodes with and without a snapshot in progress stay identical.

use crate::error::{Error, Result};
use crate::index::{Index, NewValue, RangeEnd, VersionFields};
use crate::lease::{LeaseTable, LeaseTimeToLive, LEASE_TTL_SECONDS_MIN_DEFAULT};
use crate::request::{
    validate_delete_range, validate_put, validate_range, validate_txn, Compare, CompareResult,
    CompareTarget, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
    TXN_OPS_MAX_DEFAULT,
};
use crate::types::{KeyValue, LeaseId, Revision};
use crate::watch::{Change, WatchHub, WatchPoll, WatchRequest, WatcherId};

/// Settings that shape the store's behaviour (etcd flags in parentheses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most ops in each list of a txn (`--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Minimum lease TTL in seconds (derived from `--election-timeout`).
    pub lease_ttl_seconds_min: i64,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            txn_ops_max: TXN_OPS_MAX_DEFAULT,
            lease_ttl_seconds_min: LEASE_TTL_SECONDS_MIN_DEFAULT,
        }
    }
}

/// What a write request returns besides its response: the store revision afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<T> {
    /// The store's revision after the request (the header revision etcd returns).
    pub revision: Revision,
    /// The response.
    pub response: T,
}

/// The result of a lease grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease's id (chosen by the store when the request named none).
    pub id: LeaseId,
    /// The TTL in effect, after the minimum TTL was applied.
    pub ttl_seconds: i64,
}

/// The result of [`Store::hash_kv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32 over every retained version up to `hash_revision`.
    pub hash: u32,
    /// The compact revision at the time of hashing.
    pub compact_revision: Revision,
    /// The revision hashed up to.
    pub hash_revision: Revision,
}

/// The MVCC store of one shard.
#[derive(Debug)]
pub struct Store {
    pub(crate) config: StoreConfig,
    pub(crate) index: Index,
    pub(crate) leases: LeaseTable,
    watches: WatchHub,
    /// The current main revision.
    pub(crate) current: i64,
    /// The compact revision; -1 before the first compaction (etcd's `compactMainRev`).
    pub(crate) compact: i64,
    /// The revision up to which history has been physically removed.
    physical_compact: i64,
    /// Revisions pinned by snapshots in progress; physical compaction stays below the
    /// smallest.
    pins: Vec<i64>,
}

/// State of one write request while it applies: its main revision and the next
/// sub-revision.
struct WriteBatch {
    main: i64,
    sub: u32,
}

impl WriteBatch {
    fn changed(&self) -> bool {
        self.sub > 0
    }
}

impl Default for Store {
    fn default() -> Store {
        Store::new(StoreConfig::default())
    }
}

impl Store {
    /// An empty store at revision 1, as a new etcd.
    pub fn new(config: StoreConfig) -> Store {
        Store {
            config,
            index: Index::default(),
            leases: LeaseTable::new(config.lease_ttl_seconds_min),
            watches: WatchHub::default(),
            current: Revision::INITIAL.0,
            compact: -1,
            physical_compact: -1,
            pins: Vec::new(),
        }
    }

    /// The store's settings.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        Revision(self.current)
    }

    /// The compact revision (0 before any compaction).
    pub fn compact_revision(&self) -> Revision {
        Revision(self.compact.max(0))
    }

    /// Bytes the store holds, approximately: keys, retained values and a fixed cost per
    /// version. O(1): the index keeps the count as versions come and go (the quota check
    /// reads it on every write).
    pub fn approximate_bytes(&self) -> usize {
        self.index.bytes()
    }

    /// Number of keys with retained history (live or not yet compacted away).
    pub fn key_count(&self) -> usize {
        self.index.key_count()
    }

    // ---- reads -------------------------------------------------------------------

    /// A range read at the request's revision (0 = current).
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse> {
        validate_range(request)?;
        self.check_read_revision(request.revision)?;
        Ok(self.range_at(request, self.current))
    }

    fn check_read_revision(&self, revision: Revision) -> Result<()> {
        if revision.0 > self.current {
            return Err(Error::FutureRevision);
        }
        if revision.0 > 0 && revision.0 < self.compact {
            return Err(Error::Compacted);
        }
        Ok(())
    }

    /// Reads a checked range request; `view` is the newest revision visible (the
    /// current revision, or the one being written inside a txn).
    fn range_at(&self, request: &RangeRequest, view: i64) -> RangeResponse {
        let at = if request.revision.0 > 0 {
            request.revision.0
        } else {
            view
        };
        let end = RangeEnd::from_etcd(&request.range_end);
        let filtered = request.sort_order != SortOrder::None
            || request.sort_target != SortTarget::Key
            || request.min_mod_revision.0 != 0
            || request.max_mod_revision.0 != 0
            || request.min_create_revision.0 != 0
            || request.max_create_revision.0 != 0;
        let limit = usize::try_from(request.limit).unwrap_or(0);
        // Without filters or sorting only limit + 1 values are copied; the count always
        // covers the whole range, as etcd's.
        let copy_max = if limit > 0 && !filtered {
            limit + 1
        } else {
            usize::MAX
        };
        if matches!(end, RangeEnd::Single) && !filtered {
            // Point read: one hash index lookup instead of a B-tree search.
            let found = self
                .index
                .get(&request.key)
                .and_then(|record| record.live_at(at));
            let kvs: Vec<KeyValue> = match found {
                Some(version) if !request.count_only => {
                    vec![version.to_key_value(&request.key, !request.keys_only)]
                }
                _ => Vec::new(),
            };
            return RangeResponse {
                kvs,
                more: false,
                count: i64::from(found.is_some()),
            };
        }
        let mut count = 0i64;
        let mut kvs = Vec::new();
        for (key, record) in self.index.range(&request.key, &end) {
            let Some(version) = record.live_at(at) else {
                continue;
            };
            count += 1;
            if request.count_only || kvs.len() >= copy_max {
                continue;
            }
            kvs.push(version.to_key_value(
                key.as_bytes(),
                !request.keys_only || request.sort_target == SortTarget::Value,
            ));
        }
        if filtered {
            kvs.retain(|kv: &KeyValue| {
                (request.max_mod_revision.0 == 0 || kv.mod_revision <= request.max_mod_revision)
                    && (request.min_mod_revision.0 == 0
                        || kv.mod_revision >= request.min_mod_revision)
                    && (request.max_create_revision.0 == 0
                        || kv.create_revision <= request.max_create_revision)
                    && (request.min_create_revision.0 == 0
                        || kv.create_revision >= request.min_create_revision)
            });
            let order = match (request.sort_order, request.sort_target) {
                (SortOrder::None, SortTarget::Key) => SortOrder::None,
                (SortOrder::None, _) => SortOrder::Ascend,
                (order, _) => order,
            };
            if order != SortOrder::None {
                // Stable sorts over key-ordered input: ties stay in ascending key order in
                // both directions, as etcd's (its sort of a descending order keeps ties in
                // their original, key, order).
                let target = request.sort_target;
                let compare = move |a: &KeyValue, b: &KeyValue| match target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if order == SortOrder::Descend {
                    kvs.sort_by(|a, b| compare(b, a));
                } else {
                    kvs.sort_by(compare);
                }
            }
            if request.keys_only {
                kvs.iter_mut().for_each(|kv| kv.value.clear());
            }
        }
        let more = limit > 0 && kvs.len() > limit;
        kvs.truncate(if limit > 0 { limit } else { kvs.len() });
        RangeResponse { kvs, more, count }
    }

    // ---- writes ------------------------------------------------------------------

    /// Applies a put.
    pub fn put(&mut self, request: &PutRequest) -> Result<Applied<PutResponse>> {
        validate_put(request)?;
        self.check_put(request)?;
        let mut batch = self.begin();
        let response = self.apply_put(&mut batch, request);
        Ok(self.commit(batch, response))
    }

    /// Applies a delete-range.
    pub fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<Applied<DeleteRangeResponse>> {
        validate_delete_range(request)?;
        let mut batch = self.begin();
        let response = self.apply_delete_range(&mut batch, request);
        Ok(self.commit(batch, response))
    }

    /// Applies a txn: compares evaluated against the state before the txn (nested txns'
    /// compares too), then every op of the chosen path, as one revision if anything
    /// changed. Every error is found before anything is written.
    pub fn txn(&mut self, request: &TxnRequest) -> Result<Applied<TxnResponse>> {
        validate_txn(request, self.config.txn_ops_max)?;
        let mut path = Vec::new();
        self.choose_path(request, &mut path);
        self.check_path(request, &mut path.iter().copied())?;
        let mut batch = self.begin();
        let response = self.apply_txn(&mut batch, request, &mut path.iter().copied());
        Ok(self.commit(batch, response))
    }

    /// Compacts history at `revision`: reads below it fail from now on, and versions no
    /// read at or above it can see are freed.
    pub fn compact(&mut self, revision: Revision) -> Result<Revision> {
        if revision.0 <= self.compact {
            return Err(Error::Compacted);
        }
        if revision.0 > self.current {
            return Err(Error::FutureRevision);
        }
        self.compact = revision.0;
        self.watches.on_compact(self.compact);
        self.compact_physically();
        Ok(Revision(self.current))
    }

    fn compact_physically(&mut self) {
        let target = self
            .pins
            .iter()
            .copied()
            .min()
            .map_or(self.compact, |pin| pin.min(self.compact));
        if target > self.physical_compact {
            self.index.compact(target);
            self.physical_compact = target;
        }
    }

    fn begin(&self) -> WriteBatch {
        WriteBatch {
            main: self.current + 1,
            sub: 0,
        }
    }

    fn commit<T>(&mut self, batch: WriteBatch, response: T) -> Applied<T> {
        if batch.changed() {
            self.current = batch.main;
        }
        Applied {
            revision: Revision(self.current),
            response,
        }
    }

    /// The newest visible revision while `batch` applies: its own writes are visible.
    fn view(&self, batch: &WriteBatch) -> i64 {
        if batch.changed() {
            batch.main
        } else {
            self.current
        }
    }

    fn check_put(&self, request: &PutRequest) -> Result<()> {
        if request.ignore_value || request.ignore_lease {
            let exists = self
                .index
                .get(&request.key)
                .and_then(|r| r.live_at(self.current))
                .is_some();
            if !exists {
                return Err(Error::KeyNotFound);
            }
        }
        if !request.lease.is_none() && !self.leases.contains(request.lease) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    fn apply_put(&mut self, batch: &mut WriteBatch, request: &PutRequest) -> PutResponse {
        let view = self.view(batch);
        let key = request.key.as_slice();
        // One B-tree descent (Index::upsert): the record is found once, read for the
        // previous version, and the new version is pushed onto it. Fields are borrowed
        // apart so that leases and watchers can be updated while the record is held.
        let leases = &mut self.leases;
        let watches = &mut self.watches;
        let prev_kv = self.index.upsert(key, |record| {
            let previous = record.and_then(|r| r.live_at(view));
            let (value, new_value) = match (previous, request.ignore_value) {
                (Some(previous), true) => (previous.value(), previous.same_value()),
                _ => (&request.value[..], NewValue::Bytes(&request.value)),
            };
            let lease = match (previous, request.ignore_lease) {
                (Some(previous), true) => previous.lease,
                _ => request.lease.0,
            };
            let (create, version) = match previous {
                Some(previous) => (previous.create, previous.version + 1),
                None => (batch.main, 1),
            };
            let fields = VersionFields {
                main: batch.main,
                sub: batch.sub,
                create,
                version,
                lease,
            };
            batch.sub += 1;
            if let Some(previous) = previous {
                if previous.lease != lease {
                    leases.detach(LeaseId(previous.lease), key);
                }
            }
            if lease != 0 {
                leases.attach(LeaseId(lease), key);
            }
            watches.notify(&Change {
                key,
                version: &fields,
                value,
                previous: previous.map(|p| (*p, p.value())),
            });
            let prev_kv = if request.prev_kv {
                previous.map(|p| p.to_key_value(key, true))
            } else {
                None
            };
            (fields, new_value, prev_kv)
        });
        PutResponse { prev_kv }
    }

    fn apply_delete_range(
        &mut self,
        batch: &mut WriteBatch,
        request: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let view = self.view(batch);
        let end = RangeEnd::from_etcd(&request.range_end);
        // What each deleted key held: its key, fields and value, copied out so that the
        // index can take the tombstones.
        let doomed: Vec<(Vec<u8>, VersionFields, Vec<u8>)> = self
            .index
            .range(&request.key, &end)
            .filter_map(|(key, record)| {
                record
                    .live_at(view)
                    .map(|v| (key.as_bytes().to_vec(), *v, v.value().to_vec()))
            })
            .collect();
        let mut prev_kvs = Vec::new();
        for (key, previous, previous_value) in &doomed {
            let tombstone = VersionFields::tombstone(batch.main, batch.sub);
            batch.sub += 1;
            if previous.lease != 0 {
                self.leases.detach(LeaseId(previous.lease), key);
            }
            self.watches.notify(&Change {
                key,
                version: &tombstone,
                value: &[],
                previous: Some((*previous, previous_value)),
            });
            self.index.push(key, tombstone, &[]);
            if request.prev_kv {
                prev_kvs.push(previous.to_key_value(key, previous_value));
            }
        }
        DeleteRangeResponse {
            deleted: doomed.len() as i64,
            prev_kvs,
        }
    }

    /// Evaluates the compares of `request` and, recursively, of the nested txns on the
    /// chosen branch, against the current state (etcd's `compareToPath`).
    fn choose_path(&self, request: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = request.compare.iter().all(|compare| self.compare(compare));
        path.push(succeeded);
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        for op in ops {
            if let RequestOp::Txn(nested) = op {
                self.choose_path(nested, path);
            }
        }
    }

    fn compare(&self, compare: &Compare) -> bool {
        let end = RangeEnd::from_etcd(&compare.range_end);
        let mut any = false;
        for (_, record) in self.index.range(&compare.key, &end) {
            let Some(version) = record.live_at(self.current) else {
                continue;
            };
            any = true;
            let ordering = match &compare.target {
                CompareTarget::Value(value) => version.value().cmp(value.as_slice()),
                CompareTarget::Version(v) => version.version.cmp(v),
                CompareTarget::Create(r) => version.create.cmp(&r.0),
                CompareTarget::Mod(r) => version.main.cmp(&r.0),
                CompareTarget::Lease(l) => version.lease.cmp(&l.0),
            };
            if !holds(compare.result, ordering) {
                return false;
            }
        }
        if any {
            return true;
        }
        // No key: etcd compares against an all-zero key-value, except that a value
        // compare on a missing key always fails.
        let ordering = match &compare.target {
            CompareTarget::Value(_) => return false,
            CompareTarget::Version(v) => 0.cmp(v),
            CompareTarget::Create(r) => 0.cmp(&r.0),
            CompareTarget::Mod(r) => 0.cmp(&r.0),
            CompareTarget::Lease(l) => 0.cmp(&l.0),
        };
        holds(compare.result, ordering)
    }

    /// Checks every op on the chosen path before anything is written, as etcd's
    /// `checkRequests`: puts whose key or lease is missing, reads at a bad revision.
    fn check_path(
        &self,
        request: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<()> {
        let succeeded = path.next().expect("txn: path covers every txn");
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        for op in ops {
            match op {
                RequestOp::Put(put) => self.check_put(put)?,
                RequestOp::Range(range) => self.check_read_revision(range.revision)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(nested) => self.check_path(nested, path)?,
            }
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        batch: &mut WriteBatch,
        request: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> TxnResponse {
        let succeeded = path.next().expect("txn: path covers every txn");
        let ops = if succeeded {
            &request.success
        } else {
            &request.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                RequestOp::Range(range) => {
                    ResponseOp::Range(self.range_at(range, self.view(batch)))
                }
                RequestOp::Put(put) => ResponseOp::Put(self.apply_put(batch, put)),
                RequestOp::DeleteRange(delete) => {
                    ResponseOp::DeleteRange(self.apply_delete_range(batch, delete))
                }
                RequestOp::Txn(nested) => ResponseOp::Txn(self.apply_txn(batch, nested, path)),
            };
            responses.push(response);
        }
        TxnResponse {
            succeeded,
            responses,
        }
    }

    // ---- leases ------------------------------------------------------------------

    /// Grants a lease (`id` NONE: the store chooses one, the same on every node).
    pub fn lease_grant(
        &mut self,
        id: LeaseId,
        ttl_seconds: i64,
        now_ms: u64,
    ) -> Result<LeaseGrant> {
        let (id, ttl_seconds) = self.leases.grant(id, ttl_seconds, now_ms)?;
        Ok(LeaseGrant { id, ttl_seconds })
    }

    /// Revokes a lease, deleting its keys in key order as one revision.
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<Revision> {
        let keys = self.leases.remove(id)?;
        let mut batch = self.begin();
        for key in keys {
            let request = DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: Vec::new(),
                prev_kv: false,
            };
            self.apply_delete_range(&mut batch, &request);
        }
        Ok(self.commit(batch, ()).revision)
    }

    /// Keep-alive: restarts the lease's deadline; returns its TTL.
    pub fn lease_renew(&mut self, id: LeaseId, now_ms: u64) -> Result<i64> {
        self.leases.renew(id, now_ms)
    }

    /// Time left and, optionally, the attached keys.
    pub fn lease_time_to_live(
        &self,
        id: LeaseId,
        now_ms: u64,
        with_keys: bool,
    ) -> Result<LeaseTimeToLive> {
        self.leases.time_to_live(id, now_ms, with_keys)
    }

    /// Number of leases held.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Every lease id, soonest expiry first (etcd's order for its lease list); leases
    /// without a deadline (on a follower) last, ties by id.
    pub fn lease_ids_by_expiry(&self) -> Vec<LeaseId> {
        let mut leases: Vec<(u64, LeaseId)> = self
            .leases
            .iter()
            .map(|(id, lease)| (lease.deadline_ms.unwrap_or(u64::MAX), id))
            .collect();
        leases.sort_unstable();
        leases.into_iter().map(|(_, id)| id).collect()
    }

    /// Every lease id, ascending.
    pub fn lease_ids(&self) -> Vec<LeaseId> {
        self.leases.ids().collect()
    }

    /// Leases past their deadline at `now_ms` (only a leader tracks deadlines), at most
    /// `limit`, earliest first. The node proposes their revocation.
    pub fn lease_expired(&self, now_ms: u64, limit: usize) -> Vec<LeaseId> {
        self.leases.expired(now_ms, limit)
    }

    /// This node became leader: every lease gets a full TTL plus `extend_ms` from now.
    pub fn lease_promote(&mut self, now_ms: u64, extend_ms: u64) {
        self.leases.promote(now_ms, extend_ms);
    }

    /// This node is no longer leader: stop tracking deadlines.
    pub fn lease_demote(&mut self) {
        self.leases.demote();
    }

    // ---- watches -----------------------------------------------------------------

    /// Creates a watcher. A start revision below the compact revision is reported by
    /// the first poll as [`WatchPoll::Compacted`], as etcd cancels such a watch.
    pub fn watch_create(&mut self, request: WatchRequest) -> WatcherId {
        self.watches.create(request, self.current)
    }

    /// Cancels a watcher; false if it did not exist.
    pub fn watch_cancel(&mut self, id: WatcherId) -> bool {
        self.watches.cancel(id)
    }

    /// Takes up to `events_max` events for a watcher (a whole revision at least);
    /// None if the watcher does not exist.
    pub fn watch_poll(&mut self, id: WatcherId, events_max: usize) -> Option<WatchPoll> {
        self.watches
            .poll(id, &self.index, self.current, self.compact, events_max)
    }

    /// Watchers with something to deliver; the node polls each.
    pub fn watch_ready(&mut self) -> Vec<WatcherId> {
        self.watches.take_ready()
    }

    /// Whether a watcher has every event up to the current revision buffered (etcd
    /// sends progress notifications only then).
    pub fn watch_is_synced(&self, id: WatcherId) -> Option<bool> {
        self.watches.is_synced(id)
    }

    /// Number of watchers.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    // ---- snapshots and hashing ----------------------------------------------------

    /// Pins history at the current revision so that a snapshot can be encoded
    /// incrementally while writes go on; release with [`Store::unpin`].
    pub fn pin(&mut self) -> Revision {
        self.pins.push(self.current);
        Revision(self.current)
    }

    /// Releases a pin taken by [`Store::pin`] and runs any deferred compaction.
    pub fn unpin(&mut self, revision: Revision) {
        let position = self
            .pins
            .iter()
            .position(|pin| *pin == revision.0)
            .expect("store: unpin of a revision that was pinned");
        self.pins.swap_remove(position);
        self.compact_physically();
    }

    /// CRC-32 over every version retained by compaction with a revision up to
    /// `revision` (0 = current): keys in order, each key's versions in order. Equal
    /// on every node that applied the same requests.
    pub fn hash_kv(&self, revision: Revision) -> Result<HashKv> {
        let upto = if revision.0 == 0 {
            self.current
        } else {
            revision.0
        };
        if upto > self.current {
            return Err(Error::FutureRevision);
        }
        if upto < self.compact {
            return Err(Error::Compacted);
        }
        let mut hasher = crc32fast::Hasher::new();
        for (key, record) in self.index.iter() {
            for version in record.versions() {
                if version.main > upto || !record.retained(&version, self.compact) {
                    continue;
                }
                hasher.update(&(key.as_bytes().len() as u32).to_le_bytes());
                hasher.update(key.as_bytes());
                hasher.update(&version.main.to_le_bytes());
                hasher.update(&version.sub.to_le_bytes());
                hasher.update(&version.create.to_le_bytes());
                hasher.update(&version.version.to_le_bytes());
                hasher.update(&version.lease.to_le_bytes());
                hasher.update(&(version.value().len() as u32).to_le_bytes());
                hasher.update(version.value());
            }
        }
        Ok(HashKv {
            hash: hasher.finalize(),
            compact_revision: self.compact_revision(),
            hash_revision: Revision(upto),
        })
    }

    /// Checks the index's internal invariants (tests and debug builds).
    #[cfg(any(test, debug_assertions))]
    pub fn check_invariants(&self) {
        self.index.check();
    }

    pub(crate) fn from_parts(
        config: StoreConfig,
        index: Index,
        leases: LeaseTable,
        current: i64,
        compact: i64,
    ) -> Store {
        Store {
            config,
            index,
            leases,
            watches: WatchHub::default(),
            current,
            compact,
            physical_compact: compact,
            pins: Vec::new(),
        }
    }
}

fn holds(result: CompareResult, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match result {
        CompareResult::Equal => ordering == Equal,
        CompareResult::NotEqual => ordering != Equal,
        CompareResult::Greater => ordering == Greater,
        CompareResult::Less => ordering == Less,
    }
}
