//! etcd's JSON gateway (grpc-gateway: POST /v3/..., bytes in base64, 64-bit integers as
//! strings) and the plain HTTP endpoints on the client URL, through curl, against corekv
//! and against the real etcd: the masked transcripts (body and HTTP status of every
//! request) must be identical.
//!
//! Each scenario runs against a fresh real etcd and a fresh corekv and fails on any
//! difference. (`GATEWAY_READY = false` runs it against two etcd servers instead, which
//! checks that a scenario is deterministic and its masking sufficient.)
//!
//! Streaming watches are curl processes kept in the background: the gateway sends the
//! watch's `created` message first, and the scenarios write only after seeing it, so no
//! event races the watch's creation.

use std::process::Command;
use std::time::Duration;

use corekv_tests::compat::{differential, Session};
use corekv_tests::etcd::programs_available;
use corekv_tests::process::{Background, Output};

/// corekv serves the JSON gateway: compare it with etcd (see the top).
const GATEWAY_READY: bool = true;

/// How long a streaming watch may take to deliver what a scenario expects.
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// curl's own limit per request (seconds); a hang fails the request, then the test.
const CURL_MAX_TIME_SECONDS: &str = "10";

fn scenario(name: &str, body: impl Fn(&mut Session<'_>) + Sync) {
    if programs_available(name, &["curl"]) {
        differential(name, GATEWAY_READY, &[], body);
    }
}

/// Standard base64 with padding, as the gateway takes and gives bytes fields.
fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |bits, (i, &byte)| {
            bits | u32::from(byte) << (16 - 8 * i)
        });
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn curl(s: &Session<'_>, method: &str, path: &str, body: Option<&str>) -> Command {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", CURL_MAX_TIME_SECONDS, "-X", method]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    command
        .args(["-w", "\nHTTP %{http_code}\n"])
        .arg(format!("{}{path}", s.client_url()));
    command
}

/// POSTs `body` to `path` and records the response body and status.
fn post(s: &mut Session<'_>, path: &str, body: &str) -> Output {
    let command = curl(s, "POST", path, Some(body));
    s.run(&format!("POST {path} {body}"), command, None)
}

/// POSTs and asserts HTTP 200 and a successful curl.
#[track_caller]
fn post_ok(s: &mut Session<'_>, path: &str, body: &str) -> String {
    let output = post(s, path, body);
    assert!(
        output.ok().stdout.ends_with("\nHTTP 200\n"),
        "POST {path} {body}: {output}"
    );
    output.stdout
}

fn get(s: &mut Session<'_>, path: &str) -> Output {
    let command = curl(s, "GET", path, None);
    s.run(&format!("GET {path}"), command, None)
}

fn put(s: &mut Session<'_>, key: &str, value: &str) -> String {
    post_ok(
        s,
        "/v3/kv/put",
        &format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value)),
    )
}

