//! Connection handling on every core: handshake, decode, validate at the edge, batch
//! requests to the shard, write replies back (core 0 accepts, see `placement`).
//!
//! Limits and what happens at them:
//! * a frame longer than `--max-request-bytes` (checked before allocating): an error frame
//!   with etcd's "request is too large", then the connection closes;
//! * a malformed frame: an error frame naming the problem, then the connection closes;
//! * [`CONNECTION_REQUESTS_IN_FLIGHT_MAX`] requests in flight on one connection: the
//!   connection stops reading until replies come back (TCP backpressure);
//! * [`CONNECTION_QUEUED_FRAMES_MAX`] frames queued for a client that does not read: the
//!   connection closes, so a stuck client cannot hold memory.
//!
//! Never: touch engine state (only the shard's core owns it).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use corekv_engine::{validate_delete_range, validate_put, validate_range, validate_txn};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use super::bridge::{Sinks, GATEWAY_SESSION_BASE};
use super::config::ServerConfig;
use super::mesh::{ClientRequest, Reply, ToShard};
use super::placement::{Handoff, Placement};
use super::shard::engine_error;
use crate::protocol::codec::{
    decode_request, encode_response, peek_request_id, read_frame, server_handshake,
    FRAME_HEADER_ALLOWANCE_BYTES, REQUEST_ID_CONNECTION,
};
use crate::protocol::{Request, Response};

/// Requests one connection may have in flight before it stops reading.
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX: u64 = 4096;
/// Frames queued for one client before the server gives up on it.
pub const CONNECTION_QUEUED_FRAMES_MAX: usize = 65_536;
/// Bytes read from a connection's socket at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Bytes of replies coalesced into one socket write at most.
const WRITE_BATCH_BYTES_MAX: usize = 1 << 20;

enum Outgoing {
    Frame(u64, Response),
    Close,
    /// Write what is queued, then stop without closing: the connection moves to another
    /// core.
    Detach,
}

struct Connection {
    out: Rc<LocalSender<Outgoing>>,
    permits: Rc<Semaphore>,
    steering: Rc<Steering>,
}

/// What the rebalancer (see `placement`) may ask of a connection, and what it needs to
/// know to ask.
#[derive(Debug, Default)]
struct Steering {
    /// The core this connection should move to, at its next frame boundary.
    move_to: Cell<Option<usize>>,
    /// Whether the connection holds state the shard keys by connection (watches,
    /// snapshot streams), which keeps it where it is.
    pinned: Cell<bool>,
    /// Requests read since the rebalancer last looked.
    requests: Cell<u64>,
}

/// Requests whose effects end with their answer: a connection that sent only these may
/// move to another core between requests.
fn leaves_no_state(request: &Request) -> bool {
    matches!(
        request,
        Request::Range(_)
            | Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Txn(_)
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. }
            | Request::LeaseTimeToLive { .. }
            | Request::LeaseLeases
            | Request::Status
    )
}

/// The per-core state shared by its connections.
pub(crate) struct Core {
    index: usize,
    config: Rc<ServerConfig>,
    outbox: RefCell<Vec<ClientRequest>>,
    closed: RefCell<Vec<u64>>,
    wake: LocalSender<()>,
    connections: RefCell<HashMap<u64, Connection>>,
    next_connection: Cell<u64>,
    /// Replies owed to the gateway (see `bridge`), when this core hosts it.
    gateway: Rc<RefCell<Sinks>>,
    /// Where connections that move go (core 0 only; see `placement`).
    movers: RefCell<Option<Movers>>,
}

/// Core 0's way to move a connection: the other cores' hand-off queues and the counts.
pub(crate) struct Movers {
    /// `others[i]` reaches core `i + 1`.
    pub others: Rc<[ConnectedSender<Handoff>]>,
    /// Connection counts per core.
    pub placement: Arc<Placement>,
}

impl Core {
    /// Starts a core's plumbing: the task that batches requests to the shard and the one
    /// that routes the shard's replies to connections.
    pub(crate) fn start(
        index: usize,
        config: Rc<ServerConfig>,
        to_shard: ConnectedSender<ToShard>,
        from_shard: ConnectedReceiver<Vec<Reply>>,
    ) -> Rc<Core> {
        let (wake, woken) = local_channel::new_bounded(1);
        let core = Rc::new(Core {
            index,
            config,
            outbox: RefCell::new(Vec::new()),
            closed: RefCell::new(Vec::new()),
            wake,
            connections: RefCell::new(HashMap::new()),
            next_connection: Cell::new(1),
            gateway: Rc::new(RefCell::new(Sinks::default())),
            movers: RefCell::new(None),
        });
        glommio::spawn_local(send_to_shard(core.clone(), woken, to_shard)).detach();
        glommio::spawn_local(route_replies(core.clone(), from_shard)).detach();
        core
    }

    pub(crate) fn submit(&self, request: ClientRequest) {
        self.outbox.borrow_mut().push(request);
        let _ = self.wake.try_send(());
    }

