//! Serving the client URLs: gRPC (HTTP/2 without TLS, as etcd's clients speak it) and
//! HTTP/1.1 (the JSON gateway, `/health`, `/version`, `/metrics`) on the same port, on
//! a small tokio runtime of its own. Requests reach the shard through the bridge.

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

use super::authority::FixAuthorityListener;
use super::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use super::pb::{v3electionpb::election_server::ElectionServer, v3lockpb::lock_server::LockServer};
use super::service::{Gateway, ETCD_CLUSTER_VERSION, ETCD_VERSION};
use crate::protocol::{AlarmAction, AlarmType, Request, Response};
use crate::server::metrics::Metrics;

/// Bytes a gRPC request may take beyond `--max-request-bytes` (etcd's allowance for
/// the encoding around the payload); larger requests fail in the gRPC layer, smaller
/// ones over the limit get etcd's "request is too large".
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// How long /health waits for its read.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts the gateway's runtime on its own threads, serving `clients` (gRPC and HTTP)
/// and `metrics_only` (/health, /version, /metrics). The listeners are already bound,
/// so any address problem was reported at start-up.
pub fn start(
    gateway: Gateway,
    threads: usize,
    clients: Vec<std::net::TcpListener>,
    metrics_only: Vec<std::net::TcpListener>,
) -> Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("corekv-gateway")
        .enable_all()
        .build()
        .context("cannot start the gateway's runtime")?;
    let full = router(gateway.clone());
    let small = http_endpoints(gateway);
    std::thread::Builder::new()
        .name("corekv-gateway-main".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for (listeners, app) in [(clients, full), (metrics_only, small)] {
                    for listener in listeners {
                        let app = app.clone();
                        tasks.push(tokio::spawn(async move {
                            let _ = listener.set_nonblocking(true);
                            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                                return;
                            };
                            let listener = FixAuthorityListener::new(listener.tap_io(|tcp| {
                                let _ = tcp.set_nodelay(true);
                            }));
                            if let Err(error) = axum::serve(listener, app).await {
                                eprintln!("corekv: client listener failed: {error}");
                            }
                        }));
                    }
                }
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
        .context("cannot start the gateway thread")
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
/// headers: the whole call for unary methods, the set-up for streams).
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
        let failed = response
            .headers()
            .get("grpc-status")
            .is_some_and(|status| status.as_bytes() != b"0");
        metrics.grpc_handled(method, !failed, started.elapsed());
    }
    response
}
