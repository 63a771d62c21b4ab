//! The fast path against the router: every request below goes to a [`ClientService`]
//! with the fast path and to one without (tonic serves it there), each over a fake
//! shard, and the two answers must be the same to the byte: status, headers, whether
//! the body is empty at once (a trailers-only answer), its size hint (hyper turns an
//! exact one into content-length), every data frame and the trailers. Then the gRPC
//! metrics of the two must agree.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, Response, Version};
use corekv_engine::{self as engine, LeaseId, Revision};
use hyper::body::{Body, Frame};
use hyper::service::Service;
use prost::Message;

use super::{ClientBody, ClientService, UnaryMethod, MESSAGE_PREFIX_BYTES};
use crate::gateway::pb::etcdserverpb as pb;
use crate::gateway::serve::GRPC_OVERHEAD_BYTES;
use crate::gateway::service::Gateway;
use crate::protocol::{Header, Request as ShardRequest, Response as ShardResponse};
use crate::server::bridge::{GatewayMessage, ShardHandle, Sink};
use crate::server::config::ServerConfig;
use crate::server::metrics::Metrics;

/// `--max-request-bytes` of the servers under test.
const REQUEST_BYTES_MAX: usize = 1024;
/// The largest gRPC message they read.
const MESSAGE_BYTES_MAX: usize = REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES;
/// The key the fake shard refuses a put of, with a message that needs percent-encoding.
const REFUSED_KEY: &[u8] = b"refused";
const REFUSAL: &str = "etcdserver: 100% refused \"here\"\n\u{e9}t\u{e9}";

// ---- A fake shard ----

fn header() -> Header {
    Header {
        cluster_id: 7,
        member_id: 8,
        revision: Revision(42),
        raft_term: 3,
    }
}

fn key_value(key: &[u8]) -> engine::KeyValue {
    engine::KeyValue {
        key: key.to_vec(),
        create_revision: Revision(5),
        mod_revision: Revision(41),
        version: 9,
        value: b"value".to_vec(),
        lease: LeaseId(0),
    }
}

/// What the fake shard answers: a fixed reply per request kind, a refusal for a put of
/// [`REFUSED_KEY`].
fn answer(request: ShardRequest) -> ShardResponse {
    match request {
        ShardRequest::Put(put) if put.key == REFUSED_KEY => ShardResponse::Error {
            code: tonic::Code::FailedPrecondition as u32,
            message: REFUSAL.to_string(),
        },
        ShardRequest::Put(put) => ShardResponse::Put(
            header(),
            engine::PutResponse {
                prev_kv: put.prev_kv.then(|| key_value(&put.key)),
            },
        ),
        ShardRequest::Range(range) => ShardResponse::Range(
            header(),
            engine::RangeResponse {
                kvs: vec![key_value(&range.key), key_value(b"other")],
                more: true,
                count: 12,
            },
        ),
        ShardRequest::DeleteRange(_) => ShardResponse::DeleteRange(
            header(),
            engine::DeleteRangeResponse {
                deleted: 2,
                prev_kvs: Vec::new(),
            },
        ),
        ShardRequest::Txn(_) => ShardResponse::Txn(
            header(),
            engine::TxnResponse {
                succeeded: true,
                responses: vec![engine::ResponseOp::Put(engine::PutResponse::default())],
            },
        ),
        ShardRequest::LeaseGrant { id, ttl_seconds } => ShardResponse::LeaseGrant {
            header: header(),
            id: LeaseId(id.0.max(99)),
            ttl_seconds,
        },
        ShardRequest::LeaseRevoke { .. } => ShardResponse::LeaseRevoke(header()),
        ShardRequest::LeaseTimeToLive { id, keys } => ShardResponse::LeaseTimeToLive {
            header: header(),
            id,
            ttl_seconds: 10,
            granted_ttl_seconds: 30,
            keys: if keys {
                vec![b"k".to_vec()]
            } else {
                Vec::new()
            },
        },
        other => ShardResponse::Error {
            code: tonic::Code::Unimplemented as u32,
            message: format!("the fake shard does not answer {other:?}"),
        },
    }
}

