//! The HTTP JSON gateway: etcd's `POST /v3/...` endpoints over the gRPC service traits.
//!
//! [`router`] turns one value implementing every generated server trait (KV, Watch,
//! Lease, Cluster, Maintenance, Auth, Lock, Election) into an axum [`Router`] that
//! answers the way etcd 3.4's grpc-gateway does, so that curl scripts and HTTP
//! clients written against etcd work unchanged. The gateway only translates: JSON in,
//! a call on the service, JSON out. It holds no state of its own.
//!
//! What etcd 3.4 does, and so what this router does (each point checked against a
//! real etcd 3.4.23; the doc of the `tests` module, json/tests.rs, lists the commands):
//!
//! * Every endpoint is a POST whose body is one request message in the proto3 JSON
//!   mapping (see [`super::pb`]). Only the first JSON value of the body is read;
//!   whatever follows it is ignored. An empty body, or `null`, is the default
//!   message; a field set to `null` is not set; unknown fields are ignored.
//!   `/v3beta/...` is an alias of every `/v3/...` path.
//! * Success: HTTP 200, `Content-Type: application/json`, the response message.
//! * Failure of a unary call, or a body that does not parse: the gRPC code mapped to
//!   an HTTP status by [`http_status`] (InvalidArgument 400, NotFound 404,
//!   FailedPrecondition 412, Unavailable 503, ...) and the body
//!   `{"error":"<message>","message":"<message>","code":<grpc code>}`.
//! * Streams (`/v3/watch`, `/v3/lease/keepalive`, `/v3/maintenance/snapshot`,
//!   `/v3/election/observe`): each response message is written as
//!   `{"result":<message>}` followed by `\n`, flushed as it comes. An error ends the
//!   stream with `{"error":{"grpc_code":N,"http_code":H,"message":"...",
//!   "http_status":"..."}}` (no newline); if it comes before the first message, H is
//!   also the response's status. The status line is only sent with the first
//!   message or error, as etcd does.
//! * The two bidirectional streams (watch, keep-alive) read the body as a sequence of
//!   JSON requests, each passed to the service as it arrives (a client may keep the
//!   body open and send more watch requests later). When the body ends or stops
//!   parsing, the service sees its request stream end. A first request that does not
//!   parse fails with HTTP 500 and code 2 (Unknown), unlike the unary endpoints (400,
//!   code 3): that is etcd's behaviour, kept.
//! * When the client goes away, hyper drops the response body and with it the
//!   service's response stream, which is how the service learns to cancel watches.
//! * `Authorization: <token>` reaches the service as gRPC metadata `authorization`
//!   (where etcd looks for the token of a gateway request), and each
//!   `Grpc-Metadata-<key>` header as metadata `<key>`. Response metadata comes back
//!   as `Grpc-Metadata-<key>` headers.
//! * A path that is not an endpoint answers 404 `Not Found`, a method other than
//!   POST 405 `Method Not Allowed`, both as plain text like Go's `http.Error`.
//!
//! Differences from etcd, on purpose or for now:
//!
//! * Error messages about JSON that does not parse come from serde_json, not from
//!   Go's encoding/json: same status and shape, different words.
//! * `/v3/maintenance/hash` is Hash (etcd 3.4 routes both Hash and HashKV there and
//!   Hash wins); HashKV is at `/v3/maintenance/hashkv` (etcd 3.5's path), and
//!   AuthStatus at `/v3/auth/status` (3.5).
//! * A request body larger than the limit given to [`router_with_body_limit`]
//!   fails with ResourceExhausted (HTTP 429) before the service sees it; etcd's
//!   gateway would pass it on and the gRPC server would refuse it with the same code.
//! * No websocket upgrade on the streaming endpoints, no `X-HTTP-Method-Override`,
//!   no CORS headers (etcd adds those outside its gateway, for every path).

use std::convert::Infallible;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any, post, MethodRouter};
use axum::Router;
use futures_lite::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::codec::Codec;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status};

use super::pb::etcdserverpb::auth_server::Auth;
use super::pb::etcdserverpb::cluster_server::Cluster;
use super::pb::etcdserverpb::kv_server::Kv;
use super::pb::etcdserverpb::lease_server::Lease;
use super::pb::etcdserverpb::maintenance_server::Maintenance;
use super::pb::etcdserverpb::watch_server::Watch;
use super::pb::v3electionpb::election_server::Election;
use super::pb::v3lockpb::lock_server::Lock;

