//! The exact-key index: an open-addressing hash table from a key's hash to its slot in
//! the index's slab, so that point reads and puts find a key with one or two cache misses
//! instead of a B-tree descent (about seven levels for a million keys, most of them
//! misses).
//!
//! The table stores slots only, not keys: a candidate is confirmed by the caller, who
//! compares the key held in the slot's record. Buckets come in groups of
//! [`GROUP_BUCKETS`] that fill one 64-byte cache line: a one-byte tag per bucket (eight
//! bits of the hash; [`EMPTY`] for a free bucket) and the 4-byte slots. A lookup reads the
//! key's home group and, only when that group is full, the groups after it (linear
//! probing by group). With at most [`LOAD_NUMERATOR`]/[`LOAD_DENOMINATOR`] of the buckets
//! used, almost every lookup reads one line, and a tag mismatch rules a bucket out
//! without touching its record (a false match costs one record read in 254).
//!
//! Invariants: every key of the index has exactly one bucket holding its slot, in its
//! home group or in a later one with every group in between full; nothing else is in the
//! table. Entries are never removed one by one: the owner rebuilds the table when keys
//! go away (compaction) or slots move (slab rebuild), both already O(keys). Because
//! nothing is removed, a group with a free bucket ends every probe sequence through it.
//!
//! The table is derived state: it is rebuilt, never serialized, and its layout depends
//! only on the keys and the order they were inserted in, never on randomness (the hash
//! uses fixed seeds), so it does not make the engine nondeterministic. Its iteration
//! order is never observable: it is only ever asked for one key.

/// Buckets per group: 12 tags + 12 slots = 60 bytes, one cache line with the padding.
pub(crate) const GROUP_BUCKETS: usize = 12;

/// The most buckets in use, as a fraction of all buckets, before the table doubles.
pub(crate) const LOAD_NUMERATOR: usize = 7;
/// See [`LOAD_NUMERATOR`].
pub(crate) const LOAD_DENOMINATOR: usize = 8;

/// The tag of a free bucket. Tags made from a hash are in `1..=254`.
const EMPTY: u8 = 0;

/// Fixed seeds (the first digits of pi): the engine must hash the same on every member
/// and in every run, so no per-process random state.
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// The hash of a key, as the table uses it.
#[inline]
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]).hash_one(key)
}

/// One cache line of buckets.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Group {
    tags: [u8; GROUP_BUCKETS],
    slots: [u32; GROUP_BUCKETS],
}

const EMPTY_GROUP: Group = Group {
    tags: [EMPTY; GROUP_BUCKETS],
    slots: [0; GROUP_BUCKETS],
};

impl Group {
    /// Bit `i` set when bucket `i` has tag `tag` (`EMPTY` finds the free buckets).
    #[inline]
    fn matching(&self, tag: u8) -> u32 {
        // Plain comparisons over 12 bytes; the compiler turns them into a vector compare.
        let mut bits = 0u32;
        for (i, t) in self.tags.iter().enumerate() {
            bits |= u32::from(*t == tag) << i;
        }
        bits
    }
}

/// The hash table of slots; see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct HashIndex {
    /// A power of two groups, or none before the first insert.
    groups: Vec<Group>,
    /// Buckets in use.
    len: usize,
}

/// The home group of `hash` in a table of `groups` groups (a power of two).
#[inline]
fn home(hash: u64, groups: usize) -> usize {
    (hash as usize) & (groups - 1)
}

/// The tag of `hash`: its top eight bits, kept out of `EMPTY`.
#[inline]
fn tag(hash: u64) -> u8 {
    ((hash >> 56) as u8).clamp(1, 254)
}

impl HashIndex {
    /// An empty table with room for `keys` keys without growing.
    pub fn with_capacity(keys: usize) -> HashIndex {
        let mut table = HashIndex::default();
        if keys > 0 {
            let groups = groups_for(keys);
            table.groups = crate::huge_pages::vec_with_capacity(groups);
            table.groups.resize(groups, EMPTY_GROUP);
        }
        table
    }

    /// Number of keys in the table (the index's consistency check compares it).
    #[cfg(any(test, debug_assertions))]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The most keys the table holds before it must grow.
    pub fn capacity(&self) -> usize {
        self.groups.len() * GROUP_BUCKETS * LOAD_NUMERATOR / LOAD_DENOMINATOR
    }

