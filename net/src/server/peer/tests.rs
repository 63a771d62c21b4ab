//! The peer transport on loopback, several members in one executor: batches flow, a peer
//! that is down is reported and reached once it comes up, other clusters and garbage are
//! refused, full queues drop and report, snapshots travel apart, membership changes at
//! run time, shutdown closes everything. Ports 26000-26999 only, one range per test.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv_raft::{
    ConfState, Entry, EntryKind, LogIndex, MemberId, Message, MessageBody, Snapshot, SnapshotMeta,
    Term,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};

use super::codec;
use super::handshake::{self, HandshakeStatus, Lane};
use super::{PeerConfig, PeerTransport, INCOMING_CONNECTIONS_MAX};

const CLUSTER: u64 = 0xc1;
/// How long a test waits for something that should happen at once on loopback.
const DEADLINE: Duration = Duration::from_secs(3);
/// How long a test waits to be confident something does not happen.
const QUIET: Duration = Duration::from_millis(300);
/// The pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(5);

/// Runs `test` on a fresh glommio executor.
fn run<F>(test: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(test)
        .expect("spawn executor")
        .join()
        .expect("executor ran");
}

fn address(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(me: u64, port: u16, peers: &[(u64, u16)]) -> PeerConfig {
    PeerConfig {
        cluster_id: CLUSTER,
        me,
        listen: vec![address(port)],
        peers: peers
            .iter()
            .map(|&(id, port)| (id, vec![address(port)]))
            .collect(),
        frame_bytes_max: 1 << 20,
        snapshot_bytes_max: 8 << 30,
        queue_messages_max: 1024,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
    }
}

fn start(config: PeerConfig) -> (Rc<PeerTransport>, LocalReceiver<Vec<Message>>) {
    let (inbox, receiver) = local_channel::new_bounded(1024);
    let transport = PeerTransport::start(config, Rc::new(inbox)).expect("transport starts");
    (transport, receiver)
}

fn heartbeat(from: u64, to: u64, round: u64) -> Message {
    Message {
        from: MemberId(from),
        to: MemberId(to),
        term: Term(1),
        body: MessageBody::Heartbeat {
            commit: LogIndex(0),
            read_round: round,
        },
    }
}

fn round_of(message: &Message) -> u64 {
    match message.body {
        MessageBody::Heartbeat { read_round, .. } => read_round,
        _ => panic!("not a heartbeat: {message:?}"),
    }
}

fn snapshot(from: u64, to: u64, bytes: usize) -> Message {
    Message {
        from: MemberId(from),
        to: MemberId(to),
        term: Term(2),
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(100),
                    term: Term(2),
                    conf_state: ConfState {
                        voters: vec![MemberId(from), MemberId(to)],
                        learners: vec![],
                    },
                },
                data: (0..bytes).map(|i| (i % 251) as u8).collect(),
            },
        },
    }
}

/// The next batch, or `None` if none arrives within `wait`.
async fn next_batch(inbox: &LocalReceiver<Vec<Message>>, wait: Duration) -> Option<Vec<Message>> {
    futures_lite::future::or(inbox.recv(), async {
        glommio::timer::sleep(wait).await;
        None
    })
    .await
}

/// Collects batches until `count` messages arrived; panics at the deadline.
async fn receive(inbox: &LocalReceiver<Vec<Message>>, count: usize) -> (Vec<Message>, usize) {
    let deadline = Instant::now() + DEADLINE;
    let mut messages = Vec::new();
    let mut batches = 0;
    while messages.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = next_batch(inbox, left)
            .await
            .unwrap_or_else(|| panic!("only {} of {count} messages arrived", messages.len()));
        batches += 1;
        messages.extend(batch);
    }
    (messages, batches)
}

/// Waits until `condition` holds; panics at the deadline.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(POLL).await;
    }
}

/// Waits until `transport` has reported `member` unreachable.
async fn wait_unreachable(transport: &PeerTransport, member: u64) {
    let mut seen = false;
    wait_until("an unreachable report", || {
        seen |= transport.take_unreachable().contains(&member);
        seen
    })
    .await;
}