/// Largest request body accepted by [`router`], in bytes: room for a value of etcd's
/// default `--max-request-bytes` (1.5 MiB) after base64 (x4/3) and JSON around it.
/// A server started with a larger `--max-request-bytes` passes its own limit to
/// [`router_with_body_limit`].
pub const REQUEST_BODY_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// Path prefixes served: etcd 3.4 rewrites `/v3beta/` to `/v3/`.
const PATH_PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// Everything the gateway calls, as one bound.
///
/// One value serves every service, because corekv's implementation of them is one
/// type around one shard handle; a test can implement the traits on a fake.
pub trait EtcdServices:
    Kv + Watch + Lease + Cluster + Maintenance + Auth + Lock + Election + Send + Sync + 'static
{
}

impl<S> EtcdServices for S where
    S: Kv + Watch + Lease + Cluster + Maintenance + Auth + Lock + Election + Send + Sync + 'static
{
}

/// The gateway's routes over `service`, with [`REQUEST_BODY_BYTES_MAX_DEFAULT`].
pub fn router<S: EtcdServices>(service: Arc<S>) -> Router {
    router_with_body_limit(service, REQUEST_BODY_BYTES_MAX_DEFAULT)
}

/// Adds `prefix + path` routes to `router`, each calling one method of the service:
/// `kind "path" => Trait::method,` where kind is `unary`, `server_stream` or
/// `bidi_stream`.
macro_rules! gateway_routes {
    ($router:ident, $routes:ident, $prefix:ident; $($kind:ident $path:literal => $service:ident :: $method:ident,)*) => {
        $(
            $router = $router.route(
                &format!("{}{}", $prefix, $path),
                $routes.$kind(|s, r| async move { $service::$method(&*s, r).await }),
            );
        )*
    };
}

/// The gateway's routes over `service`; a request body (or, on the bidirectional
/// streams, one request in it) above `body_bytes_max` bytes is refused.
pub fn router_with_body_limit<S: EtcdServices>(service: Arc<S>, body_bytes_max: usize) -> Router {
    let routes = Routes {
        service,
        body_bytes_max,
    };
    let mut router = Router::new();
    for prefix in PATH_PREFIXES {
        gateway_routes! { router, routes, prefix;
            // KV
            unary "/kv/range" => Kv::range,
            unary "/kv/put" => Kv::put,
            unary "/kv/deleterange" => Kv::delete_range,
            unary "/kv/txn" => Kv::txn,
            unary "/kv/compaction" => Kv::compact,
            // Watch
            bidi_stream "/watch" => Watch::watch,
            // Lease
            unary "/lease/grant" => Lease::lease_grant,
            unary "/lease/revoke" => Lease::lease_revoke,
            unary "/kv/lease/revoke" => Lease::lease_revoke,
            bidi_stream "/lease/keepalive" => Lease::lease_keep_alive,
            unary "/lease/timetolive" => Lease::lease_time_to_live,
            unary "/kv/lease/timetolive" => Lease::lease_time_to_live,
            unary "/lease/leases" => Lease::lease_leases,
            unary "/kv/lease/leases" => Lease::lease_leases,
            // Cluster
            unary "/cluster/member/add" => Cluster::member_add,
            unary "/cluster/member/remove" => Cluster::member_remove,
            unary "/cluster/member/update" => Cluster::member_update,
            unary "/cluster/member/list" => Cluster::member_list,
            unary "/cluster/member/promote" => Cluster::member_promote,
            // Maintenance
            unary "/maintenance/alarm" => Maintenance::alarm,
            unary "/maintenance/status" => Maintenance::status,
            unary "/maintenance/defragment" => Maintenance::defragment,
            unary "/maintenance/hash" => Maintenance::hash,
            unary "/maintenance/hashkv" => Maintenance::hash_kv,
            server_stream "/maintenance/snapshot" => Maintenance::snapshot,
            unary "/maintenance/transfer-leadership" => Maintenance::move_leader,
            // Auth
            unary "/auth/enable" => Auth::auth_enable,
            unary "/auth/disable" => Auth::auth_disable,
            unary "/auth/status" => Auth::auth_status,
            unary "/auth/authenticate" => Auth::authenticate,
            unary "/auth/user/add" => Auth::user_add,
            unary "/auth/user/get" => Auth::user_get,
            unary "/auth/user/list" => Auth::user_list,
            unary "/auth/user/delete" => Auth::user_delete,
            unary "/auth/user/changepw" => Auth::user_change_password,
            unary "/auth/user/grant" => Auth::user_grant_role,
            unary "/auth/user/revoke" => Auth::user_revoke_role,
            unary "/auth/role/add" => Auth::role_add,
            unary "/auth/role/get" => Auth::role_get,
            unary "/auth/role/list" => Auth::role_list,
            unary "/auth/role/delete" => Auth::role_delete,
            unary "/auth/role/grant" => Auth::role_grant_permission,
            unary "/auth/role/revoke" => Auth::role_revoke_permission,
            // Lock
            unary "/lock/lock" => Lock::lock,
            unary "/lock/unlock" => Lock::unlock,
            // Election
            unary "/election/campaign" => Election::campaign,
            unary "/election/proclaim" => Election::proclaim,
            unary "/election/leader" => Election::leader,
            server_stream "/election/observe" => Election::observe,
            unary "/election/resign" => Election::resign,
        }
        // Anything else under the prefix.
        router = router
            .route(&format!("{prefix}/"), any(not_found))
            .route(&format!("{prefix}/{{*rest}}"), any(not_found));
    }
    router
}

