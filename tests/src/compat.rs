//! Differential tests: one scenario run against two fresh servers, the transcripts
//! compared after masking.
//!
//! A scenario is a closure over a [`Session`]: it runs etcdctl (or curl) through the
//! session, which records each command with its exit code, stdout and stderr, masked by a
//! [`Masker`] that belongs to that server. The scenario also asserts key facts on the raw
//! outputs (a `get` returns what was put, a command that must succeed exits 0), so two
//! servers that fail the same way do not pass together. [`differential`] runs the closure
//! against a real etcd (the reference) and, at the same time, against a second server:
//!
//! - [`Target::Corekv`] when the test file's `GATEWAY_READY` constant is true (or
//!   `COREKV_COMPAT_TARGET=corekv` is set in the environment, to try the gateway before
//!   flipping the constant);
//! - otherwise [`Target::Etcd`] again: two etcd runs must give identical masked
//!   transcripts, which proves the scenario deterministic and the masking sufficient.
//!
//! Both servers get the same settings: etcd's defaults, member name [`MEMBER_NAME`],
//! cluster token [`CLUSTER_TOKEN`], the same Raft timing, plus the scenario's flags.
//! `COREKV_COMPAT_PRINT=1` prints the reference transcript of every scenario.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::etcd::{
    etcd_available, etcdctl, spawn_etcdctl, wait_until_serving, EtcdServer, CLUSTER_TOKEN,
    ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, MEMBER_NAME,
};
use crate::mask::Masker;
use crate::process::{self, Background, Output};
use crate::{free_port, TempDir, TestServer};

/// A server a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The real etcd 3.4.
    Etcd,
    /// corekv through its gRPC API and JSON gateway.
    Corekv,
}

impl Target {
    /// The server to compare with etcd: corekv once its gateway is ready.
    pub fn second(gateway_ready: bool) -> Target {
        let forced = std::env::var("COREKV_COMPAT_TARGET").is_ok_and(|value| value == "corekv");
        if gateway_ready || forced {
            Target::Corekv
        } else {
            Target::Etcd
        }
    }

    fn name(self) -> &'static str {
        match self {
            Target::Etcd => "etcd",
            Target::Corekv => "corekv",
        }
    }
}

#[derive(Debug)]
enum Running {
    Etcd(EtcdServer),
    Corekv(TestServer),
}

/// A fresh server of either kind, with a scratch directory for files the scenario
/// writes (snapshots).
#[derive(Debug)]
pub struct CompatServer {
    /// Which server it is.
    pub target: Target,
    /// Client host:port (etcdctl's `--endpoints`).
    pub endpoint: String,
    /// `http://<endpoint>`.
    pub client_url: String,
    /// The peer URL (a single member: no peer ever connects).
    pub peer_url: String,
    scratch: TempDir,
    running: Running,
}

impl CompatServer {
    /// Starts `target` with the common settings plus `flags` (pairs of flag and value,
    /// which both servers must understand) and waits until etcdctl gets an answer.
    pub fn start(target: Target, name: &str, flags: &[(&str, &str)]) -> Result<CompatServer> {
        let flags: Vec<&str> = flags
            .iter()
            .flat_map(|(flag, value)| [*flag, value])
            .collect();
        let scratch = TempDir::new(&format!("{name}-scratch"));
        match target {
            Target::Etcd => {
                let server = EtcdServer::start(name, &flags)?;
                Ok(CompatServer {
                    target,
                    endpoint: server.endpoint.clone(),
                    client_url: server.client_url.clone(),
                    peer_url: server.peer_url.clone(),
                    scratch,
                    running: Running::Etcd(server),
                })
            }
            Target::Corekv => {
                // The same cluster flags as etcd's (see EtcdServer::start); corekv
                // derives its member and cluster ids from them as etcd does.
                let peer_url = format!("http://127.0.0.1:{}", free_port());
                let initial_cluster = format!("{MEMBER_NAME}={peer_url}");
                let mut args = vec![
                    "--name",
                    MEMBER_NAME,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &initial_cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    CLUSTER_TOKEN,
                    "--heartbeat-interval",
                    HEARTBEAT_INTERVAL_MS,
                    "--election-timeout",
                    ELECTION_TIMEOUT_MS,
                ];
                args.extend(&flags);
                let mut server = TestServer::start(name, &args)?;
                let endpoint = server.client_endpoint().to_string();
                let client_url = server.client_url().to_string();
                let serving = wait_until_serving(
                    &endpoint,
                    || match server.exit_status()? {
                        Some(status) => bail!("corekv exited with {status}"),
                        None => Ok(()),
                    },
                    "corekv",
                );
                serving.with_context(|| format!("corekv log:\n{}", server.log_text()))?;
                Ok(CompatServer {
                    target,
                    endpoint,
                    client_url,
                    peer_url,
                    scratch,
                    running: Running::Corekv(server),
                })
            }
        }
    }

