//! Focused tests of etcd's semantics, one behaviour each: revisions, every request
//! option, every error with its gRPC code and message, leases, watches, compaction,
//! hashing and snapshots.

use corekv_engine::*;

fn put(store: &mut Store, key: &str, value: &str) -> Revision {
    store
        .put(&PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .unwrap()
        .revision
}

fn get(store: &Store, key: &str) -> Option<KeyValue> {
    store
        .range(&RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .unwrap()
        .kvs
        .pop()
}

fn range(key: &str, end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: end.to_vec(),
        ..Default::default()
    }
}

fn keys(response: &RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn put_op(key: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn delete_op(key: &str, end: &[u8]) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: end.to_vec(),
        prev_kv: false,
    })
}

fn drain(store: &mut Store, watcher: WatcherId) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match store.watch_poll(watcher, 1000) {
            Some(WatchPoll::Events(batch)) if batch.is_empty() => return events,
            Some(WatchPoll::Events(batch)) => events.extend(batch),
            other => panic!("unexpected poll {other:?}"),
        }
    }
}

#[test]
fn errors_carry_etcds_codes_and_messages() {
    // Clients match on these strings byte for byte.
    let cases = [
        (
            Error::EmptyKey,
            GrpcCode::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            Error::KeyNotFound,
            GrpcCode::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            Error::ValueProvided,
            GrpcCode::InvalidArgument,
            "etcdserver: value is provided",
        ),
        (
            Error::LeaseProvided,
            GrpcCode::InvalidArgument,
            "etcdserver: lease is provided",
        ),
        (
            Error::TooManyOps,
            GrpcCode::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        (
            Error::DuplicateKey,
            GrpcCode::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        (
            Error::Compacted,
            GrpcCode::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            Error::FutureRevision,
            GrpcCode::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            Error::LeaseNotFound,
            GrpcCode::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            Error::LeaseExists,
            GrpcCode::FailedPrecondition,
            "etcdserver: lease already exists",
        ),
        (
            Error::LeaseTtlTooLarge,
            GrpcCode::OutOfRange,
            "etcdserver: too large lease TTL",
        ),
    ];
    for (error, code, message) in cases {
        assert_eq!(error.grpc_code(), code, "{error:?}");
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn revisions_versions_and_generations() {
    // A new store is at revision 1; each changing write adds one; a delete ends the
    // generation and re-creating starts at version 1 with a new create revision.
    let mut store = Store::default();
    assert_eq!(store.revision(), Revision(1));
    assert_eq!(put(&mut store, "k", "a"), Revision(2));
    assert_eq!(put(&mut store, "k", "b"), Revision(3));
    let kv = get(&store, "k").unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (Revision(2), Revision(3), 2)
    );
    let deleted = store
        .delete_range(&DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (deleted.revision, deleted.response.deleted),
        (Revision(4), 1)
    );
    // Deleting nothing does not bump the revision.
    let nothing = store
        .delete_range(&DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (nothing.revision, nothing.response.deleted),
        (Revision(4), 0)
    );
    assert_eq!(put(&mut store, "k", "c"), Revision(5));
    let kv = get(&store, "k").unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (Revision(5), Revision(5), 1)
    );
    // Old revisions stay readable.
    let old = store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            revision: Revision(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b"a");
    let gone = store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            revision: Revision(4),
            ..Default::default()
        })
        .unwrap();
    assert!(gone.kvs.is_empty());
}

#[test]
fn put_options_and_their_errors() {
    // prev_kv, ignore_value, ignore_lease and lease attach, with etcd's refusals.
    let mut store = Store::default();
    let bad = |store: &mut Store, request: PutRequest| store.put(&request).unwrap_err();
    assert_eq!(bad(&mut store, PutRequest::default()), Error::EmptyKey);
    assert_eq!(
        bad(
            &mut store,
            PutRequest {
                key: b"k".to_vec(),
                ignore_value: true,
                ..Default::default()
            }
        ),
        Error::KeyNotFound
    );
    assert_eq!(
        bad(
            &mut store,
            PutRequest {
                key: b"k".to_vec(),
                ignore_lease: true,
                ..Default::default()
            }
        ),
        Error::KeyNotFound
    );
    assert_eq!(
        bad(
            &mut store,
            PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ignore_value: true,
                ..Default::default()
            }
        ),
        Error::ValueProvided
    );
    assert_eq!(
        bad(
            &mut store,
            PutRequest {
                key: b"k".to_vec(),
                lease: LeaseId(5),
                ignore_lease: true,
                ..Default::default()
            }
        ),
        Error::LeaseProvided
    );
    assert_eq!(
        bad(
            &mut store,
            PutRequest {
                key: b"k".to_vec(),
                lease: LeaseId(5),
                ..Default::default()
            }
        ),
        Error::LeaseNotFound
    );
    assert_eq!(store.revision(), Revision(1), "refused puts change nothing");

    store.lease_grant(LeaseId(5), 60, 0).unwrap();
    store
        .put(&PutRequest {
            key: b"k".to_vec(),
            value: b"v1".to_vec(),
            lease: LeaseId(5),
            ..Default::default()
        })
        .unwrap();
    let kept = store
        .put(&PutRequest {
            key: b"k".to_vec(),
            ignore_value: true,
            ignore_lease: true,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(kept.response.prev_kv.unwrap().value, b"v1");
    let kv = get(&store, "k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v1"[..], LeaseId(5), 2)
    );
    // A put without a lease detaches the key from its lease.
    put(&mut store, "k", "v2");
    assert!(store
        .lease_time_to_live(LeaseId(5), 0, true)
        .unwrap()
        .keys
        .is_empty());
    assert_eq!(get(&store, "k").unwrap().lease, LeaseId::NONE);
}

