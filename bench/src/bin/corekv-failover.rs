//! `corekv-failover`: how long a cluster (corekv or real etcd) takes to acknowledge a
//! write again after its leader is killed with SIGKILL, measured under write load over
//! etcd's v3 gRPC API. `bench/compare-etcd-cluster.sh --failover N` runs it against
//! fresh three-member clusters of both.
//!
//! One trial: connect to every member's client URL, find the leader (every member's
//! Maintenance.Status names the same one), write continuously to all members
//! (`--clients` tasks, each with one put in flight, over `--connections` HTTP/2
//! connections spread round-robin over the members) for `--warmup`, then SIGKILL the
//! leader's process (`--pids`, in the order of `--endpoints`). Two figures, both from
//! just before the kill:
//!
//! * **failover**: to the first acknowledged put that was *sent after the kill* to a
//!   surviving member. A put sent before the kill does not count: the old leader may
//!   have committed it just before dying, and a follower may answer it afterwards with
//!   no new leader in sight. The load's tasks alone could miss the moment: a put that a
//!   follower forwarded to the dead leader waits for the server's request timeout (etcd
//!   and corekv: 5 s plus two election timeouts), so every task may be stuck on one when
//!   the new leader is ready. From the kill on, a prober therefore also sends a fresh put
//!   to every survivor every `--probe-interval`, none cancelled before `--timeout`. Its
//!   probes go over a fresh HTTP/2 connection every `--probes-per-connection` probes,
//!   so that probes stuck on the dead leader never fill a connection's concurrent-stream
//!   limit (hyper's default, which corekv's gateway keeps, is 200; etcd's is 2^32 - 1)
//!   and hold the next ones back. The interval bounds the resolution.
//! * **load resumed**: to the first acknowledged put sent after the kill by one of the
//!   load's tasks, which wait for every answer as a client without its own timeout does.
//!
//! Never: retry or cancel a put that might still be acknowledged, or count a put to the
//! killed member. A task whose put is answered with an error waits one probe interval
//! before the next, so that errors answered at once (no leader) do not spin.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corekv_bench::load::config::{parse_duration, parse_endpoints};
use corekv_bench::load::cpu::parse_pids;
use corekv_bench::load::grpc::{CallError, CONNECT_TIMEOUT};
use corekv_bench::load::keys::{self, Rng};
use corekv_net::gateway::pb::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, PutRequest, StatusRequest,
};
use tonic::transport::{Channel, Endpoint};

const USAGE: &str = "usage: corekv-failover --endpoints HOST:PORT,... --pids PID,... [flags]
Kills the cluster's leader with SIGKILL under write load and prints the time from the
kill to the first acknowledged put sent afterwards to a surviving member.
flags:
  --endpoints HOST:PORT[,...]  every member's client address (etcd's gRPC API)
  --pids PID[,...]             the members' process ids, in the order of --endpoints
  --clients N                  writing tasks, one put in flight each (default 100)
  --connections N              HTTP/2 connections, round-robin over the members (default 10)
  --threads N                  tokio worker threads (default 2)
  --key-size B                 key bytes (default 8)
  --value-size B               value bytes (default 256)
  --key-space N                distinct keys (default 10000)
  --warmup D                   load before the kill (default 2s)
  --probe-interval D           after the kill, a fresh put to every survivor this often (default 5ms)
  --probes-per-connection N    probes over one HTTP/2 connection before a fresh one (default 50)
  --timeout D                  give up when no put is acknowledged this long after the kill (default 30s)
  --json                       print one JSON line";

/// How long the members may take to agree on a leader before the kill.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one Maintenance.Status call may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// The most probes in flight at once (at the default interval, 15 s of probes to two
/// survivors); beyond it a tick sends nothing.
const PROBES_IN_FLIGHT_MAX: usize = 6_000;

/// Probes sent over one HTTP/2 connection before the prober opens the next, by default
/// (well under the smallest concurrent-stream limit a server is likely to set).
const PROBES_PER_CONNECTION_DEFAULT: usize = 50;

/// A validated configuration.
#[derive(Clone, Debug)]
struct Config {
    endpoints: Vec<String>,
    pids: Vec<u32>,
    clients: usize,
    connections: usize,
    threads: usize,
    key_size: usize,
    value_size: usize,
    key_space: u64,
    warmup: Duration,
    probe_interval: Duration,
    probes_per_connection: usize,
    timeout: Duration,
    json: bool,
}

