//! `corekv-bench`, the load generator: drives a corekv server over the binary protocol,
//! or corekv or real etcd over etcd's v3 gRPC API (`--protocol etcd-grpc`, [`grpc`]),
//! with one of the workloads of [`config::Workload`] and reports throughput, latency
//! percentiles (hdrhistogram) and the CPU time both sides spent ([`cpu`]).
//!
//! Layout of a binary-protocol run: one glommio executor per core (`--cores`, pinned), each opening its
//! share of the `--connections` (connection `c` on core `c % cores`) and running the
//! clients assigned to those connections (client `i` on connection `i % connections`),
//! each client with `--pipeline` requests in flight. Cores connect, prefill and create
//! watchers, meet at a start line, then run until `--total` operations (claimed from a
//! shared counter) or `--duration`; their histograms are merged at the end.
//!
//! Invariants: the measured phase starts only when every core is ready; latencies are
//! recorded only for successful operations, failures are counted; nothing is shared
//! between cores but atomic counters. Never: retry a failed request (that would hide
//! errors), or sleep to pace anything but `--rate`.
//!
//! The etcd gRPC mode runs the same workloads with the same keys, counters, start line
//! and report on a tokio runtime instead (see [`grpc`]), so that one tool puts the same
//! load on corekv and on etcd.
//!
//! CPU time is sampled from /proc at the start line and after the last task ends.

pub mod config;
pub mod cpu;
pub mod grpc;
pub mod keys;
pub mod report;
pub mod unary;
pub mod worker;

#[cfg(test)]
mod run_tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use glommio::{LocalExecutorBuilder, Placement};

use config::{Config, Protocol, Workload};
use report::{histogram, Report};
use worker::{CoreResult, Gate, Plan, Shared};

/// Splits connections, clients and watchers over the cores that get work.
pub fn plans(config: &Config) -> Vec<Plan> {
    let cores = config.cores.min(config.connections).max(1);
    let mut plans: Vec<Plan> = (0..cores)
        .map(|core| Plan {
            core,
            cores,
            connections: Vec::new(),
            clients: Vec::new(),
            watchers: Vec::new(),
        })
        .collect();
    for connection in 0..config.connections {
        plans[connection % cores].connections.push(connection);
    }
    for client in 0..config.clients {
        let connection = client % config.connections;
        plans[connection % cores].clients.push((client, connection));
    }
    if config.workload == Workload::Watch {
        for watcher in 0..config.watchers {
            let connection = watcher % config.connections;
            plans[connection % cores]
                .watchers
                .push((watcher, connection));
        }
    }
    plans
}

/// Runs the benchmark and returns what it measured.
pub fn run(config: Config) -> Result<Report, String> {
    match config.protocol {
        Protocol::Binary => run_binary(config),
        Protocol::EtcdGrpc => grpc::run(config),
    }
}

/// The binary protocol's run: glommio executors, one per core.
fn run_binary(config: Config) -> Result<Report, String> {
    // Unreadable server pids are a usage error: find out before connecting.
    cpu::sample(&config.server_pids)?;
    worker::init_epoch();
    let plans = plans(&config);
    let cores = plans.len();
    let shared = Arc::new(Shared::default());
    let gate = Arc::new(Gate::default());
    let allowed = allowed_cpus();
    let mut handles = Vec::new();
    let mut spawn_error = None;
    for plan in plans {
        let core = plan.core;
        let config = config.clone();
        let shared = shared.clone();
        let gate = gate.clone();
        let placement = match cpu_for(core, cores, &allowed) {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{core}"))
            .spawn(move || async move { worker::run_core(config, plan, shared, gate).await });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                spawn_error = Some(format!("cannot start executor {core}: {error}"));
                break;
            }
        }
    }
    gate.wait_arrivals(handles.len());
    // A server that went away since the check above aborts the run at the start line.
    let cpu_before = cpu::sample(&config.server_pids);
    let started = Instant::now();
    gate.open(spawn_error.is_none() && cpu_before.is_ok());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = (report::stderr_is_terminal() && spawn_error.is_none())
        .then(|| report::progress(config.stop, shared.completed.clone(), done.clone()));
    let mut results: Vec<CoreResult> = Vec::new();
    let mut failures = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(error)) => failures.push(error),
            Err(error) => failures.push(format!("executor failed: {error}")),
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before.map(|before| before.usage_since(&config.server_pids));
    done.store(true, Ordering::Release);
    if let Some(progress) = progress {
        progress.thread().unpark();
        let _ = progress.join();
    }
    if let Some(error) = spawn_error {
        return Err(error);
    }
    let cpu = cpu?;
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    merge(config, results, elapsed, cpu)
}

