//! Which core serves a connection.
//!
//! The shard's core (core 0) accepts every connection, on the binary and the client
//! listeners, and decides where it is served. By default it keeps a connection while
//! it has room: a request served on the shard's own core reaches the shard without
//! crossing cores, while one served elsewhere pays for a cross-core hand-off each way
//! (a shared channel, an eventfd wake-up, a memory barrier before each executor sleep).
//! On two cores that shared a host with a load generator, the same gRPC put load cost
//! about a third less CPU per put with every connection on core 0 (docs/server.md).
//! Once core 0 is busy for more than [`SHARD_CORE_BUSY_MAX`] of its time, new
//! connections go to the least busy core, so a host with more load than one core can
//! carry uses its other cores.
//!
//! `--spread-connections` places every connection on the core with the fewest open
//! connections instead, from the first one on.
//!
//! A connection opened while core 0 was idle would stay there when the load comes, so
//! while core 0 is saturated ([`SHARD_CORE_SATURATED`] of a sample) and another core
//! has room, core 0 moves its busiest binary-protocol connection there every
//! [`REBALANCE_INTERVAL`] ([`rebalance`]; how a connection moves is in `connection`).
//! gRPC connections stay where they were placed. How busy a core is comes from its
//! thread's CPU time, sampled every [`SAMPLE_INTERVAL`] and smoothed over about a
//! second.

use std::future::Future;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::net::{AcceptedTcpStream, TcpListener, TcpStream};
use glommio::{GlommioError, ResourceType};

/// Share of its time core 0 may be busy and still take new connections itself, in
/// thousandths.
pub(crate) const SHARD_CORE_BUSY_MAX: u32 = 500;
/// Share of a sample's interval core 0 runs when it counts as saturated: its busiest
/// binary-protocol connection then moves to another core, in thousandths.
pub(crate) const SHARD_CORE_SATURATED: u32 = 900;
/// How often core 0 considers moving a connection.
pub(crate) const REBALANCE_INTERVAL: Duration = Duration::from_millis(200);
/// How often each core samples its CPU time.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
/// Weight of the newest sample in a core's busy figure, in thousandths: with samples
/// every 100 ms, older ones fade out over about a second.
const SAMPLE_WEIGHT: u32 = 200;
/// Connections queued for a core that has not taken them yet.
pub(crate) const HANDOFF_QUEUE_MAX: usize = 1024;

/// A connection on its way to the core that serves it, already counted there.
pub(crate) struct Handoff(Arrival, OpenConnection);

enum Arrival {
    /// Freshly accepted.
    Accepted(AcceptedTcpStream),
    /// Moved from core 0, which had done its handshake and read `unread` of its bytes.
    Moved { fd: OwnedFd, unread: Vec<u8> },
}

/// Core 0's ends of the hand-off queues: `queues[i]` reaches core `i + 1`.
#[derive(Clone)]
pub(crate) struct Handoffs {
    placement: Arc<Placement>,
    queues: Rc<[ConnectedSender<Handoff>]>,
}

impl Handoffs {
    /// Queues `arrival` for `core`, counted there from now on. Hands it back when
    /// `core` is core 0 or its queue is full or gone.
    fn send(&self, core: usize, arrival: Arrival) -> Result<(), Arrival> {
        let Some(queue) = core.checked_sub(1).and_then(|other| self.queues.get(other)) else {
            return Err(arrival);
        };
        match queue.try_send(Handoff(arrival, self.placement.open(core))) {
            Err(
                GlommioError::Closed(ResourceType::Channel(Handoff(arrival, _)))
                | GlommioError::WouldBlock(ResourceType::Channel(Handoff(arrival, _))),
            ) => Err(arrival),
            // try_send fails only with the item handed back, as above.
            _ => Ok(()),
        }
    }

    /// Moves a connection core 0 served until now to `core`; hands its socket back when
    /// that core cannot take it.
    pub(crate) fn move_to(
        &self,
        core: usize,
        fd: OwnedFd,
        unread: Vec<u8>,
    ) -> Result<(), (OwnedFd, Vec<u8>)> {
        match self.send(core, Arrival::Moved { fd, unread }) {
            Ok(()) => {
                self.placement.moved.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(Arrival::Moved { fd, unread }) => Err((fd, unread)),
            // send hands back what it was given.
            Err(Arrival::Accepted(_)) => Ok(()),
        }
    }

    /// The load of every core.
    pub(crate) fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }
}

/// The load of every core, shared by all of them.
#[derive(Debug)]
pub(crate) struct Placement {
    spread: bool,
    /// [`SHARD_CORE_SATURATED`], except in test builds told otherwise.
    saturated: u32,
    cores: Box<[CoreLoad]>,
    /// Connections moved from core 0 to another core so far.
    moved: AtomicU64,
}

