//! The log: recovery on open, group commit of concurrent appends, suffix truncation and
//! release of segments a snapshot made unnecessary.
//!
//! Group commit. Appenders encode their records straight into the *pending* batch buffer
//! and wait. One [`Flusher`] task takes the pending batch (swapping in a second buffer so
//! the next batch fills while this one is written), pads it to a block boundary, writes
//! it with one `write_at` and makes it durable with one `sync_data`, then wakes every
//! appender of that batch. Batches are written strictly one after another.
//!
//! Invariants:
//! - An append resolves `Ok` only after the batch holding all its records was written and
//!   synced without error. All records of one append call land in one batch, and recovery
//!   keeps a batch whole or drops it whole, so one call is atomic.
//! - A batch starts and ends on a block boundary, so no write ever touches the bytes of an
//!   acknowledged batch.
//! - Bounded memory: the pending batch holds at most `max_batch_bytes` of records; when it
//!   is full, appenders wait, first come first served, until the flusher takes it. Two
//!   batch buffers exist at any time.
//! - Order: appends are encoded in the order their futures are first polled, so a driver
//!   may have many appends in flight and still get its entries in index order.
//!   Dropping an append future after its first poll may still write its records.
//! - After a failed write, sync or segment creation the log is poisoned: nothing is ever
//!   acknowledged again and the failed operation is never retried (fsyncgate).
//!
//! Never: retry a failed write or sync; write at an offset below the end of the last
//! synced batch; hold a `RefCell` borrow across an `.await`.
//!
//! The futures are `!Send`: the WAL lives on its shard's core. The flusher is a plain
//! future, so any single-threaded executor can drive it (glommio in the node, the
//! deterministic [`crate::sim::SimExecutor`] in tests).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::mem;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::disk::Disk;
use crate::error::{Result, WalError};
use crate::flusher::Flusher;
use crate::format::{
    self, encode, encode_segment_header, finish_batch, SegmentHeader, BLOCK_SIZE, FLAG_BATCH_START,
    RECORD_HEADER_LEN,
};
use crate::replay::{scan_segment, EntryPlacement, LogState, TornTail, Tracker};
use crate::segments::{list_segments, prepare_last_segment, SegmentInfo};
use crate::types::{Entry, HardState, LogIndex, Metadata, ShardId, SnapshotMarker, WalRecord};

/// Default segment size (etcd uses 64 MB segments too).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default bound on the record bytes of one batch (and so on pending memory).
pub const MAX_BATCH_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// Default bound on one record's payload: etcd's 1.5 MiB request limit
/// (`--max-request-bytes`) plus room for the entry header and proposal framing.
pub const MAX_RECORD_BYTES_DEFAULT: usize = 2 * 1024 * 1024;

/// Room reserved at the start of a segment for its preamble (header, metadata, hard
/// state, snapshot marker) plus the padding that can follow a batch.
pub(crate) const SEGMENT_RESERVE_BYTES: usize = 3 * BLOCK_SIZE;

/// How a log is laid out and bounded.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Size every segment is preallocated to; a multiple of 4096.
    pub segment_bytes: u64,
    /// Bound on the framed record bytes in one batch. Also the largest length recovery
    /// accepts for one record, so it must never be lowered below a size already written.
    pub max_batch_bytes: usize,
    /// Bound on one record's payload.
    pub max_record_bytes: usize,
    /// How long the flusher waits for more records before writing a batch that is not
    /// full. Zero (the default) writes as soon as the previous batch is synced, which is
    /// already the group commit: everything that arrived during that sync goes together.
    pub batch_linger: Duration,
    /// Shard this log belongs to; checked against every segment header on open.
    pub shard_id: ShardId,
    /// Write zeros through the next segment ahead of need (in the flusher's task, while
    /// batches go on), so appends overwrite initialised blocks and rotation is a rename.
    /// Costs one extra segment of sequential writes per segment; halves fdatasync latency
    /// on ext4 (see wal_bench's two raw figures).
    pub zero_fill_segments: bool,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            max_batch_bytes: MAX_BATCH_BYTES_DEFAULT,
            max_record_bytes: MAX_RECORD_BYTES_DEFAULT,
            batch_linger: Duration::ZERO,
            shard_id: ShardId(0),
            zero_fill_segments: true,
        }
    }
}

