//! Interaction transcripts: scripts under `raft/testdata/*.txt` drive a small cluster
//! command by command, and the expected output after each command is the readable
//! transcript of every Ready and message. A mismatch fails with a diff-friendly dump;
//! `REWRITE=1 cargo test -p corekv-raft --test transcripts` regenerates the files, which
//! are then reviewed like code.
//!
//! Script syntax: `> command args` lines; the lines after a command up to the next
//! command are its expected output; `#` lines are comments and are kept.
//! Commands: `bootstrap ID...`, `campaign ID`, `propose ID TEXT`, `read ID REQUEST`,
//! `transfer ID TARGET`, `join ID`, `add-learner ID MEMBER`, `add-voter ID MEMBER`,
//! `remove ID MEMBER`, `tick ID COUNT`, `compact ID`, `isolate ID`, `heal`,
//! `stabilize`, `status ID`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use corekv_raft::{Config, Entry, EntryKind, MemberId, Message, MessageBody, RawNode};

struct Harness {
    nodes: BTreeMap<u64, RawNode>,
    mailbox: Vec<Message>,
    cut: BTreeSet<u64>,
}

fn entry_text(e: &Entry) -> String {
    let data = match e.kind {
        EntryKind::Normal if e.data.is_empty() => "noop".to_string(),
        EntryKind::Normal => format!("{:?}", String::from_utf8_lossy(&e.data)),
        EntryKind::ConfChange => match corekv_raft::ConfChange::decode(&e.data) {
            Ok(cc) => format!("{:?}({})", cc.kind, cc.member),
            Err(err) => format!("bad conf change: {err}"),
        },
    };
    format!("{}/{} {data}", e.term, e.index)
}

fn entries_text(es: &[Entry]) -> String {
    let parts: Vec<String> = es.iter().map(entry_text).collect();
    format!("[{}]", parts.join(", "))
}

fn message_text(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append prev={prev_term}/{prev_index} commit={commit} {}",
            entries_text(entries)
        ),
        MessageBody::AppendResponse { index, reject } => match reject {
            None => format!("AppendResponse ok index={index}"),
            Some(h) => format!(
                "AppendResponse reject index={index} hint={}/{:?}",
                h.conflict_index, h.conflict_term
            ),
        },
        MessageBody::Heartbeat { commit, read_round } => {
            format!("Heartbeat commit={commit} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => {
            format!("HeartbeatResponse round={read_round}")
        }
        MessageBody::RequestVote {
            pre_vote,
            last_index,
            last_term,
            transfer,
        } => format!(
            "{} last={last_term}/{last_index}{}",
            if *pre_vote { "PreVote" } else { "RequestVote" },
            if *transfer { " transfer" } else { "" }
        ),
        MessageBody::VoteResponse { pre_vote, granted } => format!(
            "{} {}",
            if *pre_vote {
                "PreVoteResponse"
            } else {
                "VoteResponse"
            },
            if *granted { "granted" } else { "rejected" }
        ),
        MessageBody::InstallSnapshot { snapshot } => format!(
            "InstallSnapshot {}/{} voters={:?} {} bytes",
            snapshot.meta.term,
            snapshot.meta.index,
            snapshot.meta.conf_state.voters,
            snapshot.data.len()
        ),
        MessageBody::Propose { entries } => format!("Propose {} entries", entries.len()),
        MessageBody::ReadIndex { request } => format!("ReadIndex request={request}"),
        MessageBody::ReadIndexResponse { request, index } => {
            format!("ReadIndexResponse request={request} index={index}")
        }
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
        MessageBody::Node { data } => format!("Node {} bytes", data.len()),
    };
    format!("{}->{} t{} {body}", m.from, m.to, m.term)
}

