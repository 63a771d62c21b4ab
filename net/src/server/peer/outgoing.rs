//! Outgoing traffic to one peer: its bounded queue, the task that keeps a message
//! connection up and writes batches, and the task that sends snapshots.
//!
//! Invariants: messages leave in queue order; at most `queue_messages_max` wait; the
//! queue is empty whenever the link is backing off (what was queued is dropped and the
//! peer reported unreachable); a connection is used only after the acceptor accepted
//! the handshake. Never: wait for a peer's answer to a message (pipelining), block
//! `send`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use corekv_raft::Message;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use super::codec;
use super::handshake::{self, HandshakeStatus, Lane};
use super::{
    PeerError, Shared, CONNECT_TIMEOUT, FRAME_BYTES_TARGET, HANDSHAKE_TIMEOUT,
    SNAPSHOT_ACK_TIMEOUT, SNAPSHOT_WRITE_PIECE_BYTES, WRITE_TIMEOUT,
};
use crate::server::shard::SHARD_ID;

/// Where a link stands with its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    /// Dialing and handshaking: messages queue.
    Connecting,
    /// Connected: messages queue and are written as they come.
    Connected,
    /// The last attempt failed; messages are dropped until the next one.
    BackingOff,
}

/// One peer's outgoing side.
pub(crate) struct Link {
    id: u64,
    addresses: RefCell<Vec<SocketAddr>>,
    queue: RefCell<VecDeque<Message>>,
    state: Cell<LinkState>,
    /// Wakes the message task (capacity 1: one pending wake is enough).
    wake: LocalSender<()>,
    /// The snapshot waiting for the snapshot task.
    snapshot: RefCell<Option<Message>>,
    snapshot_wake: LocalSender<()>,
    /// Whether the last connection attempt worked, for logging changes only.
    active: Cell<Option<bool>>,
    /// Whether messages were dropped for a full queue since it last drained (logs once).
    overflowing: Cell<bool>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
}

impl Link {
    /// Creates the link and spawns its two tasks.
    pub(crate) fn start(shared: Rc<Shared>, id: u64, addresses: Vec<SocketAddr>) -> Rc<Link> {
        let (wake, woken) = local_channel::new_bounded(1);
        let (snapshot_wake, snapshot_woken) = local_channel::new_bounded(1);
        let link = Rc::new(Link {
            id,
            addresses: RefCell::new(addresses),
            queue: RefCell::new(VecDeque::new()),
            state: Cell::new(LinkState::Connecting),
            wake,
            snapshot: RefCell::new(None),
            snapshot_wake,
            active: Cell::new(None),
            overflowing: Cell::new(false),
            tasks: RefCell::new(Vec::new()),
        });
        let messages = glommio::spawn_local(run_messages(shared.clone(), link.clone(), woken));
        let snapshots = glommio::spawn_local(run_snapshots(shared, link.clone(), snapshot_woken));
        link.tasks
            .borrow_mut()
            .extend([messages.detach(), snapshots.detach()]);
        link
    }

    /// Queues one message; false if it was dropped (queue full or backing off).
    pub(crate) fn queue(&self, message: Message, queue_messages_max: usize) -> bool {
        if self.state.get() == LinkState::BackingOff {
            return false;
        }
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= queue_messages_max {
            if !self.overflowing.replace(true) {
                eprintln!(
                    "corekv: peer {:x}: {queue_messages_max} messages queued, dropping more until it drains",
                    self.id
                );
            }
            return false;
        }
        queue.push_back(message);
        let _ = self.wake.try_send(());
        true
    }

    /// Queues a snapshot for the snapshot task, replacing one still waiting.
    pub(crate) fn queue_snapshot(&self, message: Message) {
        *self.snapshot.borrow_mut() = Some(message);
        let _ = self.snapshot_wake.try_send(());
    }

    pub(crate) fn set_addresses(&self, addresses: Vec<SocketAddr>) {
        *self.addresses.borrow_mut() = addresses;
    }

    /// Ends the link's tasks (closing its connections) and drops what it holds.
    pub(crate) fn stop(&self) {
        for task in self.tasks.borrow_mut().drain(..) {
            task.cancel();
        }
        self.queue.borrow_mut().clear();
        self.snapshot.borrow_mut().take();
    }

