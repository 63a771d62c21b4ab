//! etcd's KV errors, Lease, Cluster, Lock and Election services and the HTTP endpoints
//! through a real gRPC client (tonic), against corekv and against the real etcd 3.4
//! (see `corekv_tests::grpc`): exact gRPC codes and messages, keep-alive streams,
//! blocking locks and elections, `/health`, `/version` and `/metrics`.
//!
//! The Watch service is in `grpc_watch.rs`, Maintenance in `grpc_maintenance.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use corekv_net::gateway::pb::etcdserverpb as pb;
use corekv_net::gateway::pb::etcdserverpb::cluster_client::ClusterClient;
use corekv_net::gateway::pb::v3electionpb as epb;
use corekv_net::gateway::pb::v3electionpb::election_client::ElectionClient;
use corekv_net::gateway::pb::v3lockpb as lpb;
use corekv_net::gateway::pb::v3lockpb::lock_client::LockClient;
use corekv_tests::grpc::{
    assert_status, http_get, prefix_end, scenario, text, Api, Target, STREAM_TIMEOUT,
};
use corekv_tests::TestServer;
use tokio::sync::mpsc;
use tonic::Code;

fn put_op(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..pb::PutRequest::default()
        })),
    }
}

fn txn_of(ops: Vec<pb::RequestOp>) -> pb::TxnRequest {
    pb::TxnRequest {
        success: ops,
        ..pb::TxnRequest::default()
    }
}

fn range_at(key: &str, revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        revision,
        ..pb::RangeRequest::default()
    }
}