impl WalConfig {
    fn validate(&self) -> Result<()> {
        let problem = if self.segment_bytes % BLOCK_SIZE as u64 != 0 {
            "segment_bytes must be a multiple of 4096"
        } else if self.max_record_bytes + RECORD_HEADER_LEN > self.max_batch_bytes {
            "max_record_bytes plus a record header must fit in max_batch_bytes"
        } else if self.segment_bytes < 2 * (self.max_batch_bytes + SEGMENT_RESERVE_BYTES) as u64 {
            "segment_bytes must hold at least two full batches"
        } else if u32::try_from(self.max_batch_bytes).is_err() {
            "max_batch_bytes must fit in a u32 record length"
        } else {
            return Ok(());
        };
        Err(WalError::Config(problem.into()))
    }

    /// Largest payload recovery accepts: anything the writer could have produced.
    fn max_decoded_payload(&self) -> usize {
        self.max_batch_bytes.max(2 * BLOCK_SIZE)
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub metadata: Option<Metadata>,
    pub hard_state: Option<HardState>,
    /// The newest snapshot marker in the log.
    pub snapshot: Option<SnapshotMarker>,
    /// Entries with index `> replay_from`, contiguous and ascending.
    pub entries: Vec<Entry>,
    /// Index of the last entry in the log (possibly `<= replay_from`).
    pub last_index: Option<LogIndex>,
    /// The torn tail cut off the last segment, if there was one.
    pub torn_tail: Option<TornTail>,
    pub segment_count: usize,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub batches_synced: u64,
    pub records_synced: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
    /// fdatasync durations of batches: counts per bucket, bucket `i` holding durations
    /// up to [`SYNC_BUCKET_BOUNDS_SECONDS`]`[i]` (the last also everything longer).
    pub sync_buckets: [u64; SYNC_BUCKETS],
    /// Sum of the fdatasync durations, in nanoseconds.
    pub sync_nanos_total: u64,
}

/// Number of fdatasync duration buckets in [`WalStats`].
pub const SYNC_BUCKETS: usize = 14;
/// Upper bounds of the fdatasync duration buckets, in seconds: 1 ms doubling to 8.192 s
/// (the buckets etcd reports for its WAL fsync histogram).
pub const SYNC_BUCKET_BOUNDS_SECONDS: [f64; SYNC_BUCKETS] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

impl WalStats {
    /// Counts one fdatasync that took `duration`.
    pub fn record_sync(&mut self, duration: std::time::Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = SYNC_BUCKET_BOUNDS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(SYNC_BUCKETS - 1);
        self.sync_buckets[bucket] += 1;
        self.sync_nanos_total += duration.as_nanos() as u64;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PoisonCause {
    pub(crate) operation: &'static str,
    pub(crate) kind: io::ErrorKind,
    pub(crate) message: String,
}

impl PoisonCause {
    pub(crate) fn error(&self) -> WalError {
        WalError::Poisoned {
            operation: self.operation,
            kind: self.kind,
            message: self.message.clone(),
        }
    }
}

/// State shared by appenders, the flusher and maintenance calls. Never borrowed across an
/// `.await`.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: WalConfig,
    pub(crate) dir: PathBuf,
    /// The batch being filled, encoded, starting at `pending_base` of segment
    /// `pending_segment`.
    pub(crate) pending: Vec<u8>,
    pub(crate) pending_base: u64,
    pub(crate) pending_segment: u64,
    /// `first_index` of `pending_segment` if the flusher must create it.
    pub(crate) pending_segment_first_index: u64,
    pub(crate) pending_record_bytes: usize,
    pub(crate) pending_records: usize,
    /// Index in `pending` of the last record (gets the batch-end flag).
    pub(crate) pending_last_record: usize,
    /// Number of the pending batch; batches are numbered from 1.
    pub(crate) pending_number: u64,
    /// Every batch numbered `<= durable_number` is durable.
    pub(crate) durable_number: u64,
    pub(crate) spare: Vec<u8>,
    /// State after every record accepted so far (synced or not).
    pub(crate) tracker: Tracker,
    pub(crate) poison: Option<PoisonCause>,
    pub(crate) closed: bool,
    pub(crate) durable_waiters: Vec<(u64, Waker)>,
    /// Appenders waiting for room in the pending batch, first come first served: an
    /// append never overtakes one that started waiting before it.
    pub(crate) space_waiters: VecDeque<(u64, Waker)>,
    pub(crate) next_space_waiter: u64,
    pub(crate) flusher_waker: Option<Waker>,
    /// Created segment files, ascending.
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) stats: WalStats,
}

impl Shared {
    pub(crate) fn wake_flusher(&mut self) {
        if let Some(waker) = self.flusher_waker.take() {
            waker.wake();
        }
    }

