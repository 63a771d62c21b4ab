//! What one executor (one core) does during a run: open its share of the connections,
//! prefill its share of the key space, wait for every core at the start line, then run
//! `pipeline` worker tasks per client until the stop condition, recording latencies in
//! its own histogram. Cores share only atomic counters.
//!
//! With `--rate`, each worker task is scheduled at fixed intervals and latency is
//! measured from the time the request was due, not when it was sent, so a stalled
//! server shows up in the percentiles (no coordinated omission).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corekv_engine::{
    Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, RequestOp, Revision,
    TxnRequest, WatchRequest,
};
use corekv_net::client::{Client, ClientError, WatchMessage};
use hdrhistogram::Histogram;

use super::config::{Config, Stop, Workload};
use super::keys::{self, Rng};
use super::report::histogram;

/// How long watchers keep waiting for events after the last put was acknowledged.
pub const WATCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a waiting watcher re-checks whether the run is over.
pub const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Counters shared by every core.
#[derive(Debug, Default)]
pub struct Shared {
    /// Operations claimed (for `--total`).
    pub claimed: AtomicU64,
    /// Operations completed (progress bar; watch: puts).
    pub completed: Arc<AtomicU64>,
    /// Next sequential key.
    pub sequence: AtomicU64,
    /// Watch: every put has been acknowledged.
    pub puts_finished: AtomicBool,
    /// Watch: puts acknowledged.
    pub puts_acknowledged: AtomicU64,
    /// Worker tasks that have finished (or will never start); when it reaches the
    /// total, `puts_finished` is set.
    pub workers_done: AtomicUsize,
}

impl Shared {
    /// Records that `count` worker tasks are done; the last one ends the puts.
    pub fn workers_finished(&self, count: usize, workers_total: usize) {
        if self.workers_done.fetch_add(count, Ordering::AcqRel) + count >= workers_total {
            self.puts_finished.store(true, Ordering::Release);
        }
    }
}

/// The start line: every executor arrives after connecting and prefilling, then waits
/// until the main thread opens it (to run) or aborts (an executor failed to start).
#[derive(Debug, Default)]
pub struct Gate {
    /// Executors arrived, and the decision once made.
    state: Mutex<(usize, Option<bool>)>,
    changed: Condvar,
}

impl Gate {
    /// Arrives and waits for the decision; true means run.
    pub fn arrive_and_wait(&self) -> bool {
        let mut state = self.state.lock().expect("bench: gate lock");
        state.0 += 1;
        self.changed.notify_all();
        loop {
            if let Some(go) = state.1 {
                return go;
            }
            state = self.changed.wait(state).expect("bench: gate lock");
        }
    }

    /// Waits until `count` executors have arrived.
    pub fn wait_arrivals(&self, count: usize) {
        let mut state = self.state.lock().expect("bench: gate lock");
        while state.0 < count {
            state = self.changed.wait(state).expect("bench: gate lock");
        }
    }

    /// Decides: run (true) or abort.
    pub fn open(&self, go: bool) {
        let mut state = self.state.lock().expect("bench: gate lock");
        state.1 = Some(go);
        self.changed.notify_all();
    }
}

/// What one executor measured.
#[derive(Debug)]
pub struct CoreResult {
    /// Successful operations (watch: events received).
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Their latencies.
    pub latency: Histogram<u64>,
    /// Watch: acknowledged puts and their latencies.
    pub puts: u64,
    /// Watch: put latencies.
    pub put_latency: Histogram<u64>,
    /// The first error.
    pub first_error: Option<String>,
}

/// The executor's part of the run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// This executor's index among those with work.
    pub core: usize,
    /// Executors with work.
    pub cores: usize,
    /// Connection numbers this executor opens.
    pub connections: Vec<usize>,
    /// Client numbers this executor runs, with their connection.
    pub clients: Vec<(usize, usize)>,
    /// Watch: watcher numbers with their connection.
    pub watchers: Vec<(usize, usize)>,
}

/// A process-wide time origin, so that a put on one core and its event on another
/// measure against the same clock.
pub(super) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Sets the epoch before any executor starts.
pub fn init_epoch() {
    epoch();
}

/// What a group of tasks measured (a core's here, a client's in the gRPC mode).
#[derive(Debug)]
pub(super) struct Stats {
    pub(super) ops: u64,
    pub(super) errors: u64,
    pub(super) latency: Histogram<u64>,
    pub(super) puts: u64,
    pub(super) put_latency: Histogram<u64>,
    pub(super) first_error: Option<String>,
}

