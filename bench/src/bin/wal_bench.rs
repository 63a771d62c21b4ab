//! wal_bench: durable append throughput and latency of corekv-wal on the real disk.
//!
//! For each appender count (default 1, 8, 64, 512) it opens a fresh log, runs that many
//! concurrent tasks on one glommio executor, each appending one 300-byte entry at a time
//! and awaiting durability, and reports records/s, payload MB/s, fdatasyncs/s and p50/p99
//! append latency. In the same run it measures the raw latency of one 4 KiB O_DIRECT
//! write + fdatasync on the same file system, both into fallocated space (what a WAL
//! segment append does) and over already written blocks, so the ratio is measured, not
//! assumed.
//!
//! Usage: wal_bench [--dir PATH] [--seconds N] [--appenders 1,8,64,512] [--raw-samples N]
//!                  [--zero-fill true|false]
//! Needs locked memory for io_uring buffers: run `ulimit -l unlimited` first if allowed.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_wal::{GlommioDisk, LogIndex, SnapshotStore, Term, Wal, WalConfig, WalRecord};
use glommio::io::{DmaFile, OpenOptions};
use hdrhistogram::Histogram;

const RECORD_PAYLOAD_BYTES: usize = 300;
const RAW_FILE_BYTES: u64 = 64 * 1024 * 1024;
const RAW_WRITE_BYTES: usize = 4096;

struct Options {
    dir: PathBuf,
    seconds: f64,
    appenders: Vec<usize>,
    raw_samples: usize,
    zero_fill: bool,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        dir: std::env::temp_dir().join(format!("corekv-wal-bench-{}", std::process::id())),
        seconds: 5.0,
        appenders: vec![1, 8, 64, 512],
        raw_samples: 3000,
        zero_fill: true,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let value = arguments
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => options.dir = PathBuf::from(value),
            "--seconds" => options.seconds = value.parse().context("--seconds")?,
            "--raw-samples" => options.raw_samples = value.parse().context("--raw-samples")?,
            "--zero-fill" => options.zero_fill = value.parse().context("--zero-fill true|false")?,
            "--appenders" => {
                options.appenders = value
                    .split(',')
                    .map(|count| count.trim().parse().context("--appenders"))
                    .collect::<Result<_>>()?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(options)
}

/// glommio's error type is not `Sync`; carry it as an `io::Error`.
fn io<T>(result: Result<T, glommio::GlommioError<()>>) -> std::io::Result<T> {
    result.map_err(std::io::Error::from)
}

fn micros(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// Latency of one aligned 4 KiB write followed by fdatasync, sequentially through a file.
/// `preallocated`: the file was fallocated (unwritten extents, like a fresh WAL segment);
/// otherwise every block was written once before (an overwrite).
async fn raw_write_sync(path: &Path, samples: usize, preallocated: bool) -> Result<Histogram<u64>> {
    let file: DmaFile = io(OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(path)
        .await)
    .context("create raw test file")?;
    io(file.pre_allocate(RAW_FILE_BYTES, false).await).context("fallocate")?;
    if !preallocated {
        let chunk = 1024 * 1024;
        let mut offset = 0u64;
        while offset < (samples * RAW_WRITE_BYTES) as u64 {
            let buffer = file.alloc_dma_buffer(chunk);
            io(file.write_at(buffer, offset).await).context("fill")?;
            offset += chunk as u64;
        }
    }
    io(file.fdatasync().await).context("fdatasync")?;
    let mut histogram = Histogram::<u64>::new(3)?;
    for sample in 0..samples {
        let mut buffer = file.alloc_dma_buffer(RAW_WRITE_BYTES);
        buffer.as_bytes_mut().fill(sample as u8 | 1);
        let started = Instant::now();
        io(file
            .write_at(buffer, (sample * RAW_WRITE_BYTES) as u64)
            .await)
        .context("write")?;
        io(file.fdatasync().await).context("fdatasync")?;
        histogram.record(started.elapsed().as_nanos() as u64)?;
    }
    io(file.close().await).context("close")?;
    std::fs::remove_file(path).ok();
    Ok(histogram)
}

/// User plus system CPU time this process has used (every thread, io_uring workers too).
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass, which is zero-initialised and
    // owned by this frame.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |time: libc::timeval| time.tv_sec as u64 * 1_000_000 + time.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

struct RunResult {
    cpu: Duration,
    snapshot_duration: Option<Duration>,
    records: u64,
    elapsed: Duration,
    syncs: u64,
    batches: u64,
    latency: Histogram<u64>,
}

async fn run_appenders(
    dir: &Path,
    appenders: usize,
    seconds: f64,
    zero_fill: bool,
    snapshot_bytes: usize,
) -> Result<RunResult> {
    std::fs::remove_dir_all(dir).ok();
    let config = WalConfig {
        zero_fill_segments: zero_fill,
        ..WalConfig::default()
    };
    let (wal, flusher, _) = Wal::open(Rc::new(GlommioDisk), dir, config, LogIndex(0))
        .await
        .context("open WAL")?;
    let flusher_task = glommio::spawn_local(flusher.run());
    let wal = Rc::new(wal);
    let next_index = Rc::new(Cell::new(1u64));
    let measuring = Rc::new(Cell::new(false));
    let stop = Rc::new(Cell::new(false));
    let latency = Rc::new(RefCell::new(Histogram::<u64>::new(3)?));
    let records = Rc::new(Cell::new(0u64));
    let payload: Rc<[u8]> = vec![0xab; RECORD_PAYLOAD_BYTES].into();
    let mut tasks = Vec::with_capacity(appenders);
    for _ in 0..appenders {
        let (wal, next_index, measuring, stop, latency, records, payload) = (
            wal.clone(),
            next_index.clone(),
            measuring.clone(),
            stop.clone(),
            latency.clone(),
            records.clone(),
            payload.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            while !stop.get() {
                let index = next_index.get();
                next_index.set(index + 1);
                let counted = measuring.get();
                let started = Instant::now();
                let record = WalRecord::Entry {
                    index: LogIndex(index),
                    term: Term(1),
                    data: &payload,
                };
                wal.append(&[record]).await?;
                if counted {
                    latency
                        .borrow_mut()
                        .record(started.elapsed().as_nanos() as u64)?;
                    records.set(records.get() + 1);
                }
            }
            anyhow::Ok(())
        }));
    }
    let warmup = Duration::from_secs_f64((seconds / 5.0).min(1.0));
    glommio::timer::sleep(warmup).await;
    let stats_before = wal.stats();
    let cpu_before = cpu_time();
    let started = Instant::now();
    measuring.set(true);
    let snapshot_save = if snapshot_bytes > 0 {
        let store = SnapshotStore::new(Rc::new(GlommioDisk), dir.join("snap"), 1);
        let data = vec![0x5a_u8; snapshot_bytes];
        Some(glommio::spawn_local(async move {
            let started = Instant::now();
            store.save(LogIndex(1), Term(1), &data).await?;
            anyhow::Ok(started.elapsed())
        }))
    } else {
        None
    };
    glommio::timer::sleep(Duration::from_secs_f64(seconds)).await;
    let snapshot_duration = match snapshot_save {
        Some(task) => Some(task.await?),
        None => None,
    };
    measuring.set(false);
    let elapsed = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    let stats_after = wal.stats();
    stop.set(true);
    for task in tasks {
        task.await?;
    }
    let batches = stats_after.batches_synced - stats_before.batches_synced;
    let segments = stats_after.segments_created - stats_before.segments_created;
    drop(wal);
    flusher_task.await;
    std::fs::remove_dir_all(dir).ok();
    let latency = latency.borrow().clone();
    Ok(RunResult {
        cpu,
        snapshot_duration,
        records: records.get(),
        elapsed,
        // One fdatasync per batch; a new segment adds one for the file and one for the folder.
        syncs: batches + 2 * segments,
        batches,
        latency,
    })
}