fn parse(args: &[String]) -> Result<Config, String> {
    let mut config = Config {
        endpoints: Vec::new(),
        pids: Vec::new(),
        clients: 100,
        connections: 10,
        threads: 2,
        key_size: 8,
        value_size: 256,
        key_space: 10_000,
        warmup: Duration::from_secs(2),
        probe_interval: Duration::from_millis(5),
        probes_per_connection: PROBES_PER_CONNECTION_DEFAULT,
        timeout: Duration::from_secs(30),
        json: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err(USAGE.to_string());
        }
        if arg == "--json" {
            config.json = true;
            continue;
        }
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name, value.to_string()),
            None => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
                (arg.as_str(), value.clone())
            }
        };
        let number = |value: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{name} {value:?}: not a positive integer"))
        };
        match name {
            "--endpoints" => config.endpoints = parse_endpoints(&value)?,
            "--pids" => config.pids = parse_pids(&value)?,
            "--clients" => config.clients = number(&value)? as usize,
            "--connections" => config.connections = number(&value)? as usize,
            "--threads" => config.threads = number(&value)? as usize,
            "--key-size" => config.key_size = number(&value)? as usize,
            "--value-size" => config.value_size = number(&value)? as usize,
            "--key-space" => config.key_space = number(&value)?,
            "--warmup" => config.warmup = parse_duration(&value)?,
            "--probe-interval" => config.probe_interval = parse_duration(&value)?,
            "--probes-per-connection" => config.probes_per_connection = number(&value)? as usize,
            "--timeout" => config.timeout = parse_duration(&value)?,
            _ => return Err(format!("unknown flag {name}\n{USAGE}")),
        }
    }
    if config.endpoints.len() < 2 {
        return Err(format!(
            "--endpoints names {} members: a failover needs at least 2\n{USAGE}",
            config.endpoints.len()
        ));
    }
    if config.pids.len() != config.endpoints.len() {
        return Err(format!(
            "--pids names {} processes for {} endpoints: give one per member, in order",
            config.pids.len(),
            config.endpoints.len()
        ));
    }
    if config.connections < config.endpoints.len() {
        return Err(format!(
            "--connections {} is fewer than the {} members: every member needs one",
            config.connections,
            config.endpoints.len()
        ));
    }
    let digits = config.key_space.saturating_sub(1).max(1).ilog10() as usize + 1;
    if digits > config.key_size {
        return Err(format!(
            "--key-space {} needs keys of {digits} digits, more than --key-size {}",
            config.key_space, config.key_size
        ));
    }
    if config.probe_interval.is_zero() || config.timeout.is_zero() {
        return Err("--probe-interval and --timeout must be above zero".to_string());
    }
    Ok(config)
}

/// Who acknowledged the first put sent after the kill.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// One of the load's tasks.
    Load,
    /// The prober.
    Probe,
}

/// The first put acknowledged by a survivor after the kill.
#[derive(Clone, Copy, Debug)]
struct FirstAck {
    acknowledged: Instant,
    sent: Instant,
    member: usize,
    source: Source,
}

/// What the tasks share.
#[derive(Default)]
struct Trial {
    /// Set just before the SIGKILL.
    killed_at: OnceLock<Instant>,
    /// The killed member's index (meaningful once `killed_at` is set).
    killed: AtomicUsize,
    /// The first put sent after the kill that a survivor acknowledged.
    first_ack: Mutex<Option<FirstAck>>,
    /// The same among the load's puts only.
    first_load_ack: Mutex<Option<FirstAck>>,
    /// Notified on every acknowledged put sent after the kill.
    acknowledged_after: tokio::sync::Notify,
    /// Set once the figures are taken: tasks stop, errors are no longer counted.
    finished: AtomicBool,
    acknowledged_before_kill: AtomicU64,
    acknowledged_after_kill: AtomicU64,
    errors_after_kill: AtomicU64,
    probes_in_flight: AtomicUsize,
    /// The first error answered after the kill, for the report.
    first_error: Mutex<Option<String>>,
}

impl Trial {
    /// Whether `member` was killed (and so its tasks stop).
    fn is_dead(&self, member: usize) -> bool {
        self.killed_at.get().is_some() && self.killed.load(Ordering::Acquire) == member
    }

