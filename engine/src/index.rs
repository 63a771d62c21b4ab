//! The in-memory index: an ordered B-tree from key to a slot, a hash index from key to the
//! same slot, and a slab of per-key version histories holding the values themselves.
//!
//! The B-tree answers ranges and gives every iteration its key order; the hash index
//! ([`crate::hash_index`]) answers exact keys: point reads and the previous-version lookup
//! of deletes and snapshot decoding (puts take one B-tree descent, which a new key needs
//! anyway). The hash index is derived: rebuilt from the slab when it grows, when
//! compaction removes keys or moves slots, and key by key when a snapshot is decoded.
//!
//! Layout and cost per key (x86_64, glibc malloc; measured figures in docs/engine.md):
//!
//! * `BTreeMap<Key, u32>` entry: 24-byte [`Key`] (keys up to 22 bytes inline) + 4-byte slot,
//!   about 40-50 bytes per key once node headers and partly filled nodes are counted.
//! * Hash index: 64-byte groups of 12 buckets (1-byte tag + 4-byte slot), at most 7/8
//!   full, a power of two of groups: 8 MiB for 1M keys (8.4 bytes per key).
//! * [`Record`] in the slab: the latest version inline (56 bytes) plus one pointer to the
//!   older versions (8 bytes, null while the key has a single version): 64 bytes, aligned
//!   to a cache line.
//! * Each version's key and value: one heap allocation of their joint length (+8 to 16
//!   bytes of malloc header). The key is there so that the hash index can confirm a match
//!   from the record; it costs the key's length once per version.
//!
//! A record holds the key's versions in revision order, the newest inline. A tombstone
//! (version 0) ends a generation. Invariants, checked by [`Record::check`] in tests:
//! versions are strictly increasing by revision; no two versions share a main revision;
//! a tombstone is never followed by another tombstone; a record is never empty.
//!
//! This module never decides *what* to write; the store does. It only stores and
//! answers "what was this key at revision R".

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::hash_index::{hash_key, HashIndex};
use crate::types::{Key, KeyBytes, KeyValue, LeaseId, Revision};

/// One version of a key: a put, or a tombstone when `version == 0`.
///
/// The version carries its key in front of its value, in one allocation: the hash index
/// confirms a key by comparing the bytes its record holds, and keeping them beside the
/// value costs no extra allocation, no extra pointer and no extra cache miss (a read goes
/// on to copy the value from the same allocation). `key_len` fills what was padding, so a
/// version is 56 bytes, as with the value alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VersionRec {
    /// Main revision of the write.
    pub main: i64,
    /// Create revision of the generation (0 for a tombstone).
    pub create: i64,
    /// Version within the generation; 0 marks a tombstone.
    pub version: i64,
    /// Lease id (0 = none).
    pub lease: i64,
    /// Sub-revision of the write inside its txn.
    pub sub: u32,
    /// Length of the key at the front of `key_and_value`.
    key_len: u32,
    /// The key, then the value (empty for a tombstone).
    key_and_value: Box<[u8]>,
}

/// The revision fields of a new version (everything but its key and value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VersionFields {
    pub main: i64,
    pub sub: u32,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
}

impl VersionRec {
    /// A version of `key` holding `value`.
    pub fn new(key: &[u8], value: &[u8], fields: VersionFields) -> VersionRec {
        let key_len = u32::try_from(key.len()).expect("index: keys are shorter than 4 GiB");
        let mut key_and_value = Vec::with_capacity(key.len() + value.len());
        key_and_value.extend_from_slice(key);
        key_and_value.extend_from_slice(value);
        VersionRec {
            main: fields.main,
            create: fields.create,
            version: fields.version,
            lease: fields.lease,
            sub: fields.sub,
            key_len,
            key_and_value: key_and_value.into_boxed_slice(),
        }
    }

    /// The tombstone that deletes `key` at `(main, sub)`.
    pub fn tombstone(key: &[u8], main: i64, sub: u32) -> VersionRec {
        let fields = VersionFields {
            main,
            sub,
            create: 0,
            version: 0,
            lease: 0,
        };
        VersionRec::new(key, &[], fields)
    }

