//! kill -9 under write load: after every restart each acknowledged put is readable with
//! its value, and the revision never goes backwards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use corekv_engine::{PutRequest, RangeRequest, Revision};
use corekv_tests::TestServer;

const CYCLES: u64 = 20;
const WRITERS: u64 = 16;

#[test]
fn acknowledged_writes_survive_kill_9_at_random_moments() {
    // 20 cycles of 16 concurrent writers killed mid-flight at a random moment.
    let mut server = TestServer::start(
        "crash",
        &["--snapshot-count", "500", "--snapshot-log-bytes-min", "0"],
    )
    .unwrap();
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    let mut last_revision = Revision(0);
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    for cycle in 0..CYCLES {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let delay = Duration::from_millis(100 + random % 400);
        let pid = server.pid().expect("server running");
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            // SAFETY: kill(2) on the pid of the server child, which the test still owns.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        let acked: Vec<(String, u64, Revision)> = server.with_client(move |client| async move {
            let acked = Rc::new(RefCell::new(Vec::new()));
            let mut writers = Vec::new();
            for writer in 0..WRITERS {
                let client = client.clone();
                let acked = acked.clone();
                writers.push(glommio::spawn_local(async move {
                    for seq in 0.. {
                        let key = format!("crash/{cycle:02}/{writer:02}/{seq:06}");
                        let put = PutRequest {
                            key: key.clone().into_bytes(),
                            value: seq.to_string().into_bytes(),
                            ..Default::default()
                        };
                        match client.put(put).await {
                            Ok((header, _)) => acked.borrow_mut().push((key, seq, header.revision)),
                            Err(_) => return,
                        }
                    }
                }));
            }
            for writer in writers {
                writer.await;
            }
            Rc::try_unwrap(acked).expect("writers done").into_inner()
        });
        killer.join().unwrap();
        server.kill();
        assert!(
            !acked.is_empty(),
            "cycle {cycle}: some writes were acknowledged before the kill"
        );
        let newest = acked
            .iter()
            .map(|(_, _, revision)| *revision)
            .max()
            .unwrap();
        assert!(newest > last_revision, "cycle {cycle}: revisions advance");
        last_revision = newest;
        acknowledged.extend(acked.into_iter().map(|(key, seq, _)| (key, seq)));
        server.spawn().unwrap();
        let check = acknowledged.clone();
        let revision = server.with_client(move |client| async move {
            // One range read of everything written so far.
            let all = RangeRequest {
                key: b"crash/".to_vec(),
                range_end: b"crash0".to_vec(),
                ..Default::default()
            };
            let (header, stored) = client.range(all).await.unwrap();
            let stored: HashMap<Vec<u8>, Vec<u8>> = stored
                .kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect();
            for (key, seq) in &check {
                let value = stored
                    .get(key.as_bytes())
                    .unwrap_or_else(|| panic!("acknowledged key {key} lost"));
                assert_eq!(value, seq.to_string().as_bytes(), "{key}");
            }
            header.revision
        });
        assert!(
            revision >= last_revision,
            "cycle {cycle}: revision went back from {last_revision:?} to {revision:?}"
        );
    }
    assert!(
        acknowledged.len() as u64 > CYCLES * WRITERS,
        "the load was real: {} writes",
        acknowledged.len()
    );
}
