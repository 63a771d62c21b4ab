//! Serving the client URLs: gRPC (HTTP/2 without TLS, as etcd's clients speak it) and
//! HTTP/1.1 (the JSON gateway, `/health`, `/version`, `/metrics`) on the same port.
//!
//! Core 0 accepts on the client listeners and places each connection on a glommio core
//! (`server::placement`), which serves it ([`serve_connection`]): HTTP/2 with
//! [`http2`], HTTP/1.1 with hyper. A unary
//! call is decoded, handed to the shard and answered on one thread, and the replies of
//! one shard round reach the connection task together, so they go out with one socket
//! write. Requests reach the shard through the core's bridge. A small tokio runtime
//! ([`start_runtime`]) runs what outlives a call (watch and keep-alive streams, lock
//! sessions), the timers, and the metrics-only listeners.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{header, HeaderValue, Request as HttpRequest, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;

use super::http2::{self, PREFACE};
use super::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use super::pb::{v3electionpb::election_server::ElectionServer, v3lockpb::lock_server::LockServer};
use super::service::{Gateway, ETCD_CLUSTER_VERSION, ETCD_VERSION};
use super::unary::{failed, ClientService};
use crate::protocol::{AlarmAction, AlarmType, Request, Response};
use crate::server::metrics::Metrics;

/// Bytes a gRPC request may take beyond `--max-request-bytes` (etcd's allowance for
/// the encoding around the payload); larger requests fail in the gRPC layer, smaller
/// ones over the limit get etcd's "request is too large".
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// How long /health waits for its read.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts the gateway's tokio runtime on `threads` threads of its own. It serves
/// nothing yet: [`serve_metrics`] adds the metrics-only listeners, and the cores enter
/// it (see [`serve_connection`]) so that the calls they serve can spawn streams and set
/// timers on it.
pub fn start_runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("corekv-gateway")
        .enable_all()
        .build()
        .context("cannot start the gateway's runtime")
}

/// Serves `metrics_only` (/health, /version, /metrics) on the gateway's runtime. The
/// listeners are already bound (and non-blocking), so any address problem was
/// reported at start-up.
pub fn serve_metrics(
    runtime: &tokio::runtime::Handle,
    gateway: Gateway,
    metrics_only: Vec<std::net::TcpListener>,
) {
    let app = http_endpoints(gateway);
    for listener in metrics_only {
        let app = app.clone();
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("corekv: metrics listener failed: {error}");
            }
        });
    }
}

