//! The IO boundary: everything the WAL and the snapshot store do to a disk goes through
//! [`Disk`] and [`DiskFile`], so tests can swap in [`crate::sim::SimDisk`] and inject
//! torn writes, lost unsynced data, bit flips and errors.
//!
//! Contract the WAL relies on (and the simulator models):
//! - `write_at` is given block-aligned offsets and lengths that are multiples of
//!   [`crate::format::BLOCK_SIZE`]; its bytes are durable only after `sync_data` returns
//!   `Ok`. A crash may persist any subset of the sectors written since the last sync.
//! - a created, renamed or removed name is durable only after `sync_dir` on its folder.
//! - an error from `write_at` or `sync_data` leaves durability unknown: callers must not
//!   retry (see [`crate::WalError::Poisoned`]).
//!
//! The futures are `!Send` by design: a disk belongs to one core's executor.

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

/// A file system as the WAL sees it.
#[allow(async_fn_in_trait)] // Polled on one core's executor only; `Send` bounds would be wrong.
pub trait Disk: 'static {
    type File: DiskFile;
    /// Read-only view of a whole file (a memory map on a real disk).
    type Mapped: Deref<Target = [u8]>;

    /// Creates (or truncates) a file for reading and writing.
    async fn create_file(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open_file(&self, path: &Path) -> io::Result<Self::File>;
    /// Names (not paths) of the entries of `dir`, sorted.
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Maps a whole file read-only. The caller must not write the file while it is mapped.
    async fn map_file(&self, path: &Path) -> io::Result<Self::Mapped>;
    /// Waits `duration` (the batch linger); a simulator may return at once.
    async fn sleep(&self, duration: Duration);
}

/// An open file.
#[allow(async_fn_in_trait)] // See `Disk`.
pub trait DiskFile: 'static {
    /// Writes all of `data` at `offset` (both block aligned).
    async fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync: makes written data and the file length durable.
    async fn sync_data(&self) -> io::Result<()>;
    /// Makes the file at least `len` bytes long, zero filled, with space reserved.
    async fn allocate(&self, len: u64) -> io::Result<()>;
    /// Sets the file length exactly (used to trim a snapshot's padding block).
    async fn set_len(&self, len: u64) -> io::Result<()>;
    async fn file_len(&self) -> io::Result<u64>;
}
