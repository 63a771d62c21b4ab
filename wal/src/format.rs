//! Record framing: how one record is laid out in a segment, and the decoder that reads it
//! back. docs/wal-format.md is the byte-by-byte description; keep the two in step.
//!
//! ```text
//! offset 0  u32 LE  length   = 1 + payload length (so never 0)
//! offset 4  u32 LE  crc      = CRC-32 over: segment offset (u64 LE) ++ length ++ type ++ payload
//! offset 8  u8      type     = kind (bits 0..=5) | BATCH_END (0x40) | BATCH_START (0x80)
//! offset 9  payload
//! ```
//!
//! Invariants: the CRC binds a record to the offset it was written at, so a stale or
//! embedded copy of a record elsewhere never decodes as valid. The decoder checks a length
//! against the bytes that remain and the maximum record size *before* using it, and it
//! never panics on any input. This module is pure: no IO, no clocks.

use crate::types::{
    ClusterId, HardState, LogIndex, MemberId, Metadata, ShardId, SnapshotMarker, Term, WalRecord,
};

/// Unit of O_DIRECT IO and of batch alignment: every batch starts and ends on a block
/// boundary, so a write never touches bytes of an earlier (acknowledged) batch.
pub const BLOCK_SIZE: usize = 4096;
/// Bytes before the payload: length, crc, type.
pub const RECORD_HEADER_LEN: usize = 9;
/// Magic at the start of every segment header payload.
pub const SEGMENT_MAGIC: [u8; 8] = *b"corekvWL";
/// On-disk format version written in every segment header.
pub const FORMAT_VERSION: u32 = 1;

pub const FLAG_BATCH_START: u8 = 0x80;
pub const FLAG_BATCH_END: u8 = 0x40;
const KIND_MASK: u8 = 0x3f;

/// What a record is. Values are the on-disk type codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SegmentHeader = 1,
    Metadata = 2,
    HardState = 3,
    Entry = 4,
    SnapshotMarker = 5,
    TruncateSuffix = 6,
    Padding = 7,
}

impl Kind {
    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::SegmentHeader,
            2 => Kind::Metadata,
            3 => Kind::HardState,
            4 => Kind::Entry,
            5 => Kind::SnapshotMarker,
            6 => Kind::TruncateSuffix,
            7 => Kind::Padding,
            _ => return None,
        })
    }
}

/// Payload of the first record of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub shard_id: ShardId,
    pub sequence: u64,
    /// `last index + 1` when the segment was started (0 when the log had no entry).
    pub first_index: LogIndex,
}

const SEGMENT_HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8;

/// A decoded record, borrowing its payload from the segment bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Segment(SegmentHeader),
    Record(WalRecord<'a>),
    Padding,
}

/// The outcome of decoding at one offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode<'a> {
    /// A valid record; `next` is the offset right after it.
    Record {
        record: Decoded<'a>,
        flags: u8,
        next: usize,
    },
    /// The length field is zero: nothing was written here.
    Zero,
    /// The bytes here are not a valid record.
    Bad(String),
}

/// Bytes a record with `payload_len` payload bytes occupies.
pub const fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

/// Payload length of a caller's record.
pub fn payload_len(record: &WalRecord<'_>) -> usize {
    match record {
        WalRecord::Entry { data, .. } => 16 + data.len(),
        WalRecord::HardState(_) | WalRecord::Metadata(_) => 24,
        WalRecord::SnapshotMarker(_) => 16,
        WalRecord::TruncateSuffix { .. } => 8,
    }
}

fn crc(offset: u64, length: u32, type_byte: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&offset.to_le_bytes());
    hasher.update(&length.to_le_bytes());
    hasher.update(&[type_byte]);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one framed record to `out`; `offset` is where `out`'s end lies in the segment.
