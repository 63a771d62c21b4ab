//! Child processes with a deadline: run one to completion ([`run`]) or keep one running in
//! the background and watch what it prints ([`Background`]).
//!
//! Every wait has a deadline and none is a sleep: [`run`] waits for the child on a helper
//! thread and kills it when the deadline passes; [`Background::wait_for_stdout`] waits on a
//! condition variable that the reader thread signals on every chunk of output. A child is
//! always reaped, and a [`Background`] dropped by a failing test is killed.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a finished (or killed) child left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when a signal ended it (a [`Background`] is always killed).
    pub code: Option<i32>,
    /// Everything it wrote to stdout, lossily decoded as UTF-8.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts exit code 0 and returns self; the message shows both streams.
    #[track_caller]
    pub fn ok(&self) -> &Output {
        assert!(self.success(), "expected exit code 0, got {self}");
        self
    }

    /// Asserts that it failed with `code` and returns self.
    #[track_caller]
    pub fn failed_with(&self, code: i32) -> &Output {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}, got {self}"
        );
        self
    }

    /// The last line of stderr (etcdctl's `Error: ...` line).
    pub fn error_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => writeln!(f, "exit code {code}")?,
            None => writeln!(f, "killed by a signal")?,
        }
        writeln!(f, "stdout:\n{}", self.stdout)?;
        write!(f, "stderr:\n{}", self.stderr)
    }
}

/// Runs `command` to completion with `stdin` as its input (empty input when `None`).
/// Panics, after killing it, if it runs longer than `timeout`: every caller expects its
/// child to finish, so an overrun is a failure (a server that hangs a request).
pub fn run(mut command: Command, stdin: Option<&str>, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {description}: {error}"));
    let input = stdin.unwrap_or("").to_string();
    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    // A writer thread, so a child that does not read its input cannot block us.
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(input.as_bytes());
    });
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = sender.send(());
        status
    });
    let timed_out = receiver.recv_timeout(timeout).is_err();
    if timed_out {
        // SAFETY: kill(2) on our child; the waiter has not reaped it (it would have sent),
        // so the pid still names this process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let status = waiter
        .join()
        .expect("waiter thread")
        .unwrap_or_else(|error| panic!("waiting for {description}: {error}"));
    let _ = writer.join();
    let output = Output {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        !timed_out,
        "{description} did not finish within {timeout:?} and was killed; {output}"
    );
    output
}

fn read_all(mut stream: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Output collected by a reader thread, with a condition variable signalled per chunk.
#[derive(Debug, Default)]
struct Collected {
    bytes: Mutex<(Vec<u8>, bool)>,
    changed: Condvar,
}

impl Collected {
    fn start(mut stream: impl Read + Send + 'static) -> (Arc<Collected>, JoinHandle<()>) {
        let collected = Arc::new(Collected::default());
        let shared = collected.clone();
        let reader = std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            loop {
                let read = stream.read(&mut buffer).unwrap_or(0);
                let mut state = shared.bytes.lock().expect("output lock");
                if read == 0 {
                    state.1 = true;
                    shared.changed.notify_all();
                    return;
                }
                state.0.extend_from_slice(&buffer[..read]);
                shared.changed.notify_all();
            }
        });
        (collected, reader)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("output lock").0).into_owned()
    }
}

/// A child left running: its output is collected as it comes, its stdin stays open for
/// [`Background::write_stdin`], and [`Background::finish`] kills it (SIGKILL: etcdctl
/// prints nothing on its way out, so what it printed before is all there is).
#[derive(Debug)]
pub struct Background {
    /// What started it, for the transcript and failure messages.
    pub label: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Arc<Collected>,
    stderr: Arc<Collected>,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts `command` with piped stdin, stdout and stderr.
    pub fn spawn(label: String, mut command: Command) -> Background {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {label}: {error}"));
        let stdin = child.stdin.take();
        let (stdout, stdout_reader) = Collected::start(child.stdout.take().expect("piped"));
        let (stderr, stderr_reader) = Collected::start(child.stderr.take().expect("piped"));
        Background {
            label,
            child: Some(child),
            stdin,
            stdout,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    /// Writes to its stdin (for `watch -i`, `txn -i`).
    pub fn write_stdin(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|error| panic!("writing to {}: {error}", self.label));
    }

    /// What it printed to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// What it printed to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until stdout satisfies `done` or `timeout` passes, or stdout closes; returns
    /// whether `done` held. A caller that gets `false` should still finish and compare:
    /// the transcript then shows what was missing.
    pub fn wait_for_stdout(&self, done: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.stdout.bytes.lock().expect("output lock");
        loop {
            if done(&String::from_utf8_lossy(&state.0)) {
                return true;
            }
            let now = Instant::now();
            if state.1 || now >= deadline {
                return false;
            }
            state = self
                .stdout
                .changed
                .wait_timeout(state, deadline - now)
                .expect("output lock")
                .0;
        }
    }

    /// Kills it (if it still runs), reaps it and returns everything it printed.
    pub fn finish(mut self) -> Output {
        let code = self.kill();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Output {
            code,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
        }
    }

    fn kill(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // Kill before closing stdin: `watch -i` exits with an error on end of input.
        let _ = child.kill();
        self.stdin = None;
        child.wait().ok().and_then(|status| status.code())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}
