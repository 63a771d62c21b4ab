//! Recovery logic over segment bytes: scanning one segment batch by batch, telling a torn
//! tail from corruption, and folding records into the recovered log state.
//!
//! Rules (docs/wal-format.md, "Recovery"):
//! - A batch counts only when its batch-end record decodes: a batch is all or nothing.
//! - In the last segment, the first undecodable byte ends the log if no intact batch
//!   starts at a later block boundary: it is a torn tail, truncated back to the start of
//!   the incomplete batch and reported. If an intact batch does follow, the damage is
//!   corruption of acknowledged data and recovery stops with the file and offset.
//! - In any other segment every damaged record is corruption.
//! - Entry indexes: an entry with index `last + 1` extends the log; an entry with index
//!   `<= last` means a Raft suffix truncation happened, so every entry `>= index` is
//!   dropped and the later record wins; an entry with index `> last + 1` is a gap and an
//!   error. A `TruncateSuffix { from }` record drops every entry `>= from`. A snapshot
//!   marker past the last entry drops every entry; the log continues after the snapshot.
//!
//! This module is pure: it reads byte slices and never does IO.

use std::path::Path;

use crate::error::{Result, WalError};
use crate::format::{
    align_up, decode, Decode, Decoded, SegmentHeader, BLOCK_SIZE, FLAG_BATCH_END, FLAG_BATCH_START,
};
use crate::types::{Entry, HardState, LogIndex, Metadata, SnapshotMarker, WalRecord};

/// The torn tail found (and cut off) at the end of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: std::path::PathBuf,
    /// First byte that did not decode as part of a complete batch.
    pub offset: u64,
    /// The segment's valid length: writing resumes here.
    pub truncated_to: u64,
    /// Bytes from `truncated_to` up to the last non-zero block that were zeroed.
    pub discarded_bytes: u64,
    pub reason: String,
}

/// Log facts that do not need the entries themselves: used both by recovery and by the
/// writer (to validate appends and to write each new segment's preamble).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracker {
    /// Index of the first entry of the contiguous run ending at `last`. `first == last + 1`
    /// describes an empty run positioned after released entries.
    pub first: Option<u64>,
    pub last: Option<u64>,
    pub hard_state: Option<HardState>,
    pub metadata: Option<Metadata>,
    pub snapshot: Option<SnapshotMarker>,
}

/// Where an entry lands relative to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPlacement {
    Append,
    /// Entries with index `>= index` are dropped first.
    TruncateThenAppend,
    Gap {
        expected_max: u64,
    },
}

impl Tracker {
    pub fn placement(&self, index: u64) -> EntryPlacement {
        match self.last {
            None => EntryPlacement::Append,
            Some(last) if index == last + 1 => EntryPlacement::Append,
            Some(last) if index <= last => EntryPlacement::TruncateThenAppend,
            Some(last) => EntryPlacement::Gap {
                expected_max: last + 1,
            },
        }
    }

    /// Applies a record whose placement was already checked (not a gap).
    pub fn apply(&mut self, record: &WalRecord<'_>) {
        match record {
            WalRecord::Entry { index, .. } => {
                self.truncate(index.0);
                if self.first.is_none() {
                    self.first = Some(index.0);
                }
                self.last = Some(index.0);
            }
            WalRecord::TruncateSuffix { from } => self.truncate(from.0),
            WalRecord::HardState(hard_state) => self.hard_state = Some(*hard_state),
            WalRecord::Metadata(metadata) => self.metadata = Some(*metadata),
            WalRecord::SnapshotMarker(marker) => {
                // A snapshot past the end of the log (one installed from the leader, Raft
                // thesis 5.3) replaces the log: it continues right after the snapshot.
                if self.last.is_none_or(|last| marker.index.0 > last) {
                    self.first = Some(marker.index.0 + 1);
                    self.last = Some(marker.index.0);
                }
                self.snapshot = Some(*marker);
            }
        }
    }

