//! Snapshots between members: a leader sends a follower that is behind its log the
//! newest snapshot file, and a follower installs one it receives.
//!
//! Sending: Raft's `InstallSnapshot` carries only the snapshot's metadata (the bytes stay
//! in the file, not in Raft's memory). A task reads the newest snapshot file, fills the
//! message with its payload and metadata (a newer file than Raft named is fine: it is
//! committed state too) and hands it to the peer transport, which streams it on a
//! connection of its own; the outcome reaches Raft through `report_snapshot`.
//!
//! Installing: the engine, the member table and the applied index are replaced at once
//! (a snapshot is committed state, so it may be applied before it is durable, like
//! committed entries); the file is written, then one WAL append drops the old log and
//! records the snapshot marker with the Ready's entries and hard state. Until that
//! append is durable no further Ready is taken, so the WAL keeps Ready order. Watchers
//! of this member are cancelled (their clients watch again from the new state), client
//! snapshot streams fail, and a local snapshot being encoded finishes from the store it
//! started from.

use super::*;

impl Shard {
    /// Fills `message` from the newest snapshot file and sends it (in a task).
    pub(super) fn send_snapshot(
        &self,
        peers: Rc<PeerTransport>,
        mut message: corekv_raft::Message,
    ) {
        let snapshots = self.snapshots.clone();
        let failures = self.snapshot_send_failures.clone();
        glommio::spawn_local(async move {
            match load_newest_snapshot(&snapshots).await {
                Ok(snapshot) => {
                    eprintln!(
                        "corekv: sending member {:x} the snapshot at index {} ({} bytes)",
                        message.to.0,
                        snapshot.meta.index.0,
                        snapshot.data.len()
                    );
                    message.body = corekv_raft::MessageBody::InstallSnapshot { snapshot };
                    peers.send(vec![message]);
                }
                Err(error) => {
                    eprintln!(
                        "corekv: cannot send member {:x} a snapshot: {error:#}",
                        message.to.0
                    );
                    failures.borrow_mut().push(message.to);
                }
            }
        })
        .detach();
    }

    /// Replaces the state machine with a snapshot the leader sent.
    pub(super) fn install_snapshot(&mut self, snapshot: &Snapshot) {
        let index = snapshot.meta.index;
        let decoded = decode_snapshot_payload(&snapshot.data).and_then(|(_, table, engine)| {
            let store = Store::decode_snapshot(engine, self.store_config, self.now_ms())?;
            Ok((table, store))
        });
        let (table, store) = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                // Every later entry builds on this state: stopping is the only safe answer.
                self.poison(format!(
                    "the snapshot at index {} from the leader does not decode: {error:#}",
                    index.0
                ));
                return;
            }
        };
        let old = std::mem::replace(&mut self.store, store);
        self.store.lease_demote();
        match self.snapshot_encoding.as_mut() {
            Some(progress) if progress.retired.is_none() => progress.retired = Some(old),
            _ => drop(old),
        }
        for stream in std::mem::take(&mut self.client_snapshots) {
            self.reply_error(
                stream.client,
                CODE_UNAVAILABLE,
                "etcdserver: this member installed a snapshot from the leader; retry the snapshot",
            );
        }
        let header = self.header();
        for (_, client) in std::mem::take(&mut self.watchers) {
            let canceled = Response::WatchCanceled {
                header,
                compact_revision: Revision(0),
            };
            self.reply(client, canceled, false);
        }
        self.watchers_by_connection.clear();
        self.watchers_deferred.clear();
        if !table.members.is_empty() {
            self.member_table = table;
            self.peers_dirty = true;
        }
        self.applied = index;
        self.snapshot_index = index;
        self.last_written = index;
        self.applied_requests_since_snapshot = 0;
        self.applied_bytes_since_snapshot = 0;
        self.last_snapshot_bytes = snapshot.data.len() as u64;
        eprintln!(
            "corekv: installed the leader's snapshot of {} bytes at index {} (revision {})",
            snapshot.data.len(),
            index.0,
            self.store.revision().0
        );
    }
}

/// The newest snapshot file as a Raft snapshot, payload included.
async fn load_newest_snapshot(snapshots: &SnapshotStore<GlommioDisk>) -> Result<Snapshot> {
    let loaded = snapshots
        .load_newest()
        .await
        .context("cannot read the snapshot files")?
        .context("no snapshot file to send")?;
    let (conf_state, _, _) =
        decode_snapshot_payload(loaded.data()).context("the newest snapshot is corrupt")?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(loaded.meta.index.0),
            term: Term(loaded.meta.term.0),
            conf_state,
        },
        data: loaded.data().to_vec(),
    })
}
