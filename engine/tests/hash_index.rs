//! The hash index (exact keys: point reads and the lookup of puts' previous versions)
//! must always agree with the B-tree (ranges): random sequences of bulk puts, deletes,
//! compactions (including the slab rebuild that renumbers every slot once most of the
//! slab is free) and snapshot round trips, checked after every step against the store's
//! invariants, and at the end key by key against a plain map.

use std::collections::BTreeMap;

use corekv_engine::*;
use proptest::prelude::*;

/// Distinct keys in play: enough that deleting most of them frees over 1024 slots, the
/// threshold of the slab rebuild.
const POOL_KEYS: usize = 3000;

/// The i-th key: short, exactly inline-sized and longer than inline keys in turn, some
/// sharing long prefixes, so that the B-tree's inline and heap keys are both covered.
fn pool_key(i: usize) -> Vec<u8> {
    match i % 3 {
        0 => format!("k{i}").into_bytes(),
        1 => format!("/registry/{i:012}").into_bytes(),
        _ => format!("/registry/services/endpoints/default/{i}").into_bytes(),
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Puts `count` keys from `start` (wrapping in the pool), values of `value_bytes`.
    Put {
        start: usize,
        count: usize,
        value_bytes: usize,
    },
    /// Deletes `count` keys from `start`, one delete request each.
    Delete { start: usize, count: usize },
    /// Deletes every key with the prefix "/registry/" in one request.
    DeletePrefix,
    /// Compacts at the current revision.
    Compact,
    /// Replaces the store by its snapshot's decoding.
    RoundTrip,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..POOL_KEYS, 1..POOL_KEYS, 0..40usize).prop_map(|(start, count, value_bytes)| {
            Op::Put { start, count, value_bytes }
        }),
        3 => (0..POOL_KEYS, 1..POOL_KEYS).prop_map(|(start, count)| Op::Delete { start, count }),
        1 => Just(Op::DeletePrefix),
        3 => Just(Op::Compact),
        2 => Just(Op::RoundTrip),
    ]
}

fn value(i: usize, revision: Revision, bytes: usize) -> Vec<u8> {
    let mut value = format!("{i}@{}:", revision.0).into_bytes();
    value.resize(value.len() + bytes, b'v');
    value
}

fn point_read(store: &Store, key: &[u8]) -> Option<KeyValue> {
    let request = RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    let mut response = store.range(&request).expect("point read");
    assert!(response.kvs.len() <= 1);
    response.kvs.pop()
}

/// The same key read through the B-tree: a range [key, key + "\0").
fn tree_read(store: &Store, key: &[u8]) -> Option<KeyValue> {
    let mut range_end = key.to_vec();
    range_end.push(0);
    let request = RangeRequest {
        key: key.to_vec(),
        range_end,
        ..Default::default()
    };
    let mut response = store.range(&request).expect("tree read");
    assert!(response.kvs.len() <= 1);
    response.kvs.pop()
}

fn run(ops: Vec<Op>) {
    let mut store = Store::default();
    // Live keys and their values.
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put {
                start,
                count,
                value_bytes,
            } => {
                for i in (start..start + count).map(|i| i % POOL_KEYS) {
                    let key = pool_key(i);
                    let value = value(i, store.revision().next(), value_bytes);
                    let request = PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    };
                    store.put(&request).expect("put");
                    model.insert(key, value);
                }
            }
            Op::Delete { start, count } => {
                for i in (start..start + count).map(|i| i % POOL_KEYS) {
                    let key = pool_key(i);
                    let request = DeleteRangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    };
                    let deleted = store.delete_range(&request).expect("delete").response;
                    let expected = i64::from(model.remove(&key).is_some());
                    assert_eq!(deleted.deleted, expected, "delete {key:?}");
                }
            }
            Op::DeletePrefix => {
                let request = DeleteRangeRequest {
                    key: b"/registry/".to_vec(),
                    range_end: b"/registry0".to_vec(),
                    ..Default::default()
                };
                store.delete_range(&request).expect("delete prefix");
                model.retain(|key, _| !key.starts_with(b"/registry/"));
            }
            Op::Compact => {
                let _ = store.compact(store.revision());
            }
            Op::RoundTrip => {
                let bytes = store.encode_snapshot();
                let restored = Store::decode_snapshot(&bytes, StoreConfig::default(), 0)
                    .expect("decode snapshot");
                assert_eq!(restored.hash_kv(Revision(0)), store.hash_kv(Revision(0)));
                store = restored;
            }
        }
        store.check_invariants();
    }
    for i in 0..POOL_KEYS {
        let key = pool_key(i);
        let by_hash = point_read(&store, &key);
        assert_eq!(by_hash, tree_read(&store, &key), "key {key:?}");
        assert_eq!(by_hash.map(|kv| kv.value), model.get(&key).cloned());
    }
    // Keys never written are absent through both.
    for key in [
        &b"k"[..],
        b"/registry/",
        b"zzzz",
        b"/registry/services/endpoints/",
    ] {
        assert_eq!(point_read(&store, key), None);
        assert_eq!(tree_read(&store, key), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Point reads (hash index) and B-tree reads agree with each other and with a plain
    /// map after any sequence of puts, deletes, compactions and snapshot round trips.
    #[test]
    fn hash_index_agrees_with_the_tree(ops in prop::collection::vec(op(), 1..16)) {
        run(ops);
    }
}

/// Deleting most keys and compacting rebuilds the slab (every slot moves) and the hash
/// index with it; every key is still found, and keys put afterwards too.
#[test]
fn slab_rebuild_keeps_the_hash_index_in_step() {
    run(vec![
        Op::Put {
            start: 0,
            count: POOL_KEYS,
            value_bytes: 8,
        },
        Op::Delete {
            start: 0,
            count: POOL_KEYS - 200,
        },
        Op::Compact,
        Op::Put {
            start: 100,
            count: 500,
            value_bytes: 3,
        },
        Op::RoundTrip,
        Op::Put {
            start: 0,
            count: 50,
            value_bytes: 0,
        },
    ]);
}