    /// A directory for files the scenario writes (snapshot save).
    pub fn scratch(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        match &self.running {
            Running::Etcd(server) => server.log_text(),
            Running::Corekv(server) => server.log_text(),
        }
    }

    fn masker(&self) -> Masker {
        let mut masker = Masker::new();
        masker.literal(&self.endpoint, "<ENDPOINT>");
        let peer = self.peer_url.trim_start_matches("http://");
        masker.literal(peer, "<PEER>");
        masker.literal(&self.scratch.path().display().to_string(), "<SCRATCH>");
        masker
    }
}

/// One recorded command: what ran and what it printed, masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The command line (and its input), masked.
    pub command: String,
    /// Exit code, stdout and stderr, masked.
    pub output: String,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "$ {}\n{}", self.command, self.output)
    }
}

/// A scenario's handle on one server: runs commands and records them.
#[derive(Debug)]
pub struct Session<'a> {
    server: &'a CompatServer,
    masker: Masker,
    steps: Vec<Step>,
}

impl<'a> Session<'a> {
    /// A session with an empty transcript.
    pub fn new(server: &'a CompatServer) -> Session<'a> {
        Session {
            server,
            masker: server.masker(),
            steps: Vec::new(),
        }
    }

    /// Which server this is.
    pub fn target(&self) -> Target {
        self.server.target
    }

    /// Client host:port.
    pub fn endpoint(&self) -> &str {
        &self.server.endpoint
    }

    /// `http://<endpoint>`.
    pub fn client_url(&self) -> &str {
        &self.server.client_url
    }

    /// A directory for files (masked as `<SCRATCH>`).
    pub fn scratch(&self) -> &std::path::Path {
        self.server.scratch()
    }

    /// This server's masker (to register lease-holding keys such as `mylock/`).
    pub fn masker(&mut self) -> &mut Masker {
        &mut self.masker
    }

    /// The transcript so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Runs `etcdctl <args>` and records it.
    pub fn etcdctl(&mut self, args: &[&str]) -> Output {
        let output = etcdctl(self.endpoint(), args, None);
        self.record(&format!("etcdctl {}", describe(args)), &output);
        output
    }

    /// Runs `etcdctl <args>` with `stdin` as input and records it.
    pub fn etcdctl_stdin(&mut self, args: &[&str], stdin: &str) -> Output {
        let output = etcdctl(self.endpoint(), args, Some(stdin));
        let stdin = match stdin.len() {
            0..=LABEL_ARGUMENT_BYTES_MAX => format!("{stdin:?}"),
            bytes => format!("<{bytes} bytes>"),
        };
        self.record(&format!("etcdctl {} <<< {stdin}", describe(args)), &output);
        output
    }

    /// Runs `etcdctl <args>` without recording it (synchronisation, set-up whose output
    /// may vary). Its output is still masked, so ids it shows get placeholders.
    pub fn etcdctl_unrecorded(&mut self, args: &[&str]) -> Output {
        let output = etcdctl(self.endpoint(), args, None);
        self.masker.mask(&output.stdout);
        output
    }

    /// Starts `etcdctl <args>` in the background; [`Session::finish`] records it.
    pub fn spawn_etcdctl(&self, args: &[&str]) -> Background {
        spawn_etcdctl(self.endpoint(), args)
    }

    /// Starts another program (a streaming curl) in the background under `label`;
    /// [`Session::finish`] records it.
    pub fn spawn(&self, label: &str, command: Command) -> Background {
        Background::spawn(label.to_string(), command)
    }

    /// Runs another program (curl) with a deadline and records it under `label`.
    pub fn run(&mut self, label: &str, command: Command, stdin: Option<&str>) -> Output {
        let output = process::run(command, stdin, crate::etcd::ETCDCTL_TIMEOUT);
        self.record(label, &output);
        output
    }

    /// Kills a background command and records what it printed.
    pub fn finish(&mut self, background: Background) -> Output {
        self.finish_filtered(background, |stdout| stdout.to_string())
    }

    /// Kills a background command and records what it printed, with stdout passed
    /// through `filter` first (to drop synchronisation events); returns the raw output.
    pub fn finish_filtered(
        &mut self,
        background: Background,
        filter: impl Fn(&str) -> String,
    ) -> Output {
        let label = format!("{} &", background.label);
        let output = background.finish();
        let filtered = Output {
            stdout: filter(&output.stdout),
            ..output.clone()
        };
        self.record(&label, &filtered);
        output
    }

    /// Records `output` under `command`, masked.
    pub fn record(&mut self, command: &str, output: &Output) {
        let code = match output.code {
            Some(code) => format!("exit code {code}"),
            None => "killed".to_string(),
        };
        // Masked in reading order: ids get their numbers as a reader meets them.
        let stdout = self.masker.mask(&output.stdout);
        let stderr = self.masker.mask(&output.stderr);
        let command = self.masker.mask(command);
        self.steps.push(Step {
            command,
            output: format!("{code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n"),
        });
    }

    /// Records a fact derived from outputs (not a command) so it is compared too.
    pub fn note(&mut self, what: &str, value: &str) {
        let value = self.masker.mask(value);
        self.steps.push(Step {
            command: format!("# {what}"),
            output: format!("{value}\n"),
        });
    }
}

/// Runs `scenario` against a fresh etcd and a fresh second server (see the module doc),
/// both started with `flags`, and fails on any difference between the masked
/// transcripts, or if the scenario's own assertions fail on either.
pub fn differential<F>(name: &str, gateway_ready: bool, flags: &[(&str, &str)], scenario: F)
where
    F: Fn(&mut Session<'_>) + Sync,
{
    if !etcd_available(name) {
        return;
    }
    let second = Target::second(gateway_ready);
    let servers: Vec<CompatServer> = std::thread::scope(|scope| {
        let starts: Vec<_> = [Target::Etcd, second]
            .into_iter()
            .enumerate()
            .map(|(index, target)| {
                scope.spawn(move || {
                    CompatServer::start(target, &format!("{name}-{}{index}", target.name()), flags)
                })
            })
            .collect();
        starts
            .into_iter()
            .map(|start| start.join().expect("server start thread"))
            .collect::<Result<_>>()
    })
    .unwrap_or_else(|error| panic!("{name}: cannot start the servers: {error:#}"));

    type Run = (Vec<Step>, std::thread::Result<()>);
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let runs: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(index, server)| {
                let scenario = &scenario;
                std::thread::Builder::new()
                    .name(format!("{name}: {}{index}", server.target.name()))
                    .spawn_scoped(scope, move || {
                        let mut session = Session::new(server);
                        let result = catch_unwind(AssertUnwindSafe(|| scenario(&mut session)));
                        (session.steps, result)
                    })
                    .expect("spawn a scenario thread")
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("scenario threads catch their panics"))
            .collect()
    });
    let mut runs = runs.into_iter();
    let (reference, reference_result) = runs.next().expect("reference run");
    let (other, other_result) = runs.next().expect("second run");
    let reference_label = "etcd (reference)";
    let other_label = match second {
        Target::Etcd => "etcd (second run)",
        Target::Corekv => "corekv",
    };
    if std::env::var_os("COREKV_COMPAT_PRINT").is_some() {
        let steps: Vec<String> = reference.iter().map(Step::to_string).collect();
        eprintln!(
            "===== {name}: {reference_label} transcript\n{}",
            steps.join("\n")
        );
    }
    let report = compare(&reference, &other, reference_label, other_label);
    for (label, result, server) in [
        (reference_label, reference_result, &servers[0]),
        (other_label, other_result, &servers[1]),
    ] {
        if let Err(panic) = result {
            eprintln!(
                "{name}: the scenario failed on {label}. Transcript comparison up to there:\n{}\n{label} log:\n{}",
                report.as_deref().unwrap_or("(identical)"),
                tail(&server.log_text(), 4000)
            );
            resume_unwind(panic);
        }
    }
    if let Some(report) = report {
        panic!("{name}: {report}");
    }
}

