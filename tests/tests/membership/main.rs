//! Membership changes of corekv clusters made and read with the real etcdctl 3.4, as an
//! operator does them: member list, add (voter and learner), promote, update, remove,
//! endpoint status and hashkv with `--cluster`, on three- and five-member clusters.
//! A member removed, wiped and added back catches up through the leader's snapshot; a
//! removed member stops, even the leader; a dead leader is replaced.
//!
//! etcdctl's outputs are checked line by line and field by field, the simple output (hex
//! ids) against the JSON output (decimal ids), and errors are etcd's exact messages.

mod harness;
mod json;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{
    changed_line, cluster_status, ctl, ctl_fails, ctl_ok, local_keys, member_list, parse_added,
    peer_url, put_keys, put_values, try_put, wait_for_equal_hashes, wait_for_list, Cluster, Listed,
    Member, Status, ELECTION_TIMEOUT, SETTLE_TIMEOUT,
};

const PEER_URLS_EXIST: &str = "etcdserver: Peer URLs already exists";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const NOT_A_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_IN_SYNC: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";
const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
/// What a removed member logs on its way out.
const REMOVED_LOG: &str = "was removed from the cluster; stopping";
/// How long a removed member may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The list entry of `member`, which must be started with its URLs, and its id.
#[track_caller]
fn listed_started(listed: &[Listed], member: &Member, is_learner: bool) -> u64 {
    let entries: Vec<&Listed> = listed
        .iter()
        .filter(|m| m.peer_urls == [member.peer_url.clone()])
        .collect();
    assert_eq!(entries.len(), 1, "{} in {listed:#?}", member.name);
    let expected = Listed {
        id: entries[0].id,
        started: true,
        name: member.name.clone(),
        peer_urls: vec![member.peer_url.clone()],
        client_urls: vec![member.client_url().to_string()],
        is_learner,
    };
    assert_eq!(entries[0], &expected);
    expected.id
}

/// Whether `member` is listed as started with its current client URL.
fn published(listed: &[Listed], member: &Member) -> bool {
    listed.iter().any(|m| {
        m.peer_urls == [member.peer_url.clone()]
            && m.name == member.name
            && m.client_urls == [member.client_url().to_string()]
    })
}

/// The list holds exactly the voters `names` of `cluster`, started, with their URLs, in
/// etcd's order (by id); returns their ids in the order of `names`.
#[track_caller]
fn only_voters(cluster: &Cluster, listed: &[Listed], names: &[&str]) -> Vec<u64> {
    assert_eq!(listed.len(), names.len(), "{listed:#?}");
    let ids: Vec<u64> = names
        .iter()
        .map(|name| listed_started(listed, cluster.member(name), false))
        .collect();
    let order: Vec<u64> = listed.iter().map(|m| m.id).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "etcd lists members by id");
    ids
}

/// `endpoint status --cluster` has one row per member of `expected` (client URL and id),
/// every row names the same leader, which is one of them, and no row is a learner;
/// returns the leader's id.
#[track_caller]
fn one_leader(rows: &[Status], expected: &[(&Member, u64)]) -> u64 {
    let endpoints: BTreeSet<(String, u64)> = rows
        .iter()
        .map(|row| (row.endpoint.clone(), row.id))
        .collect();
    let wanted: BTreeSet<(String, u64)> = expected
        .iter()
        .map(|(member, id)| (member.client_url().to_string(), *id))
        .collect();
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    assert_eq!(endpoints, wanted);
    let leader = rows[0].leader;
    assert!(rows.iter().all(|row| row.leader == leader), "{rows:#?}");
    assert_eq!(rows.iter().filter(|row| row.id == leader).count(), 1);
    assert!(rows.iter().all(|row| !row.is_learner), "{rows:#?}");
    assert!(rows
        .iter()
        .all(|row| row.raft_applied_index <= row.raft_index));
    leader
}

fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// The `--initial-cluster` entries a member add printed, as a set.
fn entries(initial_cluster: &str) -> BTreeSet<String> {
    initial_cluster.split(',').map(str::to_string).collect()
}