/// Sends heartbeats from `from` to `to` until one arrives (the link may be backing off).
async fn reach(transport: &PeerTransport, inbox: &LocalReceiver<Vec<Message>>, from: u64, to: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        transport.send(vec![heartbeat(from, to, 0)]);
        if next_batch(inbox, Duration::from_millis(20)).await.is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "{from:x} never reached {to:x}");
    }
}

/// Dials `port` by hand and completes a handshake; returns the stream and the reply.
async fn raw_handshake(
    port: u16,
    cluster: u64,
    from: u64,
    to: u64,
) -> (TcpStream, handshake::Reply) {
    raw_handshake_on(Lane::Messages, port, cluster, from, to).await
}

/// [`raw_handshake`] for a connection of the given lane.
async fn raw_handshake_on(
    lane: Lane,
    port: u16,
    cluster: u64,
    from: u64,
    to: u64,
) -> (TcpStream, handshake::Reply) {
    let mut stream = TcpStream::connect(address(port)).await.expect("connects");
    stream
        .write_all(&handshake::encode_hello(lane, cluster, from, to))
        .await
        .expect("writes hello");
    let mut reply = [0u8; handshake::REPLY_BYTES];
    stream.read_exact(&mut reply).await.expect("reads reply");
    (stream, handshake::decode_reply(&reply).expect("a reply"))
}

/// Whether the other side closes `stream` (end of stream or reset) within the deadline.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let read = futures_lite::future::or(async { Some(stream.read(&mut byte).await) }, async {
        glommio::timer::sleep(DEADLINE).await;
        None
    })
    .await;
    matches!(read, Some(Ok(0)) | Some(Err(_)))
}

/// Three members exchange batches: everything sent arrives once, in order, coalesced
/// into far fewer frames than messages; entries keep their kind and data.
#[test]
fn batches_flow_between_three_members() {
    run(|| async {
        let (a, a_inbox) = start(config(1, 26001, &[(2, 26002), (3, 26003)]));
        let (b, b_inbox) = start(config(2, 26002, &[(1, 26001), (3, 26003)]));
        let (c, c_inbox) = start(config(3, 26003, &[(1, 26001), (2, 26002)]));
        a.send((0..200).map(|round| heartbeat(1, 2, round)).collect());
        let append = Message {
            from: MemberId(1),
            to: MemberId(3),
            term: Term(1),
            body: MessageBody::Append {
                prev_index: LogIndex(0),
                prev_term: Term(0),
                entries: vec![
                    Entry {
                        term: Term(1),
                        index: LogIndex(1),
                        kind: EntryKind::ConfChange,
                        data: vec![1, 2, 3],
                    },
                    Entry {
                        term: Term(1),
                        index: LogIndex(2),
                        kind: EntryKind::Normal,
                        data: vec![9; 10_000],
                    },
                ],
                commit: LogIndex(0),
            },
        };
        a.send(vec![append.clone()]);
        b.send((0..50).map(|round| heartbeat(2, 1, round)).collect());
        c.send(vec![heartbeat(3, 1, 7), heartbeat(3, 2, 8)]);

        let (to_b, batches) = receive(&b_inbox, 201).await;
        let rounds: Vec<u64> = to_b
            .iter()
            .filter(|m| m.from == MemberId(1))
            .map(round_of)
            .collect();
        assert_eq!(rounds, (0..200).collect::<Vec<_>>());
        assert!(
            batches <= 20,
            "200 messages sent at once came in {batches} frames"
        );
        let (to_c, _) = receive(&c_inbox, 1).await;
        assert_eq!(to_c, vec![append]);
        let (to_a, _) = receive(&a_inbox, 51).await;
        let from_b: Vec<u64> = to_a
            .iter()
            .filter(|m| m.from == MemberId(2))
            .map(round_of)
            .collect();
        assert_eq!(from_b, (0..50).collect::<Vec<_>>());
        assert!(to_a.contains(&heartbeat(3, 1, 7)));
        assert!(next_batch(&a_inbox, QUIET).await.is_none(), "nothing twice");
        for transport in [a, b, c] {
            transport.shutdown();
        }
    });
}

