//! corekv-bench's flags and the validated [`Config`] they produce.
//!
//! `corekv-bench WORKLOAD [flags]`, flags as `--name value` or `--name=value`. Every
//! value is checked here (ranges, key space that fits the key size, endpoints as
//! `host:port`, flags that belong to the other protocol), so the load itself never
//! meets a bad setting.

use std::time::Duration;

use super::cpu;

/// What load to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Puts of `value_size` bytes.
    Put,
    /// Point reads (linearizable unless `--consistency s`).
    Get,
    /// Reads and puts, `read_ratio` of them reads.
    Mixed,
    /// Transactions: compare the key's mod revision, put on success, read on failure.
    Txn,
    /// `watchers` watchers on one prefix; puts under it; latency from put to each
    /// watcher's event (fan-out latency).
    Watch,
}

impl Workload {
    /// Its name on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Txn => "txn",
            Workload::Watch => "watch",
        }
    }
}

/// The wire protocol the load is sent over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// corekv's binary protocol (docs/protocol.md), on glommio executors.
    Binary,
    /// etcd's v3 gRPC API (corekv's client URLs or real etcd), on a tokio runtime.
    EtcdGrpc,
}

impl Protocol {
    /// Its name on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Binary => "binary",
            Protocol::EtcdGrpc => "etcd-grpc",
        }
    }

    /// The endpoint used when `--endpoints` is not given: corekv's default binary
    /// address, or the default client URL of corekv and etcd.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Binary => "127.0.0.1:2378",
            Protocol::EtcdGrpc => "127.0.0.1:2379",
        }
    }
}

/// Tokio worker threads of the etcd gRPC mode by default: on the 2-core machine the
/// figures in docs/benchmarks.md come from, with the server on the same machine, two
/// threads gave the most throughput (one thread saturates first; more threads than
/// cores only add switches).
pub const GRPC_THREADS_DEFAULT: usize = 2;

/// When the run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many operations in total.
    Total(u64),
    /// After this long.
    Duration(Duration),
}

/// A validated benchmark configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The workload.
    pub workload: Workload,
    /// The protocol.
    pub protocol: Protocol,
    /// Server addresses (`host:port`); connections are spread over them.
    pub endpoints: Vec<String>,
    /// Concurrent clients (each issues `pipeline` requests at a time).
    pub clients: usize,
    /// TCP connections (gRPC: HTTP/2 connections); clients share them round-robin.
    pub connections: usize,
    /// Requests in flight per client.
    pub pipeline: usize,
    /// When to stop.
    pub stop: Stop,
    /// Target operations per second over all clients (None: as fast as possible).
    pub rate: Option<f64>,
    /// Key length in bytes (keys are zero-padded decimal).
    pub key_size: usize,
    /// Value length in bytes.
    pub value_size: usize,
    /// Number of distinct keys.
    pub key_space: u64,
    /// Keys in order instead of uniformly random.
    pub sequential_keys: bool,
    /// Fraction of reads in the mixed workload.
    pub read_ratio: f64,
    /// Serializable reads (`--consistency s`).
    pub serializable: bool,
    /// Watchers for the watch workload.
    pub watchers: usize,
    /// Write every key once before a read workload is measured.
    pub prefill: bool,
    /// Binary protocol: executors (one per core, pinned).
    pub cores: usize,
    /// etcd gRPC: tokio worker threads.
    pub threads: usize,
    /// Server processes whose CPU time is measured over the run (`--server-pid`).
    pub server_pids: Vec<u32>,
    /// Print one JSON line instead of the human summary.
    pub json: bool,
    /// Seed of the key generators.
    pub seed: u64,
}

