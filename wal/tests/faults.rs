//! Targeted fault and semantics tests on the simulated disk: torn tails, corruption in the
//! middle of the log, EIO and ENOSPC poisoning, entry index rules, limits, group commit
//! and bounded batches, segment release, and snapshot crash safety.

mod common;

use std::cell::Cell;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;

use common::{
    join_all, small_config, snap_dir, stream_snapshot, wal_dir, SNAPSHOT_PIECES,
    SNAPSHOT_TEST_BUFFER_BYTES,
};
use corekv_wal::format::BLOCK_SIZE;
use corekv_wal::sim::{CrashMode, SimDisk, SimExecutor};
use corekv_wal::{
    HardState, LogIndex, MemberId, Recovered, SnapshotMarker, SnapshotStore, Term, Wal, WalConfig,
    WalError, WalRecord, SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT,
};

/// Opens the log on `disk`, runs `body` with it (flusher running), and returns the output.
fn with_wal<T: 'static, F: Future<Output = T> + 'static>(
    disk: &SimDisk,
    config: &WalConfig,
    body: impl FnOnce(Rc<Wal<SimDisk>>, Recovered) -> F + 'static,
) -> T {
    let executor = Rc::new(SimExecutor::new());
    let spawner = executor.clone();
    let disk = Rc::new(disk.clone());
    let config = config.clone();
    executor
        .block_on(async move {
            let (wal, flusher, recovered) = Wal::open(disk, wal_dir(), config, LogIndex(0))
                .await
                .expect("open WAL");
            spawner.spawn(flusher.run());
            body(Rc::new(wal), recovered).await
        })
        .expect("the test body finished")
}

fn recover(disk: &SimDisk, config: &WalConfig, replay_from: u64) -> Result<Recovered, WalError> {
    let disk = Rc::new(disk.clone());
    let config = config.clone();
    SimExecutor::new()
        .block_on(async move {
            Wal::open(disk, wal_dir(), config, LogIndex(replay_from))
                .await
                .map(|(_, _, recovered)| recovered)
        })
        .expect("recovery only waits on the simulated disk")
}

fn entry(index: u64, data: &[u8]) -> WalRecord<'_> {
    WalRecord::Entry {
        index: LogIndex(index),
        term: Term(1),
        data,
    }
}

fn indexes(recovered: &Recovered) -> Vec<u64> {
    recovered
        .entries
        .iter()
        .map(|entry| entry.index.0)
        .collect()
}

fn segment_paths(disk: &SimDisk) -> Vec<PathBuf> {
    disk.paths()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .collect()
}

/// Appends entries `1..=count`, one append (one batch) each, and returns the segment
/// offset where each batch started.
fn append_singles(disk: &SimDisk, count: u64, payload: usize) {
    with_wal(disk, &small_config(), move |wal, _| async move {
        for index in 1..=count {
            wal.append(&[entry(index, &vec![index as u8; payload])])
                .await
                .expect("append");
        }
    });
}

/// A batch whose second block never reached the disk is dropped whole, reported as a
/// torn tail, zeroed, and the log continues cleanly after it.
#[test]
fn torn_last_batch_is_cut_and_reported() {
    let disk = SimDisk::new(1);
    append_singles(&disk, 4, 100);
    with_wal(&disk, &small_config(), |wal, _| async move {
        let big = vec![5u8; 3000];
        wal.append(&[entry(5, &big), entry(6, &big)])
            .await
            .expect("two-block append");
    });
    let segment = segment_paths(&disk).pop().expect("one segment");
    // Batches: 4 single-block batches (the first also holds the segment preamble), then
    // the two-block batch at block 4. Lose its second block.
    disk.overwrite(&segment, 5 * BLOCK_SIZE, &[0u8; BLOCK_SIZE]);
    let recovered = recover(&disk, &small_config(), 0).expect("torn tail is not an error");
    assert_eq!(
        indexes(&recovered),
        vec![1, 2, 3, 4],
        "the torn append is dropped whole"
    );
    let torn = recovered.torn_tail.expect("torn tail reported");
    assert_eq!(torn.path, segment);
    assert_eq!(torn.truncated_to, 4 * BLOCK_SIZE as u64);
    assert!(torn.offset >= torn.truncated_to);
    with_wal(&disk, &small_config(), |wal, _| async move {
        wal.append(&[entry(5, b"again")])
            .await
            .expect("append after torn tail");
    });
    let again = recover(&disk, &small_config(), 0).expect("clean recovery");
    assert_eq!(indexes(&again), vec![1, 2, 3, 4, 5]);
    assert!(again.torn_tail.is_none());
}

