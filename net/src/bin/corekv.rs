//! The `corekv` server binary. `corekv` with no flags serves a single-node store on
//! 127.0.0.1:2378 with its data in ./default.etcd; `corekv --help` lists the flags.

use corekv_net::server::config::{Command, USAGE};
use corekv_net::server::{run, VERSION};

fn main() {
    match Command::parse(std::env::args().skip(1)) {
        Ok(Command::Serve(config)) => {
            if let Err(error) = run(*config) {
                eprintln!("corekv: error: {error:#}");
                std::process::exit(1);
            }
        }
        Ok(Command::Version) => println!("corekv version {VERSION}"),
        Ok(Command::Help) => print!("{USAGE}"),
        Err(error) => {
            eprintln!("corekv: {error:#}");
            std::process::exit(2);
        }
    }
}