#[test]
fn range_options() {
    // Single key, [key, end), "\0" end, limit and more, count, keys_only, count_only,
    // sorting, and revision filters.
    let mut store = Store::default();
    for (key, value) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "0")] {
        put(&mut store, key, value);
    }
    put(&mut store, "b", "9");
    assert_eq!(keys(&store.range(&range("b", b"")).unwrap()), ["b"]);
    assert_eq!(keys(&store.range(&range("b", b"d")).unwrap()), ["b", "c"]);
    assert_eq!(
        keys(&store.range(&range("b", b"\0")).unwrap()),
        ["b", "c", "d"]
    );
    assert_eq!(
        keys(&store.range(&range("\0", b"\0")).unwrap()),
        ["a", "b", "c", "d"]
    );
    assert!(
        store.range(&range("c", b"b")).unwrap().kvs.is_empty(),
        "end before start is empty"
    );

    let limited = store
        .range(&RangeRequest {
            limit: 2,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&limited), limited.more, limited.count),
        (vec!["a".to_string(), "b".to_string()], true, 4)
    );
    let exact = store
        .range(&RangeRequest {
            limit: 4,
            ..range("a", b"\0")
        })
        .unwrap();
    assert!(!exact.more);

    let only_keys = store
        .range(&RangeRequest {
            keys_only: true,
            ..range("a", b"\0")
        })
        .unwrap();
    assert!(only_keys.kvs.iter().all(|kv| kv.value.is_empty()));
    let counted = store
        .range(&RangeRequest {
            count_only: true,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!((counted.kvs.len(), counted.count), (0, 4));

    let by_value = store
        .range(&RangeRequest {
            sort_target: SortTarget::Value,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        keys(&by_value),
        ["d", "c", "a", "b"],
        "a non-key target sorts ascending by default"
    );
    let by_key_desc = store
        .range(&RangeRequest {
            sort_order: SortOrder::Descend,
            limit: 3,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&by_key_desc), by_key_desc.more),
        (
            vec!["d".to_string(), "c".to_string(), "b".to_string()],
            true
        )
    );
    let by_mod_desc = store
        .range(&RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Mod,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&by_mod_desc), ["b", "d", "c", "a"]);
    let by_version = store
        .range(&RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Version,
            limit: 1,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&by_version), ["b"]);

    let modded = store
        .range(&RangeRequest {
            min_mod_revision: Revision(4),
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&modded), modded.count),
        (vec!["b".to_string(), "c".to_string(), "d".to_string()], 4)
    );
    let created = store
        .range(&RangeRequest {
            max_create_revision: Revision(3),
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&created), ["a", "b"]);
    let created_after = store
        .range(&RangeRequest {
            min_create_revision: Revision(4),
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&created_after), ["c", "d"]);
    let mod_before = store
        .range(&RangeRequest {
            max_mod_revision: Revision(4),
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&mod_before), ["a", "c"]);

    assert_eq!(store.range(&range("", b"")).unwrap_err(), Error::EmptyKey);
    assert_eq!(
        store
            .range(&RangeRequest {
                revision: Revision(7),
                ..range("a", b"")
            })
            .unwrap_err(),
        Error::FutureRevision
    );
}