/// Serves one client-URL connection on this core until it closes: HTTP/2 (gRPC) or
/// HTTP/1.1, told apart by the client preface (plain unary gRPC calls take the fast
/// path of `gateway::unary`). Runs on a glommio executor that has entered the gateway's
/// tokio runtime.
pub async fn serve_connection(app: ClientService, mut stream: glommio::net::TcpStream) {
    use futures_lite::AsyncReadExt;
    let _ = stream.set_nodelay(true);
    // HTTP/2 starts with the client preface; anything else is HTTP/1.1, which gets
    // the bytes read so far back in front of the stream.
    let mut first = [0u8; PREFACE.len()];
    let mut read = 0;
    while read < first.len() && first[..read] == PREFACE[..read] {
        match stream.read(&mut first[read..]).await {
            Ok(0) | Err(_) => return,
            Ok(count) => read += count,
        }
    }
    if first == *PREFACE {
        http2::serve(app, stream).await;
        return;
    }
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let io = hyper_util::rt::TokioIo::new(
        Prefixed {
            prefix: first[..read].to_vec(),
            position: 0,
            stream,
        }
        .compat(),
    );
    // A client that goes away or speaks nonsense ends only its own connection.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, app)
        .await;
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed {
    prefix: Vec<u8>,
    position: usize,
    stream: glommio::net::TcpStream,
}

impl futures_lite::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.position < self.prefix.len() {
            let count = buf.len().min(self.prefix.len() - self.position);
            buf[..count].copy_from_slice(&self.prefix[self.position..self.position + count]);
            self.position += count;
            return std::task::Poll::Ready(Ok(count));
        }
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl futures_lite::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// Every route of the client URLs: gRPC services, the JSON gateway, the HTTP endpoints.
pub fn router(gateway: Gateway) -> Router {
    let request_max = gateway.config.request_bytes_max + GRPC_OVERHEAD_BYTES;
    let g = gateway.clone();
    let grpc = tonic::service::Routes::new(
        KvServer::new(g.clone()).max_decoding_message_size(request_max),
    )
    .add_service(WatchServer::new(g.clone()).max_decoding_message_size(request_max))
    .add_service(LeaseServer::new(g.clone()).max_decoding_message_size(request_max))
    .add_service(ClusterServer::new(g.clone()).max_decoding_message_size(request_max))
    .add_service(MaintenanceServer::new(g.clone()).max_decoding_message_size(request_max))
    .add_service(AuthServer::new(g.clone()).max_decoding_message_size(request_max))
    .add_service(LockServer::new(g.clone()).max_decoding_message_size(request_max))
    .add_service(ElectionServer::new(g.clone()).max_decoding_message_size(request_max))
    .into_axum_router()
    .layer(middleware::from_fn_with_state(
        gateway.metrics.clone(),
        count_grpc,
    ));
    let body_max = gateway.config.request_bytes_max + GRPC_OVERHEAD_BYTES;
    grpc.merge(super::json::router_with_body_limit(
        Arc::new(gateway.clone()),
        body_max,
    ))
    .merge(http_endpoints(gateway))
}

/// `/health`, `/version` and `/metrics`.
pub fn http_endpoints(gateway: Gateway) -> Router {
    let health = gateway.clone();
    let metrics = gateway.metrics.clone();
    Router::new()
        .route(
            "/health",
            get(move || {
                let gateway = health.clone();
                async move { health_check(&gateway).await }
            }),
        )
        .route(
            "/version",
            get(|| async {
                json_response(
                    StatusCode::OK,
                    format!(
                        "{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{ETCD_CLUSTER_VERSION}\"}}"
                    ),
                )
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut response = metrics.render().into_response();
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    response
                }
            }),
        )
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// etcd's health check: a leader, no alarm, and a linearizable read that succeeds
/// within a second.
async fn health_check(gateway: &Gateway) -> HttpResponse {
    let healthy = async {
        let Ok(Response::Status(status)) = gateway.call(Request::Status).await else {
            return false;
        };
        if status.leader == 0 {
            return false;
        }
        let alarms = Request::Alarm {
            action: AlarmAction::Get,
            member_id: 0,
            alarm: AlarmType::None,
        };
        match gateway.call(alarms).await {
            Ok(Response::Alarm(_, alarms)) if alarms.is_empty() => {}
            _ => return false,
        }
        let read = corekv_engine::RangeRequest {
            key: b"health".to_vec(),
            ..corekv_engine::RangeRequest::default()
        };
        matches!(
            tokio::time::timeout(HEALTH_TIMEOUT, gateway.call(Request::Range(read))).await,
            Ok(Ok(Response::Range(..)))
        )
    }
    .await;
    if healthy {
        json_response(StatusCode::OK, "{\"health\":\"true\"}".to_string())
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"health\":\"false\"}\n".to_string(),
        )
    }
}

/// Counts every gRPC call by method, with its outcome and latency (to the response
/// headers: the whole call for unary methods, the set-up for streams). The unary
/// fast path counts its calls itself, the same way.
async fn count_grpc(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    request: HttpRequest<Body>,
    next: Next,
) -> HttpResponse {
    let method = Metrics::grpc_method(request.uri().path());
    let started = Instant::now();
    if let Some(method) = method {
        metrics.grpc_started(method);
    }
    let response = next.run(request).await;
    if let Some(method) = method {
        metrics.grpc_handled(method, !failed(response.headers()), started.elapsed());
    }
    response
}
