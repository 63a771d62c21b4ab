//! Snapshot files: opaque bytes (the engine's rkyv encoding) saved atomically and
//! validated before use.
//!
//! Save (streamed through [`SnapshotFileWriter`]; [`SnapshotStore::save`] is a thin
//! wrapper): write the bytes to `<name>.snap.tmp` through a fixed staging buffer, keeping
//! the file's first block in memory; at `finish`, write the last blocks, then the first
//! block with the header (payload length and crc are only known at the end), trim,
//! fdatasync, rename to `<name>.snap`, fsync the folder, then delete all but the newest
//! `keep` snapshots (and stale temp files no writer is using). Load: map the newest
//! `.snap` file and check magic, version, header crc, length and payload crc before
//! handing out a single byte.
//!
//! Memory: a writer holds its staging buffer (`SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT`,
//! 1 MiB) plus one block, never the whole snapshot.
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
//! before it may already be released); a temp file a live writer owns is never pruned.
//! Never: write into a `.snap` file, hand out unvalidated bytes, or retry a failed write.

use std::cell::RefCell;
use std::collections::BTreeSet;
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
/// Staging buffer of a [`SnapshotFileWriter`], and so the largest `write_at` it issues:
/// bounds a snapshot save's memory (plus one held block). A multiple of `BLOCK_SIZE`.
pub const SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT: usize = 256 * BLOCK_SIZE;

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
    write_buffer_bytes: usize,
    /// Temp file names that a live [`SnapshotFileWriter`] owns: prune leaves them alone.
    writing: Rc<RefCell<BTreeSet<String>>>,
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

