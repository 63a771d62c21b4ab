//! A cluster of `corekv` processes on loopback for the replication and fault tests:
//! start N members with etcd's cluster flags, optionally with their peer links behind
//! the fault-injecting [`Proxy`]; find the leader; kill, restart and reset members; put
//! and read through any member with a deadline; and check that members converged (same
//! revision, same HashKV).
//!
//! Members run with etcd's default timing, stated explicitly ([`HEARTBEAT_INTERVAL`],
//! [`ELECTION_TIMEOUT`]), one core each. Member ids come from each member's own status
//! (they derive from the peer URLs and the cluster token, as etcd's do). Every call that
//! talks to a member has a deadline, and every wait polls a condition until a deadline:
//! nothing here sleeps to let something happen.
//!
//! Requests go over the binary protocol straight to the member; only peer traffic goes
//! through the proxy, so a partitioned member's clients still reach it (and must get
//! errors from it, never stale answers).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use corekv_engine::{PutRequest, RangeRequest, Revision};
use corekv_net::client::{Client, ClientError};
use corekv_net::protocol::{Member as ListedMember, Request, Response, StatusResponse};

use crate::proxy::Proxy;
use crate::{free_port, run_client, TempDir, TestServer};

/// The members' `--heartbeat-interval` (etcd's default).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// The members' `--election-timeout` (etcd's default).
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a status request may take; a member that is up answers at once (status is
/// local, with or without a leader).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request through one member did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection: the member is down (or not listening yet).
    Unreachable(String),
    /// The member answered with an error (etcd's message).
    Refused {
        /// gRPC status code.
        code: u32,
        /// etcd's message.
        message: String,
    },
    /// The connection broke before the answer.
    Lost(String),
    /// No answer within the time allowed.
    TimedOut,
}

impl Failure {
    /// Classifies a client error.
    pub fn of(error: ClientError) -> Failure {
        match error {
            ClientError::Server { code, message } => Failure::Refused { code, message },
            ClientError::Connect { .. } | ClientError::Handshake { .. } => {
                Failure::Unreachable(error.to_string())
            }
            other => Failure::Lost(other.to_string()),
        }
    }
}

/// Runs `future`, or gives up after `timeout` (None).
pub async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
}

/// Sends `request` to the binary protocol at `address` on a fresh connection and waits
/// at most `timeout` for the connection and the answer together.
pub fn request(address: &str, request: Request, timeout: Duration) -> Result<Response, Failure> {
    let address = address.to_string();
    run_client(move || async move {
        let attempt = async {
            let client = Client::connect(&address).await.map_err(Failure::of)?;
            client.request(request).await.map_err(Failure::of)
        };
        within(timeout, attempt)
            .await
            .unwrap_or(Err(Failure::TimedOut))
    })
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Names the temp dirs; also the default `--initial-cluster-token`.
    pub name: String,
    /// Members.
    pub size: usize,
    /// Whether peer links go through a [`Proxy`] that can cut them.
    pub proxied: bool,
    /// `--initial-cluster-token` of every member not in `token_overrides`.
    pub token: String,
    /// Members started with another `--initial-cluster-token`: (index, token).
    pub token_overrides: Vec<(usize, String)>,
}

impl ClusterOptions {
    /// `size` members, direct peer links, token `name`.
    pub fn new(name: &str, size: usize) -> ClusterOptions {
        ClusterOptions {
            name: name.to_string(),
            size,
            proxied: false,
            token: name.to_string(),
            token_overrides: Vec::new(),
        }
    }

    /// The same with peer links through a proxy.
    pub fn proxied(mut self) -> ClusterOptions {
        self.proxied = true;
        self
    }
}

/// One member of a [`Cluster`].
#[derive(Debug)]
pub struct Member {
    /// `--name`: `m0`, `m1`, ...
    pub name: String,
    /// The process.
    pub server: TestServer,
    /// The peer URL the others dial (the proxy's listener when proxied).
    pub advertised_peer_url: String,
    listen_peer_url: String,
    token: String,
    /// The member id, from the member's own status; 0 until started.
    id: u64,
    dir: TempDir,
}

/// Members on loopback, each with its own data dir, and the proxy between them if any.
#[derive(Debug)]
pub struct Cluster {
    members: Vec<Member>,
    initial_cluster: String,
    proxy: Option<Proxy>,
}

