//! The table of flags: each flag's name, value syntax, default as `--help` shows it,
//! and where else it may be set (an `ETCD_*` environment variable, a key of the YAML
//! config file). The names, defaults and YAML keys are etcd 3.4's (`etcdmain/config.go`,
//! `etcdmain/help.go`, `embed/config.go`); three flags are corekv's own.
//!
//! The table is the one list of flags: parsing, the environment, the config file and
//! `--help` all read it, so a flag cannot be accepted in one place and missing in
//! another.

/// Every flag corekv takes. `build::apply` matches on it exhaustively, so a flag added
/// here cannot be forgotten there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Id {
    Name,
    DataDir,
    WalDir,
    SnapshotCount,
    SnapshotLogBytesMin,
    HeartbeatInterval,
    ElectionTimeout,
    ListenPeerUrls,
    ListenClientUrls,
    ListenBinaryUrls,
    ListenMetricsUrls,
    QuotaBackendBytes,
    MaxRequestBytes,
    MaxTxnOps,
    Cores,
    SpreadConnections,
    InitialAdvertisePeerUrls,
    InitialCluster,
    InitialClusterState,
    InitialClusterToken,
    AdvertiseClientUrls,
    EnableV2,
    AutoCompactionMode,
    AutoCompactionRetention,
    CertFile,
    KeyFile,
    ClientCertAuth,
    TrustedCaFile,
    AutoTls,
    PeerCertFile,
    PeerKeyFile,
    PeerClientCertAuth,
    PeerTrustedCaFile,
    PeerAutoTls,
    Logger,
    LogLevel,
    ConfigFile,
    Version,
    Help,
}

/// Whether the flag takes a value or is a Go boolean (`--flag`, `--flag=false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Value,
    Bool,
}

/// The heading `--help` lists the flag under (etcd's headings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Group {
    Member,
    Clustering,
    Security,
    Logging,
    Other,
}

/// Where the flag sits in the YAML config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FileKey {
    /// A top-level key spelled like the flag.
    Top,
    /// A key inside a section: `client-transport-security: {cert-file: ...}`.
    Under(&'static str, &'static str),
    /// Not settable in the file (`--config-file`, `--version`, `--help`).
    Absent,
}

/// What `--help` shows as the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ShownDefault {
    /// Giving exactly this value yields the default configuration (a test checks it).
    Value(&'static str),
    /// The default is derived from other settings; this describes it.
    Derived(&'static str),
}

/// One flag.
#[derive(Clone, Copy, Debug)]
pub(super) struct Flag {
    pub id: Id,
    pub name: &'static str,
    pub kind: Kind,
    /// The value's name in `--help` and in "needs a value" errors.
    pub placeholder: &'static str,
    pub default: ShownDefault,
    pub group: Group,
    pub help: &'static str,
    pub file_key: FileKey,
    /// Whether `ETCD_<NAME>` sets it.
    pub env: bool,
}

impl Flag {
    const fn new(
        id: Id,
        name: &'static str,
        placeholder: &'static str,
        default: ShownDefault,
        group: Group,
        help: &'static str,
    ) -> Flag {
        Flag {
            id,
            name,
            kind: Kind::Value,
            placeholder,
            default,
            group,
            help,
            file_key: FileKey::Top,
            env: true,
        }
    }

    const fn boolean(id: Id, name: &'static str, group: Group, help: &'static str) -> Flag {
        Flag {
            kind: Kind::Bool,
            ..Flag::new(id, name, "", ShownDefault::Value("false"), group, help)
        }
    }

    const fn under(self, section: &'static str, key: &'static str) -> Flag {
        Flag {
            file_key: FileKey::Under(section, key),
            ..self
        }
    }

    const fn not_in_file(self) -> Flag {
        Flag {
            file_key: FileKey::Absent,
            ..self
        }
    }

    const fn not_in_env(self) -> Flag {
        Flag { env: false, ..self }
    }

    /// The environment variable that sets this flag: `ETCD_` and the name in upper
    /// snake case, as etcd's `flags.FlagToEnv`.
    pub fn env_name(&self) -> String {
        env_name(self.name)
    }

    /// What a missing value should have been, for "flag --x needs ..." errors.
    pub fn needs(&self) -> &'static str {
        match self.placeholder {
            "NAME" => "a name",
            "DIR" => "a directory",
            "FILE" => "a file",
            "URLS" => "URLs",
            "ADDRESSES" => "addresses",
            "MS" => "milliseconds",
            "N" | "BYTES" => "a number",
            "CLUSTER" => "name=URL pairs",
            "TOKEN" => "a token",
            _ => "a value",
        }
    }
}

/// `ETCD_` and the flag name in upper snake case.
pub(super) fn env_name(flag_name: &str) -> String {
    format!("ETCD_{}", flag_name.replace('-', "_").to_ascii_uppercase())
}

const CLIENT_SECURITY: &str = "client-transport-security";
const PEER_SECURITY: &str = "peer-transport-security";

use Group::{Clustering, Logging, Member, Other, Security};
use ShownDefault::{Derived, Value};

