//! The `corekv` server: one glommio executor per core.
//!
//! Core 0 owns the shard (Raft + WAL + engine, see [`shard`]) and accepts every
//! connection; it serves a connection itself while it has room and hands it to another
//! core otherwise ([`placement`]). Every core decodes and validates the requests of the
//! connections it serves and sends them to the shard in batches over bounded cross-core
//! channels ([`mesh`]); the shard answers each core with one batch per round.
//!
//! Start-up: the shard recovers first (snapshot, then WAL); only when it is ready does
//! core 0 bind the listeners, so clients never reach a half-recovered store. Any start-up
//! failure (data dir locked or unwritable, corrupt WAL, port in use) is one line on
//! stderr and a non-zero exit.
//!
//! Shutdown: SIGINT or SIGTERM stops the shard from taking new requests; it finishes what
//! is in flight (every accepted write is fsynced and answered), flushes the replies, and
//! the process exits 0.

pub mod bridge;
pub mod config;
pub(crate) mod connection;
pub mod entry;
pub mod members;
pub(crate) mod mesh;
pub mod metrics;
pub mod peer;
pub(crate) mod placement;
pub mod shard;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use glommio::channels::shared_channel;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use self::bridge::{run_bridge, ShardHandle};
use self::config::ServerConfig;
use self::connection::Core;
use self::mesh::{Reply, ToShard};
use self::metrics::Metrics;
use self::shard::{event_queue, forward, Event, Shard};
use crate::gateway::serve::serve_connection;
use crate::gateway::service::Gateway;

/// What a core serves the client URLs with: the routes and, on core 0, the listeners.
type ClientListeners = (
    crate::gateway::unary::ClientService,
    Vec<std::net::TcpListener>,
);

/// corekv's version, and the etcd API version it speaks.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (etcd API 3.4)");

/// Batches queued between one core and the shard, each way.
const CORE_CHANNEL_BATCHES_MAX: usize = 1024;
/// Locked memory glommio registers for io_uring buffers, per executor.
const IO_MEMORY_BYTES: usize = 2 << 20;
/// How often every core asks the allocator for the memory it freed longer ago than its
/// purge delay (see [`return_freed_memory`]).
const ALLOCATOR_COLLECT_INTERVAL: Duration = Duration::from_secs(5);

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is zero-initialised and fully set before use.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Raises the locked-memory soft limit to the hard limit: io_uring and glommio register
/// buffers in locked memory, and distributions default to 8 MiB.
fn raise_memlock_limit() {
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
}

/// Takes an exclusive lock on the data directory so two servers never share it.
fn lock_data_dir(config: &ServerConfig) -> Result<File> {
    let member = config.data_dir.join("member");
    std::fs::create_dir_all(&member)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let path = member.join("lock");
    let file = File::create(&path)
        .with_context(|| format!("data dir {} is not writable", config.data_dir.display()))?;
    // SAFETY: flock on a file descriptor we own for the duration of the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        bail!(
            "data dir {} is locked by another corekv process",
            config.data_dir.display()
        );
    }
    Ok(file)
}

