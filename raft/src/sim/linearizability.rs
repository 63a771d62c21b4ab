//! A linearizability checker for register histories (put, get, compare-and-set), in the
//! style of Wing & Gong's search with Lowe's memoization, partitioned by key (each key is
//! an independent register, so a history is linearizable iff each key's is).
//!
//! Operations whose outcome is unknown (`ret == None`) may be placed anywhere after
//! their call or left out entirely; every completed operation must be placed between
//! its call and its return with the output it observed.

use std::collections::{BTreeMap, HashSet};

use super::kv::{apply_to_register, HistoryOp};

/// Most search states per key before the checker gives up (reported as a failure, never
/// as success). Histories from the simulator stay far below it.
pub const SEARCH_STATES_MAX: usize = 2_000_000;

/// Why a history was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No valid order exists for this key.
    NotLinearizable {
        key: u8,
    },
    /// The search exceeded [`SEARCH_STATES_MAX`] for this key.
    TooLarge {
        key: u8,
    },
}

/// Checks a whole history, key by key.
pub fn check_history(history: &[HistoryOp]) -> Verdict {
    let mut by_key: BTreeMap<u8, Vec<&HistoryOp>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        match check_register(&ops) {
            Some(true) => {}
            Some(false) => return Verdict::NotLinearizable { key },
            None => return Verdict::TooLarge { key },
        }
    }
    Verdict::Linearizable
}

struct Search<'a> {
    ops: Vec<&'a HistoryOp>,
    seen: HashSet<(Vec<u64>, u64)>,
    required: usize,
}

/// Some(verdict) for one register starting at 0, None if the search was too large.
fn check_register(ops: &[&HistoryOp]) -> Option<bool> {
    let mut ops: Vec<&HistoryOp> = ops.to_vec();
    ops.sort_by_key(|op| op.call);
    let required = ops.iter().filter(|op| op.ret.is_some()).count();
    let mut search = Search {
        ops,
        seen: HashSet::new(),
        required,
    };
    let words = search.ops.len().div_ceil(64);
    let mut done = vec![0u64; words];
    search.run(&mut done, 0, 0)
}

impl Search<'_> {
    /// Depth-first search over "which operation takes effect next".
    fn run(&mut self, done: &mut Vec<u64>, value: u64, required_done: usize) -> Option<bool> {
        if required_done == self.required {
            return Some(true);
        }
        if self.seen.len() >= SEARCH_STATES_MAX {
            return None;
        }
        if !self.seen.insert((done.clone(), value)) {
            return Some(false);
        }
        // No operation may be placed after a completed operation that has not been placed
        // yet if it was called after that one returned.
        let deadline = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| !is_set(done, *i) && op.ret.is_some())
            .map(|(_, op)| op.ret.expect("filtered"))
            .min()
            .expect("a required operation remains");
        for i in 0..self.ops.len() {
            let op = self.ops[i];
            if op.call > deadline {
                break;
            }
            if is_set(done, i) {
                continue;
            }
            let (next, output) = apply_to_register(value, op.kind);
            if op.output.is_some_and(|seen| seen != output) {
                continue;
            }
            set(done, i, true);
            let found = self.run(done, next, required_done + usize::from(op.ret.is_some()));
            set(done, i, false);
            match found {
                Some(true) => return Some(true),
                None => return None,
                Some(false) => {}
            }
        }
        Some(false)
    }
}

fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn set(bits: &mut [u64], i: usize, on: bool) {
    if on {
        bits[i / 64] |= 1 << (i % 64);
    } else {
        bits[i / 64] &= !(1 << (i % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::kv::{OpKind, Output};

    fn op(key: u8, kind: OpKind, call: u64, ret: Option<u64>, output: Option<Output>) -> HistoryOp {
        HistoryOp {
            client: 0,
            key,
            kind,
            call,
            ret,
            output,
        }
    }

    fn put(v: u64, call: u64, ret: u64) -> HistoryOp {
        op(
            0,
            OpKind::Put { value: v },
            call,
            Some(ret),
            Some(Output::Put),
        )
    }

    fn get(v: u64, call: u64, ret: u64) -> HistoryOp {
        op(
            0,
            OpKind::Get,
            call,
            Some(ret),
            Some(Output::Get { value: v }),
        )
    }

    // A sequential history that obeys the register is accepted.
    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![put(1, 0, 1), get(1, 2, 3), put(2, 4, 5), get(2, 6, 7)];
        assert_eq!(check_history(&h), Verdict::Linearizable);
    }

    // A read that returns a value overwritten before it started is rejected.
    #[test]
    fn stale_read_is_not_linearizable() {
        let h = vec![put(1, 0, 1), put(2, 2, 3), get(1, 4, 5)];
        assert_eq!(check_history(&h), Verdict::NotLinearizable { key: 0 });
    }

    // Concurrent operations may take effect in either order.
    #[test]
    fn overlapping_write_and_read_may_reorder() {
        let h = vec![put(1, 0, 10), get(0, 1, 2), get(1, 3, 4), get(1, 11, 12)];
        assert_eq!(check_history(&h), Verdict::Linearizable);
    }

    // Once a read saw the new value, a later read may not see the old one again.
    #[test]
    fn read_going_back_in_time_is_rejected() {
        let h = vec![put(1, 0, 10), get(1, 1, 2), get(0, 3, 4)];
        assert_eq!(check_history(&h), Verdict::NotLinearizable { key: 0 });
    }

    // An operation with an unknown outcome may be included when a read shows its effect,
    // and left out when nothing does.
    #[test]
    fn unknown_outcomes_are_optional() {
        let took_effect = vec![op(0, OpKind::Put { value: 7 }, 0, None, None), get(7, 5, 6)];
        assert_eq!(check_history(&took_effect), Verdict::Linearizable);
        let lost = vec![op(0, OpKind::Put { value: 7 }, 0, None, None), get(0, 5, 6)];
        assert_eq!(check_history(&lost), Verdict::Linearizable);
        let before_call = vec![get(7, 0, 1), op(0, OpKind::Put { value: 7 }, 2, None, None)];
        assert_eq!(
            check_history(&before_call),
            Verdict::NotLinearizable { key: 0 }
        );
    }

    // Compare-and-set outcomes must match the register: two successful CAS from 0 cannot
    // both win.
    #[test]
    fn double_successful_cas_is_rejected() {
        let cas = |new, call, ret| {
            op(
                0,
                OpKind::Cas { expected: 0, new },
                call,
                Some(ret),
                Some(Output::Cas { swapped: true }),
            )
        };
        let h = vec![cas(1, 0, 10), cas(2, 1, 11)];
        assert_eq!(check_history(&h), Verdict::NotLinearizable { key: 0 });
        let ok = vec![
            cas(1, 0, 10),
            op(
                0,
                OpKind::Cas {
                    expected: 0,
                    new: 2,
                },
                1,
                Some(11),
                Some(Output::Cas { swapped: false }),
            ),
        ];
        assert_eq!(check_history(&ok), Verdict::Linearizable);
    }

    // Keys are independent: a violation on one key is found among clean histories of
    // others, and named.
    #[test]
    fn violation_is_reported_per_key() {
        let mut h = vec![put(1, 0, 1), get(1, 2, 3)];
        h.push(op(
            3,
            OpKind::Put { value: 1 },
            0,
            Some(1),
            Some(Output::Put),
        ));
        h.push(op(
            3,
            OpKind::Get,
            2,
            Some(3),
            Some(Output::Get { value: 9 }),
        ));
        assert_eq!(check_history(&h), Verdict::NotLinearizable { key: 3 });
    }

    // Many concurrent clients with consistent results stay fast thanks to memoization.
    #[test]
    fn wide_concurrent_history_is_checked_quickly() {
        let mut h = Vec::new();
        for i in 0..40u64 {
            h.push(put(i + 1, i * 10, i * 10 + 25));
            h.push(op(
                0,
                OpKind::Put { value: 1000 + i },
                i * 10 + 1,
                None,
                None,
            ));
        }
        h.push(get(40, 1000, 1001));
        assert_eq!(check_history(&h), Verdict::Linearizable);
    }
}