    /// Tells the shard a connection (or gateway session) ended.
    pub(crate) fn connection_closed(&self, connection: u64) {
        self.closed.borrow_mut().push(connection);
        let _ = self.wake.try_send(());
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub(crate) fn gateway_sinks(&self) -> Rc<RefCell<Sinks>> {
        self.gateway.clone()
    }

    /// Lets this core (core 0) move connections to the others.
    pub(crate) fn set_movers(&self, movers: Movers) {
        *self.movers.borrow_mut() = Some(movers);
    }

    /// Asks the busiest movable connection of this core to move to `target` at its next
    /// frame boundary; the requests of the last round decide, and an earlier ask that
    /// was not taken (an idle connection) lapses. Returns whether one was asked.
    pub(crate) fn ask_to_move(&self, target: usize) -> bool {
        let connections = self.connections.borrow();
        let mut busiest: Option<(u64, &Connection)> = None;
        for connection in connections.values() {
            let steering = &connection.steering;
            steering.move_to.set(None);
            let requests = steering.requests.replace(0);
            if !steering.pinned.get()
                && requests > 0
                && busiest.is_none_or(|(most, _)| most < requests)
            {
                busiest = Some((requests, connection));
            }
        }
        match busiest {
            Some((_, connection)) => {
                connection.steering.move_to.set(Some(target));
                true
            }
            None => false,
        }
    }
}

async fn send_to_shard(
    core: Rc<Core>,
    woken: LocalReceiver<()>,
    to_shard: ConnectedSender<ToShard>,
) {
    while woken.recv().await.is_some() {
        let requests = std::mem::take(&mut *core.outbox.borrow_mut());
        if !requests.is_empty() && to_shard.send(ToShard::Requests(requests)).await.is_err() {
            return;
        }
        let closed = std::mem::take(&mut *core.closed.borrow_mut());
        for connection in closed {
            if to_shard
                .send(ToShard::Closed {
                    core: core.index,
                    connection,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

async fn route_replies(core: Rc<Core>, from_shard: ConnectedReceiver<Vec<Reply>>) {
    while let Some(batch) = from_shard.recv().await {
        let connections = core.connections.borrow();
        for reply in batch {
            if reply.connection >= GATEWAY_SESSION_BASE {
                let overflowed = core.gateway.borrow_mut().deliver(
                    reply.request_id,
                    reply.response,
                    reply.completes,
                );
                if let Some(session) = overflowed {
                    core.connection_closed(session);
                }
                continue;
            }
            let Some(connection) = connections.get(&reply.connection) else {
                continue;
            };
            if reply.completes {
                connection.permits.signal(1);
            }
            if connection.out.len() >= CONNECTION_QUEUED_FRAMES_MAX {
                let _ = connection.out.try_send(Outgoing::Close);
                continue;
            }
            let _ = connection
                .out
                .try_send(Outgoing::Frame(reply.request_id, reply.response));
        }
    }
}

/// Serves one binary-protocol connection on this core until it closes or moves. `unread`
/// is `Some` for a connection another core served before (its handshake is done; these
/// are the bytes that core had read and not yet handled).
pub(crate) async fn serve(core: Rc<Core>, mut stream: TcpStream, unread: Option<Vec<u8>>) {
    let _ = stream.set_nodelay(true);
    let unread = match unread {
        Some(unread) => unread,
        None => {
            if server_handshake(&mut stream).await.is_err() {
                return;
            }
            Vec::new()
        }
    };
    let id = core.next_connection.get();
    core.next_connection.set(id + 1);
    let (out, outgoing) = local_channel::new_unbounded();
    let out = Rc::new(out);
    let permits = Rc::new(Semaphore::new(CONNECTION_REQUESTS_IN_FLIGHT_MAX));
    let steering = Rc::new(Steering::default());
    core.connections.borrow_mut().insert(
        id,
        Connection {
            out: out.clone(),
            permits: permits.clone(),
            steering: steering.clone(),
        },
    );
    let fd = stream.as_raw_fd();
    let (reader, writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local(write_replies(writer, outgoing));
    let ended = read_requests(&core, id, unread, reader, &out, &permits, &steering).await;
    let moving = match ended {
        Ended::Closed => {
            let _ = out.try_send(Outgoing::Close);
            None
        }
        Ended::Moving { target, unread } => {
            // Every request read is answered (read_requests waited for them) and the
            // answers are queued; a copy of the descriptor outlives this core's stream.
            // SAFETY: fcntl duplicates a descriptor the stream still holds open.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            let _ = out.try_send(Outgoing::Detach);
            // SAFETY: a fresh descriptor nothing else owns.
            (copy >= 0).then(|| (unsafe { OwnedFd::from_raw_fd(copy) }, target, unread))
        }
    };
    writer_task.await;
    core.connections.borrow_mut().remove(&id);
    core.connection_closed(id);
    if let Some((fd, target, unread)) = moving {
        core.move_connection(fd, target, unread);
    }
}

impl Core {
    /// Hands a connection to core `target`; serves it here again if that core cannot
    /// take it.
    fn move_connection(self: &Rc<Self>, fd: OwnedFd, target: usize, unread: Vec<u8>) {
        let movers = self.movers.borrow();
        let sent = match movers.as_ref() {
            Some(movers) => match target.checked_sub(1).and_then(|i| movers.others.get(i)) {
                Some(sender) => {
                    let open = movers.placement.open(target);
                    match sender.try_send(Handoff::moved(fd, unread, open)) {
                        Ok(()) => {
                            movers.placement.count_move();
                            return;
                        }
                        Err(error) => Handoff::take_back(error),
                    }
                }
                None => Some((fd, unread)),
            },
            None => Some((fd, unread)),
        };
        drop(movers);
        let Some((fd, unread)) = sent else {
            return;
        };
        // SAFETY: the descriptor is an open, connected socket this core owns from here on.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        let open = self
            .movers
            .borrow()
            .as_ref()
            .map(|movers| movers.placement.open(self.index));
        let core = self.clone();
        glommio::spawn_local(async move {
            serve(core, stream, Some(unread)).await;
            drop(open);
        })
        .detach();
    }
}

/// How a connection's reading ended.
enum Ended {
    /// The client closed it, or broke the protocol.
    Closed,
    /// The rebalancer moved it to `target`; `unread` are the bytes read and not handled.
    Moving { target: usize, unread: Vec<u8> },
}

async fn read_requests(
    core: &Core,
    connection: u64,
    unread: Vec<u8>,
    reader: futures_lite::io::ReadHalf<TcpStream>,
    out: &LocalSender<Outgoing>,
    permits: &Semaphore,
    steering: &Steering,
) -> Ended {
    // Pipelined clients send many small frames back to back: reading through a buffer
    // takes them in one receive instead of two per frame (length, then body).
    let mut reader = futures_lite::io::BufReader::with_capacity(
        READ_BUFFER_BYTES,
        futures_lite::io::Cursor::new(unread).chain(reader),
    );
    let mut buf = Vec::new();
    loop {
        if let Some(target) = steering.move_to.take() {
            if !steering.pinned.get() {
                // Wait for every request in flight to be answered, then hand over what
                // was read and not handled: buffered bytes come before any left in the
                // bytes this connection arrived with.
                if permits
                    .acquire(CONNECTION_REQUESTS_IN_FLIGHT_MAX)
                    .await
                    .is_err()
                {
                    return Ended::Closed;
                }
                let mut unread = reader.buffer().to_vec();
                let (arrived, _) = reader.into_inner().into_inner();
                let position = arrived.position() as usize;
                unread.extend_from_slice(&arrived.into_inner()[position..]);
                return Ended::Moving { target, unread };
            }
        }
        match read_frame(
            &mut reader,
            &mut buf,
            core.config.request_bytes_max + FRAME_HEADER_ALLOWANCE_BYTES,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => return Ended::Closed,
            Err(error) => {
                let _ = out.try_send(Outgoing::Frame(REQUEST_ID_CONNECTION, error.to_response()));
                return Ended::Closed;
            }
        }
        let (request_id, request) = match decode_request(&buf) {
            Ok(decoded) => decoded,
            Err(error) => {
                // Answer under the frame's id when it could be read (docs/protocol.md).
                let request_id = peek_request_id(&buf).unwrap_or(REQUEST_ID_CONNECTION);
                let _ = out.try_send(Outgoing::Frame(request_id, error.to_response()));
                return Ended::Closed;
            }
        };
        steering.requests.set(steering.requests.get() + 1);
        if !leaves_no_state(&request) {
            steering.pinned.set(true);
        }
        if let Err(response) = validate(&request, &core.config) {
            let _ = out.try_send(Outgoing::Frame(request_id, response));
            continue;
        }
        if permits.acquire(1).await.is_err() {
            return Ended::Closed;
        }
        core.submit(ClientRequest {
            core: core.index,
            connection,
            request_id,
            request,
            received: Instant::now(),
        });
    }
}

async fn write_replies(
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    outgoing: LocalReceiver<Outgoing>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = outgoing.recv().await {
        buf.clear();
        let mut close = false;
        let mut detach = false;
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Outgoing::Frame(request_id, response) => {
                    encode_response(request_id, &response, &mut buf)
                }
                Outgoing::Close => {
                    close = true;
                    break;
                }
                Outgoing::Detach => {
                    detach = true;
                    break;
                }
            }
            if buf.len() >= WRITE_BATCH_BYTES_MAX {
                break;
            }
            next = futures_lite::future::poll_once(outgoing.recv())
                .await
                .flatten();
        }
        if !buf.is_empty()
            && (writer.write_all(&buf).await.is_err() || writer.flush().await.is_err())
        {
            return;
        }
        if close {
            let _ = writer.close().await;
            return;
        }
        if detach {
            return;
        }
    }
}

/// etcd's edge checks, answered without bothering the shard.
pub(crate) fn validate(request: &Request, config: &ServerConfig) -> Result<(), Response> {
    let checked = match request {
        Request::Range(range) => validate_range(range),
        Request::Put(put) => validate_put(put),
        Request::DeleteRange(delete) => validate_delete_range(delete),
        Request::Txn(txn) => validate_txn(txn, config.txn_ops_max),
        _ => Ok(()),
    };
    checked.map_err(|error| engine_error(&error))
}
