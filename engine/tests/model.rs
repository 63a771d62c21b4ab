//! Model-based property tests: random sequences of puts, deletes, txns, ranges,
//! compactions and lease operations run against the engine and against a tiny model that
//! keeps a full copy of the keyspace after every revision. Every response, every error
//! and every revision must agree, and watchers must see exactly the model's event log.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use corekv_engine::*;
use proptest::prelude::*;

const KEYS: &[&[u8]] = &[b"a", b"b", b"ba", b"c", b"d"];
const LEASES: &[i64] = &[7, 8, 9];

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelKv {
    create: i64,
    modified: i64,
    version: i64,
    value: Vec<u8>,
    lease: i64,
}

#[derive(Clone, Debug)]
struct ModelEvent {
    revision: i64,
    key: Vec<u8>,
    put: Option<ModelKv>,
    prev: Option<ModelKv>,
}

/// The obviously-correct model: one full keyspace per revision.
#[derive(Clone, Debug)]
struct Model {
    states: BTreeMap<i64, BTreeMap<Vec<u8>, ModelKv>>,
    current: i64,
    compact: i64,
    leases: BTreeMap<i64, BTreeSet<Vec<u8>>>,
    events: Vec<ModelEvent>,
}

impl Model {
    fn new() -> Model {
        Model {
            states: BTreeMap::from([(1, BTreeMap::new())]),
            current: 1,
            compact: -1,
            leases: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn state(&self, revision: i64) -> &BTreeMap<Vec<u8>, ModelKv> {
        self.states
            .range(..=revision)
            .next_back()
            .expect("state exists")
            .1
    }

    fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
        match end {
            [] => key == start,
            [0] => key >= start,
            end => key >= start && key < end,
        }
    }

    fn kv(key: &[u8], m: &ModelKv) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: Revision(m.create),
            mod_revision: Revision(m.modified),
            version: m.version,
            value: m.value.clone(),
            lease: LeaseId(m.lease),
        }
    }

    fn check_revision(&self, revision: i64) -> Result<()> {
        if revision > self.current {
            return Err(Error::FutureRevision);
        }
        if revision > 0 && revision < self.compact {
            return Err(Error::Compacted);
        }
        Ok(())
    }

    fn range(&self, r: &RangeRequest, view: &BTreeMap<Vec<u8>, ModelKv>) -> RangeResponse {
        let state = if r.revision.0 > 0 {
            self.state(r.revision.0)
        } else {
            view
        };
        let mut kvs: Vec<KeyValue> = state
            .iter()
            .filter(|(k, _)| Self::in_range(k, &r.key, &r.range_end))
            .map(|(k, m)| Self::kv(k, m))
            .collect();
        let count = kvs.len() as i64;
        if r.count_only {
            return RangeResponse {
                kvs: Vec::new(),
                more: false,
                count,
            };
        }
        kvs.retain(|kv| {
            (r.min_mod_revision.0 == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_mod_revision.0 == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_create_revision.0 == 0 || kv.create_revision >= r.min_create_revision)
                && (r.max_create_revision.0 == 0 || kv.create_revision <= r.max_create_revision)
        });
        let order = if r.sort_order == SortOrder::None && r.sort_target != SortTarget::Key {
            SortOrder::Ascend
        } else {
            r.sort_order
        };
        if order != SortOrder::None {
            // Stable, so ties keep ascending key order in both directions (as etcd).
            kvs.sort_by(|a, b| {
                let (a, b) = if order == SortOrder::Descend {
                    (b, a)
                } else {
                    (a, b)
                };
                match r.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                }
            });
        }
        if r.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        let more = r.limit > 0 && kvs.len() > r.limit as usize;
        if r.limit > 0 {
            kvs.truncate(r.limit as usize);
        }
        RangeResponse { kvs, more, count }
    }

    fn compare(&self, c: &Compare) -> bool {
        let state = self.state(self.current);
        let found: Vec<&ModelKv> = state
            .iter()
            .filter(|(k, _)| Self::in_range(k, &c.key, &c.range_end))
            .map(|(_, m)| m)
            .collect();
        let zero = ModelKv {
            create: 0,
            modified: 0,
            version: 0,
            value: Vec::new(),
            lease: 0,
        };
        if found.is_empty() && matches!(c.target, CompareTarget::Value(_)) {
            return false;
        }
        let all = if found.is_empty() { vec![&zero] } else { found };
        all.iter().all(|m| {
            let ord = match &c.target {
                CompareTarget::Value(v) => m.value.cmp(v),
                CompareTarget::Version(v) => m.version.cmp(v),
                CompareTarget::Create(r) => m.create.cmp(&r.0),
                CompareTarget::Mod(r) => m.modified.cmp(&r.0),
                CompareTarget::Lease(l) => m.lease.cmp(&l.0),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        })
    }

    fn check_put(&self, p: &PutRequest) -> Result<()> {
        if p.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if p.ignore_value && !p.value.is_empty() {
            return Err(Error::ValueProvided);
        }
        if p.ignore_lease && p.lease.0 != 0 {
            return Err(Error::LeaseProvided);
        }
        if (p.ignore_value || p.ignore_lease) && !self.state(self.current).contains_key(&p.key) {
            return Err(Error::KeyNotFound);
        }
        if p.lease.0 != 0 && !self.leases.contains_key(&p.lease.0) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    /// Applies ops of one request to `next` (the state being built at revision `rev`).
    fn put(
        &mut self,
        next: &mut BTreeMap<Vec<u8>, ModelKv>,
        rev: i64,
        p: &PutRequest,
    ) -> PutResponse {
        let prev = next.get(&p.key).cloned();
        let value = if p.ignore_value {
            prev.as_ref().unwrap().value.clone()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            prev.as_ref().unwrap().lease
        } else {
            p.lease.0
        };
        let (create, version) = prev
            .as_ref()
            .map_or((rev, 1), |m| (m.create, m.version + 1));
        if let Some(m) = &prev {
            if let Some(keys) = self.leases.get_mut(&m.lease) {
                keys.remove(&p.key);
            }
        }
        if let Some(keys) = self.leases.get_mut(&lease) {
            keys.insert(p.key.clone());
        }
        let kv = ModelKv {
            create,
            modified: rev,
            version,
            value,
            lease,
        };
        next.insert(p.key.clone(), kv.clone());
        self.events.push(ModelEvent {
            revision: rev,
            key: p.key.clone(),
            put: Some(kv),
            prev: prev.clone(),
        });
        PutResponse {
            prev_kv: if p.prev_kv {
                prev.map(|m| Self::kv(&p.key, &m))
            } else {
                None
            },
        }
    }

    fn delete(
        &mut self,
        next: &mut BTreeMap<Vec<u8>, ModelKv>,
        rev: i64,
        d: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let doomed: Vec<(Vec<u8>, ModelKv)> = next
            .iter()
            .filter(|(k, _)| Self::in_range(k, &d.key, &d.range_end))
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        for (k, m) in &doomed {
            next.remove(k);
            if let Some(keys) = self.leases.get_mut(&m.lease) {
                keys.remove(k);
            }
            self.events.push(ModelEvent {
                revision: rev,
                key: k.clone(),
                put: None,
                prev: Some(m.clone()),
            });
        }
        DeleteRangeResponse {
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv {
                doomed.iter().map(|(k, m)| Self::kv(k, m)).collect()
            } else {
                Vec::new()
            },
        }
    }

    fn finish(&mut self, next: BTreeMap<Vec<u8>, ModelKv>, events_before: usize) -> Revision {
        if self.events.len() > events_before {
            self.current += 1;
            self.states.insert(self.current, next);
        }
        Revision(self.current)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest, i64),
    Txn(TxnRequest),
    Compact(i64),
    Grant(usize),
    Revoke(usize),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS).prop_map(|k| k.to_vec())
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), Just(vec![0]), key(), Just(b"c".to_vec())]
}

