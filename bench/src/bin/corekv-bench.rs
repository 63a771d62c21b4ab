//! `corekv-bench`: load generator for corekv over the binary protocol, and for corekv
//! or real etcd over etcd's gRPC API (`--protocol etcd-grpc`). See
//! `corekv-bench --help` and `corekv_bench::load`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match corekv_bench::load::config::parse(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(if message.starts_with("usage:") { 0 } else { 2 });
        }
    };
    let json = config.json;
    match corekv_bench::load::run(config) {
        Ok(report) => {
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.human());
            }
            if report.ops == 0 && report.errors > 0 {
                std::process::exit(1);
            }
        }
        Err(error) => {
            eprintln!("Error: {error}");
            std::process::exit(1);
        }
    }
}
