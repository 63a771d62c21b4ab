//! etcd's Watch service through a real gRPC client (tonic), against corekv and against
//! the real etcd 3.4 (see `corekv_tests::grpc`): many watches on one stream told apart
//! by id, ids chosen by the server and by the client, cancels, history replay from a
//! past revision, prev_kv, filters, progress requests, fragments, compaction and a
//! client that closes its sending side.
//!
//! Every scenario makes its writes only after the watch's `created` response arrived,
//! so no event can race a watch's creation.

use std::collections::BTreeMap;
use std::time::Duration;

use corekv_net::gateway::pb::etcdserverpb as pb;
use corekv_net::gateway::pb::mvccpb;
use corekv_tests::grpc::{create, prefix_end, scenario, text, WatchStream};
use prost::Message;

/// An event as one readable line, so a whole sequence compares at a glance.
fn show(event: &mvccpb::Event) -> String {
    let kind = match mvccpb::event::EventType::try_from(event.r#type) {
        Ok(mvccpb::event::EventType::Put) => "PUT",
        Ok(mvccpb::event::EventType::Delete) => "DELETE",
        Err(_) => "UNKNOWN",
    };
    let kv = event.kv.clone().unwrap_or_default();
    let mut line = format!(
        "{kind} {}={} create={} mod={} version={}",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if let Some(prev) = &event.prev_kv {
        line.push_str(&format!(
            " prev({}={} mod={})",
            text(&prev.key),
            text(&prev.value),
            prev.mod_revision
        ));
    }
    line
}

/// Reads responses until the watches in `expected_counts` have received that many
/// events each; returns every watch's events as lines. Any response that is not an
/// event response fails the test.
async fn collect(
    stream: &mut WatchStream,
    expected_counts: &[(i64, usize)],
) -> BTreeMap<i64, Vec<String>> {
    let mut events: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let done = |events: &BTreeMap<i64, Vec<String>>| {
        expected_counts
            .iter()
            .all(|(id, count)| events.get(id).map_or(0, Vec::len) >= *count)
    };
    while !done(&events) {
        let response = stream.next().await;
        assert!(
            !response.created && !response.canceled && !response.events.is_empty(),
            "expected events, got {response:?} after {events:?}"
        );
        events
            .entry(response.watch_id)
            .or_default()
            .extend(response.events.iter().map(show));
    }
    events
}

/// The events of watch `id` on a stream with no other traffic.
async fn events_of(stream: &mut WatchStream, id: i64, count: usize) -> Vec<String> {
    let mut events = collect(stream, &[(id, count)]).await;
    let mine = events.remove(&id).unwrap_or_default();
    assert!(events.is_empty(), "events for other watches: {events:?}");
    mine
}

fn filtered(
    key: &str,
    range_end: &str,
    filter: pb::watch_create_request::FilterType,
) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        filters: vec![filter as i32],
        ..create(key, range_end)
    }
}

