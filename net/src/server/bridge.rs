//! The bridge between the gateway (tonic and the HTTP endpoints, served on the cores;
//! streams on a small tokio runtime) and a connection core: each core has one, and
//! gateway requests enter the core exactly like a socket connection's, through the
//! same edge checks and the same batches to the shard. Replies come back over channels
//! that work on either side (tokio's oneshot and mpsc wake any waker, so a call served
//! on the core and a stream on a tokio thread use the same path).
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
    Stream(StreamSender),
}

impl Sink {
    /// Delivers the last reply of request `request_id` (a reader gone away is no error).
    fn send_last(self, request_id: u64, response: Response) {
        match self {
            Sink::Once(sender) => {
                let _ = sender.send(response);
            }
            Sink::Stream(sender) => {
                sender.send(request_id, response);
            }
        }
    }
}

/// Replies a stream's reader may leave untaken before the bridge gives up on it: the
/// session is closed (its watches cancelled) and the reader gets
/// [`STREAM_OVERFLOW_MESSAGE`], as a socket connection that stops reading is closed.
pub const STREAM_PENDING_MAX: usize = 65_536;
/// The error a stream's reader gets when it fell [`STREAM_PENDING_MAX`] replies behind.
pub const STREAM_OVERFLOW_MESSAGE: &str =
    "corekv: the client fell too far behind this stream's replies; the stream was closed";