/// The shared parts of every route.
struct Routes<S> {
    service: Arc<S>,
    body_bytes_max: usize,
}

impl<S: Send + Sync + 'static> Routes<S> {
    /// A unary call: one request in, one response out.
    fn unary<Req, Resp, F, Fut>(&self, call: F) -> MethodRouter
    where
        Req: DeserializeOwned + Default + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Arc<S>, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
    {
        let service = Arc::clone(&self.service);
        let body_bytes_max = self.body_bytes_max;
        post(move |headers: HeaderMap, body: Body| {
            let service = Arc::clone(&service);
            let call = call.clone();
            async move {
                let mut reader = JsonReader::new(body, body_bytes_max);
                let message = match reader.next_message::<Req>().await {
                    Ok(message) => message.unwrap_or_default(),
                    Err(error) => return error_response(&error.to_status(Code::InvalidArgument)),
                };
                match call(service, grpc_request(&headers, message)).await {
                    Ok(response) => message_response(response),
                    Err(status) => error_response(&status),
                }
            }
        })
        .fallback(method_not_allowed)
    }

    /// A server stream: one request in, a stream of responses out.
    fn server_stream<Req, Resp, St, F, Fut>(&self, call: F) -> MethodRouter
    where
        Req: DeserializeOwned + Default + Send + 'static,
        Resp: Serialize + Send + 'static,
        St: Stream<Item = Result<Resp, Status>> + Send + 'static,
        F: Fn(Arc<S>, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<St>, Status>> + Send + 'static,
    {
        let service = Arc::clone(&self.service);
        let body_bytes_max = self.body_bytes_max;
        post(move |headers: HeaderMap, body: Body| {
            let service = Arc::clone(&service);
            let call = call.clone();
            async move {
                let mut reader = JsonReader::new(body, body_bytes_max);
                let message = match reader.next_message::<Req>().await {
                    Ok(message) => message.unwrap_or_default(),
                    Err(error) => return error_response(&error.to_status(Code::InvalidArgument)),
                };
                stream_response(call(service, grpc_request(&headers, message)).await).await
            }
        })
        .fallback(method_not_allowed)
    }

    /// A bidirectional stream: the body's JSON requests in, a stream of responses out.
    fn bidi_stream<Req, Resp, St, F, Fut>(&self, call: F) -> MethodRouter
    where
        Req: prost::Message + DeserializeOwned + Default + Send + 'static,
        Resp: prost::Message + Serialize + Send + 'static,
        St: Stream<Item = Result<Resp, Status>> + Send + 'static,
        F: Fn(Arc<S>, tonic::Request<tonic::Streaming<Req>>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<St>, Status>> + Send + 'static,
    {
        let service = Arc::clone(&self.service);
        let body_bytes_max = self.body_bytes_max;
        post(move |headers: HeaderMap, body: Body| {
            let service = Arc::clone(&service);
            let call = call.clone();
            async move {
                let mut reader = JsonReader::new(body, body_bytes_max);
                // etcd's gateway reads the first request before it opens the stream
                // and fails the whole call if that one does not parse.
                let first = match reader.next_message::<Req>().await {
                    Ok(first) => first,
                    Err(error) => return error_response(&error.to_status(Code::Unknown)),
                };
                let requests = request_stream::<Req, Resp>(first, reader, body_bytes_max);
                stream_response(call(service, grpc_request(&headers, requests)).await).await
            }
        })
        .fallback(method_not_allowed)
    }
}

/// The requests of a bidirectional stream as tonic's server sees them: `first`, then
/// each further JSON value of the body, until the body ends or a value fails to parse
/// (etcd's gateway then closes the request stream the same way).
///
/// The messages are encoded in gRPC's framing and decoded again by tonic, because
/// `tonic::Streaming` can only be built over a body; requests are small and few.
fn request_stream<Req, Resp>(
    first: Option<Req>,
    reader: JsonReader,
    body_bytes_max: usize,
) -> tonic::Streaming<Req>
where
    Req: prost::Message + DeserializeOwned + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let frames =
        futures_lite::stream::unfold((first, Some(reader)), |(pending, reader)| async move {
            let mut reader = reader?;
            let message = match pending {
                Some(message) => message,
                None => reader.next_message::<Req>().await.ok()??,
            };
            Some((
                Ok::<_, Infallible>(grpc_frame(&message)),
                (None, Some(reader)),
            ))
        });
    let decoder = tonic_prost::ProstCodec::<Resp, Req>::default().decoder();
    tonic::Streaming::new_request(
        decoder,
        Body::from_stream(frames),
        None,
        Some(body_bytes_max),
    )
}