/// A gateway over a fake shard running on the current tokio runtime.
fn fake_gateway() -> Gateway {
    let (handle, mut receiver) = ShardHandle::new();
    tokio::spawn(async move {
        while let Some(message) = receiver.recv().await {
            if let GatewayMessage::Call {
                request,
                sink: Sink::Once(reply),
                ..
            } = message
            {
                let _ = reply.send(answer(request));
            }
        }
    });
    let config = ServerConfig {
        request_bytes_max: REQUEST_BYTES_MAX,
        ..ServerConfig::default()
    };
    Gateway::new(handle, Arc::new(config), Arc::new(Metrics::default()))
}

// ---- Requests ----

/// A request body: its frames, then its end.
#[derive(Debug)]
struct TestBody {
    frames: VecDeque<Result<Frame<Bytes>, String>>,
}

/// A body of these data chunks.
fn chunks(chunks: &[&[u8]]) -> TestBody {
    TestBody {
        frames: chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
            .collect(),
    }
}

impl TestBody {
    fn then_trailers(mut self) -> TestBody {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-after", "1".parse().expect("a valid value"));
        self.frames.push_back(Ok(Frame::trailers(trailers)));
        self
    }

    fn then_error(mut self) -> TestBody {
        self.frames
            .push_back(Err("the client went away".to_string()));
        self
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = self.get_mut().frames.pop_front();
        Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
    }
}

/// One gRPC message: flag, big-endian length, bytes.
fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn put(key: &str, value_bytes: usize) -> Vec<u8> {
    pb::PutRequest {
        key: key.into(),
        value: vec![b'v'; value_bytes],
        ..pb::PutRequest::default()
    }
    .encode_to_vec()
}

/// A plain unary gRPC request as etcd's clients send it.
fn grpc(path: &str, body: TestBody) -> Request<TestBody> {
    Request::post(path)
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("a valid request")
}

fn with_header(
    mut request: Request<TestBody>,
    name: &'static str,
    value: &str,
) -> Request<TestBody> {
    request
        .headers_mut()
        .insert(name, value.parse().expect("a valid value"));
    request
}

const PUT: &str = "/etcdserverpb.KV/Put";

