//! The real etcdctl (3.4) against corekv and against the real etcd: every scenario runs
//! on two fresh servers and their transcripts (exit code, stdout and stderr of every
//! command, masked by `corekv_tests::mask`) must be identical.
//!
//! Each scenario runs against etcd (the reference) and corekv and fails on any
//! difference; everything left unmasked (revisions, values, error texts, exit codes) is
//! something corekv reproduces exactly. (`GATEWAY_READY = false` runs both sides on etcd
//! instead, which checks that a scenario is deterministic and its masking sufficient.)
//!
//! Each scenario is its own test with its own two servers, so they run in parallel.
//! Besides the transcript comparison, every scenario asserts the key facts directly (a
//! `get` returns what was put, success exits 0, an error names the right cause), so two
//! servers failing the same way do not pass. Outside the comparison: commands that need
//! auth or several members (auth, user, role, member add/remove/update/promote) and
//! `make-mirror`; `check perf` has its own file. etcdctl 3.4 has no `get --count-only`
//! (3.5 added it); the JSON gateway tests cover `count_only`.
//!
//! `COREKV_COMPAT_PRINT=1` prints etcd's masked transcript of each scenario.

use std::time::{Duration, Instant};

use corekv_tests::compat::{differential, Session};
use corekv_tests::process::{Background, Output};

/// corekv serves etcd's gRPC API: compare it with etcd (see the top).
const GATEWAY_READY: bool = true;

/// How long a watch may take to deliver what a scenario expects.
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

