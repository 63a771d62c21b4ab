//! CPU time of processes from `/proc/PID/stat`: the server's (`--server-pid`, one or
//! several processes) and the load generator's own, sampled at the start and the end of
//! the measured phase, so that a run reports what each side spent on the load.
//!
//! `/proc/PID/stat` of a process (its thread group leader) counts every thread of it,
//! in clock ticks (`sysconf(_SC_CLK_TCK)`, usually 100 per second, so a figure is
//! exact to 10 ms times the number of threads). The second field, the command name in
//! parentheses, may itself hold spaces and parentheses: the fields are read after the
//! last `)`.
//!
//! Never: guess a tick rate, or fold a process that went away into a zero.

use std::time::Duration;

/// utime and stime of one process, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    /// Time scheduled in user mode.
    pub user: u64,
    /// Time scheduled in kernel mode.
    pub system: u64,
}

impl CpuTicks {
    /// User plus system ticks.
    pub fn total(self) -> u64 {
        self.user + self.system
    }
}

/// Index of utime among the fields after the command name: the fields are numbered
/// from 1 with pid as 1 and comm as 2 (proc(5)); utime is 14, stime 15, and the text
/// after the last `)` starts at field 3 (state).
const UTIME_AFTER_COMM: usize = 14 - 3;
const STIME_AFTER_COMM: usize = 15 - 3;

/// Reads utime and stime out of the text of a `/proc/PID/stat` file.
pub fn parse_stat(text: &str) -> Result<CpuTicks, String> {
    let close = text
        .rfind(')')
        .ok_or_else(|| "no ')' after the command name".to_string())?;
    let fields: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    let field = |index: usize, name: &str| -> Result<u64, String> {
        let raw = fields
            .get(index)
            .ok_or_else(|| format!("{name} missing ({} fields after the name)", fields.len()))?;
        raw.parse()
            .map_err(|_| format!("{name} is not a number: {raw:?}"))
    };
    Ok(CpuTicks {
        user: field(UTIME_AFTER_COMM, "utime")?,
        system: field(STIME_AFTER_COMM, "stime")?,
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> Result<u64, String> {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return Err("sysconf(_SC_CLK_TCK) failed".to_string());
    }
    Ok(ticks as u64)
}

/// Which process to read: the load generator itself or another by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// `/proc/self/stat`.
    Myself,
    /// `/proc/PID/stat`.
    Pid(u32),
}

/// Reads the CPU ticks a process has used so far.
pub fn read(process: Process) -> Result<CpuTicks, String> {
    let path = match process {
        Process::Myself => "/proc/self/stat".to_string(),
        Process::Pid(pid) => format!("/proc/{pid}/stat"),
    };
    let text =
        std::fs::read_to_string(&path).map_err(|error| format!("cannot read {path}: {error}"))?;
    parse_stat(&text).map_err(|error| format!("{path}: {error}"))
}

/// CPU ticks of the load generator and of the server processes at one instant.
#[derive(Clone, Debug)]
pub struct Sample {
    client: CpuTicks,
    servers: Vec<CpuTicks>,
}

/// CPU time spent during the measured phase.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    /// The load generator's own (every thread).
    pub client: Duration,
    /// All `--server-pid` processes together; None without `--server-pid`, or if one
    /// of them could not be read at the end.
    pub server: Option<Duration>,
}

/// Samples the load generator and `server_pids` now; fails if any cannot be read.
pub fn sample(server_pids: &[u32]) -> Result<Sample, String> {
    Ok(Sample {
        client: read(Process::Myself)?,
        servers: server_pids
            .iter()
            .map(|&pid| read(Process::Pid(pid)))
            .collect::<Result<_, _>>()?,
    })
}

impl Sample {
    /// What was spent between `self` and now. A server that cannot be read any more
    /// (it exited) leaves the server figure out, with a warning on stderr.
    pub fn usage_since(&self, server_pids: &[u32]) -> Usage {
        let ticks = ticks_per_second().unwrap_or(100);
        let seconds = |ticks_used: u64| Duration::from_secs_f64(ticks_used as f64 / ticks as f64);
        let client = read(Process::Myself)
            .map(|now| now.total().saturating_sub(self.client.total()))
            .unwrap_or(0);
        let server = if server_pids.is_empty() {
            None
        } else {
            let mut used = 0;
            let mut complete = true;
            for (&pid, before) in server_pids.iter().zip(&self.servers) {
                match read(Process::Pid(pid)) {
                    Ok(now) => used += now.total().saturating_sub(before.total()),
                    Err(error) => {
                        eprintln!("warning: no server CPU figure: {error}");
                        complete = false;
                    }
                }
            }
            complete.then(|| seconds(used))
        };
        Usage {
            client: seconds(client),
            server,
        }
    }
}

/// Parses `--server-pid` values: one pid or a comma list; the flag may repeat.
pub fn parse_pids(text: &str) -> Result<Vec<u32>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pid| !pid.is_empty())
        .map(|pid| {
            pid.parse::<u32>()
                .ok()
                .filter(|&pid| pid > 0)
                .ok_or_else(|| format!("invalid --server-pid {pid:?}: not a process id"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain line: utime and stime are fields 14 and 15.
    #[test]
    fn plain_stat_line() {
        let line = "4242 (corekv) S 1 4242 4242 0 -1 4194560 1200 0 3 0 1234 567 0 0 20 0 9 0 \
                    100 568432 41806 18446744073709551615 1 1 0 0 0 0 0 4096 17638 0 0 0 17 1 0 0\n";
        assert_eq!(
            parse_stat(line).unwrap(),
            CpuTicks {
                user: 1234,
                system: 567
            }
        );
    }

    /// A command name with spaces and parentheses does not shift the fields: they are
    /// read after the last ')'.
    #[test]
    fn command_name_with_spaces_and_parentheses() {
        let line = "77 (a) b (c) d)) R 1 77 77 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 5 0 0";
        assert_eq!(
            parse_stat(line).unwrap(),
            CpuTicks {
                user: 10,
                system: 20
            }
        );
        let line = "78 () ) R 1 78 78 0 -1 0 0 0 0 0 3 4 0 0";
        assert_eq!(parse_stat(line).unwrap().total(), 7);
    }

    /// Truncated or garbled lines are refused with a reason, not read as zero.
    #[test]
    fn bad_lines_are_refused() {
        assert!(parse_stat("").unwrap_err().contains("')'"));
        assert!(parse_stat("1 (x) S 1 2 3")
            .unwrap_err()
            .contains("utime missing"));
        assert!(parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 20")
            .unwrap_err()
            .contains("utime is not a number"));
    }

    /// This process's own stat file parses, and its CPU time only grows.
    #[test]
    fn reads_own_stat() {
        let before = read(Process::Myself).unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        let after = read(Process::Myself).unwrap();
        assert!(after.total() >= before.total());
        assert!(ticks_per_second().unwrap() > 0);
        let pid = std::process::id();
        let usage = sample(&[pid]).unwrap().usage_since(&[pid]);
        assert!(usage.server.is_some());
    }

    /// `--server-pid` takes one pid or a comma list; junk and pid 0 are refused.
    #[test]
    fn pid_lists() {
        assert_eq!(parse_pids("12").unwrap(), vec![12]);
        assert_eq!(parse_pids("12, 13,").unwrap(), vec![12, 13]);
        assert!(parse_pids("12,x").is_err());
        assert!(parse_pids("0").is_err());
        assert!(parse_pids("-5").is_err());
    }
}