/// Every request the two services are compared on, with what it exercises.
fn cases() -> Vec<(&'static str, Request<TestBody>)> {
    let ok = framed(0, &put("k", 3));
    let range = pb::RangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        ..pb::RangeRequest::default()
    };
    let txn = pb::TxnRequest {
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"t".to_vec(),
                ..pb::PutRequest::default()
            })),
        }],
        ..pb::TxnRequest::default()
    };
    let at_limit = framed(0, &put("big", MESSAGE_BYTES_MAX - 9));
    assert_eq!(at_limit.len(), MESSAGE_PREFIX_BYTES + MESSAGE_BYTES_MAX);
    let over_limit = framed(0, &put("big", MESSAGE_BYTES_MAX - 8));
    let split: Vec<&[u8]> = ok.chunks(1).collect();
    vec![
        ("put", grpc(PUT, chunks(&[&ok]))),
        (
            "put with prev_kv",
            grpc(
                PUT,
                chunks(&[&framed(
                    0,
                    &pb::PutRequest {
                        key: b"p".to_vec(),
                        prev_kv: true,
                        ..pb::PutRequest::default()
                    }
                    .encode_to_vec(),
                )]),
            ),
        ),
        ("put, one byte per chunk", grpc(PUT, chunks(&split))),
        ("put, content type +proto", {
            with_header(
                grpc(PUT, chunks(&[&ok])),
                "content-type",
                "application/grpc+proto",
            )
        }),
        ("put, identity encoding", {
            with_header(grpc(PUT, chunks(&[&ok])), "grpc-encoding", "identity")
        }),
        (
            "put refused by the shard (percent-encoded message)",
            grpc(PUT, chunks(&[&framed(0, &put("refused", 1))])),
        ),
        (
            "put over --max-request-bytes (etcd's 'request is too large')",
            grpc(PUT, chunks(&[&framed(0, &put("k", REQUEST_BYTES_MAX + 1))])),
        ),
        (
            "message at the decoding limit",
            grpc(PUT, chunks(&[&at_limit])),
        ),
        (
            "message over the decoding limit",
            grpc(PUT, chunks(&[&over_limit])),
        ),
        (
            "prefix over the decoding limit, body never sent",
            grpc(
                PUT,
                chunks(&[&over_limit[..MESSAGE_PREFIX_BYTES]]).then_error(),
            ),
        ),
        (
            "malformed protobuf",
            grpc(PUT, chunks(&[&framed(0, &[0xff, 0xff, 0xff])])),
        ),
        (
            "compressed flag",
            grpc(PUT, chunks(&[&framed(1, &put("k", 1))])),
        ),
        ("compressed flag, identity encoding", {
            with_header(
                grpc(PUT, chunks(&[&framed(1, &put("k", 1))])),
                "grpc-encoding",
                "identity",
            )
        }),
        (
            "invalid flag",
            grpc(PUT, chunks(&[&framed(2, &put("k", 1))])),
        ),
        (
            "truncated message",
            grpc(PUT, chunks(&[&ok[..ok.len() - 1]])),
        ),
        (
            "prefix only",
            grpc(PUT, chunks(&[&ok[..MESSAGE_PREFIX_BYTES]])),
        ),
        ("partial prefix", grpc(PUT, chunks(&[&ok[..3]]))),
        ("empty body", grpc(PUT, chunks(&[]))),
        ("empty message", grpc(PUT, chunks(&[&framed(0, &[])]))),
        (
            "two messages",
            grpc(PUT, chunks(&[&ok, &framed(0, &put("second", 1))])),
        ),
        (
            "a malformed second message",
            grpc(PUT, chunks(&[&ok, &framed(0, &[0xff])])),
        ),
        (
            "bytes after the message",
            grpc(PUT, chunks(&[&ok, &[0, 0]])),
        ),
        (
            "truncated message, then trailers",
            grpc(PUT, chunks(&[&ok[..ok.len() - 1]]).then_trailers()),
        ),
        (
            "message, then trailers",
            grpc(PUT, chunks(&[&ok]).then_trailers()),
        ),
        ("body error", grpc(PUT, chunks(&[&ok[..4]]).then_error())),
        (
            "message, then a body error",
            grpc(PUT, chunks(&[&ok]).then_error()),
        ),
        (
            "range",
            grpc(
                "/etcdserverpb.KV/Range",
                chunks(&[&framed(0, &range.encode_to_vec())]),
            ),
        ),
        (
            "delete range",
            grpc(
                "/etcdserverpb.KV/DeleteRange",
                chunks(&[&framed(
                    0,
                    &pb::DeleteRangeRequest::default().encode_to_vec(),
                )]),
            ),
        ),
        (
            "txn",
            grpc(
                "/etcdserverpb.KV/Txn",
                chunks(&[&framed(0, &txn.encode_to_vec())]),
            ),
        ),
        (
            "lease grant",
            grpc(
                "/etcdserverpb.Lease/LeaseGrant",
                chunks(&[&framed(
                    0,
                    &pb::LeaseGrantRequest { ttl: 30, id: 0 }.encode_to_vec(),
                )]),
            ),
        ),
        (
            "lease revoke",
            grpc(
                "/etcdserverpb.Lease/LeaseRevoke",
                chunks(&[&framed(
                    0,
                    &pb::LeaseRevokeRequest { id: 5 }.encode_to_vec(),
                )]),
            ),
        ),
        (
            "lease time to live",
            grpc(
                "/etcdserverpb.Lease/LeaseTimeToLive",
                chunks(&[&framed(
                    0,
                    &pb::LeaseTimeToLiveRequest { id: 5, keys: true }.encode_to_vec(),
                )]),
            ),
        ),
        // What the fast path leaves to the router: the same answers trivially, but
        // the requests must not upset the fast path either.
        (
            "gzip encoding",
            with_header(grpc(PUT, chunks(&[&ok])), "grpc-encoding", "gzip"),
        ),
        ("json content type", {
            with_header(
                grpc(PUT, chunks(&[&ok])),
                "content-type",
                "application/grpc+json",
            )
        }),
        (
            "compact (not on the fast path)",
            grpc(
                "/etcdserverpb.KV/Compact",
                chunks(&[&framed(
                    0,
                    &pb::CompactionRequest::default().encode_to_vec(),
                )]),
            ),
        ),
    ]
}