/// One message in gRPC's length-prefixed framing: uncompressed flag, big-endian
/// length, protobuf bytes.
fn grpc_frame<M: prost::Message>(message: &M) -> Bytes {
    let length = message.encoded_len();
    let mut frame = Vec::with_capacity(5 + length);
    frame.push(0);
    frame.extend_from_slice(
        &u32::try_from(length)
            .expect("a message decoded from a body within the limit fits in u32")
            .to_be_bytes(),
    );
    message
        .encode(&mut frame)
        .expect("a Vec grows to fit any message");
    Bytes::from(frame)
}

/// The tonic request for `message`, with the gRPC metadata etcd's gateway derives from
/// the HTTP headers.
fn grpc_request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    for (name, value) in headers {
        let key = if name.as_str() == "authorization" {
            "authorization"
        } else if let Some(key) = name.as_str().strip_prefix("grpc-metadata-") {
            key
        } else {
            continue;
        };
        // Binary (`-bin`) keys and values that are not valid metadata are dropped.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.append(key, value);
        }
    }
    request
}

/// The gRPC status → HTTP status mapping of etcd 3.4's grpc-gateway.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The body of a failed unary call. Go's JSON marshalling of the gateway leaves out
/// empty fields, so an empty message leaves out both `error` and `message`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    code: i32,
}

/// The last chunk of a stream that failed.
#[derive(Serialize)]
struct StreamErrorChunk<'a> {
    error: StreamError<'a>,
}

#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    http_status: &'a str,
}

/// HTTP 200 with `response` as JSON.
fn message_response<T: Serialize>(response: tonic::Response<T>) -> Response {
    let (metadata, message, _) = response.into_parts();
    match serde_json::to_vec(&message) {
        Ok(json) => json_response(StatusCode::OK, &metadata, Body::from(json)),
        Err(error) => error_response(&Status::unknown(error.to_string())),
    }
}

/// A failed unary call, as etcd's gateway writes it.
fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    };
    let json = serde_json::to_vec(&body).expect("an error body of strings and an integer");
    json_response(
        http_status(status.code()),
        status.metadata(),
        Body::from(json),
    )
}

/// The chunk that ends a failed stream.
fn stream_error_chunk(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let chunk = StreamErrorChunk {
        error: StreamError {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or_default(),
        },
    };
    Bytes::from(serde_json::to_vec(&chunk).expect("an error chunk of strings and integers"))
}

/// One `{"result":...}` line of a stream.
fn stream_result_chunk<T: Serialize>(message: &T) -> Result<Bytes, Status> {
    let json = serde_json::to_vec(message).map_err(|error| Status::unknown(error.to_string()))?;
    let mut chunk = Vec::with_capacity(json.len() + 12);
    chunk.extend_from_slice(b"{\"result\":");
    chunk.extend_from_slice(&json);
    chunk.extend_from_slice(b"}\n");
    Ok(Bytes::from(chunk))
}

