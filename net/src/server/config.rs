//! Server configuration: etcd-style flags with their defaults.
//!
//! Flags take etcd's names and spellings (`--name`, `--data-dir`, `--snapshot-count`,
//! ...), plus corekv's own (`--listen-binary-urls`, `--cores`). Every flag is accepted as
//! `--flag value` or `--flag=value`. An unknown flag, a missing value or a value that does
//! not parse is an error that names the flag. Environment variables and config files come
//! with the etcd-compatibility work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

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
/// etcd's default `--quota-backend-bytes` (0 in a flag means this default): 2 GiB.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 << 30;

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
    /// (`--quota-backend-bytes`).
    pub quota_backend_bytes: u64,
    /// Peer URL advertised, used to derive the member id (`--initial-advertise-peer-urls`).
    pub advertise_peer_urls: Vec<String>,
    /// Cluster token, used to derive ids (`--initial-cluster-token`).
    pub cluster_token: String,
    /// Executors to run, one per core (`--cores`, default all cores).
    pub cores: usize,
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
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ServerConfig {
            name: "default".to_string(),
            data_dir: PathBuf::from("default.etcd"),
            wal_dir: None,
            binary_addresses: vec![BINARY_ADDRESS_DEFAULT.parse().expect("valid default")],
            client_addresses: parse_addresses(CLIENT_URL_DEFAULT).expect("valid default"),
            advertise_client_urls: vec![CLIENT_URL_DEFAULT.to_string()],
            metrics_addresses: Vec::new(),
            quota_backend_bytes: QUOTA_BACKEND_BYTES_DEFAULT,
            advertise_peer_urls: vec!["http://localhost:2380".to_string()],
            cluster_token: "etcd-cluster".to_string(),
            cores,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: SNAPSHOT_COUNT_DEFAULT,
            snapshot_log_bytes_min: SNAPSHOT_LOG_BYTES_MIN_DEFAULT,
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            txn_ops_max: corekv_engine::TXN_OPS_MAX_DEFAULT,
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

/// Usage text.
pub const USAGE: &str = "\
usage: corekv [flags]

  --name NAME                         member name (default \"default\")
  --data-dir DIR                      data directory (default \"<name>.etcd\")
  --wal-dir DIR                       WAL directory (default inside the data directory)
  --listen-binary-urls URLS           binary protocol addresses (default 127.0.0.1:2378)
  --listen-client-urls URLS           gRPC and HTTP addresses (default http://localhost:2379)
  --advertise-client-urls URLS        client URLs advertised (default http://localhost:2379)
  --listen-metrics-urls URLS          extra addresses for /health and /metrics only
  --quota-backend-bytes N             store size raising the NOSPACE alarm (default 2 GiB)
  --initial-advertise-peer-urls URLS  peer URLs (default http://localhost:2380)
  --initial-cluster-token TOKEN       cluster token (default \"etcd-cluster\")
  --cores N                           executors, one per core (default: all cores)
  --heartbeat-interval MS             Raft heartbeat interval (default 100)
  --election-timeout MS               Raft election timeout (default 1000)
  --snapshot-count N                  applied requests between snapshots (default 10000)
  --snapshot-log-bytes-min N          and log bytes between snapshots (default 67108864)
  --max-request-bytes N               largest request (default 1572864)
  --max-txn-ops N                     most operations per txn list (default 128)
  --version                           print the version
";

impl Command {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command> {
        let mut config = ServerConfig::default();
        let mut data_dir_set = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                bail!("unexpected argument {arg:?} (flags start with --; see --help)");
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            let mut value = |what: &str| -> Result<String> {
                match inline.clone() {
                    Some(value) => Ok(value),
                    None => args
                        .next()
                        .ok_or_else(|| anyhow!("flag --{name} needs {what}")),
                }
            };
            match name {
                "version" => return Ok(Command::Version),
                "help" | "h" => return Ok(Command::Help),
                "name" => config.name = value("a name")?,
                "data-dir" => {
                    config.data_dir = PathBuf::from(value("a directory")?);
                    data_dir_set = true;
                }
                "wal-dir" => config.wal_dir = Some(PathBuf::from(value("a directory")?)),
                "listen-binary-urls" => {
                    config.binary_addresses = parse_addresses(&value("addresses")?)
                        .with_context(|| format!("invalid --{name}"))?;
                }
                "listen-client-urls" => {
                    config.client_addresses = parse_addresses(&value("URLs")?)
                        .with_context(|| format!("invalid --{name}"))?;
                }
                "advertise-client-urls" => {
                    config.advertise_client_urls = value("URLs")?
                        .split(',')
                        .map(|url| url.trim().to_string())
                        .collect();
                }
                "listen-metrics-urls" => {
                    config.metrics_addresses = parse_addresses(&value("URLs")?)
                        .with_context(|| format!("invalid --{name}"))?;
                }
                "quota-backend-bytes" => {
                    config.quota_backend_bytes = match parse_number(name, &value("a number")?)? {
                        0 => QUOTA_BACKEND_BYTES_DEFAULT,
                        bytes => bytes,
                    };
                }
                "initial-advertise-peer-urls" => {
                    config.advertise_peer_urls = value("URLs")?
                        .split(',')
                        .map(|url| url.trim().to_string())
                        .collect();
                }
                "initial-cluster-token" => config.cluster_token = value("a token")?,
                "cores" => {
                    config.cores = parse_number(name, &value("a number")?)?;
                    if config.cores == 0 {
                        bail!("--cores must be at least 1");
                    }
                }
                "heartbeat-interval" => {
                    config.heartbeat_interval =
                        Duration::from_millis(parse_number(name, &value("milliseconds")?)?);
                }
                "election-timeout" => {
                    config.election_timeout =
                        Duration::from_millis(parse_number(name, &value("milliseconds")?)?);
                }
                "snapshot-count" => {
                    config.snapshot_count = parse_number(name, &value("a number")?)?;
                }
                "snapshot-log-bytes-min" => {
                    config.snapshot_log_bytes_min = parse_number(name, &value("a number")?)?;
                }
                "max-request-bytes" => {
                    config.request_bytes_max = parse_number(name, &value("a number")?)?;
                }
                "max-txn-ops" => config.txn_ops_max = parse_number(name, &value("a number")?)?,
                _ => bail!("unknown flag: --{name} (see --help)"),
            }
        }
        if !data_dir_set {
            config.data_dir = PathBuf::from(format!("{}.etcd", config.name));
        }
        if config.heartbeat_interval.is_zero()
            || config.election_timeout < 5 * config.heartbeat_interval
        {
            bail!("--election-timeout must be at least 5 times --heartbeat-interval");
        }
        if config.snapshot_count == 0 {
            bail!("--snapshot-count must be at least 1");
        }
        Ok(Command::Serve(Box::new(config)))
    }
}

fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T> {
    text.trim()
        .parse()
        .map_err(|_| anyhow!("invalid value {text:?} for --{flag}: not a number"))
}

/// Parses `127.0.0.1:2378,http://127.0.0.1:2478` style lists (a scheme is allowed and
/// ignored, as etcd's URLs carry one).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerConfig> {
        match Command::parse(args.iter().map(|a| a.to_string()))? {
            Command::Serve(config) => Ok(*config),
            other => bail!("not serve: {other:?}"),
        }
    }

    /// With no flags the server is a single node on 127.0.0.1:2378 in ./default.etcd.
    #[test]
    fn defaults_match_etcd() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(
            config.binary_addresses,
            vec!["127.0.0.1:2378".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(config.snapshot_count, 10_000);
        assert_eq!(config.election_ticks(), 10);
        assert_eq!(config.lease_ttl_seconds_min(), 2);
    }

    /// Both flag spellings work and the data dir follows the name.
    #[test]
    fn flags_parse_in_both_spellings() {
        let config = parse(&[
            "--name",
            "n1",
            "--listen-binary-urls=http://localhost:3000",
            "--cores",
            "1",
        ])
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("n1.etcd"));
        assert_eq!(
            config.binary_addresses,
            vec!["127.0.0.1:3000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(config.cores, 1);
    }

    /// Unknown flags, missing values and bad numbers are errors naming the flag.
    #[test]
    fn bad_flags_are_named() {
        let message = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert_eq!(message(&["--bogus"]), "unknown flag: --bogus (see --help)");
        assert_eq!(message(&["--name"]), "flag --name needs a name");
        assert!(message(&["--snapshot-count", "x"]).contains("--snapshot-count"));
        assert!(message(&["--cores", "0"]).contains("--cores"));
        assert!(message(&["--election-timeout", "100"]).contains("5 times"));
    }
}