#[test]
fn many_watches_on_one_stream_are_told_apart_by_id() {
    // Watches on keys and a prefix share one stream; the server picks the smallest free
    // id counting from 0, the client may pick its own; each event arrives under its
    // watch's id; a taken id is refused, and a cancel stops only that watch.
    scenario("grpc_watch_ids", &[], |server| async move {
        let api = server.connect().await;
        let mut watch = api.watch();
        let a = watch.created(create("a", "")).await;
        assert_eq!(a.watch_id, 0);
        assert_eq!(a.header.expect("created has a header").revision, 1);
        let p = watch.created(create("p/", &prefix_end("p/"))).await;
        assert_eq!(p.watch_id, 1);
        let chosen = pb::WatchCreateRequest {
            watch_id: 100,
            ..create("b", "")
        };
        assert_eq!(watch.created(chosen).await.watch_id, 100);
        let three = pb::WatchCreateRequest {
            watch_id: 3,
            ..create("c", "")
        };
        assert_eq!(watch.created(three).await.watch_id, 3);
        // The server's next ids skip the client's: 2, then 4.
        assert_eq!(watch.created(create("a", "")).await.watch_id, 2);
        assert_eq!(watch.created(create("d", "")).await.watch_id, 4);

        api.put("p/x", "1").await;
        api.put("a", "2").await;
        api.put("b", "3").await;
        api.put("c", "4").await;
        api.put("d", "5").await;
        api.put("unwatched", "6").await;
        let events = collect(
            &mut watch,
            &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (100, 1)],
        )
        .await;
        let expected: BTreeMap<i64, Vec<String>> = [
            (0, "PUT a=2 create=3 mod=3 version=1"),
            (1, "PUT p/x=1 create=2 mod=2 version=1"),
            (2, "PUT a=2 create=3 mod=3 version=1"),
            (3, "PUT c=4 create=5 mod=5 version=1"),
            (4, "PUT d=5 create=6 mod=6 version=1"),
            (100, "PUT b=3 create=4 mod=4 version=1"),
        ]
        .into_iter()
        .map(|(id, line)| (id, vec![line.to_string()]))
        .collect();
        assert_eq!(events, expected);

        // A client-chosen id already in use: created and canceled at once, for no watch.
        let duplicate = pb::WatchCreateRequest {
            watch_id: 100,
            ..create("e", "")
        };
        watch.create(duplicate);
        let refused = watch.next().await;
        assert_eq!(
            (
                refused.watch_id,
                refused.created,
                refused.canceled,
                refused.cancel_reason.as_str()
            ),
            (
                -1,
                true,
                true,
                "mvcc: duplicate watch ID provided on the WatchStream"
            ),
            "{refused:?}"
        );

        // Cancel the prefix watch: one canceled response, then only the others hear.
        watch.cancel(1);
        let canceled = watch.next().await;
        assert_eq!(
            (
                canceled.watch_id,
                canceled.created,
                canceled.canceled,
                canceled.events.len()
            ),
            (1, false, true, 0),
            "{canceled:?}"
        );
        api.put("p/y", "7").await;
        api.put("b", "8").await;
        let events = collect(&mut watch, &[(100, 1)]).await;
        let expected =
            BTreeMap::from([(100, vec!["PUT b=8 create=4 mod=9 version=2".to_string()])]);
        assert_eq!(events, expected, "the canceled watch heard p/y");
    });
}

#[test]
fn watch_from_a_past_revision_replays_history_then_goes_live() {
    // A watch starting at revision 2 first receives every event since then (with the
    // previous values when it asked for prev_kv), then new events as they happen.
    scenario("grpc_watch_history", &[], |server| async move {
        let api = server.connect().await;
        assert_eq!(api.put("k", "v1").await, 2);
        assert_eq!(api.put("k", "v2").await, 3);
        assert_eq!(api.delete("k").await, 4);
        assert_eq!(api.put("other", "x").await, 5);
        let mut watch = api.watch();
        let with_prev = pb::WatchCreateRequest {
            start_revision: 2,
            prev_kv: true,
            ..create("k", "")
        };
        let created = watch.created(with_prev).await;
        assert_eq!(created.watch_id, 0);
        assert_eq!(created.header.expect("header").revision, 5);
        let history = events_of(&mut watch, 0, 3).await;
        assert_eq!(
            history,
            [
                "PUT k=v1 create=2 mod=2 version=1",
                "PUT k=v2 create=2 mod=3 version=2 prev(k=v1 mod=2)",
                "DELETE k= create=0 mod=4 version=0 prev(k=v2 mod=3)",
            ]
        );
        // The same history without prev_kv, on the same stream.
        let plain = pb::WatchCreateRequest {
            start_revision: 3,
            ..create("k", "")
        };
        assert_eq!(watch.created(plain).await.watch_id, 1);
        let history = events_of(&mut watch, 1, 2).await;
        assert_eq!(
            history,
            [
                "PUT k=v2 create=2 mod=3 version=2",
                "DELETE k= create=0 mod=4 version=0",
            ]
        );

        api.put("k", "v3").await;
        api.put("k", "v4").await;
        let live = collect(&mut watch, &[(0, 2), (1, 2)]).await;
        let expected = BTreeMap::from([
            (
                0,
                vec![
                    "PUT k=v3 create=6 mod=6 version=1".to_string(),
                    "PUT k=v4 create=6 mod=7 version=2 prev(k=v3 mod=6)".to_string(),
                ],
            ),
            (
                1,
                vec![
                    "PUT k=v3 create=6 mod=6 version=1".to_string(),
                    "PUT k=v4 create=6 mod=7 version=2".to_string(),
                ],
            ),
        ]);
        assert_eq!(live, expected);
    });
}

