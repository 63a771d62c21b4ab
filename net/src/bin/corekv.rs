//! The `corekv` server binary. `corekv` with no flags serves a single-node store on
//! 127.0.0.1:2378 with its data in ./default.etcd; `corekv --help` lists the flags, which
//! are etcd's (also as `ETCD_*` variables and in a YAML `--config-file`).
//!
//! Exit codes: 0 after `--help`, `--version` or a clean shutdown; 2 when the
//! configuration is refused; 1 when the server fails.

use corekv_net::server::config::{usage, version_text, Command, Parsed, Rejected};
use corekv_net::server::run;

/// mimalloc: per-thread free lists suit the server's cores, which allocate for every
/// call and often free on another core (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: the sixteenth option of mimalloc 3's `mi_option_t` (the
/// crate exports no constant for it; the test below checks the index).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long mimalloc keeps freed memory before handing it back to the kernel. Its
/// default of 1 s made the server fault in (and the kernel zero) fresh pages, often
/// 2 MiB huge pages, for memory it had freed a moment before: thousands of faults per
/// second under load and 7% of the server's CPU (docs/benchmarks.md). 10 s, as
/// jemalloc's dirty-page decay, keeps the working set; `MIMALLOC_PURGE_DELAY` overrides.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// `mi_option_allow_thp`: the 44th option of mimalloc 3's `mi_option_t`.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

fn main() {
    tune_memory();
    let Parsed { command, warnings } = match Command::parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(Rejected { error, warnings }) => {
            print_warnings(&warnings);
            eprintln!("corekv: {error:#}");
            std::process::exit(2);
        }
    };
    print_warnings(&warnings);
    match command {
        Command::Serve(config) => {
            if let Err(error) = run(*config) {
                eprintln!("corekv: error: {error:#}");
                std::process::exit(1);
            }
        }
        Command::Version => print!("{}", version_text()),
        Command::Help => print!("{}", usage()),
    }
}

/// Sets the allocator's and the kernel's memory behaviour for a server, before any
/// thread of this program exists (mimalloc's option setters are not thread-safe). Each
/// setting yields to its `MIMALLOC_*` variable when that is set.
fn tune_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: an option setter of the linked allocator, called single-threaded.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    // No transparent huge pages. A first touch of a huge page makes the kernel zero
    // 2 MiB while the faulting core waits: on the virtual machines measured that is
    // milliseconds, and a store that grows with every write touches fresh memory all
    // the time, so these stalls set gRPC put p99 (8.1 ms with huge pages, 5.0 ms
    // without; docs/benchmarks.md). The price is TLB reach on large stores. Databases
    // commonly advise the same (huge pages off for latency-bound servers).
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above; prctl only sets a flag on this process.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("corekv: warning: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option indexes are mimalloc's purge delay and huge-page switch: they read
    /// as mimalloc 3's defaults (1000 ms; allowed) unless set, and take the value set.
    #[test]
    fn option_indexes() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_ALLOW_THP").is_some()
        {
            return;
        }
        // SAFETY: reads and sets allocator options; nothing else in this test binary
        // touches mimalloc's options.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP), 1);
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
            assert_eq!(
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                PURGE_DELAY_MS
            );
        }
    }
}
