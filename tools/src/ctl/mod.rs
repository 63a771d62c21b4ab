//! `corekvctl`: etcdctl's commands over corekv's binary protocol.
//!
//! ```text
//! corekvctl [--endpoints=127.0.0.1:2378] [-w simple|json] [--command-timeout=5s] COMMAND ...
//!   put [--prev-kv] [--lease=ID] [--ignore-value] [--ignore-lease] <key> [value]
//!   get [--prefix|--from-key] [--rev=N] [--limit=N] [--keys-only] [--count-only]
//!       [--sort-by=CREATE|KEY|MODIFY|VALUE|VERSION] [--order=ASCEND|DESCEND]
//!       [--consistency=l|s] [--print-value-only] <key> [range_end]
//!   del [--prefix|--from-key] [--prev-kv] <key> [range_end]
//!   txn [-i]                       (compares, blank line, success ops, blank line, failure ops on stdin)
//!   watch [--prefix] [--rev=N] [--prev-kv] <key> [range_end]
//!   lease grant <ttl> | revoke <id> | timetolive <id> [--keys] | list | keep-alive [--once] <id>
//!   compaction [--physical] <revision>
//!   endpoint status
//! ```
//!
//! Output matches etcdctl's `simple` and `json` shapes (see [`output`]). Errors print one
//! line, `Error: <message>`, on stderr (a server's message is etcd's, verbatim) and exit
//! non-zero with etcdctl's codes: 1 for a failed request, 2 when no endpoint could be
//! reached, 5 when the server ended a watch, 128 for bad arguments.
//!
//! Every command runs on one glommio executor in the calling thread. Never: retry a
//! write, or print anything but the result on stdout.

pub mod args;
mod commands;
pub mod keys;
pub mod output;
pub mod txn;

use std::time::Duration;

use corekv_net::client::{Client, ClientError, ClientOptions};
use glommio::{LocalExecutorBuilder, Placement};

use args::{parse, value, FlagSpec};
use output::Format;

/// The binary protocol's default address (`--listen-binary-urls` of `corekv`).
pub const ENDPOINT_DEFAULT: &str = "127.0.0.1:2378";

/// etcdctl's default `--command-timeout`.
pub const COMMAND_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// etcdctl's default `--dial-timeout`.
pub const DIAL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);

/// Exit code of a failed request (etcdctl's ExitError).
pub const EXIT_ERROR: i32 = 1;
/// Exit code when no endpoint could be reached (etcdctl's ExitBadConnection).
pub const EXIT_BAD_CONNECTION: i32 = 2;
/// Exit code when the server ended a watch (etcdctl's ExitInterrupted).
pub const EXIT_INTERRUPTED: i32 = 5;
/// Exit code for bad arguments (etcdctl's ExitBadArgs).
pub const EXIT_BAD_ARGS: i32 = 128;

const USAGE: &str = "usage: corekvctl [--endpoints=HOST:PORT[,...]] [-w simple|json] [--command-timeout=5s] [--dial-timeout=2s] COMMAND
commands:
  put [--prev-kv] [--lease=ID] [--ignore-value] [--ignore-lease] <key> [value]
  get [--prefix|--from-key] [--rev=N] [--limit=N] [--keys-only] [--count-only] [--sort-by=TARGET] [--order=ORDER] [--consistency=l|s] [--print-value-only] <key> [range_end]
  del [--prefix|--from-key] [--prev-kv] <key> [range_end]
  txn [-i]        read compares, success ops and failure ops from stdin, separated by blank lines
  watch [--prefix] [--rev=N] [--prev-kv] <key> [range_end]
  lease grant <ttl> | revoke <id> | timetolive <id> [--keys] | list | keep-alive [--once] <id>
  compaction [--physical] <revision>
  endpoint status
";

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum CtlError {
    /// Bad arguments (exit 128).
    BadArgs(String),
    /// No endpoint reachable (exit 2).
    Connect(String),
    /// A request failed (exit 1).
    Failed(String),
    /// The server ended a watch (exit 5).
    Interrupted(String),
}

impl CtlError {
    fn exit_code(&self) -> i32 {
        match self {
            CtlError::BadArgs(_) => EXIT_BAD_ARGS,
            CtlError::Connect(_) => EXIT_BAD_CONNECTION,
            CtlError::Failed(_) => EXIT_ERROR,
            CtlError::Interrupted(_) => EXIT_INTERRUPTED,
        }
    }

    fn message(&self) -> &str {
        match self {
            CtlError::BadArgs(m)
            | CtlError::Connect(m)
            | CtlError::Failed(m)
            | CtlError::Interrupted(m) => m,
        }
    }
}

impl From<ClientError> for CtlError {
    fn from(error: ClientError) -> CtlError {
        match error {
            ClientError::Connect { .. } | ClientError::Handshake { .. } => {
                CtlError::Connect(error.to_string())
            }
            other => CtlError::Failed(other.to_string()),
        }
    }
}

/// Settings every command shares.
#[derive(Clone, Debug)]
pub struct Global {
    /// Endpoints, tried in order.
    pub endpoints: Vec<String>,
    /// Output format.
    pub format: Format,
    /// Time allowed for one request.
    pub command_timeout: Duration,
    /// Time allowed for connecting.
    pub dial_timeout: Duration,
}

const GLOBAL_FLAGS: &[FlagSpec] = &[
    value("endpoints"),
    FlagSpec {
        name: "write-out",
        short: Some('w'),
        takes_value: true,
    },
    value("command-timeout"),
    value("dial-timeout"),
    FlagSpec {
        name: "help",
        short: Some('h'),
        takes_value: false,
    },
];

