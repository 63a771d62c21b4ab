//! The etcd gRPC mode (`--protocol etcd-grpc`): the same workloads, keys, counters,
//! start line and report as the binary protocol's, sent over etcd's v3 gRPC API with
//! the messages generated in `corekv_net::gateway::pb`, so that one tool puts the
//! same load on corekv's client URLs and on real etcd.
//!
//! Layout of a run: `--threads` single-threaded tokio runtimes ("lanes"), each on a
//! thread of its own. It opens `--connections` HTTP/2 connections (connection `c` to
//! endpoint `c % endpoints`, on lane `c % threads`), as etcd's own benchmark tool
//! does; client `i` uses connection `i % connections` and runs `--pipeline` tasks on
//! that connection's lane, each with one request in flight. A connection and its
//! clients share a thread, so the requests its clients send while the connection task
//! waits its turn leave in one write, as a Go client's queued frames do (a
//! work-stealing runtime runs the connection task right after each request instead). The measured calls (put,
//! range, txn) go through [`super::unary`], which writes a call's frames together as
//! etcd's Go clients do; the watch workload's streams use tonic's generated client
//! over `--connections` channels of their own. Prefill and watch creation happen
//! before the start line; CPU time is sampled at the start line and when the last task
//! has ended.
//!
//! Invariants: as in the binary mode, latencies are recorded only for successful
//! operations and failures are counted; a transport failure (the connection is gone)
//! ends the task that met it, as a lost connection does in the binary mode, while an
//! error the server answered with is counted and the task goes on. Never: retry a
//! request, or sleep to pace anything but `--rate`.
//!
//! Each client's tasks share one [`Stats`] behind a mutex (held only to record, never
//! across an await), so that thousands of tasks do not each carry a histogram.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corekv_net::gateway::pb::etcdserverpb::{
    compare, request_op, watch_client::WatchClient, watch_request, Compare, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

use super::config::{Config, Stop, Workload};
use super::cpu;
use super::keys::{self, Rng};
use super::report::{self, Report};
use super::unary::UnaryConnection;
use super::worker::{self, CoreResult, Shared, Stats, WATCH_DRAIN_TIMEOUT, WATCH_POLL_INTERVAL};

/// How long opening one connection (TCP and the HTTP/2 handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the runtime may take to stop after the run (tasks stuck on a dead
/// connection are abandoned, not waited for).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the benchmark over etcd's gRPC API and returns what it measured.
pub fn run(config: Config) -> Result<Report, String> {
    // Unreadable server pids are a usage error: find out before connecting.
    cpu::sample(&config.server_pids)?;
    worker::init_epoch();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the tokio runtime: {error}"))?;
    let lanes = Lanes::start(config.threads)?;
    let config = Arc::new(config);
    let outcome = runtime.block_on(drive(config.clone(), &lanes));
    lanes.stop();
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    let (results, elapsed, cpu) = outcome?;
    let config = Arc::try_unwrap(config).unwrap_or_else(|shared| (*shared).clone());
    super::merge(config, results, elapsed, cpu)
}

