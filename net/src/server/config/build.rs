//! Turns the merged settings into a checked [`ServerConfig`]: each value parsed into its
//! field ([`apply`]), then the defaults that depend on other settings (data directory,
//! initial cluster, auto-compaction), then etcd's checks, in the order etcd makes them
//! (`embed.Config.Validate`, then `etcdserver.VerifyBootstrap`/`VerifyJoinExisting`).
//!
//! Errors name where the value came from: `--flag`, `ETCD_FLAG` or the key and file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::flags::{self, Id};
use super::sources::{Setting, Source};
use super::values::{
    self, parse_bool, parse_decimal, parse_go_duration, parse_initial_cluster, parse_signed,
    parse_unsigned, parse_url_list, Url,
};
use super::{
    parse_addresses, AutoCompaction, ClusterState, LogLevel, Logger, ServerConfig,
    TransportSecurity, CLIENT_URL_DEFAULT, ELECTION_TIMEOUT_MS_MAX, PEER_URL_DEFAULT,
    QUOTA_BACKEND_BYTES_DEFAULT, SNAPSHOT_COUNT_DEFAULT,
};

/// Why one value was refused.
enum Problem {
    /// The value is not valid for the flag.
    Invalid(String),
    /// The value asks for TLS, which corekv does not serve yet.
    Tls,
}

impl Problem {
    fn explain(self, setting: &Setting) -> anyhow::Error {
        let Setting { value, origin, .. } = setting;
        match self {
            Problem::Invalid(why) => anyhow!("invalid value {value:?} for {origin}: {why}"),
            Problem::Tls => tls_refused(setting),
        }
    }
}

impl From<String> for Problem {
    fn from(why: String) -> Problem {
        Problem::Invalid(why)
    }
}

fn tls_refused(setting: &Setting) -> anyhow::Error {
    let shown = match setting.flag.kind {
        flags::Kind::Bool => String::new(),
        flags::Kind::Value => format!(" ({})", setting.value),
    };
    anyhow!(
        "corekv does not serve TLS yet, but {} asks for it{shown}",
        setting.origin
    )
}

/// Turns the merged settings into a checked configuration.
pub(super) fn build(settings: &BTreeMap<Id, Setting>) -> Result<ServerConfig> {
    let mut config = ServerConfig::default();
    let mut compaction_revisions = false;
    for setting in settings.values() {
        apply(&mut config, &mut compaction_revisions, setting)
            .map_err(|problem| problem.explain(setting))?;
    }
    refuse_tls(&config, settings)?;

    // etcd: an empty --data-dir is the default too.
    if settings
        .get(&Id::DataDir)
        .is_none_or(|setting| setting.value.is_empty())
    {
        config.data_dir = PathBuf::from(format!("{}.etcd", config.name));
    }
    if !settings.contains_key(&Id::InitialCluster) {
        config.initial_cluster = config
            .advertise_peer_urls
            .iter()
            .map(|url| (config.name.clone(), url.clone()))
            .collect();
    }
    if let Some(retention) = settings.get(&Id::AutoCompactionRetention) {
        config.auto_compaction = parse_auto_compaction(compaction_revisions, &retention.value)
            .map_err(|why| Problem::Invalid(why).explain(retention))?;
    }

    let heartbeat_ms = config.heartbeat_interval.as_millis();
    let election_ms = config.election_timeout.as_millis();
    if heartbeat_ms == 0 {
        bail!("--heartbeat-interval must be >0 (set to {heartbeat_ms}ms)");
    }
    if election_ms == 0 {
        bail!("--election-timeout must be >0 (set to {election_ms}ms)");
    }
    if 5 * heartbeat_ms > election_ms {
        bail!(
            "--election-timeout[{election_ms}ms] should be at least as 5 times as \
             --heartbeat-interval[{heartbeat_ms}ms]"
        );
    }
    if election_ms > u128::from(ELECTION_TIMEOUT_MS_MAX) {
        bail!(
            "--election-timeout[{election_ms}ms] is too long, and should be set less than \
             {ELECTION_TIMEOUT_MS_MAX}ms"
        );
    }
    let explicit = |id| {
        settings
            .get(&id)
            .is_some_and(|setting: &Setting| setting.source != Source::File)
    };
    if explicit(Id::ListenClientUrls) && !settings.contains_key(&Id::AdvertiseClientUrls) {
        bail!("--advertise-client-urls is required when --listen-client-urls is set explicitly");
    }
    check_initial_cluster(&config)?;
    Ok(config)
}