/// Every flag, in `--help` order.
#[rustfmt::skip]
pub(super) const FLAGS: &[Flag] = &[
    Flag::new(Id::Name, "name", "NAME", Value("default"), Member,
        "human-readable name for this member"),
    Flag::new(Id::DataDir, "data-dir", "DIR", Derived("${name}.etcd"), Member,
        "path to the data directory"),
    Flag::new(Id::WalDir, "wal-dir", "DIR", Value(""), Member,
        "dedicated WAL directory (none: inside the data directory)"),
    Flag::new(Id::SnapshotCount, "snapshot-count", "N", Value("10000"), Member,
        "applied requests between snapshots (0: the default)"),
    Flag::new(Id::SnapshotLogBytesMin, "snapshot-log-bytes-min", "BYTES", Value("67108864"), Member,
        "corekv: and log bytes between snapshots at least"),
    Flag::new(Id::HeartbeatInterval, "heartbeat-interval", "MS", Value("100"), Member,
        "time (in milliseconds) of a heartbeat interval"),
    Flag::new(Id::ElectionTimeout, "election-timeout", "MS", Value("1000"), Member,
        "time (in milliseconds) for an election to time out"),
    Flag::new(Id::ListenPeerUrls, "listen-peer-urls", "URLS", Value("http://localhost:2380"),
        Member,
        "URLs to listen on for peer traffic"),
    Flag::new(Id::ListenClientUrls, "listen-client-urls", "URLS", Value("http://localhost:2379"),
        Member,
        "URLs to listen on for client traffic (gRPC and HTTP)"),
    Flag::new(Id::ListenBinaryUrls, "listen-binary-urls", "ADDRESSES", Value("127.0.0.1:2378"),
        Member,
        "corekv: addresses for the binary protocol"),
    Flag::new(Id::ListenMetricsUrls, "listen-metrics-urls", "URLS", Value(""), Member,
        "more URLs serving only /health, /version and /metrics"),
    Flag::new(Id::QuotaBackendBytes, "quota-backend-bytes", "BYTES", Value("0"), Member,
        "store size raising the NOSPACE alarm (0: 2 GiB, negative: no quota)"),
    Flag::new(Id::MaxRequestBytes, "max-request-bytes", "BYTES", Value("1572864"), Member,
        "largest client request the server accepts"),
    Flag::new(Id::MaxTxnOps, "max-txn-ops", "N", Value("128"), Member,
        "most operations in a transaction"),
    Flag::new(Id::Cores, "cores", "N", Derived("all cores"), Member,
        "corekv: executors to run, one per core"),
    Flag::boolean(Id::SpreadConnections, "spread-connections", Member,
        "corekv: spread connections evenly over the cores (default: on the shard's core until it is busy)"),
    Flag::new(Id::InitialAdvertisePeerUrls, "initial-advertise-peer-urls", "URLS",
        Value("http://localhost:2380"), Clustering,
        "this member's peer URLs, advertised to the rest of the cluster"),
    Flag::new(Id::InitialCluster, "initial-cluster", "CLUSTER",
        Derived("${name}=${initial-advertise-peer-urls}"), Clustering,
        "initial cluster configuration for bootstrapping"),
    Flag::new(Id::InitialClusterState, "initial-cluster-state", "STATE", Value("new"), Clustering,
        "initial cluster state: new or existing"),
    Flag::new(Id::InitialClusterToken, "initial-cluster-token", "TOKEN", Value("etcd-cluster"),
        Clustering, "initial cluster token for the cluster during bootstrap"),
    Flag::new(Id::AdvertiseClientUrls, "advertise-client-urls", "URLS",
        Value("http://localhost:2379"), Clustering,
        "this member's client URLs, advertised to clients"),
    Flag::boolean(Id::EnableV2, "enable-v2", Clustering, "accept etcd v2 client requests"),
    Flag::new(Id::AutoCompactionMode, "auto-compaction-mode", "MODE", Value("periodic"), Clustering,
        "how to read --auto-compaction-retention: periodic or revision"),
    Flag::new(Id::AutoCompactionRetention, "auto-compaction-retention", "RETENTION", Value("0"),
        Clustering,
        "hours (or a duration like 5m) in periodic mode, revisions in revision mode; 0: off"),
    Flag::new(Id::CertFile, "cert-file", "FILE", Value(""), Security,
        "client server TLS certificate file")
        .under(CLIENT_SECURITY, "cert-file"),
    Flag::new(Id::KeyFile, "key-file", "FILE", Value(""), Security, "client server TLS key file")
        .under(CLIENT_SECURITY, "key-file"),
    Flag::boolean(Id::ClientCertAuth, "client-cert-auth", Security,
        "enable client certificate authentication")
        .under(CLIENT_SECURITY, "client-cert-auth"),
    Flag::new(Id::TrustedCaFile, "trusted-ca-file", "FILE", Value(""), Security,
        "client server TLS trusted CA certificate file")
        .under(CLIENT_SECURITY, "trusted-ca-file"),
    Flag::boolean(Id::AutoTls, "auto-tls", Security, "client TLS with generated certificates")
        .under(CLIENT_SECURITY, "auto-tls"),
    Flag::new(Id::PeerCertFile, "peer-cert-file", "FILE", Value(""), Security,
        "peer server TLS certificate file")
        .under(PEER_SECURITY, "cert-file"),
    Flag::new(Id::PeerKeyFile, "peer-key-file", "FILE", Value(""), Security,
        "peer server TLS key file")
        .under(PEER_SECURITY, "key-file"),
    Flag::boolean(Id::PeerClientCertAuth, "peer-client-cert-auth", Security,
        "enable peer client certificate authentication")
        .under(PEER_SECURITY, "client-cert-auth"),
    Flag::new(Id::PeerTrustedCaFile, "peer-trusted-ca-file", "FILE", Value(""), Security,
        "peer server TLS trusted CA file")
        .under(PEER_SECURITY, "trusted-ca-file"),
    Flag::boolean(Id::PeerAutoTls, "peer-auto-tls", Security,
        "peer TLS with generated certificates")
        .under(PEER_SECURITY, "auto-tls"),
    Flag::new(Id::Logger, "logger", "LOGGER", Value("capnslog"), Logging,
        "zap or capnslog (recorded; corekv has one logger)"),
    Flag::new(Id::LogLevel, "log-level", "LEVEL", Value("info"), Logging,
        "debug, info, warn, error, panic or fatal"),
    Flag::new(Id::ConfigFile, "config-file", "FILE", Value(""), Other,
        "YAML file of etcd's configuration keys (flags and ETCD_* variables override it)")
        .not_in_file(),
    Flag::boolean(Id::Version, "version", Other, "print the version and exit").not_in_file(),
    Flag::boolean(Id::Help, "help", Other, "print this help and exit (also -h)")
        .not_in_file()
        .not_in_env(),
];

