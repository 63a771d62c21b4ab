//! Test support: a scripted workload over the simulated disk, a reference model of what
//! the log must contain, and the check that a recovery returned a prefix of what was
//! appended that includes every acknowledged append.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use corekv_wal::format::BLOCK_SIZE;
use corekv_wal::sim::{SimDisk, SimExecutor};
use corekv_wal::{
    ClusterId, HardState, LogIndex, MemberId, Metadata, Recovered, ShardId, SnapshotMarker,
    SnapshotStore, Term, Wal, WalConfig, WalError, WalRecord,
};

pub fn wal_dir() -> PathBuf {
    PathBuf::from("/data/shard-0/wal")
}

pub fn snap_dir() -> PathBuf {
    PathBuf::from("/data/shard-0/snap")
}

/// Small segments and batches so that short scripts rotate and fill batches.
pub fn small_config() -> WalConfig {
    WalConfig {
        segment_bytes: 64 * 1024,
        max_batch_bytes: 8 * 1024,
        max_record_bytes: 4 * 1024,
        ..WalConfig::default()
    }
}

pub const METADATA: Metadata = Metadata {
    cluster_id: ClusterId(0xc1),
    member_id: MemberId(2),
    shard_id: ShardId(0),
};

/// An owned record, as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Entry {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
    HardState(HardState),
    Metadata(Metadata),
    Marker(SnapshotMarker),
    Truncate(u64),
}

impl Owned {
    pub fn as_record(&self) -> WalRecord<'_> {
        match self {
            Owned::Entry { index, term, data } => WalRecord::Entry {
                index: LogIndex(*index),
                term: Term(*term),
                data,
            },
            Owned::HardState(hard_state) => WalRecord::HardState(*hard_state),
            Owned::Metadata(metadata) => WalRecord::Metadata(*metadata),
            Owned::Marker(marker) => WalRecord::SnapshotMarker(*marker),
            Owned::Truncate(from) => WalRecord::TruncateSuffix {
                from: LogIndex(*from),
            },
        }
    }
}

/// One append call, in the order appends were encoded.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub records: Vec<Owned>,
    pub acked: bool,
}

/// What the log must contain after a prefix of the submitted appends. Mirrors the
/// documented index rules (docs/wal-format.md, "Entry index rules").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub entries: Vec<(u64, u64, Vec<u8>)>,
    /// With no entries: the index the log is positioned after (a snapshot past the end).
    pub base: Option<u64>,
    pub hard_state: Option<HardState>,
    pub metadata: Option<Metadata>,
    pub snapshot: Option<SnapshotMarker>,
}

impl Model {
    fn first_of_run(&self) -> Option<u64> {
        match self.entries.first() {
            Some((index, _, _)) => Some(*index),
            None => self.base.map(|base| base + 1),
        }
    }

    pub fn apply(&mut self, record: &Owned) {
        match record {
            Owned::Entry { index, term, data } => {
                self.entries.retain(|(existing, _, _)| existing < index);
                self.entries.push((*index, *term, data.clone()));
            }
            Owned::Truncate(from) => {
                if self.first_of_run().is_some_and(|first| *from <= first) {
                    self.entries.clear();
                    self.base = None;
                }
                self.entries.retain(|(existing, _, _)| existing < from);
            }
            Owned::HardState(hard_state) => self.hard_state = Some(*hard_state),
            Owned::Metadata(metadata) => self.metadata = Some(*metadata),
            Owned::Marker(marker) => {
                if self.last_index().is_none_or(|last| marker.index.0 > last) {
                    self.entries.clear();
                    self.base = Some(marker.index.0);
                }
                self.snapshot = Some(*marker);
            }
        }
    }

    pub fn last_index(&self) -> Option<u64> {
        match self.entries.last() {
            Some((index, _, _)) => Some(*index),
            None => self.base,
        }
    }

