//! The peer transport: carries `corekv_raft::Message`s between the members of a cluster
//! over TCP on the peer URLs (etcd's `--listen-peer-urls`, default port 2380). Wire
//! format: docs/peer-protocol.md.
//!
//! Shape (etcd's rafthttp streams, written anew): every member dials every other member
//! for its outgoing traffic and accepts the others' connections for its incoming traffic,
//! so each pair of members has two long-lived one-way TCP connections. A dialer opens with
//! a handshake (magic, version, cluster id, its member id, the member it expects); the
//! acceptor refuses another cluster, a target that is not itself and a member it does not
//! know. After that only the dialer writes: frames, each a batch of messages.
//!
//! * **Outgoing** (`outgoing.rs`): one task per peer drains a bounded queue, putting
//!   everything queued into one frame and one write (batching) and never waiting for
//!   answers (AppendEntries pipelining is Raft's; the transport only keeps order). A
//!   failed connect, a broken connection or a refused handshake marks the peer
//!   unreachable, drops what was queued, and the task reconnects after an exponential
//!   backoff (`backoff_min` doubling to `backoff_max`, back to `backoff_min` after a
//!   connection succeeds). While it backs off, messages for the peer are dropped at once
//!   and the peer is reported unreachable: Raft resends what matters, and stale
//!   heartbeats delivered late help nobody.
//! * **Snapshots** travel on a connection of their own, opened per `InstallSnapshot`, so
//!   that hundreds of MB never hold back the heartbeats that keep a follower from
//!   campaigning (etcd sends snapshots outside its streams for the same reason). The
//!   acceptor answers one byte once the snapshot is in the inbox; the outcome is
//!   reported by [`PeerTransport::take_snapshot_reports`] for `RawNode::report_snapshot`.
//! * **Incoming** (`incoming.rs`): every frame becomes one `Vec<Message>` sent to the
//!   inbox (the shard steps them). A full inbox stops the reading, which pushes back
//!   through TCP to the sender's queue. A connection that sends garbage, a frame over
//!   the limit or a message Raft must not see (see [`codec::check_incoming`]) is closed
//!   with a log line.
//!
//! Limits and what happens at them:
//! * `queue_messages_max` messages queued for one peer: further messages to it are
//!   dropped and it is reported unreachable;
//! * `frame_bytes_max` bytes in one frame of messages: a received frame over it closes the
//!   connection (checked before anything is allocated); a message that cannot fit is
//!   dropped by the sender with a log line and the peer is reported unreachable. The
//!   whole limit may be allocated for one incoming frame, so it also bounds the memory
//!   one message connection holds;
//! * `snapshot_bytes_max` bytes in the frame of a snapshot connection, data included: the
//!   same checks, and a snapshot over it is reported failed. Its head (allocated at once)
//!   is still held to `frame_bytes_max`; its data is read in pieces of
//!   [`SNAPSHOT_READ_PIECE_BYTES`] into a buffer that grows (doubling, never past the
//!   announced length) only as bytes arrive, so a snapshot of gigabytes needs no frame
//!   limit of gigabytes on message connections and a lying data length costs memory
//!   only in proportion to the bytes really sent;
//! * a frame holds at most [`FRAME_BYTES_TARGET`] bytes of ordinary messages (one larger
//!   message travels alone), so one write and one inbox batch stay a few MB;
//! * [`INCOMING_CONNECTIONS_MAX`] accepted connections open at once: more are closed as
//!   soon as they are accepted (a flood of idle connections cannot hold descriptors; an
//!   idle one is closed after [`HANDSHAKE_TIMEOUT`] anyway).
//!
//! Invariants: runs on one glommio executor (`Rc`, `RefCell`, no locks); `send` never
//! blocks; messages to one peer leave in the order they were sent; nothing panics on
//! anything a peer sends. Never: step Raft or touch the shard's state — it only moves
//! messages and reports what it could not deliver.

pub mod codec;
pub mod handshake;
mod incoming;
mod outgoing;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use corekv_raft::{Message, MessageBody};
use glommio::channels::local_channel::LocalSender;
use glommio::net::TcpListener;
use glommio::task::JoinHandle;

use self::handshake::{HandshakeStatus, Lane};
use self::outgoing::Link;

