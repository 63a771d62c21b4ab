//! The in-memory index: an ordered B-tree from key to a slot, a hash index from key to the
//! same slot, a slab of per-key version histories, and the arena that holds every
//! version's key and value bytes.
//!
//! The B-tree answers ranges and gives every iteration its key order; the hash index
//! ([`crate::hash_index`]) answers exact keys: point reads and the previous-version lookup
//! of deletes and snapshot decoding (puts take one B-tree descent, which a new key needs
//! anyway). The hash index is derived: rebuilt from the slab when it grows, when
//! compaction removes keys or moves slots, and key by key when a snapshot is decoded.
//!
//! Layout and cost per key (x86_64; measured figures in docs/engine.md):
//!
//! * `BTreeMap<Key, u32>` entry: 16-byte [`Key`] (keys up to 14 bytes inline) + 4-byte slot,
//!   about 35-40 bytes per key once node headers and partly filled nodes are counted.
//! * Hash index: 64-byte groups of 12 buckets (1-byte tag + 4-byte slot), at most 7/8
//!   full, a power of two of groups: 8 MiB for 1M keys (8.4 bytes per key).
//! * [`Record`] in the slab: the latest version inline (56 bytes) plus one pointer to the
//!   older versions (8 bytes, null while the key has a single version): 64 bytes, aligned
//!   to a cache line.
//! * Each version's key and value: packed back to back in the [`Arena`]'s chunks, with
//!   no per-version allocation, header or rounding. The key is there so that the hash
//!   index can confirm a match from the record with the same cache miss that brings the
//!   value; it costs the key's length once per version.
//!
//! A record holds the key's versions in revision order, the newest inline. A tombstone
//! (version 0) ends a generation. Invariants, checked by [`Index::check`] in tests:
//! versions are strictly increasing by revision; no two versions share a main revision;
//! a tombstone is never followed by another tombstone; a record is never empty; every
//! version's arena entry starts with its record's key, and the arena's live bytes are
//! exactly the entries of the retained versions.
//!
//! This module never decides *what* to write; the store does. It only stores and
//! answers "what was this key at revision R".

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::{Bound, Deref};

use crate::arena::{Arena, Place};
use crate::hash_index::{hash_key, HashIndex};
use crate::huge_pages;
use crate::types::{Key, KeyBytes, KeyValue, LeaseId, Revision};

/// The revision fields of a version (everything but its key and value): a put, or a
/// tombstone when `version == 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VersionFields {
    /// Main revision of the write.
    pub main: i64,
    /// Sub-revision of the write inside its txn.
    pub sub: u32,
    /// Create revision of the generation (0 for a tombstone).
    pub create: i64,
    /// Version within the generation; 0 marks a tombstone.
    pub version: i64,
    /// Lease id (0 = none).
    pub lease: i64,
}

impl VersionFields {
    /// The fields of the tombstone that deletes a key at `(main, sub)`.
    pub fn tombstone(main: i64, sub: u32) -> VersionFields {
        VersionFields {
            main,
            sub,
            create: 0,
            version: 0,
            lease: 0,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    pub fn revision(&self) -> (i64, u32) {
        (self.main, self.sub)
    }

    /// The key-value etcd returns for this version of `key` holding `value`.
    pub fn to_key_value(self, key: &[u8], value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: Revision(self.create),
            mod_revision: Revision(self.main),
            version: self.version,
            value: value.to_vec(),
            lease: LeaseId(self.lease),
        }
    }
}

/// One stored version: its fields and where its key and value are in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VersionRec {
    fields: VersionFields,
    key_len: u32,
    value_len: u32,
    /// Where the key, then the value, start in the arena.
    place: Place,
}

impl VersionRec {
    /// Length of the arena entry: key and value.
    #[inline]
    fn entry_len(&self) -> usize {
        self.key_len as usize + self.value_len as usize
    }
}

/// The value of a version about to be written.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NewValue<'v> {
    /// These bytes.
    Bytes(&'v [u8]),
    /// The value of an existing version of the same key (a put with `ignore_value`).
    SameAs(VersionRec),
}

/// A stored version with the arena its bytes are in: what readers of the index get. Its
/// fields read through `Deref` (`version.main`, `version.is_tombstone()`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Version<'a> {
    rec: &'a VersionRec,
    arena: &'a Arena,
}

impl Deref for Version<'_> {
    type Target = VersionFields;

    fn deref(&self) -> &VersionFields {
        &self.rec.fields
    }
}