/// Arguments and input longer than this are shown by their length in transcripts.
const LABEL_ARGUMENT_BYTES_MAX: usize = 300;

/// A command line for the transcript: long arguments (large values) by their length.
fn describe(args: &[&str]) -> String {
    args.iter()
        .map(|arg| match arg.len() {
            0..=LABEL_ARGUMENT_BYTES_MAX => arg.to_string(),
            bytes => format!("<{bytes} bytes>"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A report of the differences between two transcripts, or `None` if identical.
pub fn compare(reference: &[Step], other: &[Step], left: &str, right: &str) -> Option<String> {
    let mut report = String::new();
    let mut differing = 0;
    for index in 0..reference.len().max(other.len()) {
        let (a, b) = (reference.get(index), other.get(index));
        if a == b {
            continue;
        }
        differing += 1;
        let show = |step: Option<&Step>| step.map_or("(no such step)".to_string(), Step::to_string);
        report.push_str(&format!(
            "\n===== step {} differs\n----- {left}:\n{}----- {right}:\n{}",
            index + 1,
            show(a),
            show(b)
        ));
        if let (Some(a), Some(b)) = (a, b) {
            report.push_str(&line_diff(&a.to_string(), &b.to_string()));
        }
    }
    (differing > 0).then(|| {
        format!(
            "{left} and {right} differ in {differing} of {} steps (after masking):{report}",
            reference.len().max(other.len())
        )
    })
}

/// The lines that differ, position by position (outputs are short).
fn line_diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out = String::from("----- differing lines (- first, + second):\n");
    for index in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(index), b.get(index));
        if x != y {
            if let Some(x) = x {
                out.push_str(&format!("- {x}\n"));
            }
            if let Some(y) = y {
                out.push_str(&format!("+ {y}\n"));
            }
        }
    }
    out
}

fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
