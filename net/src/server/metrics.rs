//! What `/metrics` reports, in Prometheus' text format.
//!
//! The shard publishes its gauges (Raft term and indexes, store size, watchers, leases,
//! the WAL's fsync histogram, requests by kind) into relaxed atomics once per round; the
//! gateway counts gRPC calls and their latencies by method as they finish. Reading is
//! lock-free and never touches the shard. Names follow etcd's where etcd has the same
//! figure (`etcd_server_has_leader`, `etcd_disk_wal_fsync_duration_seconds`,
//! `grpc_server_handled_total`, ...) so existing dashboards work; the rest are
//! `corekv_*`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corekv_wal::{WalStats, SYNC_BUCKETS, SYNC_BUCKET_BOUNDS_SECONDS};

/// Request kinds the shard counts (binary protocol and gateway alike).
pub const REQUEST_KINDS: [&str; 12] = [
    "range",
    "put",
    "delete_range",
    "txn",
    "compact",
    "lease_grant",
    "lease_revoke",
    "lease_keep_alive",
    "lease_other",
    "watch",
    "maintenance",
    "cluster",
];

/// gRPC latency bucket bounds in seconds (etcd's grpc_server_handling_seconds).
pub const LATENCY_BOUNDS_SECONDS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// The gRPC methods counted, as `service/method` (service without its package).
pub const GRPC_METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
];

/// Counters of one gRPC method.
#[derive(Debug, Default)]
struct MethodStats {
    started: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_SECONDS.len()],
    latency_nanos: AtomicU64,
}

/// Every figure `/metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    raft_term: AtomicU64,
    raft_last_index: AtomicU64,
    raft_commit_index: AtomicU64,
    raft_applied_index: AtomicU64,
    has_leader: AtomicU64,
    is_leader: AtomicU64,
    leader_changes: AtomicU64,
    db_size_bytes: AtomicU64,
    keys: AtomicU64,
    revision: AtomicU64,
    compact_revision: AtomicU64,
    watchers: AtomicU64,
    leases: AtomicU64,
    proposals_pending: AtomicU64,
    proposals_failed: AtomicU64,
    wal_sync_buckets: [AtomicU64; SYNC_BUCKETS],
    wal_sync_nanos: AtomicU64,
    wal_bytes: AtomicU64,
    requests: [AtomicU64; REQUEST_KINDS.len()],
    grpc: Vec<MethodStats>,
    /// Each core's connections and load, once the cores run.
    placement: std::sync::OnceLock<std::sync::Arc<super::placement::Placement>>,
}

/// The shard's figures for one publication.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShardFigures {
    /// Raft term.
    pub raft_term: u64,
    /// Last log index.
    pub raft_last_index: u64,
    /// Commit index.
    pub raft_commit_index: u64,
    /// Applied index.
    pub raft_applied_index: u64,
    /// Whether a leader is known.
    pub has_leader: bool,
    /// Whether this member leads.
    pub is_leader: bool,
    /// Leader changes seen.
    pub leader_changes: u64,
    /// Approximate store bytes.
    pub db_size_bytes: u64,
    /// Live keys.
    pub keys: u64,
    /// Store revision.
    pub revision: i64,
    /// Compaction revision.
    pub compact_revision: i64,
    /// Watchers open.
    pub watchers: u64,
    /// Leases held.
    pub leases: u64,
    /// Proposals waiting to apply.
    pub proposals_pending: u64,
    /// Proposals that failed or timed out.
    pub proposals_failed: u64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            raft_term: AtomicU64::new(0),
            raft_last_index: AtomicU64::new(0),
            raft_commit_index: AtomicU64::new(0),
            raft_applied_index: AtomicU64::new(0),
            has_leader: AtomicU64::new(0),
            is_leader: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            db_size_bytes: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            compact_revision: AtomicU64::new(0),
            watchers: AtomicU64::new(0),
            leases: AtomicU64::new(0),
            proposals_pending: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
            wal_sync_buckets: Default::default(),
            wal_sync_nanos: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            requests: Default::default(),
            grpc: GRPC_METHODS
                .iter()
                .map(|_| MethodStats::default())
                .collect(),
            placement: std::sync::OnceLock::new(),
        }
    }
}

fn set(cell: &AtomicU64, value: u64) {
    cell.store(value, Ordering::Relaxed);
}

fn get(cell: &AtomicU64) -> u64 {
    cell.load(Ordering::Relaxed)
}

impl Metrics {
    /// Reports each core's connections and load from `placement` from now on.
    pub(crate) fn attach_placement(&self, placement: std::sync::Arc<super::placement::Placement>) {
        let _ = self.placement.set(placement);
    }