/// Usage text.
pub const USAGE: &str = "usage: corekv-bench WORKLOAD [flags]
workloads: put | get | mixed | txn | watch
flags:
  --endpoints HOST:PORT[,...]  servers (default 127.0.0.1:2378; etcd-grpc: 127.0.0.1:2379)
  --protocol binary|etcd-grpc  corekv's binary protocol (default) or etcd's v3 gRPC API
                               (corekv's client URLs or real etcd)
  --clients N                  concurrent clients (default 1)
  --connections N              connections shared by the clients (default 1; etcd-grpc:
                               HTTP/2 connections)
  --pipeline N                 requests in flight per client (default 1)
  --total N | --duration D     stop after N ops (watch: N puts; default 10000) or after D (e.g. 10s)
  --rate R                     target ops/s over all clients (default: unlimited)
  --key-size B                 key bytes, zero-padded decimal (default 8)
  --value-size B               value bytes (default 256)
  --key-space N                distinct keys (default 10000)
  --sequential-keys            keys in order instead of random
  --read-ratio F               mixed: fraction of reads (default 0.5)
  --consistency l|s            reads linearizable (default) or serializable
  --watchers N                 watch: number of watchers (default 100)
  --no-prefill                 get/mixed/txn: do not write the key space first
  --cores N                    binary: executors, one per core (default: all cores; fewer
                               than the CPUs run on the last ones, away from a server's shard)
  --threads N                  etcd-grpc: tokio worker threads (default 2)
  --server-pid PID[,PID...]    report the CPU time of these server processes (repeatable)
  --seed N                     key generator seed (default 1)
  --json                       print one JSON line
";

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Config, String> {
    let mut positional = Vec::new();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    let switches = ["sequential-keys", "json", "no-prefill", "help"];
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(body) = arg.strip_prefix("--") else {
            positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (body.to_string(), None),
        };
        if switches.contains(&name.as_str()) {
            flags.push((name, None));
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => {
                let value = args
                    .get(i)
                    .ok_or_else(|| format!("flag needs an argument: --{name}"))?;
                i += 1;
                value.clone()
            }
        };
        flags.push((name, Some(value)));
    }
    if flags.iter().any(|(name, _)| name == "help") {
        return Err(USAGE.to_string());
    }
    let workload = match positional.as_slice() {
        [name] => match name.as_str() {
            "put" => Workload::Put,
            "get" | "range" => Workload::Get,
            "mixed" => Workload::Mixed,
            "txn" => Workload::Txn,
            "watch" => Workload::Watch,
            other => return Err(format!("unknown workload {other:?}\n{USAGE}")),
        },
        [] => return Err(format!("a workload is required\n{USAGE}")),
        more => return Err(format!("one workload expected, got {more:?}")),
    };
    let cores_available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut config = Config {
        workload,
        protocol: Protocol::Binary,
        endpoints: Vec::new(),
        clients: 1,
        connections: 1,
        pipeline: 1,
        stop: Stop::Total(10_000),
        rate: None,
        key_size: 8,
        value_size: 256,
        key_space: 10_000,
        sequential_keys: false,
        read_ratio: 0.5,
        serializable: false,
        watchers: 100,
        prefill: true,
        cores: cores_available,
        threads: GRPC_THREADS_DEFAULT,
        server_pids: Vec::new(),
        json: false,
        seed: 1,
    };
    let mut saw_total = false;
    let mut saw_duration = false;
    let mut saw_cores = false;
    let mut saw_threads = false;
    for (name, value) in flags {
        let value = value.unwrap_or_default();
        let number = |what: &str| -> Result<u64, String> {
            value
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("invalid value {value:?} for --{what}: not a count"))
        };
        match name.as_str() {
            "endpoints" => config.endpoints = parse_endpoints(&value)?,
            "protocol" => {
                config.protocol = match value.as_str() {
                    "binary" => Protocol::Binary,
                    "etcd-grpc" | "grpc" => Protocol::EtcdGrpc,
                    other => {
                        return Err(format!("unknown protocol {other:?} (binary or etcd-grpc)"))
                    }
                }
            }
            "clients" => config.clients = number("clients")? as usize,
            "connections" | "conns" => config.connections = number("connections")? as usize,
            "pipeline" => config.pipeline = number("pipeline")? as usize,
            "total" => {
                saw_total = true;
                config.stop = Stop::Total(number("total")?);
            }
            "duration" => {
                saw_duration = true;
                config.stop = Stop::Duration(parse_duration(&value)?);
            }
            "rate" => {
                let rate: f64 = value
                    .parse()
                    .map_err(|_| format!("invalid value {value:?} for --rate"))?;
                config.rate = (rate > 0.0).then_some(rate);
            }
            "key-size" => config.key_size = number("key-size")? as usize,
            "value-size" | "val-size" => config.value_size = number("value-size")? as usize,
            "key-space" | "key-space-size" => config.key_space = number("key-space")?,
            "sequential-keys" => config.sequential_keys = true,
            "read-ratio" => {
                config.read_ratio = value
                    .parse()
                    .map_err(|_| format!("invalid value {value:?} for --read-ratio"))?
            }
            "consistency" => {
                config.serializable = match value.as_str() {
                    "l" | "linearizable" => false,
                    "s" | "serializable" => true,
                    other => return Err(format!("unknown consistency {other:?} (l or s)")),
                }
            }
            "watchers" => config.watchers = number("watchers")? as usize,
            "no-prefill" => config.prefill = false,
            "cores" => {
                saw_cores = true;
                config.cores = number("cores")? as usize;
            }
            "threads" => {
                saw_threads = true;
                config.threads = number("threads")? as usize;
            }
            "server-pid" | "server-pids" => config.server_pids.extend(cpu::parse_pids(&value)?),
            "json" => config.json = true,
            "seed" => config.seed = number("seed")?,
            other => return Err(format!("unknown flag --{other}\n{USAGE}")),
        }
    }
    if saw_total && saw_duration {
        return Err("--total and --duration are exclusive".to_string());
    }
    match config.protocol {
        Protocol::Binary if saw_threads => {
            return Err(
                "--threads is for --protocol etcd-grpc; the binary protocol uses --cores"
                    .to_string(),
            )
        }
        Protocol::EtcdGrpc if saw_cores => {
            return Err(
                "--cores is for the binary protocol; --protocol etcd-grpc uses --threads"
                    .to_string(),
            )
        }
        _ => {}
    }
    if config.endpoints.is_empty() {
        config.endpoints = vec![config.protocol.default_endpoint().to_string()];
    }
    validate(&config)?;
    Ok(config)
}

