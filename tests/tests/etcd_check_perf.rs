//! `etcdctl check perf --load=l` against corekv: 500 clients writing 8000 puts/s of
//! 256-byte keys and 1 KiB values for 60 s, then one delete of the prefix; etcdctl passes
//! a cluster whose throughput is above 90% of that, whose slowest request took at most
//! 500 ms and whose latency stddev is at most 100 ms, with no errors.
//!
//! On a 2-core machine the check's own client (500 gRPC connections and a rate limiter,
//! in the same 2 cores as the server) cannot issue 8000 puts/s: real etcd 3.4 reaches
//! 5100-6100 there and fails the throughput line, corekv 5200-5600 (2026-11-21); the
//! servers' latencies are far below the check's limits. The figure is the client's, so
//! the test runs the check against real etcd and against corekv, one after the other on
//! the same machine, and requires of corekv: no request errors, the latency lines pass,
//! its latency stddev is no larger than etcd's, and either the whole check passes or
//! its throughput is within the run-to-run noise of etcd's (at least 80% of it; the
//! same server varies by ±10% between runs here). On a machine where etcd passes,
//! corekv must pass too.
//!
//! The two checks take about 130 s: the slowest test of the suite, alone in its own test
//! binary. It loads the `corekv` binary the harness finds (`cargo test` builds it with
//! the test profile); `COREKV_BIN=target/release/corekv` measures a release build.

use std::time::{Duration, Instant};

use corekv_tests::compat::{CompatServer, Target};
use corekv_tests::etcd::{etcd_available, etcdctl_command};
use corekv_tests::process;

/// etcdctl's workload: s (150 puts/s, 50 clients), m (1000, 200), l (8000, 500),
/// xl (15000, 1000); each runs 60 s.
const LOAD: &str = "l";

/// 60 s of load, the delete of everything written, and room for a slow machine.
const CHECK_PERF_TIMEOUT: Duration = Duration::from_secs(240);

/// What one check printed.
struct Verdict {
    passed: bool,
    throughput: Option<u64>,
    lines: Vec<String>,
}

/// Runs the check against a fresh `target` server.
fn check(target: Target) -> Verdict {
    let server = CompatServer::start(target, "check-perf", &[]).expect("start the server");
    let load = format!("--load={LOAD}");
    let started = Instant::now();
    let output = process::run(
        etcdctl_command(&server.endpoint, &["check", "perf", &load]),
        None,
        CHECK_PERF_TIMEOUT,
    );
    let elapsed = started.elapsed();
    // The progress bar redraws itself with carriage returns; the verdict follows it.
    let lines: Vec<String> = output
        .stdout
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| {
            ["PASS", "FAIL", "Slowest", "Stddev"]
                .iter()
                .any(|start| line.starts_with(start))
        })
        .map(str::to_string)
        .collect();
    eprintln!(
        "etcdctl check perf {load} against {target:?}: exit code {:?} after {elapsed:.1?}\n{}",
        output.code,
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|line| line.contains("Throughput")),
        "check perf printed no verdict against {target:?}; stderr:\n{}\nserver log:\n{}",
        output.stderr,
        server.log_text()
    );
    assert!(
        !lines
            .iter()
            .any(|line| line.starts_with("FAIL: ERROR") || line == "FAIL: too many errors"),
        "requests failed during check perf against {target:?}:\n{}",
        lines.join("\n")
    );
    // "PASS: Throughput is 8000 writes/s" or "FAIL: Throughput too low: 5089 writes/s".
    let throughput = lines
        .iter()
        .find(|line| line.contains("Throughput"))
        .and_then(|line| line.split_whitespace().rev().nth(1))
        .and_then(|number| number.parse().ok());
    Verdict {
        passed: output.success() && lines.last().map(String::as_str) == Some("PASS"),
        throughput,
        lines,
    }
}

#[test]
fn check_perf_large_load_does_as_well_as_etcd() {
    // corekv passes etcdctl check perf --load=l's latency lines and matches etcd's
    // throughput on the same machine (or passes outright).
    if !etcd_available("check_perf_large_load_does_as_well_as_etcd") {
        return;
    }
    let etcd = check(Target::Etcd);
    let corekv = check(Target::Corekv);
    for line in ["Slowest", "Stddev"] {
        assert!(
            corekv
                .lines
                .iter()
                .any(|l| l.starts_with("PASS") && l.contains(line)),
            "corekv failed check perf's {line} line:\n{}",
            corekv.lines.join("\n")
        );
    }
    // Compared with etcd: the spread of all request latencies. (The single slowest
    // request of a run is not compared: on a shared 2-core machine it is set by the
    // check's own 500 clients being descheduled, and moves from run to run by more
    // than the servers differ: etcd's was 157 and 197 ms in two CI runs, corekv's 88 ms
    // on a quiet machine and 158 and 256 ms in CI runs where its stddev was half of
    // etcd's. The check's own limit on it, 500 ms, is asserted above.)
    let stddev = |verdict: &Verdict| {
        verdict
            .lines
            .iter()
            .find(|line| line.contains("Stddev is"))
            .and_then(|line| line.trim_end_matches('s').rsplit(' ').next())
            .and_then(|seconds| seconds.parse::<f64>().ok())
    };
    match (stddev(&etcd), stddev(&corekv)) {
        (Some(etcd_stddev), Some(corekv_stddev)) => assert!(
            corekv_stddev <= etcd_stddev.max(0.01),
            "corekv's latency stddev is {corekv_stddev} s, etcd's {etcd_stddev} s"
        ),
        other => panic!(
            "no stddev figure (etcd, corekv): {other:?}\n{:?}\n{:?}",
            etcd.lines, corekv.lines
        ),
    }
    if corekv.passed {
        return;
    }
    assert!(
        !etcd.passed,
        "etcd passes check perf on this machine but corekv does not:\n{}",
        corekv.lines.join("\n")
    );
    let (Some(etcd_rate), Some(corekv_rate)) = (etcd.throughput, corekv.throughput) else {
        panic!(
            "no throughput figure: etcd {:?}, corekv {:?}",
            etcd.lines, corekv.lines
        );
    };
    assert!(
        corekv_rate * 10 >= etcd_rate * 8,
        "corekv managed {corekv_rate} writes/s, etcd {etcd_rate} on the same machine"
    );
}
