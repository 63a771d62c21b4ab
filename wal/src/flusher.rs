//! The flusher: the one task that writes batches. It takes the pending batch, writes it
//! with one `write_at` and makes it durable with one `sync_data`, then wakes the batch's
//! appenders; alongside, it keeps a zero-filled segment ready for the next rotation.
//!
//! Invariants: batches are written strictly one after another, each only after the
//! previous one was synced (recovery's torn-tail rule depends on it); a new segment is
//! synced and its folder fsynced before the first batch in it is acknowledged; the first
//! failed write, sync or segment creation poisons the log and stops the flusher.
//!
//! Never: retry a failed write or sync; hold a `RefCell` borrow across an `.await`.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::disk::{Disk, DiskFile};
use crate::segments::{segment_name, SegmentInfo, PREPARED_SEGMENT_NAME, ZERO_CHUNK_BYTES};
use crate::wal::{Batch, PoisonCause, Shared};

/// The task that writes and syncs batches. Spawn [`Flusher::run`] on the executor that
/// owns the [`Wal`]; appends make no progress until it runs.
pub struct Flusher<D: Disk> {
    shared: Rc<RefCell<Shared>>,
    disk: Rc<D>,
    file: Option<(u64, D::File)>,
    prepared: Rc<RefCell<PreparedSlot<D::File>>>,
}

/// A zero-filled, synced segment file made ahead of need, waiting to be renamed into
/// place at the next rotation.
struct PreparedSlot<F> {
    file: Option<F>,
    preparer: Option<Waker>,
}

impl<D: Disk> std::fmt::Debug for Flusher<D> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Flusher")
            .field(
                "segment",
                &self.file.as_ref().map(|(sequence, _)| *sequence),
            )
            .finish_non_exhaustive()
    }
}

impl<D: Disk> Flusher<D> {
    pub(crate) fn new(
        shared: Rc<RefCell<Shared>>,
        disk: Rc<D>,
        file: Option<(u64, D::File)>,
    ) -> Flusher<D> {
        Flusher {
            shared,
            disk,
            file,
            prepared: Rc::new(RefCell::new(PreparedSlot {
                file: None,
                preparer: None,
            })),
        }
    }

    /// Writes batches until the [`Wal`] is dropped (then drains what is pending) or a
    /// write fails (then poisons the log). Returns when it stops.
    pub async fn run(mut self) {
        let preparer = prepare_segments(
            self.disk.clone(),
            self.shared.clone(),
            self.prepared.clone(),
        );
        let mut preparer = std::pin::pin!(preparer);
        let mut preparer_done = false;
        let batches = self.run_batches();
        let mut batches = std::pin::pin!(batches);
        poll_fn(|context| {
            if !preparer_done && preparer.as_mut().poll(context).is_ready() {
                preparer_done = true;
            }
            batches.as_mut().poll(context)
        })
        .await
    }