/// Runs corekvctl with `args` (without the program name); returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("Error: {}", error.message());
            error.exit_code()
        }
    }
}

fn run(args: Vec<String>) -> Result<(), CtlError> {
    // Global flags come before the command (and may also follow it, as in etcdctl).
    let (global_args, rest) = split_global(&args)?;
    let parsed = parse(&global_args, GLOBAL_FLAGS).map_err(CtlError::BadArgs)?;
    if parsed.switch("help") || rest.is_empty() || rest[0] == "help" {
        print!("{USAGE}");
        return Ok(());
    }
    let global = Global {
        endpoints: parsed
            .value("endpoints")
            .unwrap_or(ENDPOINT_DEFAULT)
            .split(',')
            .map(normalize_endpoint)
            .filter(|e| !e.is_empty())
            .collect(),
        format: Format::parse(parsed.value("write-out").unwrap_or("simple"))
            .map_err(CtlError::BadArgs)?,
        command_timeout: parse_duration(parsed.value("command-timeout"), COMMAND_TIMEOUT_DEFAULT)?,
        dial_timeout: parse_duration(parsed.value("dial-timeout"), DIAL_TIMEOUT_DEFAULT)?,
    };
    if global.endpoints.is_empty() {
        return Err(CtlError::BadArgs("no endpoints given".to_string()));
    }
    let command = rest[0].clone();
    let command_args = rest[1..].to_vec();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("corekvctl")
        .spawn(move || async move { commands::dispatch(&global, &command, &command_args).await })
        .map_err(|error| CtlError::Failed(format!("cannot start the executor: {error}")))?
        .join()
        .map_err(|error| CtlError::Failed(format!("executor failed: {error}")))?
}

/// Separates the global flags (wherever they appear) from the command and its args.
fn split_global(args: &[String]) -> Result<(Vec<String>, Vec<String>), CtlError> {
    let mut global = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let name = arg.trim_start_matches('-').split('=').next().unwrap_or("");
        let spec = arg.starts_with('-').then(|| {
            GLOBAL_FLAGS.iter().find(|spec| {
                spec.name == name
                    || (arg.len() == 2 && spec.short.is_some_and(|c| name == c.to_string()))
            })
        });
        match spec.flatten() {
            Some(spec) => {
                global.push(arg.clone());
                if spec.takes_value && !arg.contains('=') {
                    let value = args.get(i + 1).ok_or_else(|| {
                        CtlError::BadArgs(format!("flag needs an argument: --{}", spec.name))
                    })?;
                    global.push(value.clone());
                    i += 1;
                }
            }
            None => rest.push(arg.clone()),
        }
        i += 1;
    }
    Ok((global, rest))
}

/// `http://host:port` and `host:port` both name `host:port`.
fn normalize_endpoint(endpoint: &str) -> String {
    endpoint
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// Go-style durations as etcdctl takes them: `5s`, `500ms`, `1m`, `1m30s`.
pub fn parse_duration(text: Option<&str>, default: Duration) -> Result<Duration, CtlError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let bad = || CtlError::BadArgs(format!("invalid duration {text:?} (e.g. 5s, 500ms, 1m)"));
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(number * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Connects to the first reachable endpoint.
pub async fn connect(global: &Global) -> Result<Client, CtlError> {
    let options = ClientOptions {
        connect_timeout: global.dial_timeout,
        ..ClientOptions::default()
    };
    let mut errors = Vec::new();
    for endpoint in &global.endpoints {
        match with_timeout(
            global.dial_timeout,
            Client::connect_with(endpoint, options.clone()),
        )
        .await
        {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(error)) => errors.push(error.to_string()),
            Err(()) => errors.push(format!("cannot connect to {endpoint}: timed out")),
        }
    }
    Err(CtlError::Connect(errors.join("; ")))
}

/// Runs `future` for at most `timeout`; `Err(())` when time ran out.
pub async fn with_timeout<T>(
    timeout: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ()> {
    futures_lite::future::or(async { Ok(future.await) }, async {
        glommio::timer::sleep(timeout).await;
        Err(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go durations parse as etcdctl's flags do.
    #[test]
    fn durations() {
        let parse = |s| parse_duration(Some(s), Duration::ZERO).unwrap();
        assert_eq!(parse("5s"), Duration::from_secs(5));
        assert_eq!(parse("500ms"), Duration::from_millis(500));
        assert_eq!(parse("1m30s"), Duration::from_secs(90));
        assert!(parse_duration(Some("5"), Duration::ZERO).is_err());
        assert!(parse_duration(Some("x"), Duration::ZERO).is_err());
    }

    /// Global flags are found before and after the command.
    #[test]
    fn global_flags_anywhere() {
        let args: Vec<String> = ["--endpoints", "a:1", "get", "k", "-w", "json", "--prefix"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (global, rest) = split_global(&args).unwrap();
        assert_eq!(global, vec!["--endpoints", "a:1", "-w", "json"]);
        assert_eq!(rest, vec!["get", "k", "--prefix"]);
    }

    /// Endpoints may carry a scheme, as etcdctl's do.
    #[test]
    fn endpoints() {
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:2378/"),
            "127.0.0.1:2378"
        );
        assert_eq!(normalize_endpoint(" 10.0.0.1:1 "), "10.0.0.1:1");
    }
}
