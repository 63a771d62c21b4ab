//! etcd's checks: URLs, Raft timing, TLS refusal, the initial cluster, auto-compaction.

use super::*;

// ---------------------------------------------------------------- errors

/// Unknown flags, etcd flags corekv lacks, and missing values are named.
#[test]
fn bad_flags_are_named() {
    assert_eq!(error(&["--bogus"]), "unknown flag: --bogus (see --help)");
    assert_eq!(error(&["-bogus=1"]), "unknown flag: --bogus (see --help)");
    assert_eq!(
        error(&["--pre-vote"]),
        "flag --pre-vote is etcd's but corekv does not support it yet (see --help)"
    );
    assert_eq!(
        error(&["--experimental-initial-corrupt-check"]),
        "flag --experimental-initial-corrupt-check is etcd's but corekv does not support it \
         yet (see --help)"
    );
    assert_eq!(error(&["--name"]), "flag --name needs a name");
    assert_eq!(error(&["--data-dir"]), "flag --data-dir needs a directory");
    assert_eq!(
        error(&["--listen-client-urls"]),
        "flag --listen-client-urls needs URLs"
    );
    assert_eq!(
        error(&["--snapshot-count"]),
        "flag --snapshot-count needs a number"
    );
}

/// URLs are checked with etcd's messages.
#[test]
fn urls_are_checked_as_etcd_does() {
    assert_eq!(
        error(&["--listen-client-urls=localhost:2379"]),
        "invalid value \"localhost:2379\" for --listen-client-urls: URL scheme must be http, \
         https, unix, or unixs: localhost:2379"
    );
    assert_eq!(
        error(&["--listen-peer-urls=127.0.0.1:2380"]),
        "invalid value \"127.0.0.1:2380\" for --listen-peer-urls: URL scheme must be http, \
         https, unix, or unixs: 127.0.0.1:2380"
    );
    assert_eq!(
        error(&["--initial-advertise-peer-urls=ftp://a:1"]),
        "invalid value \"ftp://a:1\" for --initial-advertise-peer-urls: URL scheme must be \
         http, https, unix, or unixs: ftp://a:1"
    );
    assert_eq!(
        error(&["--advertise-client-urls=http://a:1,"]),
        "invalid value \"http://a:1,\" for --advertise-client-urls: URL scheme must be http, \
         https, unix, or unixs: "
    );
    assert_eq!(
        error(&["--listen-client-urls=http://localhost:2379/"]),
        "invalid value \"http://localhost:2379/\" for --listen-client-urls: URL must not \
         contain a path: http://localhost:2379/"
    );
    assert_eq!(
        error(&["--listen-client-urls=http://localhost"]),
        "invalid value \"http://localhost\" for --listen-client-urls: URL address does not \
         have the form \"host:port\": http://localhost"
    );
    assert_eq!(
        error(&[
            "--listen-client-urls=http://example.com:2379",
            "--advertise-client-urls=http://a:1"
        ]),
        "invalid value \"http://example.com:2379\" for --listen-client-urls: expected IP in \
         URL for binding (http://example.com:2379)"
    );
    assert_eq!(
        error(&["--listen-peer-urls=unix://localhost:1"]),
        "invalid value \"unix://localhost:1\" for --listen-peer-urls: corekv does not listen \
         on unix sockets yet (unix://localhost:1)"
    );
    assert_eq!(
        error(&["--advertise-client-urls=http://:2379"]),
        "invalid value \"http://:2379\" for --advertise-client-urls: unexpected empty host \
         (http://:2379)"
    );
    let url = parse_url(" HTTP://[::1]:2379 ").unwrap();
    assert_eq!(
        (url.scheme.as_str(), url.host.as_str(), url.port.as_str()),
        ("http", "::1", "2379")
    );
    assert_eq!(url.comparable(), "http://[::1]:2379");
}

