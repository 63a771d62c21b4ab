//! The etcd gRPC mode end to end against a small in-process etcd double: a tonic
//! server with KV (a map and a revision counter) and Watch (every put broadcast to every
//! watcher), so that the driver's counting, reporting, error handling and watch
//! fan-out are checked without a real server. Real etcd and corekv are measured by
//! hand (docs/benchmarks.md).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use corekv_net::gateway::pb::etcdserverpb::{
    kv_server::{Kv, KvServer},
    request_op, response_op, watch_request,
    watch_server::{Watch, WatchServer},
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseOp, TxnRequest, TxnResponse, WatchRequest,
    WatchResponse,
};
use corekv_net::gateway::pb::mvccpb::{event::EventType, Event, KeyValue};
use tonic::{Request, Response, Status, Streaming};

use super::super::config;
use super::super::report::Report;

/// The double's state: keys, the revision, every watcher's sender, and how often a
/// put fails on purpose.
#[derive(Debug, Default)]
struct Store {
    keys: Mutex<BTreeMap<Vec<u8>, KeyValue>>,
    revision: AtomicU64,
    puts: AtomicU64,
    /// Every n-th put fails with etcd's "too many requests" (0: never).
    fail_every: u64,
    watchers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<Event>>>,
}

#[derive(Clone, Debug)]
struct Double(Arc<Store>);

impl Double {
    fn put(&self, request: PutRequest) -> Result<(), Status> {
        let count = self.0.puts.fetch_add(1, Ordering::Relaxed) + 1;
        if self.0.fail_every > 0 && count % self.0.fail_every == 0 {
            return Err(Status::resource_exhausted("etcdserver: too many requests"));
        }
        let revision = self.0.revision.fetch_add(1, Ordering::Relaxed) as i64 + 1;
        let kv = KeyValue {
            key: request.key.clone(),
            value: request.value,
            mod_revision: revision,
            create_revision: revision,
            version: 1,
            lease: 0,
        };
        self.0.keys.lock().unwrap().insert(request.key, kv.clone());
        let event = Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: None,
        };
        self.0
            .watchers
            .lock()
            .unwrap()
            .retain(|watcher| watcher.send(event.clone()).is_ok());
        Ok(())
    }

    fn range(&self, request: &RangeRequest) -> RangeResponse {
        let kvs: Vec<KeyValue> = self
            .0
            .keys
            .lock()
            .unwrap()
            .get(&request.key)
            .cloned()
            .into_iter()
            .collect();
        RangeResponse {
            count: kvs.len() as i64,
            kvs,
            ..RangeResponse::default()
        }
    }
}

#[tonic::async_trait]
impl Kv for Double {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(Double::range(self, request.get_ref())))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Double::put(self, request.into_inner())?;
        Ok(Response::new(PutResponse::default()))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("the double does not delete"))
    }

    /// Only the load's shape: one compare on a key's existence.
    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let request = request.into_inner();
        let key = &request.compare[0].key;
        let exists = self.0.keys.lock().unwrap().contains_key(key);
        let ops = if exists {
            request.success
        } else {
            request.failure
        };
        let mut responses = Vec::new();
        for op in ops {
            let response = match op.request {
                Some(request_op::Request::RequestPut(put)) => {
                    Double::put(self, put)?;
                    response_op::Response::ResponsePut(PutResponse::default())
                }
                Some(request_op::Request::RequestRange(range)) => {
                    response_op::Response::ResponseRange(Double::range(self, &range))
                }
                _ => return Err(Status::unimplemented("the double's txn: put and range")),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(Response::new(TxnResponse {
            succeeded: exists,
            responses,
            ..TxnResponse::default()
        }))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("the double does not compact"))
    }
}

type WatchResponses =
    Pin<Box<dyn futures_lite::Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Watch for Double {
    type WatchStream = WatchResponses;

    /// One watch per stream, on every key: a created response, then each put.
    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchResponses>, Status> {
        let mut requests = request.into_inner();
        match requests.message().await? {
            Some(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(_)),
            }) => {}
            _ => return Err(Status::invalid_argument("expected a create request")),
        }
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        self.0.watchers.lock().unwrap().push(sender);
        let created = WatchResponse {
            created: true,
            ..WatchResponse::default()
        };
        let events = futures_lite::stream::unfold(receiver, |mut receiver| async move {
            let event = receiver.recv().await?;
            let response = WatchResponse {
                events: vec![event],
                ..WatchResponse::default()
            };
            Some((Ok(response), receiver))
        });
        let responses =
            futures_lite::StreamExt::chain(futures_lite::stream::once(Ok(created)), events);
        Ok(Response::new(Box::pin(responses)))
    }
}

/// A running double on a free local port; it stops with its runtime when dropped.
struct Server {
    address: String,
    store: Arc<Store>,
    _runtime: tokio::runtime::Runtime,
}