fn scenario(name: &str, body: impl Fn(&mut Session<'_>) + Sync) {
    differential(name, GATEWAY_READY, &[], body);
}

fn scenario_with(name: &str, flags: &[(&str, &str)], body: impl Fn(&mut Session<'_>) + Sync) {
    differential(name, GATEWAY_READY, flags, body);
}

/// The hex id in `lease <id> granted with TTL(...)`.
fn granted_lease(output: &Output) -> String {
    output.ok();
    output
        .stdout
        .strip_prefix("lease ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no lease id in {output}"))
        .to_string()
}

/// The header revision of a `-w json` response.
fn json_revision(output: &Output) -> i64 {
    let start = output
        .stdout
        .find("\"revision\":")
        .unwrap_or_else(|| panic!("no revision in {output}"))
        + "\"revision\":".len();
    let digits: String = output.stdout[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("a revision is a number")
}

fn put(s: &mut Session<'_>, key: &str, value: &str) {
    assert_eq!(s.etcdctl(&["put", key, value]).ok().stdout, "OK\n");
}

/// Waits until the watch printed `needle`, asserting it did within [`WATCH_TIMEOUT`].
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
fn put_and_get_in_every_output_format() {
    // put with and without --prev-kv and get, in simple, json, fields, table and hex.
    scenario("put_get_formats", |s| {
        put(s, "foo", "bar");
        let prev = s.etcdctl(&["put", "foo", "baz", "--prev-kv"]);
        assert_eq!(prev.ok().stdout, "OK\nfoo\nbar\n");
        let json = s.etcdctl(&["-w", "json", "put", "foo", "qux", "--prev-kv"]);
        assert!(json.ok().stdout.contains("\"prev_kv\":{\"key\":\"Zm9v\""));
        assert_eq!(json_revision(&json), 4);
        s.etcdctl(&["-w", "fields", "put", "foo", "quux", "--prev-kv"])
            .ok();
        assert_eq!(s.etcdctl(&["get", "foo"]).ok().stdout, "foo\nquux\n");
        let json = s.etcdctl(&["-w", "json", "get", "foo"]);
        assert!(json.ok().stdout.contains(
            "\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":2,\"mod_revision\":5,\"version\":4,\"value\":\"cXV1eA==\"}],\"count\":1"
        ));
        s.etcdctl(&["-w", "fields", "get", "foo"]).ok();
        s.etcdctl(&["-w", "table", "get", "foo"]);
        s.etcdctl(&["--hex", "get", "foo"]).ok();
        assert_eq!(
            s.etcdctl(&["get", "foo", "--print-value-only"]).ok().stdout,
            "quux\n"
        );
        assert_eq!(s.etcdctl(&["get", "missing"]).ok().stdout, "");
        s.etcdctl(&["-w", "json", "get", "missing"]).ok();
        put(s, "key with spaces", "héllo wörld");
        assert_eq!(
            s.etcdctl(&["get", "key with spaces"]).ok().stdout,
            "key with spaces\nhéllo wörld\n"
        );
        s.etcdctl(&["-w", "json", "get", "key with spaces"]).ok();
        // A value from stdin (one argument).
        assert_eq!(
            s.etcdctl_stdin(&["put", "from-stdin"], "piped value")
                .ok()
                .stdout,
            "OK\n"
        );
        s.etcdctl(&["get", "from-stdin"]).ok();
    });
}

#[test]
fn get_ranges_limits_sorting_and_old_revisions() {
    // Range end, --prefix, --from-key, --limit, --keys-only, sorting, --rev, --consistency.
    scenario("get_options", |s| {
        for (key, value) in [
            ("a", "3"),
            ("a/1", "1"),
            ("a/2", "22"),
            ("b", "4"),
            ("c", "0"),
        ] {
            put(s, key, value);
        }
        put(s, "a/1", "111"); // a/1 at version 2, revision 7
        assert_eq!(
            s.etcdctl(&["get", "a", "b"]).ok().stdout,
            "a\n3\na/1\n111\na/2\n22\n"
        );
        s.etcdctl(&["get", "a/", "--prefix"]).ok();
        s.etcdctl(&["get", "a/2", "--from-key"]).ok();
        s.etcdctl(&["get", "", "--from-key", "--keys-only"]).ok();
        let limited = s.etcdctl(&["-w", "json", "get", "a", "--prefix", "--limit", "2"]);
        assert!(limited.ok().stdout.contains("\"more\":true,\"count\":3"));
        s.etcdctl(&["get", "a", "--prefix", "--limit", "2"]).ok();
        s.etcdctl(&["get", "a", "--prefix", "--keys-only"]).ok();
        s.etcdctl(&["-w", "json", "get", "a", "--prefix", "--keys-only"])
            .ok();
        for target in ["KEY", "VALUE", "VERSION", "CREATE", "MODIFY"] {
            for order in ["ASCEND", "DESCEND"] {
                let sort = format!("--sort-by={target}");
                let order = format!("--order={order}");
                s.etcdctl(&["get", "", "--from-key", &sort, &order]).ok();
            }
        }
        let descending = s.etcdctl(&["get", "a", "--prefix", "--sort-by=VALUE", "--order=DESCEND"]);
        // Values compare as bytes: "3" > "22" > "111".
        assert_eq!(descending.ok().stdout, "a\n3\na/2\n22\na/1\n111\n");
        s.etcdctl(&[
            "-w",
            "json",
            "get",
            "a",
            "--prefix",
            "--limit",
            "1",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ])
        .ok();
        assert_eq!(
            s.etcdctl(&["get", "a/1", "--rev", "3"]).ok().stdout,
            "a/1\n1\n"
        );
        s.etcdctl(&["get", "a", "--prefix", "--rev", "4"]).ok();
        s.etcdctl(&["-w", "json", "get", "a/1", "--rev", "2"]).ok();
        assert_eq!(
            s.etcdctl(&["get", "b", "--consistency=s"]).ok().stdout,
            "b\n4\n"
        );
        s.etcdctl(&["-w", "json", "get", "c", "--consistency=s"])
            .ok();
        s.etcdctl(&["get", "a/", "--prefix", "--print-value-only"])
            .ok();
        s.etcdctl(&["get", "a", "--prefix", "--from-key"]);
    });
}

#[test]
fn put_with_lease_ignore_value_and_ignore_lease() {
    // --lease attaches, --ignore-value keeps the value, --ignore-lease keeps the lease.
    scenario("put_flags", |s| {
        let lease = granted_lease(&s.etcdctl(&["lease", "grant", "100"]));
        let lease_decimal = i64::from_str_radix(&lease, 16).expect("hex lease id");
        let with_lease = format!("--lease={lease}");
        put(s, "plain", "p");
        s.etcdctl(&["put", "k", "v", &with_lease]).ok();
        let json = s.etcdctl(&["-w", "json", "get", "k"]);
        assert!(json
            .ok()
            .stdout
            .contains(&format!("\"lease\":{lease_decimal}")));
        // --ignore-value without --ignore-lease: the value stays, the lease goes (0).
        s.etcdctl(&["put", "k", "--ignore-value"]).ok();
        let json = s.etcdctl(&["-w", "json", "get", "k"]);
        assert!(json.ok().stdout.contains("\"value\":\"dg==\""));
        s.etcdctl(&["put", "k", "v2", &with_lease]).ok();
        s.etcdctl(&["put", "k", "v3", "--ignore-lease"]).ok();
        let json = s.etcdctl(&["-w", "json", "get", "k"]);
        assert!(json
            .ok()
            .stdout
            .contains(&format!("\"value\":\"djM=\",\"lease\":{lease_decimal}")));
        s.etcdctl(&["put", "k", "--ignore-value", "--ignore-lease", "--prev-kv"])
            .ok();
        s.etcdctl(&["-w", "json", "put", "plain", "--ignore-value", "--prev-kv"])
            .ok();
        s.etcdctl(&["put", "k", "v4", "--ignore-lease", "--lease=1234"]);
        let timetolive = s.etcdctl(&["lease", "timetolive", &lease, "--keys"]);
        assert!(timetolive.ok().stdout.ends_with("attached keys([k])\n"));
        // Errors.
        let missing = s.etcdctl(&["put", "missing", "--ignore-value"]);
        assert_eq!(
            missing.failed_with(1).error_line(),
            "Error: etcdserver: key not found"
        );
        s.etcdctl(&["put", "missing", "v", "--ignore-lease"])
            .failed_with(1);
        let unknown = s.etcdctl(&["put", "k", "v", "--lease=1234"]);
        assert_eq!(
            unknown.failed_with(1).error_line(),
            "Error: etcdserver: requested lease not found"
        );
        s.etcdctl(&["put", "k", "v", "--ignore-value"])
            .failed_with(128);
        s.etcdctl(&["get", "", "--from-key"]).ok();
    });
}

#[test]
fn delete_one_key_a_range_a_prefix_and_from_a_key() {
    // del in its forms, with --prev-kv; deleting nothing does not bump the revision.
    scenario("del_options", |s| {
        for key in ["a", "a/1", "a/2", "b", "c", "d", "e"] {
            put(s, key, &format!("value of {key}"));
        }
        assert_eq!(s.etcdctl(&["del", "a"]).ok().stdout, "1\n");
        let before = json_revision(&s.etcdctl(&["-w", "json", "get", "a"]));
        assert_eq!(s.etcdctl(&["del", "missing"]).ok().stdout, "0\n");
        let after = json_revision(&s.etcdctl(&["-w", "json", "get", "a"]));
        assert_eq!(before, after, "deleting nothing must not bump the revision");
        let prefix = s.etcdctl(&["del", "a/", "--prefix", "--prev-kv"]);
        assert_eq!(
            prefix.ok().stdout,
            "2\na/1\nvalue of a/1\na/2\nvalue of a/2\n"
        );
        s.etcdctl(&["-w", "json", "del", "b", "--prev-kv"]).ok();
        assert_eq!(s.etcdctl(&["del", "c", "d"]).ok().stdout, "1\n");
        s.etcdctl(&["-w", "fields", "del", "d", "--prev-kv"]).ok();
        assert_eq!(s.etcdctl(&["del", "a", "--from-key"]).ok().stdout, "1\n");
        s.etcdctl(&["-w", "json", "del", "x", "--prefix"]).ok();
        assert_eq!(s.etcdctl(&["get", "", "--from-key"]).ok().stdout, "");
        s.etcdctl(&["-w", "json", "get", "", "--from-key"]).ok();
    });
}

#[test]
fn txn_compares_on_value_version_create_and_mod_and_takes_either_branch() {
    // Compares of every target and operator from stdin, success and failure branches.
    scenario("txn_branches", |s| {
        put(s, "k1", "v1"); // revision 2
        put(s, "k2", "v2"); // revision 3
        put(s, "k2", "v2b"); // revision 4, k2 at version 2
        let success = s.etcdctl_stdin(
            &["txn"],
            "value(\"k1\") = \"v1\"\nversion(\"k2\") = \"2\"\n\nput k3 v3\nget k1\ndel k2\n\nput failed yes\n\n",
        );
        assert_eq!(success.ok().stdout, "SUCCESS\n\nOK\n\nk1\nv1\n\n1\n");
        let failure = s.etcdctl_stdin(
            &["txn"],
            "create(\"k1\") > \"2\"\n\nput never x\n\nput failed yes\nget failed\n\n",
        );
        assert_eq!(failure.ok().stdout, "FAILURE\n\nOK\n\nfailed\nyes\n");
        for compare in [
            "value(\"k1\") != \"v1\"",
            "value(\"k1\") < \"v2\"",
            "value(\"k1\") > \"v0\"",
            "version(\"k3\") = \"1\"",
            "version(\"k2\") = \"0\"",
            "create(\"k1\") = \"2\"",
            "create(\"k3\") < \"100\"",
            "mod(\"k1\") = \"2\"",
            "mod(\"k3\") != \"5\"",
            "mod(\"missing\") > \"0\"",
        ] {
            s.etcdctl_stdin(&["txn"], &format!("{compare}\n\nget k1\n\nget k3\n\n"))
                .ok();
        }
        s.etcdctl_stdin(
            &["-w", "json", "txn"],
            "value(\"k1\") = \"v1\"\n\nput k1 v1b\nget k --prefix\ndel k3 --prev-kv\n\n\n",
        )
        .ok();
        s.etcdctl_stdin(
            &["-w", "fields", "txn"],
            "mod(\"k1\") < \"3\"\n\nput x 1\n\nput k1 v1c --prev-kv\nget k1\n\n",
        )
        .ok();
        // No compares: the success branch always runs.
        s.etcdctl_stdin(&["txn"], "\nput k4 v4\n\n\n").ok();
        // Interactive mode reads the same from stdin, with prompts.
        let interactive = s.etcdctl_stdin(
            &["txn", "-i"],
            "value(\"k4\") = \"v4\"\n\nget k4\n\nput k4 other\n\n",
        );
        assert!(interactive.ok().stdout.starts_with("compares:\n"));
        s.etcdctl(&["get", "", "--from-key"]).ok();
        s.etcdctl(&["-w", "json", "get", "k1"]).ok();
    });
}

#[test]
fn txn_rejects_duplicate_keys_and_too_many_operations() {
    // Duplicate key writes and more than --max-txn-ops (128) operations fail as in etcd.
    scenario("txn_errors", |s| {
        let duplicate = s.etcdctl_stdin(&["txn"], "\nput a 1\nput a 2\n\n\n");
        assert_eq!(
            duplicate.failed_with(1).error_line(),
            "Error: etcdserver: duplicate key given in txn request"
        );
        s.etcdctl_stdin(&["txn"], "\nput a/x 1\ndel a --prefix\n\n\n")
            .failed_with(1);
        // Reads of the same key twice are not writes: allowed.
        s.etcdctl_stdin(&["txn"], "\nget a\nget a\n\n\n").ok();
        // The same key in both branches is allowed: only one branch runs.
        s.etcdctl_stdin(&["txn"], "\nput b 1\n\nput b 2\n\n").ok();
        let ops = |count: usize| {
            let puts: String = (0..count).map(|i| format!("put key{i} {i}\n")).collect();
            format!("\n{puts}\n\n")
        };
        s.etcdctl_stdin(&["txn"], &ops(128)).ok();
        let too_many = s.etcdctl_stdin(&["txn"], &ops(129));
        assert_eq!(
            too_many.failed_with(1).error_line(),
            "Error: etcdserver: too many operations in txn request"
        );
        s.etcdctl_stdin(&["txn"], "bogus compare\n\n\n\n");
        s.etcdctl(&["-w", "json", "get", "key127"]).ok();
    });
}

#[test]
fn txn_operation_limit_follows_max_txn_ops() {
    // --max-txn-ops 4: four operations pass, five fail (the limit and limit + 1).
    scenario_with("txn_max_ops", &[("--max-txn-ops", "4")], |s| {
        s.etcdctl_stdin(&["txn"], "\nput a 1\nput b 1\nput c 1\nput d 1\n\n\n")
            .ok();
        let over = s.etcdctl_stdin(
            &["txn"],
            "\nput a 1\nput b 1\nput c 1\nput d 1\nput e 1\n\n\n",
        );
        assert_eq!(
            over.failed_with(1).error_line(),
            "Error: etcdserver: too many operations in txn request"
        );
        // Each branch counts on its own.
        s.etcdctl_stdin(
            &["txn"],
            "\nput a 2\nput b 2\nput c 2\nput d 2\n\nput e 2\nput f 2\nput g 2\nput h 2\n\n",
        )
        .ok();
    });
}

#[test]
fn compaction_then_reading_and_watching_below_it() {
    // compaction, then get --rev below it fails with etcd's error; a future rev too.
    scenario("compaction", |s| {
        for value in ["1", "2", "3", "4"] {
            put(s, "k", value); // revisions 2..5
        }
        assert_eq!(
            s.etcdctl(&["compaction", "3"]).ok().stdout,
            "compacted revision 3\n"
        );
        let below = s.etcdctl(&["get", "k", "--rev", "2"]);
        assert_eq!(
            below.failed_with(1).error_line(),
            "Error: etcdserver: mvcc: required revision has been compacted"
        );
        assert_eq!(s.etcdctl(&["get", "k", "--rev", "3"]).ok().stdout, "k\n2\n");
        s.etcdctl(&["compaction", "3"]).failed_with(1);
        s.etcdctl(&["compaction", "2"]).failed_with(1);
        let future = s.etcdctl(&["compaction", "100"]);
        assert_eq!(
            future.failed_with(1).error_line(),
            "Error: etcdserver: mvcc: required revision is a future revision"
        );
        s.etcdctl(&["-w", "json", "compaction", "4", "--physical"])
            .ok();
        s.etcdctl(&["get", "k", "--rev", "6"]).failed_with(1);
        s.etcdctl(&["get", "k", "--rev", "5"]).ok();
        // A watch from a compacted revision is cancelled by the server.
        let watch = s.etcdctl(&["watch", "k", "--rev", "2"]);
        assert!(watch.failed_with(5).stderr.starts_with(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
        ));
        s.etcdctl(&["-w", "json", "get", "k"]).ok();
    });
}

#[test]
fn watch_replays_history_with_prefix_prev_kv_and_json() {
    // watch --rev from the past: single key, prefix, prev-kv, json, exec of a command.
    scenario("watch_history", |s| {
        put(s, "w/a", "1"); // 2
        put(s, "w/b", "2"); // 3
        put(s, "other", "x"); // 4
        s.etcdctl(&["del", "w/a"]).ok(); // 5
        s.etcdctl_stdin(&["txn"], "\nput w/c 3\nput w/d 4\n\n\n")
            .ok(); // 6, one revision for two events
        put(s, "w/b", "22"); // 7
        let single = s.spawn_etcdctl(&["watch", "w/b", "--rev", "1"]);
        wait_for(&single, "22\n");
        assert_eq!(s.finish(single).stdout, "PUT\nw/b\n2\nPUT\nw/b\n22\n");
        let prefix = s.spawn_etcdctl(&["watch", "w/", "--prefix", "--rev", "2"]);
        wait_for(&prefix, "w/b\n22\n");
        assert_eq!(
            s.finish(prefix).stdout,
            "PUT\nw/a\n1\nPUT\nw/b\n2\nDELETE\nw/a\n\nPUT\nw/c\n3\nPUT\nw/d\n4\nPUT\nw/b\n22\n"
        );
        let prev = s.spawn_etcdctl(&["watch", "w/", "--prefix", "--rev", "3", "--prev-kv"]);
        wait_for(&prev, "w/b\n22\n");
        s.finish(prev);
        let json = s.spawn_etcdctl(&["-w", "json", "watch", "w/", "--prefix", "--rev", "5"]);
        wait_for(&json, "\"value\":\"MjI=\"");
        s.finish(json);
        let json_prev = s.spawn_etcdctl(&["-w", "json", "watch", "w/b", "--rev", "7", "--prev-kv"]);
        wait_for(&json_prev, "\"prev_kv\"");
        s.finish(json_prev);
        let fields = s.spawn_etcdctl(&["-w", "fields", "watch", "w/b", "--rev", "7"]);
        // The last line of the event: fields are printed line by line.
        wait_for(&fields, "\"Value\" : \"22\"\n\"Lease\" : 0\n");
        s.finish(fields);
        let range = s.spawn_etcdctl(&["watch", "w/b", "w/d", "--rev", "1"]);
        wait_for(&range, "w/b\n22\n");
        s.finish(range);
        // A command run per event, with the event in its environment. One event only:
        // etcdctl prints a response's events before running the commands, so several
        // would show how the server grouped them.
        let exec = s.spawn_etcdctl(&[
            "watch",
            "w/b",
            "--rev",
            "7",
            "--",
            "printenv",
            "ETCD_WATCH_EVENT_TYPE",
            "ETCD_WATCH_KEY",
            "ETCD_WATCH_VALUE",
            "ETCD_WATCH_REVISION",
        ]);
        wait_for(&exec, "\"22\"\n7\n");
        assert_eq!(
            s.finish(exec).stdout,
            "PUT\nw/b\n22\n\"PUT\"\n\"w/b\"\n\"22\"\n7\n"
        );
        // A future start revision: nothing yet, then the put that reaches it.
        let future = s.spawn_etcdctl(&["watch", "w/", "--prefix", "--rev", "9"]);
        put(s, "w/e", "not seen"); // 8
        put(s, "w/f", "seen"); // 9
        wait_for(&future, "seen\n");
        assert_eq!(s.finish(future).stdout, "PUT\nw/f\nseen\n");
    });
}

/// The key a live watch is synchronised on (see `watch_delivers_live_events_without_rev`).
const SYNC_KEY: &str = "w/0-sync";

/// Puts [`SYNC_KEY`] until the watch shows it: from then on the watch is established.
/// How many puts that takes varies, so they are not recorded and the watch output is
/// filtered with [`without_sync_events`].
fn sync_watch(s: &mut Session<'_>, watch: &Background) {
    let deadline = Instant::now() + WATCH_TIMEOUT;
    loop {
        s.etcdctl_unrecorded(&["put", SYNC_KEY, "ping"]).ok();
        if watch.wait_for_stdout(|out| out.contains(SYNC_KEY), Duration::from_millis(300)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never saw {SYNC_KEY}: {}",
            watch.label,
            watch.stderr()
        );
    }
}

fn without_sync_events(stdout: &str) -> String {
    stdout.replace(&format!("PUT\n{SYNC_KEY}\nping\n"), "")
}

#[test]
fn watch_delivers_live_events_without_rev() {
    // A watch from now on: puts, deletes and a txn after it starts, nothing from before.
    scenario("watch_live", |s| {
        put(s, "w/before", "old");
        let watch = s.spawn_etcdctl(&["watch", "w/", "--prefix"]);
        sync_watch(s, &watch);
        put(s, "w/a", "1");
        put(s, "outside", "x");
        s.etcdctl(&["del", "w/before"]).ok();
        s.etcdctl_stdin(&["txn"], "\nput w/b 2\ndel w/a\n\n\n").ok();
        put(s, "w/end", "done");
        wait_for(&watch, "w/end\ndone\n");
        let output = s.finish_filtered(watch, without_sync_events);
        assert_eq!(
            without_sync_events(&output.stdout),
            "PUT\nw/a\n1\nDELETE\nw/before\n\nPUT\nw/b\n2\nDELETE\nw/a\n\nPUT\nw/end\ndone\n"
        );
    });
}

#[test]
fn watch_interactive_reads_watch_commands_from_stdin() {
    // watch -i: two watches on one stream, started by lines on stdin, then a bad line.
    scenario("watch_interactive", |s| {
        put(s, "i/a", "1"); // 2
        put(s, "i/b", "2"); // 3
        put(s, "j", "3"); // 4
        let mut watch = s.spawn_etcdctl(&["watch", "-i"]);
        watch.write_stdin("watch i/a --rev 1\n");
        wait_for(&watch, "i/a\n1\n");
        watch.write_stdin("watch i/ --prefix --rev 3 --prev-kv\n");
        wait_for(&watch, "i/b\n2\n");
        watch.write_stdin("watch j --rev 2\n");
        wait_for(&watch, "j\n3\n");
        // Each put below matches one watch only: the order across watches of one
        // revision is not defined.
        put(s, "j", "33");
        wait_for(&watch, "j\n33\n");
        put(s, "i/b", "22");
        wait_for(&watch, "i/b\n22\n");
        let output = s.finish(watch);
        assert_eq!(
            output.stdout,
            "PUT\ni/a\n1\nPUT\ni/b\n2\nPUT\nj\n3\nPUT\nj\n33\nPUT\ni/b\n2\ni/b\n22\n"
        );
    });
}

#[test]
fn lease_grant_revoke_timetolive_list_and_keep_alive() {
    // The lease commands in each output format, their errors, and the minimum TTL.
    scenario("lease_commands", |s| {
        let lease = granted_lease(&s.etcdctl(&["lease", "grant", "100"]));
        let attach = format!("--lease={lease}");
        put(s, "unleased", "u");
        // One key while timetolive lists them: etcd lists a lease's keys in map order.
        s.etcdctl(&["put", "l/a", "1", &attach]).ok();
        let timetolive = s.etcdctl(&["lease", "timetolive", &lease, "--keys"]);
        let text = timetolive.ok().stdout.clone();
        assert!(text.starts_with(&format!("lease {lease} granted with TTL(100s), remaining(")));
        assert!(text.ends_with("s), attached keys([l/a])\n"), "{text}");
        // etcd truncates the remaining time: just granted, it is below the granted TTL.
        let remaining: i64 = text
            .split("remaining(")
            .nth(1)
            .and_then(|rest| rest.split('s').next())
            .and_then(|digits| digits.parse().ok())
            .expect("remaining TTL");
        assert!((90..100).contains(&remaining), "remaining {remaining}");
        s.etcdctl(&["lease", "timetolive", &lease]).ok();
        s.etcdctl(&["-w", "json", "lease", "timetolive", &lease, "--keys"])
            .ok();
        s.etcdctl(&["-w", "fields", "lease", "timetolive", &lease, "--keys"])
            .ok();
        s.etcdctl(&["put", "l/b", "2", &attach]).ok();
        let second = granted_lease(&s.etcdctl(&["lease", "grant", "50"]));
        let list = s.etcdctl(&["lease", "list"]);
        assert!(list.ok().stdout.starts_with("found 2 leases\n"));
        s.etcdctl(&["-w", "json", "lease", "list"]).ok();
        s.etcdctl(&["-w", "fields", "lease", "list"]).ok();
        let keep_alive = s.etcdctl(&["lease", "keep-alive", "--once", &lease]);
        assert_eq!(
            keep_alive.ok().stdout,
            format!("lease {lease} keepalived with TTL(100)\n")
        );
        s.etcdctl(&["-w", "json", "lease", "keep-alive", "--once", &second])
            .ok();
        s.etcdctl(&["-w", "json", "lease", "grant", "10"]).ok();
        s.etcdctl(&["-w", "fields", "lease", "grant", "20"]).ok();
        s.etcdctl(&["-w", "table", "lease", "grant", "30"]);
        // Below the minimum TTL (1.5 election timeouts, rounded up): 2 s here.
        let minimum = s.etcdctl(&["lease", "grant", "1"]);
        assert!(minimum.ok().stdout.ends_with("granted with TTL(2s)\n"));
        let revoke = s.etcdctl(&["lease", "revoke", &lease]);
        assert_eq!(revoke.ok().stdout, format!("lease {lease} revoked\n"));
        // Revoking deleted the attached keys, in one revision.
        assert_eq!(s.etcdctl(&["get", "l/", "--prefix"]).ok().stdout, "");
        s.etcdctl(&["-w", "json", "get", "", "--from-key"]).ok();
        let expired = s.etcdctl(&["lease", "timetolive", &lease]);
        assert_eq!(
            expired.ok().stdout,
            format!("lease {lease} already expired\n")
        );
        s.etcdctl(&["-w", "json", "lease", "timetolive", &lease])
            .ok();
        let again = s.etcdctl(&["lease", "revoke", &lease]);
        assert_eq!(
            again.failed_with(1).error_line(),
            "Error: failed to revoke lease (etcdserver: requested lease not found)"
        );
        s.etcdctl(&["lease", "keep-alive", "--once", &lease]);
        s.etcdctl(&["lease", "timetolive", "1234"]).ok();
        s.etcdctl(&["lease", "revoke", "1234"]).failed_with(1);
        s.etcdctl(&["lease", "grant", "0"]).ok();
        s.etcdctl(&["lease", "grant", "--", "-5"]);
        // etcd's largest TTL is 9000000000 s; one more is refused.
        s.etcdctl(&["lease", "grant", "9000000000"]).ok();
        s.etcdctl(&["lease", "grant", "9000000001"]).failed_with(1);
        s.etcdctl(&["lease", "revoke", "zz"]);
    });
}

#[test]
fn lease_expiry_deletes_attached_keys() {
    // A 2 s lease (the minimum) expires by itself and takes its keys with it.
    scenario("lease_expiry", |s| {
        let lease = granted_lease(&s.etcdctl(&["lease", "grant", "2"]));
        s.etcdctl(&["put", "session", "alive", &format!("--lease={lease}")])
            .ok();
        put(s, "durable", "d");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !s
            .etcdctl_unrecorded(&["get", "session"])
            .ok()
            .stdout
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the lease never expired");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            s.etcdctl(&["get", "", "--from-key"]).ok().stdout,
            "durable\nd\n"
        );
        s.etcdctl(&["-w", "json", "get", "session"]).ok();
        s.etcdctl(&["lease", "timetolive", &lease]).ok();
        s.etcdctl(&["lease", "list"]).ok();
    });
}

#[test]
fn member_list_in_every_output_format() {
    // The single member, its name and URLs, in simple, json, table and fields.
    scenario("member_list", |s| {
        let list = s.etcdctl(&["member", "list"]);
        let line = list.ok().stdout.clone();
        assert!(
            line.contains(", started, default, http://127.0.0.1:"),
            "{line}"
        );
        assert!(line.ends_with(&format!(", http://{}, false\n", s.endpoint())));
        s.etcdctl(&["-w", "json", "member", "list"]).ok();
        s.etcdctl(&["-w", "table", "member", "list"]).ok();
        s.etcdctl(&["-w", "fields", "member", "list"]).ok();
    });
}

#[test]
fn endpoint_health_status_and_hashkv() {
    // endpoint health, status and hashkv in every format and with --cluster.
    scenario("endpoint_commands", |s| {
        put(s, "a", "1");
        put(s, "b", "2");
        let health = s.etcdctl(&["endpoint", "health"]);
        assert!(health.ok().stderr.starts_with(&format!(
            "{} is healthy: successfully committed proposal: took = ",
            s.endpoint()
        )));
        for format in ["json", "table", "fields"] {
            s.etcdctl(&["-w", format, "endpoint", "health"]).ok();
        }
        s.etcdctl(&["endpoint", "health", "--cluster"]).ok();
        let status = s.etcdctl(&["endpoint", "status"]);
        assert!(status.ok().stdout.contains(", true, false, "));
        for format in ["json", "table", "fields"] {
            s.etcdctl(&["-w", format, "endpoint", "status"]).ok();
        }
        let cluster = s.etcdctl(&["-w", "json", "endpoint", "status", "--cluster"]);
        assert!(cluster.ok().stdout.contains("\"revision\":3"));
        let hashkv = s.etcdctl(&["endpoint", "hashkv"]);
        assert!(hashkv
            .ok()
            .stdout
            .starts_with(&format!("{}, ", s.endpoint())));
        for format in ["json", "table", "fields"] {
            s.etcdctl(&["-w", format, "endpoint", "hashkv"]).ok();
        }
        s.etcdctl(&["endpoint", "hashkv", "--cluster"]).ok();
        s.etcdctl(&["-w", "json", "endpoint", "hashkv", "--rev", "2"])
            .ok();
        // The hash is the same for the same revision, and changes with a write.
        let hash = |s: &mut Session<'_>, rev: &str| {
            s.etcdctl_unrecorded(&["endpoint", "hashkv", "--rev", rev])
                .ok()
                .stdout
                .clone()
        };
        let (first, again) = (hash(s, "3"), hash(s, "3"));
        assert_eq!(first, again);
        put(s, "c", "3");
        assert_ne!(hash(s, "4"), first);
    });
}

