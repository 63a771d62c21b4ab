//! The bridge between the gateway's threads (tonic and the HTTP endpoints on a small
//! tokio runtime) and a connection core: gateway requests enter the core exactly like a
//! socket connection's, through the same edge checks and the same batches to the shard,
//! and replies come back over channels that work across runtimes (tokio's oneshot and
//! mpsc wake any waker, so the glommio side needs no tokio runtime).
//!
//! A gateway *session* plays the part of a connection: the shard keys watches and
//! progress requests by it, and closing it cancels its watches. Unary calls share one
//! session; every gRPC watch stream opens its own.
//!
//! Limits: [`GATEWAY_QUEUE_MAX`] messages queued towards the core (the gateway's tasks
//! wait when it is full); replies to streams are unbounded on the channel but the shard
//! sends watch events only while the core keeps up (as for sockets).
//!
//! Never: touch engine state (the shard's core owns it).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::connection::{validate, Core};
use super::mesh::ClientRequest;
use crate::protocol::{Request, Response};

/// Messages queued from the gateway to its core before senders wait.
pub const GATEWAY_QUEUE_MAX: usize = 16_384;
/// Session ids at and above this belong to the gateway (socket connections count up
/// from 1 on each core and never get near).
pub const GATEWAY_SESSION_BASE: u64 = 1 << 56;
/// Messages the bridge takes off the queue per wake-up at most, so one busy gateway
/// does not starve the core's sockets.
const BRIDGE_BATCH_MAX: usize = 1024;

/// Where a reply goes.
#[derive(Debug)]
pub enum Sink {
    /// One reply completes the call.
    Once(oneshot::Sender<Response>),
    /// A stream (watch, snapshot): every reply under the request id, tagged with it
    /// (several streams of one session may share a channel), until the stream ends
    /// (watch cancelled, last snapshot chunk, error) or the session closes.
    Stream(mpsc::UnboundedSender<(u64, Response)>),
}

/// A message from the gateway to its core.
#[derive(Debug)]
pub enum GatewayMessage {
    /// A request.
    Call {
        /// Session (see the module docs).
        session: u64,
        /// Request id, unique across the gateway.
        request_id: u64,
        /// The request.
        request: Request,
        /// Where its replies go.
        sink: Sink,
    },
    /// The session ended: cancel its watches, drop its sinks.
    Close {
        /// The session.
        session: u64,
    },
}

/// The gateway's end: cheap to clone, usable from any thread.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    sender: mpsc::Sender<GatewayMessage>,
    ids: std::sync::Arc<AtomicU64>,
    sessions: std::sync::Arc<AtomicU64>,
}

/// The server stopped (shutdown or a failed core): what a call gets instead of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl ShardHandle {
    /// Makes the two ends: the handle for the gateway, the receiver for the core.
    pub fn new() -> (ShardHandle, mpsc::Receiver<GatewayMessage>) {
        let (sender, receiver) = mpsc::channel(GATEWAY_QUEUE_MAX);
        let handle = ShardHandle {
            sender,
            ids: std::sync::Arc::new(AtomicU64::new(1)),
            sessions: std::sync::Arc::new(AtomicU64::new(GATEWAY_SESSION_BASE + 1)),
        };
        (handle, receiver)
    }

    /// The session unary calls share.
    pub fn shared_session(&self) -> u64 {
        GATEWAY_SESSION_BASE
    }

    /// A new session (for a watch stream); close it with [`ShardHandle::close`].
    pub fn open_session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed)
    }

    /// Ends a session.
    pub async fn close(&self, session: u64) {
        let _ = self.sender.send(GatewayMessage::Close { session }).await;
    }

    /// Ends a session without waiting (from a `Drop`).
    pub fn close_soon(&self, session: u64) {
        let handle = self.clone();
        if self
            .sender
            .try_send(GatewayMessage::Close { session })
            .is_err()
        {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { handle.close(session).await });
            }
        }
    }

    /// Sends one request and waits for its one reply.
    pub async fn call(&self, request: Request) -> Result<Response, Stopped> {
        let (sink, reply) = oneshot::channel();
        let message = GatewayMessage::Call {
            session: self.shared_session(),
            request_id: self.ids.fetch_add(1, Ordering::Relaxed),
            request,
            sink: Sink::Once(sink),
        };
        self.sender.send(message).await.map_err(|_| Stopped)?;
        reply.await.map_err(|_| Stopped)
    }

    /// Sends one request whose replies form a stream into `replies`, tagged with the
    /// request id this returns (a watch's id for `WatchCancel`).
    pub async fn stream(
        &self,
        session: u64,
        request: Request,
        replies: mpsc::UnboundedSender<(u64, Response)>,
    ) -> Result<u64, Stopped> {
        let request_id = self.ids.fetch_add(1, Ordering::Relaxed);
        let message = GatewayMessage::Call {
            session,
            request_id,
            request,
            sink: Sink::Stream(replies),
        };
        self.sender.send(message).await.map_err(|_| Stopped)?;
        Ok(request_id)
    }

    /// Sends one request in `session` and waits for its one reply (watch cancel and
    /// progress requests, which belong to a stream's session).
    pub async fn call_in(&self, session: u64, request: Request) -> Result<Response, Stopped> {
        let (sink, reply) = oneshot::channel();
        let message = GatewayMessage::Call {
            session,
            request_id: self.ids.fetch_add(1, Ordering::Relaxed),
            request,
            sink: Sink::Once(sink),
        };
        self.sender.send(message).await.map_err(|_| Stopped)?;
        reply.await.map_err(|_| Stopped)
    }
}

