//! The binary-protocol client against the in-process test double (`fake_server`):
//! every call, pipelining from many tasks on one connection, watch streams, server
//! errors carried verbatim, and connection failures reported as such.

#[path = "fake_server/mod.rs"]
mod fake_server;

use std::future::Future;

use corekv_engine::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, LeaseId, PutRequest,
    RangeRequest, RequestOp, Revision, TxnRequest, WatchRequest,
};
use corekv_net::client::{Client, ClientError, ClientOptions, WatchMessage};
use corekv_net::protocol::codec;
use fake_server::FakeServer;
use glommio::{LocalExecutorBuilder, Placement};

/// Runs `test` on a fresh glommio executor and returns its result.
fn run<F, T>(test: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(test)
        .expect("spawn executor")
        .join()
        .expect("executor ran")
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }
}

/// Put, get, range with a prefix, delete with prev_kv, compact and status all work and
/// headers carry the store revision.
#[test]
fn kv_calls() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        let (header, _) = client.put(put("a/1", "x")).await.expect("put");
        assert_eq!(header.revision, Revision(2));
        assert_eq!(header.member_id, fake_server::FAKE_MEMBER_ID);
        client.put(put("a/2", "y")).await.expect("put");
        client.put(put("b", "z")).await.expect("put");
        let kv = client.get(b"a/1").await.expect("get").expect("exists");
        assert_eq!(kv.value, b"x");
        assert_eq!(client.get(b"nope").await.expect("get"), None);
        let (header, range) = client
            .range(RangeRequest {
                key: b"a/".to_vec(),
                range_end: b"a0".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .expect("range");
        assert_eq!(header.revision, Revision(4));
        assert_eq!(range.count, 2);
        assert_eq!(range.kvs.len(), 2);
        let (_, deleted) = client
            .delete_range(DeleteRangeRequest {
                key: b"a/".to_vec(),
                range_end: b"a0".to_vec(),
                prev_kv: true,
            })
            .await
            .expect("delete");
        assert_eq!(deleted.deleted, 2);
        assert_eq!(deleted.prev_kvs[1].value, b"y");
        client.compact(Revision(3), true).await.expect("compact");
        let status = client.status().await.expect("status");
        assert_eq!(status.header.revision, Revision(5));
        assert_eq!(status.leader, fake_server::FAKE_MEMBER_ID);
    });
}

/// A txn's compare chooses the branch and its responses come back in order.
#[test]
fn txn_call() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        client.put(put("k", "v1")).await.expect("put");
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Value(b"v1".to_vec()),
                key: b"k".to_vec(),
                range_end: Vec::new(),
            }],
            success: vec![
                RequestOp::Put(put("k", "v2")),
                RequestOp::Range(RangeRequest {
                    key: b"k".to_vec(),
                    ..RangeRequest::default()
                }),
            ],
            failure: vec![],
        };
        let (_, response) = client.txn(txn.clone()).await.expect("txn");
        assert!(response.succeeded);
        assert_eq!(response.responses.len(), 2);
        let (_, response) = client.txn(txn).await.expect("txn");
        assert!(!response.succeeded);
        assert_eq!(client.get(b"k").await.unwrap().unwrap().value, b"v2");
    });
}

/// A refused request becomes a `Server` error with etcd's code and exact message, and
/// the connection stays usable.
#[test]
fn server_errors_are_carried_verbatim() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        let error = client.put(put("", "v")).await.unwrap_err();
        assert_eq!(error.code(), Some(3));
        assert_eq!(error.to_string(), "etcdserver: key is not provided");
        let error = client
            .range(RangeRequest {
                key: b"k".to_vec(),
                revision: Revision(100),
                ..RangeRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(11));
        assert_eq!(
            error.to_string(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        client.put(put("k", "v")).await.expect("still usable");
    });
}

/// A thousand requests from a hundred tasks share one connection; every task gets its
/// own answers.
#[test]
fn pipelined_requests_from_many_tasks() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        let mut tasks = Vec::new();
        for task in 0..100 {
            let client = client.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..10 {
                    let key = format!("t{task}/{i}");
                    client.put(put(&key, &key)).await.expect("put");
                    let kv = client
                        .get(key.as_bytes())
                        .await
                        .expect("get")
                        .expect("exists");
                    assert_eq!(kv.value, key.as_bytes());
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let (_, range) = client
            .range(RangeRequest {
                key: b"t".to_vec(),
                range_end: b"u".to_vec(),
                count_only: true,
                ..RangeRequest::default()
            })
            .await
            .expect("count");
        assert_eq!(range.count, 1000);
    });
}

