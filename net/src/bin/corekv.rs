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

fn main() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: an option setter of the linked allocator, called before any thread
        // of this program exists (it is not thread-safe).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
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

fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("corekv: warning: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is mimalloc's purge delay: it reads as mimalloc 3's default
    /// (1000 ms) unless set, and takes the value set.
    #[test]
    fn purge_delay_option_index() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads and sets one allocator option; nothing else in this test
        // binary touches mimalloc's options.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
            assert_eq!(
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                PURGE_DELAY_MS
            );
        }
    }
}