    /// Wakes every waiter after the log was poisoned or closed. Durable waiters are only
    /// drained on poison: after a close the flusher still completes their batches.
    pub(crate) fn wake_all(&mut self) {
        if self.poison.is_some() {
            for (_, waker) in self.durable_waiters.drain(..) {
                waker.wake();
            }
        }
        for (_, waker) in self.space_waiters.iter() {
            waker.wake_by_ref();
        }
        self.wake_flusher();
    }

    /// Starts an empty pending batch; a batch at offset 0 opens a segment, so it begins
    /// with the preamble that makes every segment self-describing.
    fn start_pending(&mut self) {
        self.pending.clear();
        self.pending_records = 0;
        self.pending_record_bytes = 0;
        if self.pending_base != 0 {
            return;
        }
        let header = SegmentHeader {
            shard_id: self.config.shard_id,
            sequence: self.pending_segment,
            first_index: LogIndex(self.pending_segment_first_index),
        };
        encode_segment_header(&mut self.pending, &header, FLAG_BATCH_START);
        let tracker = self.tracker.clone();
        let preamble = [
            tracker.metadata.map(WalRecord::Metadata),
            tracker.hard_state.map(WalRecord::HardState),
            tracker.snapshot.map(WalRecord::SnapshotMarker),
        ];
        for record in preamble.iter().flatten() {
            self.pending_last_record = self.pending.len();
            let offset = self.pending.len() as u64;
            encode(&mut self.pending, offset, record, 0);
        }
    }

    /// Takes the pending batch for writing and starts the next one.
    pub(crate) fn take_batch(&mut self) -> Batch {
        assert!(self.pending_records > 0, "took an empty batch");
        finish_batch(
            &mut self.pending,
            self.pending_base,
            self.pending_last_record,
        );
        let bytes = mem::replace(&mut self.pending, mem::take(&mut self.spare));
        let batch = Batch {
            number: self.pending_number,
            segment: self.pending_segment,
            segment_first_index: self.pending_segment_first_index,
            offset: self.pending_base,
            records: self.pending_records as u64,
            bytes,
        };
        let end = batch.offset + batch.bytes.len() as u64;
        assert_eq!(end % BLOCK_SIZE as u64, 0, "batch end not block aligned");
        let room = self.config.segment_bytes - end;
        if room < (self.config.max_batch_bytes + SEGMENT_RESERVE_BYTES) as u64 {
            self.pending_segment += 1;
            self.pending_base = 0;
            self.pending_segment_first_index = self.tracker.next_index();
        } else {
            self.pending_base = end;
        }
        self.pending_number += 1;
        self.start_pending();
        self.wake_first_space_waiter();
        batch
    }

    pub(crate) fn wake_first_space_waiter(&mut self) {
        if let Some((_, waker)) = self.space_waiters.front() {
            waker.wake_by_ref();
        }
    }
}

#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) number: u64,
    pub(crate) segment: u64,
    pub(crate) segment_first_index: u64,
    pub(crate) offset: u64,
    pub(crate) records: u64,
    pub(crate) bytes: Vec<u8>,
}