/// The core's side: the sinks of requests in flight, by request id.
#[derive(Debug, Default)]
pub(crate) struct Sinks {
    by_request: HashMap<u64, (u64, Sink)>,
}

impl Sinks {
    /// Delivers one reply from the shard.
    pub(crate) fn deliver(&mut self, request_id: u64, response: Response, completes: bool) {
        let Some((_, sink)) = self.by_request.get(&request_id) else {
            return;
        };
        let ends = match sink {
            Sink::Once(_) => true,
            Sink::Stream(_) => match &response {
                Response::WatchCanceled { .. } | Response::Error { .. } => true,
                Response::WatchCreated(_) | Response::WatchEvents(..) => false,
                _ => completes,
            },
        };
        if ends {
            let (_, sink) = self
                .by_request
                .remove(&request_id)
                .expect("looked up above");
            match sink {
                Sink::Once(sender) => {
                    let _ = sender.send(response);
                }
                Sink::Stream(sender) => {
                    let _ = sender.send((request_id, response));
                }
            }
        } else if let Some((_, Sink::Stream(sender))) = self.by_request.get(&request_id) {
            if sender.send((request_id, response)).is_err() {
                // The stream's reader is gone; its session's close cleans up the watch.
                self.by_request.remove(&request_id);
            }
        }
    }

    fn close(&mut self, session: u64) {
        self.by_request.retain(|_, (owner, _)| *owner != session);
    }
}

/// Runs on one core: takes the gateway's messages and feeds them to the shard as that
/// core's requests.
pub(crate) async fn run_bridge(core: Rc<Core>, mut receiver: mpsc::Receiver<GatewayMessage>) {
    let sinks: Rc<RefCell<Sinks>> = core.gateway_sinks();
    let mut batch = Vec::with_capacity(BRIDGE_BATCH_MAX);
    loop {
        if receiver.recv_many(&mut batch, BRIDGE_BATCH_MAX).await == 0 {
            return;
        }
        let now = Instant::now();
        for message in batch.drain(..) {
            match message {
                GatewayMessage::Call {
                    session,
                    request_id,
                    request,
                    sink,
                } => {
                    if let Err(response) = validate(&request, core.config()) {
                        match sink {
                            Sink::Once(sender) => {
                                let _ = sender.send(response);
                            }
                            Sink::Stream(sender) => {
                                let _ = sender.send((request_id, response));
                            }
                        }
                        continue;
                    }
                    sinks
                        .borrow_mut()
                        .by_request
                        .insert(request_id, (session, sink));
                    core.submit(ClientRequest {
                        core: core.index(),
                        connection: session,
                        request_id,
                        request,
                        received: now,
                    });
                }
                GatewayMessage::Close { session } => {
                    sinks.borrow_mut().close(session);
                    core.connection_closed(session);
                }
            }
        }
    }
}