#[test]
fn alarm_defrag_snapshot_move_leader_and_version() {
    // The maintenance commands on a single member, including etcd's odd outputs.
    scenario("maintenance", |s| {
        put(s, "a", "1");
        assert_eq!(s.etcdctl(&["alarm", "list"]).ok().stdout, "");
        // etcd answers Alarm without a header: JSON shows {}, and etcdctl's fields
        // printer dereferences the missing header and panics (exit code 2).
        assert_eq!(
            s.etcdctl(&["-w", "json", "alarm", "list"]).ok().stdout,
            "{}\n"
        );
        s.etcdctl(&["-w", "fields", "alarm", "list"]).failed_with(2);
        assert_eq!(s.etcdctl(&["alarm", "disarm"]).ok().stdout, "");
        s.etcdctl(&["-w", "json", "alarm", "disarm"]).ok();
        let defrag = s.etcdctl(&["defrag"]);
        assert_eq!(
            defrag.ok().stdout,
            format!("Finished defragmenting etcd member[{}]\n", s.endpoint())
        );
        s.etcdctl(&["defrag", "--cluster"]).ok();
        s.etcdctl(&["-w", "json", "defrag"]).ok();
        let path = s.scratch().join("snap.db").display().to_string();
        let snapshot = s.etcdctl(&["snapshot", "save", &path]);
        assert_eq!(snapshot.ok().stdout, format!("Snapshot saved at {path}\n"));
        assert!(std::fs::metadata(&path).expect("snapshot file").len() > 0);
        let member = s.etcdctl(&["member", "list"]).ok().stdout.clone();
        let id = member.split(',').next().expect("member id").to_string();
        let moved = s.etcdctl(&["move-leader", &id]);
        assert_eq!(
            moved.ok().stdout,
            format!("Leadership transferred from {id} to {id}\n")
        );
        s.etcdctl(&["-w", "json", "move-leader", &id]).ok();
        let unknown = s.etcdctl(&["move-leader", "1234"]);
        assert_eq!(
            unknown.failed_with(1).error_line(),
            "Error: etcdserver: bad leader transferee"
        );
        s.etcdctl(&["version"]).ok();
        s.etcdctl(&["-w", "json", "get", "a"]).ok();
    });
}