#[test]
fn delete_range_reports_deleted_and_prev_kvs() {
    // A delete-range deletes every live key in the range in one revision.
    let mut store = Store::default();
    for key in ["a", "b", "c"] {
        put(&mut store, key, key);
    }
    let deleted = store
        .delete_range(&DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: true,
        })
        .unwrap();
    assert_eq!(deleted.revision, Revision(5));
    assert_eq!(deleted.response.deleted, 2);
    assert_eq!(
        deleted
            .response
            .prev_kvs
            .iter()
            .map(|kv| kv.value.clone())
            .collect::<Vec<_>>(),
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(keys(&store.range(&range("a", b"\0")).unwrap()), ["c"]);
    assert_eq!(
        store
            .delete_range(&DeleteRangeRequest::default())
            .unwrap_err(),
        Error::EmptyKey
    );
}

#[test]
fn txn_is_one_revision_with_sub_revisions_and_sees_its_own_writes() {
    // Every write of a txn shares one main revision; later ops read earlier ones.
    let mut store = Store::default();
    put(&mut store, "x", "0");
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(b"0".to_vec()),
            key: b"x".to_vec(),
            range_end: vec![],
        }],
        success: vec![
            put_op("a"),
            put_op("b"),
            RequestOp::Range(range("a", b"c")),
            delete_op("x", b""),
        ],
        failure: vec![],
    };
    let applied = store.txn(&txn).unwrap();
    assert_eq!(applied.revision, Revision(3));
    assert!(applied.response.succeeded);
    let ResponseOp::Range(read) = &applied.response.responses[2] else {
        panic!("range response")
    };
    assert_eq!(keys(read), ["a", "b"]);
    assert_eq!(get(&store, "a").unwrap().mod_revision, Revision(3));
    assert_eq!(get(&store, "b").unwrap().mod_revision, Revision(3));
    assert!(get(&store, "x").is_none());
    // A read-only txn does not bump the revision.
    let read_only = store
        .txn(&TxnRequest {
            success: vec![RequestOp::Range(range("a", b""))],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(read_only.revision, Revision(3));
}

#[test]
fn txn_compares_every_target_and_over_ranges() {
    // VALUE, VERSION, CREATE, MOD, LEASE with =, !=, <, >, over a key and a range; a
    // missing key compares as all zeros except VALUE, which always fails.
    let mut store = Store::default();
    put(&mut store, "a", "1");
    put(&mut store, "b", "2");
    let holds =
        |store: &mut Store, target: CompareTarget, result: CompareResult, key: &str, end: &[u8]| {
            let txn = TxnRequest {
                compare: vec![Compare {
                    result,
                    target,
                    key: key.into(),
                    range_end: end.to_vec(),
                }],
                ..Default::default()
            };
            store.txn(&txn).unwrap().response.succeeded
        };
    use CompareResult::*;
    assert!(holds(
        &mut store,
        CompareTarget::Value(b"1".to_vec()),
        Equal,
        "a",
        b""
    ));
    assert!(holds(
        &mut store,
        CompareTarget::Value(b"0".to_vec()),
        Greater,
        "a",
        b""
    ));
    assert!(holds(
        &mut store,
        CompareTarget::Version(1),
        Equal,
        "a",
        b""
    ));
    assert!(holds(
        &mut store,
        CompareTarget::Create(Revision(3)),
        Less,
        "a",
        b""
    ));
    assert!(holds(
        &mut store,
        CompareTarget::Mod(Revision(2)),
        NotEqual,
        "b",
        b""
    ));
    assert!(holds(
        &mut store,
        CompareTarget::Lease(LeaseId(0)),
        Equal,
        "a",
        b""
    ));
    assert!(
        holds(&mut store, CompareTarget::Version(0), Greater, "a", b"c"),
        "every key in the range"
    );
    assert!(
        !holds(&mut store, CompareTarget::Mod(Revision(3)), Less, "a", b"c"),
        "b fails"
    );
    assert!(
        holds(&mut store, CompareTarget::Version(0), Equal, "zz", b""),
        "missing key has version 0"
    );
    assert!(holds(
        &mut store,
        CompareTarget::Create(Revision(0)),
        Equal,
        "zz",
        b""
    ));
    assert!(
        !holds(
            &mut store,
            CompareTarget::Value(Vec::new()),
            Equal,
            "zz",
            b""
        ),
        "value compare on a missing key fails"
    );
    assert!(!holds(
        &mut store,
        CompareTarget::Value(Vec::new()),
        NotEqual,
        "zz",
        b""
    ));
}

#[test]
fn nested_txns_choose_paths_against_the_state_before_the_txn() {
    // A nested txn's compares see the state before the outer txn wrote anything.
    let mut store = Store::default();
    let inner = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: b"a".to_vec(),
            range_end: vec![],
        }],
        success: vec![put_op("inner-saw-no-a")],
        failure: vec![put_op("inner-saw-a")],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![put_op("a"), RequestOp::Txn(inner)],
        failure: vec![],
    };
    let applied = store.txn(&outer).unwrap();
    assert_eq!(applied.revision, Revision(2));
    let ResponseOp::Txn(nested) = &applied.response.responses[1] else {
        panic!("nested response")
    };
    assert!(nested.succeeded);
    assert!(get(&store, "inner-saw-no-a").is_some());
}