fn put() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        // Besides short values, one larger than the engine's first arena chunks and one
        // large enough for an arena chunk of its own.
        prop::sample::select(vec![
            b"".to_vec(),
            b"x".to_vec(),
            b"yy".to_vec(),
            vec![b'z'; 5000],
            vec![b'w'; 300_000],
        ]),
        0..5usize,
        any::<bool>(),
        0..6u8,
    )
        .prop_map(|(key, value, lease, prev_kv, flags)| {
            let lease = LeaseId(if lease < LEASES.len() {
                LEASES[lease]
            } else {
                0
            });
            let (ignore_value, ignore_lease) = match flags {
                0 => (true, false),
                1 => (false, true),
                _ => (false, false),
            };
            PutRequest {
                key,
                value: if ignore_value { Vec::new() } else { value },
                lease: if ignore_lease { LeaseId::NONE } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            }
        })
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range() -> impl Strategy<Value = (RangeRequest, i64)> {
    (
        key(),
        range_end(),
        0..4i64,
        0..6i64,
        any::<bool>(),
        any::<bool>(),
        0..3u8,
        0..5u8,
        0..3i64,
    )
        .prop_map(
            |(key, range_end, limit, back, keys_only, count_only, order, target, min_mod)| {
                let sort_order =
                    [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][order as usize];
                let sort_target = [
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][target as usize];
                (
                    RangeRequest {
                        key,
                        range_end,
                        limit,
                        keys_only,
                        count_only,
                        sort_order,
                        sort_target,
                        min_mod_revision: Revision(min_mod * 2),
                        ..Default::default()
                    },
                    back,
                )
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0..3i64).prop_map(CompareTarget::Version),
        (0..8i64).prop_map(|r| CompareTarget::Create(Revision(r))),
        (0..8i64).prop_map(|r| CompareTarget::Mod(Revision(r))),
        prop::sample::select(vec![b"".to_vec(), b"x".to_vec(), b"yy".to_vec()])
            .prop_map(CompareTarget::Value),
        prop::sample::select(vec![0i64, 7, 8]).prop_map(|l| CompareTarget::Lease(LeaseId(l))),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Less,
        CompareResult::Greater,
    ]);
    (
        key(),
        prop_oneof![3 => Just(Vec::new()), 1 => range_end()],
        target,
        result,
    )
        .prop_map(|(key, range_end, target, result)| Compare {
            result,
            target,
            key,
            range_end,
        })
}

