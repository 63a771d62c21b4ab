//! The harness of the gRPC API tests (`tests/tests/grpc_*.rs`): one scenario, written
//! once against etcd's v3 gRPC API with tonic's generated clients, runs against a fresh
//! corekv and then against a fresh real etcd 3.4, so every assertion that holds for
//! corekv is checked to hold for the reference too.
//!
//! A scenario is an async function of an [`Api`] (a gRPC channel to the server, which
//! it also tells apart by [`Target`] where the two legitimately differ, such as the
//! version string). [`scenario`] runs it on a small tokio runtime with a deadline, for
//! corekv always and for etcd when it is installed (see [`crate::etcd::etcd_available`]).
//! [`WatchStream`] drives one bidirectional Watch stream; [`http_get`] speaks plain
//! HTTP/1.0 for `/health`, `/version` and `/metrics`.

use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use corekv_net::gateway::pb::etcdserverpb as pb;
use corekv_net::gateway::pb::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    watch_client::WatchClient,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::etcd::{etcd_available, EtcdServer, MEMBER_NAME};
use crate::{free_port, TestServer};

/// How long a whole scenario may take before it fails (each one needs a few seconds).
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stream may take to deliver the next message a scenario expects.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Which server a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// corekv, the server under test.
    Corekv,
    /// The real etcd, the reference.
    Etcd,
}

/// A running server of either kind; stopped on drop.
#[derive(Debug)]
pub struct Server {
    /// Which one it is.
    pub target: Target,
    /// `http://127.0.0.1:<port>`: gRPC and HTTP.
    pub client_url: String,
    /// The peer URL it advertises.
    pub peer_url: String,
    _corekv: Option<TestServer>,
    _etcd: Option<EtcdServer>,
}

impl Server {
    /// Starts a fresh server of `target` with `flags` added to its command line (etcd's
    /// flag names, which both take). Both are member `default` with a peer URL on a free
    /// port.
    pub fn start(target: Target, name: &str, flags: &[&str]) -> Server {
        match target {
            Target::Corekv => {
                let peer_url = format!("http://127.0.0.1:{}", free_port());
                let mut args = vec![
                    "--name",
                    MEMBER_NAME,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--listen-peer-urls",
                    &peer_url,
                ];
                args.extend_from_slice(flags);
                let server = TestServer::start(name, &args).expect("start corekv");
                Server {
                    target,
                    client_url: server.client_url().to_string(),
                    peer_url,
                    _corekv: Some(server),
                    _etcd: None,
                }
            }
            Target::Etcd => {
                let server = EtcdServer::start(name, flags).expect("start etcd");
                Server {
                    target,
                    client_url: server.client_url.clone(),
                    peer_url: server.peer_url.clone(),
                    _corekv: None,
                    _etcd: Some(server),
                }
            }
        }
    }

    /// The client URL's host:port.
    pub fn endpoint(&self) -> &str {
        self.client_url
            .strip_prefix("http://")
            .expect("client URL built as http://host:port")
    }

    /// A gRPC connection to the server.
    pub async fn connect(&self) -> Api {
        let channel = Channel::from_shared(self.client_url.clone())
            .expect("a valid URL")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|error| panic!("connect to {}: {error}", self.client_url));
        Api {
            target: self.target,
            channel,
        }
    }
}

/// The servers a scenario runs against: corekv, then etcd when installed.
/// `COREKV_GRPC_TARGET=etcd` (or `corekv`) runs only one of them, e.g. to check an
/// ignored test's expectations against the reference.
pub fn targets(test: &str) -> Vec<Target> {
    let only = std::env::var("COREKV_GRPC_TARGET").unwrap_or_default();
    let mut targets = Vec::new();
    if only != "etcd" {
        targets.push(Target::Corekv);
    }
    if only != "corekv" && etcd_available(test) {
        targets.push(Target::Etcd);
    }
    targets
}

