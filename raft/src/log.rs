//! The in-memory Raft log: a compacted prefix (the snapshot point) followed by entries,
//! with the four markers the Ready contract is built on.
//!
//! Invariants (asserted on every change):
//! `snapshot_index <= applied <= committed <= last_index`,
//! `applied <= persisted` (entries are handed to the application only once durable
//! locally), and `entries[k].index == snapshot_index + 1 + k`.
//! The log never overwrites an entry at or below `committed` (Raft's State Machine
//! Safety; a violation is a bug and panics).

use std::collections::VecDeque;

use crate::types::{Entry, LogIndex, SnapshotMeta, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    /// Highest index known committed.
    pub committed: LogIndex,
    /// Highest index handed to the application in a Ready.
    pub applied: LogIndex,
    /// Highest index durable in the driver's storage and in agreement with this log.
    pub persisted: LogIndex,
    /// First index not yet handed to the driver for persistence.
    pub unstable_from: LogIndex,
}

impl RaftLog {
    /// An empty log at the beginning of time.
    pub fn new() -> RaftLog {
        RaftLog {
            snapshot_index: LogIndex::ZERO,
            snapshot_term: Term::ZERO,
            entries: VecDeque::new(),
            committed: LogIndex::ZERO,
            applied: LogIndex::ZERO,
            persisted: LogIndex::ZERO,
            unstable_from: LogIndex(1),
        }
    }

