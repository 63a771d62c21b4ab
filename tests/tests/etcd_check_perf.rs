//! `etcdctl check perf --load=l` must pass against corekv: 500 clients writing 8000
//! puts/s of 256-byte keys and 1 KiB values for 60 s, then one delete of the prefix;
//! etcdctl passes a cluster whose throughput is above 90% of that, whose slowest request
//! took at most 500 ms and whose latency stddev is at most 100 ms, with no errors.
//!
//! The gate: while [`GATEWAY_READY`] is false, corekv does not serve etcd's gRPC API yet,
//! and the check runs against the real etcd instead, to prove the test itself works. etcd
//! 3.4 does not pass the large load on a small machine (on the 2-core machine this was
//! written on it managed about 4000 puts/s), so against etcd the test only requires that
//! the check ran to its verdict without request errors; it prints the verdict. When the
//! gateway lands, set `GATEWAY_READY = true`: the check then runs against corekv and must
//! print PASS. `COREKV_COMPAT_TARGET=corekv` tries corekv without flipping it.
//!
//! The check takes about 65 s (60 s of load, then the delete): this is the slowest test of
//! the suite, and it runs alone in its own test binary. It loads the `corekv` binary the
//! harness finds (`cargo test` builds it with the test profile: debug assertions, no
//! LTO); `COREKV_BIN=target/release/corekv` measures a release build instead.

use std::time::{Duration, Instant};

use corekv_tests::compat::{CompatServer, Target};
use corekv_tests::etcd::{etcd_available, etcdctl_command};
use corekv_tests::process;

/// Flip to true once corekv serves etcd's gRPC API on its client URLs (see the top).
const GATEWAY_READY: bool = false;

/// etcdctl's workload: s (150 puts/s, 50 clients), m (1000, 200), l (8000, 500),
/// xl (15000, 1000); each runs 60 s.
const LOAD: &str = "l";

/// 60 s of load, the delete of everything written, and room for a slow machine.
const CHECK_PERF_TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn check_perf_passes_the_large_load() {
    // etcdctl check perf --load=l prints PASS against corekv (runs to a verdict on etcd).
    if !etcd_available("check_perf_passes_the_large_load") {
        return;
    }
    let target = Target::second(GATEWAY_READY);
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
    let verdict: Vec<&str> = output
        .stdout
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|line| {
            ["PASS", "FAIL", "Slowest", "Stddev"]
                .iter()
                .any(|start| line.starts_with(start))
        })
        .collect();
    eprintln!(
        "etcdctl check perf {load} against {target:?}: exit code {:?} after {elapsed:.1?}\n{}",
        output.code,
        verdict.join("\n")
    );
    assert!(
        verdict.iter().any(|line| line.contains("Throughput")),
        "check perf printed no verdict; stderr:\n{}\nserver log:\n{}",
        output.stderr,
        server.log_text()
    );
    assert!(
        !verdict
            .iter()
            .any(|line| line.starts_with("FAIL: ERROR") || *line == "FAIL: too many errors"),
        "requests failed during check perf:\n{}",
        verdict.join("\n")
    );
    match target {
        Target::Corekv => {
            assert!(
                output.success() && verdict.last() == Some(&"PASS"),
                "corekv failed check perf {load}:\n{}\nstderr:\n{}",
                verdict.join("\n"),
                output.stderr
            );
        }
        Target::Etcd => {
            let passed = output.success() && verdict.last() == Some(&"PASS");
            let failed = output.code == Some(1) && verdict.last() == Some(&"FAIL");
            assert!(passed || failed, "no verdict: {output}");
        }
    }
}
