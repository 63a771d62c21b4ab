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
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use corekv_engine::{validate_delete_range, validate_put, validate_range, validate_txn};
use futures_lite::io::ReadHalf;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use super::bridge::{Sinks, GATEWAY_SESSION_BASE};
use super::config::ServerConfig;
use super::mesh::{ClientRequest, Reply, ToShard};
use super::placement::Handoffs;
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
/// Bytes a moving connection may send while its last answers are written; more closes it.
const MOVE_READ_BYTES_MAX: usize = 16 << 20;
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
    /// Whether it is on its way to another core.
    moving: Cell<bool>,
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
            | Request::MemberList { .. }
            | Request::Alarm { .. }
            | Request::Hash
            | Request::HashKv { .. }
            | Request::Defragment
            | Request::MoveLeader { .. }
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
    movers: RefCell<Option<Handoffs>>,
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
    pub(crate) fn set_movers(&self, movers: Handoffs) {
        *self.movers.borrow_mut() = Some(movers);
    }

    /// Asks the busiest movable connection of this core to move to `target` at its next
    /// frame boundary; the requests of the last round decide, and an earlier ask that
    /// was not taken (an idle connection) lapses.
    pub(crate) fn ask_to_move(&self, target: usize) {
        let connections = self.connections.borrow();
        let mut busiest: Option<(u64, &Connection)> = None;
        for connection in connections.values() {
            let steering = &connection.steering;
            steering.move_to.set(None);
            let requests = steering.requests.replace(0);
            if !steering.pinned.get()
                && !steering.moving.get()
                && requests > 0
                && busiest.is_none_or(|(most, _)| most < requests)
            {
                busiest = Some((requests, connection));
            }
        }
        if let Some((_, connection)) = busiest {
            connection.steering.move_to.set(Some(target));
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
            writer_task.await;
            None
        }
        Ended::Moving { target, reader } => detach(fd, reader, &out, writer_task)
            .await
            .map(|(fd, unread)| (fd, target, unread)),
    };
    core.connections.borrow_mut().remove(&id);
    core.connection_closed(id);
    if let Some((fd, target, unread)) = moving {
        core.move_connection(fd, target, unread);
    }
}

/// Bytes read from a connection and not yet handled through `read_requests`: what a
/// BufReader holds, then the socket.
type ConnectionReader = futures_lite::io::BufReader<Replay<ReadHalf<TcpStream>>>;

/// Stops serving a connection on this core so that another can, once every request it
/// sent is answered (see `read_requests`). Its writer writes the queued answers and stops
/// without closing; meanwhile what the client sends is read into memory, so a client
/// that waits for its answers before reading on is not stuck. Returns a duplicate of
/// the socket and the bytes read and not handled, or `None` when the connection should
/// close instead: its writer had stopped or failed, the client went away, or it sent
/// more than [`MOVE_READ_BYTES_MAX`] meanwhile.
async fn detach(
    fd: RawFd,
    reader: ConnectionReader,
    out: &LocalSender<Outgoing>,
    writer: glommio::Task<bool>,
) -> Option<(OwnedFd, Vec<u8>)> {
    enum Step {
        Written(bool),
        Read(std::io::Result<usize>),
    }
    // SAFETY: `reader` holds the socket open, so `fd` is still this connection's; the
    // copy is a fresh descriptor nothing else owns.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    let copy = (copy >= 0).then(|| unsafe { OwnedFd::from_raw_fd(copy) });
    let Some(copy) = copy.filter(|_| out.try_send(Outgoing::Detach).is_ok()) else {
        let _ = out.try_send(Outgoing::Close);
        writer.await;
        return None;
    };
    let (mut unread, mut socket) = take_unread(reader);
    let mut writer = writer;
    let mut chunk = vec![0u8; READ_BUFFER_BYTES];
    loop {
        let step = futures_lite::future::or(async { Step::Written((&mut writer).await) }, async {
            Step::Read(socket.read(&mut chunk).await)
        })
        .await;
        match step {
            Step::Written(true) => return Some((copy, unread)),
            Step::Written(false) => return None,
            Step::Read(Ok(count)) if count > 0 && unread.len() + count <= MOVE_READ_BYTES_MAX => {
                unread.extend_from_slice(&chunk[..count]);
            }
            Step::Read(_) => {
                // The connection closes: the writer finishes with what it has.
                let _ = writer.await;
                return None;
            }
        }
    }
}

/// The bytes `reader` has read and not handed out, in order, and the socket behind it.
fn take_unread<R>(reader: futures_lite::io::BufReader<Replay<R>>) -> (Vec<u8>, R) {
    let mut unread = reader.buffer().to_vec();
    let replay = reader.into_inner();
    unread.extend_from_slice(&replay.unread[replay.position..]);
    (unread, replay.inner)
}

/// A reader that first gives back bytes read earlier (by the core a connection moved
/// from), then reads `inner`; the earlier bytes are freed once read.
struct Replay<R> {
    unread: Vec<u8>,
    position: usize,
    inner: R,
}

