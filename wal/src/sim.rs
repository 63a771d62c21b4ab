//! A simulated disk and a deterministic single-threaded executor, for crash and fault
//! tests of the WAL and snapshot store (and for a cluster simulator that wants a WAL).
//!
//! The disk keeps, per file, the bytes a reader sees now and the bytes that are durable.
//! A write is durable after `sync_data`; a name after `sync_dir` of its folder. At
//! [`SimDisk::restart`] ("power loss") every file falls back to its durable bytes plus,
//! depending on [`CrashMode`], none, all, or a seeded random subset of the 512-byte
//! sectors written since its last sync: a torn write. Faults: the Nth operation can fail
//! with any errno, or the disk can "crash" at the Nth operation, after which every
//! operation fails until restart. Bits can be flipped in durable data.
//!
//! Invariants: everything is driven by one seed and the operation count, so a run
//! replays exactly; iteration is over ordered maps only. Folders are durable as soon as
//! they are created (the WAL creates its folder once at open).
//!
//! Never: touch the real file system, read a clock, or use a global RNG.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::{poll_fn, Future};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::disk::{Disk, DiskFile};
use crate::format::BLOCK_SIZE;

/// Granularity at which a crash tears an unsynced write.
pub const SECTOR_BYTES: usize = 512;

/// What survives of unsynced writes at a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing written since the last sync survives.
    LoseUnsynced,
    /// Everything written survives (a process crash, not a power loss).
    KeepUnsynced,
    /// Each unsynced sector survives or not, decided by the disk's seeded RNG.
    TearUnsynced,
}

#[derive(Debug, Clone)]
enum Fault {
    Error(i32),
    Crash,
}

#[derive(Debug, Default)]
struct SimFile {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<(usize, Vec<u8>)>,
}

#[derive(Debug)]
struct SimState {
    files: BTreeMap<u64, SimFile>,
    next_file_id: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    operations: u64,
    faults: BTreeMap<u64, Fault>,
    crashed: bool,
    rng: u64,
    yield_on_io: bool,
}

impl SimState {
    fn next_random(&mut self) -> u64 {
        // splitmix64: small, seedable, good enough to pick sectors.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.rng;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }

    /// Counts one operation and applies any fault planned for it. Returns whether this
    /// operation is the crash point (the caller may leave a partial effect behind).
    fn begin(&mut self) -> io::Result<bool> {
        self.operations += 1;
        if self.crashed {
            return Err(io::Error::other("simulated disk has crashed"));
        }
        match self.faults.remove(&self.operations) {
            None => Ok(false),
            Some(Fault::Error(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Fault::Crash) => {
                self.crashed = true;
                Ok(true)
            }
        }
    }

    fn file(&mut self, id: u64) -> io::Result<&mut SimFile> {
        self.files
            .get_mut(&id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file no longer exists"))
    }
}

fn crash_error() -> io::Error {
    io::Error::other("simulated disk crashed during this operation")
}

/// A simulated disk. Clones share the same state.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Rc<RefCell<SimState>>,
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Rc::new(RefCell::new(SimState {
                files: BTreeMap::new(),
                next_file_id: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::from([PathBuf::from("/")]),
                operations: 0,
                faults: BTreeMap::new(),
                crashed: false,
                rng: seed,
                yield_on_io: false,
            })),
        }
    }

    /// Makes every operation yield to the executor once before it takes effect, so
    /// appenders interleave with a batch in flight as they would on a real disk.
    pub fn set_yield_on_io(&self, enabled: bool) {
        self.state.borrow_mut().yield_on_io = enabled;
    }

    /// Operations performed so far (every trait call counts one).
    pub fn operation_count(&self) -> u64 {
        self.state.borrow().operations
    }

    /// Operation number `operation` (1-based, counted from the disk's creation) fails
    /// with `errno` (e.g. `libc::EIO`, `libc::ENOSPC`) and has no effect.
    pub fn fail_operation(&self, operation: u64, errno: i32) {
        self.state
            .borrow_mut()
            .faults
            .insert(operation, Fault::Error(errno));
    }

    /// The disk dies at operation number `operation`: a write at that point is left
    /// unsynced (so it can survive torn), and it and every later operation fail.
    pub fn crash_at_operation(&self, operation: u64) {
        self.state
            .borrow_mut()
            .faults
            .insert(operation, Fault::Crash);
    }