/// With an in-flight bound of 2, fifty concurrent requests still all complete.
#[test]
fn in_flight_bound_queues_callers() {
    let server = FakeServer::start();
    run(move || async move {
        let options = ClientOptions {
            in_flight_max: 2,
            ..ClientOptions::default()
        };
        let client = Client::connect_with(&server.address, options)
            .await
            .expect("connect");
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let client = client.clone();
                glommio::spawn_local(async move {
                    client.put(put(&format!("k{i}"), "v")).await.expect("put")
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        assert_eq!(client.status().await.unwrap().header.revision, Revision(51));
    });
}

/// A watch sees puts and deletes in order with prev_kv, and cancelling ends the
/// stream with a Canceled message, then None.
#[test]
fn watch_stream_and_cancel() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        let mut watch = client
            .watch(WatchRequest {
                key: b"w/".to_vec(),
                range_end: b"w0".to_vec(),
                prev_kv: true,
                ..WatchRequest::default()
            })
            .await
            .expect("watch");
        client.put(put("w/a", "1")).await.expect("put");
        client.put(put("w/a", "2")).await.expect("put");
        client.put(put("other", "x")).await.expect("put");
        client
            .delete_range(DeleteRangeRequest {
                key: b"w/a".to_vec(),
                ..DeleteRangeRequest::default()
            })
            .await
            .expect("delete");
        let mut events = Vec::new();
        while events.len() < 3 {
            match watch.next().await.expect("open").expect("events") {
                WatchMessage::Events(_, batch) => events.extend(batch),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b"1");
        assert_eq!(events[2].kind, EventKind::Delete);
        assert_eq!(events[2].kv.mod_revision, Revision(5));
        watch.cancel().await.expect("cancel");
        assert!(matches!(
            watch.next().await,
            Some(Ok(WatchMessage::Canceled {
                compact_revision: Revision(0),
                ..
            }))
        ));
        assert!(watch.next().await.is_none());
    });
}

/// A watch from an old revision replays history first; one below the compact revision
/// is created and cancelled with the compact revision.
#[test]
fn watch_history_and_compaction() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        for i in 0..5 {
            client.put(put("h", &i.to_string())).await.expect("put");
        }
        let mut watch = client
            .watch(WatchRequest {
                key: b"h".to_vec(),
                start_revision: Revision(3),
                ..WatchRequest::default()
            })
            .await
            .expect("watch");
        let mut values = Vec::new();
        while values.len() < 4 {
            if let WatchMessage::Events(_, events) = watch.next().await.unwrap().unwrap() {
                values.extend(events.into_iter().map(|e| e.kv.value));
            }
        }
        assert_eq!(
            values,
            vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
        );
        client.compact(Revision(5), false).await.expect("compact");
        let mut old = client
            .watch(WatchRequest {
                key: b"h".to_vec(),
                start_revision: Revision(2),
                ..WatchRequest::default()
            })
            .await
            .expect("created, then cancelled");
        assert!(matches!(
            old.next().await,
            Some(Ok(WatchMessage::Canceled {
                compact_revision: Revision(5),
                ..
            }))
        ));
    });
}

/// Lease grant, time-to-live with keys, keep-alive, list and revoke (which deletes the
/// attached key); a missing lease reads as TTL -1 and keeps alive with TTL 0.
#[test]
fn lease_calls() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        let grant = client.lease_grant(LeaseId::NONE, 60).await.expect("grant");
        assert_eq!(grant.ttl_seconds, 60);
        client
            .put(PutRequest {
                lease: grant.id,
                ..put("leased", "v")
            })
            .await
            .expect("put");
        let ttl = client
            .lease_time_to_live(grant.id, true)
            .await
            .expect("ttl");
        assert_eq!(ttl.granted_ttl_seconds, 60);
        assert_eq!(ttl.keys, vec![b"leased".to_vec()]);
        let (_, renewed) = client.lease_keep_alive(grant.id).await.expect("keep alive");
        assert_eq!(renewed, 60);
        let (_, ids) = client.lease_leases().await.expect("leases");
        assert_eq!(ids, vec![grant.id]);
        client.lease_revoke(grant.id).await.expect("revoke");
        assert_eq!(client.get(b"leased").await.unwrap(), None);
        let ttl = client
            .lease_time_to_live(grant.id, false)
            .await
            .expect("ttl");
        assert_eq!(ttl.ttl_seconds, -1);
        let (_, renewed) = client.lease_keep_alive(grant.id).await.expect("keep alive");
        assert_eq!(renewed, 0);
        let error = client.lease_revoke(grant.id).await.unwrap_err();
        assert_eq!(error.to_string(), "etcdserver: requested lease not found");
    });
}