#[test]
fn kv_edge_errors_carry_etcds_codes_and_messages() {
    // Each refused request gets etcd's gRPC code and message; the request at the limit
    // (4 ops, a value well under 4096 bytes) is accepted.
    let flags = ["--max-txn-ops", "4", "--max-request-bytes", "4096"];
    scenario("grpc_kv_errors", &flags, |server| async move {
        let api = server.connect().await;
        let mut kv = api.kv();
        let empty_key = "etcdserver: key is not provided";
        let range = kv.range(pb::RangeRequest::default()).await;
        assert_status(range, Code::InvalidArgument, empty_key);
        let put = kv.put(pb::PutRequest::default()).await;
        assert_status(put, Code::InvalidArgument, empty_key);
        let delete = kv.delete_range(pb::DeleteRangeRequest::default()).await;
        assert_status(delete, Code::InvalidArgument, empty_key);

        api.put("a", "1").await;
        api.put("a", "2").await;
        assert_eq!(api.put("a", "3").await, 4);
        let future = "etcdserver: mvcc: required revision is a future revision";
        let compacted = "etcdserver: mvcc: required revision has been compacted";
        assert_status(kv.range(range_at("a", 5)).await, Code::OutOfRange, future);
        let compact = |revision| pb::CompactionRequest {
            revision,
            physical: false,
        };
        kv.compact(compact(3)).await.expect("compact at 3");
        assert_status(
            kv.range(range_at("a", 2)).await,
            Code::OutOfRange,
            compacted,
        );
        let at_compaction = kv.range(range_at("a", 3)).await.expect("read at 3");
        assert_eq!(text(&at_compaction.into_inner().kvs[0].value), "2");
        assert_status(kv.compact(compact(3)).await, Code::OutOfRange, compacted);
        assert_status(kv.compact(compact(99)).await, Code::OutOfRange, future);

        let leased = pb::PutRequest {
            key: "b".into(),
            lease: 0x1234,
            ..pb::PutRequest::default()
        };
        assert_status(
            kv.put(leased).await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );

        let duplicate = txn_of(vec![put_op("d", "1"), put_op("d", "2")]);
        assert_status(
            kv.txn(duplicate).await,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        let five = txn_of((0..5).map(|i| put_op(&format!("t{i}"), "v")).collect());
        assert_status(
            kv.txn(five).await,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        let four = txn_of((0..4).map(|i| put_op(&format!("t{i}"), "v")).collect());
        let four = kv.txn(four).await.expect("4 ops is the limit").into_inner();
        assert!(four.succeeded);
        assert_eq!(four.header.expect("header").revision, 5);

        let large = pb::PutRequest {
            key: "large".into(),
            value: vec![b'x'; 5000],
            ..pb::PutRequest::default()
        };
        assert_status(
            kv.put(large).await,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        let fits = pb::PutRequest {
            key: "large".into(),
            value: vec![b'x'; 3000],
            ..pb::PutRequest::default()
        };
        assert_eq!(api.put_with(fits).await.header.expect("header").revision, 6);
    });
}

/// A LeaseKeepAlive stream: requests in, responses out, in order.
struct KeepAlive {
    requests: mpsc::UnboundedSender<pb::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

impl KeepAlive {
    async fn open(api: &Api, first: i64) -> KeepAlive {
        let (requests, receiver) = mpsc::unbounded_channel();
        requests
            .send(pb::LeaseKeepAliveRequest { id: first })
            .expect("the channel is open");
        let stream = tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        let responses = api
            .lease()
            .lease_keep_alive(stream)
            .await
            .expect("keep-alive call")
            .into_inner();
        KeepAlive {
            requests,
            responses,
        }
    }

    fn send(&self, id: i64) {
        self.requests
            .send(pb::LeaseKeepAliveRequest { id })
            .expect("the keep-alive call is running");
    }

    /// The next response as (id, TTL).
    async fn next(&mut self) -> (i64, i64) {
        let response = tokio::time::timeout(STREAM_TIMEOUT, self.responses.message())
            .await
            .expect("a keep-alive response in time")
            .expect("the keep-alive stream works")
            .expect("the keep-alive stream is open");
        (response.id, response.ttl)
    }
}

async fn time_to_live(api: &Api, id: i64, keys: bool) -> pb::LeaseTimeToLiveResponse {
    api.lease()
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys })
        .await
        .expect("lease time-to-live")
        .into_inner()
}

async fn lease_ids(api: &Api) -> Vec<i64> {
    let leases = api
        .lease()
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("lease leases")
        .into_inner();
    let mut ids: Vec<i64> = leases.leases.iter().map(|lease| lease.id).collect();
    ids.sort();
    ids
}

#[test]
fn keep_alives_on_one_stream_refresh_their_leases() {
    // Several keep-alives on one stream are answered in order with the lease's granted
    // TTL, and the remaining TTL goes back up; an unknown lease is answered with TTL 0.
    scenario("grpc_lease_keep_alive", &[], |server| async move {
        let api = server.connect().await;
        let short = api.grant(5).await;
        let long = api.grant(10).await;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let before = time_to_live(&api, short, false).await;
        assert_eq!((before.id, before.granted_ttl), (short, 5));
        assert!(
            (1..=3).contains(&before.ttl),
            "TTL after 2.2 s: {}",
            before.ttl
        );

        let mut stream = KeepAlive::open(&api, short).await;
        stream.send(long);
        stream.send(short);
        stream.send(0x777);
        let answers = [
            stream.next().await,
            stream.next().await,
            stream.next().await,
            stream.next().await,
        ];
        assert_eq!(answers, [(short, 5), (long, 10), (short, 5), (0x777, 0)]);
        let after = time_to_live(&api, short, false).await;
        assert!(
            (4..=5).contains(&after.ttl),
            "TTL after keep-alive: {}",
            after.ttl
        );
    });
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    // TimeToLive lists the lease's keys, LeaseLeases every lease; a revoke deletes the
    // attached keys at one new revision, after which the lease is unknown.
    scenario("grpc_lease_revoke", &[], |server| async move {
        let api = server.connect().await;
        let lease = api.grant(60).await;
        let other = api.grant(120).await;
        for key in ["a", "b"] {
            api.put_with(pb::PutRequest {
                key: key.into(),
                value: "leased".into(),
                lease,
                ..pb::PutRequest::default()
            })
            .await;
        }
        let revision = api.put("c", "free").await;
        let ttl = time_to_live(&api, lease, true).await;
        let mut keys: Vec<String> = ttl.keys.iter().map(|key| text(key)).collect();
        keys.sort();
        assert_eq!(
            (ttl.id, ttl.granted_ttl, keys),
            (lease, 60, vec!["a".to_string(), "b".to_string()])
        );
        assert!((59..=60).contains(&ttl.ttl), "TTL {}", ttl.ttl);
        let mut both = vec![lease, other];
        both.sort();
        assert_eq!(lease_ids(&api).await, both);

        let revoked = api
            .lease()
            .lease_revoke(pb::LeaseRevokeRequest { id: lease })
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!(revoked.header.expect("header").revision, revision + 1);
        assert_eq!(
            api.get("a", "d").await,
            [("c".to_string(), "free".to_string())]
        );
        let gone = time_to_live(&api, lease, true).await;
        assert_eq!((gone.id, gone.ttl, gone.keys.len()), (lease, -1, 0));
        assert_eq!(lease_ids(&api).await, [other]);
        assert_status(
            api.lease()
                .lease_revoke(pb::LeaseRevokeRequest { id: lease })
                .await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );
    });
}

#[test]
fn member_list_shows_the_configured_member() {
    // One voting member with the configured name and URLs, under this member's id; an
    // unknown member cannot be removed.
    scenario("grpc_cluster", &[], |server| async move {
        let api = server.connect().await;
        let mut cluster = ClusterClient::new(api.channel.clone());
        let list = cluster
            .member_list(pb::MemberListRequest { linearizable: true })
            .await
            .expect("member list")
            .into_inner();
        let member_id = api.member_id().await;
        assert_eq!(list.header.expect("header").member_id, member_id);
        assert_eq!(list.members.len(), 1, "{:?}", list.members);
        let member = &list.members[0];
        assert_eq!(
            (
                member.id,
                member.name.as_str(),
                &member.peer_ur_ls,
                &member.client_ur_ls,
                member.is_learner
            ),
            (
                member_id,
                "default",
                &vec![server.peer_url.clone()],
                &vec![server.client_url.clone()],
                false
            )
        );
        let unknown = member_id.wrapping_add(1);
        assert_status(
            cluster
                .member_remove(pb::MemberRemoveRequest { id: unknown })
                .await,
            Code::NotFound,
            "etcdserver: member not found",
        );
    });
}

#[test]
fn a_second_lock_waits_for_unlock_or_revoke() {
    // Lock returns `<name>/<lease in hex>`; a second locker waits until the holder
    // unlocks, a third until the second's lease is revoked.
    scenario("grpc_lock", &[], |server| async move {
        let api = server.connect().await;
        let leases = [
            api.grant(30).await,
            api.grant(30).await,
            api.grant(30).await,
        ];
        let lock = |lease: i64| {
            let mut client = LockClient::new(api.channel.clone());
            tokio::spawn(async move {
                let request = lpb::LockRequest {
                    name: "mylock".into(),
                    lease,
                };
                let response = client.lock(request).await.expect("lock").into_inner();
                text(&response.key)
            })
        };
        let first = lock(leases[0]).await.expect("lock task");
        assert_eq!(first, format!("mylock/{:x}", leases[0]));
        let held = api
            .kv()
            .range(range_at(&first, 0))
            .await
            .expect("range")
            .into_inner();
        assert_eq!(held.kvs[0].lease, leases[0]);

        let mut second = lock(leases[1]);
        let waited = tokio::time::timeout(Duration::from_millis(500), &mut second).await;
        assert!(waited.is_err(), "the second lock did not wait: {waited:?}");
        LockClient::new(api.channel.clone())
            .unlock(lpb::UnlockRequest {
                key: first.clone().into_bytes(),
            })
            .await
            .expect("unlock");
        let second = tokio::time::timeout(STREAM_TIMEOUT, second)
            .await
            .expect("the second lock is granted after the unlock")
            .expect("lock task");
        assert_eq!(second, format!("mylock/{:x}", leases[1]));

        let mut third = lock(leases[2]);
        let waited = tokio::time::timeout(Duration::from_millis(500), &mut third).await;
        assert!(waited.is_err(), "the third lock did not wait: {waited:?}");
        api.lease()
            .lease_revoke(pb::LeaseRevokeRequest { id: leases[1] })
            .await
            .expect("revoke");
        let third = tokio::time::timeout(STREAM_TIMEOUT, third)
            .await
            .expect("the third lock is granted after the revoke")
            .expect("lock task");
        assert_eq!(third, format!("mylock/{:x}", leases[2]));
        let holders: Vec<String> = api
            .get("mylock/", &prefix_end("mylock/"))
            .await
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(holders, [third]);
    });
}

/// The value an Observe stream reports next.
async fn observed(stream: &mut tonic::Streaming<epb::LeaderResponse>) -> (String, String) {
    let response = tokio::time::timeout(STREAM_TIMEOUT, stream.message())
        .await
        .expect("an observe response in time")
        .expect("the observe stream works")
        .expect("the observe stream is open");
    let kv = response.kv.expect("a leader");
    (text(&kv.key), text(&kv.value))
}

#[test]
fn election_campaign_proclaim_observe_and_resign() {
    // The first campaigner leads; Observe sees it and every proclaimed value; a second
    // campaigner waits until the leader resigns, then leads; no campaigners, no leader.
    scenario("grpc_election", &[], |server| async move {
        let api = server.connect().await;
        let election = || ElectionClient::new(api.channel.clone());
        assert_status(
            election()
                .leader(epb::LeaderRequest {
                    name: "nobody".into(),
                })
                .await,
            Code::Unknown,
            "election: no leader",
        );
        let (one, two) = (api.grant(30).await, api.grant(30).await);
        let campaign = |lease: i64, value: &str| {
            let mut client = election();
            let request = epb::CampaignRequest {
                name: "elect".into(),
                lease,
                value: value.into(),
            };
            tokio::spawn(async move {
                client
                    .campaign(request)
                    .await
                    .expect("campaign")
                    .into_inner()
            })
        };
        let first = campaign(one, "v1").await.expect("campaign task");
        let leader = first.leader.expect("a leader key");
        let first_key = format!("elect/{one:x}");
        assert_eq!(
            (text(&leader.name), text(&leader.key), leader.lease),
            ("elect".to_string(), first_key.clone(), one)
        );
        let created = api
            .kv()
            .range(range_at(&first_key, 0))
            .await
            .expect("range")
            .into_inner();
        assert_eq!(leader.rev, created.kvs[0].create_revision);
        let current = election()
            .leader(epb::LeaderRequest {
                name: "elect".into(),
            })
            .await
            .expect("leader")
            .into_inner();
        let kv = current.kv.expect("the leader's key");
        assert_eq!(
            (text(&kv.key), text(&kv.value)),
            (first_key.clone(), "v1".to_string())
        );

        let mut observe = election()
            .observe(epb::LeaderRequest {
                name: "elect".into(),
            })
            .await
            .expect("observe")
            .into_inner();
        assert_eq!(
            observed(&mut observe).await,
            (first_key.clone(), "v1".to_string())
        );
        election()
            .proclaim(epb::ProclaimRequest {
                leader: Some(leader.clone()),
                value: "v2".into(),
            })
            .await
            .expect("proclaim");
        assert_eq!(
            observed(&mut observe).await,
            (first_key.clone(), "v2".to_string())
        );

        let mut second = campaign(two, "w1");
        let waited = tokio::time::timeout(Duration::from_millis(500), &mut second).await;
        assert!(
            waited.is_err(),
            "the second campaign did not wait: {waited:?}"
        );
        election()
            .resign(epb::ResignRequest {
                leader: Some(leader),
            })
            .await
            .expect("resign");
        let second = tokio::time::timeout(STREAM_TIMEOUT, second)
            .await
            .expect("the second campaigner leads after the resignation")
            .expect("campaign task");
        let second_key = format!("elect/{two:x}");
        assert_eq!(text(&second.leader.expect("leader").key), second_key);
        assert_eq!(observed(&mut observe).await, (second_key, "w1".to_string()));
    });
}

/// A Prometheus sample: metric name and labels.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found: BTreeMap<&str, &str> = label_text
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|(key, value)| found.get(key) == Some(value))
                .then(|| value.parse().expect("a numeric sample"))
        })
}

