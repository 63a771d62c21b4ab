//! Server configuration, as etcd 3.4 takes it: flags, `ETCD_*` environment variables and
//! a YAML `--config-file`, with etcd's names, value syntax, defaults and checks.
//!
//! - Flags: etcd's names (`--name`, `--data-dir`, `--initial-cluster`, ...) plus
//!   corekv's own `--listen-binary-urls`, `--cores`, `--spread-connections` and
//!   `--snapshot-log-bytes-min`; spelled as Go's flag package takes them (see
//!   `sources`). The list is `flags::FLAGS`; `--help` prints it with every default.
//! - Environment: `ETCD_<FLAG>` (`ETCD_DATA_DIR`, `ETCD_INITIAL_CLUSTER_STATE`, ...).
//!   [`Command::parse_with`] takes the environment as an argument so tests never touch
//!   the process's own.
//! - Config file: `--config-file` (or `ETCD_CONFIG_FILE`) names a YAML file of etcd's
//!   keys (`data-dir`, `initial-cluster`, `client-transport-security: {cert-file: ...}`).
//!
//! Precedence is per key: a flag beats its environment variable, which beats the file.
//! **This differs from etcd 3.4**, which ignores every other flag and variable once a
//! config file is given, and refuses to start when a flag and its variable are both
//! set; corekv follows the precedence the project chose and warns about the shadowed
//! variable.
//!
//! Checks follow etcd's (`embed.Config.Validate`, `etcdserver.VerifyBootstrap`): URLs need
//! a scheme (http, https, unix, unixs), `host:port` and no path; listen URLs need an IP or
//! `localhost`; `--advertise-client-urls` is required when `--listen-client-urls` is set
//! by flag or variable; the election timeout is at most 50000 ms and at least 5 heartbeats;
//! `--initial-cluster` must hold this member's name and, for a new cluster, exactly its
//! advertised peer URLs, with no URL twice. etcd makes the cluster checks only when it
//! bootstraps an empty data directory; corekv makes them at every start.
//!
//! Where corekv accepts more than etcd 3.4: the default `--initial-cluster` always
//! follows the final `--name` and `--initial-advertise-peer-urls` (etcd keeps
//! `default=http://localhost:2380` when only the URLs change, then fails); YAML numbers
//! are taken for string keys and quoted numbers for number keys. Where it refuses more:
//! a duration for `--auto-compaction-retention` in revision mode (etcd reads it as
//! nanoseconds of revisions), an unknown `--log-level` (etcd panics), and any TLS
//! setting, since corekv does not serve TLS yet and must not serve plaintext instead.
//!
//! Parsed but not acted on yet (when this was written): `--listen-peer-urls`,
//! `--initial-cluster*`, `--enable-v2`, `--auto-compaction-*`, `--logger` and
//! `--log-level`. Parsing never does IO beyond reading the config file.

mod build;
mod flags;
mod sources;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use self::build::build;
use self::flags::Id;
use self::sources::CommandLine;
use self::values::{parse_url_list, Url};

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1_572_864;
/// The default `--snapshot-count` (etcd 3.6's).
pub const SNAPSHOT_COUNT_DEFAULT: u64 = 10_000;
/// A snapshot also waits until the log since the last one holds at least this many
/// bytes (and half the last snapshot's size). A corekv snapshot is a full copy of the
/// store, unlike etcd's, which only records an index of its on-disk database; taking one
/// every `--snapshot-count` requests regardless of size would cost more than replaying
/// the log it replaces. This keeps snapshot work proportional to the writes and bounds
/// the Raft log held in memory to about this much.
pub const SNAPSHOT_LOG_BYTES_MIN_DEFAULT: u64 = 64 << 20;
/// The default binary protocol address.
pub const BINARY_ADDRESS_DEFAULT: &str = "127.0.0.1:2378";
/// etcd's default client URL: gRPC and HTTP (JSON gateway, /health, /metrics) share it.
pub const CLIENT_URL_DEFAULT: &str = "http://localhost:2379";
/// etcd's default peer URL (`--listen-peer-urls`, `--initial-advertise-peer-urls`).
pub const PEER_URL_DEFAULT: &str = "http://localhost:2380";
/// etcd's default `--quota-backend-bytes` (0 in a flag means this default): 2 GiB.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 << 30;
/// etcd's longest `--election-timeout` (`maxElectionMs` in `embed/config.go`).
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 50_000;
/// The etcd API version corekv speaks.
pub const ETCD_API_VERSION: &str = "3.4";

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already runs.
    Existing,
}

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history (periodic mode).
    Periodic(Duration),
    /// Keep this many revisions (revision mode).
    Revision(u64),
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Panic,
    Fatal,
}

/// `--logger`: which of etcd's loggers was asked for. corekv has one logger; recorded so
/// that etcd command lines parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logger {
    Zap,
    Capnslog,
}