// ---- Answers ----

/// Everything of an answer a client can see.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    /// Empty from the start: hyper sends the headers with END_STREAM.
    empty: bool,
    exact_size: Option<u64>,
    frames: Vec<AnswerFrame>,
}

#[derive(Debug, PartialEq)]
enum AnswerFrame {
    Data(Vec<u8>),
    Trailers(Vec<(String, Vec<u8>)>),
}

fn header_list(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect()
}

async fn read_answer(response: Response<ClientBody>) -> Answer {
    let status = response.status().as_u16();
    let headers = header_list(response.headers());
    let mut body = response.into_body();
    let empty = body.is_end_stream();
    let exact_size = body.size_hint().exact();
    let mut frames = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.expect("the body is readable");
        frames.push(match frame.into_data() {
            Ok(data) => AnswerFrame::Data(data.to_vec()),
            Err(frame) => AnswerFrame::Trailers(header_list(
                &frame.into_trailers().expect("data or trailers"),
            )),
        });
    }
    Answer {
        status,
        headers,
        empty,
        exact_size,
        frames,
    }
}

/// The gRPC call counters of a metrics page (latencies differ from run to run).
fn call_counts(metrics: &Metrics) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter(|line| {
            line.starts_with("grpc_server_started_total")
                || line.starts_with("grpc_server_handled_total")
                || line.starts_with("grpc_server_handling_seconds_count")
        })
        .map(str::to_string)
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn the_fast_path_answers_every_request_as_the_router_does() {
    // Each request, sent to a service with the fast path and to one without (tonic
    // behind the router), gets the same answer; afterwards both count the same calls.
    runtime().block_on(async {
        let fast_gateway = fake_gateway();
        let routed_gateway = fake_gateway();
        let fast = ClientService::new(fast_gateway.clone());
        let routed = ClientService::router_only(routed_gateway.clone());
        let (fast_cases, routed_cases) = (cases(), cases());
        for ((name, fast_request), (_, routed_request)) in fast_cases.into_iter().zip(routed_cases)
        {
            let fast_answer = read_answer(fast.call(fast_request).await.expect("infallible")).await;
            let routed_answer =
                read_answer(routed.call(routed_request).await.expect("infallible")).await;
            assert_eq!(fast_answer, routed_answer, "{name}");
        }
        assert_eq!(
            call_counts(&fast_gateway.metrics),
            call_counts(&routed_gateway.metrics)
        );
    });
}