/// Sets the field of one flag from its text.
fn apply(
    config: &mut ServerConfig,
    compaction_revisions: &mut bool,
    setting: &Setting,
) -> Result<(), Problem> {
    let value = setting.value.as_str();
    let path = || (!value.is_empty()).then(|| PathBuf::from(value));
    match setting.flag.id {
        Id::Name => config.name = value.to_string(),
        Id::DataDir => config.data_dir = PathBuf::from(value),
        Id::WalDir => config.wal_dir = path(),
        Id::SnapshotCount => {
            config.snapshot_count = match parse_unsigned(value)? {
                0 => SNAPSHOT_COUNT_DEFAULT,
                count => count,
            };
        }
        Id::SnapshotLogBytesMin => config.snapshot_log_bytes_min = parse_unsigned(value)?,
        Id::HeartbeatInterval => {
            config.heartbeat_interval = Duration::from_millis(parse_unsigned(value)?);
        }
        Id::ElectionTimeout => {
            config.election_timeout = Duration::from_millis(parse_unsigned(value)?);
        }
        Id::ListenPeerUrls => config.peer_addresses = listen_urls(value, PEER_URL_DEFAULT)?,
        Id::ListenClientUrls => config.client_addresses = listen_urls(value, CLIENT_URL_DEFAULT)?,
        Id::ListenMetricsUrls => config.metrics_addresses = listen_urls(value, "")?,
        Id::ListenBinaryUrls => {
            config.binary_addresses = parse_addresses(value).map_err(|e| e.to_string())?;
        }
        Id::QuotaBackendBytes => {
            config.quota_backend_bytes = match parse_signed(value)? {
                0 => QUOTA_BACKEND_BYTES_DEFAULT,
                bytes if bytes < 0 => u64::MAX,
                bytes => bytes as u64,
            };
        }
        Id::MaxRequestBytes => config.request_bytes_max = to_usize(parse_unsigned(value)?)?,
        Id::MaxTxnOps => config.txn_ops_max = to_usize(parse_unsigned(value)?)?,
        Id::Cores => {
            config.cores = to_usize(parse_unsigned(value)?)?;
            if config.cores == 0 {
                return Err(Problem::Invalid("must be at least 1".to_string()));
            }
        }
        Id::SpreadConnections => config.spread_connections = parse_bool(value)?,
        Id::InitialAdvertisePeerUrls => {
            config.advertise_peer_urls = advertise_urls(value, PEER_URL_DEFAULT)?;
        }
        Id::AdvertiseClientUrls => {
            config.advertise_client_urls = advertise_urls(value, CLIENT_URL_DEFAULT)?;
        }
        Id::InitialCluster => {
            let members = parse_initial_cluster(value)?;
            if members.iter().any(|(_, url)| url.is_tls()) {
                return Err(Problem::Tls);
            }
            config.initial_cluster = members
                .into_iter()
                .map(|(name, url)| (name, url.text))
                .collect();
        }
        Id::InitialClusterState => {
            config.initial_cluster_state = match value {
                "new" => ClusterState::New,
                "existing" => ClusterState::Existing,
                _ => return Err(Problem::Invalid("expected new or existing".to_string())),
            };
        }
        Id::InitialClusterToken => config.cluster_token = value.to_string(),
        Id::EnableV2 => config.enable_v2 = parse_bool(value)?,
        Id::AutoCompactionMode => {
            *compaction_revisions = match value {
                "periodic" => false,
                "revision" => true,
                _ => {
                    return Err(Problem::Invalid(
                        "expected periodic or revision".to_string(),
                    ))
                }
            };
        }
        // Read by `build` once the mode is known.
        Id::AutoCompactionRetention => {}
        Id::CertFile => config.tls.client.cert_file = path(),
        Id::KeyFile => config.tls.client.key_file = path(),
        Id::ClientCertAuth => config.tls.client.client_cert_auth = parse_bool(value)?,
        Id::TrustedCaFile => config.tls.client.trusted_ca_file = path(),
        Id::AutoTls => config.tls.client.auto_tls = parse_bool(value)?,
        Id::PeerCertFile => config.tls.peer.cert_file = path(),
        Id::PeerKeyFile => config.tls.peer.key_file = path(),
        Id::PeerClientCertAuth => config.tls.peer.client_cert_auth = parse_bool(value)?,
        Id::PeerTrustedCaFile => config.tls.peer.trusted_ca_file = path(),
        Id::PeerAutoTls => config.tls.peer.auto_tls = parse_bool(value)?,
        Id::Logger => {
            config.logger = match value {
                "zap" => Logger::Zap,
                "capnslog" => Logger::Capnslog,
                _ => return Err(Problem::Invalid("expected zap or capnslog".to_string())),
            };
        }
        Id::LogLevel => {
            config.log_level = match value {
                "debug" => LogLevel::Debug,
                "info" => LogLevel::Info,
                "warn" => LogLevel::Warn,
                "error" => LogLevel::Error,
                "panic" => LogLevel::Panic,
                "fatal" => LogLevel::Fatal,
                _ => {
                    return Err(Problem::Invalid(
                        "expected debug, info, warn, error, panic or fatal".to_string(),
                    ))
                }
            };
        }
        Id::ConfigFile => config.config_file = path(),
        // The command line handles these before any setting is applied.
        Id::Version | Id::Help => {}
    }
    Ok(())
}