#[derive(Debug, Default)]
struct CoreLoad {
    /// Thousandths of the last second this core's thread ran.
    busy: AtomicU32,
    /// Thousandths of the last sample's interval it ran.
    last: AtomicU32,
    /// Connections this core serves now.
    connections: AtomicU32,
}

impl Placement {
    /// Placement over `cores` cores; `spread` is `--spread-connections`.
    pub(crate) fn new(cores: usize, spread: bool) -> Arc<Placement> {
        Arc::new(Placement {
            spread,
            saturated: saturated_threshold(),
            cores: (0..cores.max(1)).map(|_| CoreLoad::default()).collect(),
            moved: AtomicU64::new(0),
        })
    }

    /// The core a connection of core 0 should move to now, if any: core 0 ran for at
    /// least [`SHARD_CORE_SATURATED`] of the last sample and another core for less
    /// than [`SHARD_CORE_BUSY_MAX`] of it.
    pub(crate) fn rebalance_target(&self) -> Option<usize> {
        if self.cores[0].last.load(Ordering::Relaxed) < self.saturated {
            return None;
        }
        (1..self.cores.len())
            .map(|core| (self.cores[core].last.load(Ordering::Relaxed), core))
            .min()
            .filter(|(last, _)| *last < SHARD_CORE_BUSY_MAX)
            .map(|(_, core)| core)
    }

    /// The core that should serve the next connection.
    pub(crate) fn choose(&self) -> usize {
        let fewest_connections =
            |core: &usize| self.cores[*core].connections.load(Ordering::Relaxed);
        if self.spread {
            return (0..self.cores.len())
                .min_by_key(fewest_connections)
                .unwrap_or(0);
        }
        if self.cores[0].busy.load(Ordering::Relaxed) <= SHARD_CORE_BUSY_MAX {
            return 0;
        }
        (0..self.cores.len())
            .min_by_key(|core| {
                (
                    self.cores[*core].busy.load(Ordering::Relaxed),
                    fewest_connections(core),
                )
            })
            .unwrap_or(0)
    }

    /// Counts a connection on `core` until the returned guard is dropped.
    pub(crate) fn open(self: &Arc<Self>, core: usize) -> OpenConnection {
        self.cores[core].connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            placement: self.clone(),
            core,
        }
    }

    /// Folds a sample (thousandths of the interval `core` ran) into its busy figure.
    pub(crate) fn record_busy(&self, core: usize, sample: u32) {
        self.cores[core]
            .last
            .store(sample.min(1000), Ordering::Relaxed);
        let busy = &self.cores[core].busy;
        let old = busy.load(Ordering::Relaxed);
        let new = (old * (1000 - SAMPLE_WEIGHT) + sample.min(1000) * SAMPLE_WEIGHT) / 1000;
        busy.store(new, Ordering::Relaxed);
    }

    /// Connections `core` serves now.
    pub(crate) fn connections(&self, core: usize) -> u32 {
        self.cores[core].connections.load(Ordering::Relaxed)
    }

    /// Thousandths of about the last second `core` ran.
    pub(crate) fn busy(&self, core: usize) -> u32 {
        self.cores[core].busy.load(Ordering::Relaxed)
    }

    /// Connections moved to another core so far.
    pub(crate) fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// How many cores there are.
    pub(crate) fn cores(&self) -> usize {
        self.cores.len()
    }
}

/// One open connection, counted on its core while this lives.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    placement: Arc<Placement>,
    core: usize,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.placement.cores[self.core]
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Samples this core's CPU time every [`SAMPLE_INTERVAL`] into `placement`, for ever.
async fn sample_busy(placement: Arc<Placement>, core: usize) {
    let mut last_cpu = thread_cpu_time();
    let mut last_wall = Instant::now();
    loop {
        glommio::timer::sleep(SAMPLE_INTERVAL).await;
        let cpu = thread_cpu_time();
        let wall = Instant::now();
        let elapsed = wall.duration_since(last_wall).as_nanos().max(1);
        let ran = cpu.saturating_sub(last_cpu).as_nanos();
        placement.record_busy(core, (ran * 1000 / elapsed).min(1000) as u32);
        last_cpu = cpu;
        last_wall = wall;
    }
}

/// On core 0: every [`REBALANCE_INTERVAL`], while core 0 is saturated and another core
/// has room, asks core 0's busiest binary-protocol connection to move there (see
/// [`Placement::rebalance_target`] and `connection::Core::ask_to_move`). Connections
/// only ever move away from core 0, one per interval at most.
pub(crate) async fn rebalance(placement: Arc<Placement>, core: Rc<super::connection::Core>) {
    loop {
        glommio::timer::sleep(REBALANCE_INTERVAL).await;
        if let Some(target) = placement.rebalance_target() {
            core.ask_to_move(target);
        }
    }
}

