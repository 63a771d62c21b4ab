//! Partitions of a three-member cluster, made by cutting peer links at the
//! fault-injecting proxy while clients of every member record a history of puts,
//! linearizable gets and compare-and-sets that must be linearizable.
//!
//! - The leader isolated: it steps down by check-quorum, the other two elect a new leader
//!   and take writes, and nothing sent to the old leader succeeds while it is cut off
//!   (its clients get errors); its writes never commit.
//! - A follower isolated (a 1 + 2 split): the leader keeps its leadership and term,
//!   writes go on through the majority, and the follower answers linearizable reads and
//!   writes with errors only.
//!
//! After each partition heals, the isolated member rejoins without disturbing the leader
//! (pre-vote), takes requests again, and every member ends at the same revision with
//! the same HashKV.

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corekv_engine::{PutRequest, RangeRequest};
use corekv_net::protocol::{Request, Response};
use corekv_tests::cluster::{request, Cluster, ClusterOptions, Failure, ELECTION_TIMEOUT};
use corekv_tests::history::{History, Workload, WorkloadOptions};

/// One cluster at a time: the scenarios time elections, and two clusters on a small
/// machine would slow each other's.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A member that cannot reach a quorum answers a request with an error within the
/// server's request timeout (5 s plus two election timeouts, as etcd's); this is that,
/// with room for a loaded machine.
const PROBE_TIMEOUT: Duration = Duration::from_secs(12);
/// An isolated leader steps down at its second check-quorum round at the latest (one
/// election timeout apart); this is twice that.
const STEP_DOWN_MAX: Duration = ELECTION_TIMEOUT.saturating_mul(4);
/// Members agree on a leader within this after a start, a partition or a heal.
const AGREEMENT_TIMEOUT: Duration = ELECTION_TIMEOUT.saturating_mul(8);
/// One attempt of a put or read in the scenario's own checks.
const ATTEMPT: Duration = Duration::from_secs(2);

// The leader, cut off from both followers under load, steps down; the followers elect a
// new leader and take writes; the old leader's clients get errors, never a success, and
// its writes are gone after the heal; the history is linearizable and members converge.
#[test]
fn isolated_leader_steps_down_and_the_majority_goes_on() {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = Cluster::start(ClusterOptions::new("partition-leader", 3).proxied());
    let all = [0, 1, 2];
    let old = cluster.agreed_leader(&all, AGREEMENT_TIMEOUT);
    let majority: Vec<usize> = all.into_iter().filter(|&i| i != old).collect();
    let workload = start_workload(&cluster, old);
    wait_for_load(&workload);

    cluster.isolate(old);
    let isolated_at = workload.mark();
    let cut = Instant::now();
    let probes = Probes::start(&cluster, old, "leader");

    // The old leader notices it lost its quorum and steps down.
    let old_id = cluster.id(old);
    wait_until(STEP_DOWN_MAX, "the isolated leader to step down", || {
        cluster.status(old).is_some_and(|s| s.leader != old_id)
    });
    eprintln!(
        "isolated leader stepped down {:?} after the cut",
        cut.elapsed()
    );
    // The majority elects one of its own and takes writes through both members.
    let new = cluster.agreed_leader(&majority, AGREEMENT_TIMEOUT);
    eprintln!(
        "member {new} leads the majority {:?} after the cut",
        cut.elapsed()
    );
    let term = cluster
        .status(new)
        .expect("the new leader answers")
        .raft_term;
    for &i in &majority {
        put_until(
            &cluster,
            i,
            &format!("majority/leader/{i}"),
            AGREEMENT_TIMEOUT,
        );
    }
    let key = probes.assert_refused(&cluster);
    // What was sent to the old leader is not visible to the majority.
    assert_eq!(
        cluster.get(new, &key, false, ATTEMPT),
        Ok(None),
        "a write sent to the isolated old leader is visible on the majority"
    );

    let healed_at = workload.mark();
    cluster.heal_all();
    // The old leader follows the new one at once: pre-vote kept it from raising its term.
    assert_leader_kept(&cluster, new, term);
    put_until(&cluster, old, "healed/leader", AGREEMENT_TIMEOUT);
    assert_eq!(
        cluster.get(old, &format!("majority/leader/{new}"), false, ATTEMPT),
        Ok(Some(b"majority".to_vec())),
        "the old leader catches up with the majority's writes"
    );
    let history = workload.stop();
    finish(&cluster, &history, old, isolated_at, healed_at, &majority);
}