#[test]
fn lock_runs_a_command_while_holding_a_key() {
    // lock with a command runs it under the lock; without, it prints the lock key.
    scenario("lock", |s| {
        s.masker().lease_keys("mylock/");
        assert_eq!(
            s.etcdctl(&["lock", "mylock", "echo", "hi"]).ok().stdout,
            "hi\n"
        );
        // Released: nothing left under the lock's prefix.
        assert_eq!(s.etcdctl(&["get", "mylock", "--prefix"]).ok().stdout, "");
        let env = s.etcdctl(&["lock", "mylock", "--", "printenv", "ETCD_LOCK_REV"]);
        assert_eq!(env.ok().stdout, "4\n");
        let held = s.spawn_etcdctl(&["lock", "mylock"]);
        wait_for(&held, "mylock/");
        let keys = s.etcdctl(&["get", "mylock", "--prefix", "--keys-only"]);
        assert!(keys.ok().stdout.starts_with("mylock/"));
        s.etcdctl(&["-w", "json", "get", "mylock", "--prefix"]).ok();
        s.finish(held);
        s.etcdctl(&["lock", "--ttl", "5", "otherlock", "echo", "ok"])
            .ok();
    });
}

#[test]
fn elect_campaigns_and_observes_the_leader() {
    // elect campaigns with a proposal and holds it; elect -l observes the leader.
    scenario("elect", |s| {
        s.masker().lease_keys("myelection/");
        let campaign = s.spawn_etcdctl(&["elect", "myelection", "proposal"]);
        wait_for(&campaign, "proposal\n");
        let observe = s.spawn_etcdctl(&["elect", "-l", "myelection"]);
        wait_for(&observe, "proposal\n");
        let json = s.spawn_etcdctl(&["-w", "json", "elect", "-l", "myelection"]);
        wait_for(&json, "\"cHJvcG9zYWw=\"");
        s.etcdctl(&["-w", "json", "get", "myelection", "--prefix"])
            .ok();
        s.finish(json);
        let observed = s.finish(observe);
        assert!(observed.stdout.starts_with("myelection/"));
        assert!(observed.stdout.ends_with("\nproposal\n"));
        let campaigned = s.finish(campaign);
        assert_eq!(campaigned.stdout, observed.stdout);
    });
}

