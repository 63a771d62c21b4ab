//! Crash recovery: crash the simulated disk at every operation of an
//! append/rotate/snapshot workload, and at random points of random workloads, and check
//! that recovery returns exactly a prefix of what was appended that holds every
//! acknowledged append, and that the log keeps working afterwards.

mod common;

use common::{append_after_recovery, check_prefix, recover, run_script, small_config, Step};
use corekv_wal::sim::{CrashMode, SimDisk};
use proptest::prelude::*;

const MODES: [CrashMode; 3] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TearUnsynced,
];

fn script() -> Vec<Step> {
    vec![
        Step::Entries {
            appenders: 4,
            payload: 200,
        },
        Step::Entries {
            appenders: 1,
            payload: 3000,
        },
        Step::Conflict { back: 2 },
        Step::Entries {
            appenders: 16,
            payload: 100,
        },
        Step::Snapshot,
        Step::Entries {
            appenders: 8,
            payload: 500,
        },
        Step::Truncate { back: 3 },
        Step::Entries {
            appenders: 32,
            payload: 150,
        },
        Step::Entries {
            appenders: 2,
            payload: 2000,
        },
        Step::Snapshot,
        Step::Entries {
            appenders: 4,
            payload: 100,
        },
        Step::Entries {
            appenders: 1,
            payload: 3500,
        },
        Step::Entries {
            appenders: 1,
            payload: 10,
        },
        Step::Conflict { back: 1 },
        Step::InstallSnapshot { ahead: 3 },
        Step::Entries {
            appenders: 40,
            payload: 300,
        },
        Step::Entries {
            appenders: 1,
            payload: 3500,
        },
        Step::Snapshot,
        Step::Entries {
            appenders: 3,
            payload: 700,
        },
    ]
}

fn crash_and_check(seed: u64, crash_at: u64, mode: CrashMode, script: &[Step]) {
    let config = small_config();
    let disk = SimDisk::new(seed);
    disk.set_yield_on_io(true);
    disk.crash_at_operation(crash_at);
    let log = run_script(&disk, &config, script);
    disk.restart(mode);
    let (recovered, replay_from) = recover(&disk, &config).unwrap_or_else(|error| {
        panic!("seed {seed} crash at {crash_at} {mode:?}: recovery failed: {error}")
    });
    check_prefix(&log, &recovered, replay_from);
    append_after_recovery(&disk, &config, &recovered, replay_from);
}

/// Without faults the script is acknowledged in full, rotates segments and releases some.
#[test]
fn script_runs_clean() {
    let config = small_config();
    let disk = SimDisk::new(7);
    disk.set_yield_on_io(true);
    let log = run_script(&disk, &config, &script());
    assert!(log.iter().all(|submitted| submitted.acked));
    let (recovered, replay_from) = recover(&disk, &config).expect("clean recovery");
    assert!(replay_from > 0, "a snapshot was taken");
    assert_eq!(check_prefix(&log, &recovered, replay_from), log.len());
    assert!(recovered.torn_tail.is_none());
    let segments: Vec<_> = disk
        .paths()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .collect();
    let first = segments.first().expect("segments exist");
    assert!(
        !first.to_string_lossy().contains("/0000000000000000-"),
        "segment 0 was released: {segments:?}"
    );
}

/// A crash at every single disk operation, under each crash mode, recovers a valid prefix.
#[test]
fn crash_at_every_operation() {
    let script = script();
    let config = small_config();
    let disk = SimDisk::new(7);
    disk.set_yield_on_io(true);
    run_script(&disk, &config, &script);
    let operations = disk.operation_count();
    eprintln!("script operations: {operations}");
    assert!(
        operations > 40,
        "the script does real work ({operations} operations)"
    );
    for crash_at in 1..=operations {
        crash_and_check(crash_at, crash_at, CrashMode::LoseUnsynced, &script);
        crash_and_check(crash_at, crash_at, CrashMode::KeepUnsynced, &script);
        // Several tear patterns per crash point.
        for seed in 0..4 {
            crash_and_check(
                crash_at * 8 + seed,
                crash_at,
                CrashMode::TearUnsynced,
                &script,
            );
        }
    }
}

/// An EIO or ENOSPC at every single disk operation of the script (the process keeps
/// running; the log poisons itself or the failing call reports the error), followed by a
/// restart with or without power loss, recovers a prefix holding every acknowledged
/// append, and the log works again.
#[test]
fn error_at_every_operation() {
    let script = script();
    let config = small_config();
    let probe = SimDisk::new(7);
    probe.set_yield_on_io(true);
    run_script(&probe, &config, &script);
    let operations = probe.operation_count();
    for fail_at in 1..=operations {
        for (errno, mode) in [
            (libc::EIO, CrashMode::LoseUnsynced),
            (libc::ENOSPC, CrashMode::KeepUnsynced),
        ] {
            let disk = SimDisk::new(fail_at);
            disk.set_yield_on_io(true);
            disk.fail_operation(fail_at, errno);
            let log = run_script(&disk, &config, &script);
            disk.restart(mode);
            let (recovered, replay_from) = recover(&disk, &config).unwrap_or_else(|error| {
                panic!("errno {errno} at operation {fail_at}: recovery failed: {error}")
            });
            check_prefix(&log, &recovered, replay_from);
            append_after_recovery(&disk, &config, &recovered, replay_from);
        }
    }
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1usize..40, 0usize..1500).prop_map(|(appenders, payload)| Step::Entries { appenders, payload }),
        1 => (0u64..6).prop_map(|back| Step::Conflict { back }),
        1 => (0u64..6).prop_map(|back| Step::Truncate { back }),
        1 => Just(Step::Snapshot),
        1 => (1u64..5).prop_map(|ahead| Step::InstallSnapshot { ahead }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random workloads crashed at a random operation under a random crash mode recover a
    /// prefix holding every acknowledged append.
    #[test]
    fn random_workload_random_crash(
        script in proptest::collection::vec(step_strategy(), 1..14),
        crash_fraction in 0.0f64..1.0,
        mode_number in 0usize..3,
        seed in any::<u64>(),
    ) {
        let config = small_config();
        let probe = SimDisk::new(seed);
        probe.set_yield_on_io(true);
        run_script(&probe, &config, &script);
        let crash_at = 1 + (probe.operation_count() as f64 * crash_fraction) as u64;
        crash_and_check(seed, crash_at, MODES[mode_number], &script);
    }
}
