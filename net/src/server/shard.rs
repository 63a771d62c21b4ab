//! The shard driver: one Raft group, its WAL and its engine, owned by one core.
//!
//! It follows `corekv-raft`'s driver contract step by step (see that crate's top doc):
//! inputs (client requests from every core, ticks, persistence acknowledgements) go into
//! one event queue; after each burst of events the driver proposes the writes it
//! collected as one entry, asks for one read index for every linearizable read waiting,
//! and handles every Ready: messages out, entries and hard state to the WAL (group
//! commit: several readies may be in the WAL's pipeline at once, acknowledged in order),
//! committed entries applied to the engine, replies and watch events back to the
//! connection cores in one batch per core.
//!
//! Invariants: a write is answered only after the entry holding it was applied, which
//! Raft allows only once it is durable on a quorum (here: after our own fsync);
//! `on_persisted` is called in Ready order; a WAL error poisons the shard (no write is
//! acknowledged afterwards, and the error is never retried).
//!
//! Never: block the executor on anything but the engine's own work, share engine state
//! with another core.

mod install;
mod lease_query;
mod membership;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_engine::{
    Error as EngineError, LeaseId, Revision, SnapshotWriter, Store, StoreConfig, WatchPoll,
    WatcherId, SNAPSHOT_CHUNK_BYTES_DEFAULT,
};
use corekv_raft::{
    Config as RaftConfig, Entry, EntryKind, HardState, LogIndex, MemberId, Proposed, RawNode,
    ReadState, Ready, RestartState, Role, Snapshot, SnapshotMeta, Term,
};
use corekv_wal::{
    GlommioDisk, SnapshotStore, Wal, WalConfig, WalError, WalRecord, MAX_BATCH_BYTES_DEFAULT,
    MAX_RECORD_BYTES_DEFAULT, SEGMENT_BYTES_DEFAULT, SNAPSHOTS_KEPT_DEFAULT,
};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver};
use glommio::{GlommioError, ResourceType};

use super::config::{ClusterState, ServerConfig};
use super::entry::{
    decode_proposal, decode_proposal_origin, decode_snapshot_payload, encode_proposal,
    encode_snapshot_payload, split_wal_entry, wal_entry_payload,
};
use super::members::{cluster_id, initial_member_info, initial_members, member_id, MemberTable};
use super::mesh::{ClientRequest, Reply, ToShard};
use super::metrics::{request_kind, Metrics, ShardFigures, REQUEST_KINDS};
use super::peer::PeerTransport;
use crate::protocol::{
    AlarmAction, AlarmMember, AlarmType, Header, Member, Request, Response, StatusResponse,
};

/// The shard id of phase 1's only shard.
pub const SHARD_ID: u64 = 0;
/// Writes proposed in one Raft entry at most.
pub const PROPOSAL_REQUESTS_MAX: usize = 4096;
/// Bytes of encoded requests in one Raft entry at most.
pub const PROPOSAL_BYTES_MAX: usize = 1024 * 1024;
/// WAL bytes a request may add beyond `--max-request-bytes` (framing, the proposal header).
const PROPOSAL_OVERHEAD_BYTES: usize = 64 * 1024;
/// Events a watcher hands over per poll.
pub const WATCH_EVENTS_PER_POLL: usize = 1000;
/// Leases revoked per expiry check at most (etcd revokes in bounded batches too).
pub const LEASE_REVOKES_PER_CHECK: usize = 1000;
/// How often the leader looks for expired leases.
pub const LEASE_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// How long a member waits for its published attributes to apply before publishing
/// again.
const PUBLISH_RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How often the shard copies its figures to `/metrics`.
const METRICS_INTERVAL: Duration = Duration::from_millis(10);
/// How long the shard pauses between rounds of background work (snapshot chunks,
/// watcher catch-up) when no event arrives.
const MORE_WORK_PAUSE: Duration = Duration::from_micros(200);

/// etcd's gRPC code for "unavailable".
const CODE_UNAVAILABLE: u32 = 14;
/// gRPC's "failed precondition".
const CODE_FAILED_PRECONDITION: u32 = 9;
/// gRPC's "resource exhausted".
const CODE_RESOURCE_EXHAUSTED: u32 = 8;
/// etcd's answer to writes while the NOSPACE alarm is raised.
pub const NO_SPACE_MESSAGE: &str = "etcdserver: mvcc: database space exceeded";
/// Bytes of store a client snapshot stream sends per chunk.
const CLIENT_SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;

/// The ids a member answers with.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    /// Cluster id.
    pub cluster: u64,
    /// This member's id.
    pub member: u64,
}

/// Everything that wakes the driver.
pub(crate) enum Event {
    /// A batch from a connection core.
    FromCore(ToShard),
    /// The WAL write of Ready `number` finished.
    Persisted {
        number: u64,
        result: std::result::Result<(), WalError>,
    },
    /// A heartbeat interval passed.
    Tick,
    /// A snapshot at `index` is durable and its marker is in the WAL.
    SnapshotSaved {
        index: LogIndex,
        result: std::result::Result<(), WalError>,
    },
    /// SIGINT or SIGTERM: finish what is in flight and stop.
    Shutdown,
    /// Raft messages from other members, in the order one peer sent them.
    Peer(Vec<corekv_raft::Message>),
}

/// Who is waiting for a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Client {
    core: usize,
    connection: u64,
    request_id: u64,
}

impl Client {
    fn of(request: &ClientRequest) -> Client {
        Client {
            core: request.core,
            connection: request.connection,
            request_id: request.request_id,
        }
    }
}

struct PendingProposal {
    clients: Vec<Option<Client>>,
    /// The requests as proposed: applied from here instead of decoding the entry again
    /// (the entry's bytes were encoded from them; other members decode those bytes).
    requests: Vec<Request>,
    deadline: Instant,
    /// This member's term when it proposed (or forwarded) the requests.
    term: Term,
}

/// A snapshot being encoded by the shard and streamed to its file by a task.
struct SnapshotInProgress {
    writer: SnapshotWriter,
    /// The store the snapshot was started from, if a snapshot from the leader replaced
    /// it meanwhile.
    retired: Option<Store>,
    /// Payload bytes handed to the file task so far.
    bytes: u64,
    /// Chunks on their way to the file task (bounded: the shard waits for room).
    chunks: LocalSender<Vec<u8>>,
    /// A chunk the full channel could not take yet.
    pending: Option<Vec<u8>>,
}

/// Chunks queued between the shard and the snapshot file task.
const SNAPSHOT_CHUNKS_QUEUED_MAX: usize = 2;

struct WaitingRead {
    request: ClientRequest,
    deadline: Instant,
}

/// A consistent snapshot streamed to a client (Maintenance.Snapshot), one chunk per
/// round while the client's core keeps up.
struct ClientSnapshot {
    client: Client,
    writer: SnapshotWriter,
    /// Store bytes when it started: the estimate behind `remaining_bytes`.
    estimate: u64,
    sent: u64,
}

/// A MoveLeader waiting for the target to lead.
struct LeaderMove {
    client: Client,
    target: MemberId,
    deadline: Instant,
}

/// The shard driver's state, owned by the shard's executor.
pub(crate) struct Shard {
    config: Rc<ServerConfig>,
    ids: Ids,
    raft: RawNode,
    store: Store,
    wal: Rc<Wal<GlommioDisk>>,
    snapshots: Rc<SnapshotStore<GlommioDisk>>,
    events: Rc<LocalSender<Event>>,
    /// Where replies go, one sender per core.
    cores: Vec<ConnectedSender<Vec<Reply>>>,
    /// Replies gathered this round, per core.
    outgoing: Vec<Vec<Reply>>,
    /// Replies a full core channel could not take yet, per core (sent first next time).
    backlog: Vec<VecDeque<Vec<Reply>>>,
    started: Instant,
    /// Writes waiting to be proposed.
    writes: Vec<ClientRequest>,
    /// Writes of the shard's own (alarms) waiting to be proposed; nobody awaits them.
    internal_writes: Vec<Request>,
    proposals: HashMap<u64, PendingProposal>,
    next_proposal: u64,
    /// Linearizable reads that have not asked for a read index yet.
    reads: Vec<WaitingRead>,
    /// Reads waiting for their read index, by read request id.
    reads_in_flight: HashMap<u64, Vec<WaitingRead>>,
    next_read: u64,
    /// Reads whose index is known, waiting for the engine to apply it.
    reads_ready: Vec<(LogIndex, Vec<WaitingRead>)>,
    /// Ready numbers handed to the WAL, in order, with whether they are durable.
    persisting: VecDeque<(u64, bool)>,
    /// Term of the last entry applied (0 until one is applied after start).
    applied_term: Term,
    /// Index of the last entry handed to the WAL.
    last_written: LogIndex,
    /// Term and vote of the last hard state handed to the WAL (None before the first).
    written_term_vote: Option<(Term, Option<MemberId>)>,
    /// A hard state that only moved the commit index, not written yet: it goes with the
    /// next append (see `handle_ready`).
    deferred_hard_state: Option<HardState>,
    applied: LogIndex,
    snapshot_index: LogIndex,
    /// Requests and entry bytes applied since the last snapshot started.
    applied_requests_since_snapshot: u64,
    applied_bytes_since_snapshot: u64,
    /// Payload bytes of the last snapshot written (its cost, to amortise the next).
    last_snapshot_bytes: u64,
    /// The applied index at the last tick, and the ticks since it last moved (see
    /// `maybe_snapshot_when_idle`).
    applied_at_last_tick: LogIndex,
    idle_ticks: u32,
    /// Bytes one WAL append may hold (the WAL's batch limit).
    wal_append_bytes_max: usize,
    /// A snapshot being encoded, one chunk per round.
    snapshot_encoding: Option<SnapshotInProgress>,
    /// A snapshot being written to disk.
    snapshot_in_flight: bool,
    watchers: HashMap<WatcherId, Client>,
    watchers_by_connection: HashMap<(usize, u64), Vec<WatcherId>>,
    /// Watchers with events to poll that were skipped because their core was backed up.
    watchers_deferred: HashSet<WatcherId>,
    leases_revoking: HashSet<LeaseId>,
    last_lease_check: Instant,
    /// Alarms raised, as applied from the log.
    alarms: std::collections::BTreeSet<AlarmMember>,
    /// A NOSPACE alarm this member proposed that has not been applied yet.
    no_space_proposed: bool,
    client_snapshots: Vec<ClientSnapshot>,
    leader_moves: Vec<LeaderMove>,
    metrics: Arc<Metrics>,
    last_metrics: Instant,
    /// The peer transport, once the cluster has other members.
    peers: Option<Rc<PeerTransport>>,
    /// Members the transport was told about.
    peer_ids: BTreeSet<u64>,
    /// The member table changed since the transport was last told.
    peers_dirty: bool,
    /// The replicated member table: names, peer and client URLs, removed ids.
    member_table: MemberTable,
    /// Clients of this member waiting for a membership change to be applied, by the
    /// proposal that carried their request.
    conf_waiters: HashMap<u64, (Client, Instant)>,
    /// Membership changes the leader has yet to propose (Raft takes one at a time).
    conf_queue: VecDeque<corekv_raft::ConfChange>,
    /// Lease time-to-live requests this follower asked the leader, by query number.
    lease_queries: HashMap<u64, lease_query::LeaseQuery>,
    next_lease_query: u64,
    /// The Ready whose snapshot (sent by the leader) is being written; no further Ready
    /// is taken until it is durable, so the WAL keeps Ready order.
    installing_snapshot: Option<u64>,
    /// Members a snapshot could not be prepared for (reported to Raft at the next tick).
    snapshot_send_failures: Rc<RefCell<Vec<MemberId>>>,
    store_config: StoreConfig,
    /// Whether this member's own attributes were applied since the last leader change,
    /// and when it last proposed them.
    published: bool,
    last_publish: Option<Instant>,
    /// Requests accepted, by [`REQUEST_KINDS`] index.
    request_counts: [u64; REQUEST_KINDS.len()],
    leader_changes: u64,
    proposals_failed: u64,
    /// `--auto-compaction-*` bookkeeping (the leader compacts).
    auto_compaction: AutoCompactor,
    was_leader: bool,
    /// Until the first election: a member that is the only voter campaigns at once
    /// instead of waiting an election timeout.
    campaign_if_sole_voter: bool,
    /// Set when the WAL failed: the shard takes no more writes.
    poisoned: Option<String>,
    shutting_down: bool,
}