impl Cluster {
    /// Starts every member at once (each waits for a quorum to elect, as etcd's do) and
    /// learns their ids. Panics if a member does not start.
    pub fn start(options: ClusterOptions) -> Cluster {
        let size = options.size;
        let listen_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let advertised_ports: Vec<u16> = if options.proxied {
            (0..size).map(|_| free_port()).collect()
        } else {
            listen_ports.clone()
        };
        let proxy = options.proxied.then(|| {
            let routes: Vec<(SocketAddr, SocketAddr)> = (0..size)
                .map(|i| (loopback(advertised_ports[i]), loopback(listen_ports[i])))
                .collect();
            Proxy::start(&routes).expect("start the peer proxy")
        });
        let initial_cluster = (0..size)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", advertised_ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let members = (0..size)
            .map(|i| {
                let token = options
                    .token_overrides
                    .iter()
                    .find(|(member, _)| *member == i)
                    .map_or(options.token.clone(), |(_, token)| token.clone());
                let dir = TempDir::new(&format!("{}-m{i}", options.name));
                let listen_peer_url = format!("http://127.0.0.1:{}", listen_ports[i]);
                let advertised_peer_url = format!("http://127.0.0.1:{}", advertised_ports[i]);
                let name = format!("m{i}");
                let server = configure_member(
                    &dir,
                    &name,
                    &listen_peer_url,
                    &advertised_peer_url,
                    &initial_cluster,
                    &token,
                );
                Member {
                    name,
                    server,
                    advertised_peer_url,
                    listen_peer_url,
                    token,
                    id: 0,
                    dir,
                }
            })
            .collect();
        let mut cluster = Cluster {
            members,
            initial_cluster,
            proxy,
        };
        std::thread::scope(|scope| {
            for member in &mut cluster.members {
                scope.spawn(|| member.server.spawn().expect("a member starts"));
            }
        });
        for i in 0..size {
            cluster.learn_id(i);
        }
        cluster
    }

    fn learn_id(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.status(i) {
                self.members[i].id = status.header.member_id;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} answers no status: {}",
                self.members[i].server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Members, started or not.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// Member `i`'s process.
    pub fn server(&self, i: usize) -> &TestServer {
        &self.members[i].server
    }

    /// Member `i`'s binary protocol address.
    pub fn address(&self, i: usize) -> &str {
        &self.members[i].server.address
    }

    /// Every member's binary protocol address, by index.
    pub fn addresses(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.server.address.clone())
            .collect()
    }

    /// Member `i`'s id.
    pub fn id(&self, i: usize) -> u64 {
        self.members[i].id
    }