#[test]
fn filters_drop_puts_or_deletes() {
    // NOPUT watches hear only deletes, NODELETE watches only puts.
    scenario("grpc_watch_filters", &[], |server| async move {
        use pb::watch_create_request::FilterType;
        let api = server.connect().await;
        let mut watch = api.watch();
        let end = prefix_end("f/");
        let no_put = watch.created(filtered("f/", &end, FilterType::Noput)).await;
        let no_delete = watch
            .created(filtered("f/", &end, FilterType::Nodelete))
            .await;
        assert_eq!((no_put.watch_id, no_delete.watch_id), (0, 1));
        api.put("f/a", "1").await;
        api.delete("f/a").await;
        api.put("f/b", "2").await;
        api.delete("f/b").await;
        let events = collect(&mut watch, &[(0, 2), (1, 2)]).await;
        let expected = BTreeMap::from([
            (
                0,
                vec![
                    "DELETE f/a= create=0 mod=3 version=0".to_string(),
                    "DELETE f/b= create=0 mod=5 version=0".to_string(),
                ],
            ),
            (
                1,
                vec![
                    "PUT f/a=1 create=2 mod=2 version=1".to_string(),
                    "PUT f/b=2 create=4 mod=4 version=1".to_string(),
                ],
            ),
        ]);
        assert_eq!(events, expected);
    });
}

#[test]
fn progress_request_answers_with_the_current_revision() {
    // A progress request is answered for no particular watch (id -1) with the store's
    // current revision in the header, even when the stream's watches heard nothing.
    scenario("grpc_watch_progress", &[], |server| async move {
        let api = server.connect().await;
        let mut watch = api.watch();
        assert_eq!(watch.created(create("x", "")).await.watch_id, 0);
        api.put("y", "1").await;
        assert_eq!(api.put("y", "2").await, 3);
        watch.progress();
        let progress = watch.next().await;
        assert_eq!(
            (
                progress.watch_id,
                progress.created,
                progress.canceled,
                progress.events.len(),
                progress.header.as_ref().map(|h| h.revision)
            ),
            (-1, false, false, 0, Some(3)),
            "{progress:?}"
        );
    });
}

/// etcd's allowance for gRPC framing, added to `--max-request-bytes` both for the
/// largest request and for the size at which a watch response is split into fragments
/// (`grpcOverheadBytes` in etcd's v3rpc).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The `--max-request-bytes` the fragment tests run with.
const REQUEST_BYTES_MAX: usize = 4096;

/// Keys the large fragment test deletes in one request, and each one's value size: 150
/// events of about 3.8 KB with their previous values, about 573 KB in all, more than
/// `REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES` (528,384 bytes).
const LARGE_BATCH_KEYS: usize = 150;
const LARGE_VALUE_BYTES: usize = 3800;