/// Non-zero bytes after the last complete batch (a write that landed in part, ahead of
/// a lost first block) are reported, zeroed, and lose nothing.
#[test]
fn garbage_after_the_end_is_zeroed() {
    let disk = SimDisk::new(2);
    append_singles(&disk, 3, 100);
    let segment = segment_paths(&disk).pop().expect("segment");
    disk.overwrite(
        &segment,
        5 * BLOCK_SIZE + 17,
        b"stale bytes of a batch that never completed",
    );
    let recovered = recover(&disk, &small_config(), 0).expect("recover");
    assert_eq!(indexes(&recovered), vec![1, 2, 3]);
    let torn = recovered.torn_tail.expect("reported");
    assert_eq!(torn.truncated_to, 3 * BLOCK_SIZE as u64);
    assert_eq!(torn.offset, 5 * BLOCK_SIZE as u64 + 17);
    let bytes = disk.read(&segment).expect("segment");
    assert!(
        bytes[3 * BLOCK_SIZE..].iter().all(|byte| *byte == 0),
        "tail zeroed"
    );
    assert!(recover(&disk, &small_config(), 0)
        .expect("again")
        .torn_tail
        .is_none());
}

/// Damage in the last segment that an intact later batch follows is corruption of
/// acknowledged data: recovery stops with the file and offset.
#[test]
fn damage_before_an_intact_batch_is_corruption() {
    let disk = SimDisk::new(3);
    append_singles(&disk, 4, 100);
    let segment = segment_paths(&disk).pop().expect("segment");
    // Batch 2 starts at block 1; flip a bit inside its entry payload.
    disk.flip_bit(&segment, BLOCK_SIZE + 40, 3);
    match recover(&disk, &small_config(), 0) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, segment);
            assert_eq!(offset, BLOCK_SIZE as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// A bad record in a sealed (not last) segment is corruption naming that segment.
#[test]
fn damage_in_a_sealed_segment_is_corruption() {
    let disk = SimDisk::new(4);
    append_singles(&disk, 40, 1000);
    let segments = segment_paths(&disk);
    assert!(segments.len() >= 3, "rotated: {segments:?}");
    disk.flip_bit(&segments[1], 2 * BLOCK_SIZE + 100, 0);
    match recover(&disk, &small_config(), 0) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, segments[1]);
            assert_eq!(offset, 2 * BLOCK_SIZE as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// A length field larger than the maximum record size is rejected before use, even in
/// the last segment's tail (it is a torn tail there, never an allocation or a panic).
#[test]
fn huge_length_in_the_tail_is_a_torn_tail() {
    let disk = SimDisk::new(5);
    append_singles(&disk, 2, 100);
    let segment = segment_paths(&disk).pop().expect("segment");
    disk.overwrite(&segment, 2 * BLOCK_SIZE, &u32::MAX.to_le_bytes());
    let recovered = recover(&disk, &small_config(), 0).expect("recover");
    assert_eq!(indexes(&recovered), vec![1, 2]);
    assert!(recovered
        .torn_tail
        .expect("reported")
        .reason
        .contains("maximum record size"));
}

/// An fdatasync error poisons the log: that append and every later one fail, nothing is
/// retried, and a restart recovers every acknowledged append.
#[test]
fn fsync_error_poisons_and_is_never_retried() {
    let disk = SimDisk::new(6);
    let probe = disk.clone();
    let acked = with_wal(&disk, &small_config(), move |wal, _| async move {
        let mut acked = 0;
        for index in 1..=3 {
            wal.append(&[entry(index, b"ok")]).await.expect("append");
            acked = index;
        }
        // The next batch is one write then one fdatasync: fail the fdatasync.
        probe.fail_operation(probe.operation_count() + 2, libc::EIO);
        let error = wal
            .append(&[entry(4, b"lost?")])
            .await
            .expect_err("sync failed");
        assert!(
            matches!(
                error,
                WalError::Poisoned {
                    operation: "fdatasync",
                    ..
                }
            ),
            "{error}"
        );
        let operations = probe.operation_count();
        let again = wal
            .append(&[entry(5, b"never")])
            .await
            .expect_err("poisoned");
        assert!(matches!(again, WalError::Poisoned { .. }));
        assert_eq!(probe.operation_count(), operations, "no IO after poisoning");
        assert!(wal.poisoned().is_some());
        acked
    });
    disk.restart(CrashMode::LoseUnsynced);
    let recovered = recover(&disk, &small_config(), 0).expect("recover");
    assert!(indexes(&recovered).starts_with(&(1..=acked).collect::<Vec<_>>()));
    assert!(!indexes(&recovered).contains(&5));
}

/// ENOSPC on a write is an error, not a crash; after space is freed and the process
/// restarts, every acknowledged append is there and appends work again.
#[test]
fn enospc_is_an_error_and_restart_recovers() {
    let disk = SimDisk::new(7);
    let probe = disk.clone();
    with_wal(&disk, &small_config(), move |wal, _| async move {
        for index in 1..=5 {
            wal.append(&[entry(index, b"ok")]).await.expect("append");
        }
        probe.fail_operation(probe.operation_count() + 1, libc::ENOSPC);
        let error = wal
            .append(&[entry(6, b"no space")])
            .await
            .expect_err("ENOSPC");
        match error {
            WalError::Poisoned { kind, .. } => assert_eq!(kind, std::io::ErrorKind::StorageFull),
            other => panic!("expected poisoned, got {other}"),
        }
    });
    disk.restart(CrashMode::KeepUnsynced);
    let recovered = recover(&disk, &small_config(), 0).expect("recover");
    assert_eq!(indexes(&recovered), vec![1, 2, 3, 4, 5]);
    with_wal(&disk, &small_config(), |wal, _| async move {
        wal.append(&[entry(6, b"space again")])
            .await
            .expect("append after restart");
    });
    assert_eq!(
        recover(&disk, &small_config(), 0)
            .expect("recover")
            .entries
            .len(),
        6
    );
}

/// A re-used index replaces the suffix (the later record wins), TruncateSuffix drops a
/// suffix, and an append that would leave a gap is rejected without writing.
#[test]
fn entry_index_semantics() {
    let disk = SimDisk::new(8);
    let probe = disk.clone();
    with_wal(&disk, &small_config(), move |wal, _| async move {
        for index in 1..=6 {
            wal.append(&[entry(index, b"term1")]).await.expect("append");
        }
        let conflict = WalRecord::Entry {
            index: LogIndex(4),
            term: Term(2),
            data: b"term2",
        };
        wal.append(&[conflict])
            .await
            .expect("conflicting entry replaces 4..=6");
        assert_eq!(wal.last_index(), Some(LogIndex(4)));
        let operations = probe.operation_count();
        let gap = wal.append(&[entry(9, b"gap")]).await.expect_err("gap");
        assert!(matches!(
            gap,
            WalError::NonContiguousAppend { last: 4, found: 9 }
        ));
        let zero = wal.append(&[entry(0, b"zero")]).await.expect_err("index 0");
        assert!(matches!(zero, WalError::NonContiguousAppend { .. }));
        assert_eq!(
            probe.operation_count(),
            operations,
            "rejected appends write nothing"
        );
        wal.append(&[entry(5, b"five")]).await.expect("append");
        wal.truncate_suffix(LogIndex(5)).await.expect("truncate");
        assert_eq!(wal.last_index(), Some(LogIndex(4)));
    });
    let recovered = recover(&disk, &small_config(), 0).expect("recover");
    assert_eq!(indexes(&recovered), vec![1, 2, 3, 4]);
    assert_eq!(recovered.entries[3].term, Term(2));
    assert_eq!(recovered.entries[3].data, b"term2");
    assert_eq!(recovered.last_index, Some(LogIndex(4)));
    let from_two = recover(&disk, &small_config(), 2).expect("recover from 2");
    assert_eq!(indexes(&from_two), vec![3, 4]);
}

/// A record exactly at the size limit is accepted; one byte more is rejected, as is an
/// append larger than a batch.
#[test]
fn size_limits_at_and_past_the_limit() {
    let disk = SimDisk::new(9);
    let config = small_config();
    let max = config.max_record_bytes;
    with_wal(&disk, &config, move |wal, _| async move {
        let at_limit = vec![1u8; max - 16];
        wal.append(&[entry(1, &at_limit)])
            .await
            .expect("payload at the limit");
        let past = vec![1u8; max - 15];
        let error = wal
            .append(&[entry(2, &past)])
            .await
            .expect_err("past the limit");
        assert!(
            matches!(
                error,
                WalError::TooLarge {
                    what: "record payload",
                    ..
                }
            ),
            "{error}"
        );
        let half = vec![1u8; max / 2 + 100];
        let records: Vec<_> = (2..=5).map(|index| entry(index, &half)).collect();
        let error = wal.append(&records).await.expect_err("bigger than a batch");
        assert!(
            matches!(
                error,
                WalError::TooLarge {
                    what: "one append",
                    ..
                }
            ),
            "{error}"
        );
    });
}

/// Many concurrent appenders share batches: far fewer fdatasyncs than appends.
#[test]
fn group_commit_coalesces_concurrent_appends() {
    let disk = SimDisk::new(10);
    disk.set_yield_on_io(true);
    let config = WalConfig {
        max_batch_bytes: 64 * 1024,
        max_record_bytes: 4 * 1024,
        segment_bytes: 1024 * 1024,
        ..WalConfig::default()
    };
    let stats = with_wal(&disk, &config, |wal, _| async move {
        let next = Rc::new(Cell::new(1u64));
        let appends: Vec<_> = (0..64)
            .map(|_| {
                let (wal, next) = (wal.clone(), next.clone());
                async move {
                    let index = next.get();
                    next.set(index + 1);
                    wal.append(&[entry(index, &[7u8; 300])]).await
                }
            })
            .collect();
        for result in join_all(appends).await {
            result.expect("append");
        }
        wal.stats()
    });
    assert_eq!(stats.records_synced, 64);
    assert!(
        stats.batches_synced <= 2,
        "64 appends took {} batches",
        stats.batches_synced
    );
}

/// When the pending batch is full, appenders wait (first come, first served) and every
/// batch stays within the byte bound; order and durability are preserved.
#[test]
fn full_batches_make_appenders_wait_in_order() {
    let disk = SimDisk::new(11);
    disk.set_yield_on_io(true);
    let config = small_config();
    let bound = config.max_batch_bytes;
    let appenders = 100u64;
    let stats = with_wal(&disk, &config, move |wal, _| async move {
        let next = Rc::new(Cell::new(1u64));
        let appends: Vec<_> = (0..appenders)
            .map(|_| {
                let (wal, next) = (wal.clone(), next.clone());
                async move {
                    let index = next.get();
                    next.set(index + 1);
                    wal.append(&[entry(index, &[3u8; 1000])]).await
                }
            })
            .collect();
        for result in join_all(appends).await {
            result.expect("append");
        }
        wal.stats()
    });
    let framed = 9 + 16 + 1000;
    let per_batch_max = (bound / framed) as u64;
    assert!(
        stats.batches_synced >= appenders.div_ceil(per_batch_max),
        "{} batches for {appenders} appends of {framed} bytes with a {bound}-byte bound",
        stats.batches_synced
    );
    let recovered = recover(&disk, &config, 0).expect("recover");
    assert_eq!(indexes(&recovered), (1..=appenders).collect::<Vec<_>>());
}

/// After a snapshot is recorded, segments wholly before it are released; replay from
/// the snapshot works, replay from before it reports the missing entries.
#[test]
fn release_before_snapshot() {
    let disk = SimDisk::new(12);
    let config = small_config();
    let removed = with_wal(&disk, &config, |wal, _| async move {
        for index in 1..=60 {
            wal.append(&[entry(index, &[1u8; 1000])])
                .await
                .expect("append");
        }
        let hard_state = HardState {
            term: Term(1),
            vote: MemberId(3),
            commit: LogIndex(60),
        };
        wal.append(&[WalRecord::HardState(hard_state)])
            .await
            .expect("hard state");
        let before = wal.segment_count();
        let removed = wal
            .record_snapshot(SnapshotMarker {
                index: LogIndex(50),
                term: Term(1),
            })
            .await
            .expect("record snapshot");
        assert_eq!(wal.segment_count(), before - removed);
        removed
    });
    assert!(removed >= 2, "released {removed} segments");
    let recovered = recover(&disk, &config, 50).expect("replay from the snapshot");
    assert_eq!(indexes(&recovered), (51..=60).collect::<Vec<_>>());
    assert_eq!(
        recovered.snapshot.map(|marker| marker.index),
        Some(LogIndex(50))
    );
    assert_eq!(
        recovered.hard_state.map(|hard_state| hard_state.vote),
        Some(MemberId(3))
    );
    match recover(&disk, &config, 0) {
        Err(WalError::MissingEntries {
            replay_from: 0,
            first_available,
        }) => assert!(first_available > 1),
        other => panic!("expected missing entries, got {other:?}"),
    }
}

/// A snapshot marker past the end of the log (a snapshot installed from the leader)
/// repositions the log: the next entry follows the snapshot, before ones are gone.
#[test]
fn snapshot_past_the_log_end_repositions_the_log() {
    let disk = SimDisk::new(15);
    let config = small_config();
    with_wal(&disk, &config, |wal, _| async move {
        for index in 1..=3 {
            wal.append(&[entry(index, b"old")]).await.expect("append");
        }
        wal.record_snapshot(SnapshotMarker {
            index: LogIndex(10),
            term: Term(3),
        })
        .await
        .expect("install snapshot");
        assert_eq!(wal.last_index(), Some(LogIndex(10)));
        let gap = wal
            .append(&[entry(12, b"gap")])
            .await
            .expect_err("gap after snapshot");
        assert!(matches!(
            gap,
            WalError::NonContiguousAppend {
                last: 10,
                found: 12
            }
        ));
        wal.append(&[entry(11, b"new")])
            .await
            .expect("entry after the snapshot");
    });
    let recovered = recover(&disk, &config, 10).expect("replay from the snapshot");
    assert_eq!(indexes(&recovered), vec![11]);
    assert_eq!(recovered.last_index, Some(LogIndex(11)));
    assert!(matches!(
        recover(&disk, &config, 0),
        Err(WalError::MissingEntries {
            first_available: 11,
            ..
        })
    ));
}

/// A hole in the entry indexes on disk (not a torn tail: the records are intact) stops
/// recovery with an error naming the file and the offset of the offending entry.
#[test]
fn entry_gap_on_disk_is_an_error() {
    use corekv_wal::format::{
        encode, encode_segment_header, finish_batch, SegmentHeader, FLAG_BATCH_START,
    };
    use corekv_wal::{Disk, DiskFile, ShardId};
    let mut segment = Vec::new();
    let header = SegmentHeader {
        shard_id: ShardId(0),
        sequence: 0,
        first_index: LogIndex(0),
    };
    encode_segment_header(&mut segment, &header, FLAG_BATCH_START);
    let mut gap_offset = 0;
    for index in [1u64, 2, 4] {
        if index == 4 {
            gap_offset = segment.len();
        }
        let last = segment.len();
        encode(&mut segment, last as u64, &entry(index, b"x"), 0);
        if index == 4 {
            finish_batch(&mut segment, 0, last);
        }
    }
    let disk = SimDisk::new(16);
    let path = wal_dir().join(format!("{:016x}-{:016x}.wal", 0, 0));
    let shared = Rc::new(disk.clone());
    let file_path = path.clone();
    SimExecutor::new()
        .block_on(async move {
            shared.create_dir_all(&wal_dir()).await.expect("dir");
            let file = shared.create_file(&file_path).await.expect("create");
            file.write_at(&segment, 0).await.expect("write");
            file.sync_data().await.expect("sync");
            shared.sync_dir(&wal_dir()).await.expect("sync dir");
        })
        .expect("setup finished");
    match recover(&disk, &small_config(), 0) {
        Err(WalError::EntryGap {
            path: reported,
            offset,
            expected_max: 3,
            found: 4,
        }) => {
            assert_eq!(reported, path);
            assert_eq!(offset, gap_offset as u64);
        }
        other => panic!("expected an entry gap, got {other:?}"),
    }
}

/// Invalid layouts are refused at open: each bound checked, the defaults accepted.
#[test]
fn config_limits_are_validated() {
    let disk = SimDisk::new(17);
    let base = small_config();
    let invalid = [
        WalConfig {
            segment_bytes: base.segment_bytes + 1,
            ..base.clone()
        },
        WalConfig {
            max_record_bytes: base.max_batch_bytes - 8,
            ..base.clone()
        },
        WalConfig {
            segment_bytes: 2 * (base.max_batch_bytes as u64 + 3 * 4096) - 4096,
            ..base.clone()
        },
    ];
    for config in invalid {
        let shared = Rc::new(disk.clone());
        let result = SimExecutor::new()
            .block_on(async move {
                Wal::open(shared, wal_dir(), config, LogIndex(0))
                    .await
                    .map(|_| ())
            })
            .expect("open finished");
        assert!(matches!(result, Err(WalError::Config(_))), "{result:?}");
    }
    let limit = WalConfig {
        segment_bytes: 2 * (base.max_batch_bytes as u64 + 3 * 4096),
        ..base
    };
    assert!(
        recover(&disk, &limit, 0).is_ok(),
        "exactly two batches per segment is allowed"
    );
    assert!(recover(&disk, &WalConfig::default(), 0).is_ok());
}

fn save_snapshot(disk: &SimDisk, index: u64, data: Vec<u8>) -> Result<(), WalError> {
    let disk = Rc::new(disk.clone());
    SimExecutor::new()
        .block_on(async move {
            SnapshotStore::new(disk, snap_dir(), 2)
                .save(LogIndex(index), Term(1), &data)
                .await
                .map(|_| ())
        })
        .expect("save only waits on the simulated disk")
}

/// Saves through `begin`/`write`/`finish` in odd-sized pieces with a two-block buffer.
fn stream_snapshot_sim(disk: &SimDisk, index: u64, data: Vec<u8>) -> Result<(), WalError> {
    let disk = Rc::new(disk.clone());
    SimExecutor::new()
        .block_on(async move {
            let store = SnapshotStore::new(disk, snap_dir(), 2)
                .with_write_buffer_bytes(SNAPSHOT_TEST_BUFFER_BYTES);
            stream_snapshot(&store, index, 1, &data).await
        })
        .expect("save only waits on the simulated disk")
}

type Saver = fn(&SimDisk, u64, Vec<u8>) -> Result<(), WalError>;

fn snapshot_files(disk: &SimDisk, extension: &str) -> Vec<PathBuf> {
    disk.paths()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect()
}

fn load_snapshot(disk: &SimDisk) -> Result<Option<(u64, Vec<u8>)>, WalError> {
    let disk = Rc::new(disk.clone());
    SimExecutor::new()
        .block_on(async move {
            let loaded = SnapshotStore::new(disk, snap_dir(), 2)
                .load_newest()
                .await?;
            Ok(loaded.map(|snapshot| (snapshot.meta.index.0, snapshot.data().to_vec())))
        })
        .expect("load only waits on the simulated disk")
}

fn snapshot_bytes(index: u64) -> Vec<u8> {
    (0..20_000u32)
        .map(|value| (value as u64 * index) as u8)
        .collect()
}

/// A crash at every operation of a snapshot save leaves either the previous snapshot or
/// the new one, always valid, and at most two kept.
#[test]
fn snapshot_save_crash_at_every_operation() {
    for saver in [save_snapshot as Saver, stream_snapshot_sim as Saver] {
        crash_every_operation_of_saves(saver);
    }
}

fn crash_every_operation_of_saves(save_snapshot: Saver) {
    let probe = SimDisk::new(13);
    save_snapshot(&probe, 10, snapshot_bytes(10)).expect("first save");
    let start = probe.operation_count();
    save_snapshot(&probe, 20, snapshot_bytes(20)).expect("second save");
    save_snapshot(&probe, 30, snapshot_bytes(30)).expect("third save prunes the first");
    let end = probe.operation_count();
    for crash_at in start + 1..=end {
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::TearUnsynced,
        ] {
            let disk = SimDisk::new(crash_at);
            save_snapshot(&disk, 10, snapshot_bytes(10)).expect("first save");
            disk.crash_at_operation(crash_at);
            let _ = save_snapshot(&disk, 20, snapshot_bytes(20))
                .and_then(|()| save_snapshot(&disk, 30, snapshot_bytes(30)));
            disk.restart(mode);
            let (index, data) = load_snapshot(&disk)
                .unwrap_or_else(|error| panic!("crash at {crash_at} {mode:?}: {error}"))
                .expect("a snapshot survives");
            assert!([10, 20, 30].contains(&index));
            assert_eq!(data, snapshot_bytes(index));
            let kept = disk
                .paths()
                .iter()
                .filter(|path| path.extension().is_some_and(|e| e == "snap"))
                .count();
            assert!(kept <= 3, "kept {kept}");
        }
    }
    let kept = probe
        .paths()
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "snap"))
        .count();
    assert_eq!(kept, 2, "only the newest two are kept");
}