/// Single-threaded runtimes, each on a thread of its own, that run the connections
/// and the tasks that use them (see the module doc).
struct Lanes {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Lanes {
    fn start(count: usize) -> Result<Lanes, String> {
        let mut lanes = Lanes {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for lane in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| format!("cannot start a tokio runtime: {error}"))?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            lanes.handles.push(runtime.handle().clone());
            lanes.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("bench-grpc-{lane}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
                })
                .map_err(|error| format!("cannot start a client thread: {error}"))?;
            lanes.threads.push(thread);
        }
        Ok(lanes)
    }

    /// The lane of connection `connection`.
    fn of(&self, connection: usize) -> &tokio::runtime::Handle {
        &self.handles[connection % self.handles.len()]
    }

    fn stop(self) {
        drop(self.stops);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Connects, prefills, creates the watchers, runs the measured phase and collects
/// every client's and watcher's results.
async fn drive(
    config: Arc<Config>,
    lanes: &Lanes,
) -> Result<(Vec<CoreResult>, Duration, cpu::Usage), String> {
    let connections = connect_all(&config, lanes, UnaryConnection::connect).await?;
    let shared = Arc::new(Shared::default());
    let mut results = Vec::new();

    if config.prefill
        && matches!(
            config.workload,
            Workload::Get | Workload::Mixed | Workload::Txn
        )
    {
        results.push(prefill(&config, lanes, &connections).await?);
    }

    // Watchers are created (and confirmed) before the start line so that every put
    // is seen.
    let mut watches = Vec::new();
    let mut watch_setup = Stats::new();
    if config.workload == Workload::Watch {
        let channels = connect_all(&config, lanes, connect).await?;
        for watcher in 0..config.watchers {
            let channel = channels[watcher % channels.len()].clone();
            match create_watch(channel).await {
                Ok(watch) => watches.push(watch),
                Err(error) => watch_setup.error(&error),
            }
        }
    }
    results.push(watch_setup.into_result());

    let workers_total = config.clients * config.pipeline;
    let cpu_before = cpu::sample(&config.server_pids)?;
    let started = Instant::now();
    let deadline = match config.stop {
        Stop::Duration(duration) => Some(started + duration),
        Stop::Total(_) => None,
    };
    let done = Arc::new(AtomicBool::new(false));
    let progress = report::stderr_is_terminal()
        .then(|| report::progress(config.stop, shared.completed.clone(), done.clone()));

    let mut client_stats = Vec::new();
    let mut tasks = Vec::new();
    for client in 0..config.clients {
        let connection = client % connections.len();
        let kv = connections[connection].clone();
        let stats = Arc::new(Mutex::new(Stats::new()));
        for slot in 0..config.pipeline {
            let worker = client * config.pipeline + slot;
            tasks.push(lanes.of(connection).spawn(worker_loop(
                config.clone(),
                kv.clone(),
                shared.clone(),
                stats.clone(),
                Rng::new(config.seed, worker as u64),
                deadline,
                workers_total,
                started,
            )));
        }
        client_stats.push(stats);
    }
    let watch_tasks: Vec<_> = watches
        .into_iter()
        .enumerate()
        .map(|(watcher, watch)| lanes.of(watcher).spawn(watch_loop(watch, shared.clone())))
        .collect();

    let mut failures = Vec::new();
    for task in tasks {
        if let Err(error) = task.await {
            failures.push(format!("a client task failed: {error}"));
        }
    }
    for task in watch_tasks {
        match task.await {
            Ok(stats) => results.push(stats.into_result()),
            Err(error) => failures.push(format!("a watch task failed: {error}")),
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before.usage_since(&config.server_pids);
    done.store(true, Ordering::Release);
    if let Some(progress) = progress {
        progress.thread().unpark();
        let _ = progress.join();
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    for stats in client_stats {
        let stats = Arc::try_unwrap(stats)
            .map_err(|_| "bench: a task outlived the run".to_string())?
            .into_inner()
            .map_err(|_| "bench: a client task panicked while recording".to_string())?;
        results.push(stats.into_result());
    }
    Ok((results, elapsed, cpu))
}

/// Opens every connection at once with `connect`; the first that fails fails the run.
async fn connect_all<T, F, Fut>(
    config: &Config,
    lanes: &Lanes,
    connect: F,
) -> Result<Vec<T>, String>
where
    T: Send + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>> + Send + 'static,
{
    let mut pending = Vec::new();
    for connection in 0..config.connections {
        let endpoint = config.endpoints[connection % config.endpoints.len()].clone();
        let connecting = connect(endpoint.clone());
        // The connection's own task starts on the lane that runs this.
        pending.push(lanes.of(connection).spawn(async move {
            connecting
                .await
                .map_err(|error| format!("cannot connect to {endpoint}: {error}"))
        }));
    }
    let mut channels = Vec::new();
    for task in pending {
        let channel = task
            .await
            .map_err(|error| format!("a connect task failed: {error}"))??;
        channels.push(channel);
    }
    Ok(channels)
}

/// One gRPC channel over one HTTP/2 connection to `endpoint` (`host:port`, plain
/// text, as etcd's clients speak to `http://` client URLs).
async fn connect(endpoint: String) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|error| error_chain(&error))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|error| error_chain(&error))
}

/// An error and its sources on one line (tonic's own message is only
/// "transport error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A failed call as one line: the gRPC code, etcd's message, and the transport's
/// reason when the call never got an answer.
#[derive(Debug)]
pub struct CallError(Status);

impl CallError {
    /// Whether the connection failed (no answer from the server): tonic marks such
    /// statuses with the transport error as their source, which statuses decoded from
    /// a server's answer never have.
    pub fn is_transport(&self) -> bool {
        matches!(
            self.0.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ) && std::error::Error::source(&self.0).is_some()
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self.0.message();
        match std::error::Error::source(&self.0).map(error_chain) {
            // tonic's transport statuses repeat their source's first words.
            Some(chain) if chain.starts_with(message) => write!(f, "{:?}: {chain}", self.0.code()),
            Some(chain) => write!(f, "{:?}: {message} ({chain})", self.0.code()),
            None => write!(f, "{:?}: {message}", self.0.code()),
        }
    }
}

impl From<Status> for CallError {
    fn from(status: Status) -> CallError {
        CallError(status)
    }
}

/// Writes the key space once, every worker slot (at least one per connection) in
/// flight at once; its failures are counted like the run's.
async fn prefill(
    config: &Arc<Config>,
    lanes: &Lanes,
    connections: &[UnaryConnection],
) -> Result<CoreResult, String> {
    let next = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(Stats::new()));
    let slots = (config.clients * config.pipeline).max(connections.len());
    let mut tasks = Vec::new();
    for slot in 0..slots {
        let connection = slot % connections.len();
        let kv = connections[connection].clone();
        let (next, stats, config) = (next.clone(), stats.clone(), config.clone());
        tasks.push(lanes.of(connection).spawn(async move {
            let value = keys::value(config.value_size);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= config.key_space {
                    return;
                }
                if let Err(error) = put(&kv, keys::key(index, config.key_size), value.clone()).await
                {
                    lock(&stats).error(&error);
                    if error.is_transport() {
                        return;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await
            .map_err(|error| format!("a prefill task failed: {error}"))?;
    }
    let stats = Arc::try_unwrap(stats)
        .map_err(|_| "bench: a prefill task outlived the prefill".to_string())?
        .into_inner()
        .map_err(|_| "bench: a prefill task panicked while recording".to_string())?;
    Ok(stats.into_result())
}

fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats
        .lock()
        .expect("bench: no task panics while holding the stats lock")
}

#[allow(clippy::too_many_arguments)]
async fn worker_loop(
    config: Arc<Config>,
    kv: UnaryConnection,
    shared: Arc<Shared>,
    stats: Arc<Mutex<Stats>>,
    mut rng: Rng,
    deadline: Option<Instant>,
    workers_total: usize,
    started: Instant,
) {
    let interval = config
        .rate
        .map(|rate| Duration::from_secs_f64(workers_total as f64 / rate));
    let mut due = started;
    let value = keys::value(config.value_size);
    loop {
        if let Stop::Total(total) = config.stop {
            if shared.claimed.fetch_add(1, Ordering::Relaxed) >= total {
                break;
            }
        }
        if let Some(interval) = interval {
            due += interval;
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            break;
        }
        let began = if interval.is_some() { due } else { now };
        let index = if config.sequential_keys {
            shared.sequence.fetch_add(1, Ordering::Relaxed) % config.key_space
        } else {
            rng.below(config.key_space)
        };
        let key = keys::key(index, config.key_size);
        let result = match config.workload {
            Workload::Put => put(&kv, key, value.clone()).await,
            Workload::Get => get(&kv, key, config.serializable).await,
            Workload::Mixed => {
                if rng.unit() < config.read_ratio {
                    get(&kv, key, config.serializable).await
                } else {
                    put(&kv, key, value.clone()).await
                }
            }
            Workload::Txn => txn(&kv, key, value.clone()).await,
            Workload::Watch => {
                let mut stamped = value.clone();
                let sent = worker::epoch().elapsed().as_nanos() as u64;
                stamped[..8].copy_from_slice(&sent.to_le_bytes());
                put(&kv, key, stamped).await
            }
        };
        let micros = began.elapsed().as_micros() as u64;
        match result {
            Ok(()) => {
                let mut stats = lock(&stats);
                if config.workload == Workload::Watch {
                    stats.puts += 1;
                    stats.put_latency.saturating_record(micros.max(1));
                    shared.puts_acknowledged.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.ops += 1;
                    stats.latency.saturating_record(micros.max(1));
                }
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                lock(&stats).error(&error);
                if error.is_transport() {
                    break;
                }
            }
        }
    }
    shared.workers_finished(1, workers_total);
}

async fn put(kv: &UnaryConnection, key: Vec<u8>, value: Vec<u8>) -> Result<(), CallError> {
    let request = PutRequest {
        key,
        value,
        ..PutRequest::default()
    };
    kv.call::<_, PutResponse>("/etcdserverpb.KV/Put", &request)
        .await
        .map(drop)
}

async fn get(kv: &UnaryConnection, key: Vec<u8>, serializable: bool) -> Result<(), CallError> {
    let request = RangeRequest {
        key,
        serializable,
        ..RangeRequest::default()
    };
    kv.call::<_, RangeResponse>("/etcdserverpb.KV/Range", &request)
        .await
        .map(drop)
}

/// The binary mode's transaction in etcd's messages: if the key's mod revision is
/// above 0 (it exists), put; else read it.
async fn txn(kv: &UnaryConnection, key: Vec<u8>, value: Vec<u8>) -> Result<(), CallError> {
    let request = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::ModRevision(0)),
            ..Compare::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value,
                ..PutRequest::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key,
                ..RangeRequest::default()
            })),
        }],
    };
    kv.call::<_, TxnResponse>("/etcdserverpb.KV/Txn", &request)
        .await
        .map(drop)
}