/// When core 0 counts as saturated. Builds with debug assertions (the test builds) take
/// `COREKV_TEST_SATURATED_PERMILLE` instead, so that a test can make core 0 move
/// connections without saturating a CPU; release builds ignore it.
fn saturated_threshold() -> u32 {
    if cfg!(debug_assertions) {
        if let Some(permille) = std::env::var("COREKV_TEST_SATURATED_PERMILLE")
            .ok()
            .and_then(|value| value.parse().ok())
        {
            return permille;
        }
    }
    SHARD_CORE_SATURATED
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if result != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// One core's ends of the hand-off queues, made by [`plan`]: core 0 holds a sender to
/// every other core, each other core its receivers.
pub(crate) struct CorePlan {
    placement: Arc<Placement>,
    index: usize,
    /// Binary-protocol connections.
    pub binary: Side,
    /// Client-URL connections (gRPC and HTTP).
    pub client: Side,
}

/// One core's end of one kind of connection.
pub(crate) struct Side {
    placement: Arc<Placement>,
    end: End,
}

enum End {
    Accepts(Vec<SharedSender<Handoff>>),
    Receives(SharedReceiver<Handoff>),
}

/// The hand-off queues of every core (one for binary-protocol connections and one for
/// client-URL connections per core other than 0), and each core's ends, by core.
pub(crate) fn plan(placement: &Arc<Placement>) -> Vec<CorePlan> {
    let side = |end: End| Side {
        placement: placement.clone(),
        end,
    };
    let mut binary_out = Vec::new();
    let mut client_out = Vec::new();
    let mut plans = Vec::new();
    for index in 1..placement.cores.len() {
        let (binary_sender, binary_receiver) = shared_channel::new_bounded(HANDOFF_QUEUE_MAX);
        let (client_sender, client_receiver) = shared_channel::new_bounded(HANDOFF_QUEUE_MAX);
        binary_out.push(binary_sender);
        client_out.push(client_sender);
        plans.push(CorePlan {
            placement: placement.clone(),
            index,
            binary: side(End::Receives(binary_receiver)),
            client: side(End::Receives(client_receiver)),
        });
    }
    plans.insert(
        0,
        CorePlan {
            placement: placement.clone(),
            index: 0,
            binary: side(End::Accepts(binary_out)),
            client: side(End::Accepts(client_out)),
        },
    );
    plans
}

impl CorePlan {
    /// Samples this core's load for ever (see [`sample_busy`]).
    pub(crate) fn sample_load(&self) -> impl Future<Output = ()> {
        sample_busy(self.placement.clone(), self.index)
    }
}

impl Side {
    /// Serves connections with `serve`: on core 0 those accepted on `listeners` and
    /// kept, on the other cores those core 0 hands over. Returns when core 0 stops
    /// handing over (never on core 0: it accepts until the process exits).
    ///
    /// `serve` gets each connection and, for one that moved from core 0, the bytes core 0
    /// had read and not handled. On core 0, `connected` gets the other cores' queues once
    /// they are connected.
    pub(crate) async fn serve<F, Fut>(
        self,
        listeners: Vec<TcpListener>,
        serve: F,
        connected: impl FnOnce(Handoffs),
    ) where
        F: Fn(TcpStream, Option<Vec<u8>>) -> Fut + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let Side { placement, end } = self;
        // A connection counts on its core while it is served.
        let serve_here = move |stream: TcpStream, unread: Option<Vec<u8>>, open: OpenConnection| {
            let served = serve(stream, unread);
            glommio::spawn_local(async move {
                served.await;
                drop(open);
            })
            .detach();
        };
        match end {
            End::Receives(receiver) => {
                let handoffs = receiver.connect().await;
                while let Some(Handoff(arrival, open)) = handoffs.recv().await {
                    match arrival {
                        Arrival::Accepted(accepted) => {
                            serve_here(accepted.bind_to_executor(), None, open);
                        }
                        Arrival::Moved { fd, unread } => {
                            // SAFETY: an open, connected socket this core owns from here.
                            let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                            serve_here(stream, Some(unread), open);
                        }
                    }
                }
            }
            End::Accepts(senders) => {
                let mut queues = Vec::with_capacity(senders.len());
                for sender in senders {
                    queues.push(sender.connect().await);
                }
                let handoffs = Handoffs {
                    placement,
                    queues: queues.into(),
                };
                connected(handoffs.clone());
                let accepting: Vec<_> = listeners
                    .into_iter()
                    .map(|listener| {
                        glommio::spawn_local(accept_and_place(
                            listener,
                            handoffs.clone(),
                            serve_here.clone(),
                        ))
                    })
                    .collect();
                for task in accepting {
                    task.await;
                }
            }
        }
    }
}