fn to_usize(value: u64) -> Result<usize, Problem> {
    usize::try_from(value).map_err(|_| Problem::Invalid("out of range".to_string()))
}

/// A listen URL flag: an empty value means the default, as etcd's URL flags treat it.
fn listen_urls(value: &str, default: &str) -> Result<Vec<SocketAddr>, Problem> {
    let value = if value.is_empty() { default } else { value };
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let urls = parse_url_list(value)?;
    if urls.iter().any(Url::is_tls) {
        return Err(Problem::Tls);
    }
    Ok(urls
        .iter()
        .map(Url::bind_address)
        .collect::<Result<_, _>>()?)
}

/// An advertised URL flag: each URL needs a host (etcd's `checkHostURLs`).
fn advertise_urls(value: &str, default: &str) -> Result<Vec<String>, Problem> {
    let value = if value.is_empty() { default } else { value };
    let urls = parse_url_list(value)?;
    if urls.iter().any(Url::is_tls) {
        return Err(Problem::Tls);
    }
    if let Some(url) = urls.iter().find(|url| url.host.is_empty()) {
        return Err(Problem::Invalid(format!(
            "unexpected empty host ({})",
            url.text
        )));
    }
    Ok(urls.into_iter().map(|url| url.text).collect())
}

/// Refuses any TLS setting: corekv does not serve TLS yet, and serving plaintext when
/// TLS was asked for would be worse than not starting. Names the first such setting.
fn refuse_tls(config: &ServerConfig, settings: &BTreeMap<Id, Setting>) -> Result<()> {
    let asks = |security: &TransportSecurity, ids: [Id; 5]| -> Option<Id> {
        let [cert, key, ca, auth, auto] = ids;
        [
            (security.cert_file.is_some(), cert),
            (security.key_file.is_some(), key),
            (security.trusted_ca_file.is_some(), ca),
            (security.client_cert_auth, auth),
            (security.auto_tls, auto),
        ]
        .into_iter()
        .find_map(|(set, id)| set.then_some(id))
    };
    let client = [
        Id::CertFile,
        Id::KeyFile,
        Id::TrustedCaFile,
        Id::ClientCertAuth,
        Id::AutoTls,
    ];
    let peer = [
        Id::PeerCertFile,
        Id::PeerKeyFile,
        Id::PeerTrustedCaFile,
        Id::PeerClientCertAuth,
        Id::PeerAutoTls,
    ];
    let asking = asks(&config.tls.client, client).or_else(|| asks(&config.tls.peer, peer));
    match asking {
        Some(id) => Err(tls_refused(
            settings
                .get(&id)
                .expect("a TLS field is only set by its setting"),
        )),
        None => Ok(()),
    }
}

