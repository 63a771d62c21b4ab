//! Snapshot files: opaque bytes (the engine's rkyv encoding) saved atomically and
//! validated before use.
//!
//! Save: write header and bytes to `<name>.tmp`, fdatasync, rename to `<name>.snap`,
//! fsync the folder, then delete all but the newest `keep` snapshots (and stale temp
//! files). Load: map the newest `.snap` file and check magic, version, header crc, length
//! and payload crc before handing out a single byte.
//!
//! File layout (docs/wal-format.md, "Snapshot files"), integers little-endian:
//! ```text
//!  0  [u8; 8] magic "corekvSN"     8  u32 version (1)     12 u32 reserved (0)
//! 16  u64 index                   24  u64 term           32 u64 payload length
//! 40  u32 payload crc32           44  [u8; 16] reserved (0)
//! 60  u32 crc32 of bytes 0..60    64  payload
//! ```
//!
//! Invariants: a `.snap` name only ever refers to a complete, synced file; a snapshot
//! that fails validation is an error naming the file, never silently skipped (the WAL
//! before it may already be released). Never: write into a `.snap` file, or hand out
//! unvalidated bytes.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::disk::{Disk, DiskFile};
use crate::error::{Result, WalError};
use crate::format::{align_up, BLOCK_SIZE};
use crate::types::{LogIndex, Term};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"corekvSN";
pub const SNAPSHOT_VERSION: u32 = 1;
pub const SNAPSHOT_HEADER_LEN: usize = 64;
/// Snapshots kept by default (etcd's `--max-snapshots` default is 5).
pub const SNAPSHOTS_KEPT_DEFAULT: usize = 5;
/// Bytes written per `write_at` call when saving: bounds the staging buffer.
const SAVE_CHUNK_BYTES: usize = 1024 * BLOCK_SIZE;

/// Identity of a saved snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: LogIndex,
    pub term: Term,
    pub path: PathBuf,
}

/// A validated snapshot, its bytes still in the map (or simulator buffer).
#[derive(Debug)]
pub struct LoadedSnapshot<M> {
    pub meta: SnapshotMeta,
    bytes: M,
}

impl<M: std::ops::Deref<Target = [u8]>> LoadedSnapshot<M> {
    /// The opaque snapshot bytes, already checked against their crc.
    pub fn data(&self) -> &[u8] {
        &self.bytes[SNAPSHOT_HEADER_LEN..]
    }
}

/// The snapshot folder of one shard.
#[derive(Debug)]
pub struct SnapshotStore<D: Disk> {
    disk: Rc<D>,
    dir: PathBuf,
    keep: usize,
}

fn snapshot_name(index: LogIndex, term: Term) -> String {
    format!("{:016x}-{:016x}.snap", index.0, term.0)
}

fn parse_snapshot_name(name: &str) -> Option<(LogIndex, Term)> {
    let (index, term) = name.strip_suffix(".snap")?.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        LogIndex(u64::from_str_radix(index, 16).ok()?),
        Term(u64::from_str_radix(term, 16).ok()?),
    ))
}

fn encode_header(index: LogIndex, term: Term, data: &[u8]) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&index.0.to_le_bytes());
    header[24..32].copy_from_slice(&term.0.to_le_bytes());
    header[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    header[40..44].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&header_crc.to_le_bytes());
    header
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(value)
}

fn half_word(bytes: &[u8], at: usize) -> u32 {
    let mut value = [0u8; 4];
    value.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(value)
}

/// Checks a whole snapshot file; returns its index and term. Never panics.
pub fn validate_snapshot(bytes: &[u8]) -> std::result::Result<(LogIndex, Term), String> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than the header",
            bytes.len()
        ));
    }
    let header = &bytes[..SNAPSHOT_HEADER_LEN];
    if header[0..8] != SNAPSHOT_MAGIC {
        return Err("bad magic".into());
    }
    if crc32fast::hash(&header[..60]) != half_word(header, 60) {
        return Err("header crc mismatch".into());
    }
    let version = half_word(header, 8);
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported snapshot version {version}"));
    }
    let payload_len = word(header, 32);
    let actual = (bytes.len() - SNAPSHOT_HEADER_LEN) as u64;
    if payload_len != actual {
        return Err(format!(
            "header says {payload_len} payload bytes, file holds {actual}"
        ));
    }
    if crc32fast::hash(&bytes[SNAPSHOT_HEADER_LEN..]) != half_word(header, 40) {
        return Err("payload crc mismatch".into());
    }
    Ok((LogIndex(word(header, 16)), Term(word(header, 24))))
}