impl Harness {
    fn node(&mut self, id: u64) -> &mut RawNode {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    fn run(&mut self, command: &str, out: &mut String) {
        let words: Vec<&str> = command.split_whitespace().collect();
        let num = |i: usize| -> u64 { words[i].parse().expect("numeric argument") };
        match words[0] {
            "bootstrap" => {
                let ids: Vec<MemberId> = words[1..]
                    .iter()
                    .map(|w| MemberId(w.parse().expect("id")))
                    .collect();
                for &id in &ids {
                    let cfg = Config::new(id, id.0);
                    self.nodes.insert(id.0, RawNode::bootstrap(cfg, &ids));
                }
                self.stabilize(out);
            }
            "join" => {
                let id = MemberId(num(1));
                self.nodes
                    .insert(id.0, RawNode::join(Config::new(id, id.0)));
            }
            "add-learner" | "add-voter" | "remove" => {
                let kind = match words[0] {
                    "add-learner" => corekv_raft::ConfChangeKind::AddLearner,
                    "add-voter" => corekv_raft::ConfChangeKind::AddVoter,
                    _ => corekv_raft::ConfChangeKind::RemoveMember,
                };
                let change = corekv_raft::ConfChange {
                    kind,
                    member: MemberId(num(2)),
                    context: Vec::new(),
                };
                let result = self.node(num(1)).propose_conf_change(change);
                writeln!(out, "{result:?}").expect("string");
            }
            "campaign" => {
                self.node(num(1)).campaign();
            }
            "propose" => {
                let data = words[2..].join(" ").into_bytes();
                let result = self.node(num(1)).propose(data);
                writeln!(out, "{result:?}").expect("string");
            }
            "read" => {
                let result = self.node(num(1)).read_index(num(2));
                writeln!(out, "{result:?}").expect("string");
            }
            "transfer" => {
                let result = self.node(num(1)).transfer_leader(MemberId(num(2)));
                writeln!(out, "{result:?}").expect("string");
            }
            "tick" => {
                for _ in 0..num(2) {
                    self.node(num(1)).tick();
                }
            }
            "compact" => {
                let applied = self.node(num(1)).status().applied;
                let result = self.node(num(1)).compact(applied, b"app-state".to_vec());
                writeln!(out, "compact at {applied}: {result:?}").expect("string");
            }
            "isolate" => {
                self.cut.insert(num(1));
            }
            "heal" => self.cut.clear(),
            "stabilize" => self.stabilize(out),
            "status" => {
                let s = self.node(num(1)).status();
                writeln!(
                    out,
                    "{}: {:?} term={} leader={:?} commit={} applied={} last={} voters={:?} learners={:?}",
                    s.id, s.role, s.term, s.leader, s.commit, s.applied, s.last_index,
                    s.conf_state.voters, s.conf_state.learners
                )
                .expect("string");
            }
            other => panic!("unknown command {other}"),
        }
    }

    fn stabilize(&mut self, out: &mut String) {
        for _ in 0..1_000 {
            let mut moved = false;
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                let node = self.node(id);
                // One Ready per member per round, so the transcript interleaves members.
                if node.has_ready() {
                    moved = true;
                    let rd = node.ready();
                    let mut parts = Vec::new();
                    if let Some(s) = rd.soft_state {
                        parts.push(format!("role={:?} leader={:?}", s.role, s.leader));
                    }
                    if let Some(h) = rd.hard_state {
                        parts.push(format!(
                            "hard_state(term={} vote={:?} commit={})",
                            h.term, h.vote, h.commit
                        ));
                    }
                    if let Some(s) = &rd.snapshot {
                        parts.push(format!("snapshot {}/{}", s.meta.term, s.meta.index));
                    }
                    if !rd.entries.is_empty() {
                        parts.push(format!("persist {}", entries_text(&rd.entries)));
                    }
                    if !rd.committed_entries.is_empty() {
                        parts.push(format!("apply {}", entries_text(&rd.committed_entries)));
                    }
                    for r in &rd.read_states {
                        parts.push(format!("read request={} index={}", r.request, r.index));
                    }
                    if !parts.is_empty() {
                        writeln!(out, "{id} ready: {}", parts.join("; ")).expect("string");
                    }
                    node.on_persisted(rd.number);
                    self.mailbox.extend(rd.messages);
                }
            }
            for m in std::mem::take(&mut self.mailbox) {
                moved = true;
                let lost = self.cut.contains(&m.from.0) || self.cut.contains(&m.to.0);
                writeln!(
                    out,
                    "  {}{}",
                    message_text(&m),
                    if lost { "  (lost)" } else { "" }
                )
                .expect("string");
                if !lost {
                    if let Some(node) = self.nodes.get_mut(&m.to.0) {
                        node.step(m);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("did not stabilize");
    }
}

fn run_script(name: &str) {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut harness = Harness {
        nodes: BTreeMap::new(),
        mailbox: Vec::new(),
        cut: BTreeSet::new(),
    };
    let mut rewritten = String::new();
    let mut expected = String::new();
    let mut actual = String::new();
    for line in script.lines() {
        if let Some(command) = line.strip_prefix("> ") {
            let mut out = String::new();
            harness.run(command, &mut out);
            writeln!(rewritten, "{line}").expect("string");
            rewritten.push_str(&out);
            writeln!(expected, "{line}").expect("string");
            writeln!(actual, "{line}").expect("string");
            actual.push_str(&out);
        } else if line.starts_with('#') || line.is_empty() {
            writeln!(rewritten, "{line}").expect("string");
            writeln!(expected, "{line}").expect("string");
            writeln!(actual, "{line}").expect("string");
        } else {
            writeln!(expected, "{line}").expect("string");
        }
    }
    if std::env::var_os("REWRITE").is_some() {
        std::fs::write(&path, rewritten).unwrap_or_else(|e| panic!("{path}: {e}"));
        return;
    }
    if expected != actual {
        panic!(
            "transcript {name} differs; run with REWRITE=1 and review the diff.\n--- actual ---\n{actual}"
        );
    }
}

// Election with pre-vote, then a proposal replicated and applied on every member.
#[test]
fn transcript_election_and_replication() {
    run_script("election_replication.txt");
}

// A batched ReadIndex round, a follower's read, and leader transfer by TimeoutNow.
#[test]
fn transcript_reads_and_transfer() {
    run_script("reads_transfer.txt");
}

// A partitioned member rejoins behind a compacted log and is caught up by snapshot.
#[test]
fn transcript_snapshot_catch_up() {
    run_script("snapshot_catch_up.txt");
}

// A learner joins and catches up without voting, is promoted, and the old leader removes
// itself and steps down.
#[test]
fn transcript_membership() {
    run_script("membership.txt");
}
