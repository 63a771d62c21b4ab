//! The in-memory index: an ordered B-tree from key to a slot, and a slab of per-key
//! version histories holding the values themselves.
//!
//! Layout and cost per key (x86_64, glibc malloc; measured figures in docs/engine.md):
//!
//! * `BTreeMap<Key, u32>` entry: 24-byte [`Key`] (keys up to 22 bytes inline) + 4-byte slot,
//!   about 40-50 bytes per key once node headers and partly filled nodes are counted.
//! * [`Record`] in the slab: the latest version inline (56 bytes) plus one pointer to the
//!   older versions (8 bytes, null while the key has a single version): 64 bytes.
//! * The value: one heap allocation of its own length (+8 to 16 bytes of malloc header).
//!
//! A record holds the key's versions in revision order, the newest inline. A tombstone
//! (version 0) ends a generation. Invariants, checked by [`Record::check`] in tests:
//! versions are strictly increasing by revision; no two versions share a main revision;
//! a tombstone is never followed by another tombstone; a record is never empty.
//!
//! This module never decides *what* to write; the store does. It only stores and
//! answers "what was this key at revision R".

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::types::{Key, KeyBytes, KeyValue, LeaseId, Revision};

/// One version of a key: a put, or a tombstone when `version == 0`.
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
    /// The value (empty for a tombstone).
    pub value: Box<[u8]>,
}

impl VersionRec {
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
                self.value.to_vec()
            } else {
                Vec::new()
            },
            lease: LeaseId(self.lease),
        }
    }
}

/// All retained versions of one key, newest inline.
#[derive(Clone, Debug)]
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
    version.value.len() + VERSION_OVERHEAD_BYTES
}

fn record_cost(record: &Record) -> usize {
    record.versions().map(version_cost).sum()
}

/// The ordered key index over a slab of records.
#[derive(Debug, Default)]
pub(crate) struct Index {
    tree: BTreeMap<Key, u32>,
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

    /// Records that a version was pushed onto a record found with [`Index::get_mut`].
    pub fn note_pushed(&mut self, version_bytes: usize) {
        self.bytes += version_bytes;
    }

    pub fn get(&self, key: &[u8]) -> Option<&Record> {
        let slot = *self.tree.get(KeyBytes::new(key))?;
        self.slots[slot as usize].as_ref()
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut Record> {
        let slot = *self.tree.get(KeyBytes::new(key))?;
        self.slots[slot as usize].as_mut()
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
        self.bytes += key.len() + version_cost(&version);
        let record = Record::new(version);
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(record);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len()).expect("index: more than 2^32 keys");
                self.slots.push(Some(record));
                slot
            }
        };
        let replaced = self.tree.insert(Key::new(key), slot);
        assert!(
            replaced.is_none(),
            "index: insert_new of a key that has a record"
        );
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
        if self.free_slots.len() > self.slots.len() / 2 && self.free_slots.len() > 1024 {
            self.shrink_slots();
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
            live + self.free_slots.len(),
            self.slots.len(),
            "slab leaks slots"
        );
    }
}