#[test]
fn txn_duplicate_keys_are_refused_as_etcd_does() {
    // Two puts of one key, or a put inside a deleted range, on one path; puts in the two
    // branches of one nested txn are fine; deletes may overlap.
    let mut store = Store::default();
    let txn = |success: Vec<RequestOp>| TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    };
    let nested = |then: Vec<RequestOp>, otherwise: Vec<RequestOp>| {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: then,
            failure: otherwise,
        })
    };
    for bad in [
        txn(vec![put_op("a"), put_op("a")]),
        txn(vec![delete_op("a", b"c"), put_op("b")]),
        txn(vec![put_op("b"), delete_op("a", b"\0")]),
        txn(vec![put_op("a"), nested(vec![put_op("a")], vec![])]),
        txn(vec![delete_op("a", b""), nested(vec![], vec![put_op("a")])]),
        txn(vec![nested(vec![delete_op("a", b"")], vec![]), put_op("a")]),
    ] {
        assert_eq!(store.txn(&bad).unwrap_err(), Error::DuplicateKey, "{bad:?}");
    }
    for good in [
        txn(vec![nested(vec![put_op("a")], vec![put_op("a")])]),
        txn(vec![delete_op("a", b"c"), delete_op("b", b"")]),
        txn(vec![put_op("a"), put_op("b")]),
    ] {
        store.txn(&good).unwrap();
    }
    // The failure branch is checked too, whichever branch would run.
    let bad_failure = TxnRequest {
        compare: vec![],
        success: vec![],
        failure: vec![put_op("q"), put_op("q")],
    };
    assert_eq!(store.txn(&bad_failure).unwrap_err(), Error::DuplicateKey);
}

#[test]
fn txn_op_count_limit_and_atomic_errors() {
    // At most max-txn-ops in each list; an error anywhere on the path writes nothing.
    let mut store = Store::default();
    let many = |n: usize| TxnRequest {
        compare: vec![],
        success: (0..n).map(|i| put_op(&format!("k{i:03}"))).collect(),
        failure: vec![],
    };
    assert_eq!(
        store.txn(&many(TXN_OPS_MAX_DEFAULT + 1)).unwrap_err(),
        Error::TooManyOps
    );
    assert_eq!(store.revision(), Revision(1));
    assert_eq!(
        store.txn(&many(TXN_OPS_MAX_DEFAULT)).unwrap().revision,
        Revision(2)
    );
    let compares = vec![
        Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: b"zz".to_vec(),
            range_end: vec![]
        };
        TXN_OPS_MAX_DEFAULT + 1
    ];
    assert_eq!(
        store
            .txn(&TxnRequest {
                compare: compares,
                ..Default::default()
            })
            .unwrap_err(),
        Error::TooManyOps
    );
    let empty_compare = Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Version(0),
        key: vec![],
        range_end: vec![],
    };
    assert_eq!(
        store
            .txn(&TxnRequest {
                compare: vec![empty_compare],
                ..Default::default()
            })
            .unwrap_err(),
        Error::EmptyKey
    );

    let unknown_lease = RequestOp::Put(PutRequest {
        key: b"z".to_vec(),
        lease: LeaseId(42),
        ..Default::default()
    });
    let atomic = TxnRequest {
        compare: vec![],
        success: vec![put_op("y"), unknown_lease],
        failure: vec![],
    };
    assert_eq!(store.txn(&atomic).unwrap_err(), Error::LeaseNotFound);
    assert!(
        get(&store, "y").is_none(),
        "nothing of a failed txn is applied"
    );
    let future_read = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("y"),
            RequestOp::Range(RangeRequest {
                revision: Revision(99),
                ..range("y", b"")
            }),
        ],
        failure: vec![],
    };
    assert_eq!(store.txn(&future_read).unwrap_err(), Error::FutureRevision);
    assert_eq!(store.revision(), Revision(2));
}

