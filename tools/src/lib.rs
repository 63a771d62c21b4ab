//! corekv-tools: operator tools.
//!
//! Will hold `corekvctl` (an etcdctl-like CLI over the binary protocol) and the WAL and
//! snapshot inspectors. Empty until the server issue gives them something to talk to.
