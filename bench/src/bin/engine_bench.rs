//! Engine microbenchmark: applied puts per second, point reads per second and 100-key
//! prefix ranges per second on one core, plus resident memory per key.
//!
//! Run: `cargo run --release -p corekv-bench --bin engine_bench -- [--keys N] [--runs R]`
//! (defaults: 1,000,000 keys of 8 bytes, 256-byte values, 3 runs; medians reported).
//!
//! Each run is a fresh process. Memory is the growth of its resident set while the keys
//! are loaded, compared with the raw key + value bytes. Rates are per CPU-second of the
//! benchmark thread (CLOCK_THREAD_CPUTIME_ID), so other load on the machine does not
//! count against them; wall-clock rates are printed beside them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_engine::{PutRequest, RangeRequest, Store};

/// The allocator the server ships with (net/src/bin/corekv.rs), so that the engine is
/// measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VALUE_BYTES: usize = 256;
const PREFIX_KEYS: u64 = 100;

fn main() -> Result<()> {
    let mut keys: u64 = 1_000_000;
    let mut runs = 3;
    let mut one_run = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keys" => keys = args.next().context("--keys needs a value")?.parse()?,
            "--runs" => runs = args.next().context("--runs needs a value")?.parse()?,
            "--one-run" => one_run = true,
            other => bail!("unknown argument {other:?} (expected --keys N, --runs R)"),
        }
    }
    if one_run {
        let figures = run_once(keys);
        let line: Vec<String> = figures.iter().map(f64::to_string).collect();
        println!("{}", line.join(" "));
        return Ok(());
    }
    println!(
        "engine_bench: {keys} keys x 8 B (random order), values {VALUE_BYTES} B, {runs} runs, \
         rates per CPU-second of one core"
    );
    // Each run is a fresh process, so that resident memory starts from the same place.
    let mut columns: [Vec<f64>; 5] = Default::default();
    for run in 1..=runs {
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["--one-run", "--keys", &keys.to_string()])
            .output()?;
        if !output.status.success() {
            bail!(
                "run {run} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let line = String::from_utf8(output.stdout)?;
        let figures: Vec<f64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        println!(
            "run {run}: puts {:.0}/s  point reads {:.0}/s  100-key prefix ranges {:.0}/s  \
             resident {:.1} B/key ({:.1} B/key right after the load)",
            figures[0], figures[1], figures[2], figures[4], figures[3]
        );
        for (column, figure) in columns.iter_mut().zip(figures) {
            column.push(figure);
        }
    }
    let raw = (8 + VALUE_BYTES) as f64;
    let [puts, reads, prefixes, loaded_bytes_per_key, bytes_per_key] = &mut columns;
    let memory = median(bytes_per_key);
    let loaded = median(loaded_bytes_per_key);
    println!("median: applied puts/s      {:>12.0}", median(puts));
    println!("median: point reads/s       {:>12.0}", median(reads));
    println!(
        "median: prefix ranges/s     {:>12.0}  ({PREFIX_KEYS} keys each)",
        median(prefixes)
    );
    println!(
        "median: resident bytes/key  {memory:>12.1}  (raw {raw} B, ratio {:.2}x)",
        memory / raw
    );
    println!(
        "        right after the load {loaded:>11.1}  (ratio {:.2}x: memory the allocator \
         has freed but not yet returned)",
        loaded / raw
    );
    Ok(())
}

/// One run: [puts/s, point reads/s, prefix ranges/s, resident bytes per key right
/// after the load, resident bytes per key once the allocator has returned what it
/// freed].
fn run_once(keys: u64) -> [f64; 5] {
    let before = resident_bytes();
    let (put_rate, rss_growth, store) = load(keys);
    // The slab, the hash index and the B-tree grew by reallocation while loading, and
    // mimalloc hands the blocks they left to the kernel only after its purge delay (1 s
    // by default, 10 s in the server): the store's own footprint is measured once they
    // are returned.
    // SAFETY: mimalloc's collection entry point, on the allocator this program uses.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let settled = resident_bytes().saturating_sub(before);
    let read_rate = point_reads(&store, keys);
    drop(store);
    let prefix_rate = prefix_ranges(keys);
    [
        put_rate,
        read_rate,
        prefix_rate,
        rss_growth as f64 / keys as f64,
        settled as f64 / keys as f64,
    ]
}

/// The i-th key of a random-looking order of distinct 8-byte keys (a bijection on u64).
fn key(i: u64) -> [u8; 8] {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes()
}

fn load(keys: u64) -> (f64, u64, Store) {
    let before = resident_bytes();
    let mut store = Store::default();
    let mut request = PutRequest {
        key: vec![0; 8],
        value: vec![b'v'; VALUE_BYTES],
        ..Default::default()
    };
    let timer = Timer::start();
    for i in 0..keys {
        request.key.copy_from_slice(&key(i));
        request.value[..8].copy_from_slice(&i.to_le_bytes());
        store.put(&request).expect("bench put");
    }
    let rate = timer.rate(keys);
    let growth = resident_bytes().saturating_sub(before);
    (rate, growth, store)
}

fn point_reads(store: &Store, keys: u64) -> f64 {
    let reads = keys.min(1_000_000);
    let mut request = RangeRequest {
        key: vec![0; 8],
        ..Default::default()
    };
    let mut found = 0u64;
    let timer = Timer::start();
    for i in 0..reads {
        // Visit keys in a different order than they were written.
        request.key.copy_from_slice(&key((i * 7919) % keys));
        found += store.range(&request).expect("bench read").kvs.len() as u64;
    }
    let rate = timer.rate(reads);
    assert_eq!(found, reads, "every key read back");
    rate
}

/// Keys grouped in prefixes of 100; each range reads one whole prefix.
fn prefix_ranges(keys: u64) -> f64 {
    let groups = (keys / PREFIX_KEYS).max(1);
    let mut store = Store::default();
    let mut request = PutRequest {
        key: vec![0; 8],
        value: vec![b'v'; VALUE_BYTES],
        ..Default::default()
    };
    for group in 0..groups {
        for i in 0..PREFIX_KEYS {
            request.key[..4].copy_from_slice(&(group as u32).to_be_bytes());
            request.key[4..].copy_from_slice(&(i as u32).to_be_bytes());
            store.put(&request).expect("bench put");
        }
    }
    let ranges = 100_000u64;
    let mut range = RangeRequest::default();
    let timer = Timer::start();
    for r in 0..ranges {
        let group = ((r * 7919) % groups) as u32;
        range.key = group.to_be_bytes().to_vec();
        range.range_end = (group + 1).to_be_bytes().to_vec();
        let response = store.range(&range).expect("bench range");
        assert_eq!(response.kvs.len() as u64, PREFIX_KEYS);
    }
    timer.rate(ranges)
}

/// Measures both CPU time of this thread and wall time.
struct Timer {
    cpu: Duration,
    wall: Instant,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            cpu: thread_cpu_time(),
            wall: Instant::now(),
        }
    }

    /// Operations per CPU-second; the wall-clock rate goes to stderr.
    fn rate(&self, operations: u64) -> f64 {
        let wall = operations as f64 / self.wall.elapsed().as_secs_f64();
        eprintln!("  wall-clock rate {wall:.0}/s");
        operations as f64 / (thread_cpu_time() - self.cpu).as_secs_f64()
    }
}

fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer we pass, which is valid.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(result, 0, "CLOCK_THREAD_CPUTIME_ID is available on Linux");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// This process's resident set size, from /proc/self/statm.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
