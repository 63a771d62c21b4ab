//! The async client of corekv's binary protocol (docs/protocol.md), used by `corekvctl`,
//! `corekv-bench` and the tests.
//!
//! One [`Client`] is one TCP connection on the current glommio executor. It is cheap to
//! clone (`Rc`), and any number of tasks on that executor may use the clones at once:
//! requests are pipelined (each gets a fresh request id, and responses are matched by
//! id in whatever order they arrive), and writes from all tasks are coalesced into one
//! socket write while the previous write is in flight. Watches ([`Client::watch`])
//! deliver their stream of frames to a [`Watch`].
//!
//! Two tasks per connection do the IO: a writer that drains the shared outgoing buffer,
//! and a reader that decodes response frames and hands each to the mailbox registered
//! for its id. When the connection fails (the server closed it, a malformed frame, a
//! socket error) every request in flight fails with [`ClientError::ConnectionLost`],
//! and so does every later request: the client never reconnects by itself.
//!
//! Not bounded by the client: a watch's frames queue in memory until [`Watch::next`]
//! takes them (read them promptly; the server bounds what it buffers per watch), and
//! calls have no deadline of their own (wrap them in a timer, as `corekvctl` does with
//! `--command-timeout`).
//!
//! Invariants: at most `in_flight_max` unary requests are outstanding per connection
//! (callers beyond wait); request ids start at 1 and increase (0 is reserved by the
//! protocol); a request larger than the server's frame limit is refused locally, so it
//! does not cost the connection. Never: `Send` (it is thread-per-core), block the
//! executor, or retry a request (a write might have been applied).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use corekv_engine::{
    DeleteRangeRequest, DeleteRangeResponse, Event, KeyValue, LeaseId, PutRequest, PutResponse,
    RangeRequest, RangeResponse, Revision, TxnRequest, TxnResponse, WatchRequest,
};
use futures_lite::io::{BufReader, ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;

use crate::protocol::codec::{self, ProtocolError};
use crate::protocol::{Header, Request, Response, StatusResponse};

/// Default bound on unary requests in flight on one connection.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 4096;

/// Default time allowed for the TCP connect.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Largest request frame body sent; larger requests fail locally with
    /// [`ClientError::RequestTooLarge`]. Match the server's `--max-request-bytes`.
    pub request_frame_bytes_max: usize,
    /// Largest response frame body read; a larger one fails the connection.
    pub response_frame_bytes_max: usize,
    /// Unary requests in flight at most; callers beyond wait for a slot.
    pub in_flight_max: usize,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_frame_bytes_max: codec::FRAME_BYTES_MAX_DEFAULT,
            response_frame_bytes_max: codec::RESPONSE_FRAME_BYTES_MAX_DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
        }
    }
}

/// What can go wrong for a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why (the socket error).
        reason: String,
    },
    /// The server did not complete the protocol handshake.
    #[error("handshake with {address} failed: {source}")]
    Handshake {
        /// The address.
        address: String,
        /// What went wrong.
        #[source]
        source: ProtocolError,
    },
    /// The server refused the request; `message` is etcd's text, verbatim.
    #[error("{message}")]
    Server {
        /// gRPC status code.
        code: u32,
        /// etcd's message.
        message: String,
    },
    /// The connection failed before the response arrived (or had already failed).
    #[error("connection to {address} lost: {reason}")]
    ConnectionLost {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The request's frame exceeds the limit the server enforces; it was not sent.
    #[error("etcdserver: request is too large ({length} bytes, limit {max})")]
    RequestTooLarge {
        /// Encoded frame body length.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// The server answered with a response that does not fit the request.
    #[error("protocol violation: a {request} request was answered with {response}")]
    UnexpectedResponse {
        /// The request kind.
        request: &'static str,
        /// The response received, abbreviated.
        response: String,
    },
}

impl ClientError {
    /// The gRPC status code, for server errors.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The result of a lease grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrantResult {
    /// Response header.
    pub header: Header,
    /// The lease id.
    pub id: LeaseId,
    /// TTL in effect, seconds.
    pub ttl_seconds: i64,
}

/// The result of a lease time-to-live query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLiveResult {
    /// Response header.
    pub header: Header,
    /// The lease id.
    pub id: LeaseId,
    /// Seconds left; -1 if the lease does not exist.
    pub ttl_seconds: i64,
    /// TTL granted.
    pub granted_ttl_seconds: i64,
    /// Attached keys, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// One message of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// Events in revision order.
    Events(Header, Vec<Event>),
    /// The watch ended (the last message): cancelled by the client (compact revision
    /// 0) or by compaction.
    Canceled {
        /// Header.
        header: Header,
        /// The compact revision when cancelled by compaction, else 0.
        compact_revision: Revision,
    },
}