pub fn encode(out: &mut Vec<u8>, offset: u64, record: &WalRecord<'_>, flags: u8) {
    let (kind, payload_start) = (kind_of(record), out.len() + RECORD_HEADER_LEN);
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    match record {
        WalRecord::Entry { index, term, data } => {
            out.extend_from_slice(&index.0.to_le_bytes());
            out.extend_from_slice(&term.0.to_le_bytes());
            out.extend_from_slice(data);
        }
        WalRecord::HardState(hard_state) => {
            out.extend_from_slice(&hard_state.term.0.to_le_bytes());
            out.extend_from_slice(&hard_state.vote.0.to_le_bytes());
            out.extend_from_slice(&hard_state.commit.0.to_le_bytes());
        }
        WalRecord::Metadata(metadata) => {
            out.extend_from_slice(&metadata.cluster_id.0.to_le_bytes());
            out.extend_from_slice(&metadata.member_id.0.to_le_bytes());
            out.extend_from_slice(&metadata.shard_id.0.to_le_bytes());
        }
        WalRecord::SnapshotMarker(marker) => {
            out.extend_from_slice(&marker.index.0.to_le_bytes());
            out.extend_from_slice(&marker.term.0.to_le_bytes());
        }
        WalRecord::TruncateSuffix { from } => out.extend_from_slice(&from.0.to_le_bytes()),
    }
    seal(
        out,
        payload_start - RECORD_HEADER_LEN,
        offset,
        kind as u8 | flags,
    );
}

/// Appends a segment header record (always the first record of a segment, offset 0).
pub fn encode_segment_header(out: &mut Vec<u8>, header: &SegmentHeader, flags: u8) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&header.shard_id.0.to_le_bytes());
    out.extend_from_slice(&header.sequence.to_le_bytes());
    out.extend_from_slice(&header.first_index.0.to_le_bytes());
    seal(out, start, 0, Kind::SegmentHeader as u8 | flags);
}

/// Appends a padding record of exactly `total_len` bytes (>= [`RECORD_HEADER_LEN`]).
pub fn encode_padding(out: &mut Vec<u8>, offset: u64, total_len: usize, flags: u8) {
    assert!(
        total_len >= RECORD_HEADER_LEN,
        "padding shorter than a header"
    );
    let start = out.len();
    out.resize(start + total_len, 0);
    seal(out, start, offset, Kind::Padding as u8 | flags);
}