fn to_wal_term(term: Term) -> corekv_wal::Term {
    corekv_wal::Term(term.0)
}

fn to_wal_index(index: LogIndex) -> corekv_wal::LogIndex {
    corekv_wal::LogIndex(index.0)
}

fn to_wal_hard_state(h: HardState) -> corekv_wal::HardState {
    corekv_wal::HardState {
        term: to_wal_term(h.term),
        vote: corekv_wal::MemberId(h.vote.map_or(0, |m| m.0)),
        commit: to_wal_index(h.commit),
    }
}

/// This member's id and the cluster's, derived from `--initial-cluster`, the peer URLs
/// and `--initial-cluster-token` as etcd derives them (see `members`).
pub fn derive_ids(config: &ServerConfig) -> Ids {
    let members = initial_members(config);
    let member = members.iter().find(|m| m.name == config.name).map_or_else(
        || member_id(&config.advertise_peer_urls, &config.cluster_token),
        |m| m.id,
    );
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    Ids {
        cluster: cluster_id(&ids),
        member,
    }
}

impl Shard {
    /// Recovers the shard from its data directory (or creates it) and returns it ready
    /// to run, with the WAL's flusher already spawned on this executor.
    pub(crate) async fn open(
        config: Rc<ServerConfig>,
        events: Rc<LocalSender<Event>>,
        metrics: Arc<Metrics>,
    ) -> Result<Shard> {
        let disk = Rc::new(GlommioDisk);
        let snap_dir = config.shard_snap_dir(SHARD_ID);
        let snapshots = Rc::new(SnapshotStore::new(
            disk.clone(),
            &snap_dir,
            SNAPSHOTS_KEPT_DEFAULT,
        ));
        let store_config = StoreConfig {
            txn_ops_max: config.txn_ops_max,
            lease_ttl_seconds_min: config.lease_ttl_seconds_min(),
        };
        let started = Instant::now();
        let mut snapshot = None;
        let mut store = Store::new(store_config);
        let mut member_table = MemberTable::default();
        if let Some(loaded) = snapshots
            .load_newest()
            .await
            .with_context(|| format!("cannot load snapshots from {}", snap_dir.display()))?
        {
            let (conf_state, table, engine_bytes) = decode_snapshot_payload(loaded.data())
                .with_context(|| format!("snapshot at index {} is corrupt", loaded.meta.index.0))?;
            member_table = table;
            if member_table.members.is_empty() {
                // A snapshot from a build without the member table: its members are the
                // ones --initial-cluster names.
                for (id, is_learner) in conf_state
                    .voters
                    .iter()
                    .map(|id| (id.0, false))
                    .chain(conf_state.learners.iter().map(|id| (id.0, true)))
                {
                    let mut member = initial_member_info(&config, id).unwrap_or_default();
                    member.is_learner = is_learner;
                    member_table.members.insert(id, member);
                }
            }
            store = Store::decode_snapshot(engine_bytes, store_config, 0).with_context(|| {
                format!("snapshot at index {} does not decode", loaded.meta.index.0)
            })?;
            snapshot = Some(Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(loaded.meta.index.0),
                    term: Term(loaded.meta.term.0),
                    conf_state,
                },
                // The bytes stay in the snapshot file; a follower that needs them is sent
                // the file by the peer transport, not a copy held in Raft's memory.
                data: Vec::new(),
            });
        }
        let snapshot_index = snapshot.as_ref().map_or(LogIndex(0), |s| s.meta.index);
        let wal_dir = config.shard_wal_dir(SHARD_ID);
        // One record must hold the largest proposal (one request of --max-request-bytes),
        // and one append twice that; segments hold several appends.
        let max_record_bytes =
            MAX_RECORD_BYTES_DEFAULT.max(config.request_bytes_max + PROPOSAL_OVERHEAD_BYTES);
        let max_batch_bytes = MAX_BATCH_BYTES_DEFAULT.max(2 * max_record_bytes);
        let segment_bytes =
            SEGMENT_BYTES_DEFAULT.max((4 * max_batch_bytes as u64).next_multiple_of(4096));
        let wal_config = WalConfig {
            shard_id: corekv_wal::ShardId(SHARD_ID),
            max_record_bytes,
            max_batch_bytes,
            segment_bytes,
            ..WalConfig::default()
        };
        let (wal, flusher, recovered) =
            Wal::open(disk, &wal_dir, wal_config, to_wal_index(snapshot_index))
                .await
                .with_context(|| format!("cannot recover the WAL in {}", wal_dir.display()))?;
        glommio::spawn_local(flusher.run()).detach();
        if let Some(torn) = &recovered.torn_tail {
            eprintln!("corekv: recovered the WAL after cutting a torn tail: {torn:?}");
        }
        let wal = Rc::new(wal);
        let fresh = recovered.metadata.is_none() && snapshot.is_none();
        // A restarted member keeps the ids it was created with, whatever the flags say now
        // (as etcd ignores --initial-cluster once the data dir exists); a member joining a
        // running cluster learns them from its peers.
        let ids = match recovered.metadata {
            Some(metadata) => Ids {
                cluster: metadata.cluster_id.0,
                member: metadata.member_id.0,
            },
            None if fresh && config.initial_cluster_state == ClusterState::Existing => {
                let (ids, table) = membership::discover(&config).await?;
                member_table = table;
                ids
            }
            None => derive_ids(&config),
        };
        let mut raft_config = RaftConfig::new(
            MemberId(ids.member),
            ids.member ^ started.elapsed().as_nanos() as u64,
        );
        raft_config.election_tick = config.election_ticks();
        raft_config.heartbeat_tick = 1;
        let (raft, last_written) = if fresh {
            let metadata = corekv_wal::Metadata {
                cluster_id: corekv_wal::ClusterId(ids.cluster),
                member_id: corekv_wal::MemberId(ids.member),
                shard_id: corekv_wal::ShardId(SHARD_ID),
            };
            wal.append(&[WalRecord::Metadata(metadata)])
                .await
                .context("cannot write the WAL")?;
            let raft = match config.initial_cluster_state {
                // Every member of a new cluster starts from the same configuration: the
                // voters named in --initial-cluster.
                ClusterState::New => {
                    let voters: Vec<MemberId> = initial_members(&config)
                        .iter()
                        .map(|m| MemberId(m.id))
                        .collect();
                    RawNode::bootstrap(raft_config, &voters)
                }
                // A member added to a running cluster learns the configuration from the
                // leader.
                ClusterState::Existing => RawNode::join(raft_config),
            };
            (raft, LogIndex(0))
        } else {
            let hard_state = recovered
                .hard_state
                .map_or(HardState::default(), |h| HardState {
                    term: Term(h.term.0),
                    vote: (h.vote.0 != 0).then_some(MemberId(h.vote.0)),
                    commit: LogIndex(h.commit.0),
                });
            let mut entries = Vec::with_capacity(recovered.entries.len());
            for entry in &recovered.entries {
                let (kind, data) = split_wal_entry(&entry.data)
                    .with_context(|| format!("WAL entry {} is corrupt", entry.index.0))?;
                entries.push(Entry {
                    term: Term(entry.term.0),
                    index: LogIndex(entry.index.0),
                    kind,
                    data: data.to_vec(),
                });
            }
            let last = entries.last().map_or(snapshot_index, |e: &Entry| e.index);
            let state = RestartState {
                hard_state,
                snapshot,
                entries,
                applied: snapshot_index,
            };
            (
                RawNode::restart(raft_config, state).context("cannot restart Raft from the WAL")?,
                last,
            )
        };
        store.lease_demote();
        let auto_compaction = AutoCompactor::new(config.auto_compaction, started);
        let mut shard = Shard {
            config,
            ids,
            raft,
            store,
            wal,
            snapshots,
            events,
            cores: Vec::new(),
            outgoing: Vec::new(),
            backlog: Vec::new(),
            started,
            writes: Vec::new(),
            internal_writes: Vec::new(),
            proposals: HashMap::new(),
            // Proposal ids must not repeat across restarts of this member, or an entry
            // of an earlier incarnation could be matched to a client waiting now.
            next_proposal: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |since| since.as_nanos() as u64),
            reads: Vec::new(),
            reads_in_flight: HashMap::new(),
            next_read: 1,
            reads_ready: Vec::new(),
            persisting: VecDeque::new(),
            last_written,
            applied_term: Term(0),
            written_term_vote: None,
            deferred_hard_state: None,
            applied: snapshot_index,
            snapshot_index,
            applied_requests_since_snapshot: 0,
            applied_bytes_since_snapshot: 0,
            last_snapshot_bytes: 0,
            applied_at_last_tick: LogIndex(0),
            idle_ticks: 0,
            snapshot_encoding: None,
            wal_append_bytes_max: max_batch_bytes,
            snapshot_in_flight: false,
            watchers: HashMap::new(),
            watchers_by_connection: HashMap::new(),
            watchers_deferred: HashSet::new(),
            leases_revoking: HashSet::new(),
            last_lease_check: started,
            alarms: std::collections::BTreeSet::new(),
            no_space_proposed: false,
            client_snapshots: Vec::new(),
            leader_moves: Vec::new(),
            metrics,
            last_metrics: started,
            peers: None,
            peer_ids: BTreeSet::new(),
            peers_dirty: true,
            member_table,
            conf_waiters: HashMap::new(),
            conf_queue: VecDeque::new(),
            lease_queries: HashMap::new(),
            next_lease_query: 1,
            installing_snapshot: None,
            snapshot_send_failures: Rc::new(RefCell::new(Vec::new())),
            store_config,
            published: false,
            last_publish: None,
            request_counts: [0; REQUEST_KINDS.len()],
            leader_changes: 0,
            proposals_failed: 0,
            auto_compaction,
            was_leader: false,
            campaign_if_sole_voter: true,
            poisoned: None,
            shutting_down: false,
        };
        shard.process_readies();
        release_free_memory(true);
        Ok(shard)
    }

    /// Sends Raft's messages to the other members. A snapshot's bytes live in its file,
    /// not in Raft's memory: an `InstallSnapshot` is filled from the newest snapshot file
    /// by a task before it goes (see `install.rs`).
    fn send_messages(&mut self, messages: Vec<corekv_raft::Message>) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        let (snapshots, messages): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|m| matches!(m.body, corekv_raft::MessageBody::InstallSnapshot { .. }));
        peers.send(messages);
        for message in snapshots {
            self.send_snapshot(peers.clone(), message);
        }
    }

    /// Tells Raft about peers the transport could not reach and snapshots it delivered.
    fn report_peers(&mut self) {
        let Some(peers) = self.peers.clone() else {
            return;
        };
        for member in peers.take_unreachable() {
            self.raft.report_unreachable(MemberId(member));
        }
        for (member, delivered) in peers.take_snapshot_reports() {
            self.raft.report_snapshot(MemberId(member), delivered);
        }
        let failed = std::mem::take(&mut *self.snapshot_send_failures.borrow_mut());
        for member in failed {
            self.raft.report_snapshot(member, false);
        }
    }

    /// Connects the reply channels to every core (after recovery, once the cores run).
    pub(crate) fn attach_cores(&mut self, cores: Vec<ConnectedSender<Vec<Reply>>>) {
        self.outgoing = (0..cores.len()).map(|_| Vec::new()).collect();
        self.backlog = (0..cores.len()).map(|_| VecDeque::new()).collect();
        self.cores = cores;
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn header(&self) -> Header {
        Header {
            cluster_id: self.ids.cluster,
            member_id: self.ids.member,
            revision: self.store.revision(),
            raft_term: self.raft.term().0,
        }
    }

    fn request_timeout(&self) -> Duration {
        // etcd: 5 s plus two election timeouts.
        Duration::from_secs(5) + 2 * self.config.election_timeout
    }

    fn reply(&mut self, client: Client, response: Response, completes: bool) {
        self.outgoing[client.core].push(Reply {
            connection: client.connection,
            request_id: client.request_id,
            response,
            completes,
        });
    }

    fn reply_error(&mut self, client: Client, code: u32, message: &str) {
        self.reply(
            client,
            Response::Error {
                code,
                message: message.to_string(),
            },
            true,
        );
    }

    /// Runs until shutdown. `inputs` are the receivers of every core's requests.
    pub(crate) async fn run(mut self, events: LocalReceiver<Event>) -> Result<()> {
        loop {
            if self.has_more_work() {
                // Snapshot chunks or watchers catching up: come back after a short wait or
                // at the next event, whichever is first. Never spin: a task that always
                // yields keeps the executor busy, and io_uring completions (the WAL's
                // fsyncs) would wait for the preemption timer.
                let event = futures_lite::future::or(async { Some(events.recv().await) }, async {
                    glommio::timer::sleep(MORE_WORK_PAUSE).await;
                    None
                })
                .await;
                match event {
                    Some(Some(event)) => self.handle(event),
                    Some(None) => break,
                    None => {}
                }
            } else {
                let Some(event) = events.recv().await else {
                    break;
                };
                self.handle(event);
            }
            // Take every event already queued before doing the round's work, so that
            // one proposal and one read index serve everything that arrived meanwhile.
            while let Some(Some(event)) = futures_lite::future::poll_once(events.recv()).await {
                self.handle(event);
            }
            self.round();
            self.flush_replies();
            if self.shutting_down && self.persisting.is_empty() && self.proposals.is_empty() {
                break;
            }
        }
        // A commit index deferred from the WAL is written before a clean stop, so that
        // a restart applies everything this member applied (a removed member finds its
        // removal again, serializable reads start where they stopped).
        if let Some(hard_state) = self.deferred_hard_state.take() {
            if self.poisoned.is_none() {
                let record = WalRecord::HardState(to_wal_hard_state(hard_state));
                if let Err(error) = self.wal.append(&[record]).await {
                    eprintln!("corekv: writing the last commit index at shutdown failed: {error}");
                }
            }
        }
        // Let the last replies reach the cores.
        for core in 0..self.cores.len() {
            while let Some(batch) = self.backlog[core].pop_front() {
                if self.cores[core].send(batch).await.is_err() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Whether a round has work left that no event will announce: deferred watchers on
    /// cores that can take replies.
    fn has_more_work(&self) -> bool {
        self.snapshot_encoding.is_some()
            || self
                .client_snapshots
                .iter()
                .any(|stream| self.backlog[stream.client.core].is_empty())
            || self.watchers_deferred.iter().any(|watcher| {
                self.watchers
                    .get(watcher)
                    .is_some_and(|client| self.backlog[client.core].is_empty())
            })
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::FromCore(ToShard::Requests(requests)) => {
                for request in requests {
                    self.accept(request);
                }
            }
            Event::FromCore(ToShard::Closed { core, connection }) => {
                self.drop_client_snapshots(core, connection);
                for watcher in self
                    .watchers_by_connection
                    .remove(&(core, connection))
                    .unwrap_or_default()
                {
                    self.store.watch_cancel(watcher);
                    self.watchers.remove(&watcher);
                    self.watchers_deferred.remove(&watcher);
                }
            }
            Event::Persisted { number, result } => {
                if let Err(error) = result {
                    self.poison(format!("WAL write failed: {error}"));
                    return;
                }
                if self.poisoned.is_some() {
                    // The pipeline was abandoned when the WAL failed: nothing after the
                    // failure is acknowledged to Raft, even if it reached the disk.
                    return;
                }
                let slot = self
                    .persisting
                    .iter_mut()
                    .find(|(n, _)| *n == number)
                    .expect("shard: persisted a ready that was handed to the WAL");
                slot.1 = true;
                if self.installing_snapshot == Some(number) {
                    self.installing_snapshot = None;
                }
                self.acknowledge_durable_readies();
            }
            Event::Tick => {
                self.raft.tick();
                self.expire_requests();
                self.expire_conf_waiters();
                self.drive_lease_queries();
                self.auto_compact();
                self.maybe_snapshot_when_idle();
                self.report_peers();
            }
            Event::Peer(messages) => {
                for message in messages {
                    if let corekv_raft::MessageBody::Node { data } = &message.body {
                        self.handle_node_message(message.from, data);
                    } else {
                        self.raft.step(message);
                    }
                }
            }
            Event::SnapshotSaved { index, result } => {
                self.snapshot_in_flight = false;
                // Not forced: a full collection here stalled the shard for 2-27 ms under
                // load (measured at 1 KiB values). The cores' periodic collection returns
                // the rest once mimalloc's purge delay has passed or the server is quiet.
                release_free_memory(false);
                match result {
                    Ok(()) => {
                        if index > self.raft.snapshot().map_or(LogIndex(0), |s| s.meta.index) {
                            if let Err(error) = self.raft.compact(index, Vec::new()) {
                                eprintln!(
                                    "corekv: Raft log compaction at {} refused: {error}",
                                    index.0
                                );
                            }
                        }
                        // A snapshot installed from the leader meanwhile may be newer.
                        self.snapshot_index = self.snapshot_index.max(index);
                    }
                    Err(error) => self.poison(format!("snapshot write failed: {error}")),
                }
            }
            Event::Shutdown => self.shutting_down = true,
        }
    }

    /// Routes one client request: writes wait for the next proposal, reads are served now
    /// or after a read index, watch and lease-local requests are answered at once.
    fn accept(&mut self, request: ClientRequest) {
        let client = Client::of(&request);
        self.request_counts[request_kind(&request.request)] += 1;
        if self.shutting_down {
            self.reply_error(client, CODE_UNAVAILABLE, "etcdserver: server stopped");
            return;
        }
        if !served_by_learner(&request.request)
            && self
                .raft
                .conf_state()
                .learners
                .contains(&MemberId(self.ids.member))
        {
            self.reply_error(
                client,
                CODE_UNAVAILABLE,
                "etcdserver: rpc not supported for learner",
            );
            return;
        }
        match &request.request {
            Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Txn(_)
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::Alarm {
                action: AlarmAction::Activate | AlarmAction::Deactivate,
                ..
            } => {
                if let Some(reason) = &self.poisoned {
                    let message = format!("corekv: shard stopped taking writes: {reason}");
                    self.reply_error(client, CODE_UNAVAILABLE, &message);
                } else if adds_data(&request.request) && self.has_alarm(AlarmType::NoSpace) {
                    self.reply_error(client, CODE_RESOURCE_EXHAUSTED, NO_SPACE_MESSAGE);
                } else {
                    // Over the quota, the alarm is proposed ahead of this write, so the
                    // write is refused when applied, after the alarm is raised (etcd
                    // answers once the alarm is in place too).
                    if adds_data(&request.request) {
                        self.check_quota(&request.request);
                    }
                    self.writes.push(request);
                }
            }
            Request::MemberList { linearizable: true } => {
                let deadline = Instant::now() + self.request_timeout();
                self.reads.push(WaitingRead { request, deadline });
            }
            Request::MemberList {
                linearizable: false,
            }
            | Request::Alarm {
                action: AlarmAction::Get,
                ..
            }
            | Request::Hash
            | Request::HashKv { .. } => self.serve_read(client, &request.request),
            Request::Defragment => {
                // The store lives in memory: defragmenting returns what compaction freed
                // to the operating system.
                release_free_memory(true);
                let header = self.header();
                self.reply(client, Response::Defragment(header), true);
            }
            Request::Snapshot => {
                let estimate = self.store.approximate_bytes() as u64;
                let writer = self.store.snapshot_writer();
                self.client_snapshots.push(ClientSnapshot {
                    client,
                    writer,
                    estimate,
                    sent: 0,
                });
            }
            Request::MoveLeader { target } => self.move_leader(client, MemberId(*target)),
            Request::PublishMember { .. } | Request::MemberChangeRefused { .. } => {
                self.reply_error(
                    client,
                    3,
                    "corekv: this request is the members' own; clients cannot send it",
                );
            }
            Request::MemberChange(_) => self.accept_member_change(request),
            Request::Range(range) if range.serializable => {
                self.serve_read(client, &request.request);
            }
            Request::Range(_) => {
                let deadline = Instant::now() + self.request_timeout();
                self.reads.push(WaitingRead { request, deadline });
            }
            Request::LeaseKeepAlive { .. } if self.raft.role() != Role::Leader => {
                // Only the leader tracks deadlines: a follower's keep-alive goes through
                // the log (forwarded with the next proposal), and the leader renews the
                // lease when it applies it.
                if let Some(reason) = &self.poisoned {
                    let message = format!("corekv: shard stopped taking writes: {reason}");
                    self.reply_error(client, CODE_UNAVAILABLE, &message);
                } else {
                    self.writes.push(request);
                }
            }
            Request::LeaseKeepAlive { id } => {
                let response = self.keep_alive(*id);
                self.reply(client, response, true);
            }
            Request::LeaseTimeToLive { id, keys }
                if self.raft.role() != Role::Leader && self.peers.is_some() =>
            {
                // Only the leader knows how long a lease has left.
                self.forward_lease_time_to_live(client, *id, *keys);
            }
            Request::LeaseTimeToLive { .. } | Request::LeaseLeases | Request::Status => {
                self.serve_read(client, &request.request);
            }
            Request::WatchCreate(watch) => {
                let watcher = self.store.watch_create(watch.clone());
                self.watchers.insert(watcher, client);
                self.watchers_by_connection
                    .entry((client.core, client.connection))
                    .or_default()
                    .push(watcher);
                let header = self.header();
                self.reply(client, Response::WatchCreated(header), true);
            }
            Request::WatchCancel { watch_id } => {
                let key = (client.core, client.connection);
                let found = self.watchers_by_connection.get(&key).and_then(|ids| {
                    ids.iter().copied().find(|w| {
                        self.watchers
                            .get(w)
                            .is_some_and(|c| c.request_id == *watch_id)
                    })
                });
                let header = self.header();
                if let Some(watcher) = found {
                    self.store.watch_cancel(watcher);
                    self.forget_watcher(watcher);
                    let watch_client = Client {
                        request_id: *watch_id,
                        ..client
                    };
                    let canceled = Response::WatchCanceled {
                        header,
                        compact_revision: Revision(0),
                    };
                    self.reply(watch_client, canceled, false);
                }
                let canceled = Response::WatchCanceled {
                    header,
                    compact_revision: Revision(0),
                };
                self.reply(client, canceled, true);
            }
            Request::WatchProgress => {
                let key = (client.core, client.connection);
                let synced = self.watchers_by_connection.get(&key).is_none_or(|ids| {
                    ids.iter()
                        .all(|w| self.store.watch_is_synced(*w).unwrap_or(true))
                });
                if synced {
                    let header = self.header();
                    self.reply(client, Response::WatchProgress(header), true);
                } else {
                    // etcd sends no progress while a watcher is catching up; the client
                    // asks again later.
                    let header = Header {
                        revision: Revision(0),
                        ..self.header()
                    };
                    self.reply(client, Response::WatchProgress(header), true);
                }
            }
        }
    }

    /// Answers a read from the local engine.
    fn serve_read(&mut self, client: Client, request: &Request) {
        let header = self.header();
        let response = match request {
            Request::Range(range) => match self.store.range(range) {
                Ok(response) => Response::Range(header, response),
                Err(error) => engine_error(&error),
            },
            Request::LeaseTimeToLive { id, keys } => self.lease_time_to_live(*id, *keys),
            Request::LeaseLeases => Response::LeaseLeases(header, self.store.lease_ids_by_expiry()),
            Request::Status => {
                let status = self.raft.status();
                Response::Status(StatusResponse {
                    header,
                    version: super::VERSION.to_string(),
                    db_size: self.store.approximate_bytes() as u64,
                    leader: self.raft.leader().map_or(0, |m| m.0),
                    raft_index: status.last_index.0,
                    raft_term: self.raft.term().0,
                    raft_applied_index: self.applied.0,
                    is_learner: self
                        .raft
                        .conf_state()
                        .learners
                        .contains(&MemberId(self.ids.member)),
                })
            }
            Request::MemberList { .. } => Response::MemberList(header, self.members()),
            Request::Alarm { alarm, .. } => Response::Alarm(
                header,
                self.alarms
                    .iter()
                    .filter(|raised| *alarm == AlarmType::None || raised.alarm == *alarm)
                    .copied()
                    .collect(),
            ),
            Request::Hash => match self.store.hash_kv(Revision(0)) {
                Ok(hashed) => Response::Hash {
                    header,
                    hash: hashed.hash,
                },
                Err(error) => engine_error(&error),
            },
            Request::HashKv { revision } => match self.store.hash_kv(*revision) {
                Ok(hashed) => Response::HashKv {
                    header,
                    hash: hashed.hash,
                    compact_revision: hashed.compact_revision,
                    hash_revision: hashed.hash_revision,
                },
                Err(error) => engine_error(&error),
            },
            other => unreachable!("shard: {other:?} is not a read"),
        };
        self.reply(client, response, true);
    }

    /// The work after a burst of events: propose, ask for read indexes, handle readies,
    /// serve reads whose index is applied, hand out watch events, expire leases.
    fn round(&mut self) {
        if self.campaign_if_sole_voter && self.raft.role() != Role::Leader {
            // Raft knows the membership once the bootstrap entries (or the snapshot) are
            // applied, which may take the first WAL write.
            let me = MemberId(self.ids.member);
            if self.raft.conf_state().voters == [me] {
                self.campaign_if_sole_voter = false;
                self.raft.campaign();
            }
        } else {
            self.campaign_if_sole_voter = false;
        }
        if let Err(error) = self.sync_peers() {
            self.poison(format!("cannot start the peer transport: {error:#}"));
        }
        self.publish_self();
        self.propose_conf_changes();
        self.propose_writes();
        self.request_read_index();
        self.check_leases();
        self.process_readies();
        self.serve_applied_reads();
        self.poll_watchers();
        self.advance_snapshot();
        self.advance_client_snapshots();
        self.check_leader_moves();
        self.publish_metrics();
    }

    /// Copies the shard's figures to `/metrics` (at most every [`METRICS_INTERVAL`]).
    fn publish_metrics(&mut self) {
        if self.last_metrics.elapsed() < METRICS_INTERVAL {
            return;
        }
        self.last_metrics = Instant::now();
        let status = self.raft.status();
        let figures = ShardFigures {
            raft_term: status.term.0,
            raft_last_index: status.last_index.0,
            raft_commit_index: status.commit.0,
            raft_applied_index: self.applied.0,
            has_leader: status.leader.is_some(),
            is_leader: status.role == Role::Leader,
            leader_changes: self.leader_changes,
            db_size_bytes: self.store.approximate_bytes() as u64,
            keys: self.store.key_count() as u64,
            revision: self.store.revision().0,
            compact_revision: self.store.compact_revision().0,
            watchers: self.watchers.len() as u64,
            leases: self.store.lease_count() as u64,
            proposals_pending: self.proposals.len() as u64,
            proposals_failed: self.proposals_failed,
        };
        self.metrics
            .publish_shard(&figures, &self.wal.stats(), &self.request_counts);
    }

    fn propose_writes(&mut self) {
        if !self.internal_writes.is_empty() && self.raft.leader().is_some() {
            let internal = std::mem::take(&mut self.internal_writes);
            let clients = vec![None; internal.len()];
            self.propose(internal, clients);
        }
        if self.writes.is_empty() || self.raft.leader().is_none() {
            // Without a leader writes wait (until their deadline) for one to appear.
            return;
        }
        // A membership change travels alone: its proposal id is how the member that
        // took it finds its client again (see membership.rs).
        let (changes, writes): (Vec<_>, Vec<_>) = std::mem::take(&mut self.writes)
            .into_iter()
            .partition(|w| matches!(w.request, Request::MemberChange(_)));
        for change in changes {
            let client = Client::of(&change);
            self.propose(vec![change.request], vec![Some(client)]);
        }
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let mut requests = Vec::new();
            let mut clients = Vec::new();
            let mut bytes = 0;
            while requests.len() < PROPOSAL_REQUESTS_MAX {
                let Some(next) = writes.peek() else { break };
                let size = request_size_hint(&next.request);
                // A proposal holds at least one request, however large.
                if !requests.is_empty() && bytes + size > PROPOSAL_BYTES_MAX {
                    break;
                }
                let write = writes.next().expect("peeked");
                bytes += size;
                clients.push(Some(Client::of(&write)));
                requests.push(write.request);
            }
            self.propose(requests, clients);
        }
    }

    fn propose(&mut self, requests: Vec<Request>, clients: Vec<Option<Client>>) {
        let proposal_id = self.next_proposal;
        self.next_proposal += 1;
        let size_hint = requests.iter().map(request_size_hint).sum();
        let data = encode_proposal(self.ids.member, proposal_id, requests.iter(), size_hint);
        match self.raft.propose(data) {
            Ok(Proposed::Appended { .. } | Proposed::Forwarded { .. }) => {
                let deadline = Instant::now() + self.request_timeout();
                self.proposals.insert(
                    proposal_id,
                    PendingProposal {
                        clients,
                        requests,
                        deadline,
                        term: self.raft.term(),
                    },
                );
            }
            Err(error) => {
                let message = error.to_string();
                for client in clients.into_iter().flatten() {
                    self.reply_error(client, CODE_UNAVAILABLE, &message);
                }
            }
        }
    }

    fn request_read_index(&mut self) {
        if self.reads.is_empty() || self.raft.leader().is_none() {
            return;
        }
        let id = self.next_read;
        self.next_read += 1;
        match self.raft.read_index(id) {
            Ok(()) => {
                let reads = std::mem::take(&mut self.reads);
                self.reads_in_flight.insert(id, reads);
            }
            Err(error) => {
                let message = error.to_string();
                for read in std::mem::take(&mut self.reads) {
                    self.reply_error(Client::of(&read.request), CODE_UNAVAILABLE, &message);
                }
            }
        }
    }

    fn check_leases(&mut self) {
        if self.raft.role() != Role::Leader
            || self.last_lease_check.elapsed() < LEASE_CHECK_INTERVAL
        {
            return;
        }
        self.last_lease_check = Instant::now();
        let expired: Vec<Request> = self
            .store
            .lease_expired(self.now_ms(), LEASE_REVOKES_PER_CHECK)
            .into_iter()
            .filter(|id| self.leases_revoking.insert(*id))
            .map(|id| Request::LeaseRevoke { id })
            .collect();
        if !expired.is_empty() {
            let clients = vec![None; expired.len()];
            self.propose(expired, clients);
        }
    }

    fn process_readies(&mut self) {
        while self.installing_snapshot.is_none() && self.raft.has_ready() {
            let ready = self.raft.ready();
            self.handle_ready(ready);
        }
    }

    fn handle_ready(&mut self, mut ready: Ready) {
        if ready.soft_state.is_some() {
            self.leader_changes += 1;
            // A new leader (or a member restarted from a snapshot) may not know this
            // member's client URLs: publish them again.
            self.published = false;
            let leader = self.raft.role() == Role::Leader;
            if leader && !self.was_leader {
                let extend = self.config.election_timeout.as_millis() as u64;
                self.store.lease_promote(self.now_ms(), extend);
            } else if !leader && self.was_leader {
                self.store.lease_demote();
                self.leases_revoking.clear();
            }
            self.was_leader = leader;
        }
        // Messages go out now, in parallel with persisting (the Ready contract).
        let messages = std::mem::take(&mut ready.messages);
        if !messages.is_empty() {
            self.send_messages(messages);
        }
        if let Some(snapshot) = ready.snapshot.take() {
            // A snapshot from the leader replaces the state machine now and the log once
            // its file and WAL marker are durable (install.rs).
            self.install_snapshot(&snapshot);
            self.installing_snapshot = Some(ready.number);
            self.persist(&ready, Some(snapshot));
        } else if ready.must_persist() && !self.commit_only(&ready) {
            self.persist(&ready, None);
        } else {
            // Nothing to persist, or only a commit index (which Raft may lose: a
            // restarted member learns it again from the leader, or as the leader from
            // its first entry of the new term, and never applies beyond it): the commit
            // goes with the next append instead of an fsync of its own (etcd syncs
            // only for entries, term and vote too).
            if let Some(hard_state) = ready.hard_state {
                self.deferred_hard_state = Some(hard_state);
            }
            self.persisting.push_back((ready.number, true));
            self.acknowledge_durable_readies();
        }
        for entry in ready.committed_entries {
            self.apply(entry);
        }
        for read in ready.read_states {
            self.read_state(read);
        }
        self.snapshot_if_due(false);
    }

    /// Whether `ready` only moves the commit index: no entries, no snapshot, the term
    /// and vote already handed to the WAL, and no configuration change committed (that
    /// commit is written at once: a member that applies its own removal stops, and must
    /// find the removal again if restarted).
    fn commit_only(&self, ready: &Ready) -> bool {
        ready.entries.is_empty()
            && ready.snapshot.is_none()
            && !ready
                .committed_entries
                .iter()
                .any(|entry| entry.kind == EntryKind::ConfChange)
            && ready
                .hard_state
                .is_some_and(|h| self.written_term_vote == Some((h.term, h.vote)))
    }

    /// Hands a Ready's entries and hard state to the WAL as one atomic append. With a
    /// snapshot from the leader, its file is written first and the append begins by
    /// dropping the whole log and recording the snapshot.
    fn persist(&mut self, ready: &Ready, snapshot: Option<Snapshot>) {
        let mut payloads: Vec<(corekv_wal::LogIndex, corekv_wal::Term, Vec<u8>)> =
            Vec::with_capacity(ready.entries.len());
        let mut truncate_from = None;
        if let Some(first) = ready.entries.first() {
            if first.index <= self.last_written && snapshot.is_none() {
                truncate_from = Some(first.index);
            }
        }
        if snapshot.is_some() {
            truncate_from = Some(LogIndex(0));
        }
        for entry in &ready.entries {
            payloads.push((
                to_wal_index(entry.index),
                to_wal_term(entry.term),
                wal_entry_payload(entry.kind, &entry.data),
            ));
        }
        if let Some(last) = ready.entries.last() {
            self.last_written = last.index;
        }
        // A deferred commit-only hard state is older than the Ready's own, if any.
        let deferred = self.deferred_hard_state.take();
        let newest = ready.hard_state.or(deferred);
        if let Some(h) = newest {
            self.written_term_vote = Some((h.term, h.vote));
        }
        let hard_state = newest.map(to_wal_hard_state);
        let number = ready.number;
        self.persisting.push_back((number, false));
        let wal = self.wal.clone();
        let events = self.events.clone();
        let append_bytes_max = self.wal_append_bytes_max;
        let snapshots = self.snapshots.clone();
        glommio::spawn_local(async move {
            let mut records = Vec::with_capacity(payloads.len() + 3);
            if let Some(from) = truncate_from {
                records.push(WalRecord::TruncateSuffix {
                    from: to_wal_index(from),
                });
            }
            if let Some(snapshot) = &snapshot {
                let (index, term) = (
                    to_wal_index(snapshot.meta.index),
                    to_wal_term(snapshot.meta.term),
                );
                if let Err(error) = snapshots.save(index, term, &snapshot.data).await {
                    let _ = events
                        .send(Event::Persisted {
                            number,
                            result: Err(error),
                        })
                        .await;
                    return;
                }
                records.push(WalRecord::SnapshotMarker(corekv_wal::SnapshotMarker {
                    index,
                    term,
                }));
            }
            for (index, term, data) in &payloads {
                records.push(WalRecord::Entry {
                    index: *index,
                    term: *term,
                    data,
                });
            }
            if let Some(hard_state) = hard_state {
                records.push(WalRecord::HardState(hard_state));
            }
            let result = append_in_order(&wal, &records, append_bytes_max).await;
            let _ = events.send(Event::Persisted { number, result }).await;
        })
        .detach();
    }

    /// Fails the proposals made in a term before `term` that are still waiting, once an
    /// entry of `term` is applied: a leader appends a proposal in the term it was sent in
    /// (Raft drops messages of older terms), and the log's terms never decrease, so an
    /// entry of an older term can no longer follow. Their clients (those of a proposal
    /// forwarded to a leader that died, mostly) get a retryable error now instead of at
    /// the request timeout.
    fn fail_proposals_before(&mut self, term: Term) {
        self.fail_proposals(|pending| pending.term < term, "etcdserver: leader changed");
    }

    /// Drops the waiting proposals that `lost` picks and answers their clients with
    /// `message` (Unavailable: clients retry).
    fn fail_proposals(&mut self, lost: impl Fn(&PendingProposal) -> bool, message: &str) {
        let ids: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, pending)| lost(pending))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let pending = self.proposals.remove(&id).expect("listed above");
            self.proposals_failed += 1;
            for client in pending.clients.into_iter().flatten() {
                self.reply_error(client, CODE_UNAVAILABLE, message);
            }
        }
    }

    /// Applies one committed entry and answers the clients waiting for it.
    fn apply(&mut self, entry: Entry) {
        assert!(
            entry.index > self.applied,
            "shard: entries are applied in order, once"
        );
        self.applied = entry.index;
        if entry.term > self.applied_term {
            self.applied_term = entry.term;
            self.fail_proposals_before(entry.term);
        }
        if entry.kind == EntryKind::ConfChange {
            // Raft already changed its configuration; the member table follows.
            self.apply_conf_change(&entry);
            return;
        }
        if entry.data.is_empty() {
            // The no-op a new leader appends carries nothing.
            return;
        }
        let origin = decode_proposal_origin(&entry.data).ok();
        let pending = match origin {
            Some((origin, proposal_id)) if origin == self.ids.member => {
                self.proposals.remove(&proposal_id)
            }
            _ => None,
        };
        let (requests, clients) = match pending {
            Some(pending) => (pending.requests, pending.clients),
            None => match decode_proposal(&entry.data) {
                Ok(proposal) => (proposal.requests, Vec::new()),
                Err(error) => {
                    // Every member would fail the same way; stopping is the only safe answer.
                    self.poison(format!(
                        "committed entry {} does not decode: {error:#}",
                        entry.index.0
                    ));
                    return;
                }
            },
        };
        self.applied_requests_since_snapshot += requests.len() as u64;
        self.applied_bytes_since_snapshot += entry.data.len() as u64;
        let mut clients = clients.into_iter();
        for request in &requests {
            let client = clients.next().flatten();
            let response = match request {
                Request::MemberChange(change) => {
                    let (origin, proposal_id) = origin.unwrap_or_default();
                    match self.apply_member_change(change, origin, proposal_id) {
                        Some(response) => response,
                        None => {
                            // Answered once the membership change itself is applied.
                            if let Some(client) = client {
                                let deadline = Instant::now() + self.request_timeout();
                                self.conf_waiters.insert(proposal_id, (client, deadline));
                            }
                            continue;
                        }
                    }
                }
                request => self.apply_request(request),
            };
            if let Some(client) = client {
                self.reply(client, response, true);
            }
        }
    }

    fn apply_request(&mut self, request: &Request) -> Response {
        let header_at = |shard: &Shard, revision: Revision| Header {
            revision,
            ..shard.header()
        };
        if adds_data(request) && self.has_alarm(AlarmType::NoSpace) {
            // Every member applies the same alarms in the same order, so every member
            // refuses the same writes.
            return Response::Error {
                code: CODE_RESOURCE_EXHAUSTED,
                message: NO_SPACE_MESSAGE.to_string(),
            };
        }
        match request {
            Request::PublishMember {
                member_id,
                name,
                client_urls,
            } => {
                if *member_id == self.ids.member {
                    self.published = true;
                }
                // A member removed meanwhile stays removed.
                if let Some(member) = self.member_table.members.get_mut(member_id) {
                    member.name = name.clone();
                    member.client_urls = client_urls.clone();
                }
                Response::MemberList(self.header(), self.members())
            }
            Request::Alarm {
                action,
                member_id,
                alarm,
            } => {
                let raised = AlarmMember {
                    member_id: *member_id,
                    alarm: *alarm,
                };
                let changed = match action {
                    AlarmAction::Activate if *alarm != AlarmType::None => {
                        if *alarm == AlarmType::NoSpace {
                            self.no_space_proposed = false;
                        }
                        self.alarms.insert(raised)
                    }
                    AlarmAction::Deactivate => self.alarms.remove(&raised),
                    _ => false,
                };
                let alarms = if changed { vec![raised] } else { Vec::new() };
                Response::Alarm(self.header(), alarms)
            }
            Request::Put(put) => match self.store.put(put) {
                Ok(applied) => Response::Put(header_at(self, applied.revision), applied.response),
                Err(error) => engine_error(&error),
            },
            Request::DeleteRange(delete) => match self.store.delete_range(delete) {
                Ok(applied) => {
                    Response::DeleteRange(header_at(self, applied.revision), applied.response)
                }
                Err(error) => engine_error(&error),
            },
            Request::Txn(txn) => match self.store.txn(txn) {
                Ok(applied) => Response::Txn(header_at(self, applied.revision), applied.response),
                Err(error) => engine_error(&error),
            },
            Request::Compact { revision, .. } => match self.store.compact(*revision) {
                Ok(current) => Response::Compact(header_at(self, current)),
                Err(error) => engine_error(&error),
            },
            Request::LeaseGrant { id, ttl_seconds } => {
                match self.store.lease_grant(*id, *ttl_seconds, self.now_ms()) {
                    Ok(grant) => Response::LeaseGrant {
                        header: self.header(),
                        id: grant.id,
                        ttl_seconds: grant.ttl_seconds,
                    },
                    Err(error) => engine_error(&error),
                }
            }
            Request::LeaseRevoke { id } => {
                self.leases_revoking.remove(id);
                match self.store.lease_revoke(*id) {
                    Ok(revision) => Response::LeaseRevoke(header_at(self, revision)),
                    Err(error) => engine_error(&error),
                }
            }
            // Renews the deadline on the leader (followers track none).
            Request::LeaseKeepAlive { id } => self.keep_alive(*id),
            Request::MemberChangeRefused {
                origin,
                proposal_id,
                code,
                message,
            } => {
                self.apply_member_change_refused(*origin, *proposal_id, *code, message);
                Response::MemberList(self.header(), self.members())
            }
            other => Response::Error {
                code: 3,
                message: format!("corekv: {other:?} is not a write and was not applied"),
            },
        }
    }

    /// Lease `id`'s time-to-live from this member's store (its remaining TTL is right on
    /// the leader only, which tracks the deadlines); etcd answers an unknown lease with
    /// TTL -1, not an error.
    fn lease_ttl(&self, id: LeaseId, keys: bool) -> corekv_engine::LeaseTimeToLive {
        self.store
            .lease_time_to_live(id, self.now_ms(), keys)
            .unwrap_or(corekv_engine::LeaseTimeToLive {
                id,
                ttl_seconds: -1,
                granted_ttl_seconds: 0,
                keys: Vec::new(),
            })
    }

    /// [`Shard::lease_ttl`] as a response.
    fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Response {
        let ttl = self.lease_ttl(id, keys);
        Response::LeaseTimeToLive {
            header: self.header(),
            id,
            ttl_seconds: ttl.ttl_seconds,
            granted_ttl_seconds: ttl.granted_ttl_seconds,
            keys: ttl.keys,
        }
    }

    /// Renews lease `id` (a deadline only the leader tracks) and answers with its TTL; an
    /// unknown lease answers TTL 0, as etcd's keep-alive stream does.
    fn keep_alive(&mut self, id: LeaseId) -> Response {
        let ttl_seconds = self.store.lease_renew(id, self.now_ms()).unwrap_or(0);
        Response::LeaseKeepAlive {
            header: self.header(),
            id,
            ttl_seconds,
        }
    }

    fn read_state(&mut self, read: ReadState) {
        if let Some(reads) = self.reads_in_flight.remove(&read.request) {
            self.reads_ready.push((read.index, reads));
        }
    }

    fn serve_applied_reads(&mut self) {
        if self.reads_ready.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_ready = waiting;
        for (_, reads) in ready {
            for read in reads {
                let client = Client::of(&read.request);
                self.serve_read(client, &read.request.request);
            }
        }
    }

    fn poll_watchers(&mut self) {
        let mut ready = self.store.watch_ready();
        ready.extend(self.watchers_deferred.drain());
        ready.sort_unstable();
        ready.dedup();
        for watcher in ready {
            let Some(client) = self.watchers.get(&watcher).copied() else {
                continue;
            };
            if !self.backlog[client.core].is_empty() {
                // The core is not keeping up: leave the events in the engine (bounded
                // per watcher) instead of piling them up here.
                self.watchers_deferred.insert(watcher);
                continue;
            }
            match self.store.watch_poll(watcher, WATCH_EVENTS_PER_POLL) {
                Some(WatchPoll::Events(events)) if events.is_empty() => {}
                Some(WatchPoll::Events(events)) => {
                    let header = self.header();
                    self.reply(client, Response::WatchEvents(header, events), false);
                    if !self.store.watch_is_synced(watcher).unwrap_or(true) {
                        self.watchers_deferred.insert(watcher);
                    }
                }
                Some(WatchPoll::Compacted { compact_revision }) => {
                    let header = self.header();
                    self.reply(
                        client,
                        Response::WatchCanceled {
                            header,
                            compact_revision,
                        },
                        false,
                    );
                    self.forget_watcher(watcher);
                }
                None => self.forget_watcher(watcher),
            }
        }
    }

    /// Drops the shard's bookkeeping of a watcher the engine no longer has (or is about
    /// to cancel).
    fn forget_watcher(&mut self, watcher: WatcherId) {
        self.watchers_deferred.remove(&watcher);
        if let Some(client) = self.watchers.remove(&watcher) {
            let key = (client.core, client.connection);
            if let Some(ids) = self.watchers_by_connection.get_mut(&key) {
                ids.retain(|w| *w != watcher);
            }
        }
    }

    /// Tells Raft about every Ready that is durable, in Ready order: the front of the
    /// queue up to the first one still being written.
    fn acknowledge_durable_readies(&mut self) {
        let mut last_done = None;
        while let Some((number, true)) = self.persisting.front().copied() {
            self.persisting.pop_front();
            last_done = Some(number);
        }
        if let Some(number) = last_done {
            self.raft.on_persisted(number);
        }
    }

    /// Snapshots a server that has applied nothing for [`IDLE_SNAPSHOT_AFTER`] once its
    /// log holds `--snapshot-count` requests and `--snapshot-log-bytes-min` bytes, without
    /// waiting for the log to reach half the last snapshot's size. That rule keeps a busy
    /// server from rewriting a large store too often; a quiet one has nothing to slow
    /// down, and its Raft log between snapshots is held in memory (up to half the store:
    /// about 90 MB after loading a million keys) and replayed on restart.
    fn maybe_snapshot_when_idle(&mut self) {
        if self.applied != self.applied_at_last_tick {
            self.applied_at_last_tick = self.applied;
            self.idle_ticks = 0;
            return;
        }
        self.idle_ticks = self.idle_ticks.saturating_add(1);
        let idle_for = self.config.heartbeat_interval * self.idle_ticks;
        if idle_for >= IDLE_SNAPSHOT_AFTER {
            self.snapshot_if_due(true);
        }
    }

    /// Starts a snapshot once `--snapshot-count` requests and `--snapshot-log-bytes-min`
    /// bytes were applied since the last one and, unless the server is `idle`, the log
    /// holds half the last snapshot's size. The engine pins the revision; the shard then
    /// encodes one chunk per round (`advance_snapshot`) and a task streams the chunks to
    /// the snapshot file, so neither the encoding nor the snapshot's size ever stalls
    /// writes or doubles memory.
    fn snapshot_if_due(&mut self, idle: bool) {
        let log_bytes_wanted = if idle {
            self.config.snapshot_log_bytes_min
        } else {
            self.config
                .snapshot_log_bytes_min
                .max(self.last_snapshot_bytes / 2)
        };
        if self.snapshot_encoding.is_some()
            || self.snapshot_in_flight
            || self.applied_requests_since_snapshot < self.config.snapshot_count
            || self.applied_bytes_since_snapshot < log_bytes_wanted
        {
            return;
        }
        self.applied_requests_since_snapshot = 0;
        self.applied_bytes_since_snapshot = 0;
        let index = self.applied;
        let Some(term) = self.raft.log_term(index) else {
            return;
        };
        let (chunks, received) = local_channel::new_bounded(SNAPSHOT_CHUNKS_QUEUED_MAX);
        let prefix = encode_snapshot_payload(self.raft.conf_state(), &self.member_table, &[]);
        let writer = self.store.snapshot_writer();
        self.snapshot_encoding = Some(SnapshotInProgress {
            writer,
            bytes: 0,
            chunks,
            pending: Some(prefix),
            retired: None,
        });
        self.snapshot_in_flight = true;
        let snapshots = self.snapshots.clone();
        let wal = self.wal.clone();
        let events = self.events.clone();
        glommio::spawn_local(async move {
            let result = write_snapshot(&snapshots, &wal, index, term, received).await;
            let _ = events.send(Event::SnapshotSaved { index, result }).await;
        })
        .detach();
    }

    /// Hands the next chunk of the snapshot in progress to the file task, if it has
    /// room; after the last chunk, closes the stream so the task finishes the file.
    fn advance_snapshot(&mut self) {
        let Some(progress) = self.snapshot_encoding.as_mut() else {
            return;
        };
        let chunk = match progress.pending.take() {
            Some(chunk) => chunk,
            None => {
                // Sized by the encoder, which knows the chunk's length.
                let mut chunk = Vec::new();
                let store = progress.retired.as_ref().unwrap_or(&self.store);
                if !store.snapshot_next_chunk(
                    &mut progress.writer,
                    &mut chunk,
                    SNAPSHOT_CHUNK_BYTES_DEFAULT,
                ) {
                    // Done: dropping the sender ends the file task's input.
                    let progress = self.snapshot_encoding.take().expect("checked above");
                    self.last_snapshot_bytes = progress.bytes;
                    if progress.retired.is_none() {
                        self.store.snapshot_finish(progress.writer);
                    }
                    return;
                }
                chunk
            }
        };
        let chunk_bytes = chunk.len() as u64;
        match progress.chunks.try_send(chunk) {
            Ok(()) => progress.bytes += chunk_bytes,
            Err(GlommioError::WouldBlock(ResourceType::Channel(chunk))) => {
                progress.pending = Some(chunk)
            }
            // The file task stopped (it reports why); stop encoding.
            Err(_) => {
                let progress = self.snapshot_encoding.take().expect("checked above");
                if progress.retired.is_none() {
                    self.store.snapshot_finish(progress.writer);
                }
            }
        }
    }

    /// The members of the group, by id (as etcd lists them): Raft's configuration (so the
    /// list never claims a member Raft lacks), with names and URLs from the member table.
    fn members(&self) -> Vec<Member> {
        let conf = self.raft.conf_state();
        let me = self.ids.member;
        let mut members: Vec<Member> = conf
            .voters
            .iter()
            .map(|id| (id.0, false))
            .chain(conf.learners.iter().map(|id| (id.0, true)))
            .map(|(id, is_learner)| {
                let known = self.member_table.members.get(&id);
                let mut member = Member {
                    id,
                    is_learner,
                    name: known.map(|m| m.name.clone()).unwrap_or_default(),
                    peer_urls: known.map(|m| m.peer_urls.clone()).unwrap_or_default(),
                    client_urls: known.map(|m| m.client_urls.clone()).unwrap_or_default(),
                };
                if id == me {
                    member.name = self.config.name.clone();
                    member.client_urls = self.config.advertise_client_urls.clone();
                    if member.peer_urls.is_empty() {
                        member.peer_urls = self.config.advertise_peer_urls.clone();
                    }
                }
                member
            })
            .collect();
        members.sort_by_key(|member| member.id);
        members
    }

    fn has_alarm(&self, alarm: AlarmType) -> bool {
        self.alarms.iter().any(|raised| raised.alarm == alarm)
    }

    /// etcd's quota: the first write that would take the store past
    /// `--quota-backend-bytes` raises the NOSPACE alarm through the log (so every member
    /// agrees); from then on writes that add data are refused.
    fn check_quota(&mut self, request: &Request) {
        let projected = self.store.approximate_bytes() as u64 + request_size_hint(request) as u64;
        if projected <= self.config.quota_backend_bytes || self.no_space_proposed {
            return;
        }
        self.no_space_proposed = true;
        eprintln!(
            "corekv: the store ({projected} bytes) exceeds --quota-backend-bytes ({}); \
             raising the NOSPACE alarm",
            self.config.quota_backend_bytes
        );
        self.internal_writes.push(Request::Alarm {
            action: AlarmAction::Activate,
            member_id: self.ids.member,
            alarm: AlarmType::NoSpace,
        });
    }

    /// Starts handing leadership to `target` (etcd's MoveLeader): only the leader may,
    /// only to a voting member; answered once the target leads.
    fn move_leader(&mut self, client: Client, target: MemberId) {
        if self.raft.role() != Role::Leader {
            self.reply_error(client, CODE_FAILED_PRECONDITION, "etcdserver: not leader");
            return;
        }
        if !self.raft.conf_state().voters.contains(&target) {
            self.reply_error(
                client,
                CODE_FAILED_PRECONDITION,
                "etcdserver: bad leader transferee",
            );
            return;
        }
        if target != MemberId(self.ids.member) {
            if let Err(error) = self.raft.transfer_leader(target) {
                self.reply_error(client, CODE_UNAVAILABLE, &error.to_string());
                return;
            }
        }
        let deadline = Instant::now() + self.request_timeout();
        self.leader_moves.push(LeaderMove {
            client,
            target,
            deadline,
        });
    }

    fn check_leader_moves(&mut self) {
        if self.leader_moves.is_empty() {
            return;
        }
        let now = Instant::now();
        let leader = self.raft.leader();
        for moving in std::mem::take(&mut self.leader_moves) {
            if leader == Some(moving.target) {
                let header = self.header();
                self.reply(moving.client, Response::MoveLeader(header), true);
            } else if moving.deadline <= now {
                self.reply_error(
                    moving.client,
                    CODE_UNAVAILABLE,
                    "etcdserver: request timed out, leader transfer took too long",
                );
            } else {
                self.leader_moves.push(moving);
            }
        }
    }

    /// Sends the next chunk of every client snapshot whose core is keeping up.
    fn advance_client_snapshots(&mut self) {
        if self.client_snapshots.is_empty() {
            return;
        }
        for mut stream in std::mem::take(&mut self.client_snapshots) {
            if !self.backlog[stream.client.core].is_empty() {
                self.client_snapshots.push(stream);
                continue;
            }
            let mut blob = Vec::with_capacity(CLIENT_SNAPSHOT_CHUNK_BYTES + 4096);
            let mut more = true;
            while more && blob.len() < CLIENT_SNAPSHOT_CHUNK_BYTES {
                more = self.store.snapshot_next_chunk(
                    &mut stream.writer,
                    &mut blob,
                    CLIENT_SNAPSHOT_CHUNK_BYTES,
                );
            }
            stream.sent += blob.len() as u64;
            let header = self.header();
            if more {
                let remaining_bytes = stream.estimate.saturating_sub(stream.sent).max(1);
                let chunk = Response::SnapshotChunk {
                    header,
                    remaining_bytes,
                    blob,
                };
                self.reply(stream.client, chunk, false);
                self.client_snapshots.push(stream);
            } else {
                let chunk = Response::SnapshotChunk {
                    header,
                    remaining_bytes: 0,
                    blob,
                };
                self.reply(stream.client, chunk, true);
                self.store.snapshot_finish(stream.writer);
            }
        }
    }

    /// A client that went away stops its snapshot streams.
    fn drop_client_snapshots(&mut self, core: usize, connection: u64) {
        for stream in std::mem::take(&mut self.client_snapshots) {
            if stream.client.core == core && stream.client.connection == connection {
                self.store.snapshot_finish(stream.writer);
            } else {
                self.client_snapshots.push(stream);
            }
        }
    }

    /// Announces this member's name and client URLs through the log once a leader is
    /// known (again after every leader change), retrying until it is applied.
    fn publish_self(&mut self) {
        if self.published || self.raft.leader().is_none() {
            return;
        }
        if self
            .last_publish
            .is_some_and(|at| at.elapsed() < PUBLISH_RETRY_INTERVAL)
        {
            return;
        }
        self.last_publish = Some(Instant::now());
        self.internal_writes.push(Request::PublishMember {
            member_id: self.ids.member,
            name: self.config.name.clone(),
            client_urls: self.config.advertise_client_urls.clone(),
        });
    }

    /// Proposes the compaction `--auto-compaction-*` asks for, when this member leads.
    fn auto_compact(&mut self) {
        let leader = self.raft.role() == Role::Leader;
        let now = Instant::now();
        let current = self.store.revision();
        let compacted = self.store.compact_revision();
        if let Some(revision) = self.auto_compaction.due(now, current, compacted, leader) {
            eprintln!("corekv: auto-compaction at revision {}", revision.0);
            self.internal_writes.push(Request::Compact {
                revision,
                physical: false,
            });
        }
    }

    fn expire_requests(&mut self) {
        let now = Instant::now();
        let timed_out = "etcdserver: request timed out";
        self.fail_proposals(|pending| pending.deadline <= now, timed_out);
        let no_leader = self.raft.leader().is_none();
        let message = if no_leader {
            "etcdserver: no leader"
        } else {
            timed_out
        };
        let writes = std::mem::take(&mut self.writes);
        let reads = std::mem::take(&mut self.reads);
        let write_deadline = self.request_timeout();
        for write in writes {
            // Writes wait at most one request timeout for a leader.
            let waited = write.received.elapsed();
            if waited >= write_deadline {
                self.reply_error(Client::of(&write), CODE_UNAVAILABLE, message);
            } else {
                self.writes.push(write);
            }
        }
        for read in reads {
            if read.deadline <= now {
                self.reply_error(Client::of(&read.request), CODE_UNAVAILABLE, message);
            } else {
                self.reads.push(read);
            }
        }
        let in_flight: Vec<u64> = self.reads_in_flight.keys().copied().collect();
        for id in in_flight {
            let reads = self.reads_in_flight.remove(&id).expect("listed above");
            let (expired, alive): (Vec<_>, Vec<_>) =
                reads.into_iter().partition(|r| r.deadline <= now);
            for read in expired {
                self.reply_error(Client::of(&read.request), CODE_UNAVAILABLE, timed_out);
            }
            if !alive.is_empty() {
                self.reads_in_flight.insert(id, alive);
            }
        }
    }

    fn poison(&mut self, reason: String) {
        if self.poisoned.is_none() {
            eprintln!("corekv: {reason}; this member no longer accepts writes");
            self.poisoned = Some(reason.clone());
        }
        let message = format!("corekv: shard stopped taking writes: {reason}");
        for write in std::mem::take(&mut self.writes) {
            self.reply_error(Client::of(&write), CODE_UNAVAILABLE, &message);
        }
        let proposals: Vec<u64> = self.proposals.keys().copied().collect();
        for id in proposals {
            let pending = self.proposals.remove(&id).expect("listed above");
            for client in pending.clients.into_iter().flatten() {
                self.reply_error(client, CODE_UNAVAILABLE, &message);
            }
        }
        self.persisting.clear();
    }

    /// Sends this round's replies, one batch per core; a core whose channel is full
    /// keeps its batches in the backlog, sent first next time.
    fn flush_replies(&mut self) {
        for core in 0..self.cores.len() {
            let batch = std::mem::take(&mut self.outgoing[core]);
            if !batch.is_empty() {
                self.backlog[core].push_back(batch);
            }
            while let Some(batch) = self.backlog[core].pop_front() {
                match self.cores[core].try_send(batch) {
                    Ok(()) => {}
                    Err(GlommioError::WouldBlock(ResourceType::Channel(batch))) => {
                        // Retried on the next event; the heartbeat tick guarantees one soon.
                        self.backlog[core].push_front(batch);
                        break;
                    }
                    // The core is gone (shutdown): its connections are closed anyway.
                    Err(_) => {}
                }
            }
        }
    }
}

