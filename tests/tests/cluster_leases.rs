//! Leases in a three-member cluster: any member grants them and takes keep-alives (a
//! follower's keep-alive goes through the log and the leader renews the lease when it
//! applies it); only the leader expires them; and a lease kept alive through a follower
//! survives a kill -9 of the leader without expiring early, then expires on time once
//! the keep-alives stop.

use std::time::{Duration, Instant};

use corekv_engine::{LeaseId, PutRequest};
use corekv_net::protocol::{Request, Response};
use corekv_tests::cluster::{request, Cluster, ClusterOptions, ELECTION_TIMEOUT};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The lease's TTL: several keep-alive periods, shorter than the test.
const TTL_SECONDS: i64 = 4;
const KEEP_ALIVE_PERIOD: Duration = Duration::from_millis(1000);

fn grant(cluster: &Cluster, member: usize) -> LeaseId {
    grant_for(cluster, member, TTL_SECONDS)
}

fn grant_for(cluster: &Cluster, member: usize, ttl: i64) -> LeaseId {
    let grant = Request::LeaseGrant {
        id: LeaseId(0),
        ttl_seconds: ttl,
    };
    match request(cluster.address(member), grant, TIMEOUT) {
        Ok(Response::LeaseGrant {
            id, ttl_seconds, ..
        }) => {
            assert_eq!(ttl_seconds, ttl);
            id
        }
        other => panic!("lease grant through member {member} answered {other:?}"),
    }
}

/// A time-to-live through `member`, with the keys: (TTL, granted TTL, keys).
fn time_to_live(cluster: &Cluster, member: usize, lease: LeaseId) -> (i64, i64, Vec<Vec<u8>>) {
    let asked = Request::LeaseTimeToLive {
        id: lease,
        keys: true,
    };
    match request(cluster.address(member), asked, TIMEOUT) {
        Ok(Response::LeaseTimeToLive {
            id,
            ttl_seconds,
            granted_ttl_seconds,
            keys,
            ..
        }) => {
            assert_eq!(id, lease);
            (ttl_seconds, granted_ttl_seconds, keys)
        }
        other => panic!("a time-to-live through member {member} answered {other:?}"),
    }
}

fn attach(cluster: &Cluster, member: usize, key: &str, lease: LeaseId) {
    let put = PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"held".to_vec(),
        lease,
        ..PutRequest::default()
    };
    match request(cluster.address(member), Request::Put(put), TIMEOUT) {
        Ok(Response::Put(..)) => {}
        other => panic!("a put with lease through member {member} answered {other:?}"),
    }
}

/// One keep-alive through `member`; the TTL it answered.
fn keep_alive(cluster: &Cluster, member: usize, lease: LeaseId) -> i64 {
    match request(
        cluster.address(member),
        Request::LeaseKeepAlive { id: lease },
        TIMEOUT,
    ) {
        Ok(Response::LeaseKeepAlive {
            id, ttl_seconds, ..
        }) => {
            assert_eq!(id, lease);
            ttl_seconds
        }
        other => panic!("a keep-alive through member {member} answered {other:?}"),
    }
}

fn present(cluster: &Cluster, member: usize, key: &str) -> bool {
    cluster
        .get(member, key, false, TIMEOUT)
        .unwrap_or_else(|failure| panic!("reading {key} through member {member}: {failure:?}"))
        .is_some()
}

/// Keeps `lease` alive through `member` until `until`, checking every answer.
fn keep_alive_until(cluster: &Cluster, member: usize, lease: LeaseId, until: Instant) {
    while Instant::now() < until {
        assert_eq!(keep_alive(cluster, member, lease), TTL_SECONDS);
        std::thread::sleep(KEEP_ALIVE_PERIOD);
    }
}

