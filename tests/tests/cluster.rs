//! Three `corekv` processes on loopback started with etcd's cluster flags replicate
//! through Raft over the peer transport: writes through any member, linearizable reads
//! on every member, kill -9 of the leader under writes (a new leader takes writes within
//! a few election timeouts, no acknowledged write is lost), a restarted member catches
//! up from its data dir, and afterwards every member holds the same data (equal HashKV).
//! Members publish their names and client URLs, so every member lists them all.

use std::time::{Duration, Instant};

use corekv_engine::{PutRequest, Revision};
use corekv_net::protocol::{Request, Response};
use corekv_tests::{free_port, run_client, TempDir, TestServer};

/// etcd's default election timeout, which the members use.
const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// Leader kills per test run (each costs an election).
const KILLS: usize = 3;

struct Cluster {
    members: Vec<TestServer>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    fn start(size: usize) -> Cluster {
        let peer_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let initial = (0..size)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", peer_ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut dirs = Vec::new();
        for (i, port) in peer_ports.iter().enumerate() {
            let dir = TempDir::new(&format!("cluster-m{i}"));
            let peer_url = format!("http://127.0.0.1:{port}");
            let name = format!("m{i}");
            let extra = [
                "--name",
                name.as_str(),
                "--listen-peer-urls",
                peer_url.as_str(),
                "--initial-advertise-peer-urls",
                peer_url.as_str(),
                "--initial-cluster",
                initial.as_str(),
                "--initial-cluster-token",
                "cluster-test",
                "--cores",
                "1",
            ];
            let server =
                TestServer::configure(&dir.path().join("data"), &extra, dir.path().join("log"));
            members.push(server);
            dirs.push(dir);
        }
        // Members start together, as etcd's do: each waits for a quorum to elect.
        std::thread::scope(|scope| {
            for member in &mut members {
                scope.spawn(|| member.spawn().expect("member starts"));
            }
        });
        Cluster {
            members,
            _dirs: dirs,
        }
    }

