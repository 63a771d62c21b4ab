//! The client URLs' front service, with a fast path for the hot unary gRPC calls.
//!
//! Every request on a client connection reaches [`ClientService`]. A plain unary call
//! of KV Range, Put, DeleteRange or Txn, or of Lease Grant, Revoke or TimeToLive, is
//! served here directly: the body is collected, its gRPC messages are unframed and
//! decoded with prost, the same `Gateway::unary_*` function the tonic service calls
//! answers it, and the reply goes back as one gRPC message and `grpc-status: 0`
//! trailers. Everything else (other methods, streams, HTTP/1.1, the JSON gateway,
//! `/health`, compressed calls) goes to the axum router unchanged. The fast path saves
//! the router, the middleware, tonic's per-call boxing and its codec buffers: the
//! layers a profile of `corekv-bench put --protocol etcd-grpc` showed costing about
//! 6% of the server's CPU, beside the copies they make.
//!
//! Invariant: a call answered here gets the answer, byte for byte, that the router
//! (tonic) gives the same request: the same headers, message framing, trailers, and
//! for every failure the same status code and message, as a trailers-only response
//! built by tonic's own `Status::into_http`. Reading the body follows tonic's unary
//! rules: messages over the decoding limit (`--max-request-bytes` plus
//! [`GRPC_OVERHEAD_BYTES`](super::serve::GRPC_OVERHEAD_BYTES)) fail as soon as their
//! prefix arrives, every message in the body is decoded in turn and the first one is
//! the request, bytes left over at the end of the body fail, and a call is counted in
//! the gRPC metrics as the router's middleware counts it. `unary/tests.rs` sends the
//! same requests both ways and compares the answers.
//!
//! Never: answer a request the router would answer differently. When in doubt, a
//! request is not "plain" and falls through.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, Version};
use axum::Router;
use bytes::{BufMut, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::service::TowerToHyperService;
use prost::Message;
use tonic::{Code, Status};

use super::serve::{router, GRPC_OVERHEAD_BYTES};
use super::service::Gateway;
use crate::server::metrics::Metrics;

/// Bytes before each gRPC message: a compressed flag and a big-endian length.
const MESSAGE_PREFIX_BYTES: usize = 5;

/// The unary methods served by the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnaryMethod {
    Range,
    Put,
    DeleteRange,
    Txn,
    LeaseGrant,
    LeaseRevoke,
    LeaseTimeToLive,
}

impl UnaryMethod {
    const ALL: [UnaryMethod; 7] = [
        UnaryMethod::Range,
        UnaryMethod::Put,
        UnaryMethod::DeleteRange,
        UnaryMethod::Txn,
        UnaryMethod::LeaseGrant,
        UnaryMethod::LeaseRevoke,
        UnaryMethod::LeaseTimeToLive,
    ];

    fn path(self) -> &'static str {
        match self {
            UnaryMethod::Range => "/etcdserverpb.KV/Range",
            UnaryMethod::Put => "/etcdserverpb.KV/Put",
            UnaryMethod::DeleteRange => "/etcdserverpb.KV/DeleteRange",
            UnaryMethod::Txn => "/etcdserverpb.KV/Txn",
            UnaryMethod::LeaseGrant => "/etcdserverpb.Lease/LeaseGrant",
            UnaryMethod::LeaseRevoke => "/etcdserverpb.Lease/LeaseRevoke",
            UnaryMethod::LeaseTimeToLive => "/etcdserverpb.Lease/LeaseTimeToLive",
        }
    }

    fn from_path(path: &str) -> Option<UnaryMethod> {
        UnaryMethod::ALL
            .into_iter()
            .find(|method| method.path() == path)
    }

    /// The method of a plain unary gRPC call the fast path serves: HTTP/2, POST, one
    /// of [`UnaryMethod::ALL`], gRPC's protobuf content type, no compression.
    fn of_plain_call<B>(request: &Request<B>) -> Option<UnaryMethod> {
        if request.version() != Version::HTTP_2 {
            return None;
        }
        let headers = request.headers();
        UnaryMethod::of_plain_parts(
            request.method().as_str().as_bytes(),
            request.uri().path().as_bytes(),
            headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
            headers.get("grpc-encoding").map(HeaderValue::as_bytes),
        )
    }

    /// [`UnaryMethod::of_plain_call`] from an HTTP/2 request's parts: its method, path,
    /// first content type and first `grpc-encoding`.
    pub(crate) fn of_plain_parts(
        method: &[u8],
        path: &[u8],
        content_type: Option<&[u8]>,
        encoding: Option<&[u8]>,
    ) -> Option<UnaryMethod> {
        if method != Method::POST.as_str().as_bytes() {
            return None;
        }
        let content_type = content_type?;
        if content_type != b"application/grpc" && content_type != b"application/grpc+proto" {
            return None;
        }
        if encoding.is_some_and(|encoding| encoding != b"identity") {
            return None;
        }
        UnaryMethod::from_path(std::str::from_utf8(path).ok()?)
    }
}

