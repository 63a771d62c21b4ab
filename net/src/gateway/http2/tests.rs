//! The HTTP/2 server over loopback TCP, in front of a fake shard: driven by the h2
//! crate's client (flow control both ways, concurrency, cancellation) and by raw
//! frames (every connection error ends with the RFC's GOAWAY code, stream errors with
//! RST_STREAM, and the connection lives on after them).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request as HttpRequest;
use bytes::{BufMut, Bytes, BytesMut};
use corekv_engine::{self as engine, LeaseId, Revision};
use prost::Message;

use super::frame::{self, Head};
use super::{serve, PREFACE};
use crate::gateway::hpack;
use crate::gateway::pb::etcdserverpb as pb;
use crate::gateway::service::Gateway;
use crate::gateway::unary::ClientService;
use crate::protocol::{Header, Request as ShardRequest, Response as ShardResponse};
use crate::server::bridge::{GatewayMessage, ShardHandle, Sink};
use crate::server::config::ServerConfig;
use crate::server::metrics::Metrics;

/// The fake shard: a range of `big:<n>` answers one key with an `n`-byte value; a
/// range of `never` is never answered; a put is acknowledged.
fn answer(request: ShardRequest) -> Option<ShardResponse> {
    let header = Header {
        cluster_id: 1,
        member_id: 2,
        revision: Revision(3),
        raft_term: 4,
    };
    match request {
        ShardRequest::Range(range) if range.key == b"never" => None,
        ShardRequest::Range(range) => {
            let size = std::str::from_utf8(&range.key)
                .ok()
                .and_then(|key| key.strip_prefix("big:"))
                .and_then(|size| size.parse().ok())
                .unwrap_or(1);
            Some(ShardResponse::Range(
                header,
                engine::RangeResponse {
                    kvs: vec![engine::KeyValue {
                        key: range.key,
                        create_revision: Revision(1),
                        mod_revision: Revision(1),
                        version: 1,
                        value: vec![b'v'; size],
                        lease: LeaseId(0),
                    }],
                    more: false,
                    count: 1,
                },
            ))
        }
        ShardRequest::Put(_) => Some(ShardResponse::Put(header, engine::PutResponse::default())),
        other => Some(ShardResponse::Error {
            code: tonic::Code::Unimplemented as u32,
            message: format!("the fake shard does not answer {other:?}"),
        }),
    }
}

/// Starts a server thread (a current-thread runtime, as a core runs the connection
/// task) and returns its address.
fn start() -> SocketAddr {
    start_with(true)
}

/// [`start`], with plain unary calls on the fast path or not.
fn start_with(fast_unary: bool) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let (handle, mut receiver) = ShardHandle::new();
            tokio::spawn(async move {
                let mut unanswered = Vec::new();
                while let Some(message) = receiver.recv().await {
                    if let GatewayMessage::Call {
                        request,
                        sink: Sink::Once(reply),
                        ..
                    } = message
                    {
                        match answer(request) {
                            Some(response) => {
                                let _ = reply.send(response);
                            }
                            None => unanswered.push(reply),
                        }
                    }
                }
            });
            let gateway = Gateway::new(
                handle,
                Arc::new(ServerConfig::default()),
                Arc::new(Metrics::default()),
            );
            let app = if fast_unary {
                ClientService::new(gateway)
            } else {
                ClientService::router_only(gateway)
            };
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let app = app.clone();
                tokio::task::spawn_local(async move {
                    use tokio::io::AsyncReadExt;
                    use tokio_util::compat::TokioAsyncReadCompatExt;
                    let mut preface = [0u8; PREFACE.len()];
                    if stream.read_exact(&mut preface).await.is_ok() && preface == *PREFACE {
                        serve(app, stream.compat()).await;
                    }
                });
            }
        });
    });
    address
}

fn grpc_message<M: Message>(message: &M) -> Bytes {
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(message.encoded_len() as u32);
    message.encode(&mut framed).unwrap();
    framed.freeze()
}