/// A flipped bit anywhere in a snapshot file (header or payload) is detected on load.
#[test]
fn snapshot_bit_flips_are_detected() {
    for offset in [0usize, 20, 33, 61, 64, 5000, 20_063] {
        let disk = SimDisk::new(14);
        save_snapshot(&disk, 10, snapshot_bytes(10)).expect("save");
        let path = disk
            .paths()
            .into_iter()
            .find(|path| path.extension().is_some_and(|e| e == "snap"))
            .expect("snapshot file");
        disk.flip_bit(&path, offset, 1);
        match load_snapshot(&disk) {
            Err(WalError::InvalidSnapshot { path: reported, .. }) => assert_eq!(reported, path),
            other => panic!("flip at {offset}: expected invalid snapshot, got {other:?}"),
        }
    }
}

/// A snapshot streamed in odd-sized pieces loads back byte for byte, and its file is
/// byte-identical to the one `save` writes with the default buffer, for payload lengths
/// on every side of the block and buffer boundaries (limit, limit + 1) and buffer sizes
/// from one block up.
#[test]
fn streamed_snapshot_round_trips_in_odd_pieces() {
    for buffer_bytes in [BLOCK_SIZE, 2 * BLOCK_SIZE, 5 * BLOCK_SIZE] {
        let header = 64;
        let lengths = [
            0,
            1,
            BLOCK_SIZE - header - 1,
            BLOCK_SIZE - header,
            BLOCK_SIZE - header + 1,
            buffer_bytes - header - 1,
            buffer_bytes - header,
            buffer_bytes - header + 1,
            2 * buffer_bytes - header,
            2 * buffer_bytes - header + 1,
            7 * buffer_bytes + 333,
        ];
        for length in lengths {
            let data: Vec<u8> = (0..length as u64)
                .map(|at| (at * 131 + at / 251) as u8)
                .collect();
            let streamed = SimDisk::new(21);
            let shared = Rc::new(streamed.clone());
            let pieces_data = data.clone();
            SimExecutor::new()
                .block_on(async move {
                    let store = SnapshotStore::new(shared, snap_dir(), 2)
                        .with_write_buffer_bytes(buffer_bytes);
                    let mut writer = store.begin(LogIndex(9), Term(3)).await?;
                    let mut rest = &pieces_data[..];
                    for piece in SNAPSHOT_PIECES.iter().cycle() {
                        if rest.is_empty() {
                            break;
                        }
                        let (now, later) = rest.split_at((*piece).min(rest.len()));
                        writer.write(now).await?;
                        rest = later;
                    }
                    writer.write(&[]).await?;
                    assert_eq!(writer.payload_len(), pieces_data.len() as u64);
                    writer.finish().await
                })
                .expect("save only waits on the simulated disk")
                .unwrap_or_else(|error| panic!("buffer {buffer_bytes} length {length}: {error}"));
            let (index, loaded) = load_snapshot(&streamed)
                .expect("valid")
                .expect("a snapshot exists");
            assert_eq!(index, 9);
            assert!(loaded == data, "buffer {buffer_bytes} length {length}");
            let whole = SimDisk::new(22);
            let shared = Rc::new(whole.clone());
            let whole_data = data.clone();
            SimExecutor::new()
                .block_on(async move {
                    SnapshotStore::new(shared, snap_dir(), 2)
                        .save(LogIndex(9), Term(3), &whole_data)
                        .await
                })
                .expect("save only waits on the simulated disk")
                .expect("save");
            let path = snap_dir().join(format!("{:016x}-{:016x}.snap", 9, 3));
            let streamed_file = streamed.read(&path).expect("streamed file");
            assert_eq!(
                streamed_file.len(),
                64 + length,
                "exact length, padding trimmed"
            );
            assert!(
                streamed_file == whole.read(&path).expect("saved file"),
                "buffer {buffer_bytes} length {length}: same bytes as a whole save"
            );
            assert!(snapshot_files(&streamed, "tmp").is_empty());
        }
    }
}