/// Explicit --listen-client-urls needs --advertise-client-urls, as in etcd; from a file
/// it does not (etcd keeps the default advertised URL there).
#[test]
fn listen_client_urls_need_advertise_client_urls() {
    let message = "--advertise-client-urls is required when --listen-client-urls is set \
                   explicitly";
    assert_eq!(error(&["--listen-client-urls=http://127.0.0.1:1"]), message);
    assert_eq!(
        error_env(&[], &[("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:1")]),
        message
    );
    let config = parse_env(
        &["--listen-client-urls=http://127.0.0.1:1"],
        &[("ETCD_ADVERTISE_CLIENT_URLS", "http://127.0.0.1:1")],
    );
    assert_eq!(config.client_addresses, vec![address("127.0.0.1:1")]);
    let dir = TempDir::new();
    let file = dir.file("c.yaml", "listen-client-urls: http://127.0.0.1:1\n");
    let config = parse(&["--config-file", &file]);
    assert_eq!(config.client_addresses, vec![address("127.0.0.1:1")]);
    assert_eq!(
        config.advertise_client_urls,
        strings(&["http://localhost:2379"])
    );
}

/// Heartbeat and election timeout are checked with etcd's messages.
#[test]
fn raft_timing_is_checked() {
    assert_eq!(
        error(&["--heartbeat-interval=0"]),
        "--heartbeat-interval must be >0 (set to 0ms)"
    );
    assert_eq!(
        error(&["--election-timeout=0"]),
        "--election-timeout must be >0 (set to 0ms)"
    );
    assert_eq!(
        error(&["--election-timeout", "100"]),
        "--election-timeout[100ms] should be at least as 5 times as --heartbeat-interval[100ms]"
    );
    assert_eq!(
        error(&["--election-timeout=60000", "--heartbeat-interval=1000"]),
        "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
    );
    assert_eq!(
        parse(&["--election-timeout=50000", "--heartbeat-interval=10000"]).election_ticks(),
        5
    );
}

// ---------------------------------------------------------------- TLS

/// Every setting that asks for TLS is refused, naming where it came from.
#[test]
fn tls_is_refused_naming_the_setting() {
    for (argument, named) in [
        ("--cert-file=c.pem", "--cert-file asks for it (c.pem)"),
        ("--key-file=k.pem", "--key-file asks for it (k.pem)"),
        (
            "--trusted-ca-file=ca.pem",
            "--trusted-ca-file asks for it (ca.pem)",
        ),
        ("--client-cert-auth", "--client-cert-auth asks for it"),
        ("--auto-tls=true", "--auto-tls asks for it"),
        (
            "--peer-cert-file=c.pem",
            "--peer-cert-file asks for it (c.pem)",
        ),
        (
            "--peer-key-file=k.pem",
            "--peer-key-file asks for it (k.pem)",
        ),
        (
            "--peer-trusted-ca-file=ca.pem",
            "--peer-trusted-ca-file asks for it (ca.pem)",
        ),
        (
            "--peer-client-cert-auth",
            "--peer-client-cert-auth asks for it",
        ),
        ("--peer-auto-tls", "--peer-auto-tls asks for it"),
        (
            "--listen-peer-urls=https://127.0.0.1:2380",
            "--listen-peer-urls asks for it (https://127.0.0.1:2380)",
        ),
        (
            "--initial-advertise-peer-urls=https://127.0.0.1:2380",
            "--initial-advertise-peer-urls asks for it (https://127.0.0.1:2380)",
        ),
        (
            "--advertise-client-urls=unixs://a:1",
            "--advertise-client-urls asks for it (unixs://a:1)",
        ),
        (
            "--initial-cluster=default=https://localhost:2380",
            "--initial-cluster asks for it (default=https://localhost:2380)",
        ),
    ] {
        assert_eq!(
            error(&[argument]),
            format!("corekv does not serve TLS yet, but {named}"),
            "{argument}"
        );
    }
    assert_eq!(
        error(&[
            "--listen-client-urls=https://127.0.0.1:2379",
            "--advertise-client-urls=http://a:1"
        ]),
        "corekv does not serve TLS yet, but --listen-client-urls asks for it \
         (https://127.0.0.1:2379)"
    );
    assert_eq!(
        error_env(&[], &[("ETCD_CERT_FILE", "c.pem")]),
        "corekv does not serve TLS yet, but ETCD_CERT_FILE asks for it (c.pem)"
    );
    let dir = TempDir::new();
    let file = dir.file(
        "tls.yaml",
        "peer-transport-security:\n  client-cert-auth: true\n",
    );
    assert_eq!(
        error(&["--config-file", &file]),
        format!(
            "corekv does not serve TLS yet, but peer-transport-security.client-cert-auth in \
             config file \"{file}\" asks for it"
        )
    );
    // Turning TLS off explicitly is fine.
    let config = parse(&["--client-cert-auth=false", "--peer-auto-tls=false"]);
    assert_eq!(config.tls, TlsConfig::default());
}