// A follower cut off from the other two: the leader keeps its term, the majority takes
// writes, the follower answers reads and writes only with errors; once healed it follows
// the same leader, catches up, and members converge; the history is linearizable.
#[test]
fn isolated_follower_cannot_serve_and_the_majority_goes_on() {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = Cluster::start(ClusterOptions::new("partition-follower", 3).proxied());
    let all = [0, 1, 2];
    let leader = cluster.agreed_leader(&all, AGREEMENT_TIMEOUT);
    let follower = (leader + 1) % 3;
    let majority: Vec<usize> = all.into_iter().filter(|&i| i != follower).collect();
    let term = cluster
        .status(leader)
        .expect("the leader answers")
        .raft_term;
    let workload = start_workload(&cluster, follower);
    wait_for_load(&workload);

    cluster.isolate(follower);
    let isolated_at = workload.mark();
    let probes = Probes::start(&cluster, follower, "follower");

    // The follower loses its leader; the majority keeps its own, in the same term.
    wait_until(
        STEP_DOWN_MAX,
        "the isolated follower to lose its leader",
        || cluster.status(follower).is_some_and(|s| s.leader == 0),
    );
    for &i in &majority {
        put_until(&cluster, i, &format!("majority/follower/{i}"), ATTEMPT);
    }
    assert_leader_kept_by(&cluster, &majority, leader, term);
    let key = probes.assert_refused(&cluster);
    assert_eq!(
        cluster.get(leader, &key, false, ATTEMPT),
        Ok(None),
        "a write sent to the isolated follower is visible on the majority"
    );

    let healed_at = workload.mark();
    cluster.heal_all();
    assert_leader_kept(&cluster, leader, term);
    put_until(&cluster, follower, "healed/follower", AGREEMENT_TIMEOUT);
    assert_eq!(
        cluster.get(
            follower,
            &format!("majority/follower/{leader}"),
            false,
            ATTEMPT
        ),
        Ok(Some(b"majority".to_vec())),
        "the follower catches up with the majority's writes"
    );
    let history = workload.stop();
    finish(
        &cluster,
        &history,
        follower,
        isolated_at,
        healed_at,
        &majority,
    );
}

/// One client per member plus a second on `target` (the member about to be cut off).
fn start_workload(cluster: &Cluster, target: usize) -> Workload {
    let mut targets: Vec<(usize, String)> = (0..cluster.size())
        .map(|i| (i, cluster.address(i).to_string()))
        .collect();
    targets.push((target, cluster.address(target).to_string()));
    Workload::start(&targets, WorkloadOptions::default())
}

/// Waits until clients' calls are flowing (the fault lands under load).
fn wait_for_load(workload: &Workload) {
    // Every call takes two stamps: this is some fifty calls.
    let from = workload.mark();
    wait_until(Duration::from_secs(10), "the workload to run", || {
        workload.mark() > from + 100
    });
}

/// Requests sent to the isolated member right after the cut: a write of a key of its
/// own and a linearizable read. Both must fail with an error from the member.
struct Probes {
    key: String,
    put: JoinHandle<Result<Response, Failure>>,
    get: JoinHandle<Result<Response, Failure>>,
    member: usize,
}