/// The service behind every client connection: the fast path for plain unary calls
/// (see the module docs), the router for everything else. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gateway: Gateway,
    router: TowerToHyperService<Router>,
    /// Whether plain unary calls take the fast path (tests turn it off to compare).
    fast_unary: bool,
    /// The largest gRPC message a request may carry (tonic's decoding limit).
    message_bytes_max: usize,
    /// Each [`UnaryMethod`]'s index in the gRPC metrics, in [`UnaryMethod::ALL`] order.
    metric_ids: [usize; UnaryMethod::ALL.len()],
}

impl ClientService {
    /// Every route of the client URLs, plain unary calls on the fast path.
    pub fn new(gateway: Gateway) -> ClientService {
        ClientService::build(gateway, true)
    }

    /// Every route of the client URLs, every request through the router (the
    /// behaviour the fast path must match).
    pub fn router_only(gateway: Gateway) -> ClientService {
        ClientService::build(gateway, false)
    }

    fn build(gateway: Gateway, fast_unary: bool) -> ClientService {
        let metric_ids = UnaryMethod::ALL.map(|method| {
            Metrics::grpc_method(method.path()).expect("every fast-path method has metrics")
        });
        ClientService {
            inner: Arc::new(Inner {
                router: TowerToHyperService::new(router(gateway.clone())),
                message_bytes_max: gateway.config.request_bytes_max + GRPC_OVERHEAD_BYTES,
                gateway,
                fast_unary,
                metric_ids,
            }),
        }
    }
}

/// What [`ClientService`] answers.
pub type ClientFuture =
    Pin<Box<dyn Future<Output = Result<Response<ClientBody>, Infallible>> + Send>>;

impl<B> hyper::service::Service<Request<B>> for ClientService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ClientBody>;
    type Error = Infallible;
    type Future = ClientFuture;

    fn call(&self, request: Request<B>) -> ClientFuture {
        let fast = if self.inner.fast_unary {
            UnaryMethod::of_plain_call(&request)
        } else {
            None
        };
        match fast {
            Some(method) => {
                let inner = Arc::clone(&self.inner);
                Box::pin(async move { Ok(inner.serve_unary(method, request.into_body()).await) })
            }
            None => {
                let routed = self.inner.router.call(request);
                Box::pin(async move {
                    routed
                        .await
                        .map(|response| response.map(ClientBody::Router))
                })
            }
        }
    }
}

impl Inner {
    /// One unary call on the fast path, counted as the router's middleware counts it.
    async fn serve_unary<B>(&self, method: UnaryMethod, body: B) -> Response<ClientBody>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.answer(method, body).await {
            UnaryAnswer::Reply(framed) => reply_response(framed),
            UnaryAnswer::Failed(response) => *response,
        }
    }

    /// The answer to one unary call, counted as the router's middleware counts it.
    async fn answer<B>(&self, method: UnaryMethod, body: B) -> UnaryAnswer
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let metric = self.metric_ids[method as usize];
        let started = Instant::now();
        self.gateway.metrics.grpc_started(metric);
        let limit = self.message_bytes_max;
        let gateway = &self.gateway;
        let answer = match method {
            UnaryMethod::Range => unary(body, limit, |r| gateway.unary_range(r)).await,
            UnaryMethod::Put => unary(body, limit, |r| gateway.unary_put(r)).await,
            UnaryMethod::DeleteRange => unary(body, limit, |r| gateway.unary_delete_range(r)).await,
            UnaryMethod::Txn => unary(body, limit, |r| gateway.unary_txn(r)).await,
            UnaryMethod::LeaseGrant => unary(body, limit, |r| gateway.unary_lease_grant(r)).await,
            UnaryMethod::LeaseRevoke => unary(body, limit, |r| gateway.unary_lease_revoke(r)).await,
            UnaryMethod::LeaseTimeToLive => {
                unary(body, limit, |r| gateway.unary_lease_time_to_live(r)).await
            }
        };
        let ok = match &answer {
            UnaryAnswer::Reply(_) => true,
            UnaryAnswer::Failed(response) => !failed(response.headers()),
        };
        self.gateway
            .metrics
            .grpc_handled(metric, ok, started.elapsed());
        answer
    }
}