/// Runs `body` on a fresh tokio runtime, failing if it takes longer than
/// [`SCENARIO_TIMEOUT`].
pub fn block_on<F: Future<Output = ()>>(what: &str, body: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start a tokio runtime");
    runtime.block_on(async {
        if tokio::time::timeout(SCENARIO_TIMEOUT, body).await.is_err() {
            panic!("{what} did not finish within {SCENARIO_TIMEOUT:?}");
        }
    });
}

/// Runs `body` against a fresh corekv and a fresh etcd (when installed), each started
/// with `flags`.
pub fn scenario<F, Fut>(name: &str, flags: &[&str], body: F)
where
    F: Fn(Server) -> Fut,
    Fut: Future<Output = ()>,
{
    for target in targets(name) {
        let server = Server::start(target, name, flags);
        eprintln!("{name}: against {target:?} at {}", server.client_url);
        block_on(&format!("{name} against {target:?}"), body(server));
    }
}

/// A gRPC connection to one server.
#[derive(Clone, Debug)]
pub struct Api {
    /// Which server it reaches.
    pub target: Target,
    /// The connection; clients are cheap to make from it.
    pub channel: Channel,
}

impl Api {
    /// The KV service.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    /// The Lease service.
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    /// The Maintenance service.
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone())
    }

    /// Puts `key` = `value`; returns the revision of the write.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        self.put_with(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..pb::PutRequest::default()
        })
        .await
        .header
        .expect("a put response has a header")
        .revision
    }

    /// Puts as `request` asks; panics on an error.
    pub async fn put_with(&self, request: pb::PutRequest) -> pb::PutResponse {
        self.kv()
            .put(request)
            .await
            .unwrap_or_else(|status| panic!("put failed: {status:?}"))
            .into_inner()
    }

    /// Deletes `key`; returns the revision after.
    pub async fn delete(&self, key: &str) -> i64 {
        let request = pb::DeleteRangeRequest {
            key: key.into(),
            ..pb::DeleteRangeRequest::default()
        };
        self.kv()
            .delete_range(request)
            .await
            .expect("delete")
            .into_inner()
            .header
            .expect("a delete response has a header")
            .revision
    }

    /// The key-values in `[key, range_end)` (one key when `range_end` is empty).
    pub async fn get(&self, key: &str, range_end: &str) -> Vec<(String, String)> {
        let request = pb::RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..pb::RangeRequest::default()
        };
        let response = self.kv().range(request).await.expect("range").into_inner();
        response
            .kvs
            .into_iter()
            .map(|kv| (text(&kv.key), text(&kv.value)))
            .collect()
    }

    /// A Status call's answer.
    pub async fn status(&self) -> pb::StatusResponse {
        self.maintenance()
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
    }

    /// This member's id.
    pub async fn member_id(&self) -> u64 {
        self.status().await.header.expect("header").member_id
    }

    /// Grants a lease of `ttl_seconds` with a server-chosen id.
    pub async fn grant(&self, ttl_seconds: i64) -> i64 {
        let request = pb::LeaseGrantRequest {
            ttl: ttl_seconds,
            id: 0,
        };
        let response = self
            .lease()
            .lease_grant(request)
            .await
            .expect("lease grant")
            .into_inner();
        assert_eq!(response.ttl, ttl_seconds, "granted TTL");
        response.id
    }

    /// Opens a Watch stream (see [`WatchStream`]).
    pub fn watch(&self) -> WatchStream {
        WatchStream::open(self)
    }
}

/// Asserts that `result` failed with `code` and exactly `message`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    message: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} {message:?}, got {value:?}"),
        Err(status) => assert_eq!(
            (status.code(), status.message()),
            (code, message),
            "{status:?}"
        ),
    }
}

/// Bytes as text (keys and values in these tests are ASCII).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `prefix` with its last byte incremented: the range end of every key under it.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    let last = bytes.pop().expect("a non-empty prefix");
    bytes.push(last + 1);
    String::from_utf8(bytes).expect("ASCII prefix")
}

