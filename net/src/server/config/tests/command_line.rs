//! Defaults, `--help`, `--version`, how flags are spelled and how each value parses.

use super::*;

// ---------------------------------------------------------------- defaults and spelling

/// With no flags, no variables and no file every field has etcd's (or corekv's) default.
#[test]
fn defaults_match_etcd() {
    let config = parse(&[]);
    assert_eq!(config.name, "default");
    assert_eq!(config.data_dir, PathBuf::from("default.etcd"));
    assert_eq!(config.wal_dir, None);
    assert_eq!(config.binary_addresses, vec![address("127.0.0.1:2378")]);
    assert_eq!(config.client_addresses, vec![address("127.0.0.1:2379")]);
    assert_eq!(
        config.advertise_client_urls,
        strings(&["http://localhost:2379"])
    );
    assert_eq!(config.metrics_addresses, Vec::<SocketAddr>::new());
    assert_eq!(config.peer_addresses, vec![address("127.0.0.1:2380")]);
    assert_eq!(
        config.advertise_peer_urls,
        strings(&["http://localhost:2380"])
    );
    assert_eq!(
        config.initial_cluster,
        vec![("default".to_string(), "http://localhost:2380".to_string())]
    );
    assert_eq!(config.initial_cluster_state, ClusterState::New);
    assert_eq!(config.cluster_token, "etcd-cluster");
    assert_eq!(config.quota_backend_bytes, 2 << 30);
    assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(config.election_timeout, Duration::from_millis(1000));
    assert_eq!(config.snapshot_count, 10_000);
    assert_eq!(config.snapshot_log_bytes_min, 64 << 20);
    assert_eq!(config.request_bytes_max, 1_572_864);
    assert_eq!(config.txn_ops_max, 128);
    assert_eq!(config.auto_compaction, None);
    assert!(!config.enable_v2);
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.logger, Logger::Capnslog);
    assert_eq!(config.tls, TlsConfig::default());
    assert_eq!(config.config_file, None);
    assert_eq!(config.election_ticks(), 10);
    assert_eq!(config.lease_ttl_seconds_min(), 2);
}

/// `ServerConfig::default()`, which other code builds on, is what parsing nothing gives.
#[test]
fn default_impl_equals_parsed_defaults() {
    assert_eq!(
        format!("{:?}", ServerConfig::default()),
        format!("{:?}", parse(&[]))
    );
}

/// Every default `--help` shows as a value really is the default: giving it changes
/// nothing.
#[test]
fn help_defaults_are_the_real_defaults() {
    let baseline = format!("{:?}", parse(&[]));
    for flag in flags::FLAGS {
        let flags::ShownDefault::Value(default) = flag.default else {
            continue;
        };
        if matches!(flag.id, Id::Version | Id::Help | Id::ConfigFile) {
            continue;
        }
        let argument = format!("--{}={default}", flag.name);
        // etcd wants advertised client URLs whenever listen ones are given.
        let config = parse_full(
            &[&argument, "--advertise-client-urls=http://localhost:2379"],
            &[],
        )
        .expect(&argument);
        assert_eq!(format!("{:?}", config.0), baseline, "{argument}");
    }
}

/// `--help` names every flag with its value and default.
#[test]
fn help_lists_every_flag_with_its_default() {
    assert!(matches!(
        Command::parse_with(strings(&["--help"]), Vec::new())
            .unwrap()
            .command,
        Command::Help
    ));
    let text = usage();
    for flag in flags::FLAGS {
        let spelled = match flag.kind {
            flags::Kind::Bool => format!("  --{} (default ", flag.name),
            flags::Kind::Value => format!("  --{} {} (default ", flag.name, flag.placeholder),
        };
        assert!(text.contains(&spelled), "{spelled:?} missing from --help");
    }
    assert!(text.contains("  --name NAME (default default)\n"));
    assert!(text.contains("  --data-dir DIR (default ${name}.etcd)\n"));
    assert!(text.contains("  --enable-v2 (default false)\n"));
    assert!(text.contains("  --wal-dir DIR (default none)\n"));
}

