//! What corekvctl prints, in etcdctl's two main shapes:
//!
//! * `simple` (etcdctl's default): keys and values on their own lines, `OK` for puts,
//!   counts for deletes, `SUCCESS`/`FAILURE` for txns, event type lines for watches.
//! * `json`: the etcd v3 API's JSON as etcdctl prints it (Go's `encoding/json` of the
//!   protobuf structs): snake_case header fields, keys and values base64, zero values
//!   omitted (`omitempty`), lease ids in decimal.
//!
//! Where etcdctl refuses a combination, corekvctl prints something useful instead:
//! `get --count-only` in simple form prints the count (etcdctl insists on `-w fields`).
//!
//! Every printer returns the text; the caller writes it, so tests can check shapes.

use std::fmt::Write;

use corekv_engine::{
    DeleteRangeResponse, Event, EventKind, KeyValue, PutResponse, RangeResponse, ResponseOp,
    TxnResponse,
};
use corekv_net::protocol::{Header, StatusResponse};

/// Output format (`-w`, `--write-out`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// etcdctl's `simple`.
    Simple,
    /// etcdctl's `json`.
    Json,
}

impl Format {
    /// Parses a `--write-out` value.
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unsupported output format {other:?} (corekvctl prints simple or json)"
            )),
        }
    }
}

