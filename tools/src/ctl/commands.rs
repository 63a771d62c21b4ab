//! One function per corekvctl command: parse its arguments, send its requests, print
//! the result. Requests are bounded by `--command-timeout` except the streams (`watch`,
//! `lease keep-alive` without `--once`), which run until they end or are interrupted.

use std::io::{Read, Write};
use std::time::Duration;

use corekv_engine::{
    DeleteRangeRequest, LeaseId, PutRequest, RangeRequest, Revision, WatchRequest,
};
use corekv_net::client::{Client, ClientError, WatchMessage};

use super::args::{parse, switch, value, FlagSpec, Parsed};
use super::keys::{key_range, parse_lease_id, sort_flags, RangeFlags};
use super::output::{self, Format, GetPrint, Json, Object};
use super::txn::{parse_txn, DEL_FLAGS, GET_FLAGS, PUT_FLAGS};
use super::{connect, with_timeout, CtlError, Global};

const WATCH_FLAGS: &[FlagSpec] = &[switch("prefix"), value("rev"), switch("prev-kv")];

/// Runs `command` with `args`.
pub async fn dispatch(global: &Global, command: &str, args: &[String]) -> Result<(), CtlError> {
    match command {
        "put" => put(global, args).await,
        "get" => get(global, args).await,
        "del" | "delete" => del(global, args).await,
        "txn" => txn(global, args).await,
        "watch" => watch(global, args).await,
        "lease" => lease(global, args).await,
        "compaction" | "compact" => compaction(global, args).await,
        "endpoint" => endpoint(global, args).await,
        other => Err(CtlError::BadArgs(format!(
            "unknown command {other:?} (see corekvctl help)"
        ))),
    }
}

fn parse_args(args: &[String], specs: &[FlagSpec]) -> Result<Parsed, CtlError> {
    parse(args, specs).map_err(CtlError::BadArgs)
}

fn emit(text: &str) -> Result<(), CtlError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| CtlError::Failed(format!("writing to stdout: {error}")))
}