impl ClientService {
    /// Serves a plain unary call of `method` (see [`UnaryMethod::of_plain_parts`]) on
    /// the fast path, whatever `fast_unary` says: the HTTP/2 server asks only when
    /// [`ClientService::takes_fast_path`] said yes.
    pub(crate) async fn answer_unary<B>(&self, method: UnaryMethod, body: B) -> UnaryAnswer
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.inner.answer(method, body).await
    }

    /// Whether plain unary calls take the fast path.
    pub(crate) fn takes_fast_path(&self) -> bool {
        self.inner.fast_unary
    }
}

/// A fast-path answer.
#[derive(Debug)]
pub(crate) enum UnaryAnswer {
    /// Success: the reply as one framed gRPC message. The response is
    /// [`REPLY_HEADERS`], this, then [`REPLY_TRAILERS`].
    Reply(Bytes),
    /// Anything else, as the whole response tonic would give.
    Failed(Box<Response<ClientBody>>),
}

/// The headers of a successful fast-path answer (besides `:status: 200`).
pub(crate) const REPLY_HEADERS: [(&str, &str); 1] = [("content-type", "application/grpc")];
/// Its trailers.
pub(crate) const REPLY_TRAILERS: [(&str, &str); 1] = [("grpc-status", "0")];

/// Whether response headers carry a gRPC failure (a trailers-only answer): how the
/// gRPC metrics tell a failed call from a successful one.
pub(crate) fn failed(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() != b"0")
}

/// Reads the request message from `body`, hands it to `handle` and frames its answer.
async fn unary<B, M, R, F, Fut>(body: B, message_bytes_max: usize, handle: F) -> UnaryAnswer
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    M: Message + Default,
    R: Message,
    F: FnOnce(M) -> Fut,
    Fut: Future<Output = Result<R, Status>>,
{
    let request = match read_message::<B, M>(body, message_bytes_max).await {
        Ok(request) => request,
        Err(status) => return UnaryAnswer::Failed(Box::new(status.into_http())),
    };
    match handle(request).await {
        Ok(reply) => match framed_reply(&reply) {
            Ok(framed) => UnaryAnswer::Reply(framed),
            Err(failed) => UnaryAnswer::Failed(failed),
        },
        Err(status) => UnaryAnswer::Failed(Box::new(status.into_http())),
    }
}

/// The request message of a unary call: the first of the body's gRPC messages. As
/// tonic reads a unary request, each message is checked as soon as its prefix arrives
/// and decoded as soon as it is whole, later messages are decoded and dropped, the
/// body ends at its end or its trailers, and a body cancelled by the client ends it
/// too. The errors are tonic's, word for word (clients see them today).
async fn read_message<B, M>(body: B, message_bytes_max: usize) -> Result<M, Status>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    M: Message + Default,
{
    let mut body = pin!(body);
    let mut chunks = Chunks::default();
    // The length of the message whose prefix was read, while its bytes are awaited.
    let mut awaited: Option<usize> = None;
    let mut first: Option<M> = None;
    loop {
        loop {
            let length = match awaited {
                Some(length) => length,
                None => match chunks.take_prefix() {
                    Some(prefix) => check_prefix(prefix, message_bytes_max)?,
                    None => break,
                },
            };
            if chunks.len < length {
                awaited = Some(length);
                break;
            }
            awaited = None;
            let message = M::decode(chunks.take(length))
                .map_err(|error| Status::internal(error.to_string()))?;
            if first.is_none() {
                first = Some(message);
            }
        }
        match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => chunks.push(data),
                Err(frame) if frame.is_trailers() => break,
                Err(_) => {}
            },
            Some(Err(error)) => {
                let status = Status::from_error(error.into());
                if status.code() == Code::Cancelled {
                    break;
                }
                return Err(status);
            }
            None if chunks.len > 0 => {
                return Err(Status::internal("Unexpected EOF decoding stream."));
            }
            None => break,
        }
    }
    first.ok_or_else(|| Status::internal("Missing request message."))
}

/// A message prefix's length, if the message may be read.
fn check_prefix(
    prefix: [u8; MESSAGE_PREFIX_BYTES],
    message_bytes_max: usize,
) -> Result<usize, Status> {
    match prefix[0] {
        0 => {}
        // Only uncompressed calls take the fast path, so no message may be compressed.
        1 => {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ))
        }
        flag => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
            )))
        }
    }
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length > message_bytes_max {
        return Err(Status::out_of_range(format!(
            "Error, decoded message length too large: found {length} bytes, the limit is: {message_bytes_max} bytes"
        )));
    }
    Ok(length)
}

