//! Segment files: their names, listing them in order, and making the last one ready
//! for appends after recovery.
//!
//! Invariants: segment sequence numbers on disk are contiguous; a name that does not
//! parse is not a segment and is ignored. Never: delete or rewrite a segment here.

use std::path::{Path, PathBuf};

use crate::disk::{Disk, DiskFile};
use crate::error::{Result, WalError};
use crate::format::align_up;
use crate::replay::SegmentScan;
use crate::wal::WalConfig;

/// Zeroing a torn tail or a new segment writes at most this much per call.
pub(crate) const ZERO_CHUNK_BYTES: usize = 1024 * 1024;

/// Name of the segment file prepared ahead of need. Not a segment name: recovery ignores
/// it (and removes a stale one).
pub(crate) const PREPARED_SEGMENT_NAME: &str = "next-segment.prep";

#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) sequence: u64,
    pub(crate) first_index: u64,
    pub(crate) path: PathBuf,
}

/// Segment file name: `<sequence, 16 hex digits>-<first index, 16 hex digits>.wal`.
pub(crate) fn segment_name(sequence: u64, first_index: u64) -> String {
    format!("{sequence:016x}-{first_index:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (sequence, first_index) = stem.split_once('-')?;
    if sequence.len() != 16 || first_index.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(sequence, 16).ok()?,
        u64::from_str_radix(first_index, 16).ok()?,
    ))
}

/// Lists the segments of `dir` in sequence order (checking there is no hole), after
/// removing a stale prepared segment left by an earlier run.
pub(crate) async fn list_segments<D: Disk>(disk: &D, dir: &Path) -> Result<Vec<SegmentInfo>> {
    let names = disk
        .list_dir(dir)
        .await
        .map_err(|source| WalError::io("list WAL directory", dir, source))?;
    if names.iter().any(|name| name == PREPARED_SEGMENT_NAME) {
        let stale = dir.join(PREPARED_SEGMENT_NAME);
        disk.remove_file(&stale)
            .await
            .map_err(|source| WalError::io("remove stale prepared segment", &stale, source))?;
    }
    let mut segments: Vec<SegmentInfo> = names
        .iter()
        .filter_map(|name| {
            parse_segment_name(name).map(|(sequence, first_index)| SegmentInfo {
                sequence,
                first_index,
                path: dir.join(name),
            })
        })
        .collect();
    segments.sort_by_key(|segment| segment.sequence);
    for pair in segments.windows(2) {
        if pair[1].sequence != pair[0].sequence + 1 {
            return Err(WalError::SegmentSequence {
                dir: dir.to_path_buf(),
                reason: format!(
                    "segment {} follows segment {}",
                    pair[1].sequence, pair[0].sequence
                ),
            });
        }
    }
    Ok(segments)
}

/// Makes the last segment ready for appends: full length reserved, torn tail zeroed and
/// synced.
pub(crate) async fn prepare_last_segment<F: DiskFile>(
    file: &F,
    path: &Path,
    config: &WalConfig,
    scan: &SegmentScan,
) -> Result<()> {
    let length = file
        .file_len()
        .await
        .map_err(|source| WalError::io("stat WAL segment", path, source))?;
    let mut dirty = length < config.segment_bytes;
    if dirty {
        file.allocate(config.segment_bytes)
            .await
            .map_err(|source| WalError::io("preallocate WAL segment", path, source))?;
    }
    if scan.dirty_until > scan.end {
        dirty = true;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut offset = scan.end;
        while offset < scan.dirty_until {
            let chunk = (scan.dirty_until - offset).min(ZERO_CHUNK_BYTES as u64);
            let chunk = align_up(chunk as usize);
            file.write_at(&zeros[..chunk], offset)
                .await
                .map_err(|source| WalError::io("zero torn WAL tail", path, source))?;
            offset += chunk as u64;
        }
    }
    if dirty {
        file.sync_data()
            .await
            .map_err(|source| WalError::io("fdatasync WAL segment", path, source))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segment names round-trip and foreign names are ignored.
    #[test]
    fn segment_names_round_trip() {
        let name = segment_name(3, 0x1234);
        assert_eq!(parse_segment_name(&name), Some((3, 0x1234)));
        assert_eq!(parse_segment_name("0000000000000003.wal"), None);
        assert_eq!(parse_segment_name("snapshot.tmp"), None);
    }
}