    /// The index of the member with id `id`.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id && id != 0)
    }

    /// Member `i`'s status, or None if it does not answer within [`STATUS_TIMEOUT`].
    pub fn status(&self, i: usize) -> Option<StatusResponse> {
        match request(self.address(i), Request::Status, STATUS_TIMEOUT) {
            Ok(Response::Status(status)) => Some(status),
            _ => None,
        }
    }

    /// The index of the member that every member of `members` names as leader, and that
    /// is one of them, once they agree; panics after `within`.
    pub fn agreed_leader(&self, members: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<u64> = members
                .iter()
                .map(|&i| self.status(i).map_or(0, |s| s.leader))
                .collect();
            if let Some(leader) = self.index_of(leaders[0]) {
                if members.contains(&leader) && leaders.iter().all(|l| *l == leaders[0]) {
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "members {members:?} agree on no leader among them within {within:?}: {leaders:x?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].server.kill();
    }

    /// Starts member `i` again on its data dir (waits until it serves).
    pub fn restart(&mut self, i: usize) {
        let member = &mut self.members[i];
        member
            .server
            .spawn()
            .unwrap_or_else(|error| panic!("restart member {i}: {error:#}"));
    }

    /// Kills member `i`, empties its data dir and starts it afresh with `token` as its
    /// `--initial-cluster-token` (same name and peer URLs).
    pub fn reset(&mut self, i: usize, token: &str) {
        self.kill(i);
        let member = &mut self.members[i];
        let _ = std::fs::remove_dir_all(&member.server.data_dir);
        member.token = token.to_string();
        member.server = configure_member(
            &member.dir,
            &member.name,
            &member.listen_peer_url,
            &member.advertised_peer_url,
            &self.initial_cluster,
            token,
        );
        self.restart(i);
        self.learn_id(i);
    }

    /// Puts `key` = `value` through member `i`; the revision it was written at.
    pub fn put(
        &self,
        i: usize,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<Revision, Failure> {
        let put = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..PutRequest::default()
        };
        match request(self.address(i), Request::Put(put), timeout)? {
            Response::Put(header, _) => Ok(header.revision),
            other => panic!("a put answered {other:?}"),
        }
    }

    /// Reads `key` through member `i`: linearizable unless `serializable`.
    pub fn get(
        &self,
        i: usize,
        key: &str,
        serializable: bool,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, Failure> {
        let range = RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..RangeRequest::default()
        };
        match request(self.address(i), Request::Range(range), timeout)? {
            Response::Range(_, range) => Ok(range.kvs.into_iter().next().map(|kv| kv.value)),
            other => panic!("a range answered {other:?}"),
        }
    }

    /// Every key under `prefix` as member `i` holds them (a serializable read: what this
    /// member applied, whatever the others hold).
    pub fn local_keys(&self, i: usize, prefix: &str) -> Vec<String> {
        let range = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            serializable: true,
            keys_only: true,
            ..RangeRequest::default()
        };
        match request(
            self.address(i),
            Request::Range(range),
            Duration::from_secs(10),
        ) {
            Ok(Response::Range(_, range)) => range
                .kvs
                .into_iter()
                .map(|kv| String::from_utf8(kv.key).expect("test keys are UTF-8"))
                .collect(),
            other => panic!("member {i} lists no keys under {prefix}: {other:?}"),
        }
    }

    /// (hash, hashed revision) of member `i`'s store up to `revision`.
    pub fn hash_kv(&self, i: usize, revision: Revision) -> Result<(u32, Revision), Failure> {
        match request(
            self.address(i),
            Request::HashKv { revision },
            Duration::from_secs(10),
        )? {
            Response::HashKv {
                hash,
                hash_revision,
                ..
            } => Ok((hash, hash_revision)),
            other => panic!("hashkv answered {other:?}"),
        }
    }

    /// The member list as member `i` knows it (serializable).
    pub fn member_list(&self, i: usize) -> Vec<ListedMember> {
        match request(
            self.address(i),
            Request::MemberList {
                linearizable: false,
            },
            Duration::from_secs(5),
        ) {
            Ok(Response::MemberList(_, members)) => members,
            other => panic!("member list answered {other:?}"),
        }
    }

    /// Waits until every member of `members` answers at one and the same revision with
    /// the same HashKV at it, and returns (revision, hash). Call it once nothing writes
    /// any more. Panics with every member's view after `within`.
    pub fn converge(&self, members: &[usize], within: Duration) -> (Revision, u32) {
        let deadline = Instant::now() + within;
        loop {
            let revisions: Vec<Option<Revision>> = members
                .iter()
                .map(|&i| self.status(i).map(|s| s.header.revision))
                .collect();
            let mut seen = String::new();
            if let Some(Some(revision)) = revisions.first().copied() {
                if revisions.iter().all(|r| *r == Some(revision)) {
                    let hashes: Vec<Result<(u32, Revision), Failure>> =
                        members.iter().map(|&i| self.hash_kv(i, revision)).collect();
                    if let Ok((hash, _)) = hashes[0] {
                        if hashes.iter().all(|h| *h == Ok((hash, revision))) {
                            return (revision, hash);
                        }
                    }
                    seen = format!("; hashes at revision {}: {hashes:?}", revision.0);
                }
            }
            assert!(
                Instant::now() < deadline,
                "members {members:?} did not converge within {within:?}: revisions {revisions:?}{seen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The proxy between the members; panics if the cluster was started without one.
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("the cluster was started with ClusterOptions::proxied")
    }

    /// Cuts every peer link from and to member `i`.
    pub fn isolate(&self, i: usize) {
        self.proxy().isolate(self.id(i));
    }

    /// Cuts the peer link from member `from` to member `to` (one direction).
    pub fn cut(&self, from: usize, to: usize) {
        self.proxy().cut(self.id(from), self.id(to));
    }

    /// Heals every cut link and isolation.
    pub fn heal_all(&self) {
        self.proxy().heal_all();
    }

    /// The last lines of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let text = m.server.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                format!("--- {} ({:x}) ---\n{tail}\n", m.name, m.id)
            })
            .collect()
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The end of the range of keys starting with `prefix` (etcd's `--prefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn configure_member(
    dir: &TempDir,
    name: &str,
    listen_peer_url: &str,
    advertised_peer_url: &str,
    initial_cluster: &str,
    token: &str,
) -> TestServer {
    let heartbeat = HEARTBEAT_INTERVAL.as_millis().to_string();
    let election = ELECTION_TIMEOUT.as_millis().to_string();
    let extra = [
        "--name",
        name,
        "--listen-peer-urls",
        listen_peer_url,
        "--initial-advertise-peer-urls",
        advertised_peer_url,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-token",
        token,
        "--heartbeat-interval",
        heartbeat.as_str(),
        "--election-timeout",
        election.as_str(),
        "--cores",
        "1",
    ];
    TestServer::configure(&dir.path().join("data"), &extra, dir.path().join("log"))
}