#[test]
fn compaction_removes_history_and_frees_memory() {
    // Reads below the compact revision fail, at or above it succeed; keys whose last
    // version before it was a delete disappear from the index entirely.
    let mut store = Store::default();
    for i in 0..100 {
        put(&mut store, &format!("k{i:02}"), "v");
    }
    for i in 0..50 {
        store
            .delete_range(&DeleteRangeRequest {
                key: format!("k{i:02}").into_bytes(),
                ..Default::default()
            })
            .unwrap();
    }
    put(&mut store, "k99", "v2");
    let at = store.revision();
    assert_eq!(store.key_count(), 100);
    store.compact(at).unwrap();
    assert_eq!(store.key_count(), 50, "deleted keys are freed");
    assert_eq!(store.compact(at).unwrap_err(), Error::Compacted);
    assert_eq!(
        store.compact(Revision(at.0 - 1)).unwrap_err(),
        Error::Compacted
    );
    assert_eq!(
        store.compact(Revision(at.0 + 1)).unwrap_err(),
        Error::FutureRevision
    );
    let below = RangeRequest {
        revision: Revision(at.0 - 1),
        ..range("k99", b"")
    };
    assert_eq!(store.range(&below).unwrap_err(), Error::Compacted);
    let exactly = RangeRequest {
        revision: at,
        ..range("k", b"\0")
    };
    assert_eq!(store.range(&exactly).unwrap().count, 50);
    assert_eq!(
        get(&store, "k99").unwrap().version,
        2,
        "versions survive compaction"
    );
    assert_eq!(
        store.hash_kv(Revision(at.0 - 1)).unwrap_err(),
        Error::Compacted
    );
    store.check_invariants();
}

#[test]
fn compaction_keeps_a_delete_at_exactly_the_compact_revision_for_watchers() {
    // A watcher starting at the compact revision still sees a delete made at it.
    let mut store = Store::default();
    put(&mut store, "k", "v");
    let deleted = store
        .delete_range(&DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .unwrap()
        .revision;
    store.compact(deleted).unwrap();
    let watcher = store.watch_create(WatchRequest {
        key: b"k".to_vec(),
        start_revision: deleted,
        ..Default::default()
    });
    let events = drain(&mut store, watcher);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].kv.mod_revision),
        (EventKind::Delete, deleted)
    );
    // The next compaction frees it.
    put(&mut store, "other", "v");
    store.compact(store.revision()).unwrap();
    assert_eq!(store.key_count(), 1);
}

#[test]
fn pinned_snapshot_defers_freeing_but_not_the_outcome() {
    // While a snapshot pins history, compaction is logical only; hashes and snapshot
    // bytes equal those of a store that compacted at once.
    let mut pinned = Store::default();
    let mut plain = Store::default();
    for store in [&mut pinned, &mut plain] {
        for i in 0..10 {
            put(store, "k", &i.to_string());
        }
    }
    let pin = pinned.pin();
    for store in [&mut pinned, &mut plain] {
        put(store, "j", "x");
        store.compact(Revision(9)).unwrap();
    }
    assert_eq!(pinned.hash_kv(Revision(0)), plain.hash_kv(Revision(0)));
    assert_eq!(pinned.encode_snapshot(), plain.encode_snapshot());
    let old = RangeRequest {
        revision: Revision(8),
        ..range("k", b"")
    };
    assert_eq!(pinned.range(&old).unwrap_err(), Error::Compacted);
    pinned.unpin(pin);
    assert_eq!(pinned.encode_snapshot(), plain.encode_snapshot());
}

