//! corekv-tests: tests that span crates or processes.
//!
//! This library is the harness: [`TestServer`] runs a real `corekv` process on free
//! loopback ports (binary protocol, and etcd's client URL for gRPC and HTTP) with its own
//! data directory, and can stop it (SIGTERM), kill it (SIGKILL) and restart it on the
//! same data; [`run_client`] runs client code on a glommio executor. For etcd
//! compatibility, [`etcd`] runs the real etcd and etcdctl, [`mask`] masks what may
//! legitimately differ between two servers' outputs, and [`compat`] runs one scenario
//! against two servers and compares the transcripts; [`grpc`] runs one gRPC API scenario
//! against corekv and etcd; [`process`] runs child processes with deadlines. For
//! replication and faults, [`cluster`] runs several members with etcd's cluster flags,
//! [`proxy`] sits on their peer links to cut and heal them, and [`history`] records
//! client histories for the linearizability checker. The tests themselves live in
//! `tests/tests/`. Tests of one pure crate live beside that crate.
//!
//! The server binary is found through `COREKV_BIN`, or next to the test executable
//! (`target/<profile>/corekv`); if it is not there it is built once with the test
//! profile, so `cargo test` alone is enough.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_net::client::Client;

pub mod cluster;
pub mod compat;
pub mod etcd;
pub mod grpc;
pub mod history;
pub mod mask;
pub mod process;
pub mod proxy;

/// How long a server may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `corekv` binary under test.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("COREKV_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/corekv
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let binary = profile_dir.join("corekv");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = Command::new(cargo)
            .args([
                "build",
                "--profile",
                "test",
                "-p",
                "corekv-net",
                "--bin",
                "corekv",
            ])
            .status()
            .expect("run cargo to build the corekv binary");
        assert!(status.success(), "building the corekv binary failed");
        assert!(
            binary.exists(),
            "corekv binary not found at {}",
            binary.display()
        );
        binary
    })
}

/// A port nobody listens on right now, below the kernel's ephemeral range (32768+):
/// probing an ephemeral port with no listener can connect the socket to itself. Ports
/// come from 20000-31999, so never etcd's defaults 2379/2380; within one test process
/// no port is handed out twice.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let offset = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 10_000;
        let port = start.wrapping_add(offset) % 12_000 + 20_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `/tmp/corekv-test-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("corekv-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // COREKV_TEST_KEEP=1 keeps the data of failed runs for a post-mortem.
        if std::env::var_os("COREKV_TEST_KEEP").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The newest snapshot file in a server's data directory
/// (`member/shard-0/snap/<index>-<term>.snap`, hex): its Raft index and its size in
/// bytes; None before the first snapshot.
pub fn newest_snapshot(data_dir: &Path) -> Option<(u64, u64)> {
    std::fs::read_dir(data_dir.join("member/shard-0/snap"))
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let index = name.strip_suffix(".snap")?.split('-').next()?;
            let index = u64::from_str_radix(index, 16).ok()?;
            Some((index, entry.metadata().ok()?.len()))
        })
        .max()
}

/// A `corekv` process under test.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    /// Binary protocol address.
    pub address: String,
    /// etcd's client URL, `http://127.0.0.1:<port>`: gRPC and HTTP (JSON gateway,
    /// /health, /version, /metrics), passed as `--listen-client-urls` and
    /// `--advertise-client-urls`.
    client_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Environment variables the process gets besides the test's own.
    pub env: Vec<(String, String)>,
    log: PathBuf,
    _dir: Option<TempDir>,
}

impl TestServer {
    /// Starts a server on a free port with a fresh data dir and `extra` flags.
    pub fn start(name: &str, extra: &[&str]) -> Result<TestServer> {
        TestServer::start_with_env(name, extra, &[])
    }

    /// As [`TestServer::start`], with environment variables `env` for the process.
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<TestServer> {
        let dir = TempDir::new(name);
        let data_dir = dir.path().join("data");
        let log = dir.path().join("server.log");
        let mut server = TestServer::configure(&data_dir, extra, log);
        server.env = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        server._dir = Some(dir);
        server.spawn()?;
        Ok(server)
    }

    /// A server on a free port using `data_dir` (not started).
    pub fn configure(data_dir: &Path, extra: &[&str], log: PathBuf) -> TestServer {
        let address = format!("127.0.0.1:{}", free_port());
        // A port of its own for the client URL: never etcd's default 2379, which parallel
        // tests (and a real etcd) would fight over.
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let mut args = vec![
            "--data-dir".to_string(),
            data_dir.display().to_string(),
            "--listen-binary-urls".to_string(),
            address.clone(),
            "--listen-client-urls".to_string(),
            client_url.clone(),
            "--advertise-client-urls".to_string(),
            client_url.clone(),
            "--cores".to_string(),
            "2".to_string(),
            // Connections alternate over the two cores, so every suite crosses cores as
            // a busy server does (by default an idle server keeps them all on core 0).
            "--spread-connections".to_string(),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        TestServer {
            child: None,
            address,
            client_url,
            data_dir: data_dir.to_path_buf(),
            args,
            env: Vec::new(),
            log,
            _dir: None,
        }
    }

    /// Starts the process and waits until it says it is serving.
    pub fn spawn(&mut self) -> Result<()> {
        let started_before = self.log_text().matches(" serving ").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(server_binary())
            .args(&self.args)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start corekv")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.log_text().matches(" serving ").count() > started_before {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().expect("just spawned").try_wait()? {
                bail!(
                    "corekv exited with {status} during start-up: {}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "corekv did not start within {START_TIMEOUT:?}: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// etcd's client URL (`http://127.0.0.1:<port>`).
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The client URL's host:port, as etcdctl's `--endpoints` takes it.
    pub fn client_endpoint(&self) -> &str {
        self.client_url
            .strip_prefix("http://")
            .expect("client URL built as http://host:port")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How the process ended, if it has (without reaping it for good: the status stays
    /// available to [`TestServer::stop`]).
    pub fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// What the server wrote to stderr.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("corekv did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Restarts on the same data dir and address.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Runs `body` with a client connected to this server.
    pub fn with_client<T, F, Fut>(&self, body: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let address = self.address.clone();
        let log = self.log.clone();
        run_client(move || async move {
            let client = match Client::connect(&address).await {
                Ok(client) => client,
                Err(error) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("cannot connect to the test server: {error}\nserver log:\n{log}");
                }
            };
            body(client).await
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `body` on a fresh glommio executor and returns its output.
pub fn run_client<T, F, Fut>(body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(body)
        .expect("start a client executor")
        .join()
        .expect("client executor panicked")
}