// ---------------------------------------------------------------- initial cluster

/// The default --initial-cluster is this member with each advertised peer URL.
#[test]
fn default_initial_cluster_follows_name_and_advertised_urls() {
    let config = parse(&[
        "--name=n1",
        "--initial-advertise-peer-urls=http://10.0.0.1:2380,http://10.0.0.9:2380",
    ]);
    assert_eq!(
        config.initial_cluster,
        vec![
            ("n1".to_string(), "http://10.0.0.1:2380".to_string()),
            ("n1".to_string(), "http://10.0.0.9:2380".to_string()),
        ]
    );
}

/// --initial-cluster must hold this member with its advertised peer URLs (new cluster)
/// and no URL twice; messages are etcd's.
#[test]
fn initial_cluster_is_verified_as_etcd_bootstraps() {
    assert_eq!(
        error(&["--name=n1", "--initial-cluster=n2=http://localhost:2380"]),
        "couldn't find local name \"n1\" in the initial cluster configuration"
    );
    assert_eq!(
        error(&["--initial-cluster="]),
        "couldn't find local name \"default\" in the initial cluster configuration"
    );
    assert_eq!(
        error(&["--name=n1", "--initial-cluster=n1=http://10.0.0.1:2381"]),
        "--initial-cluster has n1=http://10.0.0.1:2381 but missing from \
         --initial-advertise-peer-urls=http://localhost:2380"
    );
    assert_eq!(
        error(&[
            "--initial-advertise-peer-urls=http://10.0.0.1:2380,http://10.0.0.2:2380",
            "--initial-cluster=default=http://10.0.0.1:2380",
        ]),
        "--initial-advertise-peer-urls has http://10.0.0.2:2380 but missing from \
         --initial-cluster=default=http://10.0.0.1:2380,default=http://10.0.0.2:2380"
    );
    assert_eq!(
        error(&["--initial-cluster=default=http://localhost:2380,n2=http://localhost:2380"]),
        "initial cluster default=http://localhost:2380,n2=http://localhost:2380 has \
         duplicate url"
    );
    assert_eq!(
        error(&["--initial-cluster=default=localhost:2380"]),
        "invalid value \"default=localhost:2380\" for --initial-cluster: URL scheme must be \
         http, https, unix, or unixs: localhost:2380"
    );
    assert_eq!(
        error(&["--initial-cluster=default"]),
        "invalid value \"default\" for --initial-cluster: URL scheme must be http, https, \
         unix, or unixs: "
    );
    // localhost and 127.0.0.1 are the same member (etcd resolves both).
    let config = parse(&["--initial-cluster=default=http://127.0.0.1:2380"]);
    assert_eq!(
        config.initial_cluster,
        vec![("default".to_string(), "http://127.0.0.1:2380".to_string())]
    );
    // Joining an existing cluster needs only the name (and no URL twice).
    let config = parse(&[
        "--name=n3",
        "--initial-cluster-state=existing",
        "--initial-cluster=n1=http://a:2380,n3=http://c:2380",
    ]);
    assert_eq!(config.initial_cluster_state, ClusterState::Existing);
    assert_eq!(
        error(&[
            "--initial-cluster-state=existing",
            "--initial-cluster=n1=http://a:1"
        ]),
        "couldn't find local name \"default\" in the initial cluster configuration"
    );
}