    pub fn has_crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// Power loss (or process crash, with [`CrashMode::KeepUnsynced`]) and reboot: every
    /// file and name falls back to what was durable plus what `mode` keeps of unsynced
    /// writes. Planned faults are cleared. Handles opened before are invalid afterwards.
    pub fn restart(&self, mode: CrashMode) {
        let mut state = self.state.borrow_mut();
        let ids: Vec<u64> = state.files.keys().copied().collect();
        for id in ids {
            let unsynced = std::mem::take(&mut state.file(id).expect("id listed above").unsynced);
            let mut survived = state.files[&id].durable.clone();
            for (offset, data) in unsynced {
                for (sector, chunk) in data.chunks(SECTOR_BYTES).enumerate() {
                    let keep = match mode {
                        CrashMode::LoseUnsynced => false,
                        CrashMode::KeepUnsynced => true,
                        CrashMode::TearUnsynced => state.next_random() & 1 == 1,
                    };
                    if keep {
                        let at = offset + sector * SECTOR_BYTES;
                        if survived.len() < at + chunk.len() {
                            survived.resize(at + chunk.len(), 0);
                        }
                        survived[at..at + chunk.len()].copy_from_slice(chunk);
                    }
                }
            }
            if mode == CrashMode::KeepUnsynced {
                survived = state.files[&id].current.clone();
            }
            let file = state.file(id).expect("id listed above");
            file.current = survived.clone();
            file.durable = survived;
        }
        if mode != CrashMode::KeepUnsynced {
            state.names = state.durable_names.clone();
        } else {
            state.durable_names = state.names.clone();
        }
        let live: BTreeSet<u64> = state.names.values().copied().collect();
        state.files.retain(|id, _| live.contains(id));
        state.faults.clear();
        state.crashed = false;
    }

    /// Flips one bit of a file, in its current and durable bytes (bit rot).
    pub fn flip_bit(&self, path: &Path, offset: usize, bit: u8) {
        let mut state = self.state.borrow_mut();
        let id = *state.names.get(path).expect("flip_bit on an existing file");
        let file = state.file(id).expect("named file exists");
        file.current[offset] ^= 1 << bit;
        if offset < file.durable.len() {
            file.durable[offset] ^= 1 << bit;
        }
    }

    /// Overwrites bytes of a file, durably, bypassing the operation count: corruption
    /// that happened behind the WAL's back (or a torn write laid out by hand).
    pub fn overwrite(&self, path: &Path, offset: usize, bytes: &[u8]) {
        let mut state = self.state.borrow_mut();
        let id = *state.names.get(path).expect("overwrite an existing file");
        let file = state.file(id).expect("named file exists");
        for target in [&mut file.current, &mut file.durable] {
            if target.len() < offset + bytes.len() {
                target.resize(offset + bytes.len(), 0);
            }
            target[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// What a reader sees in `path` now, if it exists.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        let id = state.names.get(path)?;
        Some(state.files[id].current.clone())
    }

    /// Paths of every file, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state.borrow().names.keys().cloned().collect()
    }

    async fn begin(&self) -> io::Result<bool> {
        if self.state.borrow().yield_on_io {
            yield_once().await;
        }
        self.state.borrow_mut().begin()
    }

    fn check_parent(state: &SimState, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if state.dirs.contains(parent) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "parent folder does not exist",
            )),
        }
    }
}