/// Bytes of ordinary messages one frame carries at most (a single larger message, up to
/// `frame_bytes_max`, travels in a frame of its own).
pub const FRAME_BYTES_TARGET: usize = 4 << 20;
/// How long a dialer waits for a TCP connection (etcd's peer dial timeout is 1 s too).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long either side waits for the other's handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write may make no progress before the connection counts as broken (etcd's
/// `ConnWriteTimeout`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a snapshot's sender waits for the receiver's acknowledgement once the last
/// byte is written (the receiver decodes the snapshot and queues it for its shard).
pub const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes handed to the socket per write of a snapshot's data.
pub const SNAPSHOT_WRITE_PIECE_BYTES: usize = 1 << 20;
/// Bytes a receiver reads at most before growing a snapshot's buffer again.
pub const SNAPSHOT_READ_PIECE_BYTES: usize = 4 << 20;
/// Accepted peer connections open at once at most (handshaking or not); more are closed
/// as soon as they are accepted. A member has one message connection per peer, plus one
/// per snapshot being received.
pub const INCOMING_CONNECTIONS_MAX: usize = 256;
/// A handshake refusal is logged at most this often per member and reason (a refused
/// dialer retries at every backoff).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The smallest `frame_bytes_max` accepted: room for a frame of a few small messages.
pub const FRAME_BYTES_MAX_MIN: usize = 4096;

/// What can go wrong on a peer connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("truncated: the bytes end inside the {during}")]
    Truncated { during: &'static str },
    #[error("frame of {length} bytes is over the limit of {max} bytes")]
    FrameTooLarge { length: u64, max: u64 },
    #[error("unknown frame codec version {0}")]
    UnknownVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownMessageKind(u8),
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("{during}: {source}")]
    Io {
        during: &'static str,
        source: std::io::Error,
    },
    #[error("refused by member {member:x} of cluster {cluster_id:x}: {}", status.describe())]
    Refused {
        status: HandshakeStatus,
        cluster_id: u64,
        member: u64,
    },
    #[error("no peer address to dial")]
    NoAddress,
    #[error("connection closed by the other side")]
    Closed,
}

impl PeerError {
    pub(crate) fn io(during: &'static str) -> impl FnOnce(std::io::Error) -> PeerError {
        move |source| PeerError::Io { during, source }
    }

    /// The same for glommio's socket calls.
    pub(crate) fn glommio(
        during: &'static str,
    ) -> impl FnOnce(glommio::GlommioError<()>) -> PeerError {
        move |error| PeerError::Io {
            during,
            source: error.into(),
        }
    }
}

/// How the transport is set up. Member and cluster ids are etcd's (logged in hex).
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The cluster id every peer must present.
    pub cluster_id: u64,
    /// This member's id (never 0).
    pub me: u64,
    /// Addresses to accept peers on (`--listen-peer-urls`).
    pub listen: Vec<SocketAddr>,
    /// The other members and their peer addresses (`--initial-cluster`, then the member
    /// list); each address is tried in turn when connecting.
    pub peers: Vec<(u64, Vec<SocketAddr>)>,
    /// Bytes one frame of messages may hold, both ways; see the module doc for what it
    /// costs.
    pub frame_bytes_max: usize,
    /// Bytes the one frame of a snapshot connection may hold, prefix and snapshot data
    /// included, both ways: the largest snapshot a member sends or accepts. The receiver
    /// grows its buffer as the data arrives, so the limit is not allocated up front.
    pub snapshot_bytes_max: usize,
    /// Messages queued for one peer at most (snapshots are not counted: at most one is
    /// queued per peer, a newer one replacing it).
    pub queue_messages_max: usize,
    /// The first wait before reconnecting to a peer.
    pub backoff_min: Duration,
    /// The longest wait before reconnecting.
    pub backoff_max: Duration,
}

/// The peer transport of one member; see the module doc.
pub struct PeerTransport {
    shared: Rc<Shared>,
}

impl fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTransport")
            .field("me", &format_args!("{:x}", self.shared.me))
            .field(
                "peers",
                &self.shared.links.borrow().keys().collect::<Vec<_>>(),
            )
            .field("stopped", &self.shared.stopped.get())
            .finish()
    }
}

