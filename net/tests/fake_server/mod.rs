//! TEST DOUBLE: a tiny in-process server for the binary protocol, answering from a
//! `corekv_engine::Store` with no Raft, no WAL and no durability. It exists so that the
//! client, corekvctl and corekv-bench can be tested before (and independently of) the
//! real `corekv` server; it is not the server and must never be used as one.
//!
//! It speaks the protocol as docs/protocol.md says: handshake, pipelined requests,
//! watch streams under the WatchCreate id, error frames and closing the connection on
//! a malformed frame. Leases expire in real time (checked every 50 ms). Everything runs
//! on one glommio executor in a background thread; [`FakeServer::start`] returns once
//! it listens.
//!
//! Shared by the tests of several crates with `#[path = ...] mod fake_server;`.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use corekv_engine::{Error, Revision, Store, WatchPoll, WatcherId};
use corekv_net::protocol::codec;
use corekv_net::protocol::{Header, Request, Response, StatusResponse};
use futures_lite::io::{BufReader, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

/// Events taken from a watcher per frame.
const WATCH_EVENTS_PER_FRAME: usize = 256;

/// The fake's member id and cluster id, so tests can recognise headers from it.
pub const FAKE_MEMBER_ID: u64 = 0xfa4e;
/// The fake's cluster id.
pub const FAKE_CLUSTER_ID: u64 = 0xc105;

/// A running test double; the thread serves until the test process exits.
#[derive(Debug)]
pub struct FakeServer {
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl FakeServer {
    /// Starts the fake on an ephemeral loopback port in its own thread.
    pub fn start() -> FakeServer {
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            LocalExecutorBuilder::new(Placement::Unbound)
                .name("fake-server")
                .spawn(move || async move {
                    let listener = TcpListener::bind("127.0.0.1:0").expect("fake: bind");
                    let address = listener.local_addr().expect("fake: local addr");
                    address_sender
                        .send(address.to_string())
                        .expect("fake: test waits for the address");
                    serve(listener).await;
                })
                .expect("fake: spawn executor")
                .join()
                .expect("fake: executor ran");
        });
        let address = address_receiver.recv().expect("fake: started");
        FakeServer { address }
    }
}

/// A connection's outgoing bytes; its writer task drains them.
#[derive(Default)]
struct Outbox {
    bytes: RefCell<Vec<u8>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
}

type Sink = Rc<Outbox>;

/// Watch and lease state shared by every connection.
struct Node {
    store: Store,
    started: Instant,
    /// Store watcher -> (connection id, sink, WatchCreate request id).
    watchers: BTreeMap<WatcherId, (u64, Sink, u64)>,
    next_connection: u64,
}

impl Node {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn header(&self) -> Header {
        Header {
            cluster_id: FAKE_CLUSTER_ID,
            member_id: FAKE_MEMBER_ID,
            revision: self.store.revision(),
            raft_term: 1,
        }
    }

    /// Sends every ready watcher's events (and compaction cancels) to its connection.
    fn deliver_watches(&mut self) {
        for _round in 0..10_000 {
            let ready = self.store.watch_ready();
            if ready.is_empty() {
                return;
            }
            for id in ready {
                let Some((_, sink, request_id)) = self.watchers.get(&id).cloned() else {
                    self.store.watch_cancel(id);
                    continue;
                };
                match self.store.watch_poll(id, WATCH_EVENTS_PER_FRAME) {
                    Some(WatchPoll::Events(events)) if !events.is_empty() => {
                        send(
                            &sink,
                            request_id,
                            &Response::WatchEvents(self.header(), events),
                        );
                    }
                    Some(WatchPoll::Events(_)) | None => {}
                    Some(WatchPoll::Compacted { compact_revision }) => {
                        self.watchers.remove(&id);
                        send(
                            &sink,
                            request_id,
                            &Response::WatchCanceled {
                                header: self.header(),
                                compact_revision,
                            },
                        );
                    }
                }
            }
        }
    }