/// How long /metrics may take to show a write's effects.
const METRICS_LAG_MAX: Duration = Duration::from_secs(2);

const RANGE_OK: [(&str, &str); 4] = [
    ("grpc_code", "OK"),
    ("grpc_method", "Range"),
    ("grpc_service", "etcdserverpb.KV"),
    ("grpc_type", "unary"),
];

#[test]
fn health_version_and_metrics_over_http() {
    // /health is healthy, /version names the etcd versions, /metrics has a leader, WAL
    // fsyncs after writes, and counts every successful Range call.
    scenario("grpc_http", &[], |server| async move {
        let api = server.connect().await;
        let endpoint = server.endpoint().to_string();
        // A write first: it waits for the leader (see the next test).
        api.put("k", "v").await;
        let health = http_get(&endpoint, "/health");
        assert_eq!(
            (health.status, health.body.as_str()),
            (200, r#"{"health":"true"}"#)
        );
        let version = http_get(&endpoint, "/version");
        assert_eq!(version.status, 200);
        match api.target {
            Target::Corekv => assert_eq!(
                version.body,
                r#"{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}"#
            ),
            Target::Etcd => assert!(
                version.body.starts_with(r#"{"etcdserver":"3.4."#)
                    && version.body.ends_with(r#""etcdcluster":"3.4.0"}"#),
                "{}",
                version.body
            ),
        }

        // corekv copies the shard's figures to /metrics between its rounds, so they may
        // lag a write by up to a heartbeat: wait for them with a deadline.
        let fresh = |body: &str| {
            let fsyncs = sample(body, "etcd_disk_wal_fsync_duration_seconds_count", &[]);
            sample(body, "etcd_server_has_leader", &[]) == Some(1.0)
                && fsyncs.is_some_and(|fsyncs| fsyncs > 0.0)
        };
        let deadline = tokio::time::Instant::now() + METRICS_LAG_MAX;
        let mut before = http_get(&endpoint, "/metrics");
        while !fresh(&before.body) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            before = http_get(&endpoint, "/metrics");
        }
        assert_eq!(before.status, 200);
        assert_eq!(
            sample(&before.body, "etcd_server_has_leader", &[]),
            Some(1.0)
        );
        let fsyncs = sample(
            &before.body,
            "etcd_disk_wal_fsync_duration_seconds_count",
            &[],
        )
        .expect("the WAL fsync histogram");
        assert!(fsyncs > 0.0, "fsyncs: {fsyncs}");
        let ranges_before =
            sample(&before.body, "grpc_server_handled_total", &RANGE_OK).unwrap_or(0.0);
        for _ in 0..5 {
            api.get("k", "").await;
        }
        let after = http_get(&endpoint, "/metrics");
        let ranges_after = sample(&after.body, "grpc_server_handled_total", &RANGE_OK)
            .expect("Range calls are counted");
        assert_eq!(ranges_after - ranges_before, 5.0);
    });
}

#[test]
fn an_idle_server_keeps_connections_on_the_shard_core_unless_told_to_spread() {
    // Two binary-protocol and two client-URL connections held open, then one more for
    // /metrics: an idle server serves them all on core 0, the shard's; with
    // --spread-connections they alternate over the cores. corekv only.
    for (flag, expected) in [
        ("--spread-connections=false", [5.0, 0.0]),
        ("--spread-connections", [3.0, 2.0]),
    ] {
        let server =
            TestServer::start("grpc_placement", &["--cores", "2", flag]).expect("start corekv");
        let _held: Vec<std::net::TcpStream> = [
            server.client_endpoint(),
            server.address.as_str(),
            server.client_endpoint(),
            server.address.as_str(),
        ]
        .into_iter()
        .map(|address| std::net::TcpStream::connect(address).expect("connect"))
        .collect();
        // Placement is counted as core 0 accepts, which follows the connects shortly;
        // the connection of an earlier /metrics request may still be closing.
        let deadline = std::time::Instant::now() + METRICS_LAG_MAX;
        loop {
            let metrics = http_get(server.client_endpoint(), "/metrics");
            let counts = ["0", "1"].map(|core| {
                sample(&metrics.body, "corekv_core_connections", &[("core", core)])
                    .expect("connections per core")
            });
            if counts == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{flag}: connections per core {counts:?}, expected {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn health_is_true_from_the_first_request() {
    // etcd accepts its client connections only once it is ready (it has a leader and
    // has published itself), so a client's first /health already finds it healthy.
    // corekv only: the harness waits for etcd with a linearizable read.
    let server = TestServer::start("grpc_health_first", &[]).expect("start corekv");
    let health = http_get(server.client_endpoint(), "/health");
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"health":"true"}"#)
    );
}