/// A peer that is down is reported unreachable (each report once per call), its
/// messages are dropped meanwhile, and they flow once it comes up.
#[test]
fn down_peer_is_reported_then_reached() {
    run(|| async {
        let (a, _a_inbox) = start(config(1, 26011, &[(2, 26012)]));
        a.send(vec![heartbeat(1, 2, 0)]);
        wait_unreachable(&a, 2).await;
        let (b, b_inbox) = start(config(2, 26012, &[(1, 26011)]));
        reach(&a, &b_inbox, 1, 2).await;
        // Connected now: a burst arrives whole and in order.
        a.send((1..=20).map(|round| heartbeat(1, 2, round)).collect());
        let (messages, _) = receive(&b_inbox, 20).await;
        let rounds: Vec<u64> = messages.iter().map(round_of).collect();
        let first = rounds
            .iter()
            .position(|&r| r == 1)
            .expect("round 1 arrived");
        assert_eq!(rounds[first..], (1..=20).collect::<Vec<_>>());
        a.shutdown();
        b.shutdown();
    });
}

/// A member of another cluster is refused at the handshake, with the refusal's reason in
/// the reply; nothing reaches the inbox and the dialer reports the peer unreachable.
#[test]
fn other_cluster_is_refused() {
    run(|| async {
        let (a, _a_inbox) = start(config(1, 26021, &[(2, 26022)]));
        let mut other = config(2, 26022, &[(1, 26021)]);
        other.cluster_id = 0xc2;
        let (b, b_inbox) = start(other);
        a.send(vec![heartbeat(1, 2, 0)]);
        wait_unreachable(&a, 2).await;
        a.send(vec![heartbeat(1, 2, 1)]);
        assert!(next_batch(&b_inbox, QUIET).await.is_none());

        let (mut stream, reply) = raw_handshake(26022, CLUSTER, 1, 2).await;
        assert_eq!(reply.status, HandshakeStatus::ClusterMismatch);
        assert_eq!(reply.cluster_id, 0xc2);
        assert!(closed_by_peer(&mut stream).await);
        let (mut stream, reply) = raw_handshake(26022, 0xc2, 1, 9).await;
        assert_eq!(reply.status, HandshakeStatus::WrongMember);
        assert!(closed_by_peer(&mut stream).await);
        let (mut stream, reply) = raw_handshake(26022, 0xc2, 7, 2).await;
        assert_eq!(reply.status, HandshakeStatus::UnknownMember);
        assert!(closed_by_peer(&mut stream).await);
        a.shutdown();
        b.shutdown();
    });
}

/// Garbage instead of a handshake, a garbage frame, a frame over the limit and a message
/// in another member's name each close their connection; the member keeps serving.
#[test]
fn garbage_closes_the_connection() {
    run(|| async {
        let (b, b_inbox) = start(config(2, 26031, &[(1, 26032), (3, 26033)]));

        let mut stream = TcpStream::connect(address(26031)).await.expect("connects");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: corekv\r\n\r\n")
            .await
            .expect("writes");
        assert!(closed_by_peer(&mut stream).await, "bad magic");

        let (mut stream, reply) = raw_handshake(26031, CLUSTER, 1, 2).await;
        assert_eq!(reply.status, HandshakeStatus::Accepted);
        let mut garbage = 40u32.to_le_bytes().to_vec();
        garbage.extend_from_slice(&0u64.to_le_bytes());
        garbage.extend(std::iter::repeat_n(0xee, 40));
        stream.write_all(&garbage).await.expect("writes");
        assert!(closed_by_peer(&mut stream).await, "garbage frame");

        let (mut stream, _) = raw_handshake(26031, CLUSTER, 1, 2).await;
        let mut over = 100u32.to_le_bytes().to_vec();
        over.extend_from_slice(&(1u64 << 20).to_le_bytes());
        stream.write_all(&over).await.expect("writes");
        assert!(closed_by_peer(&mut stream).await, "frame over the limit");

        // A snapshot connection may announce gigabytes of data, but not a head over the
        // frame limit of messages (the head is allocated before it is read).
        let (mut stream, reply) = raw_handshake_on(Lane::Snapshot, 26031, CLUSTER, 1, 2).await;
        assert_eq!(reply.status, HandshakeStatus::Accepted);
        let mut lying = u32::MAX.to_le_bytes().to_vec();
        lying.extend_from_slice(&0u64.to_le_bytes());
        stream.write_all(&lying).await.expect("writes");
        assert!(
            closed_by_peer(&mut stream).await,
            "snapshot head over the limit"
        );

        let (mut stream, _) = raw_handshake(26031, CLUSTER, 1, 2).await;
        let forged = codec::encode_frame(0, &[heartbeat(3, 2, 0)]).expect("encodes");
        stream.write_all(&forged).await.expect("writes");
        assert!(
            closed_by_peer(&mut stream).await,
            "message in another's name"
        );

        assert!(next_batch(&b_inbox, QUIET).await.is_none());
        let (mut stream, _) = raw_handshake(26031, CLUSTER, 1, 2).await;
        let good = codec::encode_frame(0, &[heartbeat(1, 2, 5)]).expect("encodes");
        stream.write_all(&good).await.expect("writes");
        let (messages, _) = receive(&b_inbox, 1).await;
        assert_eq!(messages, vec![heartbeat(1, 2, 5)]);
        b.shutdown();
    });
}