/// Runs one request under `--command-timeout`.
async fn timed<T>(
    global: &Global,
    future: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, CtlError> {
    match with_timeout(global.command_timeout, future).await {
        Ok(result) => result.map_err(CtlError::from),
        Err(()) => Err(CtlError::Failed(format!(
            "context deadline exceeded (no answer within --command-timeout {:?})",
            global.command_timeout
        ))),
    }
}

async fn put(global: &Global, args: &[String]) -> Result<(), CtlError> {
    let parsed = parse_args(args, PUT_FLAGS)?;
    let (key, value) = match parsed.positional.as_slice() {
        [key, value] => (key.clone(), value.as_bytes().to_vec()),
        [key] if parsed.switch("ignore-value") => (key.clone(), Vec::new()),
        [key] => {
            let mut value = Vec::new();
            std::io::stdin().read_to_end(&mut value).map_err(|error| {
                CtlError::Failed(format!("reading the value from stdin: {error}"))
            })?;
            (key.clone(), value)
        }
        _ => {
            return Err(CtlError::BadArgs(
                "put command needs 1 argument and input from stdin or 2 arguments".to_string(),
            ))
        }
    };
    let request = PutRequest {
        key: key.into_bytes(),
        value,
        lease: match parsed.value("lease") {
            Some(id) => parse_lease_id(id).map_err(CtlError::BadArgs)?,
            None => LeaseId::NONE,
        },
        prev_kv: parsed.switch("prev-kv"),
        ignore_value: parsed.switch("ignore-value"),
        ignore_lease: parsed.switch("ignore-lease"),
    };
    let client = connect(global).await?;
    let (header, response) = timed(global, client.put(request)).await?;
    emit(&output::put(global.format, &header, &response))
}

async fn get(global: &Global, args: &[String]) -> Result<(), CtlError> {
    let parsed = parse_args(args, GET_FLAGS)?;
    let (key, range_end) =
        key_range(&parsed.positional, RangeFlags::from(&parsed)).map_err(CtlError::BadArgs)?;
    let (sort_order, sort_target) = sort_flags(&parsed).map_err(CtlError::BadArgs)?;
    let serializable = match parsed.value("consistency").unwrap_or("l") {
        "l" => false,
        "s" => true,
        other => {
            return Err(CtlError::BadArgs(format!(
                "unknown consistency flag {other:?}"
            )))
        }
    };
    let request = RangeRequest {
        key,
        range_end,
        limit: parsed.integer("limit", 0).map_err(CtlError::BadArgs)?,
        revision: Revision(parsed.integer("rev", 0).map_err(CtlError::BadArgs)?),
        sort_order,
        sort_target,
        serializable,
        keys_only: parsed.switch("keys-only"),
        count_only: parsed.switch("count-only"),
        ..RangeRequest::default()
    };
    let client = connect(global).await?;
    let (header, response) = timed(global, client.range(request)).await?;
    let print = GetPrint {
        count_only: parsed.switch("count-only"),
        value_only: parsed.switch("print-value-only"),
    };
    emit(&output::get(global.format, &header, &response, print))
}

async fn del(global: &Global, args: &[String]) -> Result<(), CtlError> {
    let parsed = parse_args(args, DEL_FLAGS)?;
    let (key, range_end) =
        key_range(&parsed.positional, RangeFlags::from(&parsed)).map_err(CtlError::BadArgs)?;
    let request = DeleteRangeRequest {
        key,
        range_end,
        prev_kv: parsed.switch("prev-kv"),
    };
    let client = connect(global).await?;
    let (header, response) = timed(global, client.delete_range(request)).await?;
    emit(&output::del(global.format, &header, &response))
}

async fn txn(global: &Global, args: &[String]) -> Result<(), CtlError> {
    let interactive_flag = FlagSpec {
        name: "interactive",
        short: Some('i'),
        takes_value: false,
    };
    let parsed = parse_args(args, &[interactive_flag])?;
    if !parsed.positional.is_empty() {
        return Err(CtlError::BadArgs(
            "txn command does not accept argument".to_string(),
        ));
    }
    let text = if parsed.switch("interactive") {
        read_interactive_txn()?
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| CtlError::Failed(format!("reading the txn from stdin: {error}")))?;
        text
    };
    let request = parse_txn(&text).map_err(CtlError::BadArgs)?;
    let client = connect(global).await?;
    let (header, response) = timed(global, client.txn(request)).await?;
    emit(&output::txn(global.format, &header, &response))
}

/// etcdctl's interactive txn: a prompt before each section, read until a blank line.
fn read_interactive_txn() -> Result<String, CtlError> {
    let mut text = String::new();
    let stdin = std::io::stdin();
    for prompt in [
        "compares:",
        "success requests (get, put, del):",
        "failure requests (get, put, del):",
    ] {
        emit(&format!("{prompt}\n"))?;
        loop {
            let mut line = String::new();
            let read = stdin
                .read_line(&mut line)
                .map_err(|error| CtlError::Failed(format!("reading stdin: {error}")))?;
            if read == 0 || line.trim().is_empty() {
                break;
            }
            text.push_str(&line);
        }
        text.push('\n');
    }
    Ok(text)
}

async fn watch(global: &Global, args: &[String]) -> Result<(), CtlError> {
    let parsed = parse_args(args, WATCH_FLAGS)?;
    let flags = RangeFlags {
        prefix: parsed.switch("prefix"),
        from_key: false,
    };
    let (key, range_end) = key_range(&parsed.positional, flags).map_err(CtlError::BadArgs)?;
    let request = WatchRequest {
        key,
        range_end,
        start_revision: Revision(parsed.integer("rev", 0).map_err(CtlError::BadArgs)?),
        prev_kv: parsed.switch("prev-kv"),
        ..WatchRequest::default()
    };
    let client = connect(global).await?;
    let mut watch = timed(global, client.watch(request)).await?;
    while let Some(message) = watch.next().await {
        match message.map_err(CtlError::from)? {
            WatchMessage::Events(header, events) => {
                emit(&output::watch(global.format, &header, &events, false, 0))?;
            }
            WatchMessage::Canceled {
                header,
                compact_revision,
            } => {
                if global.format == Format::Json {
                    emit(&output::watch(
                        global.format,
                        &header,
                        &[],
                        true,
                        compact_revision.0,
                    ))?;
                }
                let reason = if compact_revision.0 > 0 {
                    format!(
                        "watch was canceled (etcdserver: mvcc: required revision has been compacted, compact revision {compact_revision})"
                    )
                } else {
                    "watch was canceled".to_string()
                };
                return Err(CtlError::Interrupted(reason));
            }
        }
    }
    Err(CtlError::Interrupted(
        "watch is canceled by the server".to_string(),
    ))
}