/// A request over the frame limit fails locally and the connection stays usable.
#[test]
fn oversized_request_fails_locally() {
    let server = FakeServer::start();
    run(move || async move {
        let client = Client::connect(&server.address).await.expect("connect");
        let big = "x".repeat(codec::FRAME_BYTES_MAX_DEFAULT);
        let error = client.put(put("k", &big)).await.unwrap_err();
        assert!(
            matches!(error, ClientError::RequestTooLarge { .. }),
            "{error}"
        );
        client.put(put("k", "small")).await.expect("still usable");
    });
}

/// Nothing listening: a clear connect error naming the address.
#[test]
fn unreachable_server_is_a_connect_error() {
    // Bind then drop a listener to find a port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let error = run(move || async move { Client::connect(&address).await.unwrap_err() });
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("cannot connect to 127.0.0.1:"),
        "{error}"
    );
}

/// A server that accepts the handshake and then hangs up fails the request in flight
/// and every later one with ConnectionLost.
#[test]
fn server_hang_up_fails_requests() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept().unwrap();
        let mut hello = [0u8; codec::HANDSHAKE_BYTES];
        socket.read_exact(&mut hello).unwrap();
        let mut reply = codec::MAGIC.to_vec();
        reply.extend_from_slice(&codec::PROTOCOL_VERSION.to_le_bytes());
        reply.extend_from_slice(&[0, 0]);
        socket.write_all(&reply).unwrap();
        let mut frame = [0u8; 4];
        socket.read_exact(&mut frame).unwrap();
        // Hang up without answering.
    });
    run(move || async move {
        let client = Client::connect(&address).await.expect("connect");
        let error = client.status().await.unwrap_err();
        assert!(
            matches!(error, ClientError::ConnectionLost { .. }),
            "{error}"
        );
        let error = client.status().await.unwrap_err();
        assert!(
            matches!(error, ClientError::ConnectionLost { .. }),
            "{error}"
        );
        assert!(client.is_closed());
    });
}

/// A peer that answers the handshake with something else is a handshake error.
#[test]
fn wrong_peer_is_a_handshake_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = listener.accept().unwrap();
        let mut hello = [0u8; codec::HANDSHAKE_BYTES];
        socket.read_exact(&mut hello).unwrap();
        socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .unwrap();
    });
    let error = run(move || async move { Client::connect(&address).await.unwrap_err() });
    assert!(matches!(error, ClientError::Handshake { .. }), "{error}");
}

/// The test double answers a malformed frame with an error frame under the frame's id
/// and closes the connection, as docs/protocol.md requires of servers.
#[test]
fn malformed_frame_gets_error_frame_and_close() {
    use std::io::{Read, Write};
    let server = FakeServer::start();
    let mut socket = std::net::TcpStream::connect(&server.address).unwrap();
    let mut hello = codec::MAGIC.to_vec();
    hello.extend_from_slice(&codec::PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&[0, 0]);
    socket.write_all(&hello).unwrap();
    let mut reply = [0u8; codec::HANDSHAKE_BYTES];
    socket.read_exact(&mut reply).unwrap();
    let mut frame = 9u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&42u64.to_le_bytes());
    frame.push(0x7f);
    socket.write_all(&frame).unwrap();
    let mut rest = Vec::new();
    socket.read_to_end(&mut rest).unwrap();
    let (id, response) = codec::decode_response(&rest[4..]).expect("one error frame");
    assert_eq!(id, 42);
    assert_eq!(
        response,
        corekv_net::protocol::Response::Error {
            code: 3,
            message: "corekv: protocol: unknown request tag 127 at offset 8".into()
        }
    );
}

/// `connect_until` gives up with the connect error once the deadline has passed, and
/// connects to a server that is up.
#[test]
fn connect_until_waits_for_the_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let refused = address.clone();
    let error = run(move || async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
        Client::connect_until(&refused, deadline, std::time::Duration::from_millis(10))
            .await
            .unwrap_err()
    });
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
    let server = FakeServer::start();
    run(move || async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let client = Client::connect_until(
            &server.address,
            deadline,
            std::time::Duration::from_millis(10),
        )
        .await
        .expect("connects");
        client.status().await.expect("status");
    });
}