#[test]
fn leases_grant_revoke_ttl_and_expiry() {
    // Grant rules (minimum TTL, too large, duplicate, chosen ids), revoke deleting keys
    // in one revision, time-to-live with keys, expiry by caller time.
    let mut store = Store::default();
    assert_eq!(
        store.lease_grant(LeaseId(1), 1, 0).unwrap().ttl_seconds,
        LEASE_TTL_SECONDS_MIN_DEFAULT
    );
    assert_eq!(
        store.lease_grant(LeaseId(1), 10, 0).unwrap_err(),
        Error::LeaseExists
    );
    assert_eq!(
        store
            .lease_grant(LeaseId(2), LEASE_TTL_SECONDS_MAX + 1, 0)
            .unwrap_err(),
        Error::LeaseTtlTooLarge
    );
    let chosen = store.lease_grant(LeaseId::NONE, 30, 0).unwrap();
    assert!(chosen.id.0 > 0);
    assert_ne!(
        store.lease_grant(LeaseId::NONE, 30, 0).unwrap().id,
        chosen.id
    );
    // Ids chosen by the store are the same on every node.
    let mut other = Store::default();
    other.lease_grant(LeaseId(1), 1, 0).unwrap();
    assert_eq!(
        other.lease_grant(LeaseId::NONE, 30, 0).unwrap().id,
        chosen.id
    );

    for key in ["b", "a"] {
        store
            .put(&PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                lease: chosen.id,
                ..Default::default()
            })
            .unwrap();
    }
    let ttl = store.lease_time_to_live(chosen.id, 10_500, true).unwrap();
    assert_eq!((ttl.ttl_seconds, ttl.granted_ttl_seconds), (19, 30));
    assert_eq!(ttl.keys, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(store.lease_ids().len(), 3);
    // The lease list is ordered by expiry, soonest first (the 2 s minimum TTL of lease 1).
    let by_expiry = store.lease_ids_by_expiry();
    assert_eq!(by_expiry[0], LeaseId(1));
    let mut sorted = by_expiry.clone();
    sorted.sort();
    assert_eq!(sorted, store.lease_ids());

    assert!(store.lease_expired(1_999, 10).is_empty());
    assert_eq!(
        store.lease_expired(2_000, 10),
        [LeaseId(1)],
        "the 2 s minimum TTL"
    );
    assert!(!store.lease_expired(29_999, 10).contains(&chosen.id));
    assert!(store.lease_expired(30_000, 10).contains(&chosen.id));
    assert_eq!(
        store.lease_expired(30_000, 1),
        [LeaseId(1)],
        "earliest first, limited"
    );
    assert_eq!(store.lease_renew(chosen.id, 20_000).unwrap(), 30);
    assert!(
        !store.lease_expired(30_000, 10).contains(&chosen.id),
        "renewed"
    );

    let watcher = store.watch_create(WatchRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        ..Default::default()
    });
    let before = store.revision();
    assert_eq!(store.lease_revoke(chosen.id).unwrap(), before.next());
    let events = drain(&mut store, watcher);
    assert_eq!(
        events
            .iter()
            .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
            .collect::<Vec<_>>(),
        [
            (EventKind::Delete, b"a".to_vec(), before.next()),
            (EventKind::Delete, b"b".to_vec(), before.next())
        ]
    );
    assert_eq!(
        store.lease_revoke(chosen.id).unwrap_err(),
        Error::LeaseNotFound
    );
    assert_eq!(
        store.lease_time_to_live(chosen.id, 0, false).unwrap_err(),
        Error::LeaseNotFound
    );
    assert_eq!(
        store.lease_renew(chosen.id, 0).unwrap_err(),
        Error::LeaseNotFound
    );
    // Revoking a lease without keys writes nothing.
    assert_eq!(store.lease_revoke(LeaseId(1)).unwrap(), before.next());
}

#[test]
fn leader_change_never_expires_leases_early() {
    // A follower tracks no deadlines; a new leader restarts each at a full TTL plus an
    // extension from the moment it took over.
    let mut store = Store::default();
    store.lease_grant(LeaseId(7), 10, 0).unwrap();
    store.lease_demote();
    assert!(store.lease_expired(u64::MAX, 10).is_empty());
    assert_eq!(
        store
            .lease_time_to_live(LeaseId(7), 50_000, false)
            .unwrap()
            .ttl_seconds,
        10
    );
    store.lease_promote(100_000, 1_000);
    assert!(store.lease_expired(110_999, 10).is_empty());
    assert_eq!(store.lease_expired(111_000, 10), [LeaseId(7)]);
}

#[test]
fn watch_filters_prev_kv_future_start_and_cancel() {
    // NOPUT/NODELETE, prev_kv, a start revision in the future, and cancellation.
    let mut store = Store::default();
    let no_put = store.watch_create(WatchRequest {
        key: b"k".to_vec(),
        no_put: true,
        prev_kv: true,
        ..Default::default()
    });
    let no_delete = store.watch_create(WatchRequest {
        key: b"k".to_vec(),
        no_delete: true,
        ..Default::default()
    });
    let future = store.watch_create(WatchRequest {
        key: b"k".to_vec(),
        start_revision: Revision(4),
        ..Default::default()
    });
    put(&mut store, "k", "1");
    put(&mut store, "k", "2");
    store
        .delete_range(&DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .unwrap();
    let deletes = drain(&mut store, no_put);
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].prev_kv.as_ref().unwrap().value, b"2");
    let puts = drain(&mut store, no_delete);
    assert_eq!(
        puts.iter().map(|e| e.kv.value.clone()).collect::<Vec<_>>(),
        [b"1".to_vec(), b"2".to_vec()]
    );
    assert!(
        puts.iter().all(|e| e.prev_kv.is_none()),
        "prev_kv only when asked"
    );
    let from_four = drain(&mut store, future);
    assert_eq!(
        from_four
            .iter()
            .map(|e| e.kv.mod_revision)
            .collect::<Vec<_>>(),
        [Revision(4)]
    );
    assert!(store.watch_cancel(future));
    assert!(!store.watch_cancel(future));
    assert_eq!(store.watch_poll(future, 10), None);
    assert_eq!(store.watch_count(), 2);
}