fn request_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        put().prop_map(RequestOp::Put),
        delete().prop_map(RequestOp::DeleteRange),
        range().prop_map(|(r, _)| RequestOp::Range(r))
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => put().prop_map(Op::Put),
        2 => delete().prop_map(Op::Delete),
        4 => range().prop_map(|(r, back)| Op::Range(r, back)),
        3 => (prop::collection::vec(compare(), 0..3), prop::collection::vec(request_op(), 0..4), prop::collection::vec(request_op(), 0..3))
            .prop_map(|(compare, success, failure)| Op::Txn(TxnRequest { compare, success, failure })),
        1 => (0..8i64).prop_map(Op::Compact),
        1 => (0..LEASES.len()).prop_map(Op::Grant),
        1 => (0..LEASES.len()).prop_map(Op::Revoke),
    ]
}

/// Flat-txn duplicate rule: a key put twice, or put inside a deleted range, on one branch.
fn model_duplicate(ops: &[RequestOp]) -> bool {
    let puts: Vec<&Vec<u8>> = ops
        .iter()
        .filter_map(|o| {
            if let RequestOp::Put(p) = o {
                Some(&p.key)
            } else {
                None
            }
        })
        .collect();
    let dels: Vec<&DeleteRangeRequest> = ops
        .iter()
        .filter_map(|o| {
            if let RequestOp::DeleteRange(d) = o {
                Some(d)
            } else {
                None
            }
        })
        .collect();
    puts.iter().enumerate().any(|(i, k)| {
        puts[..i].contains(k)
            || dels
                .iter()
                .any(|d| Model::in_range(k, &d.key, &d.range_end))
    })
}