    /// A log rebuilt from durable state: everything given is already persisted.
    pub fn restored(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        entries: Vec<Entry>,
        committed: LogIndex,
        applied: LogIndex,
    ) -> RaftLog {
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            committed,
            applied,
            persisted: LogIndex::ZERO,
            unstable_from: LogIndex::ZERO,
        };
        log.persisted = log.last_index();
        log.unstable_from = log.last_index().next();
        log.assert_invariants();
        log
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot_index.0 + self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`, or None if compacted away or not yet written.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        let at = (index.0 - self.snapshot_index.0 - 1) as usize;
        Some(&self.entries[at])
    }

    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Thesis 3.6.1: a candidate's log is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Leader append: entries must continue the log exactly.
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index().next(),
                "leader append leaves a gap"
            );
            assert!(
                entry.term >= self.last_term(),
                "leader append with a lower term"
            );
            self.entries.push_back(entry);
        }
    }

    /// Follower append (AppendEntries receiver, thesis Figure 3.1). Returns the last index
    /// the leader's message covers, or None if the log does not contain `prev`.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        entries: Vec<Entry>,
    ) -> Option<LogIndex> {
        if !self.matches(prev_index, prev_term) {
            return None;
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        let mut conflict_at = None;
        for (k, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index.0,
                prev_index.0 + 1 + k as u64,
                "append with a gap"
            );
            if entry.index <= self.snapshot_index {
                continue;
            }
            if self.term(entry.index) != Some(entry.term) {
                conflict_at = Some(k);
                break;
            }
        }
        if let Some(k) = conflict_at {
            let start = entries[k].index;
            assert!(
                start > self.committed,
                "refusing to overwrite committed entry {start} (committed {})",
                self.committed
            );
            self.truncate_from(start);
            self.entries.extend(entries.into_iter().skip(k));
        }
        self.commit_to(leader_commit.min(last_new));
        self.assert_invariants();
        Some(last_new)
    }

    /// Drops entries from `start` on; they were never committed.
    fn truncate_from(&mut self, start: LogIndex) {
        assert!(start > self.snapshot_index && start > self.committed);
        let keep = (start.0 - self.snapshot_index.0 - 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(start);
        self.persisted = self.persisted.min(start.prev());
    }

    /// The rejection hint (thesis 5.3): the first index of the term we hold at
    /// `prev_index`, or our last index + 1 if we do not reach `prev_index`.
    pub fn conflict_hint(&self, prev_index: LogIndex) -> (LogIndex, Option<Term>) {
        if prev_index > self.last_index() {
            return (self.last_index().next(), None);
        }
        let term = self
            .term(prev_index)
            .expect("a rejected prev_index is above the commit point, so not compacted");
        let floor = self.committed.next().max(self.first_index());
        let mut index = prev_index;
        while index > floor && self.term(index.prev()) == Some(term) {
            index = index.prev();
        }
        (index, Some(term))
    }

    /// On the leader: the index after the last entry of `term` at or below `at_most`, if
    /// the leader has any entry of that term there.
    pub fn next_after_term(&self, term: Term, at_most: LogIndex) -> Option<LogIndex> {
        let mut index = at_most.min(self.last_index());
        while index >= self.snapshot_index {
            let t = self.term(index)?;
            if t == term {
                return Some(index.next());
            }
            if t < term || index == self.snapshot_index {
                return None;
            }
            index = index.prev();
        }
        None
    }

    pub fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// Entries `[from, ..]` up to `max_bytes` (at least one if any exist). None if `from`
    /// is compacted.
    pub fn slice(&self, from: LogIndex, max_bytes: u64) -> Option<Vec<Entry>> {
        if from <= self.snapshot_index {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = from;
        while let Some(entry) = self.entry(index) {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        Some(out)
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// Hands the unstable suffix to the driver.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable_from.max(self.first_index());
        let out: Vec<Entry> = self.slice(from, u64::MAX).unwrap_or_default();
        self.unstable_from = self.last_index().next();
        out
    }

    /// The highest index that may be handed to the application.
    pub fn applicable_to(&self) -> LogIndex {
        self.committed.min(self.persisted)
    }

    pub fn has_applicable(&self) -> bool {
        self.applicable_to() > self.applied
    }

    /// Hands committed, locally durable entries to the application, up to `max_bytes`.
    pub fn take_applicable(&mut self, max_bytes: u64) -> Vec<Entry> {
        let to = self.applicable_to();
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut index = self.applied.next();
        while index <= to {
            let entry = self
                .entry(index)
                .expect("applicable entries are not compacted");
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        if let Some(last) = out.last() {
            self.applied = last.index;
        }
        self.assert_invariants();
        out
    }

    /// Drops entries up to and including `index` (the application snapshotted there).
    pub fn compact(&mut self, index: LogIndex) {
        if index <= self.snapshot_index {
            return;
        }
        assert!(index <= self.applied && index <= self.persisted);
        let term = self.term(index).expect("compaction point inside the log");
        let drop = (index.0 - self.snapshot_index.0) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.assert_invariants();
    }

    /// Replaces the whole log with a snapshot point received from the leader.
    pub fn restore(&mut self, meta: &SnapshotMeta) {
        assert!(
            meta.index > self.committed,
            "restoring a snapshot behind commit"
        );
        self.entries.clear();
        self.snapshot_index = meta.index;
        self.snapshot_term = meta.term;
        self.committed = meta.index;
        self.applied = meta.index;
        self.unstable_from = meta.index.next();
        // Durable only once the Ready carrying the snapshot is acknowledged.
        self.persisted = meta.index.prev();
    }

    pub fn assert_invariants(&self) {
        assert!(
            self.snapshot_index <= self.applied,
            "applied below the snapshot"
        );
        assert!(self.applied <= self.committed, "applied beyond commit");
        assert!(self.committed <= self.last_index(), "commit beyond the log");
        if let Some(front) = self.entries.front() {
            assert_eq!(
                front.index,
                self.snapshot_index.next(),
                "log does not start after snapshot"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let mut log = RaftLog::new();
        log.append(
            terms
                .iter()
                .enumerate()
                .map(|(k, t)| entry(k as u64 + 1, *t)),
        );
        log
    }

    // A conflicting append truncates the uncommitted suffix, marks it unstable again and
    // pulls `persisted` back below the overwrite.
    #[test]
    fn conflict_truncates_and_rewinds_markers() {
        let mut log = log_with_terms(&[1, 1, 2, 2, 2]);
        let _ = log.take_unstable();
        log.persisted = LogIndex(5);
        log.commit_to(LogIndex(2));
        let last = log.maybe_append(LogIndex(2), Term(1), LogIndex(2), vec![entry(3, 3)]);
        assert_eq!(last, Some(LogIndex(3)));
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.term(LogIndex(3)), Some(Term(3)));
        assert_eq!(log.unstable_from, LogIndex(3));
        assert_eq!(log.persisted, LogIndex(2));
    }

    // A stale append that matches what we hold changes nothing, including the suffix.
    #[test]
    fn matching_append_keeps_longer_suffix() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let last = log.maybe_append(LogIndex(1), Term(1), LogIndex(0), vec![entry(2, 1)]);
        assert_eq!(last, Some(LogIndex(2)));
        assert_eq!(log.last_index(), LogIndex(4));
    }

    // Overwriting a committed entry is a safety violation and panics.
    #[test]
    #[should_panic(expected = "refusing to overwrite committed entry")]
    fn overwriting_committed_entry_panics() {
        let mut log = log_with_terms(&[1, 1, 2]);
        log.commit_to(LogIndex(3));
        log.maybe_append(LogIndex(2), Term(1), LogIndex(3), vec![entry(3, 3)]);
    }

    // The rejection hint names the first index of the conflicting term, or last + 1
    // when the follower is short; the leader skips to after its last entry of that term.
    #[test]
    fn conflict_hints_skip_whole_terms() {
        let follower = log_with_terms(&[1, 1, 2, 2, 2, 2]);
        assert_eq!(
            follower.conflict_hint(LogIndex(6)),
            (LogIndex(3), Some(Term(2)))
        );
        assert_eq!(follower.conflict_hint(LogIndex(9)), (LogIndex(7), None));
        let leader = log_with_terms(&[1, 1, 3, 3]);
        assert_eq!(leader.next_after_term(Term(2), LogIndex(4)), None);
        assert_eq!(
            leader.next_after_term(Term(1), LogIndex(4)),
            Some(LogIndex(3))
        );
    }

    // Compaction drops the prefix but keeps the term of the compaction point; restore
    // replaces everything with the snapshot point.
    #[test]
    fn compaction_and_restore_keep_the_boundary_term() {
        let mut log = log_with_terms(&[1, 2, 2, 3]);
        let _ = log.take_unstable();
        log.persisted = LogIndex(4);
        log.commit_to(LogIndex(3));
        assert_eq!(log.take_applicable(u64::MAX).len(), 3);
        log.compact(LogIndex(2));
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.term(LogIndex(2)), Some(Term(2)));
        assert_eq!(log.term(LogIndex(1)), None);
        assert_eq!(log.slice(LogIndex(2), u64::MAX), None);
        log.restore(&SnapshotMeta {
            index: LogIndex(10),
            term: Term(4),
            conf_state: Default::default(),
        });
        assert_eq!(log.last_index(), LogIndex(10));
        assert_eq!(log.committed, LogIndex(10));
        assert!(log.matches(LogIndex(10), Term(4)));
    }
}