/// Opens a watch stream on the load's whole key range and waits for the server to
/// confirm it. The request stream stays open (a closed send side may end the watch).
async fn create_watch(channel: Channel) -> Result<Streaming<WatchResponse>, String> {
    let (start, end) = keys::KEY_RANGE;
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: start.to_vec(),
                range_end: end.to_vec(),
                ..WatchCreateRequest::default()
            },
        )),
    };
    let requests = futures_lite::StreamExt::chain(
        futures_lite::stream::once(create),
        futures_lite::stream::pending(),
    );
    let mut stream = WatchClient::new(channel)
        .watch(requests)
        .await
        .map_err(|status| CallError(status).to_string())?
        .into_inner();
    match stream.message().await {
        Ok(Some(response)) if response.created && !response.canceled => Ok(stream),
        Ok(Some(response)) => Err(format!(
            "the watch was not created: {}",
            response.cancel_reason
        )),
        Ok(None) => Err("the watch stream ended before the watch was created".to_string()),
        Err(status) => Err(CallError(status).to_string()),
    }
}

/// Receives events until every acknowledged put has been seen (or the drain timeout
/// passes after the last put), recording put-to-event latency.
async fn watch_loop(mut stream: Streaming<WatchResponse>, shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::new();
    let mut received = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if shared.puts_finished.load(Ordering::Acquire) {
            let expected = shared.puts_acknowledged.load(Ordering::Acquire);
            if received >= expected {
                break;
            }
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + WATCH_DRAIN_TIMEOUT);
            if Instant::now() >= deadline {
                stats.errors += expected - received;
                stats.first_error.get_or_insert(format!(
                    "a watcher received {received} of {expected} events within {WATCH_DRAIN_TIMEOUT:?}"
                ));
                break;
            }
        }
        // Streaming::message is cancel-safe: a timed-out wait loses nothing.
        let Ok(message) = tokio::time::timeout(WATCH_POLL_INTERVAL, stream.message()).await else {
            continue;
        };
        match message {
            Ok(Some(response)) if response.canceled || response.compact_revision != 0 => {
                stats.errors += 1;
                stats.first_error.get_or_insert(format!(
                    "a watch was canceled during the run: {}",
                    response.cancel_reason
                ));
                break;
            }
            Ok(Some(response)) => {
                let now = worker::epoch().elapsed().as_nanos() as u64;
                for event in response.events {
                    received += 1;
                    let Some(stamp) = event.kv.as_ref().and_then(|kv| kv.value.first_chunk::<8>())
                    else {
                        continue;
                    };
                    let sent = u64::from_le_bytes(*stamp);
                    let micros = now.saturating_sub(sent) / 1000;
                    stats.ops += 1;
                    stats.latency.saturating_record(micros.max(1));
                }
            }
            Ok(None) => {
                stats.errors += 1;
                stats
                    .first_error
                    .get_or_insert("a watch ended before the run did".to_string());
                break;
            }
            Err(status) => {
                stats.error(&CallError(status));
                break;
            }
        }
    }
    stats
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