impl<'a> Version<'a> {
    /// The key and value bytes.
    #[inline]
    fn entry(&self) -> &'a [u8] {
        self.arena.bytes(self.rec.place, self.rec.entry_len())
    }

    /// The value (empty for a tombstone).
    #[inline]
    pub fn value(&self) -> &'a [u8] {
        &self.entry()[self.rec.key_len as usize..]
    }

    /// A new version that keeps this one's value.
    pub fn same_value(&self) -> NewValue<'static> {
        NewValue::SameAs(*self.rec)
    }

    /// The key-value etcd returns for this version of `key`, with or without the value.
    pub fn to_key_value(self, key: &[u8], with_value: bool) -> KeyValue {
        let value = if with_value { self.value() } else { &[] };
        self.rec.fields.to_key_value(key, value)
    }
}

/// Bytes of an entry prefetched at most: entries beyond this are read sequentially
/// anyway, which the hardware prefetcher follows.
const PREFETCH_BYTES_MAX: usize = 512;

/// Hints the CPU to load the cache lines of `bytes` (up to [`PREFETCH_BYTES_MAX`]).
#[inline]
fn prefetch_bytes(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = bytes.len().min(PREFETCH_BYTES_MAX);
        // Every 64 bytes from the start, and the last byte: an entry need not start on
        // a cache line.
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
#[derive(Debug)]
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

    /// Every retained version, oldest first.
    fn versions(&self) -> impl DoubleEndedIterator<Item = &VersionRec> {
        self.older
            .iter()
            .flat_map(|older| older.iter())
            .chain(std::iter::once(&self.latest))
    }

    fn versions_mut(&mut self) -> impl Iterator<Item = &mut VersionRec> {
        self.older
            .iter_mut()
            .flat_map(|older| older.iter_mut())
            .chain(std::iter::once(&mut self.latest))
    }

    /// Number of retained versions.
    fn len(&self) -> usize {
        1 + self.older.as_ref().map_or(0, |older| older.len())
    }

    /// The version visible at `revision`: the newest with `main <= revision`.
    fn at(&self, revision: i64) -> Option<&VersionRec> {
        if self.latest.fields.main <= revision {
            return Some(&self.latest);
        }
        let older = self.older.as_ref()?;
        let position = older.partition_point(|v| v.fields.main <= revision);
        position.checked_sub(1).map(|i| &older[i])
    }

    fn push(&mut self, next: VersionRec) {
        assert!(
            next.fields.revision() > self.latest.fields.revision()
                && next.fields.main > self.latest.fields.main,
            "index: versions of one key must grow by main revision"
        );
        let previous = std::mem::replace(&mut self.latest, next);
        self.older
            .get_or_insert_with(Default::default)
            .push(previous);
    }

    /// Removes versions that compaction at `compact` makes unreachable: everything older
    /// than the newest version at or below `compact`, and that version too when it is a
    /// tombstone strictly below `compact`. Each removed version is passed to `removed`.
    /// Returns false when nothing is left.
    ///
    /// A tombstone exactly at `compact` is kept so that a watcher starting at the compact
    /// revision still sees the delete.
    fn compact(&mut self, compact: i64, removed: &mut impl FnMut(&VersionRec)) -> bool {
        let count = self.len();
        // Position (in oldest-first order) of the newest version at or below `compact`.
        let pivot = if self.latest.fields.main <= compact {
            count - 1
        } else {
            match self.older.as_ref().map_or(0, |older| {
                older.partition_point(|v| v.fields.main <= compact)
            }) {
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
        if pivot_version.fields.is_tombstone() && pivot_version.fields.main < compact {
            drop_count += 1;
        }
        if drop_count == count {
            self.versions().for_each(&mut *removed);
            return false;
        }
        if drop_count == count - 1 {
            if let Some(older) = self.older.take() {
                older.iter().for_each(&mut *removed);
            }
        } else if drop_count > 0 {
            let older = self.older.as_mut().expect("index: dropping older versions");
            older.drain(..drop_count).for_each(|v| removed(&v));
            older.shrink_to_fit();
        }
        true
    }

    /// Whether `version` survives compaction at `compact` (the logical view of
    /// [`Record::compact`], used while physical compaction is deferred).
    fn retained(&self, version: &VersionFields, compact: i64) -> bool {
        if version.main > compact {
            return true;
        }
        match self.at(compact) {
            Some(pivot) => {
                pivot.fields.main == version.main
                    && !(pivot.fields.is_tombstone() && pivot.fields.main < compact)
            }
            None => false,
        }
    }

    #[cfg(any(test, debug_assertions))]
    fn check(&self) {
        let versions: Vec<&VersionRec> = self.versions().collect();
        for pair in versions.windows(2) {
            assert!(
                pair[0].fields.main < pair[1].fields.main,
                "versions out of order"
            );
            assert!(
                !(pair[0].fields.is_tombstone() && pair[1].fields.is_tombstone()),
                "double tombstone"
            );
        }
    }
}

/// A record with the arena its versions' bytes are in: what readers of the index get.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordRef<'a> {
    record: &'a Record,
    arena: &'a Arena,
}

impl<'a> RecordRef<'a> {
    fn version(&self, rec: &'a VersionRec) -> Version<'a> {
        Version {
            rec,
            arena: self.arena,
        }
    }

    /// The newest version (possibly a tombstone).
    pub fn latest(&self) -> Version<'a> {
        self.version(&self.record.latest)
    }

    /// Every retained version, oldest first.
    pub fn versions(&self) -> impl DoubleEndedIterator<Item = Version<'a>> + 'a {
        let arena = self.arena;
        self.record
            .versions()
            .map(move |rec| Version { rec, arena })
    }

    /// The version visible at `revision`: the newest with `main <= revision`.
    pub fn at(&self, revision: i64) -> Option<Version<'a>> {
        self.record.at(revision).map(|rec| self.version(rec))
    }

    /// The live (non-tombstone) version visible at `revision`.
    pub fn live_at(&self, revision: i64) -> Option<Version<'a>> {
        self.at(revision).filter(|v| !v.is_tombstone())
    }

    /// Whether `version` survives compaction at `compact` (the logical view of
    /// compaction, used while physical compaction is deferred).
    pub fn retained(&self, version: &VersionFields, compact: i64) -> bool {
        self.record.retained(version, compact)
    }
}