/// `grpc-message`'s percent-encoding undone.
fn percent_decoded(value: &[u8]) -> String {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some((&byte, tail)) = rest.split_first() {
        match (byte, tail) {
            (b'%', [high, low, tail @ ..]) => {
                let hex = std::str::from_utf8(&[*high, *low])
                    .expect("ascii")
                    .to_string();
                out.push(u8::from_str_radix(&hex, 16).expect("two hex digits"));
                rest = tail;
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// The status and (decoded) message of a trailers-only answer.
fn failure(answer: &Answer) -> (String, String) {
    let get = |name: &str| {
        answer
            .headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| percent_decoded(value))
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[test]
fn edge_cases_fail_with_tonics_codes_and_messages() {
    // The answers compared above are the right ones: the codes and messages tonic
    // gives, which clients saw before the fast path.
    runtime().block_on(async {
        let service = ClientService::new(fake_gateway());
        let mut answers = std::collections::HashMap::new();
        for (name, request) in cases() {
            let answer = read_answer(service.call(request).await.expect("infallible")).await;
            answers.insert(name, answer);
        }
        let failure_of = |name: &str| failure(&answers[name]);
        let over = format!(
            "Error, decoded message length too large: found {} bytes, the limit is: {MESSAGE_BYTES_MAX} bytes",
            MESSAGE_BYTES_MAX + 1
        );
        // Code 11 is OutOfRange, 13 Internal, 3 InvalidArgument, 9 FailedPrecondition.
        let expected = [
            ("message over the decoding limit", "11", over.as_str()),
            ("prefix over the decoding limit, body never sent", "11", over.as_str()),
            ("message at the decoding limit", "3", "etcdserver: request is too large"),
            (
                "malformed protobuf",
                "13",
                "failed to decode Protobuf message: invalid varint",
            ),
            (
                "compressed flag",
                "13",
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ),
            (
                "invalid flag",
                "13",
                "protocol error: received message with invalid compression flag: 2 (valid flags are 0 and 1), while sending request",
            ),
            ("truncated message", "13", "Unexpected EOF decoding stream."),
            ("partial prefix", "13", "Unexpected EOF decoding stream."),
            ("bytes after the message", "13", "Unexpected EOF decoding stream."),
            ("prefix only", "13", "Missing request message."),
            ("empty body", "13", "Missing request message."),
            ("truncated message, then trailers", "13", "Missing request message."),
            (
                "put refused by the shard (percent-encoded message)",
                "9",
                REFUSAL,
            ),
        ];
        for (name, code, message) in expected {
            assert_eq!(failure_of(name), (code.to_string(), message.to_string()), "{name}");
            assert!(answers[name].empty, "{name}: a trailers-only answer");
        }
        for name in ["put", "two messages", "message, then trailers", "lease grant"] {
            let answer = &answers[name];
            assert_eq!(failure(answer).0, "", "{name}");
            assert_eq!(
                answer.frames.last(),
                Some(&AnswerFrame::Trailers(vec![(
                    "grpc-status".to_string(),
                    b"0".to_vec()
                )])),
                "{name}"
            );
        }
    });
}

#[test]
fn only_plain_unary_calls_take_the_fast_path() {
    // HTTP/1.1, other methods, other content types, compression and other paths go to
    // the router.
    let plain = grpc(PUT, chunks(&[]));
    assert_eq!(UnaryMethod::of_plain_call(&plain), Some(UnaryMethod::Put));
    let mut http1 = grpc(PUT, chunks(&[]));
    *http1.version_mut() = Version::HTTP_11;
    let mut get = grpc(PUT, chunks(&[]));
    *get.method_mut() = axum::http::Method::GET;
    let refused = [
        http1,
        get,
        with_header(grpc(PUT, chunks(&[])), "content-type", "application/json"),
        with_header(grpc(PUT, chunks(&[])), "grpc-encoding", "gzip"),
        grpc("/etcdserverpb.KV/Compact", chunks(&[])),
        grpc("/etcdserverpb.Watch/Watch", chunks(&[])),
        grpc("/etcdserverpb.KV/Put/", chunks(&[])),
    ];
    for request in refused {
        assert_eq!(UnaryMethod::of_plain_call(&request), None, "{request:?}");
    }
    let no_content_type = {
        let mut request = grpc(PUT, chunks(&[]));
        request.headers_mut().remove("content-type");
        request
    };
    assert_eq!(UnaryMethod::of_plain_call(&no_content_type), None);
    for (index, method) in UnaryMethod::ALL.into_iter().enumerate() {
        assert_eq!(method as usize, index, "ALL is in declaration order");
        assert_eq!(UnaryMethod::from_path(method.path()), Some(method));
    }
}

#[test]
fn a_message_in_one_chunk_is_taken_without_a_copy() {
    // The request message is a slice of the chunk it arrived in; one spread over
    // chunks is joined.
    let chunk = Bytes::from(framed(0, b"abc"));
    let mut chunks = super::Chunks::default();
    chunks.push(chunk.clone());
    assert_eq!(chunks.take_prefix(), Some([0, 0, 0, 0, 3]));
    let message = chunks.take(3);
    assert_eq!(message.as_ptr(), chunk[MESSAGE_PREFIX_BYTES..].as_ptr());
    chunks.push(Bytes::from_static(b"de"));
    chunks.push(Bytes::new());
    chunks.push(Bytes::from_static(b"fg"));
    assert_eq!(chunks.len, 4);
    assert_eq!(&chunks.take(3)[..], b"def");
    assert_eq!(&chunks.take(1)[..], b"g");
    assert_eq!(chunks.len, 0);
}