    fn matches(&self, recovered: &Recovered, replay_from: u64) -> bool {
        let expected: Vec<(u64, u64, Vec<u8>)> = self
            .entries
            .iter()
            .filter(|(index, _, _)| *index > replay_from)
            .cloned()
            .collect();
        let got: Vec<(u64, u64, Vec<u8>)> = recovered
            .entries
            .iter()
            .map(|entry| (entry.index.0, entry.term.0, entry.data.clone()))
            .collect();
        let expected_last = match self.last_index() {
            Some(last) if last >= replay_from => Some(last),
            _ if replay_from > 0 => Some(replay_from),
            last => last,
        };
        expected == got
            && recovered.last_index.map(|index| index.0) == expected_last
            && recovered.hard_state == self.hard_state
            && recovered.metadata == self.metadata
            && recovered.snapshot == self.snapshot
    }
}

/// Checks that `recovered` equals the model after some prefix of `log` that contains every
/// acknowledged append. Returns the prefix length.
pub fn check_prefix(log: &[Submitted], recovered: &Recovered, replay_from: u64) -> usize {
    let must_include = log
        .iter()
        .rposition(|submitted| submitted.acked)
        .map_or(0, |at| at + 1);
    let mut model = Model::default();
    let mut matching = None;
    for length in 0..=log.len() {
        if length > 0 {
            for record in &log[length - 1].records {
                model.apply(record);
            }
        }
        if length >= must_include && model.matches(recovered, replay_from) {
            matching = Some(length);
        }
    }
    matching.unwrap_or_else(|| {
        panic!(
            "recovery is not a prefix holding every acknowledged append: {} appends, {} must be in; recovered last index {:?}, {} entries after {replay_from}, hard state {:?}",
            log.len(),
            must_include,
            recovered.last_index,
            recovered.entries.len(),
            recovered.hard_state
        )
    })
}

/// One step of a scripted workload; steps run one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `appenders` concurrent appends of one entry each (the first also carries a hard
    /// state, so that multi-record appends are covered).
    Entries { appenders: usize, payload: usize },
    /// Replaces the last `back` entries (never below the last snapshot) with a new term.
    Conflict { back: u64 },
    /// An explicit suffix truncation of the last `back` entries.
    Truncate { back: u64 },
    /// Saves a snapshot at the last index, records it in the WAL, releases segments.
    Snapshot,
    /// Installs a snapshot `ahead` entries past the last index (as one received from the
    /// leader): the log continues after it.
    InstallSnapshot { ahead: u64 },
}

/// Joins futures, polling them in order (so their first polls happen in vector order).
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    poll_fn(|context| {
        let mut all_done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

#[derive(Debug, Default)]
struct DriverState {
    log: Vec<Submitted>,
    last: u64,
    term: u64,
    floor: u64,
}

async fn submit(
    wal: &Wal<SimDisk>,
    state: &RefCell<DriverState>,
    build: impl FnOnce(&mut DriverState) -> Vec<Owned>,
) -> Result<(), WalError> {
    let (position, records) = {
        let mut state = state.borrow_mut();
        let records = build(&mut state);
        state.log.push(Submitted {
            records: records.clone(),
            acked: false,
        });
        (state.log.len() - 1, records)
    };
    let borrowed: Vec<WalRecord<'_>> = records.iter().map(Owned::as_record).collect();
    let result = wal.append(&borrowed).await;
    if result.is_ok() {
        state.borrow_mut().log[position].acked = true;
    }
    result
}

fn payload_for(index: u64, term: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|at| (index as usize * 31 + term as usize * 7 + at) as u8)
        .collect()
}

/// A staging buffer of two blocks, so that a test snapshot of a few blocks flushes
/// several times.
pub const SNAPSHOT_TEST_BUFFER_BYTES: usize = 2 * BLOCK_SIZE;

/// Piece sizes a streamed test snapshot is written in: odd, some larger than the buffer.
pub const SNAPSHOT_PIECES: [usize; 6] = [1, 7, 4095, 10_000, 13, 4097];

/// The bytes of the snapshot at `index`: a few blocks, different per index.
pub fn snapshot_payload(index: u64) -> Vec<u8> {
    let header = format!("snapshot@{index}");
    let mut payload = header.into_bytes();
    payload.extend((0..3 * BLOCK_SIZE as u64 + 100).map(|at| (at * 7 + index * 13) as u8));
    payload
}

/// Saves `payload` through `begin`/`write`/`finish`, cycling through [`SNAPSHOT_PIECES`];
/// aborts on a failed write.
pub async fn stream_snapshot(
    snapshots: &SnapshotStore<SimDisk>,
    index: u64,
    term: u64,
    payload: &[u8],
) -> Result<(), WalError> {
    let mut writer = snapshots.begin(LogIndex(index), Term(term)).await?;
    let mut rest = payload;
    for piece in SNAPSHOT_PIECES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at((*piece).min(rest.len()));
        if let Err(error) = writer.write(now).await {
            let _ = writer.abort().await;
            return Err(error);
        }
        rest = later;
    }
    writer.finish().await.map(|_| ())
}