impl<D: Disk> SnapshotStore<D> {
    /// A store in `dir` keeping the newest `keep` (at least 1) snapshots.
    pub fn new(disk: Rc<D>, dir: impl Into<PathBuf>, keep: usize) -> SnapshotStore<D> {
        SnapshotStore {
            disk,
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    /// Snapshots on disk (by name), oldest first.
    pub async fn list(&self) -> Result<Vec<SnapshotMeta>> {
        self.disk
            .create_dir_all(&self.dir)
            .await
            .map_err(|source| WalError::io("create snapshot directory", &self.dir, source))?;
        let names = self
            .disk
            .list_dir(&self.dir)
            .await
            .map_err(|source| WalError::io("list snapshot directory", &self.dir, source))?;
        let mut snapshots: Vec<SnapshotMeta> = names
            .iter()
            .filter_map(|name| {
                parse_snapshot_name(name).map(|(index, term)| SnapshotMeta {
                    index,
                    term,
                    path: self.dir.join(name),
                })
            })
            .collect();
        snapshots.sort_by_key(|meta| (meta.index, meta.term));
        Ok(snapshots)
    }

    /// Saves `data` as the snapshot at (`index`, `term`) and makes it durable; then prunes
    /// old snapshots. When this returns `Ok`, a restart will find this snapshot.
    pub async fn save(&self, index: LogIndex, term: Term, data: &[u8]) -> Result<SnapshotMeta> {
        self.disk
            .create_dir_all(&self.dir)
            .await
            .map_err(|source| WalError::io("create snapshot directory", &self.dir, source))?;
        let name = snapshot_name(index, term);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}.tmp"));
        let header = encode_header(index, term, data);
        let total = SNAPSHOT_HEADER_LEN + data.len();
        let io = |operation: &'static str, at: &Path| {
            let at = at.to_path_buf();
            move |source| WalError::io(operation, at, source)
        };
        let file = self
            .disk
            .create_file(&temp)
            .await
            .map_err(io("create snapshot", &temp))?;
        let mut chunk = Vec::with_capacity(SAVE_CHUNK_BYTES);
        let mut offset = 0usize;
        while offset < total {
            let end = (offset + SAVE_CHUNK_BYTES).min(total);
            chunk.clear();
            if offset < SNAPSHOT_HEADER_LEN {
                chunk.extend_from_slice(&header[offset..]);
            }
            let data_from = offset.max(SNAPSHOT_HEADER_LEN) - SNAPSHOT_HEADER_LEN;
            chunk.extend_from_slice(&data[data_from..end - SNAPSHOT_HEADER_LEN]);
            chunk.resize(align_up(chunk.len()), 0);
            file.write_at(&chunk, offset as u64)
                .await
                .map_err(io("write snapshot", &temp))?;
            offset = end;
        }
        file.set_len(total as u64)
            .await
            .map_err(io("trim snapshot", &temp))?;
        file.sync_data()
            .await
            .map_err(io("fdatasync snapshot", &temp))?;
        drop(file);
        self.disk
            .rename(&temp, &path)
            .await
            .map_err(io("rename snapshot", &temp))?;
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(io("sync snapshot directory", &self.dir))?;
        self.prune().await?;
        Ok(SnapshotMeta { index, term, path })
    }

    /// Removes stale temp files and every snapshot but the newest `keep`.
    async fn prune(&self) -> Result<()> {
        let names = self
            .disk
            .list_dir(&self.dir)
            .await
            .map_err(|source| WalError::io("list snapshot directory", &self.dir, source))?;
        let snapshots = self.list().await?;
        let excess = snapshots.len().saturating_sub(self.keep);
        let mut victims: Vec<PathBuf> = snapshots[..excess]
            .iter()
            .map(|meta| meta.path.clone())
            .collect();
        victims.extend(
            names
                .iter()
                .filter(|name| name.ends_with(".snap.tmp"))
                .map(|name| self.dir.join(name)),
        );
        if victims.is_empty() {
            return Ok(());
        }
        for victim in &victims {
            self.disk
                .remove_file(victim)
                .await
                .map_err(|source| WalError::io("remove old snapshot", victim, source))?;
        }
        self.disk
            .sync_dir(&self.dir)
            .await
            .map_err(|source| WalError::io("sync snapshot directory", &self.dir, source))
    }

    /// Maps and validates the newest snapshot. `Ok(None)` when there is none; an error
    /// naming the file when the newest one is invalid.
    pub async fn load_newest(&self) -> Result<Option<LoadedSnapshot<D::Mapped>>> {
        let Some(meta) = self.list().await?.pop() else {
            return Ok(None);
        };
        let bytes = self
            .disk
            .map_file(&meta.path)
            .await
            .map_err(|source| WalError::io("map snapshot", &meta.path, source))?;
        let invalid = |reason: String| WalError::InvalidSnapshot {
            path: meta.path.clone(),
            reason,
        };
        let (index, term) = validate_snapshot(&bytes).map_err(invalid)?;
        if (index, term) != (meta.index, meta.term) {
            return Err(invalid(format!(
                "header says index {} term {}, name says index {} term {}",
                index.0, term.0, meta.index.0, meta.term.0
            )));
        }
        Ok(Some(LoadedSnapshot { meta, bytes }))
    }
}