async fn lease(global: &Global, args: &[String]) -> Result<(), CtlError> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(CtlError::BadArgs(
            "lease needs a subcommand: grant, revoke, timetolive, list, keep-alive".to_string(),
        ));
    };
    match sub.as_str() {
        "grant" => {
            let parsed = parse_args(rest, &[])?;
            let [ttl] = parsed.positional.as_slice() else {
                return Err(CtlError::BadArgs(
                    "lease grant command needs TTL argument".to_string(),
                ));
            };
            let ttl: i64 = ttl
                .parse()
                .map_err(|_| CtlError::BadArgs(format!("bad TTL ({ttl:?})")))?;
            let client = connect(global).await?;
            let grant = timed(global, client.lease_grant(LeaseId::NONE, ttl)).await?;
            emit(&match global.format {
                Format::Simple => format!(
                    "lease {} granted with TTL({}s)\n",
                    grant.id, grant.ttl_seconds
                ),
                Format::Json => {
                    Object::new()
                        .field("header", output::header_json(&grant.header))
                        .int("ID", grant.id.0)
                        .int("TTL", grant.ttl_seconds)
                        .build()
                        .render()
                        + "\n"
                }
            })
        }
        "revoke" => {
            let id = one_lease_id(rest, "lease revoke", &[])?.0;
            let client = connect(global).await?;
            let header = timed(global, client.lease_revoke(id)).await?;
            emit(&match global.format {
                Format::Simple => format!("lease {id} revoked\n"),
                Format::Json => {
                    Object::new()
                        .field("header", output::header_json(&header))
                        .build()
                        .render()
                        + "\n"
                }
            })
        }
        "timetolive" => {
            let (id, parsed) = one_lease_id(rest, "lease timetolive", &[switch("keys")])?;
            let keys = parsed.switch("keys");
            let client = connect(global).await?;
            let ttl = timed(global, client.lease_time_to_live(id, keys)).await?;
            emit(&match global.format {
                Format::Simple if ttl.ttl_seconds == -1 => {
                    format!("lease {id} already expired\n")
                }
                Format::Simple => {
                    let mut text = format!(
                        "lease {id} granted with TTL({}s), remaining({}s)",
                        ttl.granted_ttl_seconds, ttl.ttl_seconds
                    );
                    if keys {
                        let names: Vec<String> = ttl
                            .keys
                            .iter()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .collect();
                        text.push_str(&format!(", attached keys([{}])", names.join(" ")));
                    }
                    text + "\n"
                }
                Format::Json => {
                    Object::new()
                        .field("header", output::header_json(&ttl.header))
                        .int("ID", ttl.id.0)
                        .int("TTL", ttl.ttl_seconds)
                        .int("grantedTTL", ttl.granted_ttl_seconds)
                        .array(
                            "keys",
                            ttl.keys
                                .iter()
                                .map(|k| Json::String(output::base64(k)))
                                .collect(),
                        )
                        .build()
                        .render()
                        + "\n"
                }
            })
        }
        "list" => {
            parse_args(rest, &[])?;
            let client = connect(global).await?;
            let (header, ids) = timed(global, client.lease_leases()).await?;
            emit(&match global.format {
                Format::Simple => {
                    let mut text = format!("found {} leases\n", ids.len());
                    for id in &ids {
                        text.push_str(&format!("{id}\n"));
                    }
                    text
                }
                Format::Json => {
                    Object::new()
                        .field("header", output::header_json(&header))
                        .array(
                            "leases",
                            ids.iter()
                                .map(|id| Object::new().int("ID", id.0).build())
                                .collect(),
                        )
                        .build()
                        .render()
                        + "\n"
                }
            })
        }
        "keep-alive" | "keepalive" => {
            let (id, parsed) = one_lease_id(rest, "lease keep-alive", &[switch("once")])?;
            let client = connect(global).await?;
            keep_alive(global, &client, id, parsed.switch("once")).await
        }
        other => Err(CtlError::BadArgs(format!(
            "unknown lease subcommand {other:?}"
        ))),
    }
}

