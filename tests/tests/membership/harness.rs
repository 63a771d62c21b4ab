//! Members of one corekv cluster on loopback, and the real `etcdctl` that changes and
//! reads their membership, with its output parsed strictly.
//!
//! Every member runs `--cores 1` with etcd's cluster flags. etcdctl's simple output
//! (hex ids) and its `-w json` output (decimal ids) are both read and must agree. Every
//! wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::time::{Duration, Instant};

use corekv_engine::PutRequest;
use corekv_tests::etcd::etcdctl;
use corekv_tests::process::Output;
use corekv_tests::{free_port, run_client, TempDir, TestServer};

use crate::json::Json;

/// etcd's default election timeout, which the members use.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a condition the cluster should reach soon (a leader, a member caught up, a
/// published name) may take before the test fails.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The cluster token every member gets.
const TOKEN: &str = "membership-test";

/// One member: its name, peer URL, process and directory (data and logs).
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub peer_url: String,
    pub server: TestServer,
    dir: TempDir,
    /// Which start of this member's directory the current log belongs to.
    incarnation: usize,
}

impl Member {
    /// A member (not started) called `name` on `peer_url`, in a fresh directory.
    pub fn configure(
        name: &str,
        peer_url: &str,
        initial_cluster: &str,
        state: &str,
        extra: &[String],
    ) -> Member {
        let dir = TempDir::new(&format!("membership-{name}"));
        let server = member_server(&dir, 0, name, peer_url, initial_cluster, state, extra);
        Member {
            name: name.to_string(),
            peer_url: peer_url.to_string(),
            server,
            dir,
            incarnation: 0,
        }
    }

    /// The same member with new flags (new client ports, a new log file), on the same data
    /// dir, not started; the old process must have ended.
    pub fn reconfigure(
        &mut self,
        peer_url: &str,
        initial_cluster: &str,
        state: &str,
        extra: &[String],
    ) {
        assert!(self.server.pid().is_none(), "{} still runs", self.name);
        self.incarnation += 1;
        self.peer_url = peer_url.to_string();
        self.server = member_server(
            &self.dir,
            self.incarnation,
            &self.name,
            peer_url,
            initial_cluster,
            state,
            extra,
        );
    }

    /// Removes the data dir (the member must not run).
    pub fn wipe(&self) {
        assert!(self.server.pid().is_none(), "{} still runs", self.name);
        std::fs::remove_dir_all(&self.server.data_dir).expect("remove the data dir");
    }

    /// Starts the process and waits until it serves.
    pub fn start(&mut self) {
        let name = self.name.clone();
        self.server
            .spawn()
            .unwrap_or_else(|error| panic!("{name} does not start: {error:#}"));
    }

    /// The client endpoint (host:port) for etcdctl.
    pub fn endpoint(&self) -> &str {
        self.server.client_endpoint()
    }

    /// The client URL it advertises.
    pub fn client_url(&self) -> &str {
        self.server.client_url()
    }