    fn came_up(&self, address: SocketAddr) {
        if self.active.replace(Some(true)) != Some(true) {
            eprintln!("corekv: peer {:x} is active at {address}", self.id);
        }
    }

    fn went_down(&self, shared: &Shared, error: &PeerError) {
        shared.mark_unreachable(self.id);
        if self.active.replace(Some(false)) != Some(false) {
            eprintln!("corekv: peer {:x} is unreachable: {error}", self.id);
        }
    }
}

/// Keeps a message connection to the peer: dial, pump batches until it breaks, back off,
/// again, until cancelled.
async fn run_messages(shared: Rc<Shared>, link: Rc<Link>, woken: LocalReceiver<()>) {
    let mut backoff = shared.backoff_min;
    let mut batch = Vec::new();
    let mut buf = Vec::new();
    loop {
        link.state.set(LinkState::Connecting);
        let failure = match dial(&shared, &link, Lane::Messages).await {
            Ok((mut stream, address)) => {
                backoff = shared.backoff_min;
                link.came_up(address);
                link.state.set(LinkState::Connected);
                pump(&shared, &link, &mut stream, &woken, &mut batch, &mut buf).await
            }
            Err(error) => error,
        };
        link.state.set(LinkState::BackingOff);
        link.queue.borrow_mut().clear();
        link.overflowing.set(false);
        batch.clear();
        link.went_down(&shared, &failure);
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(shared.backoff_max);
    }
}

/// Writes what is queued, a frame at a time, until the connection fails; returns why.
async fn pump(
    shared: &Shared,
    link: &Link,
    stream: &mut TcpStream,
    woken: &LocalReceiver<()>,
    batch: &mut Vec<Message>,
    buf: &mut Vec<u8>,
) -> PeerError {
    let frame_target = shared.frame_bytes_max.min(FRAME_BYTES_TARGET) as u64;
    loop {
        if link.queue.borrow().is_empty() {
            link.overflowing.set(false);
            // Wait for messages, watching the connection meanwhile: the acceptor never
            // writes after its reply, so anything readable is its close (or garbage).
            let mut byte = [0u8; 1];
            let woke = futures_lite::future::or(
                async {
                    woken.recv().await;
                    None
                },
                async { Some(stream.read(&mut byte).await) },
            )
            .await;
            match woke {
                None => continue,
                Some(Ok(0)) => return PeerError::Closed,
                Some(Ok(_)) => return PeerError::Malformed("the acceptor wrote after its reply"),
                Some(Err(source)) => {
                    return PeerError::Io {
                        during: "watching the connection",
                        source,
                    }
                }
            }
        }
        {
            let mut queue = link.queue.borrow_mut();
            let mut frame = codec::frame_bytes([]);
            while let Some(next) = queue.front() {
                let bytes = codec::frame_bytes([next]) - codec::frame_bytes([]);
                if !batch.is_empty() && frame + bytes > frame_target {
                    break;
                }
                frame += bytes;
                batch.push(queue.pop_front().expect("front exists"));
            }
        }
        buf.clear();
        let written = match codec::encode_frame_head(SHARD_ID, batch, buf) {
            Ok(_) => stream
                .write_all(buf)
                .await
                .map_err(PeerError::io("writing a frame")),
            Err(error) => Err(error),
        };
        batch.clear();
        if buf.capacity() > 2 * FRAME_BYTES_TARGET {
            *buf = Vec::new();
        }
        if let Err(error) = written {
            return error;
        }
    }
}

/// Sends each queued snapshot on a connection of its own, until cancelled.
async fn run_snapshots(shared: Rc<Shared>, link: Rc<Link>, woken: LocalReceiver<()>) {
    loop {
        let taken = link.snapshot.borrow_mut().take();
        let Some(message) = taken else {
            if woken.recv().await.is_none() {
                return;
            }
            continue;
        };
        let delivered = match send_snapshot(&shared, &link, &message).await {
            Ok(()) => true,
            Err(error) => {
                shared.mark_unreachable(link.id);
                eprintln!(
                    "corekv: peer {:x}: sending a snapshot of {} bytes failed: {error}",
                    link.id,
                    codec::blob_bytes(&message)
                );
                false
            }
        };
        drop(message);
        shared
            .snapshot_reports
            .borrow_mut()
            .push((link.id, delivered));
    }
}