/// What one version counts for in [`Index::bytes`]: its value plus a fixed overhead for
/// the revision fields and the arena entry.
pub(crate) const VERSION_OVERHEAD_BYTES: usize = 64;

/// The bytes a version counts for in [`Index::bytes`].
fn version_cost(version: &VersionRec) -> usize {
    version.value_len as usize + VERSION_OVERHEAD_BYTES
}

#[cfg(any(test, debug_assertions))]
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
    /// Every retained version's key and value.
    arena: Arena,
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

    fn record_ref<'a>(arena: &'a Arena, record: &'a Option<Record>) -> RecordRef<'a> {
        RecordRef {
            record: record.as_ref().expect("index: tree points at a live slot"),
            arena,
        }
    }

    /// The record of `key`, found through the hash index.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<RecordRef<'_>> {
        let slot = self.slot_of(key)?;
        Some(Self::record_ref(&self.arena, &self.slots[slot as usize]))
    }

    /// The slot of `key`: the hash index proposes slots whose tag matches, and the key
    /// stored in front of the record's newest value confirms one.
    #[inline]
    fn slot_of(&self, key: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        let arena = &self.arena;
        self.hashes.find(hash_key(key), |slot| {
            let latest = &slots[slot as usize]
                .as_ref()
                .expect("index: the hash index points at live slots")
                .latest;
            let entry = arena.bytes(latest.place, latest.entry_len());
            prefetch_bytes(entry);
            &entry[..latest.key_len as usize] == key
        })
    }

    /// The key of a record, from its newest version's arena entry.
    fn key_of<'a>(arena: &'a Arena, record: &Record) -> &'a [u8] {
        arena.bytes(record.latest.place, record.latest.key_len as usize)
    }

    /// Rebuilds the hash index from the slab, with room for `keys` keys.
    ///
    /// The slab, not the tree: records are read in slot order, one after another, and
    /// the keys they point at were mostly written in that order too, so the reads
    /// stream; a tree walk visits its nodes in key order, scattered over the heap.
    fn rebuild_hashes(&mut self, keys: usize) {
        let mut hashes = HashIndex::with_capacity(keys.max(self.tree.len()));
        // Hashes are random, so their groups are: each group is prefetched
        // REBUILD_PREFETCH_DISTANCE keys ahead, so that the misses overlap instead of
        // coming one after another.
        const REBUILD_PREFETCH_DISTANCE: usize = 16;
        let mut pending = [(0u64, 0u32); REBUILD_PREFETCH_DISTANCE];
        let arena = &self.arena;
        let live = self.slots.iter().enumerate().filter_map(|(slot, record)| {
            let key = Self::key_of(arena, record.as_ref()?);
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

    /// Writes a version's key and value to the arena.
    fn store_version(
        arena: &mut Arena,
        key: &[u8],
        fields: VersionFields,
        value: NewValue<'_>,
    ) -> VersionRec {
        let key_len = u32::try_from(key.len()).expect("index: keys are shorter than 4 GiB");
        let (place, value_len) = match value {
            NewValue::Bytes(value) => (
                arena.append(key, value),
                u32::try_from(value.len()).expect("index: values are shorter than 4 GiB"),
            ),
            NewValue::SameAs(other) => {
                assert_eq!(
                    other.key_len, key_len,
                    "index: a value kept from another key"
                );
                (
                    arena.append_copy(key, other.place, other.entry_len()),
                    other.value_len,
                )
            }
        };
        VersionRec {
            fields,
            key_len,
            value_len,
            place,
        }
    }

    /// Appends a version of `key` holding `value` (empty for a tombstone), creating the
    /// key's record if needed.
    pub fn push(&mut self, key: &[u8], fields: VersionFields, value: &[u8]) {
        let slot = self.slot_of(key);
        let version = Self::store_version(&mut self.arena, key, fields, NewValue::Bytes(value));
        match slot {
            Some(slot) => Self::push_onto(&mut self.slots, &mut self.bytes, slot, version),
            None => {
                let slot = Self::fill_slot(
                    &mut self.slots,
                    &mut self.free_slots,
                    &mut self.bytes,
                    key,
                    version,
                );
                let replaced = self.tree.insert(Key::new(key), slot);
                assert!(replaced.is_none(), "index: a new record for a known key");
                self.insert_hash(key, slot);
            }
        }
    }

    /// A put: finds `key` with one B-tree descent, passes its record (None for a new key)
    /// to `write`, and appends the version whose fields and value `write` returns,
    /// creating the record if needed. Returns what `write` returns besides the version.
    ///
    /// Puts go through the B-tree, not the hash index, because a new key needs its
    /// B-tree descent anyway: one descent both finds an existing key and places a new
    /// one, and the hash index's group is prefetched meanwhile so that adding the new
    /// key to it costs no miss of its own.
    pub fn upsert<'v, T>(
        &mut self,
        key: &[u8],
        write: impl FnOnce(Option<RecordRef<'_>>) -> (VersionFields, NewValue<'v>, T),
    ) -> T {
        self.hashes.prefetch(hash_key(key));
        let (slot, result) = match self.tree.entry(Key::new(key)) {
            Entry::Occupied(entry) => {
                let slot = *entry.get();
                let record = Self::record_ref(&self.arena, &self.slots[slot as usize]);
                let (fields, value, result) = write(Some(record));
                let version = Self::store_version(&mut self.arena, key, fields, value);
                Self::push_onto(&mut self.slots, &mut self.bytes, slot, version);
                return result;
            }
            Entry::Vacant(entry) => {
                let (fields, value, result) = write(None);
                let version = Self::store_version(&mut self.arena, key, fields, value);
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

    /// Appends a stored version to the record in `slot`, counting its bytes.
    fn push_onto(slots: &mut [Option<Record>], bytes: &mut usize, slot: u32, version: VersionRec) {
        *bytes += version_cost(&version);
        slots[slot as usize]
            .as_mut()
            .expect("index: the tree and the hash index point at live slots")
            .push(version);
    }

    /// Puts the first version of a new key in a free slot (or a new one), counting its
    /// bytes; the caller adds the slot to the tree and the hash index.
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
                if slots.len() == slots.capacity() {
                    // Grown by hand, so that the new slab is advised for huge pages
                    // before the records are moved in.
                    let mut grown = huge_pages::vec_with_capacity((slots.len() * 2).max(64));
                    grown.append(slots);
                    *slots = grown;
                }
                slots.push(Some(record));
                slot
            }
        }
    }

    /// Adds a key just added to the tree to the hash index, growing it when full.
    fn insert_hash(&mut self, key: &[u8], slot: u32) {
        if self.hashes.is_full() {
            // Doubling from the slab (the table keeps no hashes to move entries with):
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
    ) -> impl DoubleEndedIterator<Item = (&'a Key, RecordRef<'a>)> + 'a {
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
                Self::record_ref(&self.arena, &self.slots[*slot as usize]),
            )
        })
    }

    /// Every key in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, RecordRef<'_>)> {
        self.tree.iter().map(move |(key, slot)| {
            (
                key,
                Self::record_ref(&self.arena, &self.slots[*slot as usize]),
            )
        })
    }

    /// Compacts every record at `compact`, freeing keys left with no version and the
    /// arena chunks left mostly dead. Returns the number of versions removed.
    pub fn compact(&mut self, compact: i64) -> usize {
        let keys_before = self.tree.len();
        let mut removed_versions = 0;
        let mut removed_bytes = 0;
        let slots = &mut self.slots;
        let free_slots = &mut self.free_slots;
        let arena = &mut self.arena;
        self.tree.retain(|key, slot| {
            let record = slots[*slot as usize]
                .as_mut()
                .expect("index: tree points at a live slot");
            if record.older.is_none() && record.latest.fields.main > compact {
                // Only the latest version, newer than `compact`: nothing to drop.
                return true;
            }
            let kept = record.compact(compact, &mut |version: &VersionRec| {
                removed_versions += 1;
                removed_bytes += version_cost(version);
                arena.release(version.place, version.entry_len());
            });
            if !kept {
                removed_bytes += key.as_bytes().len();
                slots[*slot as usize] = None;
                free_slots.push(*slot);
            }
            kept
        });
        self.bytes -= removed_bytes;
        if self.arena.has_sparse_chunks() {
            let slots = &mut self.slots;
            self.arena.relocate(|moved| {
                for version in slots.iter_mut().flatten().flat_map(Record::versions_mut) {
                    version.place = moved(version.place, version.entry_len());
                }
            });
        }
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
        let mut dense = huge_pages::vec_with_capacity(self.tree.len());
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
        let mut entry_bytes = 0;
        for (key, slot) in &self.tree {
            let record = self.slots[*slot as usize]
                .as_ref()
                .expect("tree points at a free slot");
            record.check();
            bytes += key.as_bytes().len() + record_cost(record);
            for version in record.versions() {
                let entry = self.arena.bytes(version.place, version.entry_len());
                assert_eq!(
                    &entry[..version.key_len as usize],
                    key.as_bytes(),
                    "a version holds another key than its record's"
                );
                entry_bytes += entry.len();
            }
            live += 1;
        }
        assert_eq!(bytes, self.bytes, "byte count drifted");
        assert_eq!(
            entry_bytes,
            self.arena.live_bytes(),
            "the arena's live bytes are not the retained versions' entries"
        );
        self.arena.check(
            self.slots
                .iter()
                .flatten()
                .flat_map(Record::versions)
                .map(|version| (version.place, version.entry_len())),
        );
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
        // bytes (fields, lengths and arena place), and a slab entry is one 64-byte line.
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
            index.push(&key(i), fields(2), b"v");
        }
        for i in 0..2900 {
            index.push(&key(i), VersionFields::tombstone(3, i as u32), b"");
        }
        index.check();
        index.compact(4);
        assert_eq!(index.slots.len(), 100, "the slab was rebuilt densely");
        assert!(index.free_slots.is_empty());
        index.check();
        for i in 0..3000 {
            let found = index
                .get(&key(i))
                .map(|record| record.latest().value().to_vec());
            assert_eq!(found, (i >= 2900).then(|| b"v".to_vec()), "key {i}");
        }
        index.upsert(&key(7), |record| {
            assert!(record.is_none());
            (fields(5), NewValue::Bytes(b"again"), ())
        });
        index.check();
        assert_eq!(index.get(&key(7)).expect("put").latest().value(), b"again");
    }

    #[test]
    fn compaction_returns_the_arena_chunks_of_dead_versions_and_moves_the_rest() {
        // Most keys are written twice; compaction after the second write leaves their
        // first versions dead, so their chunks are freed or emptied into the open one,
        // and every value still reads back.
        let fields = |main: i64| VersionFields {
            main,
            sub: 0,
            create: 2,
            version: main - 1,
            lease: 0,
        };
        let key = |i: usize| format!("key-{i:05}").into_bytes();
        let value = |i: usize, round: u8| vec![round.wrapping_add(i as u8); 200];
        let mut index = Index::default();
        for i in 0..20_000 {
            index.push(&key(i), fields(2), &value(i, 1));
        }
        // Second versions of three keys in four: the first chunks are left a quarter
        // live, which is sparse enough to be emptied.
        let rewritten = |i: usize| i % 4 != 0;
        for i in (0..20_000).filter(|&i| rewritten(i)) {
            index.push(&key(i), fields(3), &value(i, 2));
        }
        index.check();
        let reserved = index.arena.reserved_bytes();
        assert_eq!(
            index.compact(3),
            15_000,
            "the rewritten keys' first versions"
        );
        index.check();
        assert!(
            index.arena.reserved_bytes() < reserved * 3 / 4,
            "compaction returned memory: {} of {reserved} bytes still reserved",
            index.arena.reserved_bytes()
        );
        for i in 0..20_000 {
            let record = index.get(&key(i)).expect("every key is kept");
            let round = if rewritten(i) { 2 } else { 1 };
            assert_eq!(record.latest().value(), &value(i, round)[..], "key {i}");
            assert_eq!(record.versions().count(), 1, "key {i}");
        }
    }
}
