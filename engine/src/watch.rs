//! The watch hub: watchers over a key or a range, fed live as writes apply, falling back
//! to catching up from MVCC history when they start in the past or fall behind.
//!
//! Like etcd's synced/unsynced groups, a watcher is in one of two states:
//!
//! * **synced**: every event up to the store's current revision has been put in its
//!   buffer; new writes append to the buffer as they apply.
//! * **catching up**: events from `next_revision` on have not been buffered yet; a poll
//!   reads them from the index, a batch at a time, until it reaches the current
//!   revision and the watcher becomes synced again.
//!
//! A synced watcher whose buffer reaches [`WATCH_BUFFER_EVENTS_MAX`] drops back to catching
//! up at the revision that did not fit (never splitting one revision's events), so a
//! slow reader costs memory bounded by the buffer and never blocks a write.
//!
//! Events reach each watcher in revision order, each exactly once: buffered events are
//! all below `next_revision` and catch-up starts at `next_revision`. A catching-up
//! watcher whose `next_revision` falls below the compact revision is cancelled with the
//! compact revision, as etcd does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::index::{Index, RangeEnd, Version, VersionFields};
use crate::types::{Event, EventKind, KeyValue, Revision};

/// Events a synced watcher may hold before it falls back to catching up.
pub const WATCH_BUFFER_EVENTS_MAX: usize = 1024;

/// Identifies a watcher within one store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatcherId(pub u64);

/// What a watcher asks for (etcd's `WatchCreateRequest`, less the stream concerns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    /// The key, or first key of the range.
    pub key: Vec<u8>,
    /// End of the range as in a range request (empty = single key, `\0` = all >= key).
    pub range_end: Vec<u8>,
    /// First revision to report (0 = from the next write on).
    pub start_revision: Revision,
    /// Do not report puts.
    pub no_put: bool,
    /// Do not report deletes.
    pub no_delete: bool,
    /// Report the previous key-value with each event.
    pub prev_kv: bool,
}

/// The outcome of polling a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchPoll {
    /// Events in revision order (possibly none if nothing happened yet).
    Events(Vec<Event>),
    /// The watcher needed history that compaction removed; it has been cancelled.
    Compacted {
        /// The store's compact revision.
        compact_revision: Revision,
    },
}

#[derive(Debug)]
struct Watcher {
    request: WatchRequest,
    end: RangeEnd,
    buffer: VecDeque<Event>,
    /// None while synced; otherwise the first revision not yet buffered.
    next_revision: Option<i64>,
    /// Revisions below this are never reported (a start revision in the future).
    min_revision: i64,
}

impl Watcher {
    fn wants(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => !self.request.no_put,
            EventKind::Delete => !self.request.no_delete,
        }
    }
}

/// One change made by a write, as the hub needs it to build events.
pub(crate) struct Change<'a> {
    pub key: &'a [u8],
    /// The new version and its value (empty for a tombstone).
    pub version: &'a VersionFields,
    pub value: &'a [u8],
    /// The live version it replaces, with its value.
    pub previous: Option<(VersionFields, &'a [u8])>,
}

/// All watchers of one store.
#[derive(Debug, Default)]
pub(crate) struct WatchHub {
    watchers: BTreeMap<WatcherId, Watcher>,
    /// Single-key watchers by key.
    by_key: BTreeMap<Vec<u8>, BTreeSet<WatcherId>>,
    /// Range watchers (scanned on every write; fine for the tens of prefix watchers a
    /// store sees, see docs/engine.md).
    ranges: BTreeSet<WatcherId>,
    /// Watchers with something to deliver.
    ready: BTreeSet<WatcherId>,
    next_id: u64,
}