/// etcd's `parseCompactionRetention`: a whole number is hours in periodic mode and
/// revisions in revision mode; anything else is a Go duration (periodic mode only in
/// corekv). Zero turns auto-compaction off.
fn parse_auto_compaction(
    revisions: bool,
    retention: &str,
) -> Result<Option<AutoCompaction>, String> {
    let compaction = match parse_decimal(retention).filter(|&number| number >= 0) {
        Some(number) if revisions => AutoCompaction::Revision(number as u64),
        Some(hours) => AutoCompaction::Periodic(
            (hours as u64)
                .checked_mul(3600)
                .map(Duration::from_secs)
                .ok_or_else(|| "out of range".to_string())?,
        ),
        None => {
            let duration = parse_go_duration(retention)?;
            if revisions {
                return Err(
                    "revision mode (--auto-compaction-mode) takes a number of revisions"
                        .to_string(),
                );
            }
            AutoCompaction::Periodic(duration)
        }
    };
    Ok(match compaction {
        AutoCompaction::Periodic(duration) if duration.is_zero() => None,
        AutoCompaction::Revision(0) => None,
        compaction => Some(compaction),
    })
}

/// etcd's bootstrap checks of `--initial-cluster` (`VerifyBootstrap`,
/// `VerifyJoinExisting`): this member is in it; for a new cluster its URLs there are
/// exactly the advertised peer URLs; no URL belongs to two entries.
fn check_initial_cluster(config: &ServerConfig) -> Result<()> {
    let name = &config.name;
    let cluster_text = |members: &mut Vec<String>| {
        members.sort();
        members.join(",")
    };
    let ours: Vec<&String> = config
        .initial_cluster
        .iter()
        .filter(|(member, _)| member == name)
        .map(|(_, url)| url)
        .collect();
    if ours.is_empty() {
        bail!("couldn't find local name {name:?} in the initial cluster configuration");
    }
    if config.initial_cluster_state == ClusterState::New {
        let comparable = |url: &String| {
            values::parse_url(url).map_or_else(|_| url.clone(), |url| url.comparable())
        };
        let advertised: Vec<String> = config.advertise_peer_urls.iter().map(comparable).collect();
        let listed: Vec<String> = ours.iter().copied().map(comparable).collect();
        let mut missing: Vec<String> = ours
            .iter()
            .filter(|url| !advertised.contains(&comparable(url)))
            .map(|url| format!("{name}={url}"))
            .collect();
        if !missing.is_empty() {
            bail!(
                "--initial-cluster has {} but missing from --initial-advertise-peer-urls={}",
                cluster_text(&mut missing),
                config.advertise_peer_urls.join(",")
            );
        }
        let mut missing: Vec<String> = config
            .advertise_peer_urls
            .iter()
            .filter(|url| !listed.contains(&comparable(url)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let mut wanted: Vec<String> = config
                .advertise_peer_urls
                .iter()
                .map(|url| format!("{name}={url}"))
                .collect();
            bail!(
                "--initial-advertise-peer-urls has {} but missing from --initial-cluster={}",
                cluster_text(&mut missing),
                cluster_text(&mut wanted)
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    if config
        .initial_cluster
        .iter()
        .any(|(_, url)| !seen.insert(url))
    {
        let mut members: Vec<String> = config
            .initial_cluster
            .iter()
            .map(|(member, url)| format!("{member}={url}"))
            .collect();
        bail!(
            "initial cluster {} has duplicate url",
            cluster_text(&mut members)
        );
    }
    Ok(())
}
