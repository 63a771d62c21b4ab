//! `--initial-cluster-token` keeps clusters apart. A member started with another token
//! derives another cluster id (and other member ids, as etcd's do), so the members of
//! the real cluster refuse its peer connections as a cluster id mismatch, and it refuses
//! theirs; it never learns a leader or any of the cluster's data and answers its clients
//! with errors, while the other two, a quorum of the three, elect a leader and take
//! writes. Started again on an empty data dir with the right token, the same member
//! joins, catches up and holds the same data at the same revision.

use std::time::{Duration, Instant};

use corekv_engine::{PutRequest, RangeRequest};
use corekv_net::protocol::Request;
use corekv_tests::cluster::{request, Cluster, ClusterOptions, Failure, ELECTION_TIMEOUT};

/// A member of no quorum answers a request with an error within the server's request
/// timeout (5 s plus two election timeouts); this is that with room for a loaded machine.
const PROBE_TIMEOUT: Duration = Duration::from_secs(12);
/// Members agree on a leader within this.
const AGREEMENT_TIMEOUT: Duration = ELECTION_TIMEOUT.saturating_mul(10);

// A member with the wrong token is refused by its peers and learns nothing; with the
// right one it joins.
#[test]
fn a_member_with_another_token_cannot_join() {
    let mut options = ClusterOptions::new("token", 3);
    let outsider = 2;
    options.token_overrides = vec![(outsider, "another-cluster".to_string())];
    let mut cluster = Cluster::start(options);
    let quorum = [0, 1];
    let leader = cluster.agreed_leader(&quorum, AGREEMENT_TIMEOUT);

    // The outsider computed another cluster and other member ids.
    let inside = cluster.status(leader).expect("the leader answers");
    let outside = cluster.status(outsider).expect("the outsider answers");
    assert_ne!(inside.header.cluster_id, outside.header.cluster_id);
    assert!(
        cluster.index_of(inside.leader) == Some(leader),
        "the leader names itself"
    );

    // The real cluster takes writes and serves them from both its members.
    for i in quorum {
        cluster
            .put(i, &format!("token/{i}"), "inside", PROBE_TIMEOUT)
            .unwrap_or_else(|failure| panic!("a put through member {i}: {failure:?}"));
    }
    for i in quorum {
        assert_eq!(
            cluster.get(i, "token/0", false, PROBE_TIMEOUT),
            Ok(Some(b"inside".to_vec()))
        );
    }

    // The outsider's clients get errors: it has no leader to take a write or confirm a
    // read. Meanwhile it is watched: it never names a leader, holds none of the data.
    let started = Instant::now();
    let address = cluster.address(outsider).to_string();
    let put = Request::Put(PutRequest {
        key: b"token/outside".to_vec(),
        value: b"outside".to_vec(),
        ..PutRequest::default()
    });
    let get = Request::Range(RangeRequest {
        key: b"token/0".to_vec(),
        ..RangeRequest::default()
    });
    let probes = [put, get].map(|message| {
        let address = address.clone();
        std::thread::spawn(move || request(&address, message, PROBE_TIMEOUT))
    });
    let mut statuses = 0;
    while !probes.iter().all(|probe| probe.is_finished()) {
        let status = cluster.status(outsider).expect("the outsider answers");
        assert_eq!(status.leader, 0, "the outsider found a leader: {status:?}");
        assert_eq!(
            cluster.get(outsider, "token/0", true, PROBE_TIMEOUT),
            Ok(None),
            "the outsider holds the cluster's data"
        );
        statuses += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    for probe in probes {
        let outcome = probe.join().expect("the probe thread panicked");
        assert!(
            matches!(outcome, Err(Failure::Refused { .. })),
            "a request to the outsider ended {outcome:?}, not with an error from it"
        );
    }
    eprintln!(
        "the outsider had no leader for {:?} ({statuses} looks)",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= ELECTION_TIMEOUT.saturating_mul(2),
        "the outsider answered too soon to have tried to find a leader"
    );

    // Each side refused the other's peer connections for their cluster ids.
    for i in quorum {
        let log = cluster.server(i).log_text();
        assert!(
            log.lines().any(|line| {
                line.contains(&format!(
                    "refused a peer connection from member {:x}",
                    cluster.id(outsider)
                )) && line.contains(&format!(
                    "cluster id mismatch: it belongs to cluster {:x}, this member to cluster {:x}",
                    outside.header.cluster_id, inside.header.cluster_id
                ))
            }),
            "member {i} logged no refusal of the outsider:\n{log}"
        );
    }
    let log = cluster.server(outsider).log_text();
    assert!(
        log.lines().any(|line| {
            line.contains("refused a peer connection from member")
                && line.contains(&format!(
                    "cluster id mismatch: it belongs to cluster {:x}, this member to cluster {:x}",
                    inside.header.cluster_id, outside.header.cluster_id
                ))
        }),
        "the outsider logged no refusal of the cluster's members:\n{log}"
    );

    // The real cluster went on meanwhile.
    cluster
        .put(leader, "token/after", "inside", PROBE_TIMEOUT)
        .expect("the cluster takes writes");

    // With the right token (and no data of the other cluster) the member joins.
    cluster.reset(outsider, "token");
    let all = [0, 1, 2];
    cluster.agreed_leader(&all, AGREEMENT_TIMEOUT);
    assert_eq!(
        cluster.status(outsider).expect("answers").header.cluster_id,
        inside.header.cluster_id
    );
    let (revision, _) = cluster.converge(&all, Duration::from_secs(20));
    assert_eq!(
        cluster.local_keys(outsider, "token/"),
        vec!["token/0", "token/1", "token/after"],
        "the member that joined holds the cluster's data at revision {}",
        revision.0
    );
}