/// Runs `script` against a fresh or existing log on `disk` until it finishes or the disk
/// fails. Returns every append submitted, in encode order, with whether it was acked.
pub fn run_script(disk: &SimDisk, config: &WalConfig, script: &[Step]) -> Vec<Submitted> {
    let executor = Rc::new(SimExecutor::new());
    let state = Rc::new(RefCell::new(DriverState {
        term: 1,
        ..DriverState::default()
    }));
    let driver_state = state.clone();
    let spawner = executor.clone();
    let disk = disk.clone();
    let config = config.clone();
    let script = script.to_vec();
    executor.spawn(async move {
        let disk = Rc::new(disk);
        let Ok((wal, flusher, recovered)) =
            Wal::open(disk.clone(), wal_dir(), config, LogIndex(0)).await
        else {
            return;
        };
        assert!(
            recovered.entries.is_empty(),
            "scripts start from an empty disk"
        );
        spawner.spawn(flusher.run());
        let snapshots = SnapshotStore::new(disk.clone(), snap_dir(), 2)
            .with_write_buffer_bytes(SNAPSHOT_TEST_BUFFER_BYTES);
        let state = &*driver_state;
        if submit(&wal, state, |_| vec![Owned::Metadata(METADATA)])
            .await
            .is_err()
        {
            return;
        }
        for step in script {
            let outcome = match step {
                Step::Entries { appenders, payload } => {
                    let futures: Vec<_> = (0..appenders)
                        .map(|appender| {
                            submit(&wal, state, move |state| {
                                state.last += 1;
                                let (index, term) = (state.last, state.term);
                                let mut records = vec![Owned::Entry {
                                    index,
                                    term,
                                    data: payload_for(index, term, payload),
                                }];
                                if appender == 0 {
                                    records.push(Owned::HardState(HardState {
                                        term: Term(term),
                                        vote: MemberId(1),
                                        commit: LogIndex(index - 1),
                                    }));
                                }
                                records
                            })
                        })
                        .collect();
                    join_all(futures)
                        .await
                        .into_iter()
                        .collect::<Result<Vec<()>, _>>()
                        .map(|_| ())
                }
                Step::Conflict { back } => {
                    submit(&wal, state, |state| {
                        state.term += 1;
                        let index = state.last.saturating_sub(back).max(state.floor + 1);
                        state.last = index;
                        let term = state.term;
                        vec![Owned::Entry {
                            index,
                            term,
                            data: payload_for(index, term, 40),
                        }]
                    })
                    .await
                }
                Step::Truncate { back } => {
                    submit(&wal, state, |state| {
                        let from = state.last.saturating_sub(back).max(state.floor + 1);
                        state.last = state.last.min(from - 1);
                        vec![Owned::Truncate(from)]
                    })
                    .await
                }
                Step::Snapshot | Step::InstallSnapshot { .. } => {
                    let ahead = match step {
                        Step::InstallSnapshot { ahead } => ahead,
                        _ => 0,
                    };
                    let (index, term) = {
                        let mut state = state.borrow_mut();
                        state.last += ahead;
                        (state.last, state.term)
                    };
                    if index == 0 {
                        continue;
                    }
                    let payload = snapshot_payload(index);
                    let saved = if ahead == 0 {
                        // A snapshot taken locally streams in odd-sized pieces through a
                        // two-block buffer: several flushes, the header block written last.
                        stream_snapshot(&snapshots, index, term, &payload).await
                    } else {
                        snapshots
                            .save(LogIndex(index), Term(term), &payload)
                            .await
                            .map(|_| ())
                    };
                    if saved.is_err() {
                        return;
                    }
                    let marker = SnapshotMarker {
                        index: LogIndex(index),
                        term: Term(term),
                    };
                    let position = {
                        let mut state = state.borrow_mut();
                        state.floor = index;
                        state.log.push(Submitted {
                            records: vec![Owned::Marker(marker)],
                            acked: false,
                        });
                        state.log.len() - 1
                    };
                    let result = wal.record_snapshot(marker).await;
                    if result.is_ok() {
                        state.borrow_mut().log[position].acked = true;
                    }
                    result.map(|_| ())
                }
            };
            if outcome.is_err() {
                return;
            }
        }
    });
    executor.run_until_stalled();
    let log = state.borrow().log.clone();
    log
}