/// The HTTP response of a streaming call. Waits for the first message (or error) so
/// that an early error can set the status, as etcd's gateway does.
async fn stream_response<T, St>(called: Result<tonic::Response<St>, Status>) -> Response
where
    T: Serialize + Send + 'static,
    St: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let (metadata, stream, _) = match called {
        Ok(response) => response.into_parts(),
        Err(status) => {
            let chunk = stream_error_chunk(&status);
            return json_response(
                http_status(status.code()),
                status.metadata(),
                Body::from(chunk),
            );
        }
    };
    let mut lines = JsonLines {
        stream: Some(Box::pin(stream)),
    };
    match lines.next().await {
        None => json_response(StatusCode::OK, &metadata, Body::empty()),
        Some(Err(status)) => {
            let chunk = stream_error_chunk(&status);
            json_response(http_status(status.code()), &metadata, Body::from(chunk))
        }
        Some(Ok(first)) => {
            let rest = lines.map(|line| {
                Ok::<_, Infallible>(match line {
                    Ok(chunk) => chunk,
                    Err(status) => stream_error_chunk(&status),
                })
            });
            let body = futures_lite::stream::once(Ok::<_, Infallible>(first)).chain(rest);
            json_response(StatusCode::OK, &metadata, Body::from_stream(body))
        }
    }
}

/// A service's response stream as JSON lines. Yields each message's chunk, or the
/// status that ended the stream (after which it yields nothing). Dropping it drops
/// the service's stream.
struct JsonLines<T> {
    stream: Option<ResponseStream<T>>,
}

/// A service's response stream, boxed.
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl<T: Serialize> Stream for JsonLines<T> {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let line = match stream.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => None,
            Poll::Ready(Some(Ok(message))) => Some(stream_result_chunk(&message)),
            Poll::Ready(Some(Err(status))) => Some(Err(status)),
        };
        if !matches!(line, Some(Ok(_))) {
            self.stream = None;
        }
        Poll::Ready(line)
    }
}

/// A response with a JSON body and the given gRPC metadata as `Grpc-Metadata-*`
/// headers.
fn json_response(status: StatusCode, metadata: &MetadataMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for entry in metadata.iter() {
        if let KeyAndValueRef::Ascii(key, value) = entry {
            let name = HeaderName::try_from(format!("grpc-metadata-{}", key.as_str()));
            let value = HeaderValue::from_bytes(value.as_encoded_bytes());
            if let (Ok(name), Ok(value)) = (name, value) {
                headers.append(name, value);
            }
        }
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn not_found() -> Response {
    plain_text_error(StatusCode::NOT_FOUND)
}

async fn method_not_allowed() -> Response {
    plain_text_error(StatusCode::METHOD_NOT_ALLOWED)
}

/// What Go's `http.Error` writes: the status text and a newline, as plain text.
fn plain_text_error(status: StatusCode) -> Response {
    let text = format!("{}\n", status.canonical_reason().unwrap_or_default());
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// One request message from its JSON. Like Go's jsonpb, and unlike the generated
/// serde code, takes `null` for "not set", both for the whole message and for a
/// field; only values that contain the text `null` pay for the detour through
/// `serde_json::Value` that this needs.
fn parse_message<T: DeserializeOwned + Default>(json: &[u8]) -> Result<T, serde_json::Error> {
    if !json.windows(4).any(|window| window == b"null") {
        return serde_json::from_slice(json);
    }
    let mut value: serde_json::Value = serde_json::from_slice(json)?;
    if value.is_null() {
        return Ok(T::default());
    }
    remove_null_fields(&mut value);
    serde_json::from_value(value)
}

/// Removes every object member whose value is `null`, at any depth.
fn remove_null_fields(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(remove_null_fields);
        }
        serde_json::Value::Array(elements) => elements.iter_mut().for_each(remove_null_fields),
        _ => {}
    }
}

/// Why a request body gave no message.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    /// A JSON value that does not parse as the request message.
    Json(String),
    /// The body ended inside a JSON value.
    UnexpectedEof,
    /// One JSON value grew past the limit before it ended.
    TooLarge { limit_bytes: usize },
    /// The connection failed while the body was read.
    Read(String),
}

