//! The reference: a real etcd 3.4 (`etcd` and `etcdctl` from PATH, Debian's `etcd-server`
//! and `etcd-client`) on loopback ports, and the `etcdctl` runner used against both etcd
//! and corekv.
//!
//! Tests that need etcd call [`etcd_available`] first. Without an installed etcd they are
//! skipped with a loud message, unless `COREKV_REQUIRE_ETCD` is set (`tests/run.sh` sets
//! it), in which case they fail: CI must never pass by skipping. Servers never use etcd's
//! default ports 2379/2380: every port comes from [`crate::free_port`].

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{self, Background, Output};
use crate::{free_port, TempDir, START_TIMEOUT};

/// How long one `etcdctl` invocation may take before it is killed and the test fails.
/// etcdctl's own `--command-timeout` is 5 s; this only catches a hang.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(20);

/// The member name both etcd and corekv get in differential tests (etcd's default).
pub const MEMBER_NAME: &str = "default";

/// The cluster token both get (etcd's default); member and cluster ids derive from it.
pub const CLUSTER_TOKEN: &str = "etcd-cluster";

/// Raft timing for both: etcd's defaults. They are visible to clients: the minimum lease
/// TTL is 1.5 election timeouts rounded up (2 s here), so shorter timeouts would change
/// what `lease grant 1` prints. A single member elects itself about one election timeout
/// after start, which is the start-up cost of every differential test.
pub const HEARTBEAT_INTERVAL_MS: &str = "100";
/// See [`HEARTBEAT_INTERVAL_MS`].
pub const ELECTION_TIMEOUT_MS: &str = "1000";

/// Whether `path` names an executable file.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `program` looked up in PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| is_executable(path))
}

/// Whether etcd and etcdctl are installed; see [`programs_available`].
pub fn etcd_available(test: &str) -> bool {
    programs_available(test, &["etcd", "etcdctl"])
}

/// Whether all `programs` are in PATH. When one is not: panics if `COREKV_REQUIRE_ETCD`
/// is set, else prints a loud skip message naming `test` and returns false.
pub fn programs_available(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| which(program).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{} not found in PATH (apt-get install etcd-server etcd-client curl; tests/run.sh does)",
        missing.join(" and ")
    );
    if std::env::var_os("COREKV_REQUIRE_ETCD").is_some() {
        panic!("{test}: {message}, and COREKV_REQUIRE_ETCD is set");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED {test}: {message}. Set COREKV_REQUIRE_ETCD=1 to make this fail. !!!!!!!!\n"
    );
    false
}

/// The `etcdctl` command for `endpoint` (host:port), API v3, with no `ETCDCTL_*` settings
/// inherited from the environment.
pub fn etcdctl_command(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new("etcdctl");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ETCDCTL_") {
            command.env_remove(name);
        }
    }
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    command
}

/// Runs `etcdctl --endpoints=<endpoint> <args>` with `stdin`; fails the test if it takes
/// longer than [`ETCDCTL_TIMEOUT`].
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    process::run(etcdctl_command(endpoint, args), stdin, ETCDCTL_TIMEOUT)
}

/// Starts `etcdctl --endpoints=<endpoint> <args>` in the background (watch, elect, ...).
pub fn spawn_etcdctl(endpoint: &str, args: &[&str]) -> Background {
    Background::spawn(
        format!("etcdctl {}", args.join(" ")),
        etcdctl_command(endpoint, args),
    )
}

/// Waits until a client request succeeds at `endpoint`: a TCP connect first (cheap to
/// retry), then a linearizable `etcdctl get`, which needs an elected leader. `alive` is
/// asked between attempts so a server that died is reported at once.
pub fn wait_until_serving(
    endpoint: &str,
    mut alive: impl FnMut() -> Result<()>,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        alive()?;
        if TcpStream::connect(endpoint).is_ok() {
            let probe = etcdctl(
                endpoint,
                &["--dial-timeout=1s", "--command-timeout=2s", "get", "probe"],
                None,
            );
            if probe.success() {
                return Ok(());
            }
            last = probe.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "{what} did not serve etcdctl at {endpoint} within {START_TIMEOUT:?}; last attempt: {last}"
    )
}

/// A real etcd, single member, on free loopback ports with its own data directory;
/// killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    /// Client address, host:port (etcdctl's `--endpoints`).
    pub endpoint: String,
    /// `http://<endpoint>`.
    pub client_url: String,
    /// The peer URL it listens on and advertises.
    pub peer_url: String,
    log: PathBuf,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd with etcd's default settings plus `extra` flags and waits until it
    /// serves a linearizable read.
    pub fn start(name: &str, extra: &[&str]) -> Result<EtcdServer> {
        let dir = TempDir::new(&format!("etcd-{name}"));
        let endpoint = format!("127.0.0.1:{}", free_port());
        let client_url = format!("http://{endpoint}");
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let log = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log)?;
        let data_dir = dir.path().join("data");
        let mut command = Command::new("etcd");
        command
            .args(["--name", MEMBER_NAME])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{MEMBER_NAME}={peer_url}")])
            .args(["--initial-cluster-token", CLUSTER_TOKEN])
            .args(["--initial-cluster-state", "new"])
            .args(["--heartbeat-interval", HEARTBEAT_INTERVAL_MS])
            .args(["--election-timeout", ELECTION_TIMEOUT_MS])
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().context("start etcd")?;
        let mut server = EtcdServer {
            child: Some(child),
            endpoint,
            client_url,
            peer_url,
            log,
            dir,
        };
        let endpoint = server.endpoint.clone();
        let child = server.child.as_mut().expect("just started");
        let serving = wait_until_serving(
            &endpoint,
            || match child.try_wait()? {
                Some(status) => bail!("etcd exited with {status} during start-up"),
                None => Ok(()),
            },
            "etcd",
        );
        serving.with_context(|| format!("etcd log:\n{}", server.log_text()))?;
        Ok(server)
    }

    /// Its directory (data dir and log inside).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What etcd logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