    async fn run_batches(&mut self) {
        loop {
            let has_work = poll_fn(|context| {
                let mut shared = self.shared.borrow_mut();
                if shared.pending_records > 0 {
                    Poll::Ready(true)
                } else if shared.closed {
                    Poll::Ready(false)
                } else {
                    shared.flusher_waker = Some(context.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if !has_work {
                return;
            }
            // No yield here: the appender that woke this task ran first, and every other
            // appender already runnable was queued before this task, so it has joined.
            let linger = {
                let shared = self.shared.borrow();
                let full = shared.pending_record_bytes * 2 >= shared.config.max_batch_bytes;
                if full {
                    Duration::ZERO
                } else {
                    shared.config.batch_linger
                }
            };
            if !linger.is_zero() {
                self.disk.sleep(linger).await;
            }
            let batch = {
                let mut shared = self.shared.borrow_mut();
                if shared.poison.is_some() {
                    return;
                }
                shared.take_batch()
            };
            match self.write(&batch).await {
                Ok(()) => {
                    let mut shared = self.shared.borrow_mut();
                    shared.durable_number = batch.number;
                    shared.stats.batches_synced += 1;
                    shared.stats.records_synced += batch.records;
                    shared.stats.bytes_written += batch.bytes.len() as u64;
                    let mut still_waiting = Vec::new();
                    for (number, waker) in shared.durable_waiters.drain(..) {
                        if number <= batch.number {
                            waker.wake();
                        } else {
                            still_waiting.push((number, waker));
                        }
                    }
                    shared.durable_waiters = still_waiting;
                    let mut bytes = batch.bytes;
                    bytes.clear();
                    shared.spare = bytes;
                }
                Err((operation, error)) => {
                    let mut shared = self.shared.borrow_mut();
                    shared.poison = Some(PoisonCause {
                        operation,
                        kind: error.kind(),
                        message: error.to_string(),
                    });
                    shared.wake_all();
                    return;
                }
            }
        }
    }

    async fn write(&mut self, batch: &Batch) -> Result<(), (&'static str, io::Error)> {
        let current = self.file.as_ref().map(|(sequence, _)| *sequence);
        if current != Some(batch.segment) {
            assert_eq!(
                batch.offset, 0,
                "a batch in a new segment starts at offset 0"
            );
            self.file = None;
            let (dir, segment_bytes) = {
                let shared = self.shared.borrow();
                (shared.dir.clone(), shared.config.segment_bytes)
            };
            let path = dir.join(segment_name(batch.segment, batch.segment_first_index));
            // The preparer is woken only after the rename below: until then the prepared
            // name still refers to this file.
            let prepared = self.prepared.borrow_mut().file.take();
            let file = match prepared {
                Some(file) => {
                    self.disk
                        .rename(&dir.join(PREPARED_SEGMENT_NAME), &path)
                        .await
                        .map_err(|error| ("rename prepared segment", error))?;
                    file
                }
                None => {
                    let zero_fill = self.shared.borrow().config.zero_fill_segments;
                    create_segment_file(&*self.disk, &path, segment_bytes, zero_fill)
                        .await
                        .map_err(|error| ("create segment", error))?
                }
            };
            if let Some(waker) = self.prepared.borrow_mut().preparer.take() {
                waker.wake();
            }
            self.disk
                .sync_dir(&dir)
                .await
                .map_err(|error| ("sync WAL directory", error))?;
            let mut shared = self.shared.borrow_mut();
            shared.segments.push(SegmentInfo {
                sequence: batch.segment,
                first_index: batch.segment_first_index,
                path,
            });
            shared.stats.segments_created += 1;
            drop(shared);
            self.file = Some((batch.segment, file));
        }
        let (_, file) = self.file.as_ref().expect("segment file opened above");
        file.write_at(&batch.bytes, batch.offset)
            .await
            .map_err(|error| ("write", error))?;
        // Wall time, for metrics only: nothing decides on it (the simulator's disk
        // finishes at once, so its stats stay deterministic in shape if not in value).
        let started = std::time::Instant::now();
        file.sync_data()
            .await
            .map_err(|error| ("fdatasync", error))?;
        self.shared
            .borrow_mut()
            .stats
            .record_sync(started.elapsed());
        Ok(())
    }
}

/// Keeps one zero-filled, synced segment file ready, so that rotation is a rename and
/// appends overwrite initialised blocks (an fdatasync after writing into fallocated but
/// unwritten extents must also commit the extent conversion, which roughly doubles its
/// latency). Runs alongside the batch loop in the flusher's task; on any error it stops
/// and rotation falls back to creating segments directly.
async fn prepare_segments<D: Disk>(
    disk: Rc<D>,
    shared: Rc<RefCell<Shared>>,
    slot: Rc<RefCell<PreparedSlot<D::File>>>,
) {
    let (path, segment_bytes, enabled) = {
        let shared = shared.borrow();
        (
            shared.dir.join(PREPARED_SEGMENT_NAME),
            shared.config.segment_bytes,
            shared.config.zero_fill_segments,
        )
    };
    if !enabled {
        return;
    }
    loop {
        poll_fn(|context| {
            let mut slot = slot.borrow_mut();
            if slot.file.is_none() {
                Poll::Ready(())
            } else {
                slot.preparer = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let prepared = create_segment_file(&*disk, &path, segment_bytes, true).await;
        match prepared {
            Ok(file) => slot.borrow_mut().file = Some(file),
            Err(_) => return,
        }
    }
}

/// Creates a segment file of `segment_bytes`, zero-filled if asked, and syncs it. The
/// caller syncs the folder once the file has its final name.
async fn create_segment_file<D: Disk>(
    disk: &D,
    path: &Path,
    segment_bytes: u64,
    zero_fill: bool,
) -> io::Result<D::File> {
    let file = disk.create_file(path).await?;
    file.allocate(segment_bytes).await?;
    if zero_fill {
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut offset = 0u64;
        while offset < segment_bytes {
            let chunk = (segment_bytes - offset).min(ZERO_CHUNK_BYTES as u64);
            file.write_at(&zeros[..chunk as usize], offset).await?;
            offset += chunk;
        }
    }
    file.sync_data().await?;
    Ok(file)
}