/// Runs the server until SIGINT/SIGTERM. Errors are start-up failures.
pub fn run(mut config: ServerConfig) -> Result<()> {
    // Directories are made absolute once, so that nothing depends on the working
    // directory later (glommio opens directories for fsync by path).
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    config.data_dir = cwd.join(&config.data_dir);
    config.wal_dir = config.wal_dir.map(|dir| cwd.join(dir));
    raise_memlock_limit();
    install_signal_handlers();
    let _lock = lock_data_dir(&config)?;
    // Core 0 binds the binary listeners with SO_REUSEPORT, which would silently share a
    // port with another server of the same user. A listener that answers a connect
    // means the address is taken. (A plain bind is no test: the TIME_WAIT sockets a
    // previous run left behind make it fail although the port is free.)
    // After a kill -9 the kernel keeps a dead server's listeners for a few milliseconds
    // (io_uring still holds them), so only a listener that lasts a second counts.
    for address in &config.binary_addresses {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::net::TcpStream::connect_timeout(address, Duration::from_millis(200)).is_ok() {
            if std::time::Instant::now() > deadline {
                bail!(
                    "cannot listen on {address}: Address already in use (another process is listening)"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let config = Arc::new(config);
    let cores = config.cores;
    let mut to_shard_senders = Vec::new();
    let mut to_shard_receivers = Vec::new();
    let mut from_shard_senders = Vec::new();
    let mut from_shard_receivers = Vec::new();
    for _ in 0..cores {
        let (sender, receiver) = shared_channel::new_bounded::<ToShard>(CORE_CHANNEL_BATCHES_MAX);
        to_shard_senders.push(sender);
        to_shard_receivers.push(receiver);
        let (sender, receiver) =
            shared_channel::new_bounded::<Vec<Reply>>(CORE_CHANNEL_BATCHES_MAX);
        from_shard_senders.push(sender);
        from_shard_receivers.push(receiver);
    }
    // Core 0 accepts every connection and hands some to the other cores.
    let connection_placement = placement::Placement::new(cores, config.spread_connections);
    let mut core_plans = placement::plan(&connection_placement).into_iter();
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Pin executors only when they own the machine; several nodes sharing a host with
    // --cores float instead of piling onto the first CPUs.
    let pinning = |core: usize| {
        if cores >= available {
            Placement::Fixed(core % available)
        } else {
            Placement::Unbound
        }
    };

    // Core 0 recovers the shard first and reports whether that worked; only then does
    // it bind, so clients never reach a half-recovered store. Every core then serves
    // the connections placed on it.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (bound_tx, bound_rx) = mpsc::channel::<Result<(), String>>();
    let mut to_shard_senders = to_shard_senders.into_iter();
    let mut from_shard_receivers = from_shard_receivers.into_iter();
    let mut shard_parts = Some((to_shard_receivers, from_shard_senders, ready_tx));
    // Every core serves the client URLs too: the gateway's calls enter the shard
    // through their core's bridge. The gateway's tokio runtime runs streams and timers;
    // the cores enter it so the calls they serve can use it.
    let gateway_runtime = crate::gateway::serve::start_runtime(cores)?;
    let metrics = Arc::new(Metrics::default());
    metrics.attach_placement(connection_placement.clone());
    let mut gateway_handles = Vec::new();
    let mut client_senders = Vec::new();
    let mut core_threads = Vec::new();
    for core in 0..cores {
        let (gateway_handle, bridge) = ShardHandle::new();
        let bridge_key = gateway_handle.key();
        gateway_handles.push(gateway_handle);
        let (client_sender, client_receiver) = tokio::sync::oneshot::channel::<ClientListeners>();
        client_senders.push(client_sender);
        let tokio_handle = gateway_runtime.handle().clone();
        let to_shard = to_shard_senders.next().expect("one channel per core");
        let from_shard = from_shard_receivers.next().expect("one channel per core");
        let core_config = config.clone();
        let bound = bound_tx.clone();
        let shard = shard_parts.take();
        let shard_metrics = metrics.clone();
        let core_metrics = metrics.clone();
        let plan = core_plans.next().expect("one plan per core");
        let handle = LocalExecutorBuilder::new(pinning(core))
            .name(&format!("corekv-core-{core}"))
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move {
                // Held for the executor's life: tokio's spawn and timers work on this
                // thread (on the gateway's runtime).
                let _tokio = tokio_handle.enter();
                let config = Rc::new((*core_config).clone());
                let shard_task = match shard {
                    Some((to_shard_receivers, from_shard_senders, ready)) => match start_shard(
                        config.clone(),
                        to_shard_receivers,
                        from_shard_senders,
                        shard_metrics,
                    )
                    .await
                    {
                        Ok(task) => {
                            let _ = ready.send(Ok(()));
                            Some(task)
                        }
                        Err(error) => {
                            let _ = ready.send(Err(format!("{error:#}")));
                            return;
                        }
                    },
                    None => None,
                };
                // Only core 0 listens; see `placement`.
                let mut listeners = Vec::new();
                if core == 0 {
                    for address in &config.binary_addresses {
                        match bind_shared(address) {
                            Ok(listener) => listeners.push(listener),
                            Err(error) => {
                                let _ =
                                    bound.send(Err(format!("cannot listen on {address}: {error}")));
                                return;
                            }
                        }
                    }
                }
                let _ = bound.send(Ok(()));
                let core = Core::start(
                    core,
                    config,
                    to_shard.connect().await,
                    from_shard.connect().await,
                );
                glommio::spawn_local(run_bridge(core.clone(), bridge_key, bridge)).detach();
                glommio::spawn_local(return_freed_memory(core_metrics)).detach();
                glommio::spawn_local(plan.sample_load()).detach();
                let placement::CorePlan { binary, client, .. } = plan;
                glommio::spawn_local(async move {
                    // The client URLs open later, once there is a leader.
                    let Ok((app, listeners)) = client_receiver.await else {
                        return;
                    };
                    use std::os::fd::{FromRawFd, IntoRawFd};
                    // SAFETY: each descriptor is a bound, listening socket this core
                    // owns from here on (a duplicate of the main thread's).
                    let listeners = listeners
                        .into_iter()
                        .map(|listener| unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) })
                        .collect();
                    client
                        .serve(
                            listeners,
                            // Client-URL connections never move, so nothing is unread.
                            move |stream, _| serve_connection(app.clone(), stream),
                            |_| {},
                        )
                        .await;
                })
                .detach();
                let serving_core = core.clone();
                glommio::spawn_local(binary.serve(
                    listeners,
                    move |stream, unread| connection::serve(serving_core.clone(), stream, unread),
                    // Core 0 may move its binary-protocol connections once it can reach
                    // the other cores.
                    move |handoffs| {
                        let loads = handoffs.placement().clone();
                        core.set_movers(handoffs);
                        glommio::spawn_local(placement::rebalance(loads, core)).detach();
                    },
                ))
                .detach();
                match shard_task {
                    // Core 0's executor lives as long as the shard: its end is the server's.
                    Some(task) => {
                        task.await;
                    }
                    // The other cores serve their connections until the process exits.
                    None => std::future::pending::<()>().await,
                }
            })
            .map_err(|error| anyhow!("cannot start executor for core {core}: {error}"))?;
        core_threads.push(handle);
        if core == 0 {
            wait_for_shard(&ready_rx)?;
        }
    }
    for _ in 0..cores {
        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => bail!("{error}"),
            Err(_) => bail!("an executor stopped during start-up"),
        }
    }
    // The client URLs (gRPC, JSON gateway, /health, /metrics) open last: by now the
    // shard has recovered and every core serves. As etcd, they open once there is a
    // leader (a single member elects itself at once); a member of a cluster whose quorum
    // is not up yet opens them after two election timeouts anyway, and requests then
    // fail with "no leader" until one is elected.
    let patience = if members::initial_members(&config).len() > 1 {
        2 * config.election_timeout
    } else {
        START_LEADER_WAIT_MAX
    };
    let waiting_since = std::time::Instant::now();
    while !metrics.has_leader() && waiting_since.elapsed() < patience {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Non-blocking once here: the flag belongs to the socket, which core 0's duplicate
    // and tokio's listeners share.
    let bind = |addresses: &[std::net::SocketAddr]| -> Result<Vec<std::net::TcpListener>> {
        addresses
            .iter()
            .map(|address| {
                let listener = std::net::TcpListener::bind(address)
                    .with_context(|| format!("cannot listen on {address}"))?;
                listener
                    .set_nonblocking(true)
                    .with_context(|| format!("cannot listen on {address}"))?;
                Ok(listener)
            })
            .collect()
    };
    let client_listeners = bind(&config.client_addresses)?;
    let metrics_listeners = bind(&config.metrics_addresses)?;
    for (core, (handle, sender)) in gateway_handles.iter().zip(client_senders).enumerate() {
        let gateway = Gateway::new(handle.clone(), config.clone(), metrics.clone());
        // Core 0 accepts for every core (see `placement`).
        let listeners = client_listeners
            .iter()
            .filter(|_| core == 0)
            .map(|listener| {
                listener
                    .try_clone()
                    .context("cannot share a client listener with the cores")
            })
            .collect::<Result<Vec<_>>>()?;
        // A core that already stopped has nothing to serve.
        let _ = sender.send((
            crate::gateway::unary::ClientService::new(gateway),
            listeners,
        ));
    }
    drop(client_listeners);
    let gateway = Gateway::new(gateway_handles[0].clone(), config.clone(), metrics);
    crate::gateway::serve::serve_metrics(gateway_runtime.handle(), gateway, metrics_listeners);
    let list = |addresses: &[std::net::SocketAddr]| -> String {
        addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    eprintln!(
        "corekv {VERSION}: member {} serving etcd's gRPC API and HTTP on {}, the binary protocol on {}, with {} cores, data in {}",
        config.name,
        list(&config.client_addresses),
        list(&config.binary_addresses),
        cores,
        config.data_dir.display()
    );

    // Core 0 returns once the shard finished its in-flight work after a shutdown signal.
    let core_zero = core_threads.into_iter().next().expect("at least one core");
    core_zero
        .join()
        .map_err(|error| anyhow!("core 0 executor failed: {error}"))?;
    // Give the cores a moment to write the last replies to their sockets.
    std::thread::sleep(Duration::from_millis(100));
    // The other cores still run calls that may set tokio timers until the process
    // exits, which a runtime shut down here would turn into panics.
    std::mem::forget(gateway_runtime);
    Ok(())
}

/// Recovers the shard on this executor and starts its tasks; returns the task that runs
/// it until shutdown.
async fn start_shard(
    config: Rc<ServerConfig>,
    to_shard_receivers: Vec<shared_channel::SharedReceiver<ToShard>>,
    from_shard_senders: Vec<shared_channel::SharedSender<Vec<Reply>>>,
    metrics: Arc<Metrics>,
) -> Result<glommio::task::JoinHandle<()>> {
    let (events_tx, events_rx) = event_queue();
    let events_tx = Rc::new(events_tx);
    let mut shard = Shard::open(config.clone(), events_tx.clone(), metrics).await?;
    // The transport starts now if the member table names other members (later, when a
    // member is added, otherwise).
    shard.sync_peers()?;
    for receiver in to_shard_receivers {
        glommio::spawn_local(forward(receiver, events_tx.clone())).detach();
    }
    glommio::spawn_local(tick_and_watch_signals(
        config.heartbeat_interval,
        events_tx.clone(),
    ))
    .detach();
    Ok(glommio::spawn_local(async move {
        // Connect to every core's reply channel as the cores start.
        let mut replies = Vec::new();
        for sender in from_shard_senders {
            replies.push(sender.connect().await);
        }
        shard.attach_cores(replies);
        if let Err(error) = shard.run(events_rx).await {
            eprintln!("corekv: shard stopped: {error:#}");
        }
    })
    .detach())
}

/// Hands memory freed on this core back to the kernel when the server has gone quiet.
///
/// mimalloc keeps freed memory for its purge delay (10 s in the corekv binary, so that
/// a busy server reuses it instead of faulting it in again) and returns it only from the
/// thread that freed it, when that thread next allocates or frees. A server that goes
/// quiet after a burst of writes (a bulk load, a snapshot) would hold what the burst
/// freed, about 100 MB after loading a million keys, for as long as it stays quiet. So
/// every few seconds each core asks for the memory whose delay has passed, and, when no
/// entry was applied since the last time (no writes for that long), for all of it.
async fn return_freed_memory(metrics: Arc<Metrics>) {
    let mut applied = metrics.applied_index();
    loop {
        glommio::timer::sleep(ALLOCATOR_COLLECT_INTERVAL).await;
        let now = metrics.applied_index();
        let quiet = now == applied;
        applied = now;
        shard::release_free_memory(quiet);
    }
}

/// How long a single member waits for its own election before serving clients.
const START_LEADER_WAIT_MAX: Duration = Duration::from_secs(10);

/// Bytes one peer frame may hold: the largest batch of appends with room to spare.
const PEER_FRAME_BYTES_MAX: usize = 64 << 20;
/// The smallest limit on a snapshot sent to or received from a peer; it grows to four
/// times `--quota-backend-bytes` (a snapshot holds the history the quota counts once).
const PEER_SNAPSHOT_BYTES_MIN: usize = 8 << 30;
/// Messages queued for one peer before it counts as unreachable.
const PEER_QUEUE_MESSAGES_MAX: usize = 16_384;

/// Starts the peer transport: it listens on `--listen-peer-urls` (and dials the members
/// the shard names with `set_peer`); what arrives goes into the shard's event queue.
pub(crate) fn start_peer_transport(
    config: &ServerConfig,
    ids: shard::Ids,
    events: Rc<glommio::channels::local_channel::LocalSender<Event>>,
) -> Result<Rc<peer::PeerTransport>> {
    let (inbox, messages) =
        glommio::channels::local_channel::new_bounded::<Vec<corekv_raft::Message>>(1024);
    let transport = peer::PeerTransport::start(
        peer::PeerConfig {
            cluster_id: ids.cluster,
            me: ids.member,
            listen: config.peer_addresses.clone(),
            peers: Vec::new(),
            frame_bytes_max: PEER_FRAME_BYTES_MAX.max(4 * config.request_bytes_max),
            snapshot_bytes_max: PEER_SNAPSHOT_BYTES_MIN.max(
                usize::try_from(config.quota_backend_bytes.saturating_mul(4)).unwrap_or(usize::MAX),
            ),
            queue_messages_max: PEER_QUEUE_MESSAGES_MAX,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        },
        Rc::new(inbox),
    )?;
    glommio::spawn_local(async move {
        while let Some(batch) = messages.recv().await {
            if events.send(Event::Peer(batch)).await.is_err() {
                return;
            }
        }
    })
    .detach();
    Ok(transport)
}

/// Binds a binary-protocol listener that also binds while a killed server's listener
/// lingers in io_uring for a moment (SO_REUSEPORT; see the start-up check in [`run`])
/// and while connections of an earlier socket on the port linger in TIME_WAIT
/// (SO_REUSEADDR, as std's listeners set it; glommio's bind does not).
fn bind_shared(address: &std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    let domain = if address.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr
    // structs are zero-initialised, fully set and outlive the calls that read them. On
    // success the descriptor is handed whole to the listener, which closes it.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fail = |fd: libc::c_int| {
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            Err(error)
        };
        let one: libc::c_int = 1;
        for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return fail(fd);
            }
        }
        let bound = match address {
            std::net::SocketAddr::V4(v4) => {
                let mut raw: libc::sockaddr_in = std::mem::zeroed();
                raw.sin_family = libc::AF_INET as libc::sa_family_t;
                raw.sin_port = v4.port().to_be();
                raw.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                libc::bind(
                    fd,
                    std::ptr::addr_of!(raw).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            std::net::SocketAddr::V6(v6) => {
                let mut raw: libc::sockaddr_in6 = std::mem::zeroed();
                raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                raw.sin6_port = v6.port().to_be();
                raw.sin6_addr.s6_addr = v6.ip().octets();
                raw.sin6_scope_id = v6.scope_id();
                libc::bind(
                    fd,
                    std::ptr::addr_of!(raw).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if bound != 0 || libc::listen(fd, 1024) != 0 {
            return fail(fd);
        }
        Ok(TcpListener::from_raw_fd(fd))
    }
}

/// Asks the server to stop as SIGTERM does (a member removed from the cluster stops).
pub(crate) fn request_shutdown() {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

/// Waits for core 0 to report the shard's recovery.
fn wait_for_shard(ready: &mpsc::Receiver<Result<(), String>>) -> Result<()> {
    loop {
        match ready.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => bail!("{error}"),
            Err(mpsc::RecvTimeoutError::Timeout) if SHUTDOWN.load(Ordering::SeqCst) => {
                // Stopped while recovering: nothing was acknowledged yet, and recovery is
                // as safe to interrupt as a crash.
                std::process::exit(0);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the shard stopped during start-up")
            }
        }
    }
}

/// Ticks Raft every heartbeat interval, and turns a shutdown signal into an event.
async fn tick_and_watch_signals(
    interval: Duration,
    events: Rc<glommio::channels::local_channel::LocalSender<Event>>,
) {
    // Ticks keep a fixed rate (a tick that ran late does not push the next one back),
    // so the election timeout stays what --election-timeout says under load; after a
    // stall longer than an interval the schedule restarts rather than firing a burst.
    let mut next = std::time::Instant::now() + interval;
    loop {
        let now = std::time::Instant::now();
        if next > now {
            glommio::timer::sleep(next - now).await;
        }
        let now = std::time::Instant::now();
        next = if now.duration_since(next) >= interval {
            now + interval
        } else {
            next + interval
        };
        let event = if SHUTDOWN.load(Ordering::SeqCst) {
            Event::Shutdown
        } else {
            Event::Tick
        };
        let shutdown = matches!(event, Event::Shutdown);
        if events.send(event).await.is_err() {
            return;
        }
        if shutdown {
            // Keep ticking so the shard can finish its in-flight work.
            loop {
                glommio::timer::sleep(interval).await;
                if events.send(Event::Tick).await.is_err() {
                    return;
                }
            }
        }
    }
}