impl Probes {
    fn start(cluster: &Cluster, member: usize, scenario: &str) -> Probes {
        let key = format!("minority/{scenario}");
        let address = cluster.address(member).to_string();
        let put = Request::Put(PutRequest {
            key: key.clone().into_bytes(),
            value: b"from the minority".to_vec(),
            ..PutRequest::default()
        });
        let get = Request::Range(RangeRequest {
            key: b"lin/0".to_vec(),
            ..RangeRequest::default()
        });
        let send = |message: Request| {
            let address = address.clone();
            std::thread::spawn(move || request(&address, message, PROBE_TIMEOUT))
        };
        Probes {
            key,
            put: send(put),
            get: send(get),
            member,
        }
    }

    /// Both probes came back with an error from the member itself; returns the key the
    /// refused write named.
    fn assert_refused(self, cluster: &Cluster) -> String {
        for (what, probe) in [("write", self.put), ("linearizable read", self.get)] {
            let outcome = probe.join().expect("the probe thread panicked");
            eprintln!(
                "a {what} sent to isolated member {}: {outcome:?}",
                self.member
            );
            assert!(
                matches!(outcome, Err(Failure::Refused { .. })),
                "a {what} sent to isolated member {} ended {outcome:?}, not with an error from it\n{}",
                self.member,
                cluster.logs()
            );
        }
        self.key
    }
}

/// Puts `key` = "majority" through member `i`, retrying until acknowledged; panics after
/// `within`.
fn put_until(cluster: &Cluster, i: usize, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match cluster.put(i, key, "majority", ATTEMPT) {
            Ok(_) => return,
            Err(failure) => assert!(
                Instant::now() < deadline,
                "member {i} took no write within {within:?}: {failure:?}\n{}",
                cluster.logs()
            ),
        }
    }
}

/// Every member follows `leader` in `term` once they agree again.
fn assert_leader_kept(cluster: &Cluster, leader: usize, term: u64) {
    let all: Vec<usize> = (0..cluster.size()).collect();
    assert_leader_kept_by(cluster, &all, leader, term);
}

fn assert_leader_kept_by(cluster: &Cluster, members: &[usize], leader: usize, term: u64) {
    let agreed = cluster.agreed_leader(members, AGREEMENT_TIMEOUT);
    assert_eq!(agreed, leader, "the leader changed");
    for &i in members {
        let status = cluster.status(i).expect("a member answers its status");
        assert_eq!(
            (status.leader, status.raft_term),
            (cluster.id(leader), term),
            "member {i} follows another leader or term"
        );
    }
}

/// The checks after a healed partition: members converge, the isolated member's write
/// never committed, nothing sent to it while it was cut off succeeded (and some was
/// sent), the majority answered meanwhile, and the history is linearizable.
fn finish(
    cluster: &Cluster,
    history: &History,
    isolated: usize,
    isolated_at: u64,
    healed_at: u64,
    majority: &[usize],
) {
    let all: Vec<usize> = (0..cluster.size()).collect();
    let (revision, hash) = cluster.converge(&all, Duration::from_secs(20));
    eprintln!("converged at revision {} (hash {hash:x})", revision.0);
    for &i in &all {
        assert_eq!(
            cluster.local_keys(i, "minority/"),
            Vec::<String>::new(),
            "member {i} holds a write the isolated member took"
        );
    }
    let cut_off = history.calls_between(isolated, isolated_at, healed_at);
    assert!(
        !cut_off.is_empty(),
        "no client called the isolated member while it was cut off"
    );
    let answered: Vec<_> = cut_off.iter().filter(|r| r.result.is_ok()).collect();
    assert!(
        answered.is_empty(),
        "the isolated member answered {} of {} calls while cut off: {answered:?}",
        answered.len(),
        cut_off.len()
    );
    for &i in majority {
        let served = history
            .calls_between(i, isolated_at, healed_at)
            .iter()
            .filter(|r| r.result.is_ok())
            .count();
        assert!(served > 0, "member {i} of the majority answered no calls");
    }
    let (ok, failed) = history.outcomes(None);
    eprintln!(
        "history: {ok} calls answered, {failed} failed, {} to the isolated member while cut off",
        cut_off.len()
    );
    history.assert_linearizable();
}

/// Polls `condition` until it holds; panics after `within`.
fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
