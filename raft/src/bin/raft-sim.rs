//! raft-sim: runs the deterministic simulator over many seeds (soak) or replays one seed
//! with a full trace.
//!
//!   raft-sim --seeds 100000 [--start 0] [--fault-ms 3000]
//!   raft-sim --seed 1234 --trace

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use corekv_raft::sim::{run_seed_catching, SimOptions};

fn main() -> ExitCode {
    let mut seeds: u64 = 1_000;
    let mut start: u64 = 0;
    let mut single: Option<u64> = None;
    let mut trace = false;
    let mut options = SimOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seeds" => seeds = value("--seeds"),
            "--start" => start = value("--start"),
            "--seed" => single = Some(value("--seed")),
            "--fault-ms" => options.fault_ms = value("--fault-ms"),
            "--trace" => trace = true,
            "--help" | "-h" => {
                println!(
                    "usage: raft-sim [--seeds N] [--start S] [--fault-ms MS] | --seed N [--trace]"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other}; try --help");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let mut print = |line: &str| {
        if trace {
            // A closed pipe (`| head`) just ends the output; the run itself goes on.
            let _ = writeln!(stdout, "{line}");
        }
    };
    if let Some(seed) = single {
        return match run_seed_catching(seed, &options, &mut print) {
            Ok(report) => {
                let _ = writeln!(std::io::stdout(), "seed {seed} passed: {report:?}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("{failure}");
                ExitCode::FAILURE
            }
        };
    }
    let began = Instant::now();
    let mut failures = 0u64;
    for seed in start..start + seeds {
        let seed_began = Instant::now();
        if let Err(failure) = run_seed_catching(seed, &options, &mut |_| {}) {
            eprintln!("{failure}");
            failures += 1;
        }
        let took = seed_began.elapsed();
        if took.as_secs() >= 1 {
            eprintln!("seed {seed} took {:.1}s", took.as_secs_f64());
        }
        let done = seed - start + 1;
        if done % 1_000 == 0 {
            eprintln!(
                "{done} seeds, {failures} failed, {:.1}s",
                began.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{} passed, {failures} failed ({seeds} seeds from {start} in {:.1}s)",
        seeds - failures,
        began.elapsed().as_secs_f64()
    );
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