/// A learner is added, refused promotion until it runs and catches up, promoted; a second
/// learner is refused while one exists; a member's peer URL is updated and it rejoins
/// there; a removed member stops and its id never comes back; every refusal is etcd's
/// error.
#[test]
fn three_members_add_promote_update_and_remove_with_etcdctl() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    let m1 = cluster.member("m1").endpoint().to_string();

    // member list: three started voters with their names and URLs (names and client URLs
    // arrive through the log once each member sees the leader).
    let (cluster_id, listed) = wait_for_list(&m1, "three published members", |listed| {
        ["m1", "m2", "m3"]
            .iter()
            .all(|name| published(listed, cluster.member(name)))
    });
    let ids = only_voters(&cluster, &listed, &["m1", "m2", "m3"]);
    let voters: Vec<(&Member, u64)> = (0..3).map(|i| (&cluster.members[i], ids[i])).collect();
    one_leader(&cluster_status(&m1), &voters);

    // A learner: etcdctl prints the flags to start it with.
    let m4_url = peer_url();
    let added = parse_added(&ctl_ok(
        &m1,
        &[
            "member",
            "add",
            "m4",
            &format!("--peer-urls={m4_url}"),
            "--learner",
        ],
    ));
    assert_eq!(added.cluster, cluster_id);
    assert_eq!(added.name, "m4");
    assert_eq!(added.peer_urls, m4_url);
    assert_eq!(added.state, "existing");
    let mut initial: BTreeSet<String> = (0..3)
        .map(|i| format!("m{}={}", i + 1, cluster.members[i].peer_url))
        .collect();
    initial.insert(format!("m4={m4_url}"));
    assert_eq!(entries(&added.initial_cluster), initial);
    assert!(!ids.contains(&added.id));
    let m4_id = added.id;
    let (_, listed) = member_list(&m1);
    assert_eq!(listed.len(), 4);
    let unstarted = Listed {
        id: m4_id,
        started: false,
        name: String::new(),
        peer_urls: vec![m4_url.clone()],
        client_urls: Vec::new(),
        is_learner: true,
    };
    assert!(listed.contains(&unstarted), "{listed:#?}");
    for (member, id) in &voters {
        assert_eq!(listed_started(&listed, member, false), *id);
    }
    // Not promotable before it runs; only one learner at a time; an unstarted member has
    // no client URL, so endpoint status --cluster still dials three.
    ctl_fails(
        &m1,
        &["member", "promote", &hex(m4_id)],
        LEARNER_NOT_IN_SYNC,
    );
    ctl_fails(
        &m1,
        &[
            "member",
            "add",
            "m5",
            &format!("--peer-urls={}", peer_url()),
            "--learner",
        ],
        TOO_MANY_LEARNERS,
    );
    one_leader(&cluster_status(&m1), &voters);

    // Started with the printed flags, the learner joins and publishes itself.
    cluster.join(&added);
    let (_, listed) = wait_for_list(&m1, "m4 started", |listed| {
        published(listed, cluster.member("m4"))
    });
    assert_eq!(listed_started(&listed, cluster.member("m4"), true), m4_id);
    // endpoint status --cluster dials it too; a learner never leads. (Its "is learner"
    // column is pinned by endpoint_status_of_a_learner_says_so.)
    let rows = cluster_status(&m1);
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let m4_url_client = format!("http://{}", cluster.member("m4").endpoint());
    assert!(rows
        .iter()
        .any(|r| r.id == m4_id && r.endpoint == m4_url_client));
    assert!(rows
        .iter()
        .all(|r| r.leader == rows[0].leader && r.leader != m4_id));
    // Promoted once its log has caught up with the leader's.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let output = ctl(&m1, &["member", "promote", &hex(m4_id)]);
        if output.success() {
            assert_eq!(
                output.stdout,
                changed_line(m4_id, "promoted in", cluster_id)
            );
            break;
        }
        assert_eq!(output.error_line(), format!("Error: {LEARNER_NOT_IN_SYNC}"));
        assert!(Instant::now() < deadline, "m4 never caught up: {output}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, listed) = member_list(&m1);
    let ids = only_voters(&cluster, &listed, &["m1", "m2", "m3", "m4"]);
    let voters: Vec<(&Member, u64)> = (0..4).map(|i| (&cluster.members[i], ids[i])).collect();
    one_leader(&cluster_status(&m1), &voters);
    ctl_fails(&m1, &["member", "promote", &hex(m4_id)], NOT_A_LEARNER);

    // With m4 a voter there is room for one learner again, and no more.
    let m5_url = peer_url();
    let m5 = parse_added(&ctl_ok(
        &m1,
        &[
            "member",
            "add",
            "m5",
            &format!("--peer-urls={m5_url}"),
            "--learner",
        ],
    ));
    ctl_fails(
        &m1,
        &[
            "member",
            "add",
            "m6",
            &format!("--peer-urls={}", peer_url()),
            "--learner",
        ],
        TOO_MANY_LEARNERS,
    );
    ctl_fails(
        &m1,
        &["member", "promote", &hex(m5.id)],
        LEARNER_NOT_IN_SYNC,
    );
    assert_eq!(
        ctl_ok(&m1, &["member", "remove", &hex(m5.id)]),
        changed_line(m5.id, "removed from", cluster_id)
    );
    let (_, listed) = member_list(&m1);
    only_voters(&cluster, &listed, &["m1", "m2", "m3", "m4"]);

    // m4 moves to a new peer URL: updated in the list at once; restarted there (new client
    // URL too), it rejoins and publishes itself again.
    let m4_new_url = peer_url();
    assert_eq!(
        ctl_ok(
            &m1,
            &[
                "member",
                "update",
                &hex(m4_id),
                &format!("--peer-urls={m4_new_url}")
            ]
        ),
        changed_line(m4_id, "updated in", cluster_id)
    );
    let (_, listed) = member_list(&m1);
    let moved = listed.iter().find(|m| m.id == m4_id).expect("m4 listed");
    assert_eq!(moved.peer_urls, std::slice::from_ref(&m4_new_url));
    assert!(moved.started && !moved.is_learner);
    let initial_cluster = (1..=4)
        .map(|i| {
            let member = cluster.member(&format!("m{i}"));
            let url = if i == 4 {
                &m4_new_url
            } else {
                &member.peer_url
            };
            format!("{}={url}", member.name)
        })
        .collect::<Vec<_>>()
        .join(",");
    let extra = cluster.extra.clone();
    let m4 = cluster.member_mut("m4");
    assert_eq!(m4.server.stop().expect("stop m4"), Some(0));
    m4.reconfigure(&m4_new_url, &initial_cluster, "existing", &extra);
    m4.start();
    let m4_endpoint = m4.endpoint().to_string();
    let (_, listed) = wait_for_list(&m1, "m4 at its new URLs", |listed| {
        published(listed, cluster.member("m4"))
    });
    let ids = only_voters(&cluster, &listed, &["m1", "m2", "m3", "m4"]);
    let voters: Vec<(&Member, u64)> = (0..4).map(|i| (&cluster.members[i], ids[i])).collect();
    one_leader(&cluster_status(&m1), &voters);
    assert_eq!(ctl_ok(&m4_endpoint, &["put", "via/m4", "hello"]), "OK\n");
    for name in ["m1", "m2", "m3"] {
        assert_eq!(
            ctl_ok(cluster.member(name).endpoint(), &["get", "via/m4"]),
            "via/m4\nhello\n",
            "{name} reads the write taken by m4"
        );
    }

    // Removed, m4 stops by itself (exit code 0); its id is gone for good.
    assert_eq!(
        ctl_ok(&m1, &["member", "remove", &hex(m4_id)]),
        changed_line(m4_id, "removed from", cluster_id)
    );
    let m4 = cluster.member_mut("m4");
    assert_eq!(m4.wait_for_exit(STOP_TIMEOUT), Some(0), "{}", m4.log());
    assert!(m4.log().contains(REMOVED_LOG), "{}", m4.log());
    let names = cluster.running();
    cluster.wait_for_leader(&names, SETTLE_TIMEOUT);
    let (_, listed) = member_list(&m1);
    let ids = only_voters(&cluster, &listed, &["m1", "m2", "m3"]);
    let voters: Vec<(&Member, u64)> = (0..3).map(|i| (&cluster.members[i], ids[i])).collect();
    one_leader(&cluster_status(&m1), &voters);
    ctl_fails(&m1, &["member", "remove", &hex(m4_id)], MEMBER_NOT_FOUND);
    ctl_fails(
        &m1,
        &[
            "member",
            "update",
            &hex(m4_id),
            &format!("--peer-urls={}", peer_url()),
        ],
        MEMBER_NOT_FOUND,
    );
    ctl_fails(&m1, &["member", "promote", &hex(m4_id)], MEMBER_NOT_FOUND);

    // Its URL is free again: added back, it gets a new id.
    let again = parse_added(&ctl_ok(
        &m1,
        &["member", "add", "m4", &format!("--peer-urls={m4_new_url}")],
    ));
    assert_ne!(again.id, m4_id, "a removed id never comes back");
    let (_, listed) = member_list(&m1);
    assert_eq!(listed.len(), 4);
    assert!(listed.contains(&Listed {
        id: again.id,
        started: false,
        name: String::new(),
        peer_urls: vec![m4_new_url.clone()],
        client_urls: Vec::new(),
        is_learner: false,
    }));
    assert_eq!(
        ctl_ok(&m1, &["member", "remove", &hex(again.id)]),
        changed_line(again.id, "removed from", cluster_id)
    );

    // Refusals, each with etcd's message, and none changes the membership.
    let m2_url = cluster.member("m2").peer_url.clone();
    ctl_fails(
        &m1,
        &["member", "add", "dup", &format!("--peer-urls={m2_url}")],
        PEER_URLS_EXIST,
    );
    ctl_fails(
        &m1,
        &[
            "member",
            "add",
            "dup",
            &format!("--peer-urls={m2_url}"),
            "--learner",
        ],
        PEER_URLS_EXIST,
    );
    ctl_fails(
        &m1,
        &[
            "member",
            "update",
            &hex(ids[0]),
            &format!("--peer-urls={m2_url}"),
        ],
        PEER_URLS_EXIST,
    );
    // etcdctl checks a URL's form itself; a port out of range reaches the server.
    ctl_fails(
        &m1,
        &["member", "add", "bad", "--peer-urls=http://127.0.0.1:99999"],
        BAD_URLS,
    );
    ctl_fails(
        &m1,
        &[
            "member",
            "update",
            &hex(ids[0]),
            "--peer-urls=http://127.0.0.1:99999",
        ],
        BAD_URLS,
    );
    let unknown = (1u64..).find(|id| !ids.contains(id) && *id != m4_id && *id != again.id);
    let unknown = hex(unknown.expect("some id is free"));
    ctl_fails(&m1, &["member", "remove", &unknown], MEMBER_NOT_FOUND);
    ctl_fails(
        &m1,
        &[
            "member",
            "update",
            &unknown,
            &format!("--peer-urls={}", peer_url()),
        ],
        MEMBER_NOT_FOUND,
    );
    ctl_fails(&m1, &["member", "promote", &unknown], MEMBER_NOT_FOUND);
    ctl_fails(&m1, &["member", "promote", &hex(ids[1])], NOT_A_LEARNER);
    let (_, listed) = member_list(&m1);
    assert_eq!(only_voters(&cluster, &listed, &["m1", "m2", "m3"]), ids);
    assert_eq!(ctl_ok(&m1, &["put", "after/refusals", "x"]), "OK\n");
    eprintln!("three-member membership scenario: {:?}", started.elapsed());
}