fn encode_header(
    index: LogIndex,
    term: Term,
    payload_len: u64,
    payload_crc: u32,
) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&index.0.to_le_bytes());
    header[24..32].copy_from_slice(&term.0.to_le_bytes());
    header[32..40].copy_from_slice(&payload_len.to_le_bytes());
    header[40..44].copy_from_slice(&payload_crc.to_le_bytes());
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
            write_buffer_bytes: SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT,
            writing: Rc::new(RefCell::new(BTreeSet::new())),
        }
    }

    /// Sets the staging buffer of writers begun from now on (tests use a few blocks to
    /// cover many flushes cheaply). Panics unless it is a positive multiple of
    /// [`BLOCK_SIZE`].
    pub fn with_write_buffer_bytes(mut self, bytes: usize) -> SnapshotStore<D> {
        assert!(
            bytes > 0 && bytes % BLOCK_SIZE == 0,
            "snapshot write buffer must be a positive multiple of {BLOCK_SIZE} bytes, got {bytes}"
        );
        self.write_buffer_bytes = bytes;
        self
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
    /// old snapshots. When this returns `Ok`, a restart will find this snapshot. The same
    /// path as a streamed save: `begin`, one `write`, `finish` (`abort` on error).
    pub async fn save(&self, index: LogIndex, term: Term, data: &[u8]) -> Result<SnapshotMeta> {
        let mut writer = self.begin(index, term).await?;
        if let Err(error) = writer.write(data).await {
            // The write error is the one worth reporting; a failed removal leaves a temp
            // file that the next successful save prunes.
            let _ = writer.abort().await;
            return Err(error);
        }
        writer.finish().await
    }

    /// Starts writing the snapshot of `index`/`term` to a temporary file
    /// (`<name>.snap.tmp`). Feed it with [`SnapshotFileWriter::write`], then call
    /// [`SnapshotFileWriter::finish`], or [`SnapshotFileWriter::abort`] to give up.
    /// Nothing a restart looks at changes until `finish` renames the file into place.
    /// Fails with [`WalError::SnapshotInProgress`] if a writer for the same snapshot is
    /// still alive.
    pub async fn begin(&self, index: LogIndex, term: Term) -> Result<SnapshotFileWriter<D>> {
        let name = snapshot_name(index, term);
        let temp_name = format!("{name}.tmp");
        let path = self.dir.join(&name);
        let temp = self.dir.join(&temp_name);
        // Claimed before the file exists so that no prune can race with it; released
        // when the writer is dropped, however it ends.
        if !self.writing.borrow_mut().insert(temp_name.clone()) {
            return Err(WalError::SnapshotInProgress { path: temp });
        }
        let claim = TempClaim {
            writing: self.writing.clone(),
            temp_name,
        };
        self.disk
            .create_dir_all(&self.dir)
            .await
            .map_err(|source| WalError::io("create snapshot directory", &self.dir, source))?;
        let file = self
            .disk
            .create_file(&temp)
            .await
            .map_err(|source| WalError::io("create snapshot", &temp, source))?;
        let mut buffer = Vec::with_capacity(self.write_buffer_bytes);
        // The header's place: filled in by `finish`, once length and crc are known.
        buffer.resize(SNAPSHOT_HEADER_LEN, 0);
        Ok(SnapshotFileWriter {
            store: SnapshotStore {
                disk: self.disk.clone(),
                dir: self.dir.clone(),
                keep: self.keep,
                write_buffer_bytes: self.write_buffer_bytes,
                writing: self.writing.clone(),
            },
            index,
            term,
            path,
            temp,
            file,
            buffer,
            buffer_offset: 0,
            first_block: None,
            payload_len: 0,
            payload_crc: crc32fast::Hasher::new(),
            failed: None,
            _claim: claim,
        })
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
        {
            let writing = self.writing.borrow();
            victims.extend(
                names
                    .iter()
                    .filter(|name| name.ends_with(".snap.tmp") && !writing.contains(*name))
                    .map(|name| self.dir.join(name)),
            );
        }
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

/// Marks a temp file as owned by a live writer; dropping it (however the writer ends,
/// including a dropped future) hands the file over to the next prune.
#[derive(Debug)]
struct TempClaim {
    writing: Rc<RefCell<BTreeSet<String>>>,
    temp_name: String,
}

impl Drop for TempClaim {
    fn drop(&mut self) {
        self.writing.borrow_mut().remove(&self.temp_name);
    }
}

/// A snapshot being written: bytes go through a fixed staging buffer into
/// `<name>.snap.tmp` with block-aligned writes. Holds at most the buffer plus the file's
/// first block (which carries the header, so it is written last, by `finish`).
///
/// End it with [`finish`](Self::finish) or [`abort`](Self::abort). Dropping it instead
/// leaves the temp file on disk until the next successful save prunes it (harmless: a
/// restart never reads temp files). After any error the writer accepts nothing more
/// ([`WalError::SnapshotWriterFailed`]); call `abort`.
#[derive(Debug)]
pub struct SnapshotFileWriter<D: Disk> {
    store: SnapshotStore<D>,
    index: LogIndex,
    term: Term,
    path: PathBuf,
    temp: PathBuf,
    file: D::File,
    /// File bytes from `buffer_offset` on, not yet written. Never longer than the
    /// store's `write_buffer_bytes`.
    buffer: Vec<u8>,
    /// File offset of `buffer[0]`; a multiple of the buffer size.
    buffer_offset: u64,
    /// The file's first block (header placeholder and first payload bytes), held back
    /// from the first flush so that the header can be written in place at the end.
    first_block: Option<Box<[u8]>>,
    payload_len: u64,
    payload_crc: crc32fast::Hasher,
    /// The operation that failed, if one did: nothing more may be written.
    failed: Option<&'static str>,
    _claim: TempClaim,
}

impl<D: Disk> SnapshotFileWriter<D> {
    /// Where the snapshot will be once finished.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Payload bytes accepted so far.
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    fn check_usable(&self) -> Result<()> {
        match self.failed {
            None => Ok(()),
            Some(operation) => Err(WalError::SnapshotWriterFailed {
                path: self.temp.clone(),
                operation,
            }),
        }
    }

    /// Records that `operation` failed: durability of the temp file is unknown, so the
    /// writer is done (never retry a failed write or fdatasync).
    fn fail(&mut self, operation: &'static str, source: std::io::Error) -> WalError {
        self.failed = Some(operation);
        WalError::io(operation, &self.temp, source)
    }

    /// Appends bytes (any size, any number of calls; buffered into block-aligned
    /// O_DIRECT-friendly writes of the buffer size).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.check_usable()?;
        let capacity = self.store.write_buffer_bytes;
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min(capacity - self.buffer.len());
            self.buffer.extend_from_slice(&rest[..take]);
            self.payload_crc.update(&rest[..take]);
            self.payload_len += take as u64;
            rest = &rest[take..];
            if self.buffer.len() == capacity {
                self.flush_full_buffer().await?;
            }
        }
        Ok(())
    }

    /// Writes a full buffer (holding back the first block of the file) and empties it.
    async fn flush_full_buffer(&mut self) -> Result<()> {
        assert_eq!(self.buffer.len(), self.store.write_buffer_bytes);
        let (data, offset) = if self.buffer_offset == 0 {
            self.first_block = Some(self.buffer[..BLOCK_SIZE].into());
            (&self.buffer[BLOCK_SIZE..], BLOCK_SIZE as u64)
        } else {
            (&self.buffer[..], self.buffer_offset)
        };
        if !data.is_empty() {
            if let Err(source) = self.file.write_at(data, offset).await {
                return Err(self.fail("write snapshot", source));
            }
        }
        self.buffer_offset += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Writes the rest and the header, fdatasyncs, renames into place, fsyncs the folder
    /// and prunes to the newest `keep`. When this returns `Ok`, a restart will find this
    /// snapshot. An error before the rename removes the temp file (best effort; a removal
    /// that fails leaves it to the next successful save's prune); an error after it may
    /// leave the new snapshot in place, complete and valid.
    pub async fn finish(mut self) -> Result<SnapshotMeta> {
        if let Err(error) = self.write_out().await {
            // The write error is the one worth reporting.
            let _ = self.abort().await;
            return Err(error);
        }
        let store = &self.store;
        if let Err(source) = store.disk.rename(&self.temp, &self.path).await {
            let error = WalError::io("rename snapshot", &self.temp, source);
            let _ = self.abort().await;
            return Err(error);
        }
        store
            .disk
            .sync_dir(&store.dir)
            .await
            .map_err(|source| WalError::io("sync snapshot directory", &store.dir, source))?;
        // The temp name is gone: release the claim before pruning.
        drop(self._claim);
        store.prune().await?;
        Ok(SnapshotMeta {
            index: self.index,
            term: self.term,
            path: self.path,
        })
    }

    /// Writes what is buffered, then the first block with the header, trims the padding
    /// and fdatasyncs: afterwards the temp file is complete and durable.
    async fn write_out(&mut self) -> Result<()> {
        self.check_usable()?;
        let header = encode_header(
            self.index,
            self.term,
            self.payload_len,
            self.payload_crc.clone().finalize(),
        );
        let total = SNAPSHOT_HEADER_LEN as u64 + self.payload_len;
        assert_eq!(
            self.buffer_offset + self.buffer.len() as u64,
            total,
            "every accepted byte is written or buffered"
        );
        let mut tail = std::mem::take(&mut self.buffer);
        let mut tail_offset = self.buffer_offset;
        match self.first_block.take() {
            // Small snapshot: the whole file is in the buffer, header included.
            None => tail[..SNAPSHOT_HEADER_LEN].copy_from_slice(&header),
            Some(mut first_block) => {
                if !tail.is_empty() {
                    tail.resize(align_up(tail.len()), 0);
                    if let Err(source) = self.file.write_at(&tail, tail_offset).await {
                        return Err(self.fail("write snapshot", source));
                    }
                }
                first_block[..SNAPSHOT_HEADER_LEN].copy_from_slice(&header);
                tail = first_block.into_vec();
                tail_offset = 0;
            }
        }
        tail.resize(align_up(tail.len()), 0);
        if let Err(source) = self.file.write_at(&tail, tail_offset).await {
            return Err(self.fail("write snapshot", source));
        }
        drop(tail);
        if let Err(source) = self.file.set_len(total).await {
            return Err(self.fail("trim snapshot", source));
        }
        if let Err(source) = self.file.sync_data().await {
            return Err(self.fail("fdatasync snapshot", source));
        }
        Ok(())
    }

    /// Drops the temporary file (on error paths and at shutdown). Nothing a restart
    /// reads changes. Works after a failed `write` too.
    pub async fn abort(self) -> Result<()> {
        drop(self.file);
        self.store
            .disk
            .remove_file(&self.temp)
            .await
            .map_err(|source| WalError::io("remove snapshot temp file", &self.temp, source))
    }
}