/// The flags the task lists are all there, with etcd's names.
#[test]
fn every_etcd_flag_of_the_compatibility_list_exists() {
    let names = "name data-dir wal-dir listen-client-urls advertise-client-urls listen-peer-urls
        initial-advertise-peer-urls initial-cluster initial-cluster-state initial-cluster-token
        heartbeat-interval election-timeout snapshot-count quota-backend-bytes max-request-bytes
        max-txn-ops auto-compaction-mode auto-compaction-retention listen-metrics-urls cert-file
        key-file trusted-ca-file client-cert-auth auto-tls peer-cert-file peer-key-file
        peer-trusted-ca-file peer-client-cert-auth enable-v2 log-level logger version help
        config-file listen-binary-urls cores spread-connections snapshot-log-bytes-min";
    for name in names.split_whitespace() {
        assert!(flags::find(name).is_some(), "--{name} missing");
    }
}

/// Go's flag package takes `--flag value`, `--flag=value`, `-flag value`, `-flag=value`.
#[test]
fn flags_parse_in_every_spelling() {
    for args in [
        &["--name", "n1"][..],
        &["--name=n1"][..],
        &["-name", "n1"][..],
        &["-name=n1"][..],
    ] {
        let config = parse(args);
        assert_eq!(config.name, "n1", "{args:?}");
        assert_eq!(config.data_dir, PathBuf::from("n1.etcd"), "{args:?}");
    }
    let config = parse(&["--listen-binary-urls=http://localhost:3000", "--cores", "1"]);
    assert_eq!(config.binary_addresses, vec![address("127.0.0.1:3000")]);
    assert_eq!(config.cores, 1);
}

/// A repeated flag keeps its last value; `--` ends the flags.
#[test]
fn last_flag_wins_and_double_dash_ends_flags() {
    assert_eq!(parse(&["--name=a", "--name=b", "--"]).name, "b");
    assert_eq!(
        error(&["--", "--name=a"]),
        "unexpected argument \"--name=a\" (see --help)"
    );
    assert_eq!(
        error(&["serve"]),
        "unexpected argument \"serve\" (flags start with --; see --help)"
    );
    assert_eq!(
        error(&["---name=a"]),
        "unexpected argument \"---name=a\" (flags start with --; see --help)"
    );
}

/// Booleans as Go takes them: bare, `=true`, `=false`, Go's other spellings; never a
/// separate argument.
#[test]
fn booleans_follow_go() {
    assert!(parse(&["--enable-v2"]).enable_v2);
    assert!(parse(&["-enable-v2"]).enable_v2);
    assert!(parse(&["--enable-v2=true"]).enable_v2);
    assert!(parse(&["--enable-v2=1"]).enable_v2);
    assert!(parse(&["--enable-v2=T"]).enable_v2);
    assert!(!parse(&["--enable-v2=false"]).enable_v2);
    assert!(!parse(&["--enable-v2", "--enable-v2=0"]).enable_v2);
    assert_eq!(
        error(&["--enable-v2", "false"]),
        "unexpected argument \"false\" after --enable-v2: a boolean flag takes its value \
         as --enable-v2=false"
    );
    assert_eq!(
        error(&["--enable-v2=yes"]),
        "invalid value \"yes\" for --enable-v2: not a boolean (true or false)"
    );
}

