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
use std::rc::Rc;
use std::time::Instant;

use corekv_engine::{validate_delete_range, validate_put, validate_range, validate_txn};
use futures_lite::AsyncWriteExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use super::bridge::{Sinks, GATEWAY_SESSION_BASE};
use super::config::ServerConfig;
use super::mesh::{ClientRequest, Reply, ToShard};
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
}

struct Connection {
    out: Rc<LocalSender<Outgoing>>,
    permits: Rc<Semaphore>,
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

/// Serves one binary-protocol connection on this core until it closes.
pub(crate) async fn serve(core: Rc<Core>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if server_handshake(&mut stream).await.is_err() {
        return;
    }
    let id = core.next_connection.get();
    core.next_connection.set(id + 1);
    let (out, outgoing) = local_channel::new_unbounded();
    let out = Rc::new(out);
    let permits = Rc::new(Semaphore::new(CONNECTION_REQUESTS_IN_FLIGHT_MAX));
    core.connections.borrow_mut().insert(
        id,
        Connection {
            out: out.clone(),
            permits: permits.clone(),
        },
    );
    let (reader, writer) = futures_lite::io::split(stream);
    let writer_task = glommio::spawn_local(write_replies(writer, outgoing));
    read_requests(&core, id, reader, &out, &permits).await;
    let _ = out.try_send(Outgoing::Close);
    writer_task.await;
    core.connections.borrow_mut().remove(&id);
    core.connection_closed(id);
}

async fn read_requests(
    core: &Core,
    connection: u64,
    reader: futures_lite::io::ReadHalf<TcpStream>,
    out: &LocalSender<Outgoing>,
    permits: &Semaphore,
) {
    // Pipelined clients send many small frames back to back: reading through a buffer
    // takes them in one receive instead of two per frame (length, then body).
    let mut reader = futures_lite::io::BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut buf = Vec::new();
    loop {
        match read_frame(
            &mut reader,
            &mut buf,
            core.config.request_bytes_max + FRAME_HEADER_ALLOWANCE_BYTES,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => {
                let _ = out.try_send(Outgoing::Frame(REQUEST_ID_CONNECTION, error.to_response()));
                return;
            }
        }
        let (request_id, request) = match decode_request(&buf) {
            Ok(decoded) => decoded,
            Err(error) => {
                // Answer under the frame's id when it could be read (docs/protocol.md).
                let request_id = peek_request_id(&buf).unwrap_or(REQUEST_ID_CONNECTION);
                let _ = out.try_send(Outgoing::Frame(request_id, error.to_response()));
                return;
            }
        };
        if let Err(response) = validate(&request, &core.config) {
            let _ = out.try_send(Outgoing::Frame(request_id, response));
            continue;
        }
        if permits.acquire(1).await.is_err() {
            return;
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