/// Responses waiting for one request id, and the task waiting for them.
#[derive(Debug, Default)]
struct Mailbox {
    responses: VecDeque<Response>,
    /// Set when the connection failed; no response will come.
    lost: Option<String>,
    waker: Option<Waker>,
}

type MailboxRef = Rc<RefCell<Mailbox>>;

#[derive(Debug)]
enum Pending {
    /// One response, then the id is done.
    Unary(MailboxRef),
    /// A watch stream: done after WatchCanceled or Error.
    Stream(MailboxRef),
    /// A response nobody waits for (the cancel sent when a `Watch` is dropped).
    Ignored,
}

#[derive(Debug)]
struct State {
    next_request_id: u64,
    pending: HashMap<u64, Pending>,
    /// Encoded frames not yet handed to the socket.
    outgoing: Vec<u8>,
    writer_waker: Option<Waker>,
    /// Why the connection is unusable, once it is.
    closed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    address: String,
    options: ClientOptions,
    state: RefCell<State>,
    slots: Semaphore,
}

impl Shared {
    /// Marks the connection failed and fails every request waiting on it.
    fn fail(&self, reason: String) {
        let mut state = self.state.borrow_mut();
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        let reason = state.closed.clone().expect("closed was just set");
        for (_, pending) in state.pending.drain() {
            if let Pending::Unary(mailbox) | Pending::Stream(mailbox) = pending {
                let mut mailbox = mailbox.borrow_mut();
                mailbox.lost = Some(reason.clone());
                if let Some(waker) = mailbox.waker.take() {
                    waker.wake();
                }
            }
        }
        if let Some(waker) = state.writer_waker.take() {
            waker.wake();
        }
    }

    fn lost(&self, reason: String) -> ClientError {
        ClientError::ConnectionLost {
            address: self.address.clone(),
            reason,
        }
    }

    /// Encodes `request` under a fresh id into the outgoing buffer and registers what
    /// waits for its response.
    fn enqueue(
        &self,
        request: &Request,
        waiter: impl FnOnce() -> Pending,
    ) -> Result<u64, ClientError> {
        let mut state = self.state.borrow_mut();
        if let Some(reason) = &state.closed {
            return Err(self.lost(reason.clone()));
        }
        let request_id = state.next_request_id;
        state.next_request_id += 1;
        let start = state.outgoing.len();
        codec::encode_request(request_id, request, &mut state.outgoing);
        let length = state.outgoing.len() - start - 4;
        if length > self.options.request_frame_bytes_max {
            state.outgoing.truncate(start);
            return Err(ClientError::RequestTooLarge {
                length,
                max: self.options.request_frame_bytes_max,
            });
        }
        state.pending.insert(request_id, waiter());
        if let Some(waker) = state.writer_waker.take() {
            waker.wake();
        }
        Ok(request_id)
    }

    /// Hands one decoded response to whoever waits for its id.
    fn dispatch(&self, request_id: u64, response: Response) {
        let mut state = self.state.borrow_mut();
        if request_id == codec::REQUEST_ID_CONNECTION {
            // A connection-level error: the server closes the connection next.
            if let Response::Error { message, .. } = response {
                state.closed.get_or_insert(format!("server: {message}"));
            }
            return;
        }
        let Some(pending) = state.pending.get(&request_id) else {
            // A response to a request whose caller went away; nothing waits for it.
            return;
        };
        let (mailbox, done) = match pending {
            Pending::Unary(mailbox) => (Some(mailbox.clone()), true),
            Pending::Stream(mailbox) => {
                let done = matches!(
                    response,
                    Response::WatchCanceled { .. } | Response::Error { .. }
                );
                (Some(mailbox.clone()), done)
            }
            Pending::Ignored => (None, true),
        };
        if done {
            state.pending.remove(&request_id);
        }
        drop(state);
        if let Some(mailbox) = mailbox {
            let mut mailbox = mailbox.borrow_mut();
            mailbox.responses.push_back(response);
            if let Some(waker) = mailbox.waker.take() {
                waker.wake();
            }
        }
    }
}

/// Waits for the next response in a mailbox.
struct NextResponse<'a> {
    mailbox: &'a MailboxRef,
}

