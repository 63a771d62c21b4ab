//! The simulated network: every message gets a delivery time drawn from the seed, may
//! be dropped or duplicated, and links may be cut in one or both directions. Messages
//! with equal delivery times leave in an order also drawn from the seed (reordering).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use crate::rng::SplitMix64;
use crate::{MemberId, Message};

/// Fault rates for one phase of a run, in parts per million.
#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    pub drop_ppm: u64,
    pub duplicate_ppm: u64,
    /// Chance a message is held back for `long_delay_ms_max` at most.
    pub long_delay_ppm: u64,
    pub delay_ms_max: u64,
    pub long_delay_ms_max: u64,
}

impl NetworkFaults {
    /// A healthy network: short delays only.
    pub fn calm() -> NetworkFaults {
        NetworkFaults {
            drop_ppm: 0,
            duplicate_ppm: 0,
            long_delay_ppm: 0,
            delay_ms_max: 3,
            long_delay_ms_max: 0,
        }
    }
}

#[derive(Debug)]
pub struct Network {
    /// (deliver_at_ms, tiebreak, sequence) -> message; the heap pops the earliest.
    queue: BinaryHeap<Reverse<(u64, u64, u64)>>,
    messages: std::collections::BTreeMap<u64, Message>,
    next_sequence: u64,
    /// Directed links that currently lose everything: (from, to).
    cut: BTreeSet<(MemberId, MemberId)>,
    pub faults: NetworkFaults,
    pub sent: u64,
    pub dropped: u64,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            queue: BinaryHeap::new(),
            messages: Default::default(),
            next_sequence: 0,
            cut: BTreeSet::new(),
            faults,
            sent: 0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, rng: &mut SplitMix64, now_ms: u64, message: Message) {
        self.sent += 1;
        if rng.chance(self.faults.drop_ppm) {
            self.dropped += 1;
            return;
        }
        let copies = if rng.chance(self.faults.duplicate_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = rng.between(1, self.faults.delay_ms_max.max(1));
            if rng.chance(self.faults.long_delay_ppm) {
                delay += rng.between(0, self.faults.long_delay_ms_max);
            }
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            self.queue
                .push(Reverse((now_ms + delay, rng.next_u64(), sequence)));
            self.messages.insert(sequence, message.clone());
        }
    }

    /// The next message due at or before `now_ms`, unless its link is cut (then it is
    /// lost and the next one is tried).
    pub fn next_due(&mut self, now_ms: u64) -> Option<Message> {
        loop {
            let Reverse((at, _, sequence)) = *self.queue.peek()?;
            if at > now_ms {
                return None;
            }
            self.queue.pop();
            let message = self
                .messages
                .remove(&sequence)
                .expect("queued message stored");
            if self.cut.contains(&(message.from, message.to)) {
                self.dropped += 1;
                continue;
            }
            return Some(message);
        }
    }

    /// Loses every message in flight (connections reset when the network heals, so no
    /// message delayed during the faults arrives afterwards).
    pub fn lose_in_flight(&mut self) {
        self.dropped += self.messages.len() as u64;
        self.queue.clear();
        self.messages.clear();
    }

    pub fn cut(&mut self, from: MemberId, to: MemberId) {
        self.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn cut_links(&self) -> usize {
        self.cut.len()
    }
}
