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

fn main() {
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