/// An event as (type, key, mod revision, previous value's size), for batches whose values
/// are too long to print.
fn brief(event: &mvccpb::Event) -> (i32, String, i64, usize) {
    let kv = event.kv.clone().unwrap_or_default();
    let prev = event.prev_kv.as_ref().map_or(0, |prev| prev.value.len());
    (event.r#type, text(&kv.key), kv.mod_revision, prev)
}

/// Reads until watch 0 (fragmented) has sent its last fragment and watch 1 (whole) one
/// response; returns both.
async fn pieces_and_whole(
    watch: &mut WatchStream,
) -> (Vec<pb::WatchResponse>, Vec<pb::WatchResponse>) {
    let mut pieces = Vec::new();
    let mut whole = Vec::new();
    while pieces
        .last()
        .is_none_or(|piece: &pb::WatchResponse| piece.fragment)
        || whole.is_empty()
    {
        let response = watch.next().await;
        match response.watch_id {
            0 => pieces.push(response),
            1 => whole.push(response),
            other => panic!("a response for watch {other}: {response:?}"),
        }
    }
    (pieces, whole)
}

#[test]
fn fragmented_watch_responses_reassemble_into_the_whole_batch() {
    // One delete of 150 keys whose previous values make the watch response larger than
    // etcd's fragment size: a watch that asked for fragments gets it in pieces, all but
    // the last flagged, none larger than the fragment size unless it holds one event,
    // together every event in order; a watch that did not ask gets one response.
    let flags = ["--max-request-bytes", "4096"];
    scenario("grpc_watch_fragment", &flags, |server| async move {
        let api = server.connect().await;
        let keys: Vec<String> = (0..LARGE_BATCH_KEYS).map(|i| format!("f/{i:03}")).collect();
        let writers: Vec<_> = keys
            .iter()
            .map(|key| {
                let (api, key) = (api.clone(), key.clone());
                tokio::spawn(async move { api.put(&key, &"v".repeat(LARGE_VALUE_BYTES)).await })
            })
            .collect();
        for writer in writers {
            writer.await.expect("put task");
        }
        let mut watch = api.watch();
        let end = prefix_end("f/");
        let fragmented = pb::WatchCreateRequest {
            fragment: true,
            prev_kv: true,
            ..create("f/", &end)
        };
        assert_eq!(watch.created(fragmented).await.watch_id, 0);
        let whole = pb::WatchCreateRequest {
            prev_kv: true,
            ..create("f/", &end)
        };
        assert_eq!(watch.created(whole).await.watch_id, 1);
        let delete = pb::DeleteRangeRequest {
            key: "f/".into(),
            range_end: end.clone().into(),
            ..pb::DeleteRangeRequest::default()
        };
        let deleted = api
            .kv()
            .delete_range(delete)
            .await
            .expect("delete")
            .into_inner();
        assert_eq!(deleted.deleted, LARGE_BATCH_KEYS as i64);
        let revision = deleted.header.expect("header").revision;
        assert_eq!(revision, LARGE_BATCH_KEYS as i64 + 2);

        let (pieces, whole) = pieces_and_whole(&mut watch).await;
        let flags: Vec<bool> = pieces.iter().map(|piece| piece.fragment).collect();
        assert!(pieces.len() >= 2, "fragments: {flags:?}");
        let mut expected_flags = vec![true; pieces.len() - 1];
        expected_flags.push(false);
        assert_eq!(flags, expected_flags);
        let fragment_bytes_max = REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES;
        for piece in &pieces {
            assert!(!piece.events.is_empty(), "an empty fragment");
            let bytes = piece.encoded_len();
            assert!(
                bytes < fragment_bytes_max || piece.events.len() == 1,
                "{bytes} bytes"
            );
        }
        let delete = mvccpb::event::EventType::Delete as i32;
        let expected: Vec<_> = keys
            .iter()
            .map(|key| (delete, key.clone(), revision, LARGE_VALUE_BYTES))
            .collect();
        let reassembled: Vec<_> = pieces
            .iter()
            .flat_map(|piece| piece.events.iter().map(brief))
            .collect();
        assert_eq!(reassembled, expected);

        assert_eq!(whole.len(), 1);
        assert!(!whole[0].fragment);
        assert!(
            whole[0].encoded_len() > fragment_bytes_max,
            "{}",
            whole[0].encoded_len()
        );
        let events: Vec<_> = whole[0].events.iter().map(brief).collect();
        assert_eq!(events, expected);
    });
}

/// Puts in one txn: their events (about 4.6 KB) are more than `REQUEST_BYTES_MAX` but
/// far less than etcd's fragment size.
const SMALL_BATCH_PUTS: usize = 200;

#[test]
fn a_batch_under_etcds_fragment_size_comes_whole() {
    // etcd splits a watch response only when it reaches --max-request-bytes plus its
    // 512 KiB gRPC allowance: 200 events of about 4.6 KB come in one response even to a
    // watch that asked for fragments under --max-request-bytes 4096.
    let flags = ["--max-request-bytes", "4096", "--max-txn-ops", "1024"];
    scenario("grpc_watch_no_fragment", &flags, |server| async move {
        let api = server.connect().await;
        let mut watch = api.watch();
        let end = prefix_end("f/");
        let fragmented = pb::WatchCreateRequest {
            fragment: true,
            ..create("f/", &end)
        };
        assert_eq!(watch.created(fragmented).await.watch_id, 0);
        assert_eq!(watch.created(create("f/", &end)).await.watch_id, 1);
        let keys: Vec<String> = (0..SMALL_BATCH_PUTS).map(|i| format!("f/{i:03}")).collect();
        let puts = keys
            .iter()
            .map(|key| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: key.clone().into_bytes(),
                    value: b"abcd".to_vec(),
                    ..pb::PutRequest::default()
                })),
            })
            .collect();
        let txn = pb::TxnRequest {
            success: puts,
            ..pb::TxnRequest::default()
        };
        assert!(txn.encoded_len() < 3600, "the txn itself fits the limit");
        let response = api.kv().txn(txn).await.expect("txn").into_inner();
        assert_eq!(response.header.expect("header").revision, 2);

        let (pieces, whole) = pieces_and_whole(&mut watch).await;
        let expected: Vec<String> = keys
            .iter()
            .map(|key| format!("PUT {key}=abcd create=2 mod=2 version=1"))
            .collect();
        for response in [&pieces, &whole] {
            assert_eq!(response.len(), 1, "{} responses", response.len());
            assert!(!response[0].fragment);
            assert!(response[0].encoded_len() > REQUEST_BYTES_MAX);
            let events: Vec<String> = response[0].events.iter().map(show).collect();
            assert_eq!(events, expected);
        }
    });
}