impl Future for NextResponse<'_> {
    type Output = Result<Response, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut mailbox = self.mailbox.borrow_mut();
        if let Some(response) = mailbox.responses.pop_front() {
            return Poll::Ready(Ok(response));
        }
        if let Some(reason) = &mailbox.lost {
            return Poll::Ready(Err(reason.clone()));
        }
        mailbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Ends the connection's tasks when the last [`Client`] clone is dropped.
#[derive(Debug)]
struct Owner {
    shared: Rc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.fail("the client was dropped".to_string());
        for task in &self.tasks {
            task.cancel();
        }
    }
}

/// A connection to a corekv server over the binary protocol. Clone it to share the
/// connection between tasks of one executor.
#[derive(Clone, Debug)]
pub struct Client {
    shared: Rc<Shared>,
    _owner: Rc<Owner>,
}

impl Client {
    /// Connects to `address` (`host:port`) with default options and completes the
    /// handshake. Must run on a glommio executor.
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        Client::connect_with(address, ClientOptions::default()).await
    }

    /// Connects to `address` (`host:port`) and completes the handshake.
    pub async fn connect_with(
        address: &str,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            address: address.to_string(),
            reason,
        };
        let socket_address = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(|error| connect_error(error.to_string()))?
            .next()
            .ok_or_else(|| connect_error("the name resolved to no address".to_string()))?;
        let mut stream = TcpStream::connect_timeout(socket_address, options.connect_timeout)
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|error| connect_error(error.to_string()))?;
        codec::client_handshake(&mut stream)
            .await
            .map_err(|source| ClientError::Handshake {
                address: address.to_string(),
                source,
            })?;
        let (read_half, write_half) = futures_lite::io::split(stream);
        let shared = Rc::new(Shared {
            address: address.to_string(),
            slots: Semaphore::new(options.in_flight_max as u64),
            options,
            state: RefCell::new(State {
                next_request_id: 1,
                pending: HashMap::new(),
                outgoing: Vec::new(),
                writer_waker: None,
                closed: None,
            }),
        });
        let reader = glommio::spawn_local(read_loop(shared.clone(), read_half)).detach();
        let writer = glommio::spawn_local(write_loop(shared.clone(), write_half)).detach();
        Ok(Client {
            _owner: Rc::new(Owner {
                shared: shared.clone(),
                tasks: vec![reader, writer],
            }),
            shared,
        })
    }

    /// Connects, retrying refused or failed connections every `retry_interval` until
    /// `deadline` passes (for a server that is still starting); returns the last error
    /// then. Handshake failures are not retried: something else is listening.
    pub async fn connect_until(
        address: &str,
        deadline: std::time::Instant,
        retry_interval: Duration,
    ) -> Result<Client, ClientError> {
        loop {
            match Client::connect(address).await {
                Err(ClientError::Connect { .. }) if std::time::Instant::now() < deadline => {
                    glommio::timer::sleep(retry_interval).await;
                }
                result => return result,
            }
        }
    }

    /// The address this client connected to.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// Whether the connection has failed or been closed.
    pub fn is_closed(&self) -> bool {
        self.shared.state.borrow().closed.is_some()
    }

    /// Sends any request and waits for its one response. A server `Error` becomes
    /// [`ClientError::Server`]. For `WatchCreate` use [`Client::watch`].
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        assert!(
            !matches!(request, Request::WatchCreate(_)),
            "client: a WatchCreate opens a stream; use Client::watch"
        );
        let _slot = self
            .shared
            .slots
            .acquire_permit(1)
            .await
            .map_err(|error| self.shared.lost(error.to_string()))?;
        let mailbox = MailboxRef::default();
        self.shared
            .enqueue(&request, || Pending::Unary(mailbox.clone()))?;
        match (NextResponse { mailbox: &mailbox }).await {
            Ok(Response::Error { code, message }) => Err(ClientError::Server { code, message }),
            Ok(response) => Ok(response),
            Err(reason) => Err(self.shared.lost(reason)),
        }
    }

    /// Reads keys.
    pub async fn range(
        &self,
        request: RangeRequest,
    ) -> Result<(Header, RangeResponse), ClientError> {
        match self.request(Request::Range(request)).await? {
            Response::Range(header, range) => Ok((header, range)),
            other => Err(unexpected("range", &other)),
        }
    }

    /// Reads one key at the current revision (linearizable); None if it does not exist.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        let (_, range) = self
            .range(RangeRequest {
                key: key.to_vec(),
                ..RangeRequest::default()
            })
            .await?;
        Ok(range.kvs.into_iter().next())
    }

    /// Writes one key.
    pub async fn put(&self, request: PutRequest) -> Result<(Header, PutResponse), ClientError> {
        match self.request(Request::Put(request)).await? {
            Response::Put(header, put) => Ok((header, put)),
            other => Err(unexpected("put", &other)),
        }
    }

    /// Deletes keys.
    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<(Header, DeleteRangeResponse), ClientError> {
        match self.request(Request::DeleteRange(request)).await? {
            Response::DeleteRange(header, delete) => Ok((header, delete)),
            other => Err(unexpected("delete range", &other)),
        }
    }

    /// Runs a transaction.
    pub async fn txn(&self, request: TxnRequest) -> Result<(Header, TxnResponse), ClientError> {
        match self.request(Request::Txn(request)).await? {
            Response::Txn(header, txn) => Ok((header, txn)),
            other => Err(unexpected("txn", &other)),
        }
    }

    /// Compacts history at `revision`.
    pub async fn compact(&self, revision: Revision, physical: bool) -> Result<Header, ClientError> {
        match self
            .request(Request::Compact { revision, physical })
            .await?
        {
            Response::Compact(header) => Ok(header),
            other => Err(unexpected("compact", &other)),
        }
    }

    /// Grants a lease (`id` NONE: the server chooses one).
    pub async fn lease_grant(
        &self,
        id: LeaseId,
        ttl_seconds: i64,
    ) -> Result<LeaseGrantResult, ClientError> {
        match self
            .request(Request::LeaseGrant { id, ttl_seconds })
            .await?
        {
            Response::LeaseGrant {
                header,
                id,
                ttl_seconds,
            } => Ok(LeaseGrantResult {
                header,
                id,
                ttl_seconds,
            }),
            other => Err(unexpected("lease grant", &other)),
        }
    }

    /// Revokes a lease and deletes its keys.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Header, ClientError> {
        match self.request(Request::LeaseRevoke { id }).await? {
            Response::LeaseRevoke(header) => Ok(header),
            other => Err(unexpected("lease revoke", &other)),
        }
    }

    /// Renews a lease once; returns the header and the new TTL (0: the lease is gone).
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<(Header, i64), ClientError> {
        match self.request(Request::LeaseKeepAlive { id }).await? {
            Response::LeaseKeepAlive {
                header,
                ttl_seconds,
                ..
            } => Ok((header, ttl_seconds)),
            other => Err(unexpected("lease keep-alive", &other)),
        }
    }

    /// Remaining TTL of a lease and, with `keys`, its attached keys.
    pub async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResult, ClientError> {
        match self.request(Request::LeaseTimeToLive { id, keys }).await? {
            Response::LeaseTimeToLive {
                header,
                id,
                ttl_seconds,
                granted_ttl_seconds,
                keys,
            } => Ok(LeaseTimeToLiveResult {
                header,
                id,
                ttl_seconds,
                granted_ttl_seconds,
                keys,
            }),
            other => Err(unexpected("lease time-to-live", &other)),
        }
    }

    /// Every lease id.
    pub async fn lease_leases(&self) -> Result<(Header, Vec<LeaseId>), ClientError> {
        match self.request(Request::LeaseLeases).await? {
            Response::LeaseLeases(header, ids) => Ok((header, ids)),
            other => Err(unexpected("lease leases", &other)),
        }
    }

    /// Asks for a progress notification: the returned header's revision is one that
    /// every watch on this connection has been sent all events up to.
    pub async fn watch_progress(&self) -> Result<Header, ClientError> {
        match self.request(Request::WatchProgress).await? {
            Response::WatchProgress(header) => Ok(header),
            other => Err(unexpected("watch progress", &other)),
        }
    }

    /// Member status.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        match self.request(Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Starts a watch and waits until the server has created it. Events then arrive
    /// through [`Watch::next`]. A watch that needs compacted history is created and then
    /// ends at once with [`WatchMessage::Canceled`] naming the compact revision.
    pub async fn watch(&self, request: WatchRequest) -> Result<Watch, ClientError> {
        let mailbox = MailboxRef::default();
        let watch_id = self.shared.enqueue(&Request::WatchCreate(request), || {
            Pending::Stream(mailbox.clone())
        })?;
        let mut watch = Watch {
            client: self.clone(),
            watch_id,
            mailbox,
            created: Header::default(),
            ended: false,
        };
        match (NextResponse {
            mailbox: &watch.mailbox,
        })
        .await
        {
            Ok(Response::WatchCreated(header)) => {
                watch.created = header;
                Ok(watch)
            }
            Ok(Response::Error { code, message }) => {
                watch.ended = true;
                Err(ClientError::Server { code, message })
            }
            Ok(other) => {
                watch.ended = true;
                Err(unexpected("watch create", &other))
            }
            Err(reason) => {
                watch.ended = true;
                Err(self.shared.lost(reason))
            }
        }
    }
}