/// Recovers the shard (newest snapshot, then the WAL from its index) on a fresh executor.
pub fn recover(disk: &SimDisk, config: &WalConfig) -> Result<(Recovered, u64), WalError> {
    let executor = SimExecutor::new();
    let disk = Rc::new(disk.clone());
    let config = config.clone();
    executor
        .block_on(async move {
            let snapshots = SnapshotStore::new(disk.clone(), snap_dir(), 2);
            let replay_from = match snapshots.load_newest().await? {
                Some(snapshot) => {
                    assert_eq!(snapshot.data(), snapshot_payload(snapshot.meta.index.0));
                    snapshot.meta.index.0
                }
                None => 0,
            };
            let (_wal, _flusher, recovered) =
                Wal::open(disk, wal_dir(), config, LogIndex(replay_from)).await?;
            Ok((recovered, replay_from))
        })
        .expect("recovery never waits on anything but the simulated disk")
}

/// Appends one entry after recovery and checks it survives another recovery: the log is
/// usable after whatever recovery had to cut.
pub fn append_after_recovery(
    disk: &SimDisk,
    config: &WalConfig,
    recovered: &Recovered,
    replay_from: u64,
) {
    let executor = Rc::new(SimExecutor::new());
    let spawner = executor.clone();
    let next = recovered.last_index.map_or(1, |last| last.0 + 1);
    let shared_disk = Rc::new(disk.clone());
    let config_for_task = config.clone();
    let appended = executor.block_on(async move {
        let (wal, flusher, _) = Wal::open(
            shared_disk,
            wal_dir(),
            config_for_task,
            LogIndex(replay_from),
        )
        .await?;
        spawner.spawn(flusher.run());
        let record = WalRecord::Entry {
            index: LogIndex(next),
            term: Term(99),
            data: b"after recovery",
        };
        wal.append(&[record]).await
    });
    appended
        .expect("append finished")
        .expect("append after recovery succeeds");
    let (again, _) = recover(disk, config).expect("second recovery succeeds");
    let last = again.entries.last().expect("the new entry is there");
    assert_eq!(
        (last.index.0, last.term.0, last.data.as_slice()),
        (next, 99, &b"after recovery"[..])
    );
    assert!(
        again.torn_tail.is_none(),
        "a clean shutdown leaves no torn tail"
    );
}