    /// The key this is a version of.
    #[inline]
    pub fn key(&self) -> &[u8] {
        &self.key_and_value[..self.key_len as usize]
    }

    /// The value (empty for a tombstone).
    #[inline]
    pub fn value(&self) -> &[u8] {
        &self.key_and_value[self.key_len as usize..]
    }

    /// Asks the CPU to start loading the key and value, so that the misses overlap with
    /// each other and with the work before they are read (a point read compares the key,
    /// then copies the whole value).
    #[inline]
    pub fn prefetch(&self) {
        prefetch_bytes(&self.key_and_value);
    }

    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    pub fn revision(&self) -> (i64, u32) {
        (self.main, self.sub)
    }

    pub fn to_key_value(&self, key: &[u8], with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: Revision(self.create),
            mod_revision: Revision(self.main),
            version: self.version,
            value: if with_value {
                self.value().to_vec()
            } else {
                Vec::new()
            },
            lease: LeaseId(self.lease),
        }
    }
}

/// Bytes of a value prefetched at most: values beyond this are read sequentially anyway,
/// which the hardware prefetcher follows.
const PREFETCH_BYTES_MAX: usize = 512;

/// Hints the CPU to load the cache lines of `bytes` (up to [`PREFETCH_BYTES_MAX`]).
#[inline]
fn prefetch_bytes(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = bytes.len().min(PREFETCH_BYTES_MAX);
        // Every 64 bytes from the start, and the last byte: the allocation need not
        // start on a cache line.
        let offsets = (0..end).step_by(64).chain(end.checked_sub(1));
        for offset in offsets {
            // SAFETY: a prefetch is a hint: it never faults and changes no state the
            // program can see, and the address is inside `bytes` anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(offset).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// All retained versions of one key, newest inline.
///
/// Aligned to a cache line, which it fills exactly: in the slab every record is then one
/// line, not the two it straddled when the slab started 16 bytes into a line (malloc's
/// header), and a point read takes one miss for it.
#[derive(Clone, Debug)]
#[repr(align(64))]
pub(crate) struct Record {
    latest: VersionRec,
    // Boxed on purpose: 8 bytes per record while a key has one version (the common
    // case) instead of the 24 of an empty Vec; see the module docs.
    #[allow(clippy::box_collection)]
    older: Option<Box<Vec<VersionRec>>>,
}

impl Record {
    fn new(first: VersionRec) -> Record {
        Record {
            latest: first,
            older: None,
        }
    }

    /// The newest version (possibly a tombstone).
    pub fn latest(&self) -> &VersionRec {
        &self.latest
    }

    /// Every retained version, oldest first.
    pub fn versions(&self) -> impl DoubleEndedIterator<Item = &VersionRec> {
        self.older
            .iter()
            .flat_map(|older| older.iter())
            .chain(std::iter::once(&self.latest))
    }

    /// Number of retained versions.
    pub fn len(&self) -> usize {
        1 + self.older.as_ref().map_or(0, |older| older.len())
    }

    /// The version visible at `revision`: the newest with `main <= revision`.
    pub fn at(&self, revision: i64) -> Option<&VersionRec> {
        if self.latest.main <= revision {
            return Some(&self.latest);
        }
        let older = self.older.as_ref()?;
        let position = older.partition_point(|v| v.main <= revision);
        position.checked_sub(1).map(|i| &older[i])
    }

    /// The live (non-tombstone) version visible at `revision`.
    pub fn live_at(&self, revision: i64) -> Option<&VersionRec> {
        self.at(revision).filter(|v| !v.is_tombstone())
    }

    pub fn push(&mut self, next: VersionRec) {
        assert!(
            next.revision() > self.latest.revision() && next.main > self.latest.main,
            "index: versions of one key must grow by main revision"
        );
        let previous = std::mem::replace(&mut self.latest, next);
        self.older
            .get_or_insert_with(Default::default)
            .push(previous);
    }

    /// Removes versions that compaction at `compact` makes unreachable: everything older
    /// than the newest version at or below `compact`, and that version too when it is a
    /// tombstone strictly below `compact`. Returns false when nothing is left.
    ///
    /// A tombstone exactly at `compact` is kept so that a watcher starting at the compact
    /// revision still sees the delete.
    pub fn compact(&mut self, compact: i64) -> bool {
        let count = self.len();
        // Position (in oldest-first order) of the newest version at or below `compact`.
        let pivot = if self.latest.main <= compact {
            count - 1
        } else {
            match self
                .older
                .as_ref()
                .map_or(0, |older| older.partition_point(|v| v.main <= compact))
            {
                0 => return true,
                after => after - 1,
            }
        };
        let pivot_version = if pivot == count - 1 {
            &self.latest
        } else {
            &self
                .older
                .as_ref()
                .expect("index: pivot below latest implies older versions")[pivot]
        };
        let mut drop_count = pivot;
        if pivot_version.is_tombstone() && pivot_version.main < compact {
            drop_count += 1;
        }
        if drop_count == count {
            return false;
        }
        if drop_count == count - 1 {
            self.older = None;
        } else if drop_count > 0 {
            let older = self.older.as_mut().expect("index: dropping older versions");
            older.drain(..drop_count);
            older.shrink_to_fit();
        }
        true
    }

    /// Whether `version` survives compaction at `compact` (the logical view of
    /// [`Record::compact`], used while physical compaction is deferred).
    pub fn retained(&self, version: &VersionRec, compact: i64) -> bool {
        if version.main > compact {
            return true;
        }
        match self.at(compact) {
            Some(pivot) => {
                pivot.main == version.main && !(pivot.is_tombstone() && pivot.main < compact)
            }
            None => false,
        }
    }

    #[cfg(any(test, debug_assertions))]
    pub fn check(&self) {
        let versions: Vec<&VersionRec> = self.versions().collect();
        for pair in versions.windows(2) {
            assert!(pair[0].main < pair[1].main, "versions out of order");
            assert!(
                !(pair[0].is_tombstone() && pair[1].is_tombstone()),
                "double tombstone"
            );
        }
    }
}

/// What one version counts for in [`Index::bytes`]: its value plus a fixed overhead for
/// the revision fields and the allocation.
pub(crate) const VERSION_OVERHEAD_BYTES: usize = 64;

/// The bytes a version counts for in [`Index::bytes`].
pub(crate) fn version_cost(version: &VersionRec) -> usize {
    version.value().len() + VERSION_OVERHEAD_BYTES
}

fn record_cost(record: &Record) -> usize {
    record.versions().map(version_cost).sum()
}

/// The ordered key index over a slab of records, with a hash index for exact keys.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Every key in order: ranges, and the order of iteration everywhere.
    tree: BTreeMap<Key, u32>,
    /// The same keys by hash: point reads and puts. Derived from `tree` (rebuilt, never
    /// serialized); holds exactly the slots `tree` holds.
    hashes: HashIndex,
    slots: Vec<Option<Record>>,
    free_slots: Vec<u32>,
    /// Key bytes plus the cost of every retained version, kept up to date on every
    /// change so that reading it is O(1) (the quota check reads it on every write).
    bytes: usize,
}

/// Where a range ends.
#[derive(Clone, Debug)]
pub(crate) enum RangeEnd {
    /// Only the start key.
    Single,
    /// Every key >= start.
    Unbounded,
    /// Keys < this.
    Before(Vec<u8>),
}

impl RangeEnd {
    /// Decodes etcd's `range_end` convention: empty = single key, `\0` = unbounded.
    pub fn from_etcd(range_end: &[u8]) -> RangeEnd {
        match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            end => RangeEnd::Before(end.to_vec()),
        }
    }

    /// Whether `key` lies in `[start, self)`.
    pub fn contains(&self, start: &[u8], key: &[u8]) -> bool {
        match self {
            RangeEnd::Single => key == start,
            RangeEnd::Unbounded => key >= start,
            RangeEnd::Before(end) => key >= start && key < end.as_slice(),
        }
    }
}