#[test]
fn slow_watcher_falls_back_to_catch_up_and_misses_nothing() {
    // A watcher that never polls overflows its buffer, catches up from history later,
    // and still sees every event exactly once, in order, with whole revisions.
    let mut store = Store::default();
    let watcher = store.watch_create(WatchRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        ..Default::default()
    });
    let total = WATCH_BUFFER_EVENTS_MAX * 3;
    for i in 0..total / 2 {
        let txn = TxnRequest {
            compare: vec![],
            success: vec![put_op(&format!("k{i:05}a")), put_op(&format!("k{i:05}b"))],
            failure: vec![],
        };
        store.txn(&txn).unwrap();
    }
    assert_eq!(store.watch_is_synced(watcher), Some(false), "overflowed");
    let mut seen = Vec::new();
    loop {
        match store.watch_poll(watcher, 7).unwrap() {
            WatchPoll::Events(batch) if batch.is_empty() => break,
            WatchPoll::Events(batch) => {
                assert_eq!(batch.len() % 2, 0, "a revision is never split across polls");
                seen.extend(batch);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen.len(), total);
    for (i, event) in seen.iter().enumerate() {
        assert_eq!(event.kv.mod_revision, Revision(2 + (i / 2) as i64));
    }
    assert_eq!(store.watch_is_synced(watcher), Some(true));
    put(&mut store, "k-live", "v");
    assert_eq!(drain(&mut store, watcher).len(), 1, "live again");
}

#[test]
fn watch_below_the_compact_revision_is_cancelled_with_it() {
    // Starting before the compact revision, or falling behind it, cancels the watcher
    // with the compact revision, as etcd does.
    let mut store = Store::default();
    for i in 0..5 {
        put(&mut store, "k", &i.to_string());
    }
    store.compact(Revision(4)).unwrap();
    let old = store.watch_create(WatchRequest {
        key: b"k".to_vec(),
        start_revision: Revision(3),
        ..Default::default()
    });
    assert!(store.watch_ready().contains(&old));
    assert_eq!(
        store.watch_poll(old, 10),
        Some(WatchPoll::Compacted {
            compact_revision: Revision(4)
        })
    );
    assert_eq!(store.watch_poll(old, 10), None, "cancelled");
    let at_compact = store.watch_create(WatchRequest {
        key: b"k".to_vec(),
        start_revision: Revision(4),
        ..Default::default()
    });
    assert_eq!(drain(&mut store, at_compact).len(), 3);
}

#[test]
fn hash_is_a_function_of_the_data() {
    // Same requests, same hash; different data, different hash; hashing at an old
    // revision ignores later writes.
    let mut a = Store::default();
    let mut b = Store::default();
    for store in [&mut a, &mut b] {
        put(store, "x", "1");
        put(store, "y", "2");
    }
    assert_eq!(a.hash_kv(Revision(0)), b.hash_kv(Revision(0)));
    let at = a.revision();
    put(&mut a, "x", "3");
    assert_ne!(
        a.hash_kv(Revision(0)).unwrap().hash,
        b.hash_kv(Revision(0)).unwrap().hash
    );
    assert_eq!(a.hash_kv(at).unwrap().hash, b.hash_kv(at).unwrap().hash);
    assert_eq!(a.hash_kv(Revision(99)).unwrap_err(), Error::FutureRevision);
}

#[test]
fn snapshot_round_trip_and_corruption() {
    // A snapshot decodes to a store with identical state, bytes and behaviour; corrupt
    // bytes are refused with a clear error, never a panic.
    let mut store = Store::default();
    store.lease_grant(LeaseId(9), 60, 0).unwrap();
    for i in 0..50 {
        store
            .put(&PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![i as u8; i],
                lease: if i % 3 == 0 {
                    LeaseId(9)
                } else {
                    LeaseId::NONE
                },
                ..Default::default()
            })
            .unwrap();
    }
    store
        .delete_range(&DeleteRangeRequest {
            key: b"k1".to_vec(),
            range_end: b"k2".to_vec(),
            prev_kv: false,
        })
        .unwrap();
    store.compact(Revision(20)).unwrap();
    let bytes = store.encode_snapshot();
    let mut restored = Store::decode_snapshot(&bytes, StoreConfig::default(), 0).unwrap();
    assert_eq!(restored.encode_snapshot(), bytes);
    assert_eq!(restored.hash_kv(Revision(0)), store.hash_kv(Revision(0)));
    assert_eq!(restored.revision(), store.revision());
    assert_eq!(restored.compact_revision(), Revision(20));
    assert_eq!(
        restored
            .lease_time_to_live(LeaseId(9), 0, true)
            .unwrap()
            .keys,
        store.lease_time_to_live(LeaseId(9), 0, true).unwrap().keys
    );
    let all = range("k", b"\0");
    assert_eq!(restored.range(&all), store.range(&all));
    assert_eq!(
        restored.put(&PutRequest {
            key: b"new".to_vec(),
            ..Default::default()
        }),
        store.put(&PutRequest {
            key: b"new".to_vec(),
            ..Default::default()
        })
    );

    let err = |bytes: &[u8]| match Store::decode_snapshot(bytes, StoreConfig::default(), 0) {
        Err(Error::CorruptSnapshot(why)) => why,
        other => panic!("expected corruption, got {:?}", other.map(|s| s.revision())),
    };
    assert!(err(&bytes[..10]).contains("header"));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(err(&flipped).contains("checksum"));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(err(&magic).contains("magic"));
    assert!(err(&bytes[..bytes.len() - 1]).contains("remain"));
}