/// A create request for `key` (and `range_end`, empty for one key).
pub fn create(key: &str, range_end: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.into(),
        range_end: range_end.into(),
        ..pb::WatchCreateRequest::default()
    }
}

/// One bidirectional Watch stream. Requests go through an unbounded channel, so sending
/// never waits; the call itself is made in a task, because a server may send the
/// response headers only with its first message (grpc-go does).
#[derive(Debug)]
pub struct WatchStream {
    requests: Option<mpsc::UnboundedSender<pb::WatchRequest>>,
    call: Option<tokio::task::JoinHandle<Result<Streaming<pb::WatchResponse>, tonic::Status>>>,
    responses: Option<Streaming<pb::WatchResponse>>,
}

impl WatchStream {
    fn open(api: &Api) -> WatchStream {
        let (requests, receiver) = mpsc::unbounded_channel();
        // tonic re-exports tokio-stream for generated code; its wrapper turns the
        // receiver into the request stream.
        let stream = tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        let mut client = WatchClient::new(api.channel.clone());
        let call =
            tokio::spawn(
                async move { client.watch(stream).await.map(tonic::Response::into_inner) },
            );
        WatchStream {
            requests: Some(requests),
            call: Some(call),
            responses: None,
        }
    }

    /// Sends one request.
    pub fn send(&self, union: pb::watch_request::RequestUnion) {
        self.requests
            .as_ref()
            .expect("the send side is open")
            .send(pb::WatchRequest {
                request_union: Some(union),
            })
            .expect("the watch call is running");
    }

    /// Sends a create request.
    pub fn create(&self, request: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(request));
    }

    /// Sends a create request and returns the `created` response.
    pub async fn created(&mut self, request: pb::WatchCreateRequest) -> pb::WatchResponse {
        self.create(request);
        let response = self.next().await;
        assert!(
            response.created,
            "expected a created response: {response:?}"
        );
        response
    }

    /// Sends a cancel request for `watch_id`.
    pub fn cancel(&self, watch_id: i64) {
        self.send(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id },
        ));
    }

    /// Sends a progress request.
    pub fn progress(&self) {
        self.send(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        ));
    }

    /// Closes the client's sending side (the server sees the end of its request stream).
    pub fn close_send(&mut self) {
        self.requests = None;
    }

    async fn stream(&mut self) -> &mut Streaming<pb::WatchResponse> {
        if let Some(call) = self.call.take() {
            let started = tokio::time::timeout(STREAM_TIMEOUT, call)
                .await
                .expect("the watch call starts")
                .expect("the watch task runs");
            self.responses = Some(started.unwrap_or_else(|s| panic!("watch call: {s:?}")));
        }
        self.responses.as_mut().expect("started above")
    }

    /// The next response; fails the test if none comes within [`STREAM_TIMEOUT`] or the
    /// stream ends.
    pub async fn next(&mut self) -> pb::WatchResponse {
        match self.next_within(STREAM_TIMEOUT).await {
            Some(response) => response,
            None => panic!("no watch response within {STREAM_TIMEOUT:?}"),
        }
    }

    /// The next response if one comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<pb::WatchResponse> {
        let stream = self.stream().await;
        match tokio::time::timeout(wait, stream.message()).await {
            Err(_) => None,
            Ok(Ok(Some(response))) => Some(response),
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Err(status)) => panic!("the watch stream failed: {status:?}"),
        }
    }
}

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code (200, 503, ...).
    pub status: u16,
    /// The body, de-chunked.
    pub body: String,
}

/// `GET path` over HTTP/1.0 on `endpoint` (host:port), reading until the server closes.
pub fn http_get(endpoint: &str, path: &str) -> HttpResponse {
    let mut stream = TcpStream::connect(endpoint).expect("connect for HTTP");
    stream
        .set_read_timeout(Some(STREAM_TIMEOUT))
        .expect("set a read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse { status, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}