async fn yield_once() {
    let mut yielded = false;
    poll_fn(|context| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            context.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// An open file of a [`SimDisk`].
#[derive(Debug)]
pub struct SimFileHandle {
    disk: SimDisk,
    id: u64,
}

impl Disk for SimDisk {
    type File = SimFileHandle;
    type Mapped = Vec<u8>;

    async fn create_file(&self, path: &Path) -> io::Result<SimFileHandle> {
        if self.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.state.borrow_mut();
        SimDisk::check_parent(&state, path)?;
        let id = state.next_file_id;
        state.next_file_id += 1;
        state.files.insert(id, SimFile::default());
        state.names.insert(path.to_path_buf(), id);
        Ok(SimFileHandle {
            disk: self.clone(),
            id,
        })
    }

    async fn open_file(&self, path: &Path) -> io::Result<SimFileHandle> {
        if self.begin().await? {
            return Err(crash_error());
        }
        let state = self.state.borrow();
        let id = *state
            .names
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        Ok(SimFileHandle {
            disk: self.clone(),
            id,
        })
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        if self.begin().await? {
            return Err(crash_error());
        }
        let state = self.state.borrow();
        if !state.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such folder"));
        }
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if self.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.state.borrow_mut();
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.state.borrow_mut();
        state
            .durable_names
            .retain(|path, _| path.parent() != Some(dir));
        let current: Vec<(PathBuf, u64)> = state
            .names
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        state.durable_names.extend(current);
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.state.borrow_mut();
        SimDisk::check_parent(&state, to)?;
        let id = state
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        state.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.state.borrow_mut();
        state
            .names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    async fn map_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        if self.begin().await? {
            return Err(crash_error());
        }
        self.read(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    async fn sleep(&self, _duration: Duration) {}
}

impl DiskFile for SimFileHandle {
    async fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        assert!(
            offset % BLOCK_SIZE as u64 == 0 && data.len() % BLOCK_SIZE == 0,
            "unaligned write: {} bytes at {offset}",
            data.len()
        );
        let crashing = self.disk.begin().await?;
        let mut state = self.disk.state.borrow_mut();
        let file = state.file(self.id)?;
        let offset = offset as usize;
        if file.current.len() < offset + data.len() {
            file.current.resize(offset + data.len(), 0);
        }
        file.current[offset..offset + data.len()].copy_from_slice(data);
        file.unsynced.push((offset, data.to_vec()));
        if crashing {
            return Err(crash_error());
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        if self.disk.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.disk.state.borrow_mut();
        let file = state.file(self.id)?;
        let unsynced = std::mem::take(&mut file.unsynced);
        file.durable.resize(file.current.len(), 0);
        for (offset, data) in unsynced {
            let end = (offset + data.len()).min(file.current.len());
            if offset < end {
                file.durable[offset..end].copy_from_slice(&file.current[offset..end]);
            }
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        if self.disk.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.disk.state.borrow_mut();
        let file = state.file(self.id)?;
        if (file.current.len() as u64) < len {
            file.current.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        if self.disk.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.disk.state.borrow_mut();
        state.file(self.id)?.current.resize(len as usize, 0);
        Ok(())
    }

    async fn file_len(&self) -> io::Result<u64> {
        if self.disk.begin().await? {
            return Err(crash_error());
        }
        let mut state = self.disk.state.borrow_mut();
        Ok(state.file(self.id)?.current.len() as u64)
    }
}

type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<VecDeque<usize>>>,
    /// Set while the task sits in the ready queue, so repeated wakes queue it once.
    queued: Arc<std::sync::atomic::AtomicBool>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        self.ready
            .lock()
            .expect("ready queue lock is never poisoned: nothing panics while holding it")
            .push_back(self.id);
    }
}

/// A deterministic single-threaded executor: tasks run in the order they were woken,
/// first in first out, and nothing else is nondeterministic.
#[derive(Default)]
pub struct SimExecutor {
    tasks: RefCell<Vec<Option<LocalTask>>>,
    queued: RefCell<Vec<Arc<std::sync::atomic::AtomicBool>>>,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl std::fmt::Debug for SimExecutor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SimExecutor")
            .field("tasks", &self.tasks.borrow().len())
            .finish()
    }
}

impl SimExecutor {
    pub fn new() -> SimExecutor {
        SimExecutor::default()
    }

    /// Adds a task; it first runs at the next `run_until_stalled`.
    pub fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        let mut tasks = self.tasks.borrow_mut();
        tasks.push(Some(Box::pin(task)));
        self.queued
            .borrow_mut()
            .push(Arc::new(std::sync::atomic::AtomicBool::new(true)));
        self.push_ready(tasks.len() - 1);
    }

    /// Spawns `task` and returns a cell that holds its output once it finished.
    pub fn spawn_with_output<T: 'static>(
        &self,
        task: impl Future<Output = T> + 'static,
    ) -> Rc<RefCell<Option<T>>> {
        let output = Rc::new(RefCell::new(None));
        let slot = output.clone();
        self.spawn(async move {
            let value = task.await;
            *slot.borrow_mut() = Some(value);
        });
        output
    }

    fn push_ready(&self, id: usize) {
        self.ready
            .lock()
            .expect("ready queue lock is never poisoned: nothing panics while holding it")
            .push_back(id);
    }

    /// Polls woken tasks until none is runnable. Returns the number of polls made.
    pub fn run_until_stalled(&self) -> usize {
        let mut polls = 0;
        loop {
            let next = self
                .ready
                .lock()
                .expect("ready queue lock is never poisoned: nothing panics while holding it")
                .pop_front();
            let Some(id) = next else {
                return polls;
            };
            let queued = self.queued.borrow()[id].clone();
            queued.store(false, std::sync::atomic::Ordering::Relaxed);
            let Some(mut task) = self.tasks.borrow_mut()[id].take() else {
                continue;
            };
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: self.ready.clone(),
                queued,
            }));
            polls += 1;
            if task
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
            {
                self.tasks.borrow_mut()[id] = Some(task);
            }
        }
    }

    /// Runs `task` (and everything else spawned) until stalled and returns its output, or
    /// `None` if it could not finish.
    pub fn block_on<T: 'static>(&self, task: impl Future<Output = T> + 'static) -> Option<T> {
        let output = self.spawn_with_output(task);
        self.run_until_stalled();
        let value = output.borrow_mut().take();
        value
    }
}