/// The flag of this name.
pub(super) fn find(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|flag| flag.name == name)
}

/// The flag whose environment variable this is.
pub(super) fn find_env(variable: &str) -> Option<&'static Flag> {
    FLAGS
        .iter()
        .find(|flag| flag.env && flag.env_name() == variable)
}

/// etcd 3.4 flags corekv does not take. Named so that their errors and warnings can say
/// "etcd's, not supported yet" rather than "unknown".
const ETCD_FLAGS_UNSUPPORTED: &[&str] = &[
    "auth-token",
    "auth-token-ttl",
    "backend-batch-interval",
    "backend-batch-limit",
    "bcrypt-cost",
    "cipher-suites",
    "client-cert-allowed-hostname",
    "client-crl-file",
    "cors",
    "debug",
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "enable-grpc-gateway",
    "enable-pprof",
    "force-new-cluster",
    "grpc-keepalive-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-timeout",
    "host-whitelist",
    "initial-election-tick-advance",
    "log-output",
    "log-outputs",
    "log-package-levels",
    "max-concurrent-streams",
    "max-snapshots",
    "max-wals",
    "metrics",
    "peer-cert-allowed-cn",
    "peer-cert-allowed-hostname",
    "peer-crl-file",
    "pre-vote",
    "proxy",
    "proxy-dial-timeout",
    "proxy-failure-wait",
    "proxy-read-timeout",
    "proxy-refresh-interval",
    "proxy-write-timeout",
    "strict-reconfig-check",
    "unsafe-no-fsync",
];

/// Whether this is an etcd 3.4 flag (or YAML key) corekv does not support.
pub(super) fn is_etcd_unsupported(name: &str) -> bool {
    ETCD_FLAGS_UNSUPPORTED.contains(&name) || name.starts_with("experimental-")
}

/// The unsupported etcd flag whose environment variable this is.
pub(super) fn find_env_unsupported(variable: &str) -> Option<&'static str> {
    ETCD_FLAGS_UNSUPPORTED
        .iter()
        .copied()
        .find(|name| env_name(name) == variable)
}

/// The `--help` text: every flag with its value, default and meaning, under etcd's
/// headings.
pub(super) fn usage() -> String {
    let spelled = |flag: &Flag| match flag.kind {
        Kind::Bool => format!("--{}", flag.name),
        Kind::Value => format!("--{} {}", flag.name, flag.placeholder),
    };
    let mut text = String::from(
        "usage: corekv [flags]

corekv takes etcd 3.4's flags: --flag value, --flag=value or -flag value; a boolean
is --flag or --flag=false. Each can also be set as an ETCD_<FLAG> environment variable
(ETCD_DATA_DIR, ...) or as a key of the YAML --config-file (etcd's keys). A flag beats
the environment, which beats the file.
",
    );
    for (group, heading) in [
        (Member, "Member"),
        (Clustering, "Clustering"),
        (
            Security,
            "Security (corekv does not serve TLS yet: these are refused)",
        ),
        (Logging, "Logging"),
        (Other, "Other"),
    ] {
        text.push_str(&format!("\n{heading}:\n"));
        for flag in FLAGS.iter().filter(|flag| flag.group == group) {
            let default = match flag.default {
                Value("") => "none".to_string(),
                Value(value) | Derived(value) => value.to_string(),
            };
            text.push_str(&format!(
                "  {} (default {default})\n      {}\n",
                spelled(flag),
                flag.help
            ));
        }
    }
    text
}