fn validate(config: &Config) -> Result<(), String> {
    if config.endpoints.is_empty() {
        return Err("no endpoints".to_string());
    }
    for (name, value) in [
        ("clients", config.clients),
        ("connections", config.connections),
        ("pipeline", config.pipeline),
        ("cores", config.cores),
        ("threads", config.threads),
        ("key-size", config.key_size),
    ] {
        if value == 0 {
            return Err(format!("--{name} must be at least 1"));
        }
    }
    if config.key_space == 0 {
        return Err("--key-space must be at least 1".to_string());
    }
    if config.key_size < 20 && config.key_space > 10u64.pow(config.key_size as u32) {
        return Err(format!(
            "--key-space {} does not fit in {}-byte decimal keys",
            config.key_space, config.key_size
        ));
    }
    if !(0.0..=1.0).contains(&config.read_ratio) {
        return Err("--read-ratio must be between 0 and 1".to_string());
    }
    if config.workload == Workload::Watch && config.watchers == 0 {
        return Err("--watchers must be at least 1".to_string());
    }
    if config.workload == Workload::Watch && config.value_size < 8 {
        return Err(
            "the watch workload needs --value-size of at least 8 (a timestamp)".to_string(),
        );
    }
    Ok(())
}

/// `--endpoints`: a comma list of `host:port`, each optionally written as a URL
/// `http://host:port/` (etcd's spelling of client URLs). TLS is not spoken, so
/// `https://` is refused; so is an entry without a numeric port.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, String> {
    let mut endpoints = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry.starts_with("https://") {
            return Err(format!(
                "endpoint {entry:?}: TLS is not supported, use http:// or host:port"
            ));
        }
        let address = entry.strip_prefix("http://").unwrap_or(entry);
        let address = address.trim_end_matches('/');
        let port = address
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty() && !host.contains('/'))
            .map(|(_, port)| port);
        if !port.is_some_and(|port| port.parse::<u16>().is_ok_and(|port| port > 0)) {
            return Err(format!("endpoint {entry:?} is not host:port"));
        }
        endpoints.push(address.to_string());
    }
    if endpoints.is_empty() {
        return Err(format!("--endpoints {text:?} names no endpoint"));
    }
    Ok(endpoints)
}

