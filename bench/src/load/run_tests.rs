//! Every workload runs end to end against the in-process test double (`fake_server`,
//! from net/tests) and reports what it did: operations counted, no errors, sane
//! percentiles, and a JSON line with the fields the issue asks for.

#[path = "../../../net/tests/fake_server/mod.rs"]
mod fake_server;

use fake_server::FakeServer;

use super::config;

fn run(server: &FakeServer, args: &[&str]) -> super::report::Report {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push(format!("--endpoints={}", server.address));
    all.push("--cores=2".to_string());
    let config = config::parse(&all).expect("valid flags");
    super::run(config).expect("the run completes")
}

/// Puts with pipelining over two connections on two cores: exactly --total ops, and the
/// JSON line carries every required field.
#[test]
fn put_workload_counts_and_reports() {
    let server = FakeServer::start();
    let report = run(
        &server,
        &[
            "put",
            "--total=500",
            "--clients=4",
            "--connections=2",
            "--pipeline=4",
            "--key-space=100",
        ],
    );
    assert_eq!(report.ops, 500);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert!(report.latency.value_at_quantile(0.5) > 0);
    let json = report.json();
    for field in [
        "\"workload\":\"put\"",
        "\"ops\":500",
        "\"errors\":0",
        "\"seconds\":",
        "\"ops_per_sec\":",
        "\"p50_us\":",
        "\"p99_us\":",
        "\"p999_us\":",
        "\"max_us\":",
    ] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
    assert!(json.starts_with('{') && json.ends_with('}') && !json.contains('\n'));
}

/// Linearizable and serializable gets, mixed and txn workloads all complete cleanly
/// after prefilling the key space.
#[test]
fn read_mixed_and_txn_workloads() {
    let server = FakeServer::start();
    for args in [
        &[
            "get",
            "--total=300",
            "--clients=2",
            "--connections=2",
            "--key-space=50",
        ][..],
        &[
            "get",
            "--total=300",
            "--consistency=s",
            "--key-space=50",
            "--sequential-keys",
        ],
        &[
            "mixed",
            "--total=300",
            "--read-ratio=0.8",
            "--clients=3",
            "--pipeline=2",
        ],
        &["txn", "--total=200", "--clients=2", "--key-space=20"],
    ] {
        let report = run(&server, args);
        assert_eq!(
            report.ops,
            args[1]
                .trim_start_matches("--total=")
                .parse::<u64>()
                .unwrap()
        );
        assert_eq!(report.errors, 0, "{args:?}: {:?}", report.first_error);
    }
}

/// --duration stops the run near the deadline and --rate paces it.
#[test]
fn duration_and_rate() {
    let server = FakeServer::start();
    let report = run(
        &server,
        &["put", "--duration=500ms", "--rate=200", "--clients=2"],
    );
    assert_eq!(report.errors, 0);
    // 200/s for 0.5 s: about 100 ops; allow for scheduling at both ends.
    assert!((60..=110).contains(&report.ops), "{} ops", report.ops);
    assert!(report.elapsed.as_millis() >= 450, "{:?}", report.elapsed);
}

/// Every put reaches every watcher: events = puts x watchers, with fan-out latency.
#[test]
fn watch_workload_fans_out() {
    let server = FakeServer::start();
    let report = run(
        &server,
        &[
            "watch",
            "--total=100",
            "--watchers=5",
            "--connections=2",
            "--clients=2",
        ],
    );
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    let (puts, _) = report.puts.as_ref().expect("watch reports its puts");
    assert_eq!(*puts, 100);
    assert_eq!(report.ops, 500);
    assert!(report.json().contains("\"watchers\":5"));
}

/// No server: the run fails with a connect error instead of hanging.
#[test]
fn unreachable_server_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config::parse(&[
        "put".to_string(),
        format!("--endpoints=127.0.0.1:{port}"),
        "--connections=2".to_string(),
        "--cores=2".to_string(),
    ])
    .unwrap();
    let error = super::run(config).unwrap_err();
    assert!(error.contains("cannot connect to"), "{error}");
}