/// One snapshot: dial, write the frame's head then the data in pieces (no copy of the
/// data), wait for the acceptor's acknowledgement.
async fn send_snapshot(shared: &Shared, link: &Link, message: &Message) -> Result<(), PeerError> {
    let (mut stream, _) = dial(shared, link, Lane::Snapshot).await?;
    let messages = std::slice::from_ref(message);
    let mut head = Vec::new();
    codec::encode_frame_head(SHARD_ID, messages, &mut head)?;
    stream
        .write_all(&head)
        .await
        .map_err(PeerError::io("writing a snapshot frame head"))?;
    for blob in codec::frame_blobs(messages) {
        for piece in blob.chunks(SNAPSHOT_WRITE_PIECE_BYTES) {
            stream
                .write_all(piece)
                .await
                .map_err(PeerError::io("writing snapshot data"))?;
        }
    }
    stream
        .set_read_timeout(Some(SNAPSHOT_ACK_TIMEOUT))
        .map_err(|error| PeerError::Io {
            during: "setting a read timeout",
            source: error.into(),
        })?;
    let mut ack = [0u8; 1];
    match stream.read(&mut ack).await {
        Ok(1) if ack[0] == handshake::SNAPSHOT_DELIVERED => Ok(()),
        Ok(0) => Err(PeerError::Closed),
        Ok(_) => Err(PeerError::Malformed("unknown snapshot acknowledgement")),
        Err(source) => Err(PeerError::Io {
            during: "waiting for the snapshot acknowledgement",
            source,
        }),
    }
}

/// Connects to the first of the peer's addresses that accepts the handshake.
async fn dial(
    shared: &Shared,
    link: &Link,
    lane: Lane,
) -> Result<(TcpStream, SocketAddr), PeerError> {
    let addresses = link.addresses.borrow().clone();
    let mut failure = PeerError::NoAddress;
    for address in addresses {
        match dial_one(shared, link.id, lane, address).await {
            Ok(stream) => return Ok((stream, address)),
            Err(error) => failure = error,
        }
    }
    Err(failure)
}

async fn dial_one(
    shared: &Shared,
    to: u64,
    lane: Lane,
    address: SocketAddr,
) -> Result<TcpStream, PeerError> {
    let mut stream = TcpStream::connect_timeout(address, CONNECT_TIMEOUT)
        .await
        .map_err(PeerError::glommio("connecting"))?;
    stream
        .set_nodelay(true)
        .map_err(PeerError::glommio("setting TCP_NODELAY"))?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(PeerError::glommio("setting a read timeout"))?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(PeerError::glommio("setting a write timeout"))?;
    set_user_timeout(&stream, WRITE_TIMEOUT).map_err(PeerError::io("setting TCP_USER_TIMEOUT"))?;
    let hello = handshake::encode_hello(lane, shared.cluster_id, shared.me, to);
    let reply = exchange_hello(&mut stream, &hello).await?;
    if reply.status != HandshakeStatus::Accepted {
        return Err(PeerError::Refused {
            status: reply.status,
            cluster_id: reply.cluster_id,
            member: reply.member,
        });
    }
    stream
        .set_read_timeout(None)
        .map_err(PeerError::glommio("clearing the read timeout"))?;
    Ok(stream)
}

/// Sends a dialer's hello and reads the acceptor's reply.
pub(crate) async fn exchange_hello(
    stream: &mut TcpStream,
    hello: &[u8; handshake::HELLO_BYTES],
) -> Result<handshake::Reply, PeerError> {
    stream
        .write_all(hello)
        .await
        .map_err(PeerError::io("writing the handshake"))?;
    let mut reply = [0u8; handshake::REPLY_BYTES];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(PeerError::io("reading the handshake reply"))?;
    handshake::decode_reply(&reply)
}

/// Makes the kernel abort the connection when sent data stays unacknowledged for
/// `timeout`: a peer whose host vanished without a reset would otherwise look connected
/// until the socket buffer filled (small heartbeats take ages to fill it), and everything
/// written meanwhile would be lost without an unreachable report.
fn set_user_timeout(stream: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    let millis = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: setsockopt on a descriptor the stream owns, reading a c_uint we own for the
    // duration of the call, with its exact size.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&millis as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