fn run(ops: Vec<Op>, watch_from: i64) {
    let mut store = Store::default();
    let mut model = Model::new();
    let watcher = store.watch_create(WatchRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        start_revision: Revision(0),
        prev_kv: true,
        ..Default::default()
    });
    let mut watched: Vec<Event> = Vec::new();
    for op in ops {
        match op {
            Op::Put(p) => {
                let want = model.check_put(&p).map(|()| {
                    let mut next = model.state(model.current).clone();
                    let before = model.events.len();
                    let response = model.put(&mut next, model.current + 1, &p);
                    Applied {
                        revision: model.finish(next, before),
                        response,
                    }
                });
                assert_eq!(store.put(&p), want, "put {p:?}");
            }
            Op::Delete(d) => {
                let mut next = model.state(model.current).clone();
                let before = model.events.len();
                let response = model.delete(&mut next, model.current + 1, &d);
                let want = Applied {
                    revision: model.finish(next, before),
                    response,
                };
                assert_eq!(store.delete_range(&d), Ok(want), "delete {d:?}");
            }
            Op::Range(mut r, back) => {
                r.revision = Revision(if back == 0 {
                    0
                } else {
                    model.current + 2 - back
                });
                let want = model
                    .check_revision(r.revision.0)
                    .map(|()| model.range(&r, model.state(model.current)));
                assert_eq!(store.range(&r), want, "range {r:?}");
            }
            Op::Txn(t) => {
                let want = if model_duplicate(&t.success) || model_duplicate(&t.failure) {
                    Err(Error::DuplicateKey)
                } else {
                    let succeeded = t.compare.iter().all(|c| model.compare(c));
                    let ops = if succeeded { &t.success } else { &t.failure };
                    let checked: Result<()> = ops.iter().try_for_each(|o| match o {
                        RequestOp::Put(p) => model.check_put(p),
                        RequestOp::Range(r) => model.check_revision(r.revision.0),
                        _ => Ok(()),
                    });
                    checked.map(|()| {
                        let mut next = model.state(model.current).clone();
                        let before = model.events.len();
                        let rev = model.current + 1;
                        let responses = ops
                            .iter()
                            .map(|o| match o {
                                RequestOp::Put(p) => ResponseOp::Put(model.put(&mut next, rev, p)),
                                RequestOp::DeleteRange(d) => {
                                    ResponseOp::DeleteRange(model.delete(&mut next, rev, d))
                                }
                                RequestOp::Range(r) => {
                                    ResponseOp::Range(model.range(r, &next.clone()))
                                }
                                RequestOp::Txn(_) => unreachable!("flat txns only"),
                            })
                            .collect();
                        Applied {
                            revision: model.finish(next, before),
                            response: TxnResponse {
                                succeeded,
                                responses,
                            },
                        }
                    })
                };
                assert_eq!(store.txn(&t), want, "txn {t:?}");
            }
            Op::Compact(back) => {
                let rev = model.current - back;
                let want = if rev <= model.compact {
                    Err(Error::Compacted)
                } else {
                    model.compact = rev;
                    Ok(Revision(model.current))
                };
                assert_eq!(store.compact(Revision(rev)), want, "compact {rev}");
            }
            Op::Grant(i) => {
                let id = LEASES[i];
                let want = match model.leases.entry(id) {
                    Entry::Occupied(_) => Err(Error::LeaseExists),
                    Entry::Vacant(slot) => {
                        slot.insert(BTreeSet::new());
                        Ok(LeaseGrant {
                            id: LeaseId(id),
                            ttl_seconds: 10,
                        })
                    }
                };
                assert_eq!(store.lease_grant(LeaseId(id), 10, 0), want);
            }
            Op::Revoke(i) => {
                let id = LEASES[i];
                let want = match model.leases.remove(&id) {
                    None => Err(Error::LeaseNotFound),
                    Some(keys) => {
                        let mut next = model.state(model.current).clone();
                        let before = model.events.len();
                        let rev = model.current + 1;
                        for k in keys {
                            model.delete(
                                &mut next,
                                rev,
                                &DeleteRangeRequest {
                                    key: k,
                                    ..Default::default()
                                },
                            );
                        }
                        Ok(model.finish(next, before))
                    }
                };
                assert_eq!(store.lease_revoke(LeaseId(id)), want);
            }
        }
        store.check_invariants();
        // Drain the live watcher a little at a time, as a slow client would.
        if let Some(WatchPoll::Events(events)) = store.watch_poll(watcher, 3) {
            watched.extend(events);
        }
    }
    // Leases agree.
    let leases: Vec<LeaseId> = model.leases.keys().map(|id| LeaseId(*id)).collect();
    assert_eq!(store.lease_ids(), leases);
    for (id, keys) in &model.leases {
        let ttl = store.lease_time_to_live(LeaseId(*id), 0, true).unwrap();
        assert_eq!(ttl.keys, keys.iter().cloned().collect::<Vec<_>>());
    }
    // The live watcher saw exactly the model's event log.
    loop {
        match store.watch_poll(watcher, 3) {
            Some(WatchPoll::Events(events)) if events.is_empty() => break,
            Some(WatchPoll::Events(events)) => watched.extend(events),
            other => panic!("live watcher ended: {other:?}"),
        }
    }
    let expected: Vec<Event> = model.events.iter().map(to_event).collect();
    assert_eq!(watched, expected, "live watch stream");
    // A watcher from the past replays history, or is cancelled by compaction.
    let from = watch_from.clamp(1, model.current + 1);
    let past = store.watch_create(WatchRequest {
        key: b"b".to_vec(),
        range_end: b"d".to_vec(),
        start_revision: Revision(from),
        prev_kv: false,
        no_delete: watch_from % 2 == 0,
        ..Default::default()
    });
    let mut replay = Vec::new();
    loop {
        match store.watch_poll(past, 2) {
            Some(WatchPoll::Events(events)) if events.is_empty() => break,
            Some(WatchPoll::Events(events)) => replay.extend(events),
            Some(WatchPoll::Compacted { compact_revision }) => {
                assert!(
                    from < model.compact,
                    "cancelled at {from} above compact {}",
                    model.compact
                );
                assert_eq!(compact_revision, Revision(model.compact));
                return;
            }
            None => panic!("watcher vanished"),
        }
    }
    assert!(
        from >= model.compact,
        "watch from {from} below compact {} was not cancelled",
        model.compact
    );
    let expected: Vec<Event> = model
        .events
        .iter()
        .filter(|e| {
            e.revision >= from
                && Model::in_range(&e.key, b"b", b"d")
                && !(watch_from % 2 == 0 && e.put.is_none())
        })
        .map(|e| Event {
            prev_kv: None,
            ..to_event(e)
        })
        .collect();
    assert_eq!(replay, expected, "replay from {from}");
    // Snapshot round trip: identical bytes, identical hash.
    let bytes = store.encode_snapshot();
    let mut restored = Store::decode_snapshot(&bytes, StoreConfig::default(), 0).unwrap();
    assert_eq!(restored.encode_snapshot(), bytes);
    assert_eq!(restored.hash_kv(Revision(0)), store.hash_kv(Revision(0)));
}

fn to_event(e: &ModelEvent) -> Event {
    match &e.put {
        Some(kv) => Event {
            kind: EventKind::Put,
            kv: Model::kv(&e.key, kv),
            prev_kv: e.prev.as_ref().map(|p| Model::kv(&e.key, p)),
        },
        None => Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: e.key.clone(),
                mod_revision: Revision(e.revision),
                ..Default::default()
            },
            prev_kv: e.prev.as_ref().map(|p| Model::kv(&e.key, p)),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The engine and the model agree on every response, error, revision and event.
    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op(), 1..60), watch_from in 0..40i64) {
        run(ops, watch_from);
    }
}