    /// Publishes the shard's figures (called by the shard once per round).
    pub fn publish_shard(&self, figures: &ShardFigures, wal: &WalStats, requests: &[u64]) {
        set(&self.raft_term, figures.raft_term);
        set(&self.raft_last_index, figures.raft_last_index);
        set(&self.raft_commit_index, figures.raft_commit_index);
        set(&self.raft_applied_index, figures.raft_applied_index);
        set(&self.has_leader, u64::from(figures.has_leader));
        set(&self.is_leader, u64::from(figures.is_leader));
        set(&self.leader_changes, figures.leader_changes);
        set(&self.db_size_bytes, figures.db_size_bytes);
        set(&self.keys, figures.keys);
        set(&self.revision, figures.revision.max(0) as u64);
        set(
            &self.compact_revision,
            figures.compact_revision.max(0) as u64,
        );
        set(&self.watchers, figures.watchers);
        set(&self.leases, figures.leases);
        set(&self.proposals_pending, figures.proposals_pending);
        set(&self.proposals_failed, figures.proposals_failed);
        for (cell, value) in self.wal_sync_buckets.iter().zip(wal.sync_buckets) {
            set(cell, value);
        }
        set(&self.wal_sync_nanos, wal.sync_nanos_total);
        set(&self.wal_bytes, wal.bytes_written);
        for (cell, value) in self.requests.iter().zip(requests) {
            set(cell, *value);
        }
    }

    /// Whether the shard last reported a leader.
    pub fn has_leader(&self) -> bool {
        get(&self.has_leader) == 1
    }

    /// The index of the last applied Raft entry (what the shard last reported).
    pub fn applied_index(&self) -> u64 {
        self.raft_applied_index.load(Ordering::Relaxed)
    }

    /// The index of a gRPC method in [`GRPC_METHODS`], by its full path
    /// (`/etcdserverpb.KV/Range`).
    pub fn grpc_method(path: &str) -> Option<usize> {
        let (service, method) = path.trim_start_matches('/').split_once('/')?;
        GRPC_METHODS
            .iter()
            .position(|(s, m, _)| *s == service && *m == method)
    }