/// Values of 1 MiB written before the member is replaced (80 MiB in all).
const BIG_VALUES: usize = 80;

/// The 1 MiB value of big key `n`: its number's bytes repeated.
fn big_value(n: usize) -> Vec<u8> {
    (n as u32).to_le_bytes().repeat(1 << 18)
}

/// A follower removed, its data wiped and added back with the same name and URL (a new
/// id) is behind the leader's compacted log: it installs the leader's snapshot, ends with
/// the same data as the others (equal HashKV) and serves every key from its own store.
/// The store holds 80 values of 1 MiB, so the snapshot is larger than a peer frame of
/// messages may be (64 MiB): it travels under the snapshot limit, read in pieces.
#[test]
fn replaced_member_catches_up_through_a_snapshot() {
    let started = Instant::now();
    let mut cluster = Cluster::start(
        3,
        &["--snapshot-count", "50", "--snapshot-log-bytes-min", "1"],
    );
    let names = cluster.running();
    let leader = cluster.wait_for_leader(&names, SETTLE_TIMEOUT);
    let (cluster_id, listed) = wait_for_list(cluster.member("m1").endpoint(), "all", |l| {
        cluster.members.iter().all(|m| published(l, m))
    });
    let leader_name = cluster.name_of(&listed, leader);
    let follower = names
        .iter()
        .find(|name| **name != leader_name)
        .expect("a follower")
        .clone();
    let follower_id = listed_started(&listed, cluster.member(&follower), false);
    let via = cluster.member(&leader_name).endpoint().to_string();

    // The big values first: the snapshots taken during the small puts after them hold
    // them all.
    put_values(cluster.member(&leader_name), "big/", BIG_VALUES, big_value);
    put_keys(cluster.member(&leader_name), "key/", 300);
    assert_eq!(
        ctl_ok(&via, &["member", "remove", &hex(follower_id)]),
        changed_line(follower_id, "removed from", cluster_id)
    );
    let member = cluster.member_mut(&follower);
    assert_eq!(member.wait_for_exit(STOP_TIMEOUT), Some(0));
    member.wipe();
    // Writes go on without it, beyond another snapshot.
    put_keys(cluster.member(&leader_name), "more/", 100);
    // A snapshot taken while the big values were written may predate the last of them
    // (the next one waits for half its size of log); the leader, quiet now, snapshots
    // everything within seconds. Add the member once that snapshot is on disk.
    let leader_dir = cluster.member(&leader_name).server.data_dir.clone();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while corekv_tests::newest_snapshot(&leader_dir).map_or(0, |(_, bytes)| bytes) <= 64 << 20 {
        assert!(
            Instant::now() < deadline,
            "the leader took no snapshot of the big values"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let url = cluster.member(&follower).peer_url.clone();
    let added = parse_added(&ctl_ok(
        &via,
        &["member", "add", &follower, &format!("--peer-urls={url}")],
    ));
    assert_ne!(added.id, follower_id);
    assert_eq!(added.peer_urls, url);
    let extra = cluster.extra.clone();
    let member = cluster.member_mut(&follower);
    member.reconfigure(&url, &added.initial_cluster, &added.state, &extra);
    member.start();
    let endpoint = member.endpoint().to_string();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let installed = loop {
        let log = cluster.member(&follower).log();
        if let Some(line) = log
            .lines()
            .find(|line| line.contains("installed the leader's snapshot of "))
        {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no snapshot installed:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // "... of B bytes at index N (revision R)": a snapshot with the keys written before.
    let numbers: Vec<u64> = installed
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (bytes, index, revision) = match numbers[..] {
        [.., bytes, index, revision] => (bytes, index, revision),
        _ => panic!("no size, index and revision in {installed:?}"),
    };
    assert!(index > 0 && revision > 1, "{installed}");
    assert!(bytes > 64 << 20, "a snapshot over 64 MiB: {installed}");

    let (_, listed) = wait_for_list(&via, "the new member published", |l| {
        published(l, cluster.member(&follower))
    });
    let ids: Vec<u64> = names
        .iter()
        .map(|name| listed_started(&listed, cluster.member(name), false))
        .collect();
    assert!(ids.contains(&added.id));
    let hashes = wait_for_equal_hashes(&via, 3);
    assert!(hashes
        .iter()
        .any(|(ep, _, _)| *ep == format!("http://{endpoint}")));
    let expected = |prefix: &str, count: usize| -> Vec<(String, String)> {
        (0..count)
            .map(|n| (format!("{prefix}{n:04}"), format!("value-{n}")))
            .collect()
    };
    assert_eq!(local_keys(&endpoint, "key/"), expected("key/", 300));
    assert_eq!(local_keys(&endpoint, "more/"), expected("more/", 100));
    let big = ctl_ok(
        &endpoint,
        &["get", "big/", "--prefix", "--consistency=s", "--keys-only"],
    );
    let big_keys: Vec<&str> = big.lines().filter(|line| !line.is_empty()).collect();
    let expected_big: Vec<String> = (0..BIG_VALUES).map(|n| format!("big/{n:04}")).collect();
    assert_eq!(big_keys, expected_big, "the big values are all there");
    // After the snapshot it follows the log: a write through it is read everywhere.
    assert_eq!(ctl_ok(&endpoint, &["put", "after/snapshot", "y"]), "OK\n");
    for name in &names {
        assert_eq!(
            ctl_ok(cluster.member(name).endpoint(), &["get", "after/snapshot"]),
            "after/snapshot\ny\n"
        );
    }
    let voters: Vec<(&Member, u64)> = names
        .iter()
        .zip(&ids)
        .map(|(name, id)| (cluster.member(name), *id))
        .collect();
    one_leader(&cluster_status(&via), &voters);
    eprintln!(
        "member replaced through a snapshot ({installed}): {:?}",
        started.elapsed()
    );
}

/// The leader removes itself through its own endpoint: the request succeeds, the old
/// leader stops, and the two left elect a leader and take writes.
#[test]
fn the_leader_removes_itself() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    let names = cluster.running();
    let leader = cluster.wait_for_leader(&names, SETTLE_TIMEOUT);
    let (cluster_id, listed) = wait_for_list(cluster.member("m1").endpoint(), "all", |l| {
        cluster.members.iter().all(|m| published(l, m))
    });
    let leader_name = cluster.name_of(&listed, leader);
    let endpoint = cluster.member(&leader_name).endpoint().to_string();
    assert_eq!(
        ctl_ok(&endpoint, &["member", "remove", &hex(leader)]),
        changed_line(leader, "removed from", cluster_id)
    );
    let old = cluster.member_mut(&leader_name);
    assert_eq!(old.wait_for_exit(STOP_TIMEOUT), Some(0));
    assert!(old.log().contains(REMOVED_LOG), "{}", old.log());

    let survivors = cluster.running();
    assert_eq!(survivors.len(), 2);
    let new_leader = cluster.wait_for_leader(&survivors, SETTLE_TIMEOUT);
    assert_ne!(new_leader, leader);
    let (_, listed) = member_list(cluster.member(&survivors[0]).endpoint());
    assert!(listed.iter().all(|m| m.id != leader), "{listed:#?}");
    let ids: Vec<u64> = survivors
        .iter()
        .map(|name| listed_started(&listed, cluster.member(name), false))
        .collect();
    assert_eq!(listed.len(), 2);
    for (i, name) in survivors.iter().enumerate() {
        let key = format!("after/{name}");
        assert_eq!(
            ctl_ok(cluster.member(name).endpoint(), &["put", &key, "z"]),
            "OK\n"
        );
        let other = cluster.member(&survivors[1 - i]).endpoint();
        assert_eq!(ctl_ok(other, &["get", &key]), format!("{key}\nz\n"));
    }
    let voters: Vec<(&Member, u64)> = survivors
        .iter()
        .zip(&ids)
        .map(|(name, id)| (cluster.member(name), *id))
        .collect();
    assert_eq!(
        one_leader(&cluster_status(voters[0].0.endpoint()), &voters),
        new_leader
    );
    eprintln!("the leader removed itself: {:?}", started.elapsed());
}

/// Five members: list and status show five; kill -9 of the leader, a survivor takes
/// writes within two seconds of the election timeout; the dead member is removed and a
/// new one added, which catches up (equal HashKV).
#[test]
fn five_members_replace_a_dead_leader() {
    let started = Instant::now();
    let mut cluster = Cluster::start(5, &[]);
    let names = cluster.running();
    let m1 = cluster.member("m1").endpoint().to_string();
    let (cluster_id, listed) = wait_for_list(&m1, "five published members", |l| {
        cluster.members.iter().all(|m| published(l, m))
    });
    let five: Vec<&str> = names.iter().map(String::as_str).collect();
    let ids = only_voters(&cluster, &listed, &five);
    let voters: Vec<(&Member, u64)> = (0..5).map(|i| (&cluster.members[i], ids[i])).collect();
    let leader = one_leader(&cluster_status(&m1), &voters);
    let leader_name = cluster.name_of(&listed, leader);
    put_keys(cluster.member(&leader_name), "before/", 50);

    cluster.member_mut(&leader_name).server.kill();
    let killed = Instant::now();
    let survivors = cluster.running();
    let mut attempt = 0;
    while !try_put(
        cluster.member(&survivors[attempt % survivors.len()]),
        "after/kill",
        "x",
        Duration::from_millis(500),
    ) {
        attempt += 1;
        assert!(
            killed.elapsed() < SETTLE_TIMEOUT,
            "no write taken after the leader died"
        );
    }
    let failover = killed.elapsed();
    assert!(
        failover < ELECTION_TIMEOUT + Duration::from_secs(2),
        "first write {failover:?} after kill -9 of the leader"
    );
    let new_leader = cluster.wait_for_leader(&survivors, SETTLE_TIMEOUT);
    assert_ne!(new_leader, leader);

    // The dead member is removed, a new one added in its place.
    let via = cluster.member(&survivors[0]).endpoint().to_string();
    assert_eq!(
        ctl_ok(&via, &["member", "remove", &hex(leader)]),
        changed_line(leader, "removed from", cluster_id)
    );
    let added = parse_added(&ctl_ok(
        &via,
        &[
            "member",
            "add",
            "m6",
            &format!("--peer-urls={}", peer_url()),
        ],
    ));
    let mut initial: BTreeSet<String> = survivors
        .iter()
        .map(|name| format!("{name}={}", cluster.member(name).peer_url))
        .collect();
    initial.insert(format!("m6={}", added.peer_urls));
    assert_eq!(entries(&added.initial_cluster), initial);
    cluster.join(&added);
    let (_, listed) = wait_for_list(&via, "m6 published", |l| published(l, cluster.member("m6")));
    let mut now: Vec<&str> = survivors.iter().map(String::as_str).collect();
    now.push("m6");
    let ids = only_voters(&cluster, &listed, &now);
    assert_eq!(ids[4], added.id);
    assert_eq!(wait_for_equal_hashes(&via, 5).len(), 5);
    let m6 = cluster.member("m6").endpoint().to_string();
    assert_eq!(local_keys(&m6, "before/").len(), 50);
    assert_eq!(
        local_keys(&m6, "after/"),
        [("after/kill".to_string(), "x".to_string())]
    );
    let voters: Vec<(&Member, u64)> = now
        .iter()
        .zip(&ids)
        .map(|(name, id)| (cluster.member(name), *id))
        .collect();
    one_leader(&cluster_status(&via), &voters);
    eprintln!(
        "five members: failover {failover:?}, whole scenario {:?}",
        started.elapsed()
    );
}

/// etcd lists every member by id, learners among the voters (its cluster's `Members`
/// sorts them all), and etcdctl's `ETCD_INITIAL_CLUSTER` follows that order.
#[test]
fn member_list_orders_learners_by_id_too() {
    let cluster = Cluster::start(3, &[]);
    let m1 = cluster.member("m1").endpoint().to_string();
    let (_, listed) = wait_for_list(&m1, "three published members", |l| {
        cluster.members.iter().all(|m| published(l, m))
    });
    let highest = listed.iter().map(|m| m.id).max().expect("three members");
    // An added member's id is random: add learners until one sorts before a voter.
    let mut tries = 0;
    let learner = loop {
        let added = parse_added(&ctl_ok(
            &m1,
            &[
                "member",
                "add",
                "l",
                &format!("--peer-urls={}", peer_url()),
                "--learner",
            ],
        ));
        if added.id < highest {
            break added;
        }
        ctl_ok(&m1, &["member", "remove", &hex(added.id)]);
        tries += 1;
        assert!(tries < 50, "no learner id below {highest:x} in 50 tries");
    };
    let (_, listed) = member_list(&m1);
    let order: Vec<u64> = listed.iter().map(|m| m.id).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(
        order.iter().map(|id| hex(*id)).collect::<Vec<_>>(),
        sorted.iter().map(|id| hex(*id)).collect::<Vec<_>>(),
        "member list order (learner {:x})",
        learner.id
    );
}

/// etcd 3.4's Status answer says whether the member is a learner, which etcdctl's
/// `endpoint status` prints as "is learner".
#[test]
fn endpoint_status_of_a_learner_says_so() {
    let mut cluster = Cluster::start(1, &[]);
    let m1 = cluster.member("m1").endpoint().to_string();
    let added = parse_added(&ctl_ok(
        &m1,
        &[
            "member",
            "add",
            "l",
            &format!("--peer-urls={}", peer_url()),
            "--learner",
        ],
    ));
    cluster.join(&added);
    wait_for_list(&m1, "the learner published", |l| {
        published(l, cluster.member("l"))
    });
    let rows = cluster_status(&m1);
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.is_learner, row.id == added.id, "{row:?}");
    }
}