/// The sending half of a stream's replies; counts what the reader has not taken yet.
#[derive(Clone, Debug)]
pub struct StreamSender {
    sender: mpsc::UnboundedSender<(u64, Response)>,
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The receiving half of a stream's replies.
#[derive(Debug)]
pub struct StreamReceiver {
    receiver: mpsc::UnboundedReceiver<(u64, Response)>,
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A channel for stream replies (see [`ShardHandle::stream`]).
pub fn stream_channel() -> (StreamSender, StreamReceiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (
        StreamSender {
            sender,
            pending: pending.clone(),
        },
        StreamReceiver { receiver, pending },
    )
}

impl StreamSender {
    fn send(&self, request_id: u64, response: Response) -> bool {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.sender.send((request_id, response)).is_ok()
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

impl StreamReceiver {
    /// The next reply, tagged with its request id; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<(u64, Response)> {
        let next = self.receiver.recv().await;
        if next.is_some() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        next
    }
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

    /// Sends one request and waits for its one reply. On the core this handle's bridge
    /// runs on, with nothing queued before it, the request goes straight into the core's
    /// batch (the bridge would do just that, a channel and a task wake-up later).
    pub async fn call(&self, request: Request) -> Result<Response, Stopped> {
        let (sink, reply) = oneshot::channel();
        let message = GatewayMessage::Call {
            session: self.shared_session(),
            request_id: self.ids.fetch_add(1, Ordering::Relaxed),
            request,
            sink: Sink::Once(sink),
        };
        if let Some(message) = self.submit_here(message) {
            self.sender.send(message).await.map_err(|_| Stopped)?;
        }
        reply.await.map_err(|_| Stopped)
    }

    /// Hands a message straight to the core of this handle's bridge if the caller
    /// runs on it and no message waits in the bridge's queue (everything received is
    /// already handled: the bridge handles a batch without yielding), so the message
    /// keeps its order. Returns the message otherwise.
    fn submit_here(&self, message: GatewayMessage) -> Option<GatewayMessage> {
        if self.sender.capacity() != self.sender.max_capacity() {
            return Some(message);
        }
        let key = self.key();
        let core = LOCAL_BRIDGE.with(|local| match local.borrow().as_ref() {
            Some((bridge, core)) if *bridge == key => core.upgrade(),
            _ => None,
        });
        match core {
            Some(core) => {
                handle(&core, message, Instant::now());
                None
            }
            None => Some(message),
        }
    }

    /// Tells this handle's bridge apart from the other cores' bridges (see
    /// [`run_bridge`]).
    pub(crate) fn key(&self) -> usize {
        std::sync::Arc::as_ptr(&self.ids) as usize
    }

    /// Sends one request whose replies form a stream into `replies`, tagged with the
    /// request id this returns (a watch's id for `WatchCancel`).
    pub async fn stream(
        &self,
        session: u64,
        request: Request,
        replies: StreamSender,
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
    /// Delivers one reply from the shard. Returns a session to close when its reader
    /// fell too far behind.
    pub(crate) fn deliver(
        &mut self,
        request_id: u64,
        response: Response,
        completes: bool,
    ) -> Option<u64> {
        let (session, sink) = self.by_request.get(&request_id)?;
        if let Sink::Stream(sender) = sink {
            if sender.pending() >= STREAM_PENDING_MAX {
                let session = *session;
                let overflow = Response::Error {
                    code: 8,
                    message: STREAM_OVERFLOW_MESSAGE.to_string(),
                };
                sender.send(request_id, overflow);
                self.close(session);
                return Some(session);
            }
        }
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
            sink.send_last(request_id, response);
        } else if let Some((_, Sink::Stream(sender))) = self.by_request.get(&request_id) {
            if !sender.send(request_id, response) {
                // The stream's reader is gone; its session's close cleans up the watch.
                self.by_request.remove(&request_id);
            }
        }
        None
    }

    fn close(&mut self, session: u64) {
        self.by_request.retain(|_, (owner, _)| *owner != session);
    }
}

thread_local! {
    /// The bridge running on this thread, by its handle's key, and its core.
    static LOCAL_BRIDGE: RefCell<Option<(usize, std::rc::Weak<Core>)>> = const { RefCell::new(None) };
}

/// Does what a gateway message asks on its core: a call is checked at the edge and
/// submitted into the core's batch, its sink filed under its request id; a close drops
/// the session's sinks and watches.
fn handle(core: &Core, message: GatewayMessage, received: Instant) {
    match message {
        GatewayMessage::Call {
            session,
            request_id,
            request,
            sink,
        } => {
            if let Err(response) = validate(&request, core.config()) {
                sink.send_last(request_id, response);
                return;
            }
            core.gateway_sinks()
                .borrow_mut()
                .by_request
                .insert(request_id, (session, sink));
            core.submit(ClientRequest {
                core: core.index(),
                connection: session,
                request_id,
                request,
                received,
            });
        }
        GatewayMessage::Close { session } => {
            core.gateway_sinks().borrow_mut().close(session);
            core.connection_closed(session);
        }
    }
}

/// Runs on one core: takes the gateway's messages and feeds them to the shard as that
/// core's requests. `key` is [`ShardHandle::key`] of the gateway's end of `receiver`:
/// calls made through it on this core skip the queue (see [`ShardHandle::call`]).
pub(crate) async fn run_bridge(
    core: Rc<Core>,
    key: usize,
    mut receiver: mpsc::Receiver<GatewayMessage>,
) {
    LOCAL_BRIDGE.with(|local| *local.borrow_mut() = Some((key, Rc::downgrade(&core))));
    let mut batch = Vec::with_capacity(BRIDGE_BATCH_MAX);
    while receiver.recv_many(&mut batch, BRIDGE_BATCH_MAX).await > 0 {
        let now = Instant::now();
        for message in batch.drain(..) {
            handle(&core, message, now);
        }
    }
    LOCAL_BRIDGE.with(|local| *local.borrow_mut() = None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Header;

    fn events() -> Response {
        Response::WatchEvents(Header::default(), Vec::new())
    }

    /// Streams get every reply tagged in order; a reader that falls too far behind has
    /// its session closed and gets the overflow error last; unary sinks end at once.
    #[test]
    fn sinks_route_and_bound_streams() {
        let mut sinks = Sinks::default();
        let (sender, mut receiver) = stream_channel();
        sinks.by_request.insert(7, (100, Sink::Stream(sender)));
        assert_eq!(
            sinks.deliver(7, Response::WatchCreated(Header::default()), true),
            None
        );
        for _ in 1..STREAM_PENDING_MAX {
            assert_eq!(sinks.deliver(7, events(), false), None);
        }
        // One more than the reader may leave untaken closes its session.
        assert_eq!(sinks.deliver(7, events(), false), Some(100));
        assert!(sinks.by_request.is_empty());
        let mut last = None;
        let mut count = 0;
        futures_lite::future::block_on(async {
            while let Some(Some((id, response))) =
                futures_lite::future::poll_once(receiver.recv()).await
            {
                assert_eq!(id, 7);
                count += 1;
                last = Some(response);
            }
        });
        assert_eq!(count, STREAM_PENDING_MAX + 1);
        assert!(
            matches!(last, Some(Response::Error { code: 8, ref message }) if message == STREAM_OVERFLOW_MESSAGE)
        );

        let (once, mut answer) = oneshot::channel();
        sinks.by_request.insert(8, (100, Sink::Once(once)));
        assert_eq!(
            sinks.deliver(8, Response::Defragment(Header::default()), true),
            None
        );
        assert!(matches!(answer.try_recv(), Ok(Response::Defragment(_))));
        assert!(sinks.by_request.is_empty());
    }
}