fn one_lease_id(
    args: &[String],
    command: &str,
    specs: &[FlagSpec],
) -> Result<(LeaseId, Parsed), CtlError> {
    let parsed = parse_args(args, specs)?;
    let [id] = parsed.positional.as_slice() else {
        return Err(CtlError::BadArgs(format!(
            "{command} command needs 1 argument"
        )));
    };
    let id = parse_lease_id(id).map_err(CtlError::BadArgs)?;
    Ok((id, parsed))
}

/// Renews `id` every third of its TTL (as etcd's client does) until it is gone, or
/// once.
async fn keep_alive(
    global: &Global,
    client: &Client,
    id: LeaseId,
    once: bool,
) -> Result<(), CtlError> {
    loop {
        let (header, ttl) = timed(global, client.lease_keep_alive(id)).await?;
        if ttl <= 0 {
            emit(&format!("lease {id} expired or revoked.\n"))?;
            return Err(CtlError::Failed(format!("lease {id} expired or revoked")));
        }
        emit(&match global.format {
            Format::Simple => format!("lease {id} keepalived with TTL({ttl})\n"),
            Format::Json => {
                Object::new()
                    .field("header", output::header_json(&header))
                    .int("ID", id.0)
                    .int("TTL", ttl)
                    .build()
                    .render()
                    + "\n"
            }
        })?;
        if once {
            return Ok(());
        }
        let interval = Duration::from_millis((ttl as u64 * 1000 / 3).max(500));
        glommio::timer::sleep(interval).await;
    }
}

async fn compaction(global: &Global, args: &[String]) -> Result<(), CtlError> {
    let parsed = parse_args(args, &[switch("physical")])?;
    let [revision] = parsed.positional.as_slice() else {
        return Err(CtlError::BadArgs(
            "compaction command needs 1 argument".to_string(),
        ));
    };
    let revision: i64 = revision
        .parse()
        .map_err(|_| CtlError::BadArgs(format!("bad revision ({revision:?})")))?;
    let client = connect(global).await?;
    timed(
        global,
        client.compact(Revision(revision), parsed.switch("physical")),
    )
    .await?;
    emit(&format!("compacted revision {revision}\n"))
}

async fn endpoint(global: &Global, args: &[String]) -> Result<(), CtlError> {
    match args.first().map(String::as_str) {
        Some("status") => {}
        other => {
            return Err(CtlError::BadArgs(format!(
                "unknown endpoint subcommand {other:?} (corekvctl supports: endpoint status)"
            )))
        }
    }
    parse_args(&args[1..], &[])?;
    let mut statuses = Vec::new();
    let mut failures = Vec::new();
    for endpoint in &global.endpoints {
        let single = Global {
            endpoints: vec![endpoint.clone()],
            ..global.clone()
        };
        let result = match connect(&single).await {
            Ok(client) => timed(global, client.status()).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(status) => statuses.push((endpoint.clone(), status)),
            Err(error) => failures.push(format!(
                "failed to get the status of endpoint {endpoint} ({})",
                match &error {
                    CtlError::BadArgs(m)
                    | CtlError::Connect(m)
                    | CtlError::Failed(m)
                    | CtlError::Interrupted(m) => m.clone(),
                }
            )),
        }
    }
    if !statuses.is_empty() {
        emit(&output::status(global.format, &statuses))?;
    }
    match (failures.is_empty(), statuses.is_empty()) {
        (true, _) => Ok(()),
        (false, true) => Err(CtlError::Connect(failures.join("; "))),
        (false, false) => Err(CtlError::Failed(failures.join("; "))),
    }
}