/// One side's TLS settings, named as etcd's YAML `*-transport-security` keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportSecurity {
    /// `--cert-file` / `--peer-cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--key-file` / `--peer-key-file`.
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--auto-tls` / `--peer-auto-tls`.
    pub auto_tls: bool,
}

/// TLS settings for clients and peers. corekv does not serve TLS yet: parsing refuses any
/// setting that asks for it, so today both sides are always empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub client: TransportSecurity,
    pub peer: TransportSecurity,
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Human-readable member name (`--name`).
    pub name: String,
    /// Data directory (`--data-dir`); default `<name>.etcd` in the working directory.
    pub data_dir: PathBuf,
    /// WAL directory (`--wal-dir`); default `<data-dir>/member/shard-0/wal`.
    pub wal_dir: Option<PathBuf>,
    /// Binary protocol listen addresses (`--listen-binary-urls`).
    pub binary_addresses: Vec<SocketAddr>,
    /// gRPC + HTTP listen addresses (`--listen-client-urls`).
    pub client_addresses: Vec<SocketAddr>,
    /// Client URLs advertised to clients and in the member list
    /// (`--advertise-client-urls`).
    pub advertise_client_urls: Vec<String>,
    /// Extra addresses serving only /health, /version and /metrics
    /// (`--listen-metrics-urls`).
    pub metrics_addresses: Vec<SocketAddr>,
    /// Store size above which the NOSPACE alarm is raised and writes refused
    /// (`--quota-backend-bytes`; negative there means no quota, here `u64::MAX`).
    pub quota_backend_bytes: u64,
    /// Peer listen addresses (`--listen-peer-urls`).
    pub peer_addresses: Vec<SocketAddr>,
    /// Peer URL advertised, used to derive the member id (`--initial-advertise-peer-urls`).
    pub advertise_peer_urls: Vec<String>,
    /// The members to bootstrap with, as (name, peer URL) pairs sorted by name then URL
    /// (`--initial-cluster`; default this member's name with each advertised peer URL).
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// Cluster token, used to derive ids (`--initial-cluster-token`).
    pub cluster_token: String,
    /// Executors to run, one per core (`--cores`, default all cores).
    pub cores: usize,
    /// Place connections on the core with the fewest, rather than on the shard's core
    /// until it is busy (`--spread-connections`; see `server::placement`).
    pub spread_connections: bool,
    /// Raft heartbeat interval (`--heartbeat-interval`, ms).
    pub heartbeat_interval: Duration,
    /// Raft election timeout (`--election-timeout`, ms).
    pub election_timeout: Duration,
    /// Applied requests between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Log bytes between snapshots at least (`--snapshot-log-bytes-min`); a snapshot
    /// also waits for the log to reach half the last snapshot's size. See
    /// [`SNAPSHOT_LOG_BYTES_MIN_DEFAULT`].
    pub snapshot_log_bytes_min: u64,
    /// Largest request frame (`--max-request-bytes`).
    pub request_bytes_max: usize,
    /// Most ops per txn list (`--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`);
    /// `None` when the retention is 0, as in etcd.
    pub auto_compaction: Option<AutoCompaction>,
    /// Serve etcd's v2 API (`--enable-v2`).
    pub enable_v2: bool,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--logger`.
    pub logger: Logger,
    /// Client and peer TLS (`--cert-file`, `--peer-cert-file`, ...).
    pub tls: TlsConfig,
    /// The YAML file the configuration was read from (`--config-file`), if any.
    pub config_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let name = "default".to_string();
        ServerConfig {
            initial_cluster: vec![(name.clone(), PEER_URL_DEFAULT.to_string())],
            name,
            data_dir: PathBuf::from("default.etcd"),
            wal_dir: None,
            binary_addresses: vec![BINARY_ADDRESS_DEFAULT.parse().expect("valid default")],
            client_addresses: bind_addresses(CLIENT_URL_DEFAULT).expect("valid default"),
            advertise_client_urls: vec![CLIENT_URL_DEFAULT.to_string()],
            metrics_addresses: Vec::new(),
            quota_backend_bytes: QUOTA_BACKEND_BYTES_DEFAULT,
            peer_addresses: bind_addresses(PEER_URL_DEFAULT).expect("valid default"),
            advertise_peer_urls: vec![PEER_URL_DEFAULT.to_string()],
            initial_cluster_state: ClusterState::New,
            cluster_token: "etcd-cluster".to_string(),
            cores,
            spread_connections: false,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: SNAPSHOT_COUNT_DEFAULT,
            snapshot_log_bytes_min: SNAPSHOT_LOG_BYTES_MIN_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            txn_ops_max: corekv_engine::TXN_OPS_MAX_DEFAULT,
            auto_compaction: None,
            enable_v2: false,
            log_level: LogLevel::Info,
            logger: Logger::Capnslog,
            tls: TlsConfig::default(),
            config_file: None,
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServerConfig>),
    /// Print the version and exit.
    Version,
    /// Print usage and exit.
    Help,
}