/// Handle to an open log. Appends may run concurrently from many tasks on the same
/// executor. Dropping it closes the log: the flusher writes what is pending and stops.
#[derive(Debug)]
pub struct Wal<D: Disk> {
    shared: Rc<RefCell<Shared>>,
    disk: Rc<D>,
}

impl<D: Disk> Wal<D> {
    /// Opens (or creates) the log in `dir`, recovers it and returns the handle, the
    /// flusher task to spawn, and what was recovered: every entry with index
    /// `> replay_from` (the index of the snapshot the caller loaded, or 0).
    ///
    /// A torn tail of the last segment is zeroed and synced before this returns, so the
    /// recovered prefix is durable and the next batch never lands after garbage. If the
    /// log ends before `replay_from`, it continues right after it (`last_index` is
    /// `replay_from`).
    pub async fn open(
        disk: Rc<D>,
        dir: impl Into<PathBuf>,
        config: WalConfig,
        replay_from: LogIndex,
    ) -> Result<(Wal<D>, Flusher<D>, Recovered)> {
        config.validate()?;
        let dir = dir.into();
        disk.create_dir_all(&dir)
            .await
            .map_err(|source| WalError::io("create WAL directory", &dir, source))?;
        let segments = list_segments(&*disk, &dir).await?;
        let mut state = LogState::new(replay_from);
        let mut torn_tail = None;
        let mut last_scan = None;
        for (position, segment) in segments.iter().enumerate() {
            let is_last = position + 1 == segments.len();
            let bytes = disk
                .map_file(&segment.path)
                .await
                .map_err(|source| WalError::io("map WAL segment", &segment.path, source))?;
            let scan = scan_segment(
                &segment.path,
                segment.sequence,
                &bytes,
                is_last,
                config.max_decoded_payload(),
                &mut state,
            )?;
            drop(bytes);
            if let Some(header) = scan.header {
                if header.shard_id != config.shard_id {
                    return Err(WalError::Config(format!(
                        "{} belongs to shard {}, this log is shard {}",
                        segment.path.display(),
                        header.shard_id.0,
                        config.shard_id.0
                    )));
                }
            }
            if is_last {
                torn_tail = scan.torn.clone();
                last_scan = Some(scan);
            }
        }
        state.check_start()?;
        // The caller's snapshot is past the end of the log (installed from the leader, and
        // the crash came before its marker reached the log): continue after the snapshot.
        if replay_from.0 > 0 && state.tracker.last.is_none_or(|last| last < replay_from.0) {
            state.tracker.first = Some(replay_from.0 + 1);
            state.tracker.last = Some(replay_from.0);
        }

        let mut file = None;
        let (pending_segment, pending_base, pending_first_index) =
            match (segments.last(), &last_scan) {
                (Some(last), Some(scan)) => {
                    let handle = disk
                        .open_file(&last.path)
                        .await
                        .map_err(|source| WalError::io("open WAL segment", &last.path, source))?;
                    prepare_last_segment(&handle, &last.path, &config, scan).await?;
                    file = Some((last.sequence, handle));
                    let room = config.segment_bytes.saturating_sub(scan.end);
                    if room < (config.max_batch_bytes + SEGMENT_RESERVE_BYTES) as u64 {
                        (last.sequence + 1, 0, state.tracker.next_index())
                    } else {
                        (last.sequence, scan.end, last.first_index)
                    }
                }
                _ => (0, 0, state.tracker.next_index()),
            };

        let recovered = Recovered {
            metadata: state.tracker.metadata,
            hard_state: state.tracker.hard_state,
            snapshot: state.tracker.snapshot,
            last_index: state.tracker.last.map(LogIndex),
            entries: mem::take(&mut state.entries),
            torn_tail,
            segment_count: segments.len(),
        };
        let buffer_bytes = config.max_batch_bytes + SEGMENT_RESERVE_BYTES;
        let mut shared = Shared {
            config,
            dir,
            pending: Vec::with_capacity(buffer_bytes),
            pending_base,
            pending_segment,
            pending_segment_first_index: pending_first_index,
            pending_record_bytes: 0,
            pending_records: 0,
            pending_last_record: 0,
            pending_number: 1,
            durable_number: 0,
            spare: Vec::with_capacity(buffer_bytes),
            tracker: state.tracker,
            poison: None,
            closed: false,
            durable_waiters: Vec::new(),
            space_waiters: VecDeque::new(),
            next_space_waiter: 0,
            flusher_waker: None,
            segments,
            stats: WalStats::default(),
        };
        shared.start_pending();
        let shared = Rc::new(RefCell::new(shared));
        let wal = Wal {
            shared: shared.clone(),
            disk: disk.clone(),
        };
        let flusher = Flusher::new(shared, disk, file);
        Ok((wal, flusher, recovered))
    }

