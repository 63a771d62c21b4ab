//! The real disk: glommio DMA files (O_DIRECT, submitted through io_uring) for every
//! write, read and sync, and memmap2 for reading whole files at recovery and snapshot
//! load.
//!
//! Invariants: a file is written only with block-aligned offsets and lengths through an
//! aligned DMA buffer; no write goes through the page cache. Must be used from inside a
//! glommio `LocalExecutor` (its futures need the executor's io_uring reactor).
//!
//! Never: use buffered `std::fs` writes; write to a file while a map of it is alive.

use std::io;
use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use glommio::io::{DmaFile, OpenOptions};

use crate::disk::{Disk, DiskFile};

/// The disk under a glommio executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct GlommioDisk;

/// An open O_DIRECT file.
#[derive(Debug)]
pub struct GlommioFile {
    file: DmaFile,
}

/// A read-only map of a whole file (empty files are not mapped: mmap rejects length 0).
#[derive(Debug)]
pub enum MappedFile {
    Empty,
    Mapped(memmap2::Mmap),
}

impl Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            MappedFile::Empty => &[],
            MappedFile::Mapped(map) => map,
        }
    }
}

impl Disk for GlommioDisk {
    type File = GlommioFile;
    type Mapped = MappedFile;

    async fn create_file(&self, path: &Path) -> io::Result<GlommioFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await?;
        Ok(GlommioFile { file })
    }

    async fn open_file(&self, path: &Path) -> io::Result<GlommioFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await?;
        Ok(GlommioFile { file })
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        // Directory listing happens at open and segment release only, never per append.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let directory = glommio::io::Directory::open(dir).await?;
        directory.sync().await?;
        directory.close().await?;
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        Ok(glommio::io::rename(from, to).await?)
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        Ok(glommio::io::remove(path).await?)
    }

    async fn map_file(&self, path: &Path) -> io::Result<MappedFile> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(MappedFile::Empty);
        }
        // SAFETY: the map is read-only and the WAL and snapshot store never write a file
        // while a map of it is alive (segments are mapped only during recovery, before
        // any append; snapshot files are immutable once renamed into place). Another
        // process modifying the data folder is outside the contract.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(MappedFile::Mapped(map))
    }

    async fn sleep(&self, duration: Duration) {
        glommio::timer::sleep(duration).await;
    }
}

impl DiskFile for GlommioFile {
    async fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut written = 0usize;
        while written < data.len() {
            let rest = &data[written..];
            let mut buffer = self.file.alloc_dma_buffer(rest.len());
            buffer.as_bytes_mut().copy_from_slice(rest);
            let count = self.file.write_at(buffer, offset + written as u64).await?;
            if count == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "O_DIRECT write wrote nothing",
                ));
            }
            written += count;
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        Ok(self.file.fdatasync().await?)
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        Ok(self.file.pre_allocate(len, false).await?)
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        Ok(self.file.truncate(len).await?)
    }

    async fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.file_size().await?)
    }
}