    /// Counts a gRPC call starting.
    pub fn grpc_started(&self, method: usize) {
        self.grpc[method].started.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a gRPC call finishing after `elapsed`.
    pub fn grpc_handled(&self, method: usize, ok: bool, elapsed: Duration) {
        let stats = &self.grpc[method];
        if ok {
            stats.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = LATENCY_BOUNDS_SECONDS.iter().position(|b| seconds <= *b) {
            stats.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        stats
            .latency_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every figure.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "etcd_server_has_leader",
            "Whether a leader exists (1) or not (0).",
            get(&self.has_leader),
        );
        gauge(
            &mut out,
            "etcd_server_is_leader",
            "Whether this member is the leader (1) or not (0).",
            get(&self.is_leader),
        );
        counter(
            &mut out,
            "etcd_server_leader_changes_seen_total",
            "Leader changes seen.",
            get(&self.leader_changes),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_committed_total",
            "Raft commit index.",
            get(&self.raft_commit_index),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_applied_total",
            "Raft applied index.",
            get(&self.raft_applied_index),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_pending",
            "Proposals waiting to be applied.",
            get(&self.proposals_pending),
        );
        counter(
            &mut out,
            "etcd_server_proposals_failed_total",
            "Proposals that failed or timed out.",
            get(&self.proposals_failed),
        );
        gauge(
            &mut out,
            "corekv_raft_term",
            "Raft term.",
            get(&self.raft_term),
        );
        gauge(
            &mut out,
            "corekv_raft_last_index",
            "Index of the last Raft log entry.",
            get(&self.raft_last_index),
        );
        gauge(
            &mut out,
            "corekv_raft_commit_index",
            "Raft commit index.",
            get(&self.raft_commit_index),
        );
        gauge(
            &mut out,
            "corekv_raft_applied_index",
            "Raft index applied to the store.",
            get(&self.raft_applied_index),
        );
        gauge(
            &mut out,
            "etcd_mvcc_db_total_size_in_bytes",
            "Approximate bytes held by the store.",
            get(&self.db_size_bytes),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_keys_total",
            "Live keys.",
            get(&self.keys),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_current_revision",
            "Store revision.",
            get(&self.revision),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_compact_revision",
            "Compaction revision.",
            get(&self.compact_revision),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_watcher_total",
            "Open watchers.",
            get(&self.watchers),
        );
        gauge(&mut out, "corekv_leases", "Leases held.", get(&self.leases));
        counter(
            &mut out,
            "corekv_wal_bytes_written_total",
            "Bytes written to the WAL.",
            get(&self.wal_bytes),
        );

        let name = "etcd_disk_wal_fsync_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} WAL fdatasync latency.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, cell) in SYNC_BUCKET_BOUNDS_SECONDS
            .iter()
            .zip(&self.wal_sync_buckets)
        {
            cumulative += get(cell);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", get(&self.wal_sync_nanos) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");

        if let Some(placement) = self.placement.get() {
            let per_core =
                |out: &mut String, name: &str, help: &str, value: &dyn Fn(usize) -> f64| {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                    for core in 0..placement.cores() {
                        let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", value(core));
                    }
                };
            per_core(
                &mut out,
                "corekv_core_connections",
                "Connections each core serves (binary protocol and client URLs).",
                &|core| f64::from(placement.connections(core)),
            );
            per_core(
                &mut out,
                "corekv_core_busy_ratio",
                "Share of about the last second each core's thread ran.",
                &|core| f64::from(placement.busy(core)) / 1000.0,
            );
            counter(
                &mut out,
                "corekv_connections_moved_total",
                "Binary-protocol connections moved from the shard's core to another.",
                placement.moved(),
            );
        }

        let name = "corekv_requests_total";
        let _ = writeln!(out, "# HELP {name} Requests reaching the shard, by kind (every protocol).\n# TYPE {name} counter");
        for (kind, cell) in REQUEST_KINDS.iter().zip(&self.requests) {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", get(cell));
        }

        let _ = writeln!(out, "# HELP grpc_server_started_total RPCs started, by method.\n# TYPE grpc_server_started_total counter");
        for ((service, method, kind), stats) in GRPC_METHODS.iter().zip(&self.grpc) {
            let _ = writeln!(out, "grpc_server_started_total{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}} {}", get(&stats.started));
        }
        let _ = writeln!(out, "# HELP grpc_server_handled_total RPCs finished, by method and outcome.\n# TYPE grpc_server_handled_total counter");
        for ((service, method, kind), stats) in GRPC_METHODS.iter().zip(&self.grpc) {
            for (code, cell) in [("OK", &stats.ok), ("Error", &stats.failed)] {
                let _ = writeln!(out, "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}} {}", get(cell));
            }
        }
        let name = "grpc_server_handling_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of finished RPCs, by method.\n# TYPE {name} histogram"
        );
        for ((service, method, kind), stats) in GRPC_METHODS.iter().zip(&self.grpc) {
            let labels =
                format!("grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"");
            let mut cumulative = 0;
            for (bound, cell) in LATENCY_BOUNDS_SECONDS.iter().zip(&stats.latency_buckets) {
                cumulative += get(cell);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            let count = get(&stats.ok) + get(&stats.failed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {}",
                get(&stats.latency_nanos) as f64 / 1e9
            );
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
        out
    }
}

/// The kind a request is counted under in [`REQUEST_KINDS`].
pub fn request_kind(request: &crate::protocol::Request) -> usize {
    use crate::protocol::Request;
    match request {
        Request::Range(_) => 0,
        Request::Put(_) => 1,
        Request::DeleteRange(_) => 2,
        Request::Txn(_) => 3,
        Request::Compact { .. } => 4,
        Request::LeaseGrant { .. } => 5,
        Request::LeaseRevoke { .. } => 6,
        Request::LeaseKeepAlive { .. } => 7,
        Request::LeaseTimeToLive { .. } | Request::LeaseLeases => 8,
        Request::WatchCreate(_) | Request::WatchCancel { .. } | Request::WatchProgress => 9,
        Request::Status
        | Request::Alarm { .. }
        | Request::Hash
        | Request::HashKv { .. }
        | Request::Defragment
        | Request::Snapshot
        | Request::MoveLeader { .. } => 10,
        Request::MemberList { .. }
        | Request::PublishMember { .. }
        | Request::MemberChange(_)
        | Request::MemberChangeRefused { .. } => 11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published figures and counted calls appear in the exposition with their values.
    #[test]
    fn render_reports_published_figures() {
        let metrics = Metrics::default();
        let figures = ShardFigures {
            raft_term: 7,
            has_leader: true,
            db_size_bytes: 4096,
            watchers: 3,
            ..ShardFigures::default()
        };
        let mut wal = WalStats::default();
        wal.record_sync(Duration::from_micros(300));
        wal.record_sync(Duration::from_millis(3));
        let mut requests = [0u64; REQUEST_KINDS.len()];
        requests[1] = 42;
        metrics.publish_shard(&figures, &wal, &requests);
        let range = Metrics::grpc_method("/etcdserverpb.KV/Range").expect("known method");
        metrics.grpc_started(range);
        metrics.grpc_handled(range, true, Duration::from_micros(200));
        let text = metrics.render();
        assert!(text.contains("\ncorekv_raft_term 7\n"), "{text}");
        assert!(text.contains("\netcd_server_has_leader 1\n"));
        assert!(text.contains("\netcd_mvcc_db_total_size_in_bytes 4096\n"));
        assert!(text.contains("\netcd_debugging_mvcc_watcher_total 3\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 2\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_count 2\n"));
        assert!(text.contains("corekv_requests_total{kind=\"put\"} 42\n"));
        assert!(text.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1\n"
        ));
        assert!(text.contains(
            "grpc_server_handling_seconds_bucket{grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\",le=\"0.00025\"} 1\n"
        ));
        assert_eq!(Metrics::grpc_method("/etcdserverpb.KV/Nope"), None);
    }
}
