//! The WAL and snapshot store on the real disk: glommio DMA files under a glommio
//! executor, in a temporary folder that is removed afterwards.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use corekv_wal::{
    GlommioDisk, HardState, LogIndex, MemberId, SnapshotMarker, SnapshotStore, Term, Wal,
    WalConfig, WalError, WalRecord, SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT,
};

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("corekv-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run<T, F>(task: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(task)
        .expect("start glommio executor (needs locked memory: ulimit -l)")
        .join()
        .expect("executor finished")
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: 256 * 1024,
        max_batch_bytes: 32 * 1024,
        max_record_bytes: 16 * 1024,
        ..WalConfig::default()
    }
}

async fn open(dir: &Path, replay_from: u64) -> (Wal<GlommioDisk>, corekv_wal::Recovered) {
    let (wal, flusher, recovered) =
        Wal::open(Rc::new(GlommioDisk), dir, config(), LogIndex(replay_from))
            .await
            .expect("open WAL");
    glommio::spawn_local(flusher.run()).detach();
    (wal, recovered)
}

/// Concurrent appenders on the real disk coalesce into fewer fdatasyncs than appends,
/// rotate segments, and everything is recovered after reopening.
#[test]
fn concurrent_appends_survive_reopen() {
    let temp = TempDir::new("appends");
    let dir = temp.0.join("wal");
    let appended = 600u64;
    let dir_for_run = dir.clone();
    let (batches, segments) = run(move || async move {
        let (wal, recovered) = open(&dir_for_run, 0).await;
        assert!(recovered.entries.is_empty());
        let wal = Rc::new(wal);
        let next = Rc::new(Cell::new(1u64));
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let (wal, next) = (wal.clone(), next.clone());
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..appended / 30 {
                    let index = next.get();
                    next.set(index + 1);
                    let data = vec![index as u8; 300];
                    wal.append(&[WalRecord::Entry {
                        index: LogIndex(index),
                        term: Term(1),
                        data: &data,
                    }])
                    .await
                    .expect("durable append");
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        wal.append(&[WalRecord::HardState(HardState {
            term: Term(1),
            vote: MemberId(1),
            commit: LogIndex(appended),
        })])
        .await
        .expect("hard state");
        (wal.stats().batches_synced, wal.segment_count())
    });
    assert!(
        batches < appended,
        "group commit coalesced {appended} appends into {batches} batches"
    );
    assert!(segments > 1, "the log rotated ({segments} segments)");
    let recovered = run(move || async move { open(&dir, 0).await.1 });
    assert_eq!(recovered.entries.len() as u64, appended);
    for (position, entry) in recovered.entries.iter().enumerate() {
        assert_eq!(entry.index.0, position as u64 + 1);
        assert_eq!(entry.data, vec![entry.index.0 as u8; 300]);
    }
    assert_eq!(
        recovered.hard_state.map(|hard_state| hard_state.commit),
        Some(LogIndex(appended))
    );
    assert!(recovered.torn_tail.is_none());
}

/// A snapshot saved on the real disk is loaded through a memory map and validated; after
/// recording it, old segments are released and replay starts after the snapshot; a
/// flipped byte in the snapshot file is detected.
#[test]
fn snapshot_round_trip_and_release() {
    let temp = TempDir::new("snapshot");
    let (wal_dir, snap_dir) = (temp.0.join("wal"), temp.0.join("snap"));
    let (wal_dir_run, snap_dir_run) = (wal_dir.clone(), snap_dir.clone());
    let released = run(move || async move {
        let (wal, _) = open(&wal_dir_run, 0).await;
        let data = vec![7u8; 2000];
        for index in 1..=400u64 {
            wal.append(&[WalRecord::Entry {
                index: LogIndex(index),
                term: Term(2),
                data: &data,
            }])
            .await
            .expect("append");
        }
        let store = SnapshotStore::new(Rc::new(GlommioDisk), &snap_dir_run, 2);
        let payload: Vec<u8> = (0..100_000u32).map(|value| value as u8).collect();
        for index in [100u64, 200, 300] {
            store
                .save(LogIndex(index), Term(2), &payload)
                .await
                .expect("save snapshot");
        }
        assert_eq!(
            store.list().await.expect("list").len(),
            2,
            "only the newest two are kept"
        );
        let loaded = store
            .load_newest()
            .await
            .expect("load")
            .expect("a snapshot exists");
        assert_eq!(loaded.meta.index, LogIndex(300));
        assert_eq!(loaded.data(), payload.as_slice());
        let before = wal.segment_count();
        let removed = wal
            .record_snapshot(SnapshotMarker {
                index: LogIndex(300),
                term: Term(2),
            })
            .await
            .expect("record snapshot");
        assert_eq!(wal.segment_count(), before - removed);
        removed
    });
    assert!(released > 0, "segments before the snapshot were released");
    let wal_dir_again = wal_dir.clone();
    let recovered = run(move || async move { open(&wal_dir_again, 300).await.1 });
    assert_eq!(
        recovered.entries.first().map(|entry| entry.index),
        Some(LogIndex(301))
    );
    assert_eq!(recovered.last_index, Some(LogIndex(400)));
    assert_eq!(
        recovered.snapshot.map(|marker| marker.index),
        Some(LogIndex(300))
    );
    let too_early = run(move || async move {
        Wal::open(Rc::new(GlommioDisk), &wal_dir, config(), LogIndex(0))
            .await
            .map(|_| ())
            .err()
    });
    assert!(
        matches!(too_early, Some(WalError::MissingEntries { .. })),
        "{too_early:?}"
    );

    let newest = snap_dir.join(format!("{:016x}-{:016x}.snap", 300, 2));
    let mut bytes = std::fs::read(&newest).expect("read snapshot");
    bytes[5000] ^= 0x10;
    std::fs::write(&newest, &bytes).expect("corrupt snapshot");
    let error = run(move || async move {
        SnapshotStore::new(Rc::new(GlommioDisk), &snap_dir, 2)
            .load_newest()
            .await
            .err()
    });
    assert!(
        matches!(error, Some(WalError::InvalidSnapshot { .. })),
        "{error:?}"
    );
}

/// A snapshot several staging buffers long, streamed in odd-sized pieces on the real
/// disk (O_DIRECT, header block written last), loads back byte for byte; an aborted
/// writer leaves no temp file behind.
#[test]
fn streamed_snapshot_on_the_real_disk() {
    let temp = TempDir::new("snapshot-stream");
    let snap_dir = temp.0.join("snap");
    let snap_dir_run = snap_dir.clone();
    run(move || async move {
        let store = SnapshotStore::new(Rc::new(GlommioDisk), &snap_dir_run, 2);
        let payload: Vec<u8> = (0..3 * SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT as u64 + 777)
            .map(|at| (at * 131 + at / 4093) as u8)
            .collect();
        let mut writer = store.begin(LogIndex(7), Term(2)).await.expect("begin");
        for piece in payload.chunks(300_007) {
            writer.write(piece).await.expect("write");
        }
        let meta = writer.finish().await.expect("finish");
        let loaded = store
            .load_newest()
            .await
            .expect("load")
            .expect("a snapshot exists");
        assert_eq!(loaded.meta, meta);
        assert!(loaded.data() == payload.as_slice(), "same bytes back");
        drop(loaded);

        let mut aborted = store.begin(LogIndex(8), Term(2)).await.expect("begin");
        aborted
            .write(&payload[..SNAPSHOT_WRITE_BUFFER_BYTES_DEFAULT + 5])
            .await
            .expect("write");
        aborted.abort().await.expect("abort");
    });
    let mut names: Vec<String> = std::fs::read_dir(&snap_dir)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![format!("{:016x}-{:016x}.snap", 7, 2)],
        "only the finished snapshot, no temp file"
    );
}