impl<R: futures_lite::AsyncRead + Unpin> futures_lite::AsyncRead for Replay<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let left = &this.unread[this.position..];
        if left.is_empty() {
            return std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let count = left.len().min(buf.len());
        buf[..count].copy_from_slice(&left[..count]);
        this.position += count;
        if this.position == this.unread.len() {
            this.unread = Vec::new();
            this.position = 0;
        }
        std::task::Poll::Ready(Ok(count))
    }
}

impl Core {
    /// Hands a connection to core `target`; serves it here again if that core cannot
    /// take it.
    fn move_connection(self: &Rc<Self>, fd: OwnedFd, target: usize, unread: Vec<u8>) {
        // Only core 0, which has the queues, asks its connections to move.
        let Some(movers) = self.movers.borrow().clone() else {
            return;
        };
        let Err((fd, unread)) = movers.move_to(target, fd, unread) else {
            return;
        };
        // SAFETY: the descriptor is an open, connected socket this core owns from here on.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        let open = movers.placement().open(self.index);
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
    /// The rebalancer asked it to move to `target`, and every request read through
    /// `reader` is answered.
    Moving {
        target: usize,
        reader: ConnectionReader,
    },
}

async fn read_requests(
    core: &Core,
    connection: u64,
    unread: Vec<u8>,
    reader: ReadHalf<TcpStream>,
    out: &LocalSender<Outgoing>,
    permits: &Semaphore,
    steering: &Steering,
) -> Ended {
    // Pipelined clients send many small frames back to back: reading through a buffer
    // takes them in one receive instead of two per frame (length, then body).
    let mut reader = futures_lite::io::BufReader::with_capacity(
        READ_BUFFER_BYTES,
        Replay {
            unread,
            position: 0,
            inner: reader,
        },
    );
    let mut buf = Vec::new();
    loop {
        if let Some(target) = steering.move_to.take() {
            if !steering.pinned.get() {
                // Moves only once every request in flight is answered.
                steering.moving.set(true);
                if permits
                    .acquire(CONNECTION_REQUESTS_IN_FLIGHT_MAX)
                    .await
                    .is_err()
                {
                    return Ended::Closed;
                }
                return Ended::Moving { target, reader };
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

/// Writes a connection's answers until it closes (`false`) or detaches (`true`: every
/// answer queued before [`Outgoing::Detach`] is written and the socket is left open).
async fn write_replies(
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    outgoing: LocalReceiver<Outgoing>,
) -> bool {
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
            return false;
        }
        if close {
            let _ = writer.close().await;
            return false;
        }
        if detach {
            return true;
        }
    }
    false
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

#[cfg(test)]
mod tests {
    use futures_lite::io::{AsyncBufReadExt, BufReader, Cursor};
    use futures_lite::AsyncReadExt;

    use super::{take_unread, Replay};

    fn replay(earlier: &[u8], socket: &[u8]) -> Replay<Cursor<Vec<u8>>> {
        Replay {
            unread: earlier.to_vec(),
            position: 0,
            inner: Cursor::new(socket.to_vec()),
        }
    }

    #[test]
    fn a_replay_gives_the_earlier_bytes_then_the_socket_and_frees_them() {
        futures_lite::future::block_on(async {
            let mut reader = replay(b"abc", b"defg");
            let mut two = [0u8; 2];
            reader.read_exact(&mut two).await.unwrap();
            assert_eq!(&two, b"ab");
            reader.read_exact(&mut two).await.unwrap();
            // The earlier bytes end a read short rather than mixing in the socket's.
            assert_eq!(&two, b"cd");
            assert!(reader.unread.is_empty() && reader.unread.capacity() == 0);
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"efg");
        });
    }

    #[test]
    fn unread_bytes_are_the_buffered_ones_then_the_earlier_ones_left() {
        futures_lite::future::block_on(async {
            // A buffer smaller than the earlier bytes: some of them are still in the
            // replay when the connection moves.
            let mut reader = BufReader::with_capacity(4, replay(b"0123456789", b"abcdef"));
            let mut three = [0u8; 3];
            reader.read_exact(&mut three).await.unwrap();
            assert_eq!(&three, b"012");
            assert_eq!(reader.buffer(), b"3");
            let (unread, socket) = take_unread(reader);
            assert_eq!(unread, b"3456789");
            assert_eq!(socket.position(), 0);

            // Past the earlier bytes: the buffer holds socket bytes only.
            let mut reader = BufReader::with_capacity(4, replay(b"01", b"abcdef"));
            reader.read_exact(&mut three).await.unwrap();
            assert_eq!(&three, b"01a");
            reader.fill_buf().await.unwrap();
            let (unread, socket) = take_unread(reader);
            assert_eq!(unread, b"bcd");
            assert_eq!(socket.position(), 4);
        });
    }
}