fn start(fail_every: u64) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the double");
    let store = Arc::new(Store {
        fail_every,
        ..Store::default()
    });
    let double = Double(store.clone());
    let incoming = runtime
        .block_on(async {
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        })
        .expect("a free port")
        // Without it, Nagle's algorithm and delayed ACKs hold small answers for 40 ms.
        .with_nodelay(Some(true));
    let address = incoming.local_addr().expect("bound").to_string();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(double.clone()))
            .add_service(WatchServer::new(double))
            .serve_with_incoming(incoming),
    );
    Server {
        address,
        store,
        _runtime: runtime,
    }
}

fn run(server: &Server, args: &[&str]) -> Report {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--protocol=etcd-grpc".to_string());
    all.push(format!("--endpoints={}", server.address));
    let config = config::parse(&all).expect("valid flags");
    super::super::run(config).expect("the run completes")
}

/// Puts from several clients over two HTTP/2 connections with pipelining: exactly
/// --total ops reach the server, and the JSON line names the protocol, the threads and
/// the CPU figures.
#[test]
fn put_workload_counts_and_reports() {
    let server = start(0);
    let pid = std::process::id().to_string();
    let report = run(
        &server,
        &[
            "put",
            "--total=500",
            "--clients=4",
            "--connections=2",
            "--pipeline=2",
            "--key-space=100",
            "--server-pid",
            &pid,
        ],
    );
    assert_eq!(report.ops, 500);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(server.store.puts.load(Ordering::Relaxed), 500);
    assert!(report.latency.value_at_quantile(0.5) > 0);
    assert!(report.cpu.server.is_some());
    let json = report.json();
    for field in [
        "\"workload\":\"put\"",
        "\"protocol\":\"etcd-grpc\"",
        "\"ops\":500",
        "\"errors\":0",
        "\"ops_per_sec\":",
        "\"p50_us\":",
        "\"p99_us\":",
        "\"p999_us\":",
        "\"max_us\":",
        "\"threads\":2",
        "\"client_cpu_seconds\":",
        "\"server_cpu_seconds\":",
        "\"server_cpu_seconds_per_100k_ops\":",
    ] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
    assert!(json.starts_with('{') && json.ends_with('}') && !json.contains('\n'));
    assert!(report.human().contains("server CPU"));
}

/// Gets in both consistencies, mixed and txn complete cleanly after the prefill
/// wrote the key space.
#[test]
fn read_mixed_and_txn_workloads() {
    let server = start(0);
    for args in [
        &[
            "get",
            "--total=300",
            "--clients=3",
            "--connections=2",
            "--key-space=50",
        ][..],
        &[
            "get",
            "--total=300",
            "--consistency=s",
            "--sequential-keys",
            "--key-space=50",
        ],
        &[
            "mixed",
            "--total=300",
            "--read-ratio=0.8",
            "--clients=3",
            "--pipeline=2",
        ],
        &["txn", "--total=200", "--clients=2", "--key-space=20"],
    ] {
        let report = run(&server, args);
        let total: u64 = args[1].trim_start_matches("--total=").parse().unwrap();
        assert_eq!(report.ops, total, "{args:?}");
        assert_eq!(report.errors, 0, "{args:?}: {:?}", report.first_error);
    }
    assert!(server.store.keys.lock().unwrap().len() >= 50);
}

/// Errors the server answers with are counted and the clients go on: every claimed
/// operation is either an op or an error, and the first error says what it was.
#[test]
fn server_errors_are_counted_not_fatal() {
    let server = start(10);
    let report = run(
        &server,
        &["put", "--total=400", "--clients=4", "--connections=2"],
    );
    assert_eq!(report.ops + report.errors, 400);
    assert_eq!(report.errors, 40);
    let error = report.first_error.as_deref().unwrap_or_default();
    assert!(error.contains("too many requests"), "{error}");
}

/// Every put reaches every watcher: events = puts x watchers.
#[test]
fn watch_workload_fans_out() {
    let server = start(0);
    let report = run(
        &server,
        &[
            "watch",
            "--total=100",
            "--watchers=5",
            "--connections=2",
            "--clients=2",
        ],
    );
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    let (puts, _) = report.puts.as_ref().expect("watch reports its puts");
    assert_eq!(*puts, 100);
    assert_eq!(report.ops, 500);
}

/// --duration stops the run near the deadline.
#[test]
fn duration_stops_the_run() {
    let server = start(0);
    let report = run(&server, &["put", "--duration=300ms", "--clients=2"]);
    assert_eq!(report.errors, 0);
    assert!(report.ops > 0);
    assert!(report.elapsed.as_millis() >= 290, "{:?}", report.elapsed);
}

/// No server: the run fails with one line naming the endpoint instead of hanging.
#[test]
fn unreachable_endpoint_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config::parse(&[
        "put".to_string(),
        "--protocol=etcd-grpc".to_string(),
        format!("--endpoints=127.0.0.1:{port}"),
        "--connections=2".to_string(),
    ])
    .unwrap();
    let error = super::super::run(config).unwrap_err();
    assert!(
        error.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
}