// ---------------------------------------------------------------- auto-compaction

/// Retention as etcd reads it: whole hours or a Go duration in periodic mode, revisions
/// in revision mode; 0 is off.
#[test]
fn auto_compaction_retention_follows_etcd() {
    let compaction = |args: &[&str]| parse(args).auto_compaction;
    let hours = |hours: u64| Some(AutoCompaction::Periodic(Duration::from_secs(hours * 3600)));
    assert_eq!(compaction(&["--auto-compaction-retention=0"]), None);
    assert_eq!(compaction(&["--auto-compaction-retention=0s"]), None);
    assert_eq!(compaction(&["--auto-compaction-retention=1"]), hours(1));
    assert_eq!(compaction(&["--auto-compaction-retention=+2"]), hours(2));
    assert_eq!(
        compaction(&["--auto-compaction-retention=5m"]),
        Some(AutoCompaction::Periodic(Duration::from_secs(300)))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=1h30m"]),
        Some(AutoCompaction::Periodic(Duration::from_secs(5400)))
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1.5h"
        ]),
        Some(AutoCompaction::Periodic(Duration::from_secs(5400)))
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-retention=100",
            "--auto-compaction-mode=revision"
        ]),
        Some(AutoCompaction::Revision(100))
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=0"
        ]),
        None
    );
    assert_eq!(compaction(&["--auto-compaction-mode=revision"]), None);
    assert_eq!(
        error(&["--auto-compaction-retention=5d"]),
        "invalid value \"5d\" for --auto-compaction-retention: unknown unit \"d\" in duration \
         \"5d\""
    );
    assert_eq!(
        error(&["--auto-compaction-retention=-1"]),
        "invalid value \"-1\" for --auto-compaction-retention: missing unit in duration \"-1\""
    );
    assert_eq!(
        error(&["--auto-compaction-retention=-1h"]),
        "invalid value \"-1h\" for --auto-compaction-retention: negative duration \"-1h\""
    );
    assert_eq!(
        error(&["--auto-compaction-retention=abc"]),
        "invalid value \"abc\" for --auto-compaction-retention: invalid duration \"abc\""
    );
    assert_eq!(
        error(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=5m"
        ]),
        "invalid value \"5m\" for --auto-compaction-retention: revision mode \
         (--auto-compaction-mode) takes a number of revisions"
    );
}

/// Go's duration syntax, unit by unit.
#[test]
fn go_durations_parse() {
    let ok = |text: &str, nanos: u64| {
        assert_eq!(
            parse_go_duration(text),
            Ok(Duration::from_nanos(nanos)),
            "{text:?}"
        );
    };
    ok("0", 0);
    ok("+0", 0);
    ok("-0", 0);
    ok("300ms", 300_000_000);
    ok("1.5h", 5_400_000_000_000);
    ok("2h45m", 9_900_000_000_000);
    ok(".5s", 500_000_000);
    ok("1.s", 1_000_000_000);
    ok("7ns", 7);
    ok("3us", 3_000);
    ok("3\u{b5}s", 3_000);
    ok("3\u{3bc}s", 3_000);
    ok("1h1m1s1ms1us1ns", 3_661_001_001_001);
    let bad = |text: &str, message: &str| {
        assert_eq!(
            parse_go_duration(text),
            Err(message.to_string()),
            "{text:?}"
        );
    };
    bad("", "invalid duration \"\"");
    bad("-", "invalid duration \"-\"");
    bad(".s", "invalid duration \".s\"");
    bad("5", "missing unit in duration \"5\"");
    bad("1h5", "missing unit in duration \"1h5\"");
    bad("5x", "unknown unit \"x\" in duration \"5x\"");
    bad("s", "invalid duration \"s\"");
    bad("3000000h", "invalid duration \"3000000h\"");
}