impl Index {
    /// Number of keys with at least one retained version.
    pub fn key_count(&self) -> usize {
        self.tree.len()
    }

    /// Key bytes plus [`version_cost`] of every retained version.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The record of `key`, found through the hash index.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&Record> {
        let slot = self.slot_of(key)?;
        self.slots[slot as usize].as_ref()
    }

    /// The record of `key` to push a version onto, found through the hash index.
    #[inline]
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Record> {
        let slot = self.slot_of(key)?;
        self.slots[slot as usize].as_mut()
    }

    /// The slot of `key`: the hash index proposes slots whose tag matches, and the key
    /// stored with the record's newest version confirms one.
    #[inline]
    fn slot_of(&self, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.hashes.find(hash_key(key), |slot| {
            let latest = slots[slot as usize]
                .as_ref()
                .expect("index: the hash index points at live slots")
                .latest();
            latest.prefetch();
            latest.key() == key
        })
    }

    /// Rebuilds the hash index from the slab, with room for `keys` keys.
    ///
    /// The slab, not the tree: records are read in slot order, one after another, and
    /// the keys they point at were mostly allocated in that order too, so the reads
    /// stream; a tree walk visits its nodes in key order, scattered over the heap.
    fn rebuild_hashes(&mut self, keys: usize) {
        let mut hashes = HashIndex::with_capacity(keys.max(self.tree.len()));
        // Hashes are random, so their groups are: each group is prefetched
        // REBUILD_PREFETCH_DISTANCE keys ahead, so that the misses overlap instead of
        // coming one after another.
        const REBUILD_PREFETCH_DISTANCE: usize = 16;
        let mut pending = [(0u64, 0u32); REBUILD_PREFETCH_DISTANCE];
        let live = self.slots.iter().enumerate().filter_map(|(slot, record)| {
            let key = record.as_ref()?.latest().key();
            Some((hash_key(key), slot as u32))
        });
        let mut count = 0;
        for (i, (hash, slot)) in live.enumerate() {
            hashes.prefetch(hash);
            let entry = &mut pending[i % REBUILD_PREFETCH_DISTANCE];
            if i >= REBUILD_PREFETCH_DISTANCE {
                hashes.insert(entry.0, entry.1);
            }
            *entry = (hash, slot);
            count = i + 1;
        }
        for i in count.saturating_sub(REBUILD_PREFETCH_DISTANCE)..count {
            let (hash, slot) = pending[i % REBUILD_PREFETCH_DISTANCE];
            hashes.insert(hash, slot);
        }
        assert_eq!(
            count,
            self.tree.len(),
            "index: the slab and the tree hold the same keys"
        );
        self.hashes = hashes;
    }

    /// Appends a version to `key`, creating its record if needed.
    pub fn push(&mut self, key: &[u8], version: VersionRec) {
        match self.get_mut(key) {
            Some(record) => {
                let cost = version_cost(&version);
                record.push(version);
                self.bytes += cost;
            }
            None => self.insert_new(key, version),
        }
    }

    /// Creates the record of a key that has none.
    pub fn insert_new(&mut self, key: &[u8], version: VersionRec) {
        let slot = self.new_slot(key, version);
        let replaced = self.tree.insert(Key::new(key), slot);
        assert!(
            replaced.is_none(),
            "index: insert_new of a key that has a record"
        );
        self.insert_hash(key, slot);
    }

    /// A put: finds `key` with one B-tree descent, passes its record (None for a new key)
    /// to `write`, and appends the version `write` returns, creating the record if
    /// needed. Returns what `write` returns besides the version.
    ///
    /// Puts go through the B-tree, not the hash index, because a new key needs its
    /// B-tree descent anyway: one descent both finds an existing key and places a new
    /// one, and the hash index's group is prefetched meanwhile so that adding the new
    /// key to it costs no miss of its own.
    pub fn upsert<T>(
        &mut self,
        key: &[u8],
        write: impl FnOnce(Option<&Record>) -> (VersionRec, T),
    ) -> T {
        self.hashes.prefetch(hash_key(key));
        let (slot, result) = match self.tree.entry(Key::new(key)) {
            Entry::Occupied(entry) => {
                let record = self.slots[*entry.get() as usize]
                    .as_mut()
                    .expect("index: tree points at a live slot");
                let (version, result) = write(Some(record));
                self.bytes += version_cost(&version);
                record.push(version);
                return result;
            }
            Entry::Vacant(entry) => {
                let (version, result) = write(None);
                // The slab and the tree are separate fields: the entry's borrow of the
                // tree does not stop the slot from being filled first.
                let slot = Self::fill_slot(
                    &mut self.slots,
                    &mut self.free_slots,
                    &mut self.bytes,
                    key,
                    version,
                );
                entry.insert(slot);
                (slot, result)
            }
        };
        self.insert_hash(key, slot);
        result
    }

    /// Puts the first version of a new key in a free slot (or a new one), counting its
    /// bytes; the caller adds the slot to the tree and the hash index.
    fn new_slot(&mut self, key: &[u8], version: VersionRec) -> u32 {
        Self::fill_slot(
            &mut self.slots,
            &mut self.free_slots,
            &mut self.bytes,
            key,
            version,
        )
    }

    fn fill_slot(
        slots: &mut Vec<Option<Record>>,
        free_slots: &mut Vec<u32>,
        bytes: &mut usize,
        key: &[u8],
        version: VersionRec,
    ) -> u32 {
        *bytes += key.len() + version_cost(&version);
        let record = Record::new(version);
        match free_slots.pop() {
            Some(slot) => {
                slots[slot as usize] = Some(record);
                slot
            }
            None => {
                let slot = u32::try_from(slots.len()).expect("index: more than 2^32 keys");
                slots.push(Some(record));
                slot
            }
        }
    }

    /// Adds a key just added to the tree to the hash index, growing it when full.
    fn insert_hash(&mut self, key: &[u8], slot: u32) {
        if self.hashes.is_full() {
            // Doubling from the tree (the table keeps no hashes to move entries with):
            // O(keys) every time the key count doubles, so O(1) per insert.
            self.rebuild_hashes(self.hashes.capacity() * 2);
        } else {
            self.hashes.insert(hash_key(key), slot);
        }
    }

    /// Visits `(key, record)` for every key in `[start, end)` in key order.
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: &RangeEnd,
    ) -> impl DoubleEndedIterator<Item = (&'a Key, &'a Record)> + 'a {
        let upper: Bound<&KeyBytes> = match end {
            RangeEnd::Single => Bound::Included(KeyBytes::new(start)),
            RangeEnd::Unbounded => Bound::Unbounded,
            RangeEnd::Before(end) => Bound::Excluded(KeyBytes::new(end)),
        };
        let empty = match end {
            RangeEnd::Before(end) => end.as_slice() <= start,
            _ => false,
        };
        let iter = if empty {
            None
        } else {
            Some(
                self.tree
                    .range::<KeyBytes, _>((Bound::Included(KeyBytes::new(start)), upper)),
            )
        };
        iter.into_iter().flatten().map(move |(key, slot)| {
            (
                key,
                self.slots[*slot as usize]
                    .as_ref()
                    .expect("index: tree points at a live slot"),
            )
        })
    }

    /// Every key in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Record)> {
        self.tree.iter().map(move |(key, slot)| {
            (
                key,
                self.slots[*slot as usize]
                    .as_ref()
                    .expect("index: tree points at a live slot"),
            )
        })
    }

    /// Compacts every record at `compact`, freeing keys left with no version.
    /// Returns the number of versions removed.
    pub fn compact(&mut self, compact: i64) -> usize {
        let keys_before = self.tree.len();
        let mut removed_versions = 0;
        let mut removed_bytes = 0;
        let slots = &mut self.slots;
        let free_slots = &mut self.free_slots;
        self.tree.retain(|key, slot| {
            let record = slots[*slot as usize]
                .as_mut()
                .expect("index: tree points at a live slot");
            let before = record.len();
            let before_bytes = if record.older.is_some() || record.latest.main <= compact {
                record_cost(record)
            } else {
                // Only the latest version, newer than `compact`: nothing to drop.
                return true;
            };
            if record.compact(compact) {
                removed_versions += before - record.len();
                removed_bytes += before_bytes - record_cost(record);
                true
            } else {
                removed_versions += before;
                removed_bytes += before_bytes + key.as_bytes().len();
                slots[*slot as usize] = None;
                free_slots.push(*slot);
                false
            }
        });
        self.bytes -= removed_bytes;
        let mut slots_moved = false;
        if self.free_slots.len() > self.slots.len() / 2 && self.free_slots.len() > 1024 {
            self.shrink_slots();
            slots_moved = true;
        }
        if slots_moved || self.tree.len() != keys_before {
            // Keys went away (and, with a slab rebuild, slots moved): the table removes
            // nothing one by one, so it is rebuilt, sized for the keys left.
            self.rebuild_hashes(self.tree.len());
        }
        removed_versions
    }

    /// Rebuilds the slab densely when compaction has left most of it free, so that
    /// memory really returns.
    fn shrink_slots(&mut self) {
        let mut dense = Vec::with_capacity(self.tree.len());
        for slot in self.tree.values_mut() {
            let record = self.slots[*slot as usize]
                .take()
                .expect("index: tree points at a live slot");
            *slot = dense.len() as u32;
            dense.push(Some(record));
        }
        self.slots = dense;
        self.free_slots = Vec::new();
    }

    #[cfg(any(test, debug_assertions))]
    pub fn check(&self) {
        let mut live = 0;
        let mut bytes = 0;
        for (key, slot) in &self.tree {
            let record = self.slots[*slot as usize]
                .as_ref()
                .expect("tree points at a free slot");
            record.check();
            bytes += key.as_bytes().len() + record_cost(record);
            live += 1;
        }
        assert_eq!(bytes, self.bytes, "byte count drifted");
        assert_eq!(
            self.hashes.len(),
            live,
            "hash index holds other keys than the tree"
        );
        for (key, slot) in &self.tree {
            assert_eq!(
                self.slot_of(key.as_bytes()),
                Some(*slot),
                "hash index disagrees with the tree"
            );
            let record = self.slots[*slot as usize].as_ref().expect("checked above");
            assert!(
                record.versions().all(|v| v.key() == key.as_bytes()),
                "a version holds another key than its record's"
            );
        }
        assert_eq!(
            live + self.free_slots.len(),
            self.slots.len(),
            "slab leaks slots"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_cache_line() {
        // The cost per key in docs/engine.md counts on these sizes: a version is 56
        // bytes with its key beside the value, and a slab entry is one 64-byte line.
        assert_eq!(std::mem::size_of::<VersionRec>(), 56);
        assert_eq!(std::mem::size_of::<Option<Record>>(), 64);
        assert_eq!(std::mem::align_of::<Option<Record>>(), 64);
    }

    #[test]
    fn compaction_that_rebuilds_the_slab_rebuilds_the_hash_index() {
        // Freeing most keys renumbers every slot; the hash index follows, and keys added
        // afterwards go to the new slots.
        let fields = |main: i64| VersionFields {
            main,
            sub: 0,
            create: main,
            version: 1,
            lease: 0,
        };
        let key = |i: usize| format!("key-{i}").into_bytes();
        let mut index = Index::default();
        for i in 0..3000 {
            index.insert_new(&key(i), VersionRec::new(&key(i), b"v", fields(2)));
        }
        for i in 0..2900 {
            index.push(&key(i), VersionRec::tombstone(&key(i), 3, i as u32));
        }
        index.check();
        index.compact(4);
        assert_eq!(index.slots.len(), 100, "the slab was rebuilt densely");
        assert!(index.free_slots.is_empty());
        index.check();
        for i in 0..3000 {
            let found = index
                .get(&key(i))
                .map(|record| record.latest().key().to_vec());
            assert_eq!(found, (i >= 2900).then(|| key(i)), "key {i}");
        }
        index.upsert(&key(7), |record| {
            assert!(record.is_none());
            (VersionRec::new(&key(7), b"again", fields(5)), ())
        });
        index.check();
        assert_eq!(index.get(&key(7)).expect("put").latest().value(), b"again");
    }
}