    /// The index of the member every running member agrees leads, within `within`.
    fn leader(&self, running: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<u64> = running
                .iter()
                .map(|&i| status(&self.members[i]).map_or(0, |(_, leader)| leader))
                .collect();
            if leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
                if let Some(&i) = running
                    .iter()
                    .find(|&&i| status(&self.members[i]).map(|(me, _)| me) == Some(leaders[0]))
                {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:x?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// (member id, leader id) from one member, or None if it does not answer.
fn status(member: &TestServer) -> Option<(u64, u64)> {
    let address = member.address.clone();
    run_client(move || async move {
        let client = corekv_net::client::Client::connect(&address).await.ok()?;
        let status = client.status().await.ok()?;
        Some((status.header.member_id, status.leader))
    })
}

/// How long one put may wait before the test gives up on it and tries again (a put
/// forwarded to a leader that just died waits for the server's request timeout; a
/// client retries sooner, as etcd's do).
const PUT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Puts `key` through `member`; true once acknowledged within [`PUT_ATTEMPT_TIMEOUT`].
fn put(member: &TestServer, key: &str, value: &str) -> bool {
    let address = member.address.clone();
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    };
    run_client(move || async move {
        let attempt = async move {
            let Ok(client) = corekv_net::client::Client::connect(&address).await else {
                return false;
            };
            client.put(request).await.is_ok()
        };
        futures_lite::future::or(attempt, async {
            glommio::timer::sleep(PUT_ATTEMPT_TIMEOUT).await;
            false
        })
        .await
    })
}

/// A linearizable read of `key` through `member`.
fn get(member: &TestServer, key: &str) -> Option<Vec<u8>> {
    let key = key.as_bytes().to_vec();
    member.with_client(move |client| async move {
        client
            .get(&key)
            .await
            .expect("linearizable read")
            .map(|kv| kv.value)
    })
}

/// The member list as `member` knows it.
fn member_list(member: &TestServer) -> Vec<corekv_net::protocol::Member> {
    member.with_client(|client| async move {
        match client
            .request(Request::MemberList {
                linearizable: false,
            })
            .await
            .expect("member list")
        {
            Response::MemberList(_, members) => members,
            other => panic!("member list answered {other:?}"),
        }
    })
}

/// (hash, revision) of `member`'s store at `revision`.
fn hash_kv(member: &TestServer, revision: i64) -> (u32, i64) {
    member.with_client(move |client| async move {
        match client
            .request(Request::HashKv {
                revision: Revision(revision),
            })
            .await
            .expect("hashkv")
        {
            Response::HashKv {
                hash,
                hash_revision,
                ..
            } => (hash, hash_revision.0),
            other => panic!("hashkv answered {other:?}"),
        }
    })
}

#[test]
fn three_members_replicate_fail_over_and_converge() {
    let mut cluster = Cluster::start(3);
    let all = [0, 1, 2];
    let leader = cluster.leader(&all, Duration::from_secs(10));

    // Every member publishes its name and client URL: any member lists them all (what
    // `etcdctl endpoint status --cluster` dials).
    let expected: Vec<(String, Vec<String>)> = (0..3)
        .map(|i| {
            (
                format!("m{i}"),
                vec![cluster.members[i].client_url().to_string()],
            )
        })
        .collect();
    for member in &cluster.members {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut listed: Vec<(String, Vec<String>)> = member_list(member)
                .into_iter()
                .map(|m| (m.name, m.client_urls))
                .collect();
            listed.sort();
            if listed == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member list {listed:?}, expected {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Writes through every member, leader or not, are read back on every member.
    for i in all {
        assert!(put(
            &cluster.members[i],
            &format!("through/{i}"),
            &format!("v{i}")
        ));
    }
    for reader in all {
        for writer in all {
            assert_eq!(
                get(&cluster.members[reader], &format!("through/{writer}")),
                Some(format!("v{writer}").into_bytes()),
                "member {reader} reads what member {writer} took"
            );
        }
    }

    // Kill -9 the leader, again and again; writes resume through a survivor.
    let mut acknowledged = Vec::new();
    let mut leader = leader;
    let mut failovers = Vec::new();
    for round in 0..KILLS {
        for n in 0..20 {
            let key = format!("round{round}/{n}");
            let writer = (leader + 1 + n) % 3;
            if put(&cluster.members[writer], &key, "x") {
                acknowledged.push(key);
            }
        }
        cluster.members[leader].kill();
        let killed = leader;
        let survivor = (killed + 1) % 3;
        let started = Instant::now();
        let key = format!("round{round}/after");
        while !put(&cluster.members[survivor], &key, "y") {
            assert!(
                started.elapsed() < 6 * ELECTION_TIMEOUT,
                "no write accepted {:?} after killing the leader",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        failovers.push(started.elapsed());
        acknowledged.push(key);
        let running: Vec<usize> = all.into_iter().filter(|&i| i != killed).collect();
        leader = cluster.leader(&running, Duration::from_secs(10));
        // The killed member comes back from its data dir and catches up.
        cluster.members[killed]
            .spawn()
            .expect("restart the killed member");
        cluster.leader(&all, Duration::from_secs(10));
    }
    eprintln!("failover (kill -9 of the leader to the first acknowledged write): {failovers:?}");

    // Nothing acknowledged is lost, on any member.
    for member in &cluster.members {
        for key in &acknowledged {
            assert!(get(member, key).is_some(), "{key} lost");
        }
    }
    // Every member ends with the same data at the same revision.
    let last = cluster.members[leader].with_client(|client| async move {
        client.status().await.expect("status").header.revision.0
    });
    let hashes: Vec<(u32, i64)> = cluster
        .members
        .iter()
        .map(|member| {
            // A follower may still be applying the last entries: wait for the revision.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let revision = member.with_client(|client| async move {
                    client.status().await.expect("status").header.revision.0
                });
                if revision >= last {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "member stuck at revision {revision}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            hash_kv(member, last)
        })
        .collect();
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "members differ: {hashes:?}"
    );
}