impl BodyError {
    /// The status to answer with; a body that does not parse gets `parse_code`.
    fn to_status(&self, parse_code: Code) -> Status {
        match self {
            BodyError::Json(message) => Status::new(parse_code, message.clone()),
            // Go's encoding/json says exactly this.
            BodyError::UnexpectedEof => Status::new(parse_code, "unexpected EOF"),
            BodyError::TooLarge { limit_bytes } => Status::resource_exhausted(format!(
                "gateway: request body larger than the limit of {limit_bytes} bytes"
            )),
            BodyError::Read(message) => Status::new(parse_code, message.clone()),
        }
    }
}

/// Reads a request body as a sequence of JSON values, each as soon as its last byte
/// has arrived, like Go's `json.Decoder` over the body.
///
/// Objects and arrays are delimited by a scan that tracks nesting and strings, so each
/// byte is looked at once however the body is split; serde_json then parses the
/// complete value once. Anything else (a scalar, garbage) is handed to serde_json as
/// is, which either finds one value or reports the error etcd would report.
struct JsonReader {
    body: BodyDataStream,
    body_ended: bool,
    /// Unconsumed bytes; the value being read starts at index 0.
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` that belong to values already returned.
    consumed: usize,
    scan: ValueScan,
    limit_bytes: usize,
}

/// The state of the scan for the end of an object or array.
#[derive(Debug, Default)]
struct ValueScan {
    /// Index in the buffer of the next byte to look at.
    position: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl ValueScan {
    /// The end (exclusive) of the object or array that starts at `bytes[0]`, if it has
    /// arrived.
    fn end(&mut self, bytes: &[u8]) -> Option<usize> {
        while self.position < bytes.len() {
            let byte = bytes[self.position];
            self.position += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(self.position);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

impl JsonReader {
    fn new(body: Body, limit_bytes: usize) -> JsonReader {
        JsonReader {
            body: body.into_data_stream(),
            body_ended: false,
            buffer: Vec::new(),
            consumed: 0,
            scan: ValueScan::default(),
            limit_bytes,
        }
    }

    /// The next JSON value parsed as `T`; `None` once the body has ended (an empty
    /// body has no value).
    async fn next_message<T: DeserializeOwned + Default>(
        &mut self,
    ) -> Result<Option<T>, BodyError> {
        let Some(value) = self.next_value().await? else {
            return Ok(None);
        };
        parse_message(&self.buffer[value])
            .map(Some)
            .map_err(|error| BodyError::Json(error.to_string()))
    }

    /// The byte range in `buffer` of the next JSON value (or of the garbage where one
    /// was expected), valid until the next call.
    async fn next_value(&mut self) -> Result<Option<Range<usize>>, BodyError> {
        self.buffer.drain(..self.consumed);
        self.consumed = 0;
        self.scan = ValueScan::default();
        loop {
            let whitespace = self
                .buffer
                .iter()
                .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            self.buffer.drain(..whitespace);
            if let Some(&first) = self.buffer.first() {
                let end = if first == b'{' || first == b'[' {
                    self.scan.end(&self.buffer)
                } else {
                    self.scalar_end()?
                };
                if let Some(end) = end {
                    if end > self.limit_bytes {
                        return Err(BodyError::TooLarge {
                            limit_bytes: self.limit_bytes,
                        });
                    }
                    self.consumed = end;
                    return Ok(Some(0..end));
                }
            }
            if self.body_ended {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(BodyError::UnexpectedEof)
                };
            }
            if self.buffer.len() > self.limit_bytes {
                return Err(BodyError::TooLarge {
                    limit_bytes: self.limit_bytes,
                });
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(BodyError::Read(error.to_string())),
                None => self.body_ended = true,
            }
        }
    }

    /// For a value that is not an object or array: where it ends, `None` if more bytes
    /// may complete it, or the whole buffer if it is not JSON (the typed parse then
    /// reports why).
    fn scalar_end(&self) -> Result<Option<usize>, BodyError> {
        let mut values =
            serde_json::Deserializer::from_slice(&self.buffer).into_iter::<serde::de::IgnoredAny>();
        match values.next() {
            Some(Ok(_)) => Ok(Some(values.byte_offset())),
            Some(Err(error)) if error.is_eof() => {
                if self.body_ended {
                    Err(BodyError::UnexpectedEof)
                } else {
                    Ok(None)
                }
            }
            Some(Err(_)) => Ok(Some(self.buffer.len())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
