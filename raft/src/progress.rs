//! The leader's view of each member's log (thesis 3.5 nextIndex/matchIndex) and the flow
//! control that pipelines AppendEntries.
//!
//! A member is in one of three modes:
//! - **Probe**: the leader does not know where the member's log matches; it sends one
//!   AppendEntries at a time and waits for the answer (or a heartbeat response).
//! - **Replicate**: the log matches up to `matched`; the leader streams entries
//!   optimistically, advancing `next` as it sends, bounded by an in-flight window of
//!   `max_inflight_messages` messages and `max_inflight_bytes` bytes.
//! - **Snapshot**: the member needs entries the leader compacted; a snapshot is in
//!   flight and nothing else is sent until it is acknowledged or times out.

use std::collections::VecDeque;

use crate::types::LogIndex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Probe,
    Replicate,
    Snapshot { pending: LogIndex, sent_tick: u64 },
}

#[derive(Debug)]
pub(crate) struct Progress {
    pub matched: LogIndex,
    pub next: LogIndex,
    pub mode: Mode,
    /// Probe mode: one message is out; wait for its answer.
    pub probe_sent: bool,
    /// Replicate mode: (last index, bytes) of each AppendEntries in flight, oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Tick at which `matched` last advanced; used to detect lost pipelined messages.
    pub last_progress_tick: u64,
}

impl Progress {
    pub fn new(next: LogIndex, tick: u64) -> Progress {
        Progress {
            matched: LogIndex::ZERO,
            next,
            mode: Mode::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            last_progress_tick: tick,
        }
    }

    pub fn is_paused(&self, max_messages: usize, max_bytes: u64) -> bool {
        match self.mode {
            Mode::Probe => self.probe_sent,
            Mode::Replicate => {
                self.inflight.len() >= max_messages || self.inflight_bytes >= max_bytes
            }
            Mode::Snapshot { .. } => true,
        }
    }

    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, probe right after it; otherwise right after what matched.
        let next = match self.mode {
            Mode::Snapshot { pending, .. } => self.matched.max(pending).next(),
            _ => self.matched.next(),
        };
        self.mode = Mode::Probe;
        self.next = next;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub fn become_replicate(&mut self) {
        self.mode = Mode::Replicate;
        self.next = self.matched.next();
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub fn become_snapshot(&mut self, pending: LogIndex, tick: u64) {
        self.mode = Mode::Snapshot {
            pending,
            sent_tick: tick,
        };
        self.probe_sent = false;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Records an AppendEntries carrying entries up to `last`.
    pub fn sent(&mut self, last: LogIndex, bytes: u64) {
        match self.mode {
            Mode::Replicate => {
                assert!(last >= self.next.prev(), "replicate send goes backwards");
                self.next = last.next();
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            Mode::Probe => self.probe_sent = true,
            Mode::Snapshot { .. } => unreachable!("no AppendEntries while a snapshot is pending"),
        }
    }

    /// A success for `index`. Returns true if `matched` advanced.
    pub fn maybe_update(&mut self, index: LogIndex, tick: u64) -> bool {
        let advanced = index > self.matched;
        if advanced {
            self.matched = index;
            self.last_progress_tick = tick;
            self.probe_sent = false;
        }
        self.next = self.next.max(index.next());
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
        advanced
    }

    /// A rejection of `rejected` (the probed prev index) with the leader's next guess.
    /// Returns false for a stale rejection that must be ignored.
    pub fn maybe_decrease(&mut self, rejected: LogIndex, guess: LogIndex) -> bool {
        match self.mode {
            Mode::Replicate => {
                if rejected <= self.matched {
                    return false;
                }
                self.become_probe();
                self.next = guess.min(rejected).max(self.matched.next());
                true
            }
            Mode::Probe => {
                if self.next.prev() != rejected {
                    return false;
                }
                self.next = guess.min(rejected).max(self.matched.next());
                self.probe_sent = false;
                true
            }
            Mode::Snapshot { .. } => false,
        }
    }
}