/// Appends `records` to the WAL, split into appends that fit its batch limit when they
/// do not fit one. Every append is queued before any is awaited, so they stay in order
/// even while other readies' appends are queued too; the result is the first error.
/// (A crash between two of them leaves a prefix of the entries, which Raft accepts: the
/// hard state goes last.)
async fn append_in_order(
    wal: &Wal<GlommioDisk>,
    records: &[WalRecord<'_>],
    append_bytes_max: usize,
) -> std::result::Result<(), WalError> {
    // Record framing is a 9-byte header; leave room for padding as well.
    let framed = |record: &WalRecord<'_>| corekv_wal::format::payload_len(record) + 64;
    let mut groups: Vec<&[WalRecord<'_>]> = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, record) in records.iter().enumerate() {
        let size = framed(record);
        if i > start && bytes + size > append_bytes_max {
            groups.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    groups.push(&records[start..]);
    if groups.len() == 1 {
        return wal.append(groups[0]).await;
    }
    let mut appends: Vec<_> = groups
        .into_iter()
        .map(|group| Box::pin(wal.append(group)))
        .collect();
    let mut results: Vec<Option<std::result::Result<(), WalError>>> =
        appends.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|context| {
        let mut pending = false;
        for (append, result) in appends.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match append.as_mut().poll(context) {
                    std::task::Poll::Ready(done) => *result = Some(done),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .try_for_each(|result| result.expect("every append finished"))
}

/// Streams a snapshot's chunks into its file, then records it in the WAL (which lets
/// the WAL drop the segments it covers).
async fn write_snapshot(
    snapshots: &SnapshotStore<GlommioDisk>,
    wal: &Wal<GlommioDisk>,
    index: LogIndex,
    term: Term,
    chunks: LocalReceiver<Vec<u8>>,
) -> std::result::Result<(), WalError> {
    let mut file = snapshots
        .begin(to_wal_index(index), to_wal_term(term))
        .await?;
    while let Some(chunk) = chunks.recv().await {
        if let Err(error) = file.write(&chunk).await {
            let _ = file.abort().await;
            return Err(error);
        }
    }
    file.finish().await?;
    let marker = corekv_wal::SnapshotMarker {
        index: to_wal_index(index),
        term: to_wal_term(term),
    };
    wal.record_snapshot(marker).await?;
    Ok(())
}

/// Hands freed heap pages back to the kernel: with `all`, everything the allocator
/// (mimalloc, see net/src/bin/corekv.rs) holds freed on this thread; without, only what
/// it freed longer ago than its purge delay. Recovery and snapshots allocate and free
/// hundreds of megabytes in passing (decoded snapshot chunks, replayed entries, encoded
/// chunks); without this the allocator keeps them and the resident set stays high.
pub(crate) fn release_free_memory(all: bool) {
    // SAFETY: mimalloc's collection entry point, safe on any thread at any time. With
    // another global allocator it touches only mimalloc's own empty heap.
    unsafe { libmimalloc_sys::mi_collect(all) };
}

/// The error response for an engine error: etcd's code and message.
pub(crate) fn engine_error(error: &EngineError) -> Response {
    Response::Error {
        code: error.grpc_code() as u32,
        message: error.to_string(),
    }
}

/// How long a server applies nothing before it snapshots a log that is due by count and
/// bytes but short of half the last snapshot (see `maybe_snapshot_when_idle`).
pub const IDLE_SNAPSHOT_AFTER: Duration = Duration::from_secs(3);

/// How often revision-mode auto-compaction looks (etcd's interval).
pub const AUTO_COMPACTION_REVISION_INTERVAL: Duration = Duration::from_secs(300);
/// Periodic auto-compaction runs at least this often (etcd's cap for long retentions).
pub const AUTO_COMPACTION_PERIOD_MAX: Duration = Duration::from_secs(3600);

/// `--auto-compaction-mode`/`--auto-compaction-retention`, as etcd runs them:
/// * revision mode keeps the last N revisions, checked every 5 minutes;
/// * periodic mode keeps the history of the last `retention`: it samples the revision
///   every tenth of the retention and, every retention (at most every hour), compacts
///   at the newest sample at least `retention` old.
///
/// Pure: time comes in as arguments, so it is tested without waiting.
#[derive(Debug)]
pub struct AutoCompactor {
    mode: Option<crate::server::config::AutoCompaction>,
    samples: VecDeque<(Instant, Revision)>,
    next_sample: Instant,
    next_compaction: Instant,
    last: Revision,
}

impl AutoCompactor {
    /// A compactor for `mode` (None: never compacts), starting at `now`.
    pub fn new(mode: Option<crate::server::config::AutoCompaction>, now: Instant) -> AutoCompactor {
        use crate::server::config::AutoCompaction;
        let first = match mode {
            Some(AutoCompaction::Revision(_)) => now + AUTO_COMPACTION_REVISION_INTERVAL,
            Some(AutoCompaction::Periodic(retention)) => {
                now + retention.min(AUTO_COMPACTION_PERIOD_MAX)
            }
            None => now,
        };
        AutoCompactor {
            mode,
            samples: VecDeque::new(),
            next_sample: now,
            next_compaction: first,
            last: Revision(0),
        }
    }

    /// The revision to compact at now, if any. Followers keep sampling (so a new leader
    /// knows the history) but never compact.
    pub fn due(
        &mut self,
        now: Instant,
        current: Revision,
        compacted: Revision,
        leader: bool,
    ) -> Option<Revision> {
        use crate::server::config::AutoCompaction;
        let mode = self.mode?;
        let target = match mode {
            AutoCompaction::Revision(keep) => {
                if now < self.next_compaction {
                    return None;
                }
                self.next_compaction = now + AUTO_COMPACTION_REVISION_INTERVAL;
                Revision(current.0 - keep.min(i64::MAX as u64) as i64)
            }
            AutoCompaction::Periodic(retention) => {
                if now >= self.next_sample {
                    self.samples.push_back((now, current));
                    self.next_sample = now + (retention / 10).max(Duration::from_millis(100));
                }
                if now < self.next_compaction {
                    return None;
                }
                self.next_compaction = now + retention.min(AUTO_COMPACTION_PERIOD_MAX);
                // The newest sample at least `retention` old; older ones are no longer
                // needed once it is known.
                let cutoff = now.checked_sub(retention)?;
                let mut target = None;
                while let Some((at, revision)) = self.samples.front().copied() {
                    if at > cutoff {
                        break;
                    }
                    target = Some(revision);
                    self.samples.pop_front();
                }
                if let Some(revision) = target {
                    // Keep it: the next compaction may find nothing newer that is old
                    // enough.
                    self.samples.push_front((cutoff, revision));
                }
                target?
            }
        };
        if !leader || target.0 <= 0 || target <= compacted || target <= self.last {
            return None;
        }
        self.last = target;
        Some(target)
    }
}

/// Whether a write can make the store bigger (etcd refuses these under NOSPACE; deletes,
/// compactions and revokes are what free space).
fn adds_data(request: &Request) -> bool {
    fn txn_puts(txn: &corekv_engine::TxnRequest) -> bool {
        txn.success
            .iter()
            .chain(txn.failure.iter())
            .any(|op| match op {
                corekv_engine::RequestOp::Put(_) => true,
                corekv_engine::RequestOp::Txn(inner) => txn_puts(inner),
                _ => false,
            })
    }
    match request {
        Request::Put(_) | Request::LeaseGrant { .. } => true,
        Request::Txn(txn) => txn_puts(txn),
        _ => false,
    }
}

/// What a learner answers (etcd's: status and serializable reads; the alarm list is
/// part of the gateway's status). Everything else gets etcd's "not supported" error.
fn served_by_learner(request: &Request) -> bool {
    match request {
        Request::Status
        | Request::Alarm {
            action: AlarmAction::Get,
            ..
        } => true,
        Request::Range(range) => range.serializable,
        _ => false,
    }
}

fn request_size_hint(request: &Request) -> usize {
    match request {
        Request::Put(put) => put.key.len() + put.value.len() + 32,
        _ => 256,
    }
}

/// Forwards one core's requests into the shard's event queue.
pub(crate) async fn forward(from: SharedReceiver<ToShard>, events: Rc<LocalSender<Event>>) {
    let from = from.connect().await;
    while let Some(batch) = from.recv().await {
        if events.send(Event::FromCore(batch)).await.is_err() {
            break;
        }
    }
}

/// A bounded event queue for the shard.
pub(crate) fn event_queue() -> (LocalSender<Event>, LocalReceiver<Event>) {
    local_channel::new_bounded(65_536)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::AutoCompaction;

    /// Revision mode keeps the last N revisions, every 5 minutes, on the leader only.
    #[test]
    fn auto_compaction_revision_mode() {
        let start = Instant::now();
        let mut compactor = AutoCompactor::new(Some(AutoCompaction::Revision(100)), start);
        let at = |minutes: u64| start + Duration::from_secs(60 * minutes);
        assert_eq!(compactor.due(at(1), Revision(500), Revision(0), true), None);
        assert_eq!(
            compactor.due(at(5), Revision(500), Revision(0), true),
            Some(Revision(400))
        );
        // Not due again until 5 more minutes.
        assert_eq!(
            compactor.due(at(6), Revision(900), Revision(400), true),
            None
        );
        // A follower never compacts.
        assert_eq!(
            compactor.due(at(10), Revision(900), Revision(400), false),
            None
        );
        assert_eq!(
            compactor.due(at(15), Revision(1000), Revision(400), true),
            Some(Revision(900))
        );
        // Nothing new to compact.
        assert_eq!(
            compactor.due(at(20), Revision(950), Revision(900), true),
            None
        );
        // Off: never.
        let mut off = AutoCompactor::new(None, start);
        assert_eq!(off.due(at(60), Revision(900), Revision(0), true), None);
    }

    /// Periodic mode compacts at the revision of `retention` ago.
    #[test]
    fn auto_compaction_periodic_mode() {
        let start = Instant::now();
        let retention = Duration::from_secs(60);
        let mut compactor = AutoCompactor::new(Some(AutoCompaction::Periodic(retention)), start);
        let mut result = Vec::new();
        // One write per second: revision = seconds + 1.
        for second in 0..=130u64 {
            let now = start + Duration::from_secs(second);
            if let Some(revision) =
                compactor.due(now, Revision(second as i64 + 1), Revision(0), true)
            {
                result.push((second, revision.0));
            }
        }
        // At 60 s the sample from 0 s (revision 1) is 60 s old; at 120 s the sample from
        // 60 s (revision 61).
        assert_eq!(result, vec![(60, 1), (120, 61)]);
    }
}