/// State shared by the transport's handle and its tasks.
pub(crate) struct Shared {
    cluster_id: u64,
    me: u64,
    frame_bytes_max: usize,
    snapshot_bytes_max: usize,
    queue_messages_max: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    inbox: Rc<LocalSender<Vec<Message>>>,
    links: RefCell<BTreeMap<u64, Rc<Link>>>,
    unreachable: RefCell<BTreeSet<u64>>,
    snapshot_reports: RefCell<Vec<(u64, bool)>>,
    /// Accepted connections by connection number: who they are from once the handshake
    /// named them, and their task.
    incoming: RefCell<BTreeMap<u64, Incoming>>,
    next_connection: Cell<u64>,
    accepting: RefCell<Vec<JoinHandle<()>>>,
    /// When each (member, refusal status) was last logged.
    refusals_logged: RefCell<BTreeMap<(u64, u8), Instant>>,
    stopped: Cell<bool>,
    /// The member directory a joining member is sent (see [`Lane::Members`]).
    directory: RefCell<Vec<u8>>,
}

pub(crate) struct Incoming {
    from: Option<(u64, Lane)>,
    task: JoinHandle<()>,
}

impl Shared {
    fn mark_unreachable(&self, member: u64) {
        self.unreachable.borrow_mut().insert(member);
    }

    /// Whether a refusal of `member` for `status` should be logged now (at most once per
    /// [`REFUSAL_LOG_INTERVAL`] each).
    fn should_log_refusal(&self, member: u64, status: HandshakeStatus) -> bool {
        let now = Instant::now();
        let mut logged = self.refusals_logged.borrow_mut();
        if logged.len() >= INCOMING_CONNECTIONS_MAX {
            // Bounded even if every dialer claims another member id.
            logged.retain(|_, at| now.duration_since(*at) < REFUSAL_LOG_INTERVAL);
            if logged.len() >= INCOMING_CONNECTIONS_MAX {
                logged.clear();
            }
        }
        match logged.get(&(member, status.byte())) {
            Some(at) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => false,
            _ => {
                logged.insert((member, status.byte()), now);
                true
            }
        }
    }

    /// The acceptor's verdict on a hello.
    fn judge(&self, hello: &handshake::Hello) -> HandshakeStatus {
        if hello.version != handshake::PROTOCOL_VERSION {
            HandshakeStatus::VersionUnsupported
        } else if hello.lane.is_none() {
            HandshakeStatus::UnknownLane
        } else if hello.lane == Some(Lane::Members) {
            // Anyone may read the member list: it is what `--initial-cluster` already
            // told the joining member, plus the ids.
            HandshakeStatus::Accepted
        } else if hello.cluster_id != self.cluster_id {
            HandshakeStatus::ClusterMismatch
        } else if hello.to != self.me {
            HandshakeStatus::WrongMember
        } else if !self.links.borrow().contains_key(&hello.from) {
            HandshakeStatus::UnknownMember
        } else {
            HandshakeStatus::Accepted
        }
    }

    /// Records who an accepted connection is from; a newer message stream from a member
    /// replaces the older one (which is closed: its dialer has given up on it).
    fn register_incoming(&self, connection: u64, from: u64, lane: Lane) {
        let mut replaced = Vec::new();
        {
            let mut incoming = self.incoming.borrow_mut();
            if lane == Lane::Messages {
                let older: Vec<u64> = incoming
                    .iter()
                    .filter(|(&id, entry)| id != connection && entry.from == Some((from, lane)))
                    .map(|(&id, _)| id)
                    .collect();
                for id in older {
                    replaced.extend(incoming.remove(&id));
                }
            }
            if let Some(entry) = incoming.get_mut(&connection) {
                entry.from = Some((from, lane));
            }
        }
        for entry in replaced {
            entry.task.cancel();
        }
    }

    /// Closes every accepted connection from `member`.
    fn close_incoming_from(&self, member: u64) {
        let closed: Vec<Incoming> = {
            let mut incoming = self.incoming.borrow_mut();
            let ids: Vec<u64> = incoming
                .iter()
                .filter(|(_, entry)| matches!(entry.from, Some((from, _)) if from == member))
                .map(|(&id, _)| id)
                .collect();
            ids.into_iter()
                .filter_map(|id| incoming.remove(&id))
                .collect()
        };
        for entry in closed {
            entry.task.cancel();
        }
    }
}