/// `--version` (and `--version=true`) asks for the version; `--version=false` serves;
/// `-h`, `-help` and `--help` ask for help at once.
#[test]
fn version_and_help() {
    let command = |args: &[&str], env: &[(&str, &str)]| {
        Command::parse_with(strings(args), env_pairs(env)).map(|parsed| parsed.command)
    };
    assert!(matches!(command(&["--version"], &[]), Ok(Command::Version)));
    assert!(matches!(
        command(&["-version=true"], &[]),
        Ok(Command::Version)
    ));
    assert!(matches!(
        command(&["--version=false"], &[]),
        Ok(Command::Serve(_))
    ));
    // etcd prints the version before reading the environment or the file.
    assert!(matches!(
        command(
            &["--version", "--config-file=/nonexistent"],
            &[("ETCD_SNAPSHOT_COUNT", "x")]
        ),
        Ok(Command::Version)
    ));
    for help in ["-h", "--h", "-help", "--help"] {
        assert!(
            matches!(command(&[help, "--bogus"], &[]), Ok(Command::Help)),
            "{help}"
        );
    }
    assert_eq!(
        error(&["--bogus", "--version"]),
        "unknown flag: --bogus (see --help)"
    );
    let text = version_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("corekv Version: {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(lines[1], "API Version: 3.4");
    assert!(lines[2].starts_with("OS/Arch: linux/"), "{text}");
}

// ---------------------------------------------------------------- values

/// Every member field gets its flag's value.
#[test]
fn every_value_flag_sets_its_field() {
    let config = parse(&[
        "--name=n1",
        "--data-dir=/data/n1",
        "--wal-dir=/wal/n1",
        "--snapshot-count=500",
        "--snapshot-log-bytes-min=1024",
        "--heartbeat-interval=50",
        "--election-timeout=500",
        "--listen-peer-urls=http://10.0.0.1:2380,http://127.0.0.1:2380",
        "--listen-client-urls=http://0.0.0.0:2379,http://[::1]:2379",
        "--listen-metrics-urls=http://127.0.0.1:2381",
        "--quota-backend-bytes=1048576",
        "--max-request-bytes=1000",
        "--max-txn-ops=10",
        "--initial-advertise-peer-urls=http://10.0.0.1:2380",
        "--initial-cluster=n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380",
        "--initial-cluster-state=existing",
        "--initial-cluster-token=tok",
        "--advertise-client-urls=http://10.0.0.1:2379",
        "--log-level=debug",
        "--logger=zap",
        "--client-cert-auth=false",
        "--auto-tls=false",
    ]);
    assert_eq!(config.name, "n1");
    assert_eq!(config.data_dir, PathBuf::from("/data/n1"));
    assert_eq!(config.wal_dir, Some(PathBuf::from("/wal/n1")));
    assert_eq!(config.snapshot_count, 500);
    assert_eq!(config.snapshot_log_bytes_min, 1024);
    assert_eq!(config.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(config.election_timeout, Duration::from_millis(500));
    assert_eq!(
        config.peer_addresses,
        vec![address("10.0.0.1:2380"), address("127.0.0.1:2380")]
    );
    assert_eq!(
        config.client_addresses,
        vec![address("0.0.0.0:2379"), address("[::1]:2379")]
    );
    assert_eq!(config.metrics_addresses, vec![address("127.0.0.1:2381")]);
    assert_eq!(config.quota_backend_bytes, 1_048_576);
    assert_eq!(config.request_bytes_max, 1000);
    assert_eq!(config.txn_ops_max, 10);
    assert_eq!(
        config.advertise_peer_urls,
        strings(&["http://10.0.0.1:2380"])
    );
    assert_eq!(
        config.initial_cluster,
        vec![
            ("n1".to_string(), "http://10.0.0.1:2380".to_string()),
            ("n2".to_string(), "http://10.0.0.2:2380".to_string()),
        ]
    );
    assert_eq!(config.initial_cluster_state, ClusterState::Existing);
    assert_eq!(config.cluster_token, "tok");
    assert_eq!(
        config.advertise_client_urls,
        strings(&["http://10.0.0.1:2379"])
    );
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(config.logger, Logger::Zap);
    assert_eq!(config.tls, TlsConfig::default());
}

/// URL lists are sorted and without repeats, as etcd's; an empty value is the default.
#[test]
fn url_lists_are_sorted_deduplicated_and_empty_means_default() {
    let config = parse(&[
        "--advertise-client-urls=http://b:2379, http://a:2379,http://b:2379",
        "--listen-client-urls=",
        "--initial-advertise-peer-urls=",
    ]);
    assert_eq!(
        config.advertise_client_urls,
        strings(&["http://a:2379", "http://b:2379"])
    );
    assert_eq!(config.client_addresses, vec![address("127.0.0.1:2379")]);
    assert_eq!(
        config.advertise_peer_urls,
        strings(&["http://localhost:2380"])
    );
}

/// Numbers take Go's base-0 syntax; 0 means the default for --snapshot-count and
/// --quota-backend-bytes, and a negative quota means none, as in etcd.
#[test]
fn numbers_follow_go_and_etcd() {
    assert_eq!(parse_unsigned("0x10"), Ok(16));
    assert_eq!(parse_unsigned("0o17"), Ok(15));
    assert_eq!(parse_unsigned("010"), Ok(8));
    assert_eq!(parse_unsigned("0b101"), Ok(5));
    assert_eq!(parse_unsigned("1_000"), Ok(1000));
    assert_eq!(parse_unsigned("0x_1f"), Ok(31));
    assert_eq!(parse_unsigned("0"), Ok(0));
    for bad in ["", "+1", "-1", "_1", "1_", "1__0", "08", "1e3", " 1", "x"] {
        assert_eq!(
            parse_unsigned(bad),
            Err("not a number".to_string()),
            "{bad:?}"
        );
    }
    assert_eq!(
        parse_unsigned("18446744073709551616"),
        Err("out of range".to_string())
    );
    assert_eq!(parse_signed("-5"), Ok(-5));
    assert_eq!(parse_signed("-9223372036854775808"), Ok(i64::MIN));
    assert_eq!(
        parse_signed("9223372036854775808"),
        Err("out of range".to_string())
    );
    assert_eq!(
        parse(&["--heartbeat-interval=0x64"]).heartbeat_interval,
        Duration::from_millis(100)
    );
    assert_eq!(parse(&["--snapshot-count=0"]).snapshot_count, 10_000);
    assert_eq!(
        parse(&["--quota-backend-bytes=0"]).quota_backend_bytes,
        2 << 30
    );
    assert_eq!(
        parse(&["--quota-backend-bytes=-1"]).quota_backend_bytes,
        u64::MAX
    );
    assert_eq!(
        error(&["--snapshot-count", "x"]),
        "invalid value \"x\" for --snapshot-count: not a number"
    );
    assert_eq!(
        error(&["--max-txn-ops=-1"]),
        "invalid value \"-1\" for --max-txn-ops: not a number"
    );
    assert_eq!(
        error(&["--cores", "0"]),
        "invalid value \"0\" for --cores: must be at least 1"
    );
}

/// Choices take exactly etcd's words.
#[test]
fn choices_take_etcd_words() {
    assert_eq!(
        error(&["--initial-cluster-state=bogus"]),
        "invalid value \"bogus\" for --initial-cluster-state: expected new or existing"
    );
    assert_eq!(
        error(&["--initial-cluster-state=New"]),
        "invalid value \"New\" for --initial-cluster-state: expected new or existing"
    );
    assert_eq!(
        error(&["--auto-compaction-mode=hourly"]),
        "invalid value \"hourly\" for --auto-compaction-mode: expected periodic or revision"
    );
    assert_eq!(
        error(&["--logger=log4j"]),
        "invalid value \"log4j\" for --logger: expected zap or capnslog"
    );
    assert_eq!(
        error(&["--log-level=trace"]),
        "invalid value \"trace\" for --log-level: expected debug, info, warn, error, panic or fatal"
    );
    for (text, level) in [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
        ("panic", LogLevel::Panic),
        ("fatal", LogLevel::Fatal),
    ] {
        assert_eq!(parse(&[&format!("--log-level={text}")]).log_level, level);
    }
}

/// The data directory follows the final name unless given; an empty one is the default.
#[test]
fn data_dir_follows_name() {
    assert_eq!(parse(&["--name=x"]).data_dir, PathBuf::from("x.etcd"));
    assert_eq!(
        parse(&["--name=x", "--data-dir="]).data_dir,
        PathBuf::from("x.etcd")
    );
    assert_eq!(
        parse(&["--data-dir=d", "--name=x"]).data_dir,
        PathBuf::from("d")
    );
    assert_eq!(parse(&["--wal-dir="]).wal_dir, None);
}