/// A JSON value, built in field order.
#[derive(Clone, Debug)]
pub enum Json {
    /// An object; fields in order.
    Object(Vec<(&'static str, Json)>),
    /// An array.
    Array(Vec<Json>),
    /// A string.
    String(String),
    /// A signed number.
    Int(i64),
    /// An unsigned number.
    Uint(u64),
    /// A boolean.
    Bool(bool),
}

/// Builds a JSON object, dropping zero values as Go's `omitempty` does.
#[derive(Debug, Default)]
pub struct Object(Vec<(&'static str, Json)>);

impl Object {
    /// An empty object.
    pub fn new() -> Object {
        Object::default()
    }

    /// Adds a field unconditionally.
    pub fn field(mut self, name: &'static str, value: Json) -> Object {
        self.0.push((name, value));
        self
    }

    /// Adds a signed number unless it is 0.
    pub fn int(self, name: &'static str, value: i64) -> Object {
        if value == 0 {
            self
        } else {
            self.field(name, Json::Int(value))
        }
    }

    /// Adds an unsigned number unless it is 0.
    pub fn uint(self, name: &'static str, value: u64) -> Object {
        if value == 0 {
            self
        } else {
            self.field(name, Json::Uint(value))
        }
    }

    /// Adds `true`; omits `false`.
    pub fn flag(self, name: &'static str, value: bool) -> Object {
        if value {
            self.field(name, Json::Bool(true))
        } else {
            self
        }
    }

    /// Adds bytes as base64 unless empty.
    pub fn bytes(self, name: &'static str, value: &[u8]) -> Object {
        if value.is_empty() {
            self
        } else {
            self.field(name, Json::String(base64(value)))
        }
    }

    /// Adds an array unless empty.
    pub fn array(self, name: &'static str, items: Vec<Json>) -> Object {
        if items.is_empty() {
            self
        } else {
            self.field(name, Json::Array(items))
        }
    }

    /// The finished object.
    pub fn build(self) -> Json {
        Json::Object(self.0)
    }
}

impl Json {
    /// Compact JSON text, as etcdctl prints it (one line).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(out, name);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::String(text) => write_string(out, text),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Uint(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding (Go's encoding of `[]byte` in JSON).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

// ---- JSON shapes of etcd's messages --------------------------------------------------

/// etcd's `ResponseHeader`.
pub fn header_json(header: &Header) -> Json {
    Object::new()
        .uint("cluster_id", header.cluster_id)
        .uint("member_id", header.member_id)
        .int("revision", header.revision.0)
        .uint("raft_term", header.raft_term)
        .build()
}

/// etcd's `mvccpb.KeyValue`.
pub fn kv_json(kv: &KeyValue) -> Json {
    Object::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision.0)
        .int("mod_revision", kv.mod_revision.0)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease.0)
        .build()
}

fn kvs_json(kvs: &[KeyValue]) -> Vec<Json> {
    kvs.iter().map(kv_json).collect()
}

fn range_json(header: Option<&Header>, range: &RangeResponse) -> Object {
    let object = match header {
        Some(header) => Object::new().field("header", header_json(header)),
        None => Object::new(),
    };
    object
        .array("kvs", kvs_json(&range.kvs))
        .flag("more", range.more)
        .int("count", range.count)
}

fn put_json(header: Option<&Header>, put: &PutResponse) -> Object {
    let object = match header {
        Some(header) => Object::new().field("header", header_json(header)),
        None => Object::new(),
    };
    match &put.prev_kv {
        Some(kv) => object.field("prev_kv", kv_json(kv)),
        None => object,
    }
}

fn delete_json(header: Option<&Header>, delete: &DeleteRangeResponse) -> Object {
    let object = match header {
        Some(header) => Object::new().field("header", header_json(header)),
        None => Object::new(),
    };
    object
        .int("deleted", delete.deleted)
        .array("prev_kvs", kvs_json(&delete.prev_kvs))
}

fn txn_json(header: Option<&Header>, txn: &TxnResponse) -> Object {
    let object = match header {
        Some(header) => Object::new().field("header", header_json(header)),
        None => Object::new(),
    };
    let responses = txn
        .responses
        .iter()
        .map(|op| {
            let (name, body) = match op {
                ResponseOp::Range(range) => ("response_range", range_json(None, range)),
                ResponseOp::Put(put) => ("response_put", put_json(None, put)),
                ResponseOp::DeleteRange(delete) => {
                    ("response_delete_range", delete_json(None, delete))
                }
                ResponseOp::Txn(txn) => ("response_txn", txn_json(None, txn)),
            };
            Object::new()
                .field("Response", Object::new().field(name, body.build()).build())
                .build()
        })
        .collect();
    object
        .flag("succeeded", txn.succeeded)
        .array("responses", responses)
}

fn event_json(event: &Event) -> Json {
    let object = Object::new().int(
        "type",
        match event.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        },
    );
    let object = object.field("kv", kv_json(&event.kv));
    match &event.prev_kv {
        Some(prev) => object.field("prev_kv", kv_json(prev)),
        None => object,
    }
    .build()
}

// ---- printers ------------------------------------------------------------------------

fn line(out: &mut String, bytes: &[u8]) {
    out.push_str(&String::from_utf8_lossy(bytes));
    out.push('\n');
}

fn simple_kv(out: &mut String, kv: &KeyValue, value_only: bool) {
    if !value_only {
        line(out, &kv.key);
    }
    line(out, &kv.value);
}

/// `get`.
pub fn get(format: Format, header: &Header, range: &RangeResponse, opts: GetPrint) -> String {
    match format {
        Format::Json => range_json(Some(header), range).build().render() + "\n",
        Format::Simple => {
            let mut out = String::new();
            if opts.count_only {
                let _ = writeln!(out, "{}", range.count);
            }
            for kv in &range.kvs {
                simple_kv(&mut out, kv, opts.value_only);
            }
            out
        }
    }
}

/// How `get` prints in simple format.
#[derive(Clone, Copy, Debug, Default)]
pub struct GetPrint {
    /// `--count-only`: print the count.
    pub count_only: bool,
    /// `--print-value-only`.
    pub value_only: bool,
}

/// `put`.
pub fn put(format: Format, header: &Header, put: &PutResponse) -> String {
    match format {
        Format::Json => put_json(Some(header), put).build().render() + "\n",
        Format::Simple => {
            let mut out = "OK\n".to_string();
            if let Some(kv) = &put.prev_kv {
                simple_kv(&mut out, kv, false);
            }
            out
        }
    }
}

/// `del`.
pub fn del(format: Format, header: &Header, delete: &DeleteRangeResponse) -> String {
    match format {
        Format::Json => delete_json(Some(header), delete).build().render() + "\n",
        Format::Simple => {
            let mut out = format!("{}\n", delete.deleted);
            for kv in &delete.prev_kvs {
                simple_kv(&mut out, kv, false);
            }
            out
        }
    }
}

/// `txn`.
pub fn txn(format: Format, header: &Header, txn: &TxnResponse) -> String {
    match format {
        Format::Json => txn_json(Some(header), txn).build().render() + "\n",
        Format::Simple => {
            let mut out = String::new();
            simple_txn(&mut out, header, txn);
            out
        }
    }
}

fn simple_txn(out: &mut String, header: &Header, txn: &TxnResponse) {
    out.push_str(if txn.succeeded {
        "SUCCESS\n"
    } else {
        "FAILURE\n"
    });
    for op in &txn.responses {
        out.push('\n');
        match op {
            ResponseOp::Range(range) => {
                out.push_str(&get(Format::Simple, header, range, GetPrint::default()))
            }
            ResponseOp::Put(response) => out.push_str(&put(Format::Simple, header, response)),
            ResponseOp::DeleteRange(delete) => out.push_str(&del(Format::Simple, header, delete)),
            ResponseOp::Txn(nested) => simple_txn(out, header, nested),
        }
    }
}

/// One watch response (`Created`/`Canceled` flags as etcd's `WatchResponse`).
pub fn watch(
    format: Format,
    header: &Header,
    events: &[Event],
    canceled: bool,
    compact_revision: i64,
) -> String {
    match format {
        Format::Json => {
            Object::new()
                .field("Header", header_json(header))
                .field(
                    "Events",
                    Json::Array(events.iter().map(event_json).collect()),
                )
                .field("CompactRevision", Json::Int(compact_revision))
                .field("Canceled", Json::Bool(canceled))
                .field("Created", Json::Bool(false))
                .build()
                .render()
                + "\n"
        }
        Format::Simple => {
            let mut out = String::new();
            for event in events {
                out.push_str(match event.kind {
                    EventKind::Put => "PUT\n",
                    EventKind::Delete => "DELETE\n",
                });
                if let Some(prev) = &event.prev_kv {
                    simple_kv(&mut out, prev, false);
                }
                simple_kv(&mut out, &event.kv, false);
            }
            out
        }
    }
}

/// `endpoint status` for every endpoint: `(endpoint, status)`.
pub fn status(format: Format, statuses: &[(String, StatusResponse)]) -> String {
    match format {
        Format::Json => {
            let items = statuses
                .iter()
                .map(|(endpoint, status)| {
                    Object::new()
                        .field("Endpoint", Json::String(endpoint.clone()))
                        .field(
                            "Status",
                            Object::new()
                                .field("header", header_json(&status.header))
                                .field("version", Json::String(status.version.clone()))
                                .uint("dbSize", status.db_size)
                                .uint("leader", status.leader)
                                .uint("raftIndex", status.raft_index)
                                .uint("raftTerm", status.raft_term)
                                .uint("raftAppliedIndex", status.raft_applied_index)
                                .build(),
                        )
                        .build()
                })
                .collect();
            Json::Array(items).render() + "\n"
        }
        Format::Simple => {
            let mut out = String::new();
            for (endpoint, status) in statuses {
                let _ = writeln!(
                    out,
                    "{}, {:x}, {}, {}, {}, false, {}, {}, {}, ",
                    endpoint,
                    status.header.member_id,
                    status.version,
                    human_bytes(status.db_size),
                    status.leader == status.header.member_id && status.leader != 0,
                    status.raft_term,
                    status.raft_index,
                    status.raft_applied_index,
                );
            }
            out
        }
    }
}

/// Bytes as etcdctl prints a DB size (go-humanize, SI units): `25 kB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).ln() / 1000f64.ln()).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = bytes as f64 / 1000f64.powi(exponent as i32);
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

#[cfg(test)]
mod tests {
    use corekv_engine::{LeaseId, Revision};

    use super::*;

    /// Base64 matches Go's standard encoding, padding included.
    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"bar"), "YmFy");
    }

    /// A get prints as etcdctl's JSON: header first, base64 key and value, zero lease
    /// and `more` omitted.
    #[test]
    fn get_json_shape() {
        let header = Header {
            cluster_id: 1,
            member_id: 2,
            revision: Revision(3),
            raft_term: 4,
        };
        let range = RangeResponse {
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                create_revision: Revision(2),
                mod_revision: Revision(3),
                version: 2,
                value: b"bar".to_vec(),
                lease: LeaseId::NONE,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            get(Format::Json, &header, &range, GetPrint::default()),
            r#"{"header":{"cluster_id":1,"member_id":2,"revision":3,"raft_term":4},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFy"}],"count":1}"#.to_string() + "\n"
        );
        assert_eq!(
            get(Format::Simple, &header, &range, GetPrint::default()),
            "foo\nbar\n"
        );
    }

    /// Strings escape quotes, backslashes and control characters.
    #[test]
    fn json_escapes() {
        assert_eq!(
            Json::String("a\"b\\c\n\u{1}".into()).render(),
            r#""a\"b\\c\n\u0001""#
        );
    }

    /// DB sizes print like go-humanize.
    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(25_000), "25 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