impl Stats {
    pub(super) fn new() -> Stats {
        Stats {
            ops: 0,
            errors: 0,
            latency: histogram(),
            puts: 0,
            put_latency: histogram(),
            first_error: None,
        }
    }

    pub(super) fn error(&mut self, error: &dyn std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    pub(super) fn into_result(self) -> CoreResult {
        CoreResult {
            ops: self.ops,
            errors: self.errors,
            latency: self.latency,
            puts: self.puts,
            put_latency: self.put_latency,
            first_error: self.first_error,
        }
    }
}

/// Runs this executor's part; `gate` is the start line every core waits at before the
/// measured phase.
pub async fn run_core(
    config: Config,
    plan: Plan,
    shared: Arc<Shared>,
    gate: Arc<Gate>,
) -> Result<CoreResult, String> {
    let workers_total = config.clients * config.pipeline;
    let my_workers = plan.clients.len() * config.pipeline;
    let mut clients = Vec::new();
    for &connection in &plan.connections {
        let endpoint = &config.endpoints[connection % config.endpoints.len()];
        let client = Client::connect(endpoint)
            .await
            .map_err(|error| error.to_string());
        match client {
            Ok(client) => clients.push((connection, client)),
            Err(error) => {
                // Arrive anyway so that the other cores are not stuck, and count this
                // core's workers as done so that watchers elsewhere can finish.
                shared.workers_finished(my_workers, workers_total);
                gate.arrive_and_wait();
                return Err(error);
            }
        }
    }
    let client_of = |connection: usize| -> Client {
        clients
            .iter()
            .find(|(c, _)| *c == connection)
            .map(|(_, client)| client.clone())
            .expect("bench: every planned connection was opened")
    };
    let stats = Rc::new(RefCell::new(Stats::new()));
    let config = Rc::new(config);

    if config.prefill
        && matches!(
            config.workload,
            Workload::Get | Workload::Mixed | Workload::Txn
        )
    {
        prefill(&config, &plan, &client_of, &stats).await;
    }

    // Watchers are created before the start line so that every put is seen.
    let mut watches = Vec::new();
    for &(_, connection) in &plan.watchers {
        let (start_key, end) = keys::KEY_RANGE;
        let watch = client_of(connection)
            .watch(WatchRequest {
                key: start_key.to_vec(),
                range_end: end.to_vec(),
                ..WatchRequest::default()
            })
            .await;
        match watch {
            Ok(watch) => watches.push(watch),
            Err(error) => stats.borrow_mut().error(&error),
        }
    }

    if !gate.arrive_and_wait() {
        return Err("the run was aborted before it started".to_string());
    }
    let started = Instant::now();
    let deadline = match config.stop {
        Stop::Duration(duration) => Some(started + duration),
        Stop::Total(_) => None,
    };
    let mut tasks = Vec::new();
    for &(client_number, connection) in &plan.clients {
        for slot in 0..config.pipeline {
            let worker = client_number * config.pipeline + slot;
            tasks.push(glommio::spawn_local(worker_loop(
                config.clone(),
                client_of(connection),
                shared.clone(),
                stats.clone(),
                Rng::new(config.seed, worker as u64),
                deadline,
                workers_total,
                started,
            )));
        }
    }
    let watch_tasks: Vec<_> = watches
        .into_iter()
        .map(|watch| glommio::spawn_local(watch_loop(watch, shared.clone(), stats.clone())))
        .collect();
    for task in tasks {
        task.await;
    }
    for task in watch_tasks {
        task.await;
    }
    drop(clients);
    let stats = Rc::try_unwrap(stats)
        .map_err(|_| "bench: a task outlived the run".to_string())?
        .into_inner();
    Ok(stats.into_result())
}

/// Writes this core's share of the key space (keys `core`, `core + cores`, ...) with
/// every worker slot of its clients in flight at once.
async fn prefill(
    config: &Rc<Config>,
    plan: &Plan,
    client_of: &dyn Fn(usize) -> Client,
    stats: &Rc<RefCell<Stats>>,
) {
    let next = Rc::new(std::cell::Cell::new(plan.core as u64));
    let mut tasks = Vec::new();
    // Every core opens at least one connection (cores never outnumber connections).
    let connections = &plan.connections;
    let slots = (plan.clients.len() * config.pipeline).max(connections.len());
    for slot in 0..slots {
        let client = client_of(connections[slot % connections.len()]);
        let next = next.clone();
        let config = config.clone();
        let stats = stats.clone();
        let stride = plan.cores as u64;
        tasks.push(glommio::spawn_local(async move {
            let value = keys::value(config.value_size);
            loop {
                let index = next.get();
                if index >= config.key_space {
                    return;
                }
                next.set(index + stride);
                let request = PutRequest {
                    key: keys::key(index, config.key_size),
                    value: value.clone(),
                    ..PutRequest::default()
                };
                if let Err(error) = client.put(request).await {
                    stats.borrow_mut().error(&error);
                    if matches!(error, ClientError::ConnectionLost { .. }) {
                        return;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker_loop(
    config: Rc<Config>,
    client: Client,
    shared: Arc<Shared>,
    stats: Rc<RefCell<Stats>>,
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
            let now = Instant::now();
            if due > now {
                glommio::timer::sleep(due - now).await;
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
            Workload::Put => put(&client, key, value.clone()).await,
            Workload::Get => get(&client, key, config.serializable).await,
            Workload::Mixed => {
                if rng.unit() < config.read_ratio {
                    get(&client, key, config.serializable).await
                } else {
                    put(&client, key, value.clone()).await
                }
            }
            Workload::Txn => txn(&client, key, value.clone()).await,
            Workload::Watch => {
                let mut stamped = value.clone();
                let sent = epoch().elapsed().as_nanos() as u64;
                stamped[..8].copy_from_slice(&sent.to_le_bytes());
                put(&client, key, stamped).await
            }
        };
        let micros = began.elapsed().as_micros() as u64;
        let mut stats = stats.borrow_mut();
        match result {
            Ok(()) => {
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
                stats.error(&error);
                if matches!(error, ClientError::ConnectionLost { .. }) {
                    break;
                }
            }
        }
    }
    shared.workers_finished(1, workers_total);
}

async fn put(client: &Client, key: Vec<u8>, value: Vec<u8>) -> Result<(), ClientError> {
    client
        .put(PutRequest {
            key,
            value,
            ..PutRequest::default()
        })
        .await
        .map(drop)
}

async fn get(client: &Client, key: Vec<u8>, serializable: bool) -> Result<(), ClientError> {
    client
        .range(RangeRequest {
            key,
            serializable,
            ..RangeRequest::default()
        })
        .await
        .map(drop)
}

/// etcd benchmark's `txn-put` shape with a read on the other branch: if the key's mod
/// revision is above 0 (it exists), put; else read it.
async fn txn(client: &Client, key: Vec<u8>, value: Vec<u8>) -> Result<(), ClientError> {
    client
        .txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Greater,
                target: CompareTarget::Mod(Revision(0)),
                key: key.clone(),
                range_end: Vec::new(),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: key.clone(),
                value,
                ..PutRequest::default()
            })],
            failure: vec![RequestOp::Range(RangeRequest {
                key,
                ..RangeRequest::default()
            })],
        })
        .await
        .map(drop)
}

/// Receives events until every acknowledged put has been seen (or the drain timeout
/// passes after the last put), recording put-to-event latency.
async fn watch_loop(
    mut watch: corekv_net::client::Watch,
    shared: Arc<Shared>,
    stats: Rc<RefCell<Stats>>,
) {
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
                let mut stats = stats.borrow_mut();
                stats.errors += expected - received;
                stats.first_error.get_or_insert(format!(
                    "a watcher received {received} of {expected} events within {WATCH_DRAIN_TIMEOUT:?}"
                ));
                break;
            }
        }
        let next = futures_lite::future::or(async { Some(watch.next().await) }, async {
            glommio::timer::sleep(WATCH_POLL_INTERVAL).await;
            None
        })
        .await;
        let Some(message) = next else { continue };
        match message {
            Some(Ok(WatchMessage::Events(_, events))) => {
                let now = epoch().elapsed().as_nanos() as u64;
                let mut stats = stats.borrow_mut();
                for event in events {
                    received += 1;
                    let Some(stamp) = event.kv.value.first_chunk::<8>() else {
                        continue;
                    };
                    let sent = u64::from_le_bytes(*stamp);
                    let micros = now.saturating_sub(sent) / 1000;
                    stats.ops += 1;
                    stats.latency.saturating_record(micros.max(1));
                }
            }
            Some(Ok(WatchMessage::Canceled { .. })) | None => {
                let mut stats = stats.borrow_mut();
                stats.errors += 1;
                stats
                    .first_error
                    .get_or_insert("a watch ended before the run did".to_string());
                break;
            }
            Some(Err(error)) => {
                stats.borrow_mut().error(&error);
                break;
            }
        }
    }
}