impl PeerTransport {
    /// Binds the listeners (errors are start-up errors: address in use...) and spawns the
    /// accept loop and the sender tasks of every peer. Must run on the glommio executor
    /// that will own the transport.
    ///
    /// The listeners are bound without SO_REUSEPORT, so a second member on the same
    /// address fails here instead of silently sharing the port.
    pub fn start(
        config: PeerConfig,
        inbox: Rc<LocalSender<Vec<Message>>>,
    ) -> anyhow::Result<Rc<PeerTransport>> {
        if config.me == 0 {
            bail!("peer transport: member id 0 is reserved");
        }
        if config.frame_bytes_max < FRAME_BYTES_MAX_MIN {
            bail!(
                "peer transport: frame_bytes_max {} is under the minimum of {FRAME_BYTES_MAX_MIN}",
                config.frame_bytes_max
            );
        }
        if config.queue_messages_max == 0 {
            bail!("peer transport: queue_messages_max must be at least 1");
        }
        if config.backoff_min.is_zero() || config.backoff_min > config.backoff_max {
            bail!(
                "peer transport: backoff must satisfy 0 < backoff_min ({:?}) <= backoff_max ({:?})",
                config.backoff_min,
                config.backoff_max
            );
        }
        let mut listeners = Vec::new();
        for address in &config.listen {
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("cannot listen for peers on {address}"))?;
            // SAFETY: the descriptor comes from a listening socket we own and hand over
            // whole; glommio's listener closes it when dropped.
            listeners.push(unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) });
        }
        let shared = Rc::new(Shared {
            cluster_id: config.cluster_id,
            me: config.me,
            frame_bytes_max: config.frame_bytes_max,
            snapshot_bytes_max: config.snapshot_bytes_max.max(config.frame_bytes_max),
            queue_messages_max: config.queue_messages_max,
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max,
            inbox,
            links: RefCell::new(BTreeMap::new()),
            unreachable: RefCell::new(BTreeSet::new()),
            snapshot_reports: RefCell::new(Vec::new()),
            incoming: RefCell::new(BTreeMap::new()),
            next_connection: Cell::new(1),
            accepting: RefCell::new(Vec::new()),
            refusals_logged: RefCell::new(BTreeMap::new()),
            stopped: Cell::new(false),
            directory: RefCell::new(Vec::new()),
        });
        let transport = Rc::new(PeerTransport { shared });
        for (id, addresses) in config.peers {
            transport.set_peer(id, addresses);
        }
        for listener in listeners {
            let task =
                glommio::spawn_local(incoming::accept_loop(transport.shared.clone(), listener))
                    .detach();
            transport.shared.accepting.borrow_mut().push(task);
        }
        Ok(transport)
    }

    /// Queues messages for their `to` member; never blocks. Messages to a peer whose
    /// queue is full (or that is backing off after a failure, or that is not a peer) are
    /// dropped and the peer is reported unreachable: Raft retries. An `InstallSnapshot`
    /// goes to the peer's snapshot connection; a newer one replaces one still queued.
    pub fn send(&self, messages: Vec<Message>) {
        let shared = &self.shared;
        if shared.stopped.get() {
            return;
        }
        let links = shared.links.borrow();
        for message in messages {
            let to = message.to.0;
            let Some(link) = links.get(&to) else {
                shared.mark_unreachable(to);
                continue;
            };
            let frame = codec::frame_bytes([&message]);
            let snapshot = matches!(message.body, MessageBody::InstallSnapshot { .. });
            let limit = if snapshot {
                shared.snapshot_bytes_max
            } else {
                shared.frame_bytes_max
            };
            if frame > limit as u64 {
                eprintln!(
                    "corekv: peer {to:x}: dropped an outgoing {} of {frame} bytes, over the peer frame limit of {limit} bytes",
                    message.body.name(),
                );
                shared.mark_unreachable(to);
                if snapshot {
                    shared.snapshot_reports.borrow_mut().push((to, false));
                }
                continue;
            }
            if snapshot {
                link.queue_snapshot(message);
            } else if !link.queue(message, shared.queue_messages_max) {
                shared.mark_unreachable(to);
            }
        }
    }

    /// Peers that could not be reached since the last call (connect failed, connection
    /// broke, handshake refused, queue overflowed, message dropped), each once, in
    /// increasing id order: the driver calls `RawNode::report_unreachable` for each.
    pub fn take_unreachable(&self) -> Vec<u64> {
        std::mem::take(&mut *self.shared.unreachable.borrow_mut())
            .into_iter()
            .collect()
    }

    /// The outcome of every `InstallSnapshot` handed to [`PeerTransport::send`] since the
    /// last call, in the order they finished: `(member, true)` once the member's
    /// transport has put the snapshot in its inbox, `(member, false)` if it was dropped
    /// or failed. The driver calls `RawNode::report_snapshot` for each. A snapshot
    /// replaced by a newer one while still queued is not reported.
    pub fn take_snapshot_reports(&self) -> Vec<(u64, bool)> {
        std::mem::take(&mut *self.shared.snapshot_reports.borrow_mut())
    }

    /// Sets the member directory sent to members that join (opaque bytes here; the
    /// shard encodes its member table).
    pub fn set_directory(&self, directory: Vec<u8>) {
        *self.shared.directory.borrow_mut() = directory;
    }

    /// Adds a peer, or updates its addresses (used from the next connection on). Setting
    /// this member itself or member 0 is ignored.
    pub fn set_peer(&self, id: u64, addresses: Vec<SocketAddr>) {
        let shared = &self.shared;
        if shared.stopped.get() || id == 0 || id == shared.me {
            return;
        }
        if let Some(link) = shared.links.borrow().get(&id) {
            link.set_addresses(addresses);
            return;
        }
        let link = Link::start(shared.clone(), id, addresses);
        shared.links.borrow_mut().insert(id, link);
    }

    /// Removes a peer: its queue is dropped, its connections closed both ways, and its
    /// future connections refused.
    pub fn remove_peer(&self, id: u64) {
        let link = self.shared.links.borrow_mut().remove(&id);
        if let Some(link) = link {
            link.stop();
        }
        self.shared.close_incoming_from(id);
        self.shared.unreachable.borrow_mut().remove(&id);
    }

    /// Stops accepting and closes every connection; later sends are dropped. The tasks
    /// end at the executor's next turn.
    pub fn shutdown(&self) {
        let shared = &self.shared;
        if shared.stopped.replace(true) {
            return;
        }
        for task in std::mem::take(&mut *shared.accepting.borrow_mut()) {
            task.cancel();
        }
        let links = std::mem::take(&mut *shared.links.borrow_mut());
        for link in links.into_values() {
            link.stop();
        }
        let incoming = std::mem::take(&mut *shared.incoming.borrow_mut());
        for entry in incoming.into_values() {
            entry.task.cancel();
        }
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.shared.me
    }
}