/// Past `queue_messages_max` queued messages, further ones are dropped and the peer is
/// reported unreachable at once; the queued ones are still delivered, in order.
#[test]
fn queue_overflow_drops_and_reports() {
    run(|| async {
        let (b, b_inbox) = start(config(2, 26042, &[(1, 26041)]));
        let mut small = config(1, 26041, &[(2, 26042)]);
        small.queue_messages_max = 4;
        let (a, _a_inbox) = start(small);
        a.send((0..10).map(|round| heartbeat(1, 2, round)).collect());
        assert_eq!(a.take_unreachable(), vec![2]);
        assert_eq!(a.take_unreachable(), Vec::<u64>::new(), "reported once");
        let (messages, _) = receive(&b_inbox, 4).await;
        assert_eq!(
            messages.iter().map(round_of).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(next_batch(&b_inbox, QUIET).await.is_none());
        a.shutdown();
        b.shutdown();
    });
}

/// A snapshot travels on a connection of its own, under its own limit (many times the
/// frame limit of messages), and is reported delivered; one over the sender's snapshot
/// limit is dropped and reported failed at once, one over the receiver's is refused
/// there and reported failed; a message over the frame limit is dropped.
#[test]
fn snapshots_and_limits() {
    run(|| async {
        let mut a_config = config(1, 26051, &[(2, 26052)]);
        a_config.snapshot_bytes_max = 48 << 20;
        let (a, _a_inbox) = start(a_config);
        let mut b_config = config(2, 26052, &[(1, 26051)]);
        b_config.snapshot_bytes_max = 32 << 20;
        let (b, b_inbox) = start(b_config);

        let big = snapshot(1, 2, 24 << 20);
        a.send(vec![big.clone(), heartbeat(1, 2, 1)]);
        let (messages, _) = receive(&b_inbox, 2).await;
        assert!(messages.contains(&big), "the snapshot arrived intact");
        assert!(messages.contains(&heartbeat(1, 2, 1)));
        wait_until("the snapshot report", || {
            let reports = a.take_snapshot_reports();
            assert!(reports.iter().all(|&report| report == (2, true)));
            !reports.is_empty()
        })
        .await;

        a.take_unreachable();
        a.send(vec![snapshot(1, 2, 40 << 20)]);
        wait_until("the failed snapshot report", || {
            let reports = a.take_snapshot_reports();
            assert!(reports.iter().all(|&report| report == (2, false)));
            !reports.is_empty()
        })
        .await;
        wait_unreachable(&a, 2).await;

        a.send(vec![snapshot(1, 2, 50 << 20)]);
        assert_eq!(a.take_snapshot_reports(), vec![(2, false)]);
        assert_eq!(a.take_unreachable(), vec![2]);

        let mut oversized = heartbeat(2, 1, 0);
        oversized.body = MessageBody::Propose {
            entries: vec![Entry {
                term: Term(1),
                index: LogIndex(0),
                kind: EntryKind::Normal,
                data: vec![0; 2 << 20],
            }],
        };
        b.send(vec![oversized]);
        assert_eq!(b.take_unreachable(), vec![1]);
        a.shutdown();
        b.shutdown();
    });
}

/// Peers are added and removed at run time: an unknown member is refused until added,
/// then its messages flow; once removed, its connection is closed and it is refused.
#[test]
fn membership_changes_at_run_time() {
    run(|| async {
        let (a, a_inbox) = start(config(1, 26061, &[]));
        let (b, _b_inbox) = start(config(2, 26062, &[(1, 26061)]));
        b.send(vec![heartbeat(2, 1, 0)]);
        wait_unreachable(&b, 1).await;
        assert!(next_batch(&a_inbox, QUIET).await.is_none());

        a.set_peer(2, vec![address(26062)]);
        reach(&b, &a_inbox, 2, 1).await;

        b.take_unreachable();
        a.remove_peer(2);
        wait_unreachable(&b, 1).await;
        b.send(vec![heartbeat(2, 1, 1)]);
        assert!(next_batch(&a_inbox, QUIET).await.is_none());
        a.send(vec![heartbeat(1, 2, 0)]);
        assert_eq!(a.take_unreachable(), vec![2], "no longer a peer");
        a.shutdown();
        b.shutdown();
    });
}

/// Shutdown stops accepting and closes connections: the other side reports the member
/// unreachable and new connections are refused; later sends are ignored.
#[test]
fn shutdown_closes_everything() {
    run(|| async {
        let (a, _a_inbox) = start(config(1, 26071, &[(2, 26072)]));
        let (b, b_inbox) = start(config(2, 26072, &[(1, 26071)]));
        reach(&a, &b_inbox, 1, 2).await;
        a.take_unreachable();
        b.shutdown();
        wait_unreachable(&a, 2).await;
        let mut refused = false;
        wait_until("the listener to close", || {
            refused |= std::net::TcpStream::connect(address(26072)).is_err();
            refused
        })
        .await;
        b.send(vec![heartbeat(2, 1, 0)]);
        assert_eq!(b.take_unreachable(), Vec::<u64>::new());
        a.shutdown();
    });
}

/// An address in use and impossible settings are start-up errors.
#[test]
fn start_up_errors() {
    run(|| async {
        let _taken = std::net::TcpListener::bind(address(26081)).expect("binds");
        let (inbox, _receiver) = local_channel::new_bounded(1);
        let inbox = Rc::new(inbox);
        let error =
            PeerTransport::start(config(1, 26081, &[]), inbox.clone()).expect_err("address in use");
        assert!(
            format!("{error:#}").contains("cannot listen for peers on 127.0.0.1:26081"),
            "{error:#}"
        );
        let mut zero = config(0, 26082, &[]);
        assert!(PeerTransport::start(zero.clone(), inbox.clone()).is_err());
        zero.me = 1;
        zero.backoff_min = Duration::ZERO;
        assert!(PeerTransport::start(zero.clone(), inbox.clone()).is_err());
        zero.backoff_min = Duration::from_millis(1);
        zero.frame_bytes_max = 100;
        assert!(PeerTransport::start(zero, inbox).is_err());
    });
}

/// At most `INCOMING_CONNECTIONS_MAX` accepted connections are open at once: one more is
/// closed at once, and peers get in again once the others are gone.
#[test]
fn incoming_connections_are_bounded() {
    run(|| async {
        let (b, _b_inbox) = start(config(2, 26091, &[(1, 26092)]));
        let mut idle = Vec::new();
        for _ in 0..INCOMING_CONNECTIONS_MAX {
            idle.push(TcpStream::connect(address(26091)).await.expect("connects"));
        }
        let mut extra = TcpStream::connect(address(26091)).await.expect("connects");
        assert!(closed_by_peer(&mut extra).await, "one past the limit");
        drop(idle);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut stream = TcpStream::connect(address(26091)).await.expect("connects");
            let hello = handshake::encode_hello(Lane::Messages, CLUSTER, 1, 2);
            let mut reply = [0u8; handshake::REPLY_BYTES];
            if stream.write_all(&hello).await.is_ok() && stream.read_exact(&mut reply).await.is_ok()
            {
                let reply = handshake::decode_reply(&reply).expect("a reply");
                assert_eq!(reply.status, HandshakeStatus::Accepted);
                break;
            }
            assert!(Instant::now() < deadline, "never accepted again");
            glommio::timer::sleep(POLL).await;
        }
        b.shutdown();
    });
}