/// The reply framed as one gRPC message, or, for a reply over 4 GiB, tonic's answer:
/// the headers as a success, the trailers carrying the failure.
fn framed_reply<R: Message>(reply: &R) -> Result<Bytes, Box<Response<ClientBody>>> {
    let length = reply.encoded_len();
    match u32::try_from(length) {
        Ok(prefix_length) => {
            let mut framed = BytesMut::with_capacity(MESSAGE_PREFIX_BYTES + length);
            framed.put_u8(0);
            framed.put_u32(prefix_length);
            reply
                .encode(&mut framed)
                .expect("the buffer holds the encoded length");
            Ok(framed.freeze())
        }
        Err(_) => Err(Box::new(grpc_response(UnaryBody {
            data: None,
            trailers: Some(status_trailers(Status::resource_exhausted(format!(
                "Cannot return body with more than 4GB of data but got {length} bytes"
            )))),
        }))),
    }
}

/// A successful answer: gRPC's content type, the framed reply, `grpc-status: 0`.
fn reply_response(framed: Bytes) -> Response<ClientBody> {
    let mut trailers = HeaderMap::with_capacity(REPLY_TRAILERS.len());
    for (name, value) in REPLY_TRAILERS {
        trailers.insert(name, HeaderValue::from_static(value));
    }
    grpc_response(UnaryBody {
        data: Some(framed),
        trailers: Some(trailers),
    })
}

fn grpc_response(body: UnaryBody) -> Response<ClientBody> {
    let mut response = Response::new(ClientBody::Unary(body));
    for (name, value) in REPLY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

fn status_trailers(status: Status) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(1);
    status
        .add_header(&mut trailers)
        .expect("a status without a message or details makes valid headers");
    trailers
}

/// The body's bytes not taken yet, in the chunks they arrived in: a message within one
/// chunk is taken without a copy, one spread over several is copied once.
#[derive(Debug, Default)]
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// The next message prefix, once all of it arrived.
    fn take_prefix(&mut self) -> Option<[u8; MESSAGE_PREFIX_BYTES]> {
        if self.len < MESSAGE_PREFIX_BYTES {
            return None;
        }
        let mut prefix = [0; MESSAGE_PREFIX_BYTES];
        prefix.copy_from_slice(&self.take(MESSAGE_PREFIX_BYTES));
        Some(prefix)
    }

    /// The next `length` bytes; there must be as many.
    fn take(&mut self, length: usize) -> Bytes {
        assert!(length <= self.len, "take {length} of {} bytes", self.len);
        self.len -= length;
        let Some(front) = self.chunks.front_mut() else {
            return Bytes::new();
        };
        if length <= front.len() {
            let taken = front.split_to(length);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return taken;
        }
        let mut joined = BytesMut::with_capacity(length);
        while joined.len() < length {
            let front = self.chunks.front_mut().expect("the chunks hold len bytes");
            let wanted = (length - joined.len()).min(front.len());
            joined.extend_from_slice(&front.split_to(wanted));
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        joined.freeze()
    }
}

/// A client connection's response body: a fast-path answer or the router's.
#[derive(Debug)]
pub enum ClientBody {
    /// A unary call answered by the fast path.
    Unary(UnaryBody),
    /// Everything else.
    Router(axum::body::Body),
}

impl Default for ClientBody {
    /// No frames: what a trailers-only gRPC answer carries.
    fn default() -> ClientBody {
        ClientBody::Unary(UnaryBody::default())
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.get_mut() {
            ClientBody::Unary(body) => Poll::Ready(body.next_frame().map(Ok)),
            ClientBody::Router(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Unary(body) => body.data.is_none() && body.trailers.is_none(),
            ClientBody::Router(body) => body.is_end_stream(),
        }
    }

    /// The router's hint; for a unary answer tonic's: none for a reply (so hyper adds
    /// no content-length), zero for a trailers-only answer.
    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Unary(_) if self.is_end_stream() => SizeHint::with_exact(0),
            ClientBody::Unary(_) => SizeHint::default(),
            ClientBody::Router(body) => body.size_hint(),
        }
    }
}

/// The frames of a fast-path answer: the framed reply, then the trailers.
#[derive(Debug, Default)]
pub struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl UnaryBody {
    fn next_frame(&mut self) -> Option<Frame<Bytes>> {
        if let Some(data) = self.data.take() {
            return Some(Frame::data(data));
        }
        self.trailers.take().map(Frame::trailers)
    }
}

#[cfg(test)]
mod tests;
