//! corekv-bench's flags and the validated [`Config`] they produce.
//!
//! `corekv-bench WORKLOAD [flags]`, flags as `--name value` or `--name=value`. Every
//! value is checked here (ranges, key space that fits the key size), so the load
//! itself never meets a bad setting.

use std::time::Duration;

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
    /// corekv's binary protocol (docs/protocol.md).
    Binary,
}

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
    /// Server addresses; connections are spread over them.
    pub endpoints: Vec<String>,
    /// Concurrent clients (each issues `pipeline` requests at a time).
    pub clients: usize,
    /// TCP connections; clients share them round-robin.
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
    /// Executors (one per core, pinned).
    pub cores: usize,
    /// Print one JSON line instead of the human summary.
    pub json: bool,
    /// Seed of the key generators.
    pub seed: u64,
}

/// Usage text.
pub const USAGE: &str = "usage: corekv-bench WORKLOAD [flags]
workloads: put | get | mixed | txn | watch
flags:
  --endpoints HOST:PORT[,...]  servers (default 127.0.0.1:2378)
  --protocol binary            wire protocol (etcd-grpc: not built yet)
  --clients N                  concurrent clients (default 1)
  --connections N              TCP connections shared by the clients (default 1)
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
  --cores N                    executors, one per core (default: all cores)
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
        endpoints: vec!["127.0.0.1:2378".to_string()],
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
        json: false,
        seed: 1,
    };
    let mut saw_total = false;
    let mut saw_duration = false;
    for (name, value) in flags {
        let value = value.unwrap_or_default();
        let number = |what: &str| -> Result<u64, String> {
            value
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("invalid value {value:?} for --{what}: not a count"))
        };
        match name.as_str() {
            "endpoints" => {
                config.endpoints = value
                    .split(',')
                    .map(|e| {
                        e.trim()
                            .trim_start_matches("http://")
                            .trim_end_matches('/')
                            .to_string()
                    })
                    .filter(|e| !e.is_empty())
                    .collect()
            }
            "protocol" => {
                config.protocol = match value.as_str() {
                    "binary" => Protocol::Binary,
                    "etcd-grpc" => {
                        return Err(
                            "--protocol etcd-grpc is not built yet; use --protocol binary"
                                .to_string(),
                        )
                    }
                    other => return Err(format!("unknown protocol {other:?}")),
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
            "cores" => config.cores = number("cores")? as usize,
            "json" => config.json = true,
            "seed" => config.seed = number("seed")?,
            other => return Err(format!("unknown flag --{other}\n{USAGE}")),
        }
    }
    if saw_total && saw_duration {
        return Err("--total and --duration are exclusive".to_string());
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
        assert!(parse(&strings(&["put", "--protocol=etcd-grpc"]))
            .unwrap_err()
            .contains("not built yet"));
    }
}