/// `abort` removes the temp file, before or after flushes, and leaves the previous
/// snapshot the one a restart loads, even after power loss.
#[test]
fn aborted_snapshot_removes_its_temp_file() {
    for written in [0usize, 100, 5 * SNAPSHOT_TEST_BUFFER_BYTES + 17] {
        let disk = SimDisk::new(23);
        save_snapshot(&disk, 10, snapshot_bytes(10)).expect("first save");
        let shared = Rc::new(disk.clone());
        let probe = disk.clone();
        SimExecutor::new()
            .block_on(async move {
                let store = SnapshotStore::new(shared, snap_dir(), 2)
                    .with_write_buffer_bytes(SNAPSHOT_TEST_BUFFER_BYTES);
                let mut writer = store.begin(LogIndex(20), Term(1)).await?;
                writer.write(&vec![7u8; written]).await?;
                assert_eq!(snapshot_files(&probe, "tmp").len(), 1, "temp file exists");
                writer.abort().await
            })
            .expect("abort only waits on the simulated disk")
            .expect("abort");
        assert!(snapshot_files(&disk, "tmp").is_empty(), "temp file removed");
        assert_eq!(snapshot_files(&disk, "snap").len(), 1);
        disk.restart(CrashMode::TearUnsynced);
        let (index, data) = load_snapshot(&disk).expect("valid").expect("a snapshot");
        assert_eq!((index, data), (10, snapshot_bytes(10)));
    }
}