    fn acknowledged(&self, member: usize, sent: Instant, source: Source) {
        let acknowledged = Instant::now();
        let Some(&killed_at) = self.killed_at.get() else {
            self.acknowledged_before_kill
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if sent < killed_at || member == self.killed.load(Ordering::Acquire) {
            return;
        }
        self.acknowledged_after_kill.fetch_add(1, Ordering::Relaxed);
        let ack = FirstAck {
            acknowledged,
            sent,
            member,
            source,
        };
        record_first(&self.first_ack, ack);
        if matches!(source, Source::Load) {
            record_first(&self.first_load_ack, ack);
        }
        self.acknowledged_after.notify_one();
    }

    fn failed(&self, error: &CallError) {
        if self.killed_at.get().is_some() && !self.finished.load(Ordering::Acquire) {
            self.errors_after_kill.fetch_add(1, Ordering::Relaxed);
            let mut first = self
                .first_error
                .lock()
                .expect("no task panics while holding the first-error lock");
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

/// Keeps the earlier of `ack` and what `first` holds.
fn record_first(first: &Mutex<Option<FirstAck>>, ack: FirstAck) {
    let mut first = lock(first);
    if first.is_none_or(|first| ack.acknowledged < first.acknowledged) {
        *first = Some(ack);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("no task panics while holding a trial's lock")
}

/// One HTTP/2 endpoint of a member, as corekv-bench configures them.
fn endpoint(address: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(format!("http://{address}"))
        .map_err(|error| format!("{address}: {error}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

/// One gRPC channel over one HTTP/2 connection, as corekv-bench opens them.
async fn connect(address: &str) -> Result<Channel, String> {
    endpoint(address)?
        .connect()
        .await
        .map_err(|error| format!("cannot connect to {address}: {error}"))
}

/// (member id, leader id) as the member behind `channel` reports them.
async fn status(channel: Channel) -> Option<(u64, u64)> {
    let mut client = MaintenanceClient::new(channel);
    let call = client.status(StatusRequest {});
    let response = tokio::time::timeout(STATUS_TIMEOUT, call)
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some((response.header?.member_id, response.leader))
}

/// Every member's id and the index of the leader they all name.
async fn find_leader(channels: &[Channel]) -> Result<(Vec<u64>, usize), String> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let mut seen = Vec::new();
        for channel in channels {
            seen.push(status(channel.clone()).await);
        }
        if let Some(Some((_, leader))) = seen.first() {
            let agreed = seen
                .iter()
                .all(|member| member.is_some_and(|(_, l)| l == *leader));
            let ids: Vec<u64> = seen.iter().map(|m| m.map_or(0, |(id, _)| id)).collect();
            if agreed {
                if let Some(index) = ids.iter().position(|id| id == leader) {
                    return Ok((ids, index));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the members named no common leader within {LEADER_TIMEOUT:?}: {seen:x?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(kv: &mut KvClient<Channel>, key: Vec<u8>, value: Vec<u8>) -> Result<(), CallError> {
    kv.put(PutRequest {
        key,
        value,
        ..PutRequest::default()
    })
    .await
    .map(drop)
    .map_err(CallError::from)
}

/// One load task: puts to `member` one at a time until the trial ends or its member
/// is killed.
async fn load_task(
    config: Arc<Config>,
    trial: Arc<Trial>,
    mut kv: KvClient<Channel>,
    member: usize,
    mut rng: Rng,
) {
    let value = keys::value(config.value_size);
    while !trial.is_dead(member) && !trial.finished.load(Ordering::Acquire) {
        let key = keys::key(rng.below(config.key_space), config.key_size);
        let sent = Instant::now();
        match put(&mut kv, key, value.clone()).await {
            Ok(()) => trial.acknowledged(member, sent, Source::Load),
            Err(error) => {
                if trial.is_dead(member) {
                    return;
                }
                trial.failed(&error);
                tokio::time::sleep(config.probe_interval).await;
            }
        }
    }
}

/// From the kill on: a fresh put to every survivor each interval, over a fresh
/// connection every `--probes-per-connection` probes.
async fn prober(config: Arc<Config>, trial: Arc<Trial>, killed: usize) -> Result<(), String> {
    let value = keys::value(config.value_size);
    let mut rng = Rng::new(2, u64::MAX);
    let mut endpoints = Vec::new();
    for address in &config.endpoints {
        endpoints.push(endpoint(address)?);
    }
    // Per member: the connection probes go over and how many it has carried.
    let mut connections: Vec<(Channel, usize)> = endpoints
        .iter()
        .map(|endpoint| (endpoint.connect_lazy(), 0))
        .collect();
    let mut ticks = tokio::time::interval(config.probe_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !trial.finished.load(Ordering::Acquire) {
        ticks.tick().await;
        for member in 0..connections.len() {
            if member == killed
                || trial.probes_in_flight.load(Ordering::Relaxed) >= PROBES_IN_FLIGHT_MAX
            {
                continue;
            }
            let (channel, carried) = &mut connections[member];
            if *carried == config.probes_per_connection {
                *channel = endpoints[member].connect_lazy();
                *carried = 0;
            }
            *carried += 1;
            trial.probes_in_flight.fetch_add(1, Ordering::Relaxed);
            let mut kv = KvClient::new(channel.clone());
            let key = keys::key(rng.below(config.key_space), config.key_size);
            let (trial, value, timeout) = (trial.clone(), value.clone(), config.timeout);
            tokio::spawn(async move {
                let sent = Instant::now();
                match tokio::time::timeout(timeout, put(&mut kv, key, value)).await {
                    Ok(Ok(())) => trial.acknowledged(member, sent, Source::Probe),
                    Ok(Err(error)) => trial.failed(&error),
                    Err(_) => {}
                }
                trial.probes_in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    Ok(())
}

/// Waits until `first` holds an acknowledgement or `deadline` passes.
async fn wait_first(
    trial: &Trial,
    first: &Mutex<Option<FirstAck>>,
    deadline: Instant,
) -> Option<FirstAck> {
    loop {
        let notified = trial.acknowledged_after.notified();
        if let Some(ack) = *lock(first) {
            return Some(ack);
        }
        if tokio::time::timeout_at(deadline.into(), notified)
            .await
            .is_err()
        {
            return *lock(first);
        }
    }
}

/// What one trial measured.
struct Outcome {
    /// The first put sent after the kill and acknowledged by a survivor.
    first: FirstAck,
    /// The same among the load's puts (None: not within `--timeout`).
    first_load: Option<FirstAck>,
    killed: usize,
    killed_at: Instant,
    ids: Vec<u64>,
    new_leader: Option<usize>,
    warmup_puts_per_second: f64,
    acknowledged_after_kill: u64,
    errors_after_kill: u64,
    first_error: Option<String>,
}

async fn run(config: Arc<Config>) -> Result<Outcome, String> {
    let members = config.endpoints.len();
    let mut load_channels = Vec::new();
    for connection in 0..config.connections {
        load_channels.push(connect(&config.endpoints[connection % members]).await?);
    }
    // The status calls' own connections, one per member.
    let mut member_channels = Vec::new();
    for address in &config.endpoints {
        member_channels.push(connect(address).await?);
    }
    let (ids, leader) = find_leader(&member_channels).await?;

    let trial = Arc::new(Trial::default());
    for client in 0..config.clients {
        let connection = client % config.connections;
        tokio::spawn(load_task(
            config.clone(),
            trial.clone(),
            KvClient::new(load_channels[connection].clone()),
            connection % members,
            Rng::new(1, client as u64),
        ));
    }
    tokio::time::sleep(config.warmup).await;
    let warmup_puts = trial.acknowledged_before_kill.load(Ordering::Relaxed);
    if warmup_puts == 0 {
        return Err(format!(
            "no put was acknowledged during the {:?} warm-up",
            config.warmup
        ));
    }
    // Confirm the leader right before the kill: an election during the warm-up would
    // make the kill hit a follower.
    let (_, leader_now) = find_leader(&member_channels).await?;
    if leader_now != leader {
        return Err(format!(
            "the leader moved during the warm-up ({} to {})",
            config.endpoints[leader], config.endpoints[leader_now]
        ));
    }

    trial.killed.store(leader, Ordering::Release);
    let killed_at = Instant::now();
    trial
        .killed_at
        .set(killed_at)
        .expect("the kill happens once");
    let pid = config.pids[leader] as libc::pid_t;
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(format!(
            "cannot SIGKILL the leader's process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let prober = tokio::spawn(prober(config.clone(), trial.clone(), leader));

    let deadline = killed_at + config.timeout;
    let first = wait_first(&trial, &trial.first_ack, deadline).await;
    let first_load = match first {
        Some(_) => wait_first(&trial, &trial.first_load_ack, deadline).await,
        None => None,
    };
    trial.finished.store(true, Ordering::Release);
    if prober.is_finished() {
        prober
            .await
            .map_err(|error| format!("the prober failed: {error}"))??;
    }
    let first_error = lock(&trial.first_error).clone();
    let Some(first) = first else {
        return Err(format!(
            "no put was acknowledged within {:?} of killing the leader {} (first error: {})",
            config.timeout,
            config.endpoints[leader],
            first_error.as_deref().unwrap_or("none")
        ));
    };

    // Which survivor leads now (for the report only; the load has stopped).
    let mut new_leader = None;
    for (member, channel) in member_channels.iter().enumerate() {
        if member == leader {
            continue;
        }
        if let Some((_, id)) = status(channel.clone()).await {
            new_leader = ids.iter().position(|&known| known == id && id != 0);
            break;
        }
    }
    Ok(Outcome {
        first,
        first_load,
        killed: leader,
        killed_at,
        ids,
        new_leader,
        warmup_puts_per_second: warmup_puts as f64 / config.warmup.as_secs_f64(),
        acknowledged_after_kill: trial.acknowledged_after_kill.load(Ordering::Relaxed),
        errors_after_kill: trial.errors_after_kill.load(Ordering::Relaxed),
        first_error,
    })
}

/// `text` as the inside of a JSON string.
fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse(&args) {
        Ok(config) => Arc::new(config),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(if message.starts_with("usage:") { 0 } else { 2 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .thread_name("failover")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the tokio runtime: {error}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(config.clone()));
    // Puts still waiting on the dead leader or a survivor are abandoned.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("Error: {error}");
            std::process::exit(1);
        }
    };
    println!("{}", report(&config, &outcome));
}

/// The result line, human or JSON.
fn report(config: &Config, outcome: &Outcome) -> String {
    let endpoint = |member: Option<usize>| {
        member.map_or_else(|| "unknown".to_string(), |m| config.endpoints[m].clone())
    };
    let since_kill = |instant: Instant| millis(instant.duration_since(outcome.killed_at));
    let failover_ms = since_kill(outcome.first.acknowledged);
    let sent_ms = since_kill(outcome.first.sent);
    let source = match outcome.first.source {
        Source::Load => "load",
        Source::Probe => "probe",
    };
    let first_error = outcome.first_error.as_deref().unwrap_or("");
    if config.json {
        let load_resumed = outcome.first_load.map_or_else(
            || "null".to_string(),
            |load| format!("{:.1}", since_kill(load.acknowledged)),
        );
        format!(
            "{{\"failover_ms\":{failover_ms:.1},\"load_resumed_ms\":{load_resumed},\"killed\":\"{}\",\"killed_member_id\":\"{:x}\",\"new_leader\":\"{}\",\"first_ack_member\":\"{}\",\"first_ack_by\":\"{source}\",\"first_ack_sent_ms\":{sent_ms:.1},\"warmup_puts_per_sec\":{:.1},\"acknowledged_after_kill\":{},\"errors_after_kill\":{},\"first_error\":\"{}\"}}",
            config.endpoints[outcome.killed],
            outcome.ids[outcome.killed],
            endpoint(outcome.new_leader),
            config.endpoints[outcome.first.member],
            outcome.warmup_puts_per_second,
            outcome.acknowledged_after_kill,
            outcome.errors_after_kill,
            json_escape(first_error),
        )
    } else {
        let load_resumed = outcome.first_load.map_or_else(
            || format!("not within {:?}", config.timeout),
            |load| format!("{:.1} ms", since_kill(load.acknowledged)),
        );
        format!(
            "failover {failover_ms:.1} ms: killed the leader {} (pid {}); first put acknowledged \
             by {} (sent {sent_ms:.1} ms after the kill, by the {source}); the load resumed after \
             {load_resumed}; new leader {}; {:.0} puts/s before the kill; {} errors after it{}",
            config.endpoints[outcome.killed],
            config.pids[outcome.killed],
            config.endpoints[outcome.first.member],
            endpoint(outcome.new_leader),
            outcome.warmup_puts_per_second,
            outcome.errors_after_kill,
            if first_error.is_empty() {
                String::new()
            } else {
                format!(" (first: {first_error})")
            },
        )
    }
}