impl WatchHub {
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn create(&mut self, request: WatchRequest, current: i64) -> WatcherId {
        self.next_id += 1;
        let id = WatcherId(self.next_id);
        let start = request.start_revision.0;
        let (next_revision, min_revision) = if start == 0 || start > current {
            (None, start.max(current + 1))
        } else {
            (Some(start), start)
        };
        let end = RangeEnd::from_etcd(&request.range_end);
        if matches!(end, RangeEnd::Single) {
            self.by_key
                .entry(request.key.clone())
                .or_default()
                .insert(id);
        } else {
            self.ranges.insert(id);
        }
        if next_revision.is_some() {
            self.ready.insert(id);
        }
        let watcher = Watcher {
            request,
            end,
            buffer: VecDeque::new(),
            next_revision,
            min_revision,
        };
        self.watchers.insert(id, watcher);
        id
    }

    pub fn cancel(&mut self, id: WatcherId) -> bool {
        let Some(watcher) = self.watchers.remove(&id) else {
            return false;
        };
        if matches!(watcher.end, RangeEnd::Single) {
            if let Some(ids) = self.by_key.get_mut(&watcher.request.key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_key.remove(&watcher.request.key);
                }
            }
        } else {
            self.ranges.remove(&id);
        }
        self.ready.remove(&id);
        true
    }

    pub fn is_synced(&self, id: WatcherId) -> Option<bool> {
        self.watchers.get(&id).map(|w| w.next_revision.is_none())
    }

    /// Watchers with events to deliver or history to catch up on, in id order.
    pub fn take_ready(&mut self) -> Vec<WatcherId> {
        let ready: Vec<WatcherId> = self.ready.iter().copied().collect();
        // Catching-up watchers stay ready until synced; synced ones until drained.
        self.ready.retain(|id| {
            self.watchers
                .get(id)
                .is_some_and(|w| w.next_revision.is_some())
        });
        ready
    }

    /// Feeds one applied change to every synced watcher that covers its key.
    pub fn notify(&mut self, change: &Change<'_>) {
        if self.watchers.is_empty() {
            return;
        }
        let ids: Vec<WatcherId> = self
            .by_key
            .get(change.key)
            .into_iter()
            .flatten()
            .copied()
            .chain(self.ranges.iter().copied().filter(|id| {
                let watcher = &self.watchers[id];
                watcher.end.contains(&watcher.request.key, change.key)
            }))
            .collect();
        for id in ids {
            let watcher = self
                .watchers
                .get_mut(&id)
                .expect("watch: indexed watcher exists");
            if watcher.next_revision.is_some() || change.version.main < watcher.min_revision {
                continue;
            }
            let kind = if change.version.is_tombstone() {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            if !watcher.wants(kind) {
                continue;
            }
            if watcher.buffer.len() >= WATCH_BUFFER_EVENTS_MAX {
                // Fall back to catching up at this revision, dropping any part of it
                // already buffered so the revision is delivered whole, once.
                let main = change.version.main;
                while watcher
                    .buffer
                    .back()
                    .is_some_and(|e| e.kv.mod_revision.0 == main)
                {
                    watcher.buffer.pop_back();
                }
                watcher.next_revision = Some(main);
                self.ready.insert(id);
                continue;
            }
            let event = build_event(
                change.key,
                (change.version, change.value),
                change
                    .previous
                    .as_ref()
                    .map(|(fields, value)| (fields, *value)),
                watcher.request.prev_kv,
            );
            watcher.buffer.push_back(event);
            self.ready.insert(id);
        }
    }

    /// Drains up to `events_max` events (rounded up to a whole revision) from a watcher,
    /// catching up from `index` when it is behind. An empty result means the watcher is
    /// synced and has nothing buffered.
    pub fn poll(
        &mut self,
        id: WatcherId,
        index: &Index,
        current: i64,
        compact: i64,
        events_max: usize,
    ) -> Option<WatchPoll> {
        let watcher = self.watchers.get_mut(&id)?;
        let mut events: Vec<Event> = Vec::new();
        while events.len() < events_max {
            let Some(event) = watcher.buffer.pop_front() else {
                break;
            };
            events.push(event);
        }
        // Finish the revision we stopped in.
        if let Some(last) = events.last().map(|e| e.kv.mod_revision) {
            while watcher
                .buffer
                .front()
                .is_some_and(|e| e.kv.mod_revision == last)
            {
                events.push(watcher.buffer.pop_front().expect("front exists"));
            }
        }
        if watcher.buffer.is_empty() {
            if let Some(next) = watcher.next_revision {
                if next < compact {
                    self.cancel(id);
                    return Some(WatchPoll::Compacted {
                        compact_revision: Revision(compact),
                    });
                }
                if events.len() < events_max {
                    let budget = events_max - events.len();
                    let (caught_up, next) = catch_up(watcher, index, next, current, budget);
                    events.extend(caught_up);
                    watcher.next_revision = (next <= current).then_some(next);
                }
            }
        }
        if watcher.buffer.is_empty() && watcher.next_revision.is_none() {
            self.ready.remove(&id);
        } else {
            self.ready.insert(id);
        }
        Some(WatchPoll::Events(events))
    }

    /// Cancels nothing by itself; watchers behind `compact` are cancelled on their next
    /// poll. Marks them ready so the node polls them promptly.
    pub fn on_compact(&mut self, compact: i64) {
        for (id, watcher) in &self.watchers {
            if watcher.next_revision.is_some_and(|next| next < compact) {
                self.ready.insert(*id);
            }
        }
    }
}