/// A parsed command and the warnings to print before acting on it (ignored environment
/// variables and config file keys, a variable shadowed by its flag).
#[derive(Debug)]
pub struct Parsed {
    pub command: Command,
    pub warnings: Vec<String>,
}

/// A configuration refused: the one-line reason, and the warnings gathered before it
/// (an ignored, misspelt `ETCD_*` variable often explains the refusal).
#[derive(Debug)]
pub struct Rejected {
    pub error: anyhow::Error,
    pub warnings: Vec<String>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{:#}", self.error)
    }
}

impl std::error::Error for Rejected {}

/// The `--help` text: every flag with its default.
pub fn usage() -> String {
    flags::usage()
}

/// The `--version` text, shaped like etcd's.
pub fn version_text() -> String {
    format!(
        "corekv Version: {}\nAPI Version: {ETCD_API_VERSION}\nOS/Arch: {}/{}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

impl Command {
    /// Parses the arguments after the program name, with the process's environment.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, Rejected> {
        // A variable that is not UTF-8 cannot be one of ours.
        let env = std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
        Command::parse_with(args, env)
    }

    /// Parses the arguments after the program name with the given environment.
    pub fn parse_with(
        args: impl IntoIterator<Item = String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Parsed, Rejected> {
        let mut warnings = Vec::new();
        match parse_sources(args, env, &mut warnings) {
            Ok(command) => Ok(Parsed { command, warnings }),
            Err(error) => Err(Rejected { error, warnings }),
        }
    }
}

/// Reads the three sources in turn and builds the command.
fn parse_sources(
    args: impl IntoIterator<Item = String>,
    env: impl IntoIterator<Item = (String, String)>,
    warnings: &mut Vec<String>,
) -> Result<Command> {
    let command_line = match sources::command_line(args)? {
        CommandLine::Help => return Ok(Command::Help),
        // etcd prints the version before it reads the environment or the file.
        CommandLine::Flags { version: true, .. } => return Ok(Command::Version),
        CommandLine::Flags { settings, .. } => settings,
    };
    let environment = sources::environment(env, &command_line, warnings)?;
    let config_file = command_line
        .iter()
        .chain(&environment)
        .find(|setting| setting.flag.id == Id::ConfigFile)
        .map(|setting| PathBuf::from(&setting.value));
    let file = match &config_file {
        Some(path) => sources::config_file(path, warnings)?,
        None => Vec::new(),
    };
    let mut settings = BTreeMap::new();
    for setting in file.into_iter().chain(environment).chain(command_line) {
        settings.insert(setting.flag.id, setting);
    }
    Ok(Command::Serve(Box::new(build(&settings)?)))
}

/// The addresses of `--listen-client-urls`-style text (the defaults' parser).
fn bind_addresses(value: &str) -> Result<Vec<SocketAddr>, String> {
    parse_url_list(value)?
        .iter()
        .map(Url::bind_address)
        .collect()
}

/// Parses `127.0.0.1:2378,http://127.0.0.1:2478` style lists for corekv's own
/// `--listen-binary-urls` (a scheme is allowed and ignored; `localhost` is 127.0.0.1).
pub fn parse_addresses(text: &str) -> Result<Vec<SocketAddr>> {
    let mut addresses = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let bare = item
            .split_once("://")
            .map_or(item, |(_, rest)| rest)
            .trim_end_matches('/');
        let bare = if let Some(port) = bare.strip_prefix("localhost:") {
            format!("127.0.0.1:{port}")
        } else {
            bare.to_string()
        };
        addresses.push(
            bare.parse()
                .map_err(|_| anyhow!("{item:?} is not host:port"))?,
        );
    }
    if addresses.is_empty() {
        bail!("no address given");
    }
    Ok(addresses)
}

impl ServerConfig {
    /// The shard's directory: `<data-dir>/member/shard-<id>`.
    pub fn shard_dir(&self, shard: u64) -> PathBuf {
        self.data_dir.join("member").join(format!("shard-{shard}"))
    }

    /// The shard's WAL directory.
    pub fn shard_wal_dir(&self, shard: u64) -> PathBuf {
        match &self.wal_dir {
            Some(dir) => dir.join(format!("shard-{shard}")),
            None => self.shard_dir(shard).join("wal"),
        }
    }

    /// The shard's snapshot directory.
    pub fn shard_snap_dir(&self, shard: u64) -> PathBuf {
        self.shard_dir(shard).join("snap")
    }

    /// Heartbeat interval and election timeout in ticks of the heartbeat.
    pub fn election_ticks(&self) -> u32 {
        (self.election_timeout.as_millis() / self.heartbeat_interval.as_millis()) as u32
    }

    /// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to whole seconds.
    pub fn lease_ttl_seconds_min(&self) -> i64 {
        let millis = self.election_timeout.as_millis() as i64 * 3 / 2;
        (millis + 999) / 1000
    }
}