    /// Appends `records` as one atomic unit and resolves once they are durable.
    ///
    /// Entries must continue the log: index `last + 1`, or `<= last` to replace a suffix
    /// (Raft log conflict). Fails without writing anything if an entry would leave a gap
    /// or a size limit is exceeded; fails with [`WalError::Poisoned`] once any write or
    /// sync has failed. Waits while the pending batch is full.
    pub async fn append(&self, records: &[WalRecord<'_>]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (max_record_bytes, max_batch_bytes) = {
            let shared = self.shared.borrow();
            (
                shared.config.max_record_bytes,
                shared.config.max_batch_bytes,
            )
        };
        let mut total_bytes = 0usize;
        for record in records {
            let payload = format::payload_len(record);
            if payload > max_record_bytes {
                return Err(WalError::TooLarge {
                    what: "record payload",
                    size: payload,
                    limit: max_record_bytes,
                });
            }
            total_bytes += format::record_len(payload);
        }
        if total_bytes > max_batch_bytes {
            return Err(WalError::TooLarge {
                what: "one append",
                size: total_bytes,
                limit: max_batch_bytes,
            });
        }
        let mut queued = SpaceWaiter {
            shared: &self.shared,
            id: None,
        };
        let ticket = poll_fn(|context| {
            let mut shared = self.shared.borrow_mut();
            if let Some(cause) = &shared.poison {
                return Poll::Ready(Err(cause.error()));
            }
            if shared.closed {
                return Poll::Ready(Err(WalError::Closed));
            }
            let fits = shared.pending_records == 0
                || shared.pending_record_bytes + total_bytes <= shared.config.max_batch_bytes;
            let first_in_line = match queued.id {
                None => shared.space_waiters.is_empty(),
                Some(id) => shared.space_waiters.front().map(|(head, _)| *head) == Some(id),
            };
            if !fits || !first_in_line {
                match queued.id {
                    None => {
                        let id = shared.next_space_waiter;
                        shared.next_space_waiter += 1;
                        shared
                            .space_waiters
                            .push_back((id, context.waker().clone()));
                        queued.id = Some(id);
                    }
                    Some(id) => {
                        if let Some(entry) = shared
                            .space_waiters
                            .iter_mut()
                            .find(|(queued_id, _)| *queued_id == id)
                        {
                            entry.1 = context.waker().clone();
                        }
                    }
                }
                return Poll::Pending;
            }
            let mut tracker = shared.tracker.clone();
            for record in records {
                if let WalRecord::Entry { index, .. } = record {
                    let last = tracker.last.unwrap_or(0);
                    if index.0 == 0
                        || matches!(tracker.placement(index.0), EntryPlacement::Gap { .. })
                    {
                        return Poll::Ready(Err(WalError::NonContiguousAppend {
                            last,
                            found: index.0,
                        }));
                    }
                }
                tracker.apply(record);
            }
            shared.tracker = tracker;
            for record in records {
                let flags = if shared.pending.is_empty() {
                    FLAG_BATCH_START
                } else {
                    0
                };
                let start = shared.pending.len();
                let offset = shared.pending_base + start as u64;
                shared.pending_last_record = start;
                encode(&mut shared.pending, offset, record, flags);
            }
            shared.pending_records += records.len();
            shared.pending_record_bytes += total_bytes;
            shared.wake_flusher();
            Poll::Ready(Ok(shared.pending_number))
        })
        .await;
        drop(queued);
        self.wait_durable(ticket?).await
    }