/// `10s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (e.g. 10s, 500ms, 2m)");
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(bad)?;
    let number: f64 = text[..split].parse().map_err(|_| bad())?;
    let seconds = match &text[split..] {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// Flags in both spellings override the defaults.
    #[test]
    fn flags() {
        let config = parse(&strings(&[
            "mixed",
            "--clients=8",
            "--connections",
            "2",
            "--pipeline=4",
            "--duration=3s",
            "--read-ratio",
            "0.9",
            "--consistency=s",
            "--sequential-keys",
            "--json",
        ]))
        .unwrap();
        assert_eq!(config.workload, Workload::Mixed);
        assert_eq!(
            (config.clients, config.connections, config.pipeline),
            (8, 2, 4)
        );
        assert_eq!(config.stop, Stop::Duration(Duration::from_secs(3)));
        assert!(config.serializable && config.sequential_keys && config.json);
        assert_eq!(config.read_ratio, 0.9);
    }

    /// Impossible settings are refused with a reason.
    #[test]
    fn refusals() {
        assert!(parse(&strings(&["put", "--key-size=2", "--key-space=1000"])).is_err());
        assert!(parse(&strings(&["put", "--clients=0"])).is_err());
        assert!(parse(&strings(&["put", "--total=1", "--duration=1s"])).is_err());
        assert!(parse(&strings(&["frob"])).is_err());
        assert!(parse(&strings(&["put", "--protocol=carrier-pigeon"])).is_err());
        assert!(parse(&strings(&["put", "--threads=4"]))
            .unwrap_err()
            .contains("--cores"));
        assert!(
            parse(&strings(&["put", "--protocol=etcd-grpc", "--cores=2"]))
                .unwrap_err()
                .contains("--threads")
        );
        assert!(parse(&strings(&["put", "--protocol=etcd-grpc", "--threads=0"])).is_err());
        assert!(parse(&strings(&["put", "--server-pid=abc"])).is_err());
    }

    /// The etcd gRPC mode takes its own defaults and flags; --server-pid repeats and
    /// takes comma lists.
    #[test]
    fn etcd_grpc_flags() {
        let config = parse(&strings(&["put", "--protocol", "etcd-grpc"])).unwrap();
        assert_eq!(config.protocol, Protocol::EtcdGrpc);
        assert_eq!(config.endpoints, vec!["127.0.0.1:2379"]);
        assert_eq!(config.threads, GRPC_THREADS_DEFAULT);
        let config = parse(&strings(&[
            "get",
            "--protocol=etcd-grpc",
            "--endpoints=http://127.0.0.1:22379,127.0.0.1:23379",
            "--threads=3",
            "--server-pid=10,11",
            "--server-pid",
            "12",
        ]))
        .unwrap();
        assert_eq!(config.endpoints, vec!["127.0.0.1:22379", "127.0.0.1:23379"]);
        assert_eq!(config.threads, 3);
        assert_eq!(config.server_pids, vec![10, 11, 12]);
        let binary = parse(&strings(&["put"])).unwrap();
        assert_eq!(binary.endpoints, vec!["127.0.0.1:2378"]);
    }

    /// Endpoint lists: host:port or http:// URLs, commas with spaces and a trailing
    /// slash tolerated; no port, a bad port, https and empty lists refused.
    #[test]
    fn endpoint_lists() {
        assert_eq!(
            parse_endpoints("127.0.0.1:2379").unwrap(),
            vec!["127.0.0.1:2379"]
        );
        assert_eq!(
            parse_endpoints(" http://localhost:2379/ , 10.0.0.2:2379,").unwrap(),
            vec!["localhost:2379", "10.0.0.2:2379"]
        );
        assert_eq!(parse_endpoints("[::1]:2379").unwrap(), vec!["[::1]:2379"]);
        for bad in [
            "",
            ",",
            "localhost",
            "localhost:",
            ":2379",
            "host:port",
            "host:70000",
            "host:0",
            "https://127.0.0.1:2379",
            "http://h:1/path:2",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad:?} accepted");
        }
    }
}