/// Largest member directory a joining member accepts.
pub const DIRECTORY_BYTES_MAX: usize = 1 << 20;

/// Asks the member at `address` for the cluster's id and member directory (what a
/// member joining a running cluster does before it knows its own id).
pub async fn fetch_directory(address: SocketAddr) -> Result<(u64, Vec<u8>), PeerError> {
    use futures_lite::AsyncReadExt;
    let mut stream = glommio::net::TcpStream::connect_timeout(address, CONNECT_TIMEOUT)
        .await
        .map_err(PeerError::glommio("connecting"))?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(PeerError::glommio("setting a read timeout"))?;
    let hello = handshake::encode_hello(Lane::Members, 0, 0, 0);
    let reply = outgoing::exchange_hello(&mut stream, &hello).await?;
    if reply.status != HandshakeStatus::Accepted {
        return Err(PeerError::Malformed(reply.status.describe()));
    }
    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .await
        .map_err(PeerError::io("reading the directory length"))?;
    let length = u32::from_le_bytes(length) as usize;
    if length > DIRECTORY_BYTES_MAX {
        return Err(PeerError::Malformed("member directory over 1 MiB"));
    }
    let mut directory = vec![0u8; length];
    stream
        .read_exact(&mut directory)
        .await
        .map_err(PeerError::io("reading the member directory"))?;
    Ok((reply.cluster_id, directory))
}
