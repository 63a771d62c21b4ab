//! `corekvctl`: etcdctl's commands over corekv's binary protocol. See
//! `corekvctl help` and `corekv_tools::ctl`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(corekv_tools::ctl::main(args));
}
