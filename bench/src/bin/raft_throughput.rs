//! raft_throughput: how many entries per second three in-memory Raft members commit on
//! one core, with no IO: "persistence" is acknowledged at once and messages are handed
//! straight to the recipient. It measures the state machine's own cost per entry
//! (proposal, replication, acknowledgement, commit, apply hand-off) with batched
//! proposals of 64-byte commands.
//!
//!   cargo run --release -p corekv-bench --bin raft_throughput -- [--seconds 3] [--batch 256] [--runs 5]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use corekv_raft::{Config, EntryKind, MemberId, Message, RawNode, Role};

const COMMAND_BYTES: usize = 64;
/// Members compact their logs every this many applied entries, as a node taking
/// snapshots would (etcd's `--snapshot-count` is 10,000); without it the logs of three
/// members grow by gigabytes over a run and the page faults dominate.
const COMPACT_EVERY_ENTRIES: u64 = 10_000;

struct Cluster {
    nodes: Vec<RawNode>,
    inbox: VecDeque<Message>,
    committed_at_leader: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let ids: Vec<MemberId> = (1..=3).map(MemberId).collect();
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut cfg = Config::new(id, 7);
                // Room for a deep pipeline: the bench measures CPU, not flow control.
                cfg.max_inflight_messages = 1024;
                RawNode::bootstrap(cfg, &ids)
            })
            .collect();
        Cluster {
            nodes,
            inbox: VecDeque::new(),
            committed_at_leader: 0,
        }
    }

    /// Handles every Ready and delivers every message until the cluster is quiet.
    fn pump(&mut self) {
        loop {
            let mut worked = false;
            for k in 0..self.nodes.len() {
                while self.nodes[k].has_ready() {
                    worked = true;
                    let rd = self.nodes[k].ready();
                    self.inbox.extend(rd.messages);
                    self.nodes[k].on_persisted(rd.number);
                    if self.nodes[k].role() == Role::Leader {
                        self.committed_at_leader += rd
                            .committed_entries
                            .iter()
                            .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
                            .count() as u64;
                    }
                }
            }
            while let Some(m) = self.inbox.pop_front() {
                worked = true;
                let to = (m.to.0 - 1) as usize;
                self.nodes[to].step(m);
            }
            if !worked {
                return;
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.role() == Role::Leader)
    }
}

fn run(seconds: f64, batch: usize) -> f64 {
    let mut cluster = Cluster::new();
    cluster.pump();
    let mut ticks = 0;
    while cluster.leader().is_none() {
        cluster.nodes[0].tick();
        cluster.pump();
        ticks += 1;
        assert!(ticks < 1000, "no leader elected");
    }
    let leader = cluster.leader().expect("elected");
    let command = vec![0xA5u8; COMMAND_BYTES];
    cluster.committed_at_leader = 0;
    let began = Instant::now();
    let deadline = Duration::from_secs_f64(seconds);
    let mut rounds = 0u64;
    while began.elapsed() < deadline {
        // Several batches per pump keep the pipeline full, as a busy node would.
        for _ in 0..4 {
            let commands = (0..batch).map(|_| command.clone()).collect();
            cluster.nodes[leader]
                .propose_batch(commands)
                .expect("the leader accepts proposals");
        }
        cluster.pump();
        rounds += 1;
        for node in cluster.nodes.iter_mut() {
            let status = node.status();
            let durable_applied = status.applied.min(status.persisted);
            if durable_applied.get() >= status.first_index.get() + COMPACT_EVERY_ENTRIES {
                node.compact(durable_applied, Vec::new())
                    .expect("applied and durable entries can be compacted");
            }
        }
        if rounds % 64 == 0 {
            // Time passes too: heartbeats and check-quorum run as they would.
            for node in cluster.nodes.iter_mut() {
                node.tick();
            }
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    cluster.committed_at_leader as f64 / elapsed
}

fn main() {
    let mut seconds: f64 = 3.0;
    let mut batch = 256;
    let mut runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--seconds" => seconds = value.parse().expect("--seconds takes a number"),
            "--batch" => batch = value.parse().expect("--batch takes a number"),
            "--runs" => runs = value.parse().expect("--runs takes a number"),
            other => panic!("unknown argument {other}"),
        }
    }
    // One unmeasured run warms the allocator and caches.
    run(seconds.min(1.0), batch);
    let mut results: Vec<f64> = (0..runs)
        .map(|run_number| {
            let rate = run(seconds, batch);
            println!("run {run_number}: {rate:.0} committed entries/s");
            rate
        })
        .collect();
    results.sort_by(|a, b| a.partial_cmp(b).expect("rates are finite"));
    println!(
        "raft_throughput: 3 members, one thread, {COMMAND_BYTES}-byte commands, batches of {batch}: median {:.0} committed entries/s over {runs} runs",
        results[results.len() / 2]
    );
}