/// Waits until `key` is gone as seen through `member`; how long that took.
fn wait_gone(cluster: &Cluster, member: usize, key: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while present(cluster, member, key) {
        assert!(
            started.elapsed() < within,
            "{key} still present {within:?} after its keep-alives stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn followers_take_keep_alives_and_leases_survive_a_leader_kill() {
    let mut cluster = Cluster::start(ClusterOptions::new("cluster-leases", 3));
    let leader = cluster.agreed_leader(&[0, 1, 2], 10 * ELECTION_TIMEOUT);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (follower, other) = (followers[0], followers[1]);

    // A lease granted and kept alive only through a follower outlives its TTL.
    let lease = grant(&cluster, follower);
    attach(&cluster, follower, "kept", lease);
    let short = grant(&cluster, other);
    attach(&cluster, other, "dropped", short);
    keep_alive_until(
        &cluster,
        follower,
        lease,
        Instant::now() + Duration::from_secs(TTL_SECONDS as u64 + 2),
    );
    assert!(present(&cluster, leader, "kept"));
    // The lease nobody kept alive was expired by the leader meanwhile.
    assert!(!present(&cluster, follower, "dropped"));

    // Kill the leader while the follower keeps the lease alive: the new leader restarts
    // every lease at a full TTL, so the lease never expires early.
    cluster.kill(leader);
    let survivors = [follower, other];
    let killed = Instant::now();
    let mut renewed_after_kill = 0;
    let until = killed + 2 * ELECTION_TIMEOUT + Duration::from_secs(TTL_SECONDS as u64);
    while Instant::now() < until {
        // A keep-alive forwarded to the dead leader is lost (the client times out and
        // sends the next one, as etcd's clients do); once the new leader leads, they
        // are answered again.
        let keep = Request::LeaseKeepAlive { id: lease };
        match request(cluster.address(follower), keep, 2 * ELECTION_TIMEOUT) {
            Ok(Response::LeaseKeepAlive { ttl_seconds, .. }) => {
                assert_eq!(ttl_seconds, TTL_SECONDS);
                renewed_after_kill += 1;
            }
            Ok(other) => panic!("a keep-alive answered {other:?}"),
            Err(_) => {}
        }
        // What this member applied (no leader needed): no revoke of the lease.
        let held = cluster.get(other, "kept", true, TIMEOUT);
        assert!(
            matches!(held, Ok(Some(_))),
            "the lease expired early: {held:?}"
        );
        std::thread::sleep(KEEP_ALIVE_PERIOD);
    }
    assert!(
        renewed_after_kill >= 2,
        "only {renewed_after_kill} keep-alives were answered after the leader was killed"
    );
    let new_leader = cluster.agreed_leader(&survivors, 10 * ELECTION_TIMEOUT);
    assert_ne!(new_leader, leader);

    // Once the keep-alives stop, the lease expires: not before its TTL, and within the
    // TTL plus the leader's expiry check and the revoke's commit.
    let stopped = Instant::now();
    let gone_after = wait_gone(
        &cluster,
        other,
        "kept",
        Duration::from_secs(TTL_SECONDS as u64 + 3),
    );
    let since_last_keep_alive = stopped.elapsed();
    assert!(
        since_last_keep_alive >= Duration::from_secs(TTL_SECONDS as u64 - 1),
        "expired {since_last_keep_alive:?} after the last keep-alive ({gone_after:?} waited)"
    );
    // A keep-alive of the revoked lease through a follower answers TTL 0, as etcd's.
    assert_eq!(keep_alive(&cluster, follower, lease), 0);
}

/// A follower answers a lease's time-to-live with the leader's remaining TTL (only the
/// leader tracks deadlines; etcd's followers ask the leader too): it falls while nobody
/// keeps the lease alive, comes back after a keep-alive, and an unknown lease is -1.
#[test]
fn followers_answer_the_leaders_remaining_ttl() {
    const GRANTED: i64 = 20;
    let cluster = Cluster::start(ClusterOptions::new("cluster-lease-ttl", 3));
    let leader = cluster.agreed_leader(&[0, 1, 2], 10 * ELECTION_TIMEOUT);
    let follower = (0..3).find(|i| *i != leader).expect("a follower");

    let lease = grant_for(&cluster, follower, GRANTED);
    attach(&cluster, follower, "ttl/a", lease);
    let granted_at = Instant::now();
    std::thread::sleep(Duration::from_millis(3500));
    let (ttl, granted, keys) = time_to_live(&cluster, follower, lease);
    let elapsed = granted_at.elapsed().as_secs() as i64;
    assert_eq!(granted, GRANTED);
    assert_eq!(keys, vec![b"ttl/a".to_vec()]);
    assert!(
        ttl < GRANTED - 2 && ttl >= GRANTED - elapsed - 1,
        "TTL {ttl} through a follower, {elapsed} s after a grant of {GRANTED} s"
    );
    let (on_leader, _, _) = time_to_live(&cluster, leader, lease);
    assert!(
        (ttl - on_leader).abs() <= 1,
        "follower {ttl} vs leader {on_leader}"
    );

    assert_eq!(keep_alive(&cluster, follower, lease), GRANTED);
    let (renewed, _, _) = time_to_live(&cluster, follower, lease);
    assert!(renewed >= GRANTED - 1, "TTL {renewed} after a keep-alive");

    let (unknown, granted, keys) = time_to_live(&cluster, follower, LeaseId(0x1234_5678));
    assert_eq!((unknown, granted, keys), (-1, 0, Vec::<Vec<u8>>::new()));
}