/// Starts a streaming watch with `create_request` and waits for its `created` message.
fn watch(s: &mut Session<'_>, create_request: &str) -> Background {
    let body = format!(r#"{{"create_request":{create_request}}}"#);
    let mut command = curl(s, "POST", "/v3/watch", Some(&body));
    command.arg("-N");
    let watch = s.spawn(&format!("POST /v3/watch {body} (streaming)"), command);
    wait_for(&watch, "\"created\":true");
    watch
}

#[track_caller]
fn wait_for(watch: &Background, needle: &str) {
    assert!(
        watch.wait_for_stdout(|out| out.contains(needle), WATCH_TIMEOUT),
        "{} did not print {needle:?} within {WATCH_TIMEOUT:?}; stdout:\n{}\nstderr:\n{}",
        watch.label,
        watch.stdout(),
        watch.stderr()
    );
}

#[test]
fn put_range_and_delete_range() {
    // KV through the gateway: put with prev_kv, range with its options, deleterange.
    scenario("gateway_kv", |s| {
        let first = put(s, "foo", "bar");
        assert!(first.contains(r#""revision":"2""#), "{first}");
        let prev = post_ok(
            s,
            "/v3/kv/put",
            &format!(
                r#"{{"key":"{}","value":"{}","prev_kv":true}}"#,
                b64("foo"),
                b64("baz")
            ),
        );
        assert!(prev.contains(&format!(r#""prev_kv":{{"key":"{}""#, b64("foo"))));
        for (key, value) in [("a/1", "1"), ("a/2", "22"), ("a/3", "333"), ("b", "4")] {
            put(s, key, value);
        }
        let range = post_ok(s, "/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b64("foo")));
        assert!(range.contains(&format!(r#""value":"{}""#, b64("baz"))));
        let (a, b) = (b64("a/"), b64("a0"));
        post_ok(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{a}","range_end":"{b}"}}"#),
        );
        let limited = post_ok(
            s,
            "/v3/kv/range",
            &format!(
                r#"{{"key":"{a}","range_end":"{b}","limit":2,"sort_order":"DESCEND","sort_target":"VALUE"}}"#
            ),
        );
        assert!(limited.contains(r#""more":true,"count":"3""#), "{limited}");
        let count = post_ok(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{a}","range_end":"{b}","count_only":true}}"#),
        );
        assert!(count.contains(r#""count":"3""#) && !count.contains("kvs"));
        post_ok(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{a}","range_end":"{b}","keys_only":true,"serializable":true}}"#),
        );
        // range_end "\0": every key from key on.
        post_ok(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{}","range_end":"AA=="}}"#, b64("a/3")),
        );
        post_ok(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{}","revision":2}}"#, b64("foo")),
        );
        post_ok(
            s,
            "/v3/kv/range",
            &format!(
                r#"{{"key":"{a}","range_end":"{b}","min_mod_revision":5,"max_create_revision":6}}"#
            ),
        );
        post_ok(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{}"}}"#, b64("missing")),
        );
        let deleted = post_ok(
            s,
            "/v3/kv/deleterange",
            &format!(r#"{{"key":"{a}","range_end":"{b}","prev_kv":true}}"#),
        );
        assert!(deleted.contains(r#""deleted":"3""#), "{deleted}");
        post_ok(
            s,
            "/v3/kv/deleterange",
            &format!(r#"{{"key":"{}"}}"#, b64("missing")),
        );
        post_ok(s, "/v3/kv/range", r#"{"key":"AA==","range_end":"AA=="}"#);
    });
}

#[test]
fn txn_compares_branches_nesting_and_errors() {
    // Txn: compares, both branches, a nested txn, and the duplicate-key error.
    scenario("gateway_txn", |s| {
        put(s, "k", "v1");
        put(s, "k", "v2");
        let k = b64("k");
        let success = post_ok(
            s,
            "/v3/kv/txn",
            &format!(
                r#"{{"compare":[{{"key":"{k}","result":"EQUAL","target":"VALUE","value":"{}"}},{{"key":"{k}","target":"VERSION","result":"GREATER","version":"1"}}],"success":[{{"request_put":{{"key":"{}","value":"{}"}}}},{{"request_range":{{"key":"{k}"}}}},{{"request_txn":{{"success":[{{"request_delete_range":{{"key":"{}"}}}}]}}}}],"failure":[{{"request_range":{{"key":"{k}"}}}}]}}"#,
                b64("v2"),
                b64("x"),
                b64("1"),
                b64("nothing")
            ),
        );
        assert!(success.contains(r#""succeeded":true"#), "{success}");
        let failure = post_ok(
            s,
            "/v3/kv/txn",
            &format!(
                r#"{{"compare":[{{"key":"{k}","target":"MOD","result":"LESS","mod_revision":"2"}}],"success":[{{"request_put":{{"key":"{k}","value":"{}"}}}}],"failure":[{{"request_range":{{"key":"{k}"}}}}]}}"#,
                b64("never")
            ),
        );
        assert!(!failure.contains("succeeded"), "{failure}");
        post_ok(
            s,
            "/v3/kv/txn",
            &format!(
                r#"{{"compare":[{{"key":"{k}","target":"CREATE","result":"NOT_EQUAL","create_revision":"2"}}],"failure":[{{"request_put":{{"key":"{k}","value":"{}","prev_kv":true}}}}]}}"#,
                b64("v3")
            ),
        );
        let duplicate = post(
            s,
            "/v3/kv/txn",
            &format!(
                r#"{{"success":[{{"request_put":{{"key":"{k}"}}}},{{"request_put":{{"key":"{k}"}}}}]}}"#
            ),
        );
        assert!(duplicate
            .ok()
            .stdout
            .starts_with(r#"{"error":"etcdserver: duplicate key given in txn request""#));
        assert!(duplicate.stdout.ends_with("\nHTTP 400\n"));
        post_ok(s, "/v3/kv/range", &format!(r#"{{"key":"{k}"}}"#));
    });
}

#[test]
fn compaction_leases_cluster_maintenance_and_errors() {
    // Compaction, the lease endpoints, member list, status, alarm, /health, /version,
    // /metrics, and the gateway's error bodies and HTTP codes.
    scenario("gateway_other", |s| {
        for value in ["1", "2", "3"] {
            put(s, "k", value);
        }
        post_ok(s, "/v3/kv/compaction", r#"{"revision":3}"#);
        let compacted = post(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{}","revision":2}}"#, b64("k")),
        );
        assert!(compacted
            .ok()
            .stdout
            .starts_with(r#"{"error":"etcdserver: mvcc: required revision has been compacted""#));
        post(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{}","revision":99}}"#, b64("k")),
        );
        post(s, "/v3/kv/compaction", r#"{"revision":2}"#);
        post(
            s,
            "/v3/kv/put",
            &format!(r#"{{"value":"{}"}}"#, b64("no key")),
        );
        let granted = post_ok(s, "/v3/lease/grant", r#"{"TTL":100}"#);
        let id: String = granted
            .split(r#""ID":""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("lease ID in the grant")
            .to_string();
        post_ok(
            s,
            "/v3/kv/put",
            &format!(
                r#"{{"key":"{}","value":"{}","lease":"{id}"}}"#,
                b64("leased"),
                b64("v")
            ),
        );
        let ttl = post_ok(
            s,
            "/v3/lease/timetolive",
            &format!(r#"{{"ID":"{id}","keys":true}}"#),
        );
        assert!(ttl.contains(&format!(
            r#""grantedTTL":"100","keys":["{}"]"#,
            b64("leased")
        )));
        post_ok(s, "/v3/lease/leases", "{}");
        post_ok(s, "/v3/lease/keepalive", &format!(r#"{{"ID":"{id}"}}"#));
        post_ok(s, "/v3/lease/revoke", &format!(r#"{{"ID":"{id}"}}"#));
        post(s, "/v3/lease/revoke", &format!(r#"{{"ID":"{id}"}}"#));
        post(
            s,
            "/v3/kv/put",
            &format!(r#"{{"key":"{}","lease":"1234"}}"#, b64("x")),
        );
        post_ok(
            s,
            "/v3/kv/range",
            &format!(r#"{{"key":"{}"}}"#, b64("leased")),
        );
        let members = post_ok(s, "/v3/cluster/member/list", "{}");
        assert!(members.contains(&format!(r#""clientURLs":["{}"]"#, s.client_url())));
        post_ok(s, "/v3/maintenance/status", "{}");
        post_ok(s, "/v3/maintenance/alarm", r#"{"action":"GET"}"#);
        post_ok(s, "/v3/maintenance/hash", "{}");
        assert_eq!(
            get(s, "/health").ok().stdout,
            "{\"health\":\"true\"}\nHTTP 200\n"
        );
        get(s, "/version").ok();
        get(s, "/v3/kv/nosuch").ok();
        let metrics = Command::new("curl")
            .args(["-sS", "--max-time", CURL_MAX_TIME_SECONDS])
            .arg(format!("{}/metrics", s.client_url()))
            .output()
            .expect("run curl");
        let metrics = String::from_utf8_lossy(&metrics.stdout);
        // The series etcd's usual alerts read; the rest of /metrics is not compared.
        for series in ["etcd_server_has_leader 1", "etcd_server_is_leader 1"] {
            let present = metrics.lines().any(|line| line == series);
            s.note(&format!("/metrics has {series:?}"), &present.to_string());
            assert!(present, "/metrics lacks {series:?}");
        }
    });
}

#[test]
fn watch_streams_history_and_live_events() {
    // /v3/watch streams: history from a start revision with prev_kv, then live events,
    // a filter, and a watch below the compacted revision (cancelled).
    scenario("gateway_watch", |s| {
        put(s, "w/a", "1"); // 2
        put(s, "w/b", "2"); // 3
        put(s, "other", "x"); // 4
        let (w, end) = (b64("w/"), b64("w0"));
        let history = watch(
            s,
            &format!(r#"{{"key":"{w}","range_end":"{end}","start_revision":2,"prev_kv":true}}"#),
        );
        wait_for(&history, &format!(r#""value":"{}""#, b64("2")));
        let live = watch(s, &format!(r#"{{"key":"{w}","range_end":"{end}"}}"#));
        let no_put = watch(
            s,
            &format!(r#"{{"key":"{w}","range_end":"{end}","filters":["NOPUT"]}}"#),
        );
        put(s, "w/a", "11"); // 5
        post_ok(
            s,
            "/v3/kv/deleterange",
            &format!(r#"{{"key":"{}"}}"#, b64("w/b")),
        ); // 6
        put(s, "w/end", "done"); // 7
        wait_for(&history, &format!(r#""value":"{}""#, b64("done")));
        wait_for(&live, &format!(r#""value":"{}""#, b64("done")));
        wait_for(&no_put, r#""type":"DELETE""#);
        let history = s.finish(history);
        assert_eq!(history.stdout.lines().count(), 5, "{history}");
        let live = s.finish(live);
        assert_eq!(live.stdout.lines().count(), 4, "{live}");
        s.finish(no_put);
        post_ok(s, "/v3/kv/compaction", r#"{"revision":5}"#);
        let body = format!(
            r#"{{"create_request":{{"key":"{w}","range_end":"{end}","start_revision":3}}}}"#
        );
        let mut command = curl(s, "POST", "/v3/watch", Some(&body));
        command.arg("-N");
        let compacted = s.spawn(&format!("POST /v3/watch {body} (streaming)"), command);
        wait_for(&compacted, r#""canceled":true"#);
        let compacted = s.finish(compacted);
        assert!(
            compacted.stdout.contains(r#""compact_revision":"5""#),
            "{compacted}"
        );
    });
}
