//! The outcome of a run: counts, elapsed time, latency percentiles from an
//! hdrhistogram (microseconds, 3 significant digits) and the CPU time the load
//! generator and the `--server-pid` processes spent, printed as one JSON line or a
//! short human summary; and the progress bar drawn on a terminal while the run goes.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::config::{Config, Protocol, Stop, Workload};
use super::cpu::Usage;

/// Highest latency recorded exactly (larger ones saturate): one minute.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// A latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Report {
    /// The configuration it ran with.
    pub config: Config,
    /// Operations completed without error (watch: events delivered to watchers).
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latency of every successful operation (watch: put to event, per watcher).
    pub latency: Histogram<u64>,
    /// Watch workload: the puts that produced the events, and their latency.
    pub puts: Option<(u64, Histogram<u64>)>,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
    /// CPU time spent during the measured phase.
    pub cpu: Usage,
}

impl Report {
    /// Completed operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ops as f64 / seconds
        } else {
            0.0
        }
    }

    /// CPU seconds per 100,000 completed operations.
    fn per_100k_ops(&self, cpu: Duration) -> f64 {
        if self.ops == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 100_000.0 / self.ops as f64
        }
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q)
        }
    }

    /// The one JSON line of `--json`.
    pub fn json(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"workload\":\"{}\",\"protocol\":\"{}\",\"ops\":{},\"errors\":{},\"seconds\":{:.3},\"ops_per_sec\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{:.1}",
            c.workload.name(),
            c.protocol.name(),
            self.ops,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            self.quantile(0.5),
            self.quantile(0.9),
            self.quantile(0.99),
            self.quantile(0.999),
            self.latency.max(),
            self.latency.mean(),
        );
        let _ = write!(
            out,
            ",\"clients\":{},\"connections\":{},\"pipeline\":{},\"{}\":{},\"key_size\":{},\"value_size\":{},\"key_space\":{},\"sequential_keys\":{},\"serializable\":{}",
            c.clients,
            c.connections,
            c.pipeline,
            self.executors_name(),
            self.executors(),
            c.key_size,
            c.value_size,
            c.key_space,
            c.sequential_keys,
            c.serializable,
        );
        if let Some(rate) = c.rate {
            let _ = write!(out, ",\"rate\":{rate}");
        }
        let _ = write!(
            out,
            ",\"client_cpu_seconds\":{:.3},\"client_cpu_seconds_per_100k_ops\":{:.3}",
            self.cpu.client.as_secs_f64(),
            self.per_100k_ops(self.cpu.client),
        );
        if let Some(server) = self.cpu.server {
            let pids: Vec<String> = c.server_pids.iter().map(u32::to_string).collect();
            let _ = write!(
                out,
                ",\"server_pids\":[{}],\"server_cpu_seconds\":{:.3},\"server_cpu_seconds_per_100k_ops\":{:.3}",
                pids.join(","),
                server.as_secs_f64(),
                self.per_100k_ops(server),
            );
        }
        if c.workload == Workload::Mixed {
            let _ = write!(out, ",\"read_ratio\":{}", c.read_ratio);
        }
        if let Some((puts, latency)) = &self.puts {
            let _ = write!(
                out,
                ",\"watchers\":{},\"puts\":{},\"put_p50_us\":{},\"put_p99_us\":{}",
                c.watchers,
                puts,
                if latency.is_empty() {
                    0
                } else {
                    latency.value_at_quantile(0.5)
                },
                if latency.is_empty() {
                    0
                } else {
                    latency.value_at_quantile(0.99)
                },
            );
        }
        if let Some(error) = &self.first_error {
            out.push_str(",\"first_error\":\"");
            for ch in error.chars() {
                match ch {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
        out
    }

    /// The human summary.
    pub fn human(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} over {}: {} clients, {} connections, pipeline {}, {} {}, {}-byte keys, {}-byte values, {} keys{}",
            c.workload.name(),
            match c.protocol {
                Protocol::Binary => "binary protocol",
                Protocol::EtcdGrpc => "etcd gRPC",
            },
            c.clients,
            c.connections,
            c.pipeline,
            self.executors(),
            self.executors_name(),
            c.key_size,
            c.value_size,
            c.key_space,
            if c.serializable { ", serializable reads" } else { "" },
        );
        let what = if c.workload == Workload::Watch {
            "events"
        } else {
            "ops"
        };
        let _ = writeln!(
            out,
            "{} {what} in {:.3} s = {:.0} {what}/s, {} errors",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            self.errors
        );
        let _ = writeln!(
            out,
            "latency (us): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.quantile(0.5),
            self.quantile(0.9),
            self.quantile(0.99),
            self.quantile(0.999),
            self.latency.max()
        );
        if let Some((puts, latency)) = &self.puts {
            let _ = writeln!(
                out,
                "{} watchers; {} puts, put latency p50 {} us p99 {} us",
                c.watchers,
                puts,
                if latency.is_empty() {
                    0
                } else {
                    latency.value_at_quantile(0.5)
                },
                if latency.is_empty() {
                    0
                } else {
                    latency.value_at_quantile(0.99)
                },
            );
        }
        let _ = write!(
            out,
            "client CPU {:.2} s ({:.3} s per 100k ops)",
            self.cpu.client.as_secs_f64(),
            self.per_100k_ops(self.cpu.client)
        );
        match self.cpu.server {
            Some(server) => {
                let _ = writeln!(
                    out,
                    "; server CPU {:.2} s ({:.3} s per 100k ops, pids {:?})",
                    server.as_secs_f64(),
                    self.per_100k_ops(server),
                    c.server_pids
                );
            }
            None => out.push('\n'),
        }
        if let Some(error) = &self.first_error {
            let _ = writeln!(out, "first error: {error}");
        }
        out
    }

    /// What runs the load: glommio executors (one per core) or tokio worker threads.
    fn executors_name(&self) -> &'static str {
        match self.config.protocol {
            Protocol::Binary => "cores",
            Protocol::EtcdGrpc => "threads",
        }
    }

    fn executors(&self) -> usize {
        match self.config.protocol {
            Protocol::Binary => self.config.cores,
            Protocol::EtcdGrpc => self.config.threads,
        }
    }
}

/// Whether stderr is a terminal (the progress bar is drawn only then).
pub fn stderr_is_terminal() -> bool {
    // SAFETY: isatty only inspects the file descriptor; 2 is always a valid argument.
    unsafe { libc::isatty(2) == 1 }
}

/// Draws a progress bar on stderr every 200 ms until `done` is set.
pub fn progress(
    stop: Stop,
    completed: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let width = 40;
        while !done.load(Ordering::Acquire) {
            std::thread::park_timeout(Duration::from_millis(200));
            let ops = completed.load(Ordering::Relaxed);
            let elapsed = start.elapsed().as_secs_f64();
            let fraction = match stop {
                Stop::Total(total) => ops as f64 / total.max(1) as f64,
                Stop::Duration(duration) => elapsed / duration.as_secs_f64().max(1e-9),
            }
            .clamp(0.0, 1.0);
            let filled = (fraction * width as f64) as usize;
            eprint!(
                "\r[{}{}] {:3.0}% {} ops {:.0} ops/s ",
                "#".repeat(filled),
                ".".repeat(width - filled),
                fraction * 100.0,
                ops,
                ops as f64 / elapsed.max(1e-9)
            );
        }
        eprint!("\r{}\r", " ".repeat(width + 60));
    })
}