    fn expire_leases(&mut self) {
        let now = self.now_ms();
        for id in self.store.lease_expired(now, 1000) {
            let _ = self.store.lease_revoke(id);
        }
        self.deliver_watches();
    }

    fn handle(&mut self, connection: u64, sink: &Sink, request_id: u64, request: Request) {
        let response = match self.answer(connection, sink, request_id, request) {
            Ok(Some(response)) => response,
            Ok(None) => return,
            Err(error) => Response::Error {
                code: error.grpc_code() as u32,
                message: error.to_string(),
            },
        };
        send(sink, request_id, &response);
        self.deliver_watches();
    }

    fn answer(
        &mut self,
        connection: u64,
        sink: &Sink,
        request_id: u64,
        request: Request,
    ) -> Result<Option<Response>, Error> {
        let now = self.now_ms();
        Ok(Some(match request {
            Request::Range(range) => {
                corekv_engine::validate_range(&range)?;
                let response = self.store.range(&range)?;
                Response::Range(self.header(), response)
            }
            Request::Put(put) => {
                let applied = self.store.put(&put)?;
                Response::Put(self.header(), applied.response)
            }
            Request::DeleteRange(delete) => {
                let applied = self.store.delete_range(&delete)?;
                Response::DeleteRange(self.header(), applied.response)
            }
            Request::Txn(txn) => {
                let applied = self.store.txn(&txn)?;
                Response::Txn(self.header(), applied.response)
            }
            Request::Compact { revision, .. } => {
                self.store.compact(revision)?;
                Response::Compact(self.header())
            }
            Request::LeaseGrant { id, ttl_seconds } => {
                let grant = self.store.lease_grant(id, ttl_seconds, now)?;
                Response::LeaseGrant {
                    header: self.header(),
                    id: grant.id,
                    ttl_seconds: grant.ttl_seconds,
                }
            }
            Request::LeaseRevoke { id } => {
                self.store.lease_revoke(id)?;
                Response::LeaseRevoke(self.header())
            }
            Request::LeaseKeepAlive { id } => {
                let ttl_seconds = match self.store.lease_renew(id, now) {
                    Ok(ttl) => ttl,
                    Err(Error::LeaseNotFound) => 0,
                    Err(error) => return Err(error),
                };
                Response::LeaseKeepAlive {
                    header: self.header(),
                    id,
                    ttl_seconds,
                }
            }
            Request::LeaseTimeToLive { id, keys } => {
                match self.store.lease_time_to_live(id, now, keys) {
                    Ok(ttl) => Response::LeaseTimeToLive {
                        header: self.header(),
                        id,
                        ttl_seconds: ttl.ttl_seconds,
                        granted_ttl_seconds: ttl.granted_ttl_seconds,
                        keys: ttl.keys,
                    },
                    Err(Error::LeaseNotFound) => Response::LeaseTimeToLive {
                        header: self.header(),
                        id,
                        ttl_seconds: -1,
                        granted_ttl_seconds: 0,
                        keys: Vec::new(),
                    },
                    Err(error) => return Err(error),
                }
            }
            Request::LeaseLeases => Response::LeaseLeases(self.header(), self.store.lease_ids()),
            Request::WatchCreate(watch) => {
                if watch.key.is_empty() {
                    return Err(Error::EmptyKey);
                }
                let id = self.store.watch_create(watch);
                self.watchers
                    .insert(id, (connection, sink.clone(), request_id));
                Response::WatchCreated(self.header())
            }
            Request::WatchCancel { watch_id } => {
                let found = self
                    .watchers
                    .iter()
                    .find(|(_, (conn, _, request))| *conn == connection && *request == watch_id)
                    .map(|(id, _)| *id);
                if let Some(id) = found {
                    self.watchers.remove(&id);
                    self.store.watch_cancel(id);
                    send(
                        sink,
                        watch_id,
                        &Response::WatchCanceled {
                            header: self.header(),
                            compact_revision: Revision(0),
                        },
                    );
                }
                Response::WatchCanceled {
                    header: self.header(),
                    compact_revision: Revision(0),
                }
            }
            Request::WatchProgress => {
                self.deliver_watches();
                Response::WatchProgress(self.header())
            }
            Request::Status => Response::Status(StatusResponse {
                header: self.header(),
                version: "fake-server (test double)".to_string(),
                db_size: self.store.key_count() as u64,
                leader: FAKE_MEMBER_ID,
                raft_index: self.store.revision().0 as u64,
                raft_term: 1,
                raft_applied_index: self.store.revision().0 as u64,
                is_learner: false,
            }),
            // The client tests exercise the KV, lease and watch paths; the maintenance
            // requests are the real server's (tests/ drives them end to end).
            other => Response::Error {
                code: 12,
                message: format!("fake server: {other:?} is not implemented by the test double"),
            },
        }))
    }