#[test]
fn incremental_snapshot_captures_the_pinned_revision_while_writes_go_on() {
    // A snapshot taken a small chunk at a time, with puts, deletes and a compaction
    // applied between chunks, decodes to exactly the store as it was when it started.
    let mut store = Store::default();
    store.lease_grant(LeaseId(3), 60, 0).unwrap();
    for i in 0..200 {
        let lease = if i % 7 == 0 {
            LeaseId(3)
        } else {
            LeaseId::NONE
        };
        let put = PutRequest {
            key: format!("k{i:03}").into_bytes(),
            value: vec![b'v'; i % 50],
            lease,
            ..Default::default()
        };
        store.put(&put).unwrap();
    }
    let reference_bytes = store.encode_snapshot();
    let reference = Store::decode_snapshot(&reference_bytes, StoreConfig::default(), 0).unwrap();
    let at = store.revision();
    let mut writer = store.snapshot_writer();
    let mut bytes = Vec::new();
    let mut step = 0;
    while store.snapshot_next_chunk(&mut writer, &mut bytes, 256) {
        step += 1;
        put(&mut store, &format!("k{:03}", step * 3), "changed");
        put(&mut store, &format!("new{step}"), "x");
        store
            .delete_range(&DeleteRangeRequest {
                key: format!("k{:03}", step * 5).into_bytes(),
                ..Default::default()
            })
            .unwrap();
        if step == 3 {
            store.compact(store.revision()).unwrap();
        }
    }
    store.snapshot_finish(writer);
    assert!(step > 10, "many chunks were written ({step})");
    let mut restored = Store::decode_snapshot(&bytes, StoreConfig::default(), 0).unwrap();
    assert_eq!(restored.revision(), at);
    assert_eq!(
        restored.hash_kv(Revision(0)),
        reference.hash_kv(Revision(0))
    );
    let all = range("\0", b"\0");
    assert_eq!(restored.range(&all), reference.range(&all));
    assert_eq!(
        restored.encode_snapshot(),
        reference_bytes,
        "canonical bytes"
    );
    // The deferred compaction ran when the snapshot finished.
    store.check_invariants();
    let old = RangeRequest {
        revision: at,
        ..range("k000", b"")
    };
    assert_eq!(store.range(&old).unwrap_err(), Error::Compacted);
    // A snapshot missing its end is refused.
    let cut = bytes.len() - (16 + 16);
    assert!(matches!(
        Store::decode_snapshot(&bytes[..cut], StoreConfig::default(), 0),
        Err(Error::CorruptSnapshot(_))
    ));
}

#[test]
fn values_of_every_size_are_stored_compacted_and_restored() {
    // Values from empty to well over a chunk's size, in a fresh store (whose first
    // arena chunks are small), overwritten, compacted and restored from a snapshot.
    let sizes = [
        0usize,
        1,
        4 << 10,
        5 << 10,
        100 << 10,
        256 << 10,
        300 << 10,
        1 << 20,
    ];
    let value = |size: usize, round: u8| vec![round.wrapping_add(size as u8); size];
    let mut store = Store::default();
    for round in 1..=2u8 {
        for (i, size) in sizes.iter().enumerate() {
            store
                .put(&PutRequest {
                    key: format!("key-{i}").into_bytes(),
                    value: value(*size, round),
                    ..Default::default()
                })
                .unwrap();
        }
    }
    store.compact(store.revision()).unwrap();
    store.check_invariants();
    let mut restored =
        Store::decode_snapshot(&store.encode_snapshot(), StoreConfig::default(), 0).unwrap();
    restored.check_invariants();
    for (i, size) in sizes.iter().enumerate() {
        for store in [&mut store, &mut restored] {
            let read = store
                .range(&RangeRequest {
                    key: format!("key-{i}").into_bytes(),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(read.kvs[0].value, value(*size, 2), "key-{i}");
        }
    }
}
