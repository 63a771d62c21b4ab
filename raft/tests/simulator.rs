//! The deterministic simulator over thousands of seeds: safety invariants after every
//! simulated millisecond, liveness after healing, and linearizable client histories.
//! A failing seed prints the exact command that replays it with a trace.

use corekv_raft::sim::{run_seed_catching, SimOptions};

/// Seeds per test function; the functions run in parallel on the test harness threads.
const SEEDS_PER_SHARD: u64 = 300;

fn run_shard(shard: u64) {
    let options = SimOptions::default();
    let mut failures = Vec::new();
    let mut ops = 0;
    for seed in shard * SEEDS_PER_SHARD..(shard + 1) * SEEDS_PER_SHARD {
        match run_seed_catching(seed, &options, &mut |_| {}) {
            Ok(report) => ops += report.ops_completed,
            Err(failure) => failures.push(failure.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        ops > SEEDS_PER_SHARD * 50,
        "the workload barely ran: {ops} operations"
    );
}

// Seeds 0..300 keep every invariant, converge after healing and stay linearizable.
#[test]
fn seeds_shard_0() {
    run_shard(0);
}

// Seeds 300..600, as above.
#[test]
fn seeds_shard_1() {
    run_shard(1);
}

// Seeds 600..900, as above.
#[test]
fn seeds_shard_2() {
    run_shard(2);
}

// Seeds 900..1200, as above.
#[test]
fn seeds_shard_3() {
    run_shard(3);
}

// Seeds 1200..1500, as above.
#[test]
fn seeds_shard_4() {
    run_shard(4);
}

// Seeds 1500..1800, as above.
#[test]
fn seeds_shard_5() {
    run_shard(5);
}

// Seeds 1800..2100, as above.
#[test]
fn seeds_shard_6() {
    run_shard(6);
}

// Seeds 2100..2400, as above.
#[test]
fn seeds_shard_7() {
    run_shard(7);
}

// The same seed produces the same run, event for event: replay is exact.
#[test]
fn a_seed_replays_identically() {
    let options = SimOptions::default();
    let mut first = Vec::new();
    let mut second = Vec::new();
    let a = run_seed_catching(42, &options, &mut |line| first.push(line.to_string()));
    let b = run_seed_catching(42, &options, &mut |line| second.push(line.to_string()));
    assert!(a.is_ok() && b.is_ok());
    assert!(first.len() > 1000, "the trace records every delivery");
    assert_eq!(first, second);
}

// Across seeds the fault planner really exercises crashes, partitions, membership
// changes, snapshots and leader transfers (the simulator is not vacuous).
#[test]
fn faults_are_actually_injected() {
    let options = SimOptions::default();
    let (mut crashes, mut partitions, mut confs, mut snaps, mut transfers, mut five) =
        (0, 0, 0, 0, 0, 0);
    for seed in 10_000..10_050 {
        let r = run_seed_catching(seed, &options, &mut |_| {}).unwrap_or_else(|f| panic!("{f}"));
        crashes += r.crashes;
        partitions += r.partitions;
        confs += r.conf_changes_applied;
        snaps += r.snapshots_installed;
        transfers += r.transfers;
        five += u64::from(r.members_initial == 5);
    }
    assert!(crashes > 20 && partitions > 20 && confs > 100 && snaps > 20 && transfers > 10);
    assert!(five > 10 && five < 40, "both 3- and 5-member clusters run");
}