#[test]
fn a_watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    // Created first, then canceled with compact_revision set (and no reason); the
    // stream keeps serving new watches.
    scenario("grpc_watch_compacted", &[], |server| async move {
        let api = server.connect().await;
        api.put("k", "1").await;
        api.put("k", "2").await;
        assert_eq!(api.put("k", "3").await, 4);
        let compact = pb::CompactionRequest {
            revision: 4,
            physical: true,
        };
        api.kv().compact(compact).await.expect("compact");
        let mut watch = api.watch();
        let old = pb::WatchCreateRequest {
            start_revision: 2,
            ..create("k", "")
        };
        let created = watch.created(old).await;
        assert_eq!((created.watch_id, created.canceled), (0, false));
        let canceled = watch.next().await;
        assert_eq!(
            (
                canceled.watch_id,
                canceled.canceled,
                canceled.compact_revision,
                canceled.cancel_reason.as_str(),
                canceled.events.len()
            ),
            (0, true, 4, "", 0),
            "{canceled:?}"
        );
        let at_compaction = pb::WatchCreateRequest {
            start_revision: 4,
            ..create("k", "")
        };
        assert_eq!(watch.created(at_compaction).await.watch_id, 1);
        let events = events_of(&mut watch, 1, 1).await;
        assert_eq!(events, ["PUT k=3 create=2 mod=4 version=3"]);
    });
}

#[test]
fn closing_the_send_side_keeps_events_flowing() {
    // A client that half-closes its request stream keeps receiving its watches' events
    // (etcd stops reading, not sending).
    scenario("grpc_watch_half_close", &[], |server| async move {
        let api = server.connect().await;
        let mut watch = api.watch();
        assert_eq!(watch.created(create("k", "")).await.watch_id, 0);
        watch.close_send();
        // Give the server time to see the end of the request stream before writing.
        assert!(watch
            .next_within(Duration::from_millis(300))
            .await
            .is_none());
        api.put("k", "after").await;
        api.put("k", "again").await;
        let events = events_of(&mut watch, 0, 2).await;
        assert_eq!(
            events,
            [
                "PUT k=after create=2 mod=2 version=1",
                "PUT k=again create=2 mod=3 version=2",
            ]
        );
    });
}

#[test]
fn hundreds_of_watch_streams_share_one_connection() {
    // Every watch stream is an HTTP/2 stream of the client's one connection. etcd (grpc-go)
    // does not limit a connection's concurrent streams, so all of them start and all get
    // the event; a server that allowed 200 would hold the later ones back.
    const STREAMS: usize = 250;
    scenario("grpc_watch_streams", &[], |server| async move {
        let api = server.connect().await;
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let mut watch = api.watch();
            let created =
                tokio::time::timeout(Duration::from_secs(10), watch.created(create("k", "")))
                    .await
                    .unwrap_or_else(|_| panic!("watch stream {} never started", streams.len()));
            assert_eq!(created.watch_id, 0, "each stream numbers its own watches");
            streams.push(watch);
        }
        api.put("k", "v").await;
        for watch in &mut streams {
            assert_eq!(
                events_of(watch, 0, 1).await,
                ["PUT k=v create=2 mod=2 version=1"]
            );
        }
    });
}