#[test]
fn errors_for_empty_keys_future_revisions_and_oversized_requests() {
    // Empty key, a revision in the future, and a request over --max-request-bytes.
    scenario("errors", |s| {
        let empty = s.etcdctl(&["put", "", "x"]);
        assert_eq!(
            empty.failed_with(1).error_line(),
            "Error: etcdserver: key is not provided"
        );
        s.etcdctl(&["get", ""]).failed_with(1);
        s.etcdctl(&["del", ""]).failed_with(1);
        put(s, "k", "v");
        let future = s.etcdctl(&["get", "k", "--rev", "999"]);
        assert_eq!(
            future.failed_with(1).error_line(),
            "Error: etcdserver: mvcc: required revision is a future revision"
        );
        s.etcdctl(&["-w", "json", "get", "k", "--rev", "3"])
            .failed_with(1);
        // 1.6 MiB: over the default 1.5 MiB limit, under gRPC's receive limit (2 MiB).
        let large = "x".repeat(1_677_722);
        let oversized = s.etcdctl_stdin(&["put", "big"], &large);
        assert_eq!(
            oversized.failed_with(1).error_line(),
            "Error: etcdserver: request is too large"
        );
        assert_eq!(s.etcdctl(&["get", "big"]).ok().stdout, "");
        // Just under the limit passes.
        let fits = "y".repeat(1_500_000);
        s.etcdctl_stdin(&["put", "big"], &fits).ok();
        s.etcdctl(&["get", "big", "--keys-only"]).ok();
        s.etcdctl(&["get", "k", "--sort-by=BOGUS"]);
        s.etcdctl(&["get", "k", "--consistency=x"]);
        s.etcdctl(&["nosuchcommand"]);
    });
}

#[test]
fn request_size_limit_follows_max_request_bytes() {
    // --max-request-bytes 4096 on both: a 4000-byte put passes, 5000 bytes do not.
    scenario_with("request_limit", &[("--max-request-bytes", "4096")], |s| {
        s.etcdctl(&["put", "k", &"a".repeat(4000)]).ok();
        let over = s.etcdctl(&["put", "k", &"b".repeat(5000)]);
        assert_eq!(
            over.failed_with(1).error_line(),
            "Error: etcdserver: request is too large"
        );
        let txn = format!(
            "\nput k1 {}\nput k2 {}\n\n\n",
            "c".repeat(2500),
            "d".repeat(2500)
        );
        s.etcdctl_stdin(&["txn"], &txn).failed_with(1);
        s.etcdctl(&["get", "k", "--print-value-only"]).ok();
    });
}
