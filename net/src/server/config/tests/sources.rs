//! The environment, the config file, and their precedence with the flags.

use super::*;

// ---------------------------------------------------------------- environment

/// `ETCD_<FLAG>` sets the flag.
#[test]
fn environment_variables_set_flags() {
    let config = parse_env(
        &[],
        &[
            ("ETCD_NAME", "n1"),
            ("ETCD_DATA_DIR", "/data"),
            ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
            ("ETCD_INITIAL_CLUSTER", "n1=http://localhost:2380"),
            ("ETCD_ENABLE_V2", "true"),
            ("ETCD_SNAPSHOT_COUNT", "0x20"),
            ("ETCD_AUTO_COMPACTION_RETENTION", "2"),
            ("ETCD_LISTEN_BINARY_URLS", "127.0.0.1:3000"),
            ("ETCD_CORES", "1"),
            ("PATH", "/usr/bin"),
            ("ETCDCTL_API", "3"),
        ],
    );
    assert_eq!(config.name, "n1");
    assert_eq!(config.data_dir, PathBuf::from("/data"));
    assert_eq!(config.initial_cluster_state, ClusterState::Existing);
    assert!(config.enable_v2);
    assert_eq!(config.snapshot_count, 32);
    assert_eq!(
        config.auto_compaction,
        Some(AutoCompaction::Periodic(Duration::from_secs(7200)))
    );
    assert_eq!(config.binary_addresses, vec![address("127.0.0.1:3000")]);
    assert_eq!(config.cores, 1);
}

/// An empty variable is ignored; an `ETCD_*` variable naming no flag is ignored with
/// etcd's warning; one naming an etcd flag corekv lacks says so.
#[test]
fn environment_variables_etcd_does_not_know_are_warned_about() {
    let (config, warnings) = parse_full(
        &[],
        &[
            ("ETCD_NAME", ""),
            ("ETCD_BOGUS", "1"),
            ("ETCD_PRE_VOTE", "true"),
            ("ETCD_HELP", "true"),
        ],
    )
    .unwrap();
    assert_eq!(config.name, "default");
    assert_eq!(
        warnings,
        strings(&[
            "unrecognized environment variable ETCD_BOGUS=1",
            "ignored environment variable ETCD_PRE_VOTE: etcd's --pre-vote is not supported \
             by corekv yet",
            "unrecognized environment variable ETCD_HELP=true",
        ])
    );
    // The warnings come with a refusal too: a misspelt variable often explains it.
    let rejected = Command::parse_with(
        strings(&["--listen-client-urls=http://127.0.0.1:1"]),
        env_pairs(&[("ETCD_ADVERTISE_CLIENT_URL", "http://127.0.0.1:1")]),
    )
    .unwrap_err();
    assert_eq!(
        rejected.warnings,
        strings(&[
            "unrecognized environment variable ETCD_ADVERTISE_CLIENT_URL=http://127.0.0.1:1"
        ])
    );
}

/// A bad variable value is an error naming the variable; ETCD_VERSION must be a boolean
/// (as in etcd) but does nothing.
#[test]
fn bad_environment_values_name_the_variable() {
    assert_eq!(
        error_env(&[], &[("ETCD_SNAPSHOT_COUNT", "x")]),
        "invalid value \"x\" for ETCD_SNAPSHOT_COUNT: not a number"
    );
    assert_eq!(
        error_env(&[], &[("ETCD_ENABLE_V2", "yes")]),
        "invalid value \"yes\" for ETCD_ENABLE_V2: not a boolean (true or false)"
    );
    assert_eq!(
        error_env(&[], &[("ETCD_VERSION", "3.4.23")]),
        "invalid value \"3.4.23\" for ETCD_VERSION: not a boolean (true or false)"
    );
    assert_eq!(
        error_env(&[], &[("ETCD_LISTEN_PEER_URLS", "localhost:2380")]),
        "invalid value \"localhost:2380\" for ETCD_LISTEN_PEER_URLS: URL scheme must be http, \
         https, unix, or unixs: localhost:2380"
    );
    assert!(matches!(
        Command::parse_with(Vec::new(), env_pairs(&[("ETCD_VERSION", "true")]))
            .unwrap()
            .command,
        Command::Serve(_)
    ));
}

// ---------------------------------------------------------------- config file