fn grpc_request(address: SocketAddr, path: &str) -> HttpRequest<()> {
    HttpRequest::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// Sends one unary call and returns the response body and the grpc-status.
async fn call(
    client: &mut h2::client::SendRequest<Bytes>,
    address: SocketAddr,
    path: &str,
    message: Bytes,
) -> (Vec<u8>, String) {
    let (response, mut send) = client
        .send_request(grpc_request(address, path), false)
        .unwrap();
    send.send_data(message, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let (data, trailers) = read_body(response.into_body()).await;
    let status = trailers
        .get("grpc-status")
        .map(|status| status.to_str().unwrap().to_string())
        .unwrap_or_default();
    (data, status)
}

/// Reads a response body to its end, giving its window back as it goes, and its
/// trailers.
async fn read_body(mut body: h2::RecvStream) -> (Vec<u8>, axum::http::HeaderMap) {
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    (data, trailers)
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(address: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(window.max(65_535))
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn range(key: &str) -> Bytes {
    grpc_message(&pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    })
}

/// A response far larger than the client's windows arrives whole as the client
/// grants more, and so does a request larger than the server's stream window.
#[test]
fn large_bodies_flow_both_ways_within_the_windows() {
    let address = start();
    client_runtime().block_on(async {
        let mut client = connect(address, 1024).await;
        let (body, status) = call(
            &mut client,
            address,
            "/etcdserverpb.KV/Range",
            range("big:300000"),
        )
        .await;
        assert_eq!(status, "0");
        let response = pb::RangeResponse::decode(&body[5..]).unwrap();
        assert_eq!(response.kvs[0].value.len(), 300_000);

        let put = grpc_message(&pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![7; 1_400_000],
            ..Default::default()
        });
        assert!(put.len() > super::STREAM_WINDOW as usize);
        let (_, status) = call(&mut client, address, "/etcdserverpb.KV/Put", put).await;
        assert_eq!(status, "0");
    });
}

/// Many calls in flight on one connection each get their own answer.
#[test]
fn concurrent_calls_on_one_connection() {
    let address = start();
    client_runtime().block_on(async {
        let client = connect(address, 65_535).await;
        let mut calls = Vec::new();
        for index in 0..300 {
            let mut client = client.clone();
            calls.push(tokio::spawn(async move {
                let key = format!("big:{}", 1 + index * 37);
                let (body, status) =
                    call(&mut client, address, "/etcdserverpb.KV/Range", range(&key)).await;
                assert_eq!(status, "0");
                let response = pb::RangeResponse::decode(&body[5..]).unwrap();
                assert_eq!(response.kvs[0].value.len(), 1 + index * 37);
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
    });
}

/// A call the client resets is dropped; the connection goes on serving.
#[test]
fn a_reset_call_leaves_the_connection_working() {
    let address = start();
    client_runtime().block_on(async {
        let mut client = connect(address, 65_535).await;
        let (response, mut send) = client
            .send_request(grpc_request(address, "/etcdserverpb.KV/Range"), false)
            .unwrap();
        send.send_data(range("never"), true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        send.send_reset(h2::Reason::CANCEL);
        assert!(response.await.is_err());
        let (_, status) = call(&mut client, address, "/etcdserverpb.KV/Range", range("a")).await;
        assert_eq!(status, "0");
    });
}

/// What a client sees of one call: status, headers, body and trailers.
async fn whole_answer(
    client: &mut h2::client::SendRequest<Bytes>,
    address: SocketAddr,
    path: &str,
    message: Bytes,
) -> (u16, Vec<(String, Vec<u8>)>, Vec<u8>, Vec<(String, Vec<u8>)>) {
    let (response, mut send) = client
        .send_request(grpc_request(address, path), false)
        .unwrap();
    send.send_data(message, true).unwrap();
    let response = response.await.unwrap();
    let list = |headers: &axum::http::HeaderMap| {
        headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    };
    let status = response.status().as_u16();
    let headers = list(response.headers());
    let (data, trailers) = read_body(response.into_body()).await;
    (status, headers, data, list(&trailers))
}

/// On the wire, the fast path's answers are the router's (tonic's), byte for byte:
/// successes, failures of the shard and malformed requests alike.
#[test]
fn the_fast_path_answers_on_the_wire_as_the_router_does() {
    let fast = start_with(true);
    let routed = start_with(false);
    let put = grpc_message(&pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    let cases: Vec<(&str, Bytes)> = vec![
        ("/etcdserverpb.KV/Range", range("big:1000")),
        ("/etcdserverpb.KV/Put", put),
        (
            "/etcdserverpb.KV/Txn",
            grpc_message(&pb::TxnRequest::default()),
        ),
        (
            "/etcdserverpb.KV/Range",
            Bytes::from_static(b"\x00\x00\x00\x00\x03\xff\xff\xff"),
        ),
        (
            "/etcdserverpb.KV/Range",
            Bytes::from_static(b"\x01\x00\x00\x00\x00"),
        ),
    ];
    client_runtime().block_on(async {
        let mut fast_client = connect(fast, 65_535).await;
        let mut routed_client = connect(routed, 65_535).await;
        for (path, message) in cases {
            let fast_answer = whole_answer(&mut fast_client, fast, path, message.clone()).await;
            let routed_answer = whole_answer(&mut routed_client, routed, path, message).await;
            assert_eq!(fast_answer, routed_answer, "{path}");
        }
    });
}

// ---- Raw frames ----

struct Raw {
    stream: std::net::TcpStream,
    buffer: Vec<u8>,
}

impl Raw {
    fn connect(address: SocketAddr) -> Raw {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut hello = PREFACE.to_vec();
        frame::put_settings(&mut hello, &[]);
        stream.write_all(&hello).unwrap();
        Raw {
            stream,
            buffer: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, or `None` once the server closed the connection.
    fn next(&mut self) -> Option<(Head, Vec<u8>)> {
        loop {
            if self.buffer.len() >= frame::HEAD_BYTES {
                let head = Head::parse(self.buffer[..frame::HEAD_BYTES].try_into().unwrap());
                if self.buffer.len() >= frame::HEAD_BYTES + head.length {
                    let payload =
                        self.buffer[frame::HEAD_BYTES..frame::HEAD_BYTES + head.length].to_vec();
                    self.buffer.drain(..frame::HEAD_BYTES + head.length);
                    return Some((head, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(count) => self.buffer.extend_from_slice(&chunk[..count]),
            }
        }
    }

    /// Frames up to the first of `kind`, which is returned.
    fn until(&mut self, kind: u8) -> Option<(Head, Vec<u8>)> {
        while let Some((head, payload)) = self.next() {
            if head.kind == kind {
                return Some((head, payload));
            }
        }
        None
    }

    /// The GOAWAY's error code, after which the server must close.
    fn goaway_code(&mut self) -> u32 {
        let (_, payload) = self.until(frame::GOAWAY).expect("a GOAWAY");
        assert!(self.next().is_none(), "the connection closes after GOAWAY");
        u32::from_be_bytes(payload[4..8].try_into().unwrap())
    }
}

fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        hpack::encode_field(&mut block, name.as_bytes(), value.as_bytes(), false);
    }
    block
}

fn get_version(stream: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/version"),
        (":authority", "http://127.0.0.1:2379"),
    ]);
    frame::put_header_block(&mut bytes, stream, &block, true, 16_384);
    bytes
}

#[test]
fn connection_errors_end_with_goaway_codes() {
    let address = start();
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "DATA on stream 0",
            {
                let mut bytes = Vec::new();
                frame::put_data(&mut bytes, 0, b"x", false);
                bytes
            },
            frame::PROTOCOL_ERROR,
        ),
        (
            "a frame over the maximum size",
            {
                let mut bytes = Vec::new();
                frame::put_data(&mut bytes, 1, &vec![0; 16_385], false);
                bytes
            },
            frame::FRAME_SIZE_ERROR,
        ),
        (
            "a PING of 7 bytes",
            {
                let mut bytes = Vec::new();
                frame::put_head(&mut bytes, 7, frame::PING, 0, 0);
                bytes.extend_from_slice(&[0; 7]);
                bytes
            },
            frame::FRAME_SIZE_ERROR,
        ),
        (
            "an HPACK index past the tables",
            {
                let mut bytes = Vec::new();
                frame::put_header_block(&mut bytes, 1, &[0xff, 0x7f], true, 16_384);
                bytes
            },
            frame::COMPRESSION_ERROR,
        ),
        (
            "PUSH_PROMISE from a client",
            {
                let mut bytes = Vec::new();
                frame::put_head(
                    &mut bytes,
                    4,
                    frame::PUSH_PROMISE,
                    frame::FLAG_END_HEADERS,
                    1,
                );
                bytes.extend_from_slice(&[0, 0, 0, 2]);
                bytes
            },
            frame::PROTOCOL_ERROR,
        ),
        ("an even stream id", get_version(2), frame::PROTOCOL_ERROR),
        (
            "a window past 2^31 - 1",
            {
                let mut bytes = Vec::new();
                frame::put_window_update(&mut bytes, 0, 0x7fff_ffff);
                bytes
            },
            frame::FLOW_CONTROL_ERROR,
        ),
        (
            "HEADERS interrupting a header block",
            {
                let mut bytes = Vec::new();
                frame::put_head(&mut bytes, 0, frame::HEADERS, 0, 1);
                bytes.extend_from_slice(&get_version(3));
                bytes
            },
            frame::PROTOCOL_ERROR,
        ),
    ];
    for (case, bytes, code) in cases {
        let mut raw = Raw::connect(address);
        raw.send(&bytes);
        assert_eq!(raw.goaway_code(), code, "{case}");
    }
}

#[test]
fn stream_errors_reset_only_their_stream() {
    let address = start();
    let mut raw = Raw::connect(address);
    let version = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/version"),
    ];
    let malformed: [(u32, Vec<(&str, &str)>); 3] = [
        // No :path.
        (1, version[..2].to_vec()),
        // An uppercase name.
        (3, [&version[..], &[("X-Up", "1")]].concat()),
        // A connection-specific field.
        (5, [&version[..], &[("connection", "close")]].concat()),
    ];
    let mut bytes = Vec::new();
    for (stream, fields) in &malformed {
        frame::put_header_block(&mut bytes, *stream, &header_block(fields), true, 16_384);
    }
    raw.send(&bytes);
    for (stream, _) in &malformed {
        let (head, payload) = raw.until(frame::RST_STREAM).expect("a reset");
        assert_eq!(head.stream, *stream);
        assert_eq!(
            u32::from_be_bytes(payload[..4].try_into().unwrap()),
            frame::PROTOCOL_ERROR
        );
    }
    // Trailers on a stream the server already reset are ignored (§5.1).
    let mut bytes = Vec::new();
    frame::put_header_block(
        &mut bytes,
        1,
        &header_block(&[("x-late", "1")]),
        true,
        16_384,
    );
    raw.send(&bytes);
    // PING is answered, and a good request on the same connection is served (the
    // etcd 3.4 style authority `http://host:port` included).
    let mut bytes = Vec::new();
    frame::put_head(&mut bytes, 8, frame::PING, 0, 0);
    bytes.extend_from_slice(b"pingpong");
    bytes.extend_from_slice(&get_version(7));
    raw.send(&bytes);
    let (head, payload) = raw.until(frame::PING).expect("a PING ACK");
    assert!(head.has(frame::FLAG_ACK));
    assert_eq!(payload, b"pingpong");
    let (head, _) = raw.until(frame::HEADERS).expect("the response head");
    assert_eq!(head.stream, 7);
    let (head, payload) = raw.until(frame::DATA).expect("the version");
    assert_eq!(head.stream, 7);
    assert!(String::from_utf8_lossy(&payload).contains("etcdserver"));
}