fn build_event(
    key: &[u8],
    (version, value): (&VersionFields, &[u8]),
    previous: Option<(&VersionFields, &[u8])>,
    with_prev: bool,
) -> Event {
    let kind = if version.is_tombstone() {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    let kv = match kind {
        EventKind::Put => version.to_key_value(key, value),
        EventKind::Delete => KeyValue {
            key: key.to_vec(),
            mod_revision: Revision(version.main),
            ..KeyValue::default()
        },
    };
    let prev_kv = if with_prev {
        previous
            .filter(|(p, _)| !p.is_tombstone())
            .map(|(p, value)| p.to_key_value(key, value))
    } else {
        None
    };
    Event { kind, kv, prev_kv }
}

/// Reads the watcher's events with revisions in `[from, current]` from the index, at
/// most `budget` (rounded up to a whole revision). Returns them and the next revision
/// to read.
fn catch_up(
    watcher: &Watcher,
    index: &Index,
    from: i64,
    current: i64,
    budget: usize,
) -> (Vec<Event>, i64) {
    let from = from.max(watcher.min_revision);
    // (main, sub, key, version, the version before it)
    type Found<'a> = (i64, u32, &'a [u8], Version<'a>, Option<Version<'a>>);
    let mut found: Vec<Found<'_>> = Vec::new();
    for (key, record) in index.range(&watcher.request.key, &watcher.end) {
        if record.latest().main < from {
            continue;
        }
        let mut previous: Option<Version<'_>> = None;
        for version in record.versions() {
            if version.main >= from && version.main <= current {
                found.push((version.main, version.sub, key.as_bytes(), version, previous));
            }
            previous = Some(version);
        }
    }
    found.sort_unstable_by_key(|(main, sub, ..)| (*main, *sub));
    let mut events = Vec::new();
    let mut next = current + 1;
    let mut last_main = None;
    for (main, _, key, version, previous) in found {
        // The budget counts delivered events, so a poll of a watcher that is behind
        // never comes back empty merely because filters dropped what it read.
        if events.len() >= budget && last_main != Some(main) {
            next = main;
            break;
        }
        last_main = Some(main);
        let kind = if version.is_tombstone() {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        if watcher.wants(kind) {
            events.push(build_event(
                key,
                (&version, version.value()),
                previous.as_ref().map(|p| (&**p, p.value())),
                watcher.request.prev_kv,
            ));
        }
    }
    (events, next)
}