/// A live writer's temp file survives another snapshot's prune; a second writer for the
/// same snapshot is refused; a writer dropped without `abort` leaves its temp file to the
/// next successful save, which removes it.
#[test]
fn live_writer_temp_file_is_not_pruned() {
    let disk = SimDisk::new(24);
    let shared = Rc::new(disk.clone());
    let probe = disk.clone();
    SimExecutor::new()
        .block_on(async move {
            let store = SnapshotStore::new(shared, snap_dir(), 2)
                .with_write_buffer_bytes(SNAPSHOT_TEST_BUFFER_BYTES);
            let mut streaming = store.begin(LogIndex(30), Term(2)).await?;
            streaming.write(&snapshot_bytes(30)[..9000]).await?;
            match store.begin(LogIndex(30), Term(2)).await {
                Err(WalError::SnapshotInProgress { .. }) => {}
                other => panic!("expected SnapshotInProgress, got {other:?}"),
            }
            // An installed snapshot saved while the local one streams.
            store
                .save(LogIndex(20), Term(2), &snapshot_bytes(20))
                .await?;
            assert_eq!(
                snapshot_files(&probe, "tmp").len(),
                1,
                "live temp file kept"
            );
            streaming.write(&snapshot_bytes(30)[9000..]).await?;
            let meta = streaming.finish().await?;
            assert_eq!(meta.index, LogIndex(30));
            let dropped = store.begin(LogIndex(40), Term(2)).await?;
            drop(dropped);
            assert_eq!(
                snapshot_files(&probe, "tmp").len(),
                1,
                "dropped temp file left"
            );
            store
                .save(LogIndex(50), Term(2), &snapshot_bytes(50))
                .await?;
            assert!(
                snapshot_files(&probe, "tmp").is_empty(),
                "stale temp pruned"
            );
            Ok::<(), WalError>(())
        })
        .expect("only waits on the simulated disk")
        .expect("saves succeed");
    let (index, data) = load_snapshot(&disk).expect("valid").expect("a snapshot");
    assert_eq!((index, data), (50, snapshot_bytes(50)));
}