    fn connection_closed(&mut self, connection: u64) {
        let ids: Vec<WatcherId> = self
            .watchers
            .iter()
            .filter(|(_, (conn, _, _))| *conn == connection)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.watchers.remove(&id);
            self.store.watch_cancel(id);
        }
    }
}

fn send(sink: &Sink, request_id: u64, response: &Response) {
    codec::encode_response(request_id, response, &mut sink.bytes.borrow_mut());
    if let Some(waker) = sink.waker.borrow_mut().take() {
        waker.wake();
    }
}

async fn serve(listener: TcpListener) {
    let mut store = Store::default();
    store.lease_promote(0, 0);
    let node = Rc::new(RefCell::new(Node {
        store,
        started: Instant::now(),
        watchers: BTreeMap::new(),
        next_connection: 0,
    }));
    let expiry = node.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            expiry.borrow_mut().expire_leases();
        }
    })
    .detach();
    loop {
        let Ok(stream) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        glommio::spawn_local(connection(node, stream)).detach();
    }
}

async fn connection(node: Rc<RefCell<Node>>, mut stream: TcpStream) {
    if codec::server_handshake(&mut stream).await.is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let connection = {
        let mut node = node.borrow_mut();
        node.next_connection += 1;
        node.next_connection
    };
    let (read_half, write_half) = futures_lite::io::split(stream);
    let sink: Sink = Rc::default();
    let writer = glommio::spawn_local(write_frames(sink.clone(), write_half));
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut buf = Vec::new();
    loop {
        match codec::read_frame(&mut reader, &mut buf, codec::FRAME_BYTES_MAX_DEFAULT).await {
            Ok(true) => match codec::decode_request(&buf) {
                Ok((request_id, request)) => node
                    .borrow_mut()
                    .handle(connection, &sink, request_id, request),
                Err(error) => {
                    let id = codec::peek_request_id(&buf).unwrap_or(codec::REQUEST_ID_CONNECTION);
                    send(&sink, id, &error.to_response());
                    break;
                }
            },
            Ok(false) => break,
            Err(error) => {
                send(&sink, codec::REQUEST_ID_CONNECTION, &error.to_response());
                break;
            }
        }
    }
    node.borrow_mut().connection_closed(connection);
    sink.closed.set(true);
    if let Some(waker) = sink.waker.borrow_mut().take() {
        waker.wake();
    }
    writer.await;
}

async fn write_frames(sink: Sink, mut write_half: WriteHalf<TcpStream>) {
    let mut batch = Vec::new();
    loop {
        let more = futures_lite::future::poll_fn(|cx| {
            let mut bytes = sink.bytes.borrow_mut();
            if !bytes.is_empty() {
                std::mem::swap(&mut *bytes, &mut batch);
                return Poll::Ready(true);
            }
            if sink.closed.get() {
                return Poll::Ready(false);
            }
            *sink.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if !more {
            let _ = write_half.close().await;
            return;
        }
        if write_half.write_all(&batch).await.is_err() {
            return;
        }
        batch.clear();
    }
}