/// etcd's YAML keys set their flags, TLS keys under their sections; unknown keys are
/// ignored with a warning.
#[test]
fn config_file_takes_etcd_keys() {
    let dir = TempDir::new();
    let file = dir.file(
        "etcd.yaml",
        "\
# like etcd's etcd.conf.yml.sample
name: 'infra1'
data-dir: /var/lib/etcd
wal-dir:
snapshot-count: 5000
heartbeat-interval: 50
election-timeout: 500
quota-backend-bytes: 0
max-request-bytes: 2097152
max-txn-ops: 256
listen-peer-urls: http://10.0.0.1:2380
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379
max-snapshots: 5
initial-advertise-peer-urls: http://10.0.0.1:2380
advertise-client-urls: http://10.0.0.1:2379
discovery:
initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380
initial-cluster-token: 'etcd-cluster-1'
initial-cluster-state: 'new'
enable-v2: true
auto-compaction-mode: revision
auto-compaction-retention: \"1000\"
log-level: warn
logger: zap
listen-metrics-urls: http://127.0.0.1:2381
client-transport-security:
  cert-file:
  key-file: ''
  client-cert-auth: false
  auto-tls: false
peer-transport-security:
  trusted-ca-file:
  crl-file: x
bogus-key: 3
",
    );
    let (config, warnings) = parse_full(&["--config-file", &file], &[]).unwrap();
    assert_eq!(config.name, "infra1");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/etcd"));
    assert_eq!(config.wal_dir, None);
    assert_eq!(config.snapshot_count, 5000);
    assert_eq!(config.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(config.election_timeout, Duration::from_millis(500));
    assert_eq!(config.quota_backend_bytes, 2 << 30);
    assert_eq!(config.request_bytes_max, 2_097_152);
    assert_eq!(config.txn_ops_max, 256);
    assert_eq!(config.peer_addresses, vec![address("10.0.0.1:2380")]);
    assert_eq!(
        config.client_addresses,
        vec![address("10.0.0.1:2379"), address("127.0.0.1:2379")]
    );
    assert_eq!(
        config.advertise_peer_urls,
        strings(&["http://10.0.0.1:2380"])
    );
    assert_eq!(
        config.advertise_client_urls,
        strings(&["http://10.0.0.1:2379"])
    );
    assert_eq!(config.initial_cluster.len(), 2);
    assert_eq!(config.cluster_token, "etcd-cluster-1");
    assert_eq!(config.initial_cluster_state, ClusterState::New);
    assert!(config.enable_v2);
    assert_eq!(config.auto_compaction, Some(AutoCompaction::Revision(1000)));
    assert_eq!(config.log_level, LogLevel::Warn);
    assert_eq!(config.logger, Logger::Zap);
    assert_eq!(config.metrics_addresses, vec![address("127.0.0.1:2381")]);
    assert_eq!(config.tls, TlsConfig::default());
    assert_eq!(config.config_file, Some(PathBuf::from(&file)));
    assert_eq!(
        warnings,
        vec![
            format!(
                "ignored max-snapshots in config file \"{file}\": etcd's max-snapshots is not \
                 supported by corekv yet"
            ),
            format!(
                "ignored discovery in config file \"{file}\": etcd's discovery is not \
                 supported by corekv yet"
            ),
            format!(
                "ignored peer-transport-security.crl-file in config file \"{file}\": not a key \
                 corekv takes"
            ),
            format!("ignored bogus-key in config file \"{file}\": not a key corekv takes"),
        ]
    );
}

/// ETCD_CONFIG_FILE names the file too; YAML numbers are taken for text keys.
#[test]
fn config_file_from_environment_and_loose_scalars() {
    let dir = TempDir::new();
    let file = dir.file(
        "c.yaml",
        "name: 7\nauto-compaction-retention: 2\nsnapshot-count: \"300\"\n",
    );
    let config = parse_env(&[], &[("ETCD_CONFIG_FILE", file.as_str())]);
    assert_eq!(config.name, "7");
    assert_eq!(config.data_dir, PathBuf::from("7.etcd"));
    assert_eq!(config.snapshot_count, 300);
    assert_eq!(
        config.auto_compaction,
        Some(AutoCompaction::Periodic(Duration::from_secs(7200)))
    );
    // An empty file is an empty configuration.
    let empty = dir.file("empty.yaml", "");
    assert_eq!(parse(&["--config-file", &empty]).name, "default");
}

/// A missing, unparsable or wrongly shaped file is one line naming the file.
#[test]
fn bad_config_files_are_one_line_naming_the_file() {
    let dir = TempDir::new();
    let missing = dir.0.join("missing.yaml").display().to_string();
    assert_eq!(
        error(&["--config-file", &missing]),
        format!("cannot read config file \"{missing}\": No such file or directory (os error 2)")
    );
    let broken = dir.file("broken.yaml", "name: [\n");
    let message = error(&["--config-file", &broken]);
    assert!(
        message.starts_with(&format!("cannot parse config file \"{broken}\": ")),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
    let list = dir.file("list.yaml", "- a\n");
    assert_eq!(
        error(&["--config-file", &list]),
        format!(
            "config file \"{list}\" must be a mapping of etcd's keys (name: ..., data-dir: ...)"
        )
    );
    let nested = dir.file("nested.yaml", "listen-client-urls:\n  - http://a:1\n");
    assert_eq!(
        error(&["--config-file", &nested]),
        format!(
            "invalid value for listen-client-urls in config file \"{nested}\": expected a \
             single value, not a list or mapping"
        )
    );
    let value = dir.file("value.yaml", "heartbeat-interval: fast\n");
    assert_eq!(
        error(&["--config-file", &value]),
        format!(
            "invalid value \"fast\" for heartbeat-interval in config file \"{value}\": not a \
             number"
        )
    );
    let state = dir.file("state.yaml", "initial-cluster-state: bogus\n");
    assert_eq!(
        error(&["--config-file", &state]),
        format!(
            "invalid value \"bogus\" for initial-cluster-state in config file \"{state}\": \
             expected new or existing"
        )
    );
    let top_tls = dir.file("toptls.yaml", "cert-file: /c.pem\n");
    assert_eq!(
        error(&["--config-file", &top_tls]),
        format!(
            "cert-file in config file \"{top_tls}\" must be written as cert-file under \
             client-transport-security: a top-level cert-file is ignored by etcd"
        )
    );
}

// ---------------------------------------------------------------- precedence

/// Per key, a flag beats its variable, which beats the file; keys set in only one place
/// keep that value.
#[test]
fn precedence_is_flag_then_environment_then_file() {
    let dir = TempDir::new();
    let file = dir.file(
        "c.yaml",
        "\
name: from-file
snapshot-count: 1
heartbeat-interval: 10
election-timeout: 100
initial-cluster-token: file-token
max-txn-ops: 7
",
    );
    let (config, warnings) = parse_full(
        &[
            "--config-file",
            &file,
            "--name=from-flag",
            "--snapshot-count=3",
        ],
        &[
            ("ETCD_NAME", "from-env"),
            ("ETCD_SNAPSHOT_COUNT", "2"),
            ("ETCD_HEARTBEAT_INTERVAL", "20"),
            ("ETCD_INITIAL_CLUSTER_TOKEN", "env-token"),
        ],
    )
    .unwrap();
    assert_eq!(config.name, "from-flag");
    assert_eq!(config.data_dir, PathBuf::from("from-flag.etcd"));
    assert_eq!(config.snapshot_count, 3);
    assert_eq!(config.heartbeat_interval, Duration::from_millis(20));
    assert_eq!(config.election_timeout, Duration::from_millis(100));
    assert_eq!(config.cluster_token, "env-token");
    assert_eq!(config.txn_ops_max, 7);
    assert_eq!(
        config.initial_cluster,
        vec![("from-flag".to_string(), "http://localhost:2380".to_string())]
    );
    assert_eq!(
        warnings,
        strings(&[
            "conflicting environment variable ETCD_NAME is shadowed by --name: the flag wins \
             (etcd 3.4 refuses to start instead)",
            "conflicting environment variable ETCD_SNAPSHOT_COUNT is shadowed by \
             --snapshot-count: the flag wins (etcd 3.4 refuses to start instead)",
        ])
    );
    // Only the winning value is read: a shadowed bad value is no error (in etcd a value
    // shadowed by a flag is never parsed either).
    let bad_file = dir.file("bad.yaml", "snapshot-count: lots\n");
    let config = parse_env(
        &["--config-file", &bad_file],
        &[("ETCD_SNAPSHOT_COUNT", "4")],
    );
    assert_eq!(config.snapshot_count, 4);
}

/// The config file's own checks see the merged values: a file's cluster is verified
/// against a flag's name.
#[test]
fn checks_run_on_the_merged_configuration() {
    let dir = TempDir::new();
    let file = dir.file("c.yaml", "initial-cluster: a=http://localhost:2380\n");
    assert_eq!(parse(&["--config-file", &file, "--name=a"]).name, "a");
    assert_eq!(
        error(&["--config-file", &file, "--name=b"]),
        "couldn't find local name \"b\" in the initial cluster configuration"
    );
    assert_eq!(
        error_env(&["--config-file", &file], &[("ETCD_NAME", "c")]),
        "couldn't find local name \"c\" in the initial cluster configuration"
    );
}