    async fn wait_durable(&self, batch_number: u64) -> Result<()> {
        // Registered once per waker: a spurious re-poll must not grow the waiter list.
        let mut registered: Option<Waker> = None;
        poll_fn(|context| {
            let mut shared = self.shared.borrow_mut();
            if shared.durable_number >= batch_number {
                return Poll::Ready(Ok(()));
            }
            if let Some(cause) = &shared.poison {
                return Poll::Ready(Err(cause.error()));
            }
            let fresh = registered
                .as_ref()
                .is_none_or(|waker| !waker.will_wake(context.waker()));
            if fresh {
                registered = Some(context.waker().clone());
                shared
                    .durable_waiters
                    .push((batch_number, context.waker().clone()));
            }
            Poll::Pending
        })
        .await
    }

    /// Durably discards every entry with index `>= from` (Raft log conflict).
    pub async fn truncate_suffix(&self, from: LogIndex) -> Result<()> {
        self.append(&[WalRecord::TruncateSuffix { from }]).await
    }

    /// Records that a snapshot at `marker` is durable (the caller saved it with
    /// [`crate::SnapshotStore::save`] first), then releases the segments it made
    /// unnecessary. Returns how many segment files were removed.
    pub async fn record_snapshot(&self, marker: SnapshotMarker) -> Result<usize> {
        self.append(&[WalRecord::SnapshotMarker(marker)]).await?;
        self.release_before(marker.index).await
    }

    /// Removes segment files whose every entry has index `<= snapshot_index`, oldest
    /// first, syncing the folder after each removal so a crash leaves a contiguous run.
    /// The segment being written is never removed. Returns how many were removed.
    pub async fn release_before(&self, snapshot_index: LogIndex) -> Result<usize> {
        let (victims, dir) = {
            let mut shared = self.shared.borrow_mut();
            let segments = &shared.segments;
            let mut count = 0;
            while count + 1 < segments.len()
                && segments[count + 1].first_index <= snapshot_index.0 + 1
            {
                count += 1;
            }
            let victims: Vec<SegmentInfo> = shared.segments.drain(..count).collect();
            (victims, shared.dir.clone())
        };
        for (position, victim) in victims.iter().enumerate() {
            let removed = async {
                self.disk
                    .remove_file(&victim.path)
                    .await
                    .map_err(|source| WalError::io("remove WAL segment", &victim.path, source))?;
                self.disk
                    .sync_dir(&dir)
                    .await
                    .map_err(|source| WalError::io("sync WAL directory", &dir, source))
            }
            .await;
            if let Err(error) = removed {
                // Put back what is still on disk so a later call retries the removal.
                let mut shared = self.shared.borrow_mut();
                let rest = victims[position..].iter().cloned();
                shared.segments.splice(0..0, rest);
                return Err(error);
            }
        }
        Ok(victims.len())
    }

    /// Index of the last entry accepted (durable or about to be).
    pub fn last_index(&self) -> Option<LogIndex> {
        self.shared.borrow().tracker.last.map(LogIndex)
    }

    /// The error every append returns from now on, if the log is poisoned.
    pub fn poisoned(&self) -> Option<WalError> {
        self.shared.borrow().poison.as_ref().map(PoisonCause::error)
    }

    pub fn stats(&self) -> WalStats {
        self.shared.borrow().stats
    }

    /// Number of segment files the log currently holds.
    pub fn segment_count(&self) -> usize {
        self.shared.borrow().segments.len()
    }
}

impl<D: Disk> Drop for Wal<D> {
    fn drop(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.closed = true;
        shared.wake_all();
    }
}

/// An append's place in the queue for batch space. Leaving the queue (done, failed or
/// the append future dropped) lets the next appender in.
struct SpaceWaiter<'a> {
    shared: &'a Rc<RefCell<Shared>>,
    id: Option<u64>,
}

impl Drop for SpaceWaiter<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else {
            return;
        };
        let mut shared = self.shared.borrow_mut();
        shared
            .space_waiters
            .retain(|(queued_id, _)| *queued_id != id);
        shared.wake_first_space_waiter();
    }
}