fn main() -> Result<()> {
    let options = parse_options()?;
    std::fs::create_dir_all(&options.dir).context("create bench dir")?;
    let bench_dir = options.dir.clone();
    let executor = glommio::LocalExecutorBuilder::default()
        .name("wal-bench")
        .spawn(move || async move {
            let raw_path = options.dir.join("raw-4k.dat");
            let raw_fresh = raw_write_sync(&raw_path, options.raw_samples, true).await?;
            let raw_overwrite = raw_write_sync(&raw_path, options.raw_samples, false).await?;
            println!(
                "raw 4KiB write+fdatasync into fallocated space: p50 {:.1} us  p99 {:.1} us",
                micros(&raw_fresh, 0.5),
                micros(&raw_fresh, 0.99)
            );
            println!(
                "raw 4KiB write+fdatasync over written blocks:   p50 {:.1} us  p99 {:.1} us",
                micros(&raw_overwrite, 0.5),
                micros(&raw_overwrite, 0.99)
            );
            println!(
                "{:>9} {:>12} {:>9} {:>10} {:>10} {:>10} {:>10} {:>13} {:>13}",
                "appenders", "records/s", "MB/s", "fsyncs/s", "p50 us", "p99 us", "max us", "records/batch", "cpu us/record"
            );
            let mut single_p50 = None;
            for &appenders in &options.appenders {
                let run = run_appenders(
                    &options.dir.join(format!("wal-{appenders}")),
                    appenders,
                    options.seconds,
                    options.zero_fill,
                    0,
                )
                .await?;
                let seconds = run.elapsed.as_secs_f64();
                let p50 = micros(&run.latency, 0.5);
                if appenders == 1 {
                    single_p50 = Some(p50);
                }
                println!(
                    "{:>9} {:>12.0} {:>9.1} {:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>13.1} {:>13.2}",
                    appenders,
                    run.records as f64 / seconds,
                    (run.records as f64 * RECORD_PAYLOAD_BYTES as f64) / seconds / 1e6,
                    run.syncs as f64 / seconds,
                    p50,
                    micros(&run.latency, 0.99),
                    run.latency.max() as f64 / 1000.0,
                    run.records as f64 / run.batches.max(1) as f64,
                    run.cpu.as_secs_f64() * 1e6 / run.records.max(1) as f64,
                );
            }
            // Taking a snapshot must not stall writes: 64 appenders while a 64 MiB snapshot
            // is written, fsynced and renamed on the same core and disk.
            let run = run_appenders(
                &options.dir.join("wal-snapshot"),
                64,
                options.seconds,
                options.zero_fill,
                64 * 1024 * 1024,
            )
            .await?;
            println!(
                "64 appenders during a 64 MiB snapshot save ({:.0} ms): records/s {:.0}  p99 {:.1} us  max {:.1} us",
                run.snapshot_duration.unwrap_or_default().as_secs_f64() * 1000.0,
                run.records as f64 / run.elapsed.as_secs_f64(),
                micros(&run.latency, 0.99),
                run.latency.max() as f64 / 1000.0,
            );
            if let Some(p50) = single_p50 {
                println!(
                    "1-appender p50 / raw p50: {:.2} (fallocated)  {:.2} (overwrite)",
                    p50 / micros(&raw_fresh, 0.5),
                    p50 / micros(&raw_overwrite, 0.5)
                );
            }
            anyhow::Ok(())
        });
    let result = io(io(executor)
        .context("start glommio executor (raise ulimit -l)")?
        .join())
    .context("executor panicked")?;
    std::fs::remove_dir_all(&bench_dir).ok();
    result
}
