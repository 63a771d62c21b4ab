//! corekvctl end to end against the in-process test double (`fake_server`, from
//! net/tests): every command's output in simple and json form, etcdctl's txn syntax on
//! stdin, watches replaying history, and one-line errors with etcdctl's exit codes.

#[path = "../../net/tests/fake_server/mod.rs"]
mod fake_server;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use fake_server::FakeServer;

fn ctl(server: &FakeServer, args: &[&str]) -> Output {
    ctl_stdin(server, args, "")
}

fn ctl_stdin(server: &FakeServer, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .arg(format!("--endpoints={}", server.address))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corekvctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("corekvctl exits")
}

fn ok(server: &FakeServer, args: &[&str]) -> String {
    let output = ctl(server, args);
    assert!(
        output.status.success(),
        "corekvctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// put and get in simple form, with every get option etcdctl has.
#[test]
fn put_and_get() {
    let server = FakeServer::start();
    assert_eq!(ok(&server, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(&server, &["put", "foo1", "bar1"]), "OK\n");
    assert_eq!(ok(&server, &["put", "foo2", "bar2"]), "OK\n");
    assert_eq!(ok(&server, &["put", "zoo", "z"]), "OK\n");
    assert_eq!(ok(&server, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(ok(&server, &["get", "nothing"]), "");
    assert_eq!(
        ok(&server, &["get", "foo", "--prefix"]),
        "foo\nbar\nfoo1\nbar1\nfoo2\nbar2\n"
    );
    assert_eq!(
        ok(&server, &["get", "foo", "foo2"]),
        "foo\nbar\nfoo1\nbar1\n"
    );
    assert_eq!(
        ok(&server, &["get", "foo2", "--from-key"]),
        "foo2\nbar2\nzoo\nz\n"
    );
    assert_eq!(
        ok(&server, &["get", "--prefix", "foo", "--limit=1"]),
        "foo\nbar\n"
    );
    assert_eq!(
        ok(&server, &["get", "--prefix", "foo", "--keys-only"]),
        "foo\n\nfoo1\n\nfoo2\n\n"
    );
    assert_eq!(
        ok(&server, &["get", "--prefix", "foo", "--count-only"]),
        "3\n"
    );
    assert_eq!(
        ok(
            &server,
            &[
                "get",
                "--prefix",
                "foo",
                "--sort-by=MODIFY",
                "--order=DESCEND"
            ]
        ),
        "foo2\nbar2\nfoo1\nbar1\nfoo\nbar\n"
    );
    assert_eq!(ok(&server, &["get", "foo", "--print-value-only"]), "bar\n");
    assert_eq!(
        ok(&server, &["put", "foo", "new", "--prev-kv"]),
        "OK\nfoo\nbar\n"
    );
    assert_eq!(ok(&server, &["get", "foo", "--rev=2"]), "foo\nbar\n");
    assert_eq!(
        ok(&server, &["get", "foo", "--consistency=s"]),
        "foo\nnew\n"
    );
    assert_eq!(
        ok(&server, &["get", "", "--prefix", "--keys-only"]),
        "foo\n\nfoo1\n\nfoo2\n\nzoo\n\n"
    );
}

/// json output is etcd's JSON: header, base64 keys and values, zero fields omitted.
#[test]
fn json_output() {
    let server = FakeServer::start();
    let put = ok(&server, &["-w", "json", "put", "foo", "bar"]);
    assert!(
        put.starts_with(
            r#"{"header":{"cluster_id":49413,"member_id":64078,"revision":2,"raft_term":1}"#
        ),
        "{put}"
    );
    let get = ok(&server, &["get", "foo", "-w", "json"]);
    assert_eq!(
        get,
        r#"{"header":{"cluster_id":49413,"member_id":64078,"revision":2,"raft_term":1},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"YmFy"}],"count":1}"#.to_string() + "\n"
    );
    let del = ok(&server, &["--write-out=json", "del", "foo"]);
    assert!(del.contains(r#""deleted":1"#), "{del}");
}

/// del with --prefix and --prev-kv prints the count, then the deleted pairs.
#[test]
fn delete() {
    let server = FakeServer::start();
    ok(&server, &["put", "a/1", "x"]);
    ok(&server, &["put", "a/2", "y"]);
    ok(&server, &["put", "b", "z"]);
    assert_eq!(
        ok(&server, &["del", "a/", "--prefix", "--prev-kv"]),
        "2\na/1\nx\na/2\ny\n"
    );
    assert_eq!(ok(&server, &["del", "nothing"]), "0\n");
    assert_eq!(ok(&server, &["get", "b"]), "b\nz\n");
}

/// A txn in etcdctl's syntax on stdin runs the branch its compares choose.
#[test]
fn txn_from_stdin() {
    let server = FakeServer::start();
    ok(&server, &["put", "key1", "1"]);
    let script = "mod(\"key1\") > \"0\"\n\nput key1 \"overwrote-key1\"\nget key1\n\nput key1 \"created-key1\"\n";
    let output = ctl_stdin(&server, &["txn"], script);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "SUCCESS\n\nOK\n\nkey1\noverwrote-key1\n"
    );
    let script = "val(\"key1\") = \"nope\"\n\nput key1 a\n\ndel key1\n";
    let output = ctl_stdin(&server, &["txn"], script);
    assert_eq!(String::from_utf8(output.stdout).unwrap(), "FAILURE\n\n1\n");
    let output = ctl_stdin(&server, &["txn", "-i"], "\nput k v\n\n");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n"
    );
    let output = ctl_stdin(&server, &["txn"], "bogus(\"k\") = \"1\"\n");
    assert_eq!(output.status.code(), Some(128));
}

/// watch --rev replays history with prev_kv, then streams live events.
#[test]
fn watch_history_then_live() {
    let server = FakeServer::start();
    ok(&server, &["put", "w/a", "1"]);
    ok(&server, &["put", "w/a", "2"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args([
            &format!("--endpoints={}", server.address),
            "watch",
            "w/",
            "--prefix",
            "--rev=2",
            "--prev-kv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line").expect("readable");
    assert_eq!(
        [next(), next(), next()],
        ["PUT".to_string(), "w/a".to_string(), "1".to_string()]
    );
    assert_eq!(
        [next(), next(), next(), next(), next()],
        ["PUT", "w/a", "1", "w/a", "2"].map(String::from)
    );
    // History is delivered, so the watch exists: a new write must now stream live.
    ok(&server, &["del", "w/a"]);
    assert_eq!(
        [next(), next(), next(), next(), next()],
        ["DELETE", "w/a", "2", "w/a", ""].map(String::from)
    );
    child.kill().expect("stop watch");
    child.wait().expect("reaped");
}

/// A watch below the compact revision ends with etcdctl's exit code 5.
#[test]
fn watch_on_compacted_revision() {
    let server = FakeServer::start();
    ok(&server, &["put", "k", "1"]);
    ok(&server, &["put", "k", "2"]);
    assert_eq!(ok(&server, &["compaction", "3"]), "compacted revision 3\n");
    let output = ctl(&server, &["watch", "k", "--rev=1"]);
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("compacted"), "{stderr}");
}

/// Every lease subcommand, in etcdctl's words.
#[test]
fn leases() {
    let server = FakeServer::start();
    let granted = ok(&server, &["lease", "grant", "100"]);
    let id = granted
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(" granted with TTL(100s)\n"))
        .unwrap_or_else(|| panic!("unexpected: {granted}"))
        .to_string();
    ok(&server, &["put", "leased", "v", &format!("--lease={id}")]);
    // Seconds left are truncated, so 99 or 100 depending on timing.
    let ttl = ok(&server, &["lease", "timetolive", &id, "--keys"]);
    let prefix = format!("lease {id} granted with TTL(100s), remaining(");
    assert!(ttl.starts_with(&prefix), "{ttl}");
    assert!(ttl.ends_with("s), attached keys([leased])\n"), "{ttl}");
    assert_eq!(
        ok(&server, &["lease", "list"]),
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        ok(&server, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(100)\n")
    );
    assert_eq!(
        ok(&server, &["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(ok(&server, &["get", "leased"]), "");
    assert_eq!(
        ok(&server, &["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    let output = ctl(&server, &["lease", "revoke", &id]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "Error: etcdserver: requested lease not found\n"
    );
}

/// compaction and endpoint status in both formats.
#[test]
fn compaction_and_status() {
    let server = FakeServer::start();
    ok(&server, &["put", "k", "1"]);
    ok(&server, &["put", "k", "2"]);
    assert_eq!(
        ok(&server, &["compaction", "--physical", "2"]),
        "compacted revision 2\n"
    );
    let output = ctl(&server, &["get", "k", "--rev=1"]);
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "Error: etcdserver: mvcc: required revision has been compacted\n"
    );
    let status = ok(&server, &["endpoint", "status"]);
    assert!(
        status.starts_with(&format!(
            "{}, fa4e, fake-server (test double), ",
            server.address
        )),
        "{status}"
    );
    assert!(status.contains(", true, false, 1, 3, 3, "), "{status}");
    let json = ok(&server, &["endpoint", "status", "-w", "json"]);
    assert!(
        json.starts_with(&format!(
            r#"[{{"Endpoint":"{}","Status":{{"header":"#,
            server.address
        )),
        "{json}"
    );
}

/// No server: one line on stderr and exit code 2; a server error: its message and 1;
/// bad arguments: 128.
#[test]
fn errors_are_one_line_with_exit_codes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args([&format!("--endpoints=127.0.0.1:{port}"), "get", "k"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("Error: cannot connect to 127.0.0.1:{port}: ")),
        "{stderr}"
    );

    let server = FakeServer::start();
    let output = ctl(&server, &["get", "k", "--rev=99"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "Error: etcdserver: mvcc: required revision is a future revision\n"
    );
    let output = ctl(&server, &["get", "k", "--bogus"]);
    assert_eq!(output.status.code(), Some(128));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "Error: unknown flag: --bogus\n"
    );
    let output = ctl(&server, &["put", "", "v"]);
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "Error: etcdserver: key is not provided\n"
    );
}