    /// Whether one more insert needs a larger table ([`HashIndex::with_capacity`] and
    /// re-inserting every key: the table stores no hashes to move entries with).
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// The slot of the key with hash `hash`, as confirmed by `is_key(slot)`.
    #[inline]
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.groups.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mut group_index = home(hash, self.groups.len());
        // Every probe sequence ends: the load limit keeps free buckets in the table.
        loop {
            let group = &self.groups[group_index];
            let mut candidates = group.matching(tag);
            while candidates != 0 {
                let bucket = candidates.trailing_zeros() as usize;
                let slot = group.slots[bucket];
                if is_key(slot) {
                    return Some(slot);
                }
                candidates &= candidates - 1;
            }
            if group.matching(EMPTY) != 0 {
                return None;
            }
            group_index = (group_index + 1) & (self.groups.len() - 1);
        }
    }

    /// Asks the CPU to start loading the home group of `hash`.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if self.groups.is_empty() {
            return;
        }
        let group = &self.groups[home(hash, self.groups.len())];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it never faults and changes no state the program
        // can see, and the address is a group of the table anyway.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>((group as *const Group).cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = group;
    }

    /// Adds a key that is not in the table. The caller grows a full table first.
    pub fn insert(&mut self, hash: u64, slot: u32) {
        assert!(
            !self.is_full(),
            "hash index: insert into a full table (grow it first)"
        );
        let tag = tag(hash);
        let mut group_index = home(hash, self.groups.len());
        loop {
            let group = &mut self.groups[group_index];
            let free = group.matching(EMPTY);
            if free != 0 {
                let bucket = free.trailing_zeros() as usize;
                group.tags[bucket] = tag;
                group.slots[bucket] = slot;
                self.len += 1;
                return;
            }
            group_index = (group_index + 1) & (self.groups.len() - 1);
        }
    }
}

/// The fewest groups that hold `keys` keys within the load limit: a power of two, at
/// least one.
fn groups_for(keys: usize) -> usize {
    (keys * LOAD_DENOMINATOR)
        .div_ceil(GROUP_BUCKETS * LOAD_NUMERATOR)
        .next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_one_cache_line() {
        // The whole point of the layout: a lookup reads one 64-byte line.
        assert_eq!(std::mem::size_of::<Group>(), 64);
        assert_eq!(std::mem::align_of::<Group>(), 64);
    }

    #[test]
    fn the_hash_is_fixed() {
        // Fixed seeds: the same key hashes the same in every process (no runtime RNG).
        assert_eq!(hash_key(b"foo"), hash_key(b"foo"));
        assert_ne!(hash_key(b"foo"), hash_key(b"bar"));
        assert_ne!(hash_key(b""), hash_key(b"\0"));
    }

    #[test]
    fn finds_every_key_and_no_other_through_collisions() {
        // Keys forced into few groups (hashes sharing low bits and tags) are all found by
        // probing past full groups, and absent keys are not.
        let keys = 1000u32;
        let hash_of = |key: u32| u64::from(key % 7) | (u64::from(key % 3) << 56);
        let mut table = HashIndex::default();
        for key in 0..keys {
            if table.is_full() {
                let mut grown = HashIndex::with_capacity((table.capacity() * 2).max(1));
                for existing in 0..key {
                    grown.insert(hash_of(existing), existing);
                }
                table = grown;
            }
            table.insert(hash_of(key), key);
            assert_eq!(table.len(), key as usize + 1);
        }
        for key in 0..keys {
            assert_eq!(table.find(hash_of(key), |slot| slot == key), Some(key));
        }
        for key in keys..keys + 100 {
            assert_eq!(table.find(hash_of(key), |slot| slot == key), None);
        }
    }

    #[test]
    fn sizes_to_the_load_limit_and_doubles() {
        // with_capacity(n) holds n keys within the load limit in as few groups as
        // possible, and a table grown to twice its capacity has twice the groups (a
        // million keys take 8 MiB, not 16).
        for keys in [1usize, 10, 11, 12, 100, 1000, 688_128, 1_000_000] {
            let table = HashIndex::with_capacity(keys);
            let groups = table.groups.len();
            assert!(keys <= table.capacity(), "{keys}");
            assert!(keys * LOAD_DENOMINATOR <= groups * GROUP_BUCKETS * LOAD_NUMERATOR);
            let half_capacity = (groups / 2) * GROUP_BUCKETS * LOAD_NUMERATOR / LOAD_DENOMINATOR;
            assert!(groups == 1 || keys > half_capacity, "{keys}");
            let grown = HashIndex::with_capacity(table.capacity() * 2);
            assert_eq!(grown.groups.len(), groups * 2, "{keys}");
        }
        assert_eq!(
            HashIndex::with_capacity(1_000_000).groups.len() * 64,
            8 << 20
        );
        assert!(HashIndex::default().is_full());
    }
}