/// Writes length, type and crc of the record that starts at `out[start]` and runs to the
/// end of `out`. `offset` is the record's position in the segment.
fn seal(out: &mut [u8], start: usize, offset: u64, type_byte: u8) {
    let length = u32::try_from(out.len() - start - 8)
        .expect("record length fits u32 (bounded by max_record_bytes)");
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 8] = type_byte;
    let checksum = crc(offset, length, type_byte, &out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// Sets `flags` on the already sealed record at `out[start..]` (which must run to the end
/// of `out`) and recomputes its crc.
pub fn add_flags(out: &mut [u8], start: usize, offset: u64, flags: u8) {
    let type_byte = out[start + 8] | flags;
    seal(out, start, offset, type_byte);
}

fn kind_of(record: &WalRecord<'_>) -> Kind {
    match record {
        WalRecord::Entry { .. } => Kind::Entry,
        WalRecord::HardState(_) => Kind::HardState,
        WalRecord::Metadata(_) => Kind::Metadata,
        WalRecord::SnapshotMarker(_) => Kind::SnapshotMarker,
        WalRecord::TruncateSuffix { .. } => Kind::TruncateSuffix,
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Decodes the record at `offset` of `segment` (the whole segment's bytes, so that the
/// crc can bind the offset and lengths can be checked against the segment end).
/// `max_payload` bounds the payload length accepted. Never panics.
pub fn decode(segment: &[u8], offset: usize, max_payload: usize) -> Decode<'_> {
    let Some(remaining) = segment.len().checked_sub(offset) else {
        return Decode::Bad(format!(
            "offset {offset} beyond segment end {}",
            segment.len()
        ));
    };
    if remaining < 4 {
        return if segment[offset..].iter().all(|byte| *byte == 0) {
            Decode::Zero
        } else {
            Decode::Bad("truncated length field".into())
        };
    }
    let length = u32_at(segment, offset);
    if length == 0 {
        return Decode::Zero;
    }
    if remaining < RECORD_HEADER_LEN {
        return Decode::Bad("truncated record header".into());
    }
    let payload_len = length as usize - 1;
    if payload_len > max_payload {
        return Decode::Bad(format!(
            "length {length} exceeds the maximum record size {max_payload}"
        ));
    }
    if payload_len > remaining - RECORD_HEADER_LEN {
        return Decode::Bad(format!("length {length} runs past the segment end"));
    }
    let stored_crc = u32_at(segment, offset + 4);
    let type_byte = segment[offset + 8];
    let payload = &segment[offset + RECORD_HEADER_LEN..offset + RECORD_HEADER_LEN + payload_len];
    if crc(offset as u64, length, type_byte, payload) != stored_crc {
        return Decode::Bad("crc mismatch".into());
    }
    let flags = type_byte & !KIND_MASK;
    let Some(kind) = Kind::from_code(type_byte & KIND_MASK) else {
        return Decode::Bad(format!("unknown record type {type_byte:#04x}"));
    };
    let fixed = |expected: usize| {
        if payload_len == expected {
            Ok(())
        } else {
            Err(Decode::Bad(format!(
                "{kind:?} payload is {payload_len} bytes, expected {expected}"
            )))
        }
    };
    let record = match kind {
        Kind::Entry => {
            if payload_len < 16 {
                return Decode::Bad(format!("entry payload is {payload_len} bytes, minimum 16"));
            }
            Decoded::Record(WalRecord::Entry {
                index: LogIndex(u64_at(payload, 0)),
                term: Term(u64_at(payload, 8)),
                data: &payload[16..],
            })
        }
        Kind::HardState => match fixed(24) {
            Err(bad) => return bad,
            Ok(()) => Decoded::Record(WalRecord::HardState(HardState {
                term: Term(u64_at(payload, 0)),
                vote: MemberId(u64_at(payload, 8)),
                commit: LogIndex(u64_at(payload, 16)),
            })),
        },
        Kind::Metadata => match fixed(24) {
            Err(bad) => return bad,
            Ok(()) => Decoded::Record(WalRecord::Metadata(Metadata {
                cluster_id: ClusterId(u64_at(payload, 0)),
                member_id: MemberId(u64_at(payload, 8)),
                shard_id: ShardId(u64_at(payload, 16)),
            })),
        },
        Kind::SnapshotMarker => match fixed(16) {
            Err(bad) => return bad,
            Ok(()) => Decoded::Record(WalRecord::SnapshotMarker(SnapshotMarker {
                index: LogIndex(u64_at(payload, 0)),
                term: Term(u64_at(payload, 8)),
            })),
        },
        Kind::TruncateSuffix => match fixed(8) {
            Err(bad) => return bad,
            Ok(()) => Decoded::Record(WalRecord::TruncateSuffix {
                from: LogIndex(u64_at(payload, 0)),
            }),
        },
        Kind::SegmentHeader => {
            if let Err(bad) = fixed(SEGMENT_HEADER_LEN) {
                return bad;
            }
            if payload[..8] != SEGMENT_MAGIC {
                return Decode::Bad("segment header magic mismatch".into());
            }
            let version = u32_at(payload, 8);
            if version != FORMAT_VERSION {
                return Decode::Bad(format!("unsupported format version {version}"));
            }
            Decoded::Segment(SegmentHeader {
                shard_id: ShardId(u64_at(payload, 16)),
                sequence: u64_at(payload, 24),
                first_index: LogIndex(u64_at(payload, 32)),
            })
        }
        Kind::Padding => Decoded::Padding,
    };
    Decode::Record {
        record,
        flags,
        next: offset + RECORD_HEADER_LEN + payload_len,
    }
}

/// Rounds `offset` up to the next block boundary.
pub const fn align_up(offset: usize) -> usize {
    offset.div_ceil(BLOCK_SIZE) * BLOCK_SIZE
}

/// Pads `out` (whose end is at segment offset `base + out.len()`) to a block boundary and
/// marks the batch's last record as its end. `last_record_start` is the index in `out` of
/// the batch's last record. After this, `out.len()` is a multiple of [`BLOCK_SIZE`] if
/// `base` is.
pub fn finish_batch(out: &mut Vec<u8>, base: u64, last_record_start: usize) {
    let end = base as usize + out.len();
    let aligned = align_up(end);
    if aligned == end {
        add_flags(
            out,
            last_record_start,
            base + last_record_start as u64,
            FLAG_BATCH_END,
        );
        return;
    }
    let gap = aligned - end;
    // A padding record needs a full header; if the gap is smaller, pad into the next
    // block too.
    let pad = if gap >= RECORD_HEADER_LEN {
        gap
    } else {
        gap + BLOCK_SIZE
    };
    encode_padding(out, end as u64, pad, FLAG_BATCH_END);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record kind survives encode then decode at a non-zero offset.
    #[test]
    fn round_trip_every_kind() {
        let records = [
            WalRecord::Entry {
                index: LogIndex(7),
                term: Term(3),
                data: b"hello",
            },
            WalRecord::HardState(HardState {
                term: Term(3),
                vote: MemberId(2),
                commit: LogIndex(6),
            }),
            WalRecord::Metadata(Metadata {
                cluster_id: ClusterId(9),
                member_id: MemberId(2),
                shard_id: ShardId(0),
            }),
            WalRecord::SnapshotMarker(SnapshotMarker {
                index: LogIndex(5),
                term: Term(2),
            }),
            WalRecord::TruncateSuffix { from: LogIndex(4) },
        ];
        let mut segment = vec![0u8; 100];
        for record in &records {
            let offset = segment.len();
            encode(&mut segment, offset as u64, record, FLAG_BATCH_START);
            match decode(&segment, offset, 1 << 20) {
                Decode::Record {
                    record: Decoded::Record(decoded),
                    flags,
                    next,
                } => {
                    assert_eq!(&decoded, record);
                    assert_eq!(flags, FLAG_BATCH_START);
                    assert_eq!(next, segment.len());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A record copied to another offset fails its crc: the crc binds the position.
    #[test]
    fn crc_binds_the_offset() {
        let mut segment = Vec::new();
        encode(
            &mut segment,
            0,
            &WalRecord::TruncateSuffix { from: LogIndex(1) },
            0,
        );
        let copy = segment.clone();
        segment.extend_from_slice(&copy);
        assert!(matches!(decode(&segment, copy.len(), 1024), Decode::Bad(_)));
    }

    /// A length larger than the limit or the segment is rejected before it is used.
    #[test]
    fn oversized_length_is_rejected() {
        let mut segment = vec![0u8; 64];
        segment[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&segment, 0, usize::MAX), Decode::Bad(_)));
        segment[..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(decode(&segment, 0, 100), Decode::Bad(_)));
    }

    /// The worked example in docs/wal-format.md is exactly what the encoder produces.
    #[test]
    fn documented_example_bytes() {
        let mut batch = Vec::new();
        let record = WalRecord::Entry {
            index: LogIndex(5),
            term: Term(2),
            data: b"hi",
        };
        encode(&mut batch, 4096, &record, FLAG_BATCH_START);
        finish_batch(&mut batch, 4096, 0);
        assert_eq!(batch.len(), BLOCK_SIZE);
        let expected_entry = [
            0x13, 0, 0, 0, 0xf8, 0x73, 0x4e, 0x64, 0x84, 5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0,
            0, 0, 0x68, 0x69,
        ];
        assert_eq!(&batch[..27], &expected_entry);
        assert_eq!(
            &batch[27..36],
            &[0xdd, 0x0f, 0, 0, 0x58, 0xb3, 0xfb, 0xa2, 0x47]
        );
        assert!(batch[36..].iter().all(|byte| *byte == 0));
    }

    /// finish_batch always ends on a block boundary with a batch-end record.
    #[test]
    fn finish_batch_aligns() {
        for payload in [
            0usize,
            1,
            4096 - 9 - 16 - 9,
            4096 - 9 - 16 - 5,
            4096 - 9 - 16,
        ] {
            let data = vec![1u8; payload];
            let mut out = Vec::new();
            encode(
                &mut out,
                0,
                &WalRecord::Entry {
                    index: LogIndex(1),
                    term: Term(1),
                    data: &data,
                },
                FLAG_BATCH_START,
            );
            finish_batch(&mut out, 0, 0);
            assert_eq!(out.len() % BLOCK_SIZE, 0, "payload {payload}");
            let mut offset = 0;
            let mut last_flags = 0;
            while offset < out.len() {
                match decode(&out, offset, 1 << 20) {
                    Decode::Record { flags, next, .. } => {
                        last_flags = flags;
                        offset = next;
                    }
                    other => panic!("payload {payload}: {other:?}"),
                }
            }
            assert_eq!(offset, out.len());
            assert_ne!(last_flags & FLAG_BATCH_END, 0);
        }
    }
}