    /// What the current incarnation logged.
    pub fn log(&self) -> String {
        self.server.log_text()
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.server.exit_status().expect("try_wait") {
                // Already reaped: kill() sends nothing to an exited child, only lets go.
                self.server.kill();
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs {within:?} later; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn member_server(
    dir: &TempDir,
    incarnation: usize,
    name: &str,
    peer_url: &str,
    initial_cluster: &str,
    state: &str,
    extra: &[String],
) -> TestServer {
    let mut flags: Vec<&str> = vec![
        "--name",
        name,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-token",
        TOKEN,
        "--initial-cluster-state",
        state,
        "--cores",
        "1",
    ];
    flags.extend(extra.iter().map(String::as_str));
    // The binary protocol's listener is bound without SO_REUSEADDR (see `port`); the
    // flag given last wins.
    let binary = format!("127.0.0.1:{}", port());
    flags.extend(["--listen-binary-urls", binary.as_str()]);
    let mut server = TestServer::configure(
        &dir.path().join("data"),
        &flags,
        dir.path().join(format!("log-{incarnation}")),
    );
    server.address = binary;
    server
}

/// A free port (from [`free_port`], so never one handed out before in this process)
/// that a listener without SO_REUSEADDR can bind too. `free_port` probes with std's
/// listener, which sets SO_REUSEADDR, so it hands out ports that still have connections
/// in TIME_WAIT from an earlier test's std listener; corekv's binary-protocol listener
/// (glommio: SO_REUSEPORT only) then fails with "Address already in use".
pub fn port() -> u16 {
    loop {
        let port = free_port();
        if binds_without_reuse(port) {
            return port;
        }
    }
}

/// Whether a plain socket (no SO_REUSEADDR, no SO_REUSEPORT) binds 127.0.0.1:`port`.
fn binds_without_reuse(port: u16) -> bool {
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `address` is a valid sockaddr_in that outlives the call, with its size.
    let bound = unsafe {
        libc::bind(
            fd,
            std::ptr::addr_of!(address).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    } == 0;
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    bound
}

/// `http://127.0.0.1:<free port>`.
pub fn peer_url() -> String {
    format!("http://127.0.0.1:{}", port())
}

/// Members m1..mN started together with one `--initial-cluster`.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    /// Flags every member gets, joining members too.
    pub extra: Vec<String>,
}

impl Cluster {
    /// Starts `size` members with `extra` flags and waits until they agree on a leader.
    pub fn start(size: usize, extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let urls: Vec<String> = (0..size).map(|_| peer_url()).collect();
        let initial = (0..size)
            .map(|i| format!("m{}={}", i + 1, urls[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = (0..size)
            .map(|i| Member::configure(&format!("m{}", i + 1), &urls[i], &initial, "new", &extra))
            .collect();
        // Members start together, as etcd's do: each waits for a quorum to elect.
        std::thread::scope(|scope| {
            for member in &mut members {
                scope.spawn(|| member.start());
            }
        });
        let cluster = Cluster { members, extra };
        cluster.wait_for_leader(&cluster.running(), SETTLE_TIMEOUT);
        cluster
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// The member called `name`, mutably.
    pub fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Names of the members whose process runs.
    pub fn running(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.server.pid().is_some())
            .map(|m| m.name.clone())
            .collect()
    }

    /// Client endpoints of the members called `names`, comma-separated for etcdctl.
    pub fn endpoints(&self, names: &[String]) -> String {
        names
            .iter()
            .map(|name| self.member(name).endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The leader's id once every member called `names` answers and names the same
    /// leader, and that leader is one of them; fails after `within`.
    pub fn wait_for_leader(&self, names: &[String], within: Duration) -> u64 {
        let endpoints = self.endpoints(names);
        let deadline = Instant::now() + within;
        loop {
            let output = ctl(&endpoints, &["endpoint", "status", "-w", "json"]);
            if output.success() {
                let rows = parse_status_json(&output.stdout);
                let leaders: Vec<u64> = rows.iter().map(|r| r.leader).collect();
                if rows.len() == names.len()
                    && leaders[0] != 0
                    && leaders.iter().all(|l| *l == leaders[0])
                    && rows.iter().any(|r| r.id == leaders[0])
                {
                    return leaders[0];
                }
            }
            assert!(
                Instant::now() < deadline,
                "members {names:?} agree on no leader within {within:?}; last: {output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member whose id is `id` (from `listed`).
    pub fn name_of(&self, listed: &[Listed], id: u64) -> String {
        let entry = listed
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("{id:x} not in {listed:?}"));
        self.members
            .iter()
            .find(|m| entry.peer_urls == [m.peer_url.clone()])
            .unwrap_or_else(|| panic!("no member has peer URLs {:?}", entry.peer_urls))
            .name
            .clone()
    }

    /// A member configured from what `etcdctl member add` printed, started.
    pub fn join(&mut self, added: &Added) -> &mut Member {
        let mut member = Member::configure(
            &added.name,
            &added.peer_urls,
            &added.initial_cluster,
            &added.state,
            &self.extra,
        );
        member.start();
        self.members.push(member);
        self.members.last_mut().expect("just pushed")
    }
}

/// Runs `etcdctl --endpoints=<endpoints> <args>`.
pub fn ctl(endpoints: &str, args: &[&str]) -> Output {
    etcdctl(endpoints, args, None)
}

/// Runs etcdctl, asserts success and returns stdout.
#[track_caller]
pub fn ctl_ok(endpoints: &str, args: &[&str]) -> String {
    ctl(endpoints, args).ok().stdout.clone()
}

/// Runs etcdctl and asserts it fails (exit code 1) with `Error: <message>`.
#[track_caller]
pub fn ctl_fails(endpoints: &str, args: &[&str], message: &str) {
    let output = ctl(endpoints, args);
    output.failed_with(1);
    assert_eq!(
        output.error_line(),
        format!("Error: {message}"),
        "etcdctl {args:?}: {output}"
    );
}

/// One row of `etcdctl member list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: u64,
    /// "started" (it published its name) or "unstarted".
    pub started: bool,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The member list from `endpoint` and the cluster id in its header. The simple and the
/// JSON output must say the same (asked again while the membership moves between them).
pub fn member_list(endpoint: &str) -> (u64, Vec<Listed>) {
    let mut attempts = 0;
    loop {
        let simple = parse_member_list(&ctl_ok(endpoint, &["member", "list"]));
        let (cluster, json) =
            parse_member_list_json(&ctl_ok(endpoint, &["member", "list", "-w", "json"]));
        if simple == json {
            return (cluster, simple);
        }
        attempts += 1;
        assert!(
            attempts < 5,
            "member list and member list -w json differ:\n{simple:#?}\n{json:#?}"
        );
    }
}

/// Parses etcdctl's simple member list: `id, started|unstarted, name, peer URLs, client
/// URLs, is learner`, URLs joined by commas.
pub fn parse_member_list(stdout: &str) -> Vec<Listed> {
    let urls = |field: &str| -> Vec<String> {
        if field.is_empty() {
            Vec::new()
        } else {
            field.split(',').map(str::to_string).collect()
        }
    };
    stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(", ").collect();
            assert_eq!(fields.len(), 6, "member list line {line:?}");
            let started = match fields[1] {
                "started" => true,
                "unstarted" => false,
                other => panic!("member status {other:?} in {line:?}"),
            };
            let listed = Listed {
                id: u64::from_str_radix(fields[0], 16).expect("hex member id"),
                started,
                name: fields[2].to_string(),
                peer_urls: urls(fields[3]),
                client_urls: urls(fields[4]),
                is_learner: fields[5].parse().expect("true or false"),
            };
            assert_eq!(
                format!("{:x}", listed.id),
                fields[0],
                "ids print as bare lower-case hex"
            );
            assert_eq!(started, !listed.name.is_empty(), "started = has a name");
            listed
        })
        .collect()
}

/// Parses `etcdctl member list -w json`: (cluster id, members). etcdctl leaves out empty
/// names and URL lists and a false isLearner.
pub fn parse_member_list_json(stdout: &str) -> (u64, Vec<Listed>) {
    let json = Json::parse(stdout);
    let cluster = json.at("header").at("cluster_id").u64();
    let members = json
        .at("members")
        .array()
        .iter()
        .map(|m| {
            let name = m.field("name").map_or("", Json::str).to_string();
            Listed {
                id: m.at("ID").u64(),
                started: !name.is_empty(),
                name,
                peer_urls: m.field("peerURLs").map_or_else(Vec::new, Json::strings),
                client_urls: m.field("clientURLs").map_or_else(Vec::new, Json::strings),
                is_learner: m.field("isLearner").is_some_and(Json::bool),
            }
        })
        .collect();
    (cluster, members)
}

/// Polls the member list at `endpoint` until `done` holds; returns it.
pub fn wait_for_list(
    endpoint: &str,
    what: &str,
    done: impl Fn(&[Listed]) -> bool,
) -> (u64, Vec<Listed>) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (cluster, listed) = member_list(endpoint);
        if done(&listed) {
            return (cluster, listed);
        }
        assert!(
            Instant::now() < deadline,
            "member list never showed {what}: {listed:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One row of `etcdctl endpoint status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub endpoint: String,
    pub id: u64,
    pub leader: u64,
    pub is_learner: bool,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
}

/// `etcdctl endpoint status --cluster` from `endpoint`, simple and JSON output read
/// together: the simple rows' "is leader" must match the JSON's leader id.
pub fn cluster_status(endpoint: &str) -> Vec<Status> {
    let mut attempts = 0;
    loop {
        let simple = ctl_ok(endpoint, &["endpoint", "status", "--cluster"]);
        let rows = parse_status_json(&ctl_ok(
            endpoint,
            &["endpoint", "status", "--cluster", "-w", "json"],
        ));
        let lines: Vec<Vec<&str>> = simple
            .lines()
            .map(|line| line.splitn(10, ", ").collect())
            .collect();
        for line in &lines {
            assert_eq!(line.len(), 10, "endpoint status line {line:?}");
            assert_eq!(line[2], "3.4.0", "the etcd API version corekv reports");
            assert_eq!(line[9], "", "errors");
        }
        // Simple: endpoint, id (hex), version, db size, is leader, is learner, term, ...
        let agree = lines.len() == rows.len()
            && lines.iter().zip(&rows).all(|(line, row)| {
                line[0] == row.endpoint
                    && line[1] == format!("{:x}", row.id)
                    && line[4] == (row.leader == row.id).to_string()
                    && line[5] == row.is_learner.to_string()
            });
        if agree {
            return rows;
        }
        attempts += 1;
        assert!(
            attempts < 5,
            "endpoint status simple and JSON differ:\n{simple}\n{rows:#?}"
        );
    }
}

/// Parses `etcdctl endpoint status -w json`.
pub fn parse_status_json(stdout: &str) -> Vec<Status> {
    Json::parse(stdout)
        .array()
        .iter()
        .map(|row| {
            let status = row.at("Status");
            // etcdctl leaves out zero numbers (no leader yet) and a false isLearner.
            let number = |key: &str| status.field(key).map_or(0, Json::u64);
            Status {
                endpoint: row.at("Endpoint").str().to_string(),
                id: status.at("header").at("member_id").u64(),
                leader: number("leader"),
                is_learner: status.field("isLearner").is_some_and(Json::bool),
                raft_term: number("raftTerm"),
                raft_index: number("raftIndex"),
                raft_applied_index: number("raftAppliedIndex"),
            }
        })
        .collect()
}

/// What `etcdctl member add` printed: the new member and the flags to start it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub id: u64,
    pub cluster: u64,
    pub name: String,
    pub initial_cluster: String,
    pub peer_urls: String,
    pub state: String,
}

/// Parses `etcdctl member add` output, line by line and strictly.
pub fn parse_added(stdout: &str) -> Added {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "member add printed:\n{stdout}");
    let (id, cluster) = lines[0]
        .strip_prefix("Member ")
        .and_then(|rest| rest.split_once(" added to cluster "))
        .unwrap_or_else(|| panic!("first line of member add: {:?}", lines[0]));
    let id = u64::from_str_radix(id.trim_start(), 16).expect("hex member id");
    let cluster = u64::from_str_radix(cluster.trim_start(), 16).expect("hex cluster id");
    assert_eq!(
        lines[0],
        format!("Member {id:>16x} added to cluster {cluster:>16x}")
    );
    assert_eq!(lines[1], "");
    let value = |line: &str, key: &str| -> String {
        line.strip_prefix(&format!("{key}=\""))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("expected {key}=\"...\", got {line:?}"))
            .to_string()
    };
    Added {
        id,
        cluster,
        name: value(lines[2], "ETCD_NAME"),
        initial_cluster: value(lines[3], "ETCD_INITIAL_CLUSTER"),
        peer_urls: value(lines[4], "ETCD_INITIAL_ADVERTISE_PEER_URLS"),
        state: value(lines[5], "ETCD_INITIAL_CLUSTER_STATE"),
    }
}

/// The `Member <id> <verb> cluster <cluster>` line of remove, update and promote.
pub fn changed_line(id: u64, verb: &str, cluster: u64) -> String {
    format!("Member {id:>16x} {verb} cluster {cluster:>16x}\n")
}

/// `(endpoint, hash, revision)` for every member, from `etcdctl endpoint hashkv
/// --cluster -w json` at `endpoint`, once every member has the same revision and hash.
pub fn wait_for_equal_hashes(endpoint: &str, members: usize) -> Vec<(String, u64, u64)> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let output = ctl(endpoint, &["endpoint", "hashkv", "--cluster", "-w", "json"]);
        if output.success() {
            let rows: Vec<(String, u64, u64)> = Json::parse(&output.stdout)
                .array()
                .iter()
                .map(|row| {
                    let hash = row.at("HashKV");
                    (
                        row.at("Endpoint").str().to_string(),
                        hash.at("hash").u64(),
                        hash.at("header").at("revision").u64(),
                    )
                })
                .collect();
            if rows.len() == members
                && rows
                    .iter()
                    .all(|(_, hash, rev)| (*hash, *rev) == (rows[0].1, rows[0].2))
            {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "members' hashes never agreed: {rows:?}"
            );
        } else {
            assert!(Instant::now() < deadline, "endpoint hashkv: {output}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Puts `count` keys `<prefix><n>` = `value-<n>` through `member`'s binary protocol,
/// 32 in flight at a time.
pub fn put_keys(member: &Member, prefix: &str, count: usize) {
    put_values(member, prefix, count, |n| format!("value-{n}").into_bytes());
}

/// Puts `count` keys `<prefix><n>` = `value(n)` through `member`'s binary protocol, 32
/// in flight at a time.
pub fn put_values(member: &Member, prefix: &str, count: usize, value: fn(usize) -> Vec<u8>) {
    let address = member.server.address.clone();
    let prefix = prefix.to_string();
    run_client(move || async move {
        let client = corekv_net::client::Client::connect(&address)
            .await
            .expect("connect");
        let client = std::rc::Rc::new(client);
        let mut next = 0;
        while next < count {
            let batch: Vec<_> = (next..count.min(next + 32))
                .map(|n| {
                    let client = client.clone();
                    let request = PutRequest {
                        key: format!("{prefix}{n:04}").into_bytes(),
                        value: value(n),
                        ..PutRequest::default()
                    };
                    glommio::spawn_local(async move { client.put(request).await })
                })
                .collect();
            for task in batch {
                task.await.expect("put acknowledged");
            }
            next += 32;
        }
    });
}

/// Puts `key` through `member`'s binary protocol; true once acknowledged within
/// `timeout` (a put forwarded to a leader that just died would wait for the server's
/// request timeout; clients retry sooner, as etcd's do).
pub fn try_put(member: &Member, key: &str, value: &str, timeout: Duration) -> bool {
    let address = member.server.address.clone();
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
            glommio::timer::sleep(timeout).await;
            false
        })
        .await
    })
}

/// The keys and values under `prefix` as etcdctl's simple `get --prefix` prints them
/// (key and value on alternate lines), read serializably from `endpoint`'s own store.
pub fn local_keys(endpoint: &str, prefix: &str) -> Vec<(String, String)> {
    let stdout = ctl_ok(endpoint, &["get", prefix, "--prefix", "--consistency=s"]);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len() % 2, 0, "get --prefix printed:\n{stdout}");
    lines
        .chunks(2)
        .map(|pair| (pair[0].to_string(), pair[1].to_string()))
        .collect()
}