fn unexpected(request: &'static str, response: &Response) -> ClientError {
    let mut response = format!("{response:?}");
    response.truncate(200);
    ClientError::UnexpectedResponse { request, response }
}

/// A watch stream. Dropping it before it ended cancels it on the server.
#[derive(Debug)]
pub struct Watch {
    client: Client,
    watch_id: u64,
    mailbox: MailboxRef,
    created: Header,
    ended: bool,
}

impl Watch {
    /// The watch's id: the request id of its `WatchCreate`.
    pub fn watch_id(&self) -> u64 {
        self.watch_id
    }

    /// The header of the server's `WatchCreated`.
    pub fn created_header(&self) -> Header {
        self.created
    }

    /// The next message of the stream, or None after the stream ended (the
    /// [`WatchMessage::Canceled`] message is delivered once, then None).
    pub async fn next(&mut self) -> Option<Result<WatchMessage, ClientError>> {
        if self.ended {
            return None;
        }
        let next = NextResponse {
            mailbox: &self.mailbox,
        }
        .await;
        Some(match next {
            Ok(Response::WatchEvents(header, events)) => Ok(WatchMessage::Events(header, events)),
            Ok(Response::WatchCanceled {
                header,
                compact_revision,
            }) => {
                self.ended = true;
                Ok(WatchMessage::Canceled {
                    header,
                    compact_revision,
                })
            }
            Ok(Response::Error { code, message }) => {
                self.ended = true;
                Err(ClientError::Server { code, message })
            }
            Ok(other) => {
                self.ended = true;
                Err(unexpected("watch", &other))
            }
            Err(reason) => {
                self.ended = true;
                Err(self.client.shared.lost(reason))
            }
        })
    }