/// Accepts on `listener` (on core 0) for ever, serving each connection here with
/// `serve_here` or handing it to the core [`Placement::choose`] names. A hand-off that
/// cannot be queued (that core's queue is full, or it stopped) is served here. A
/// connection still queued when its core stops is closed when the process exits (the
/// server is stopping then).
async fn accept_and_place(
    listener: TcpListener,
    handoffs: Handoffs,
    serve_here: impl Fn(TcpStream, Option<Vec<u8>>, OpenConnection),
) {
    loop {
        let accepted = match listener.shared_accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("corekv: accepting a connection failed: {error}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let core = handoffs.placement.choose();
        match handoffs.send(core, Arrival::Accepted(accepted)) {
            Ok(()) => {}
            Err(Arrival::Accepted(accepted)) => serve_here(
                accepted.bind_to_executor(),
                None,
                handoffs.placement.open(0),
            ),
            // send hands back what it was given.
            Err(Arrival::Moved { .. }) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(placement: &Placement, busy: &[u32], connections: &[u32]) {
        for (core, load) in placement.cores.iter().enumerate() {
            load.busy.store(busy[core], Ordering::Relaxed);
            load.connections.store(connections[core], Ordering::Relaxed);
        }
    }

    #[test]
    fn the_shard_core_keeps_connections_while_it_has_room() {
        let placement = Placement::new(3, false);
        loads(&placement, &[0, 0, 0], &[40, 0, 0]);
        assert_eq!(placement.choose(), 0);
        loads(&placement, &[SHARD_CORE_BUSY_MAX, 0, 0], &[40, 0, 0]);
        assert_eq!(placement.choose(), 0);
    }

    #[test]
    fn a_busy_shard_core_sends_connections_to_the_least_busy_core() {
        let placement = Placement::new(3, false);
        loads(&placement, &[SHARD_CORE_BUSY_MAX + 1, 300, 200], &[1, 0, 5]);
        assert_eq!(placement.choose(), 2);
        // Equally busy: the one with fewer connections.
        loads(&placement, &[900, 200, 200], &[1, 3, 2]);
        assert_eq!(placement.choose(), 2);
        // Every other core busier still: core 0 keeps it.
        loads(&placement, &[700, 900, 950], &[1, 0, 0]);
        assert_eq!(placement.choose(), 0);
    }

    #[test]
    fn spreading_picks_the_core_with_the_fewest_connections() {
        let placement = Placement::new(3, true);
        loads(&placement, &[0, 900, 900], &[2, 1, 2]);
        assert_eq!(placement.choose(), 1);
        let first = placement.open(1);
        assert_eq!(placement.choose(), 0);
        drop(first);
        assert_eq!(placement.connections(1), 1);
        assert_eq!(placement.choose(), 1);
    }

    #[test]
    fn only_a_saturated_shard_core_moves_connections_and_only_to_a_core_with_room() {
        let placement = Placement::new(3, false);
        let last = |samples: [u32; 3]| {
            for (core, sample) in samples.into_iter().enumerate() {
                placement.cores[core].last.store(sample, Ordering::Relaxed);
            }
            placement.rebalance_target()
        };
        assert_eq!(last([SHARD_CORE_SATURATED - 1, 0, 0]), None);
        assert_eq!(last([SHARD_CORE_SATURATED, 300, 100]), Some(2));
        assert_eq!(last([1000, 200, 400]), Some(1));
        assert_eq!(last([1000, SHARD_CORE_BUSY_MAX, 900]), None);
        assert_eq!(Placement::new(1, false).rebalance_target(), None);
    }

    #[test]
    fn one_core_takes_everything() {
        for spread in [false, true] {
            let placement = Placement::new(1, spread);
            loads(&placement, &[1000], &[100]);
            assert_eq!(placement.choose(), 0);
        }
    }

    #[test]
    fn busy_figures_follow_samples_over_about_a_second() {
        let placement = Placement::new(1, false);
        for _ in 0..10 {
            placement.record_busy(0, 1000);
        }
        let after_a_busy_second = placement.cores[0].busy.load(Ordering::Relaxed);
        assert!(
            (850..=1000).contains(&after_a_busy_second),
            "{after_a_busy_second}"
        );
        placement.record_busy(0, 0);
        let after_one_idle_sample = placement.cores[0].busy.load(Ordering::Relaxed);
        assert!(
            after_one_idle_sample > SHARD_CORE_BUSY_MAX,
            "{after_one_idle_sample}"
        );
        for _ in 0..10 {
            placement.record_busy(0, 0);
        }
        assert!(placement.cores[0].busy.load(Ordering::Relaxed) < 150);
        // Samples above the whole interval (rounding) count as the whole interval.
        placement.record_busy(0, 5000);
        assert!(placement.cores[0].busy.load(Ordering::Relaxed) <= 1000);
    }
}