    fn truncate(&mut self, from: u64) {
        if let (Some(first), Some(last)) = (self.first, self.last) {
            if from <= first {
                self.first = None;
                self.last = None;
            } else if from <= last {
                self.last = Some(from - 1);
            }
        }
    }

    /// `last + 1`, or 0 when the log holds no entry: a new segment's `first_index`.
    pub fn next_index(&self) -> u64 {
        self.last.map_or(0, |last| last + 1)
    }
}

/// Recovered log state while segments are folded in.
#[derive(Debug)]
pub struct LogState {
    pub replay_from: u64,
    pub tracker: Tracker,
    /// Entries with index `> replay_from`, contiguous, ascending.
    pub entries: Vec<Entry>,
}

impl LogState {
    pub fn new(replay_from: LogIndex) -> LogState {
        LogState {
            replay_from: replay_from.0,
            tracker: Tracker::default(),
            entries: Vec::new(),
        }
    }

    fn apply(&mut self, record: &WalRecord<'_>, path: &Path, offset: usize) -> Result<()> {
        let truncate_from = match record {
            WalRecord::Entry { index, .. } => {
                if index.0 == 0 {
                    return Err(corrupt(path, offset, "entry with index 0".into()));
                }
                match self.tracker.placement(index.0) {
                    // Everything up to `replay_from` is covered by the caller's snapshot, so
                    // a jump that lands at or before `replay_from + 1` loses nothing: the log
                    // was continued after a snapshot installed past its end.
                    EntryPlacement::Gap { .. } if index.0 <= self.replay_from + 1 => {
                        self.tracker.first = None;
                        self.tracker.last = None;
                        None
                    }
                    EntryPlacement::Gap { expected_max } => {
                        return Err(WalError::EntryGap {
                            path: path.to_path_buf(),
                            offset: offset as u64,
                            expected_max,
                            found: index.0,
                        })
                    }
                    EntryPlacement::Append => None,
                    EntryPlacement::TruncateThenAppend => Some(index.0),
                }
            }
            WalRecord::TruncateSuffix { from } => Some(from.0),
            WalRecord::SnapshotMarker(marker)
                if self.tracker.last.is_none_or(|last| marker.index.0 > last) =>
            {
                Some(0)
            }
            _ => None,
        };
        if let Some(from) = truncate_from {
            let keep = self.entries.partition_point(|entry| entry.index.0 < from);
            self.entries.truncate(keep);
        }
        self.tracker.apply(record);
        if let WalRecord::Entry { index, term, data } = record {
            if index.0 > self.replay_from {
                self.entries.push(Entry {
                    index: *index,
                    term: *term,
                    data: data.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Checks that the entries returned start right after `replay_from`.
    pub fn check_start(&self) -> Result<()> {
        if let (Some(first), Some(last)) = (self.tracker.first, self.tracker.last) {
            if last > self.replay_from && first > self.replay_from + 1 {
                return Err(WalError::MissingEntries {
                    replay_from: self.replay_from,
                    first_available: first,
                });
            }
        }
        Ok(())
    }
}

/// What scanning one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub header: Option<SegmentHeader>,
    /// End of the last complete batch (block aligned): writing resumes here.
    pub end: u64,
    /// Bytes in `[end, dirty_until)` are not all zero and must be zeroed before reuse.
    pub dirty_until: u64,
    pub torn: Option<TornTail>,
}

fn corrupt(path: &Path, offset: usize, reason: String) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

/// Scans one segment and folds its complete batches into `state`.
pub fn scan_segment(
    path: &Path,
    sequence: u64,
    bytes: &[u8],
    is_last: bool,
    max_payload: usize,
    state: &mut LogState,
) -> Result<SegmentScan> {
    let mut header = None;
    let mut position = 0usize;
    let mut committed = 0usize;
    let mut batch: Vec<(usize, Decoded<'_>)> = Vec::new();
    let mut in_batch = false;
    // Offset and reason of the first byte that is not part of a complete batch.
    let mut damage: Option<(usize, String)> = None;
    loop {
        if position >= bytes.len() {
            if in_batch {
                damage = Some((position, "batch runs past the segment end".into()));
            }
            break;
        }
        match decode(bytes, position, max_payload) {
            Decode::Zero if !in_batch => break,
            Decode::Zero => {
                damage = Some((position, "zero length inside a batch".into()));
                break;
            }
            Decode::Bad(reason) => {
                damage = Some((position, reason));
                break;
            }
            Decode::Record {
                record,
                flags,
                next,
            } => {
                let starts = flags & FLAG_BATCH_START != 0;
                let is_header = matches!(record, Decoded::Segment(_));
                let problem = if starts == in_batch {
                    Some(if starts {
                        "batch start inside a batch"
                    } else {
                        "record outside a batch"
                    })
                } else if (position == 0) != is_header {
                    Some("segment header missing or misplaced")
                } else if flags & FLAG_BATCH_END != 0 && next % BLOCK_SIZE != 0 {
                    Some("batch end not block aligned")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    damage = Some((position, problem.into()));
                    break;
                }
                in_batch = true;
                batch.push((position, record));
                position = next;
                if flags & FLAG_BATCH_END != 0 {
                    for (offset, record) in batch.drain(..) {
                        match record {
                            Decoded::Segment(segment_header) => {
                                if segment_header.sequence != sequence {
                                    return Err(corrupt(
                                        path,
                                        offset,
                                        format!(
                                            "segment header says sequence {}, file name says {sequence}",
                                            segment_header.sequence
                                        ),
                                    ));
                                }
                                // The first segment left after a release starts past the
                                // released entries: the log continues from its header.
                                if state.tracker.last.is_none() && segment_header.first_index.0 > 0
                                {
                                    state.tracker.first = Some(segment_header.first_index.0);
                                    state.tracker.last = Some(segment_header.first_index.0 - 1);
                                }
                                header = Some(segment_header);
                            }
                            Decoded::Record(record) => state.apply(&record, path, offset)?,
                            Decoded::Padding => {}
                        }
                    }
                    in_batch = false;
                    committed = position;
                }
            }
        }
    }
    let last_nonzero = bytes[committed..].iter().rposition(|byte| *byte != 0);
    let dirty_until = match last_nonzero {
        Some(at) => align_up(committed + at + 1).min(align_up(bytes.len())),
        None => committed,
    };
    if !is_last {
        if let Some((offset, reason)) = damage {
            return Err(corrupt(path, offset, reason));
        }
        if header.is_none() {
            return Err(corrupt(
                path,
                0,
                "segment that is not the last has no complete batch".into(),
            ));
        }
        if dirty_until > committed {
            return Err(corrupt(
                path,
                committed,
                "non-zero bytes after the end of a sealed segment".into(),
            ));
        }
    }
    let damage = match damage {
        Some(damage) => Some(damage),
        None if dirty_until > committed => {
            let first_nonzero = committed
                + bytes[committed..]
                    .iter()
                    .position(|byte| *byte != 0)
                    .unwrap_or(0);
            Some((
                first_nonzero,
                "non-zero bytes after the last complete batch".into(),
            ))
        }
        None => None,
    };
    let torn = match damage {
        None => None,
        Some((offset, reason)) => {
            // Writes are serialised (a batch is written only after the previous one was
            // synced), so an intact batch after the damage proves the damage hit
            // acknowledged data.
            let mut boundary = align_up(offset + 1);
            while boundary < bytes.len() {
                if let Decode::Record { flags, .. } = decode(bytes, boundary, max_payload) {
                    if flags & FLAG_BATCH_START != 0 {
                        return Err(corrupt(
                            path,
                            offset,
                            format!("{reason}; an intact batch follows at offset {boundary}, so this is not a torn tail"),
                        ));
                    }
                }
                boundary += BLOCK_SIZE;
            }
            Some(TornTail {
                path: path.to_path_buf(),
                offset: offset as u64,
                truncated_to: committed as u64,
                discarded_bytes: (dirty_until - committed) as u64,
                reason,
            })
        }
    };
    Ok(SegmentScan {
        header,
        end: committed as u64,
        dirty_until: dirty_until as u64,
        torn,
    })
}