/// An EIO at any operation of a streamed save fails that call. When it is a flush inside
/// `write`, the writer then refuses
/// more bytes and `finish` (a failed write is never retried), `abort` removes the temp
/// file, and the previous snapshot still loads.
#[test]
fn failed_streamed_write_poisons_the_writer() {
    let probe = SimDisk::new(25);
    save_snapshot(&probe, 10, snapshot_bytes(10)).expect("first save");
    let start = probe.operation_count();
    stream_snapshot_sim(&probe, 20, snapshot_bytes(20)).expect("streamed save");
    let end = probe.operation_count();
    let (mut failed_in_write, mut failed_later) = (0, 0);
    for fail_at in start + 1..=end {
        let disk = SimDisk::new(25);
        save_snapshot(&disk, 10, snapshot_bytes(10)).expect("first save");
        disk.fail_operation(fail_at, libc::EIO);
        let shared = Rc::new(disk.clone());
        let outcome = SimExecutor::new()
            .block_on(async move {
                let store = SnapshotStore::new(shared, snap_dir(), 2)
                    .with_write_buffer_bytes(SNAPSHOT_TEST_BUFFER_BYTES);
                let mut writer = store.begin(LogIndex(20), Term(1)).await?;
                let data = snapshot_bytes(20);
                for piece in data.chunks(3001) {
                    if writer.write(piece).await.is_err() {
                        let again = writer.write(b"x").await;
                        assert!(
                            matches!(again, Err(WalError::SnapshotWriterFailed { .. })),
                            "{again:?}"
                        );
                        writer.abort().await?;
                        return Ok(false);
                    }
                }
                writer.finish().await.map(|_| true)
            })
            .expect("only waits on the simulated disk");
        match outcome {
            Ok(false) => {
                failed_in_write += 1;
                assert!(snapshot_files(&disk, "tmp").is_empty(), "temp file removed");
                let (index, _) = load_snapshot(&disk).expect("valid").expect("a snapshot");
                assert_eq!(index, 10);
            }
            // The failure hit `finish` (its own writes, sync, rename, folder sync, prune).
            Ok(true) | Err(_) => {
                failed_later += 1;
                assert!(
                    snapshot_files(&disk, "tmp").is_empty(),
                    "fail at {fail_at}: a failed finish removes its temp file"
                );
                disk.restart(CrashMode::LoseUnsynced);
                let (index, data) = load_snapshot(&disk).expect("valid").expect("a snapshot");
                assert_eq!(data, snapshot_bytes(index));
            }
        }
    }
    assert!(
        failed_in_write >= 2 && failed_later >= 5,
        "flushes and finish both hit: {failed_in_write} in write, {failed_later} later"
    );
}

/// The default staging buffer is a whole number of blocks between 1 and 4 MiB.
#[test]
fn default_write_buffer_is_bounded() {
    assert_eq!(SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT % BLOCK_SIZE, 0);
    assert!((1 << 20..=4 << 20).contains(&SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT));
}