/// Adds up what the executors (or clients) measured into the report.
fn merge(
    config: Config,
    results: Vec<CoreResult>,
    elapsed: std::time::Duration,
    cpu: cpu::Usage,
) -> Result<Report, String> {
    let mut latency = histogram();
    let mut put_latency = histogram();
    let (mut ops, mut errors, mut puts) = (0, 0, 0);
    let mut first_error = None;
    for result in results {
        ops += result.ops;
        errors += result.errors;
        puts += result.puts;
        latency
            .add(&result.latency)
            .map_err(|error| format!("merging histograms: {error}"))?;
        put_latency
            .add(&result.put_latency)
            .map_err(|error| format!("merging histograms: {error}"))?;
        first_error = first_error.or(result.first_error);
    }
    Ok(Report {
        puts: (config.workload == Workload::Watch).then_some((puts, put_latency)),
        config,
        ops,
        errors,
        elapsed,
        latency,
        first_error,
        cpu,
    })
}

/// The CPU executor `core` of `cores` runs on. With fewer executors than CPUs they take
/// the last CPUs: a corekv server that owns the machine keeps its shard on the first
/// one, and a generator sharing that CPU would measure its own contention.
fn cpu_for(core: usize, cores: usize, allowed: &[usize]) -> Option<usize> {
    if allowed.is_empty() {
        return None;
    }
    let first = allowed.len().saturating_sub(cores);
    Some(allowed[(first + core) % allowed.len()])
}

/// The CPUs this process may run on (a container's CPU set need not start at 0);
/// empty if the set cannot be read, and executors then float.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data that may be zeroed; sched_getaffinity writes at
    // most size_of::<cpu_set_t>() bytes into it, and CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_take_the_last_cpus_when_there_are_fewer_than_cpus() {
        let cpus = [0, 1, 2, 3];
        assert_eq!(cpu_for(0, 1, &cpus), Some(3));
        assert_eq!(
            (0..2).map(|c| cpu_for(c, 2, &cpus)).collect::<Vec<_>>(),
            [Some(2), Some(3)]
        );
        assert_eq!(
            (0..4).map(|c| cpu_for(c, 4, &cpus)).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        // More executors than CPUs wrap around; no CPU set means no pinning.
        assert_eq!(cpu_for(5, 6, &[4, 7]), Some(7));
        assert_eq!(cpu_for(0, 1, &[]), None);
    }

    /// Connections go round-robin to cores, clients to connections, and no core gets
    /// a client whose connection it does not open.
    #[test]
    fn plans_spread_work() {
        let mut config =
            config::parse(&["put".to_string(), "--clients=5".to_string()]).expect("config");
        config.cores = 2;
        config.connections = 3;
        let plans = plans(&config);
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].connections, vec![0, 2]);
        assert_eq!(plans[1].connections, vec![1]);
        for plan in &plans {
            for (_, connection) in &plan.clients {
                assert!(plan.connections.contains(connection));
            }
        }
        let clients: usize = plans.iter().map(|p| p.clients.len()).sum();
        assert_eq!(clients, 5);
        config.connections = 1;
        assert_eq!(
            super::plans(&config).len(),
            1,
            "one connection uses one core"
        );
    }
}