    /// Asks the server to cancel the watch and waits for its answer. The stream's
    /// final [`WatchMessage::Canceled`] (and any events sent before it) can still be
    /// read with [`Watch::next`].
    pub async fn cancel(&self) -> Result<(), ClientError> {
        match self
            .client
            .request(Request::WatchCancel {
                watch_id: self.watch_id,
            })
            .await?
        {
            Response::WatchCanceled { .. } => Ok(()),
            other => Err(unexpected("watch cancel", &other)),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let shared = &self.client.shared;
        shared.state.borrow_mut().pending.remove(&self.watch_id);
        // Best effort: if the connection is gone there is nothing to cancel.
        let _ = shared.enqueue(
            &Request::WatchCancel {
                watch_id: self.watch_id,
            },
            || Pending::Ignored,
        );
    }
}

/// Reads response frames until the connection ends, dispatching each by id.
async fn read_loop(shared: Rc<Shared>, read_half: ReadHalf<TcpStream>) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, read_half);
    let mut buf = Vec::new();
    let max = shared.options.response_frame_bytes_max;
    let reason = loop {
        match codec::read_frame(&mut reader, &mut buf, max).await {
            Ok(true) => match codec::decode_response(&buf) {
                Ok((request_id, response)) => shared.dispatch(request_id, response),
                Err(error) => break format!("malformed response from the server: {error}"),
            },
            Ok(false) => break "the server closed the connection".to_string(),
            Err(error) => break error.to_string(),
        }
    };
    shared.fail(reason);
}

/// Writes whatever the callers encoded, one socket write per batch, until the
/// connection fails or the client is dropped.
async fn write_loop(shared: Rc<Shared>, mut write_half: WriteHalf<TcpStream>) {
    let mut batch = Vec::new();
    loop {
        let ready = futures_lite::future::poll_fn(|cx| {
            let mut state = shared.state.borrow_mut();
            if state.closed.is_some() {
                return Poll::Ready(false);
            }
            if state.outgoing.is_empty() {
                state.writer_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            std::mem::swap(&mut state.outgoing, &mut batch);
            Poll::Ready(true)
        })
        .await;
        if !ready {
            let _ = write_half.close().await;
            return;
        }
        if let Err(error) = write_half.write_all(&batch).await {
            shared.fail(format!("writing to the server failed: {error}"));
            return;
        }
        batch.clear();
    }
}
