//! Masking etcdctl and JSON gateway output so that two servers' transcripts can be
//! compared byte for byte.
//!
//! What two correct servers may legitimately print differently, and only that, is
//! replaced with a placeholder:
//!
//! - member, cluster and lease ids: `<ID1>`, `<ID2>`, ... numbered in order of first
//!   appearance, in decimal (JSON, fields) and hex (simple, table) alike, so the same id
//!   printed twice, in either base, maps to the same placeholder. Once seen, an id is
//!   replaced anywhere it appears again (in a key such as `mylock/<ID3>`, in arguments);
//! - raft terms (`<TERM>`), raft indexes (`<INDEX>`): etcd's log holds configuration
//!   entries that another implementation need not have;
//! - timings (`<TOOK>`, `<TS>`), the remaining TTL of a lease (`<REMAINING>`, it ticks),
//!   server version strings (`<VERSION>`), database sizes (`<SIZE>`), hashes (`<HASH>`,
//!   etcd's hashkv hashes its own storage layout), etcdctl's per-run client id (`<UUID>`),
//!   Go panic addresses (`0x?`);
//! - the addresses and paths of the server under test, registered with
//!   [`Masker::literal`] (`<ENDPOINT>`, `<PEER>`, `<SCRATCH>`).
//!
//! Revisions, versions of keys, values, counts, error texts and exit codes are never
//! masked: identical scenarios on fresh servers must agree on them exactly. A zero id or
//! term is left as is (etcd sends zeros in the headers nested in txn responses).
//!
//! Tables are normalized first (cells trimmed, borders shortened): masking changes the
//! width of a cell, and column widths follow from the cells anyway.

/// One text token after a prefix.
#[derive(Clone, Copy, Debug)]
enum Token {
    /// Decimal digits, possibly inside quotes (the JSON gateway quotes 64-bit integers).
    Digits,
    /// Lowercase hex digits.
    Hex,
    /// A JSON string: the part between the quotes is the token.
    Quoted,
    /// A JSON string holding a dotted version ("3.4.23"); the gateway quotes a key's
    /// version number too ("version":"2"), which must stay.
    DottedQuoted,
    /// A JSON string or number.
    Scalar,
    /// Up to the next whitespace.
    Word,
    /// Up to the end of the line.
    Rest,
    /// A UUID (hex digits and dashes).
    Uuid,
}

/// What a matched token becomes.
#[derive(Clone, Copy, Debug)]
enum Class {
    /// An id in decimal; 0 stays 0.
    DecimalId,
    /// An id in hex.
    HexId,
    /// A fixed placeholder.
    Fixed(&'static str),
    /// A fixed placeholder, except that 0 stays 0.
    NonZero(&'static str),
}

/// Prefix, token after it, what the token becomes, and text that must follow the token.
type Rule = (&'static str, Token, Class, &'static str);

// One rule per line reads as a table; rustfmt would break most of them over five lines.
#[rustfmt::skip]
const RULES: &[Rule] = &[
    // JSON: etcdctl -w json (Go's encoding/json) and the gateway (grpc-gateway).
    ("\"cluster_id\":", Token::Digits, Class::DecimalId, ""),
    ("\"member_id\":", Token::Digits, Class::DecimalId, ""),
    ("\"leader\":", Token::Digits, Class::DecimalId, ""),
    ("\"ID\":", Token::Digits, Class::DecimalId, ""),
    ("\"id\":", Token::Digits, Class::DecimalId, ""),
    ("\"lease\":", Token::Digits, Class::DecimalId, ""),
    ("\"raft_term\":", Token::Digits, Class::NonZero("<TERM>"), ""),
    ("\"raftTerm\":", Token::Digits, Class::NonZero("<TERM>"), ""),
    ("\"raftIndex\":", Token::Digits, Class::Fixed("<INDEX>"), ""),
    ("\"raftAppliedIndex\":", Token::Digits, Class::Fixed("<INDEX>"), ""),
    ("\"dbSize\":", Token::Digits, Class::Fixed("<SIZE>"), ""),
    ("\"dbSizeInUse\":", Token::Digits, Class::Fixed("<SIZE>"), ""),
    ("\"hash\":", Token::Digits, Class::Fixed("<HASH>"), ""),
    // etcdctl's timetolive JSON names the remaining TTL "ttl"; the gateway's names it
    // "TTL", right before "grantedTTL" (a grant's "TTL" is the granted one and stays).
    ("\"ttl\":", Token::Digits, Class::Fixed("<REMAINING>"), ""),
    ("\"TTL\":", Token::Digits, Class::Fixed("<REMAINING>"), ",\"grantedTTL\""),
    // Dotted only: a key's "version" is a number (quoted by the gateway) and stays.
    ("\"version\":", Token::DottedQuoted, Class::Fixed("<VERSION>"), ""),
    ("\"etcdserver\":", Token::DottedQuoted, Class::Fixed("<VERSION>"), ""),
    ("\"etcdcluster\":", Token::DottedQuoted, Class::Fixed("<VERSION>"), ""),
    ("\"ts\":", Token::Scalar, Class::Fixed("<TS>"), ""),
    ("\"took\":", Token::Scalar, Class::Fixed("<TOOK>"), ""),
    ("\"size\":", Token::Quoted, Class::Fixed("<SIZE>"), ""),
    // etcdctl -w fields.
    ("\"ClusterID\" : ", Token::Digits, Class::DecimalId, ""),
    ("\"MemberID\" : ", Token::Digits, Class::DecimalId, ""),
    ("\"Leader\" : ", Token::Digits, Class::DecimalId, ""),
    ("\"ID\" : ", Token::Digits, Class::DecimalId, ""),
    ("\"Lease\" : ", Token::Digits, Class::DecimalId, ""),
    ("\"PrevLease\" : ", Token::Digits, Class::DecimalId, ""),
    ("\"RaftTerm\" : ", Token::Digits, Class::NonZero("<TERM>"), ""),
    ("\"RaftIndex\" : ", Token::Digits, Class::Fixed("<INDEX>"), ""),
    ("\"RaftAppliedIndex\" : ", Token::Digits, Class::Fixed("<INDEX>"), ""),
    ("\"DBSize\" : ", Token::Digits, Class::Fixed("<SIZE>"), ""),
    ("\"DBSizeInUse\" : ", Token::Digits, Class::Fixed("<SIZE>"), ""),
    ("\"Hash\" : ", Token::Digits, Class::Fixed("<HASH>"), ""),
    ("\"Version\" : ", Token::DottedQuoted, Class::Fixed("<VERSION>"), ""),
    ("\"Took\" : ", Token::Rest, Class::Fixed("<TOOK>"), ""),
    // etcdctl simple output.
    ("took = ", Token::Word, Class::Fixed("<TOOK>"), ""),
    ("remaining(", Token::Digits, Class::Fixed("<REMAINING>"), "s)"),
    ("lease ", Token::Hex, Class::HexId, " "),
    // etcdctl's client logs name a per-run client.
    ("endpoint://client-", Token::Uuid, Class::Fixed("<UUID>"), "/"),
];

/// Masks one server's output, step after step, remembering the ids it has seen.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    literals: Vec<(String, String)>,
    ids: Vec<u64>,
    lease_key_prefixes: Vec<String>,
}

impl Masker {
    /// A masker that knows no literals and no ids yet.
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Replaces every occurrence of `text` with `placeholder` (an address or path of the
    /// server under test). Longer literals are replaced first.
    pub fn literal(&mut self, text: &str, placeholder: &str) {
        assert!(!text.is_empty(), "an empty literal would match everywhere");
        self.literals
            .push((text.to_string(), placeholder.to_string()));
        self.literals
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// Lines `<prefix><hex>` name a key holding a lease id in hex, as etcdctl lock and
    /// elect print them (`mylock/694d7c9d2ec1b40a`): the hex is masked as an id.
    pub fn lease_keys(&mut self, prefix: &str) {
        self.lease_key_prefixes.push(prefix.to_string());
    }

    /// The placeholder of `id`, allocating the next one for an id not seen before.
    pub fn id(&mut self, id: u64) -> String {
        let index = match self.ids.iter().position(|&known| known == id) {
            Some(index) => index,
            None => {
                self.ids.push(id);
                self.ids.len() - 1
            }
        };
        format!("<ID{}>", index + 1)
    }

    /// `text` with everything that may legitimately differ replaced.
    pub fn mask(&mut self, text: &str) -> String {
        let mut text = text.to_string();
        for (literal, placeholder) in &self.literals {
            text = text.replace(literal.as_str(), placeholder);
        }
        if text.contains("goroutine ") {
            text = mask_addresses(&text);
        }
        let lines: Vec<String> = text.split('\n').map(normalize_table_line).collect();
        let mut masked = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            let next = lines.get(index + 1).map_or("", String::as_str);
            let line = self.mask_line(line, next);
            masked.push(self.mask_tokens(&line));
        }
        self.mask_known_ids(&masked.join("\n"))
    }

    /// Whole-line shapes: tables and etcdctl's comma-separated simple output.
    fn mask_line(&mut self, line: &str, next: &str) -> String {
        if let Some(cells) = table_cells(line) {
            let masked = self.mask_row(&cells);
            return format!("| {} |", masked.join(" | "));
        }
        let fields: Vec<&str> = line.split(", ").collect();
        if fields.len() > 1 {
            let masked = self.mask_row(&fields);
            if masked.iter().zip(&fields).any(|(a, b)| a != b) {
                return masked.join(", ");
            }
        }
        if line.len() == 16 && is_hex(line) {
            // `lease list`: one %016x id per line.
            return self.hex_id(line).unwrap_or_else(|| line.to_string());
        }
        for prefix in self.lease_key_prefixes.clone() {
            if let Some(rest) = line.strip_prefix(prefix.as_str()) {
                if is_hex(rest) {
                    if let Some(id) = self.hex_id(rest) {
                        return format!("{prefix}{id}");
                    }
                }
            }
        }
        if let Some(ids) = line.strip_prefix("Leadership transferred from ") {
            // move-leader: both ids in types.ID's %x.
            if let Some((from, to)) = ids.split_once(" to ") {
                if let (Some(from), Some(to)) = (self.hex_id(from), self.hex_id(to)) {
                    return format!("Leadership transferred from {from} to {to}");
                }
            }
        }
        if let Some(rest) = line.strip_prefix("\"TTL\" : ") {
            // -w fields timetolive: the remaining TTL comes right before the granted one.
            if next.starts_with("\"GrantedTTL\"") && is_digits(rest) {
                return "\"TTL\" : <REMAINING>".to_string();
            }
        }
        line.to_string()
    }

    /// A row of cells (table) or fields (simple output) of endpoint status, endpoint
    /// health, endpoint hashkv or member list.
    fn mask_row(&mut self, cells: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = cells.iter().map(|cell| cell.to_string()).collect();
        let is_bool = |cell: &str| cell == "true" || cell == "false";
        let on_endpoint = cells[0].contains("<ENDPOINT>");
        match cells.len() {
            // endpoint status: endpoint, id, version, db size, is leader, is learner,
            // raft term, raft index, raft applied index, errors.
            10 if on_endpoint && is_bool(cells[4]) && is_bool(cells[5]) => {
                if let Some(id) = self.hex_id(cells[1]) {
                    out[1] = id;
                }
                out[2] = "<VERSION>".to_string();
                out[3] = "<SIZE>".to_string();
                out[6] = "<TERM>".to_string();
                out[7] = "<INDEX>".to_string();
                out[8] = "<INDEX>".to_string();
            }
            // endpoint health table: endpoint, health, took, error.
            4 if on_endpoint && is_bool(cells[1]) => out[2] = "<TOOK>".to_string(),
            // endpoint hashkv: endpoint, hash.
            2 if on_endpoint && is_digits(cells[1]) => out[1] = "<HASH>".to_string(),
            // member list: id, status, name, peer addrs, client addrs, is learner.
            6 if cells[1] == "started" || cells[1] == "unstarted" => {
                if let Some(id) = self.hex_id(cells[0]) {
                    out[0] = id;
                }
            }
            _ => {}
        }
        out
    }

    fn hex_id(&mut self, text: &str) -> Option<String> {
        let id = u64::from_str_radix(text, 16).ok()?;
        Some(self.id(id))
    }

    fn mask_tokens(&mut self, line: &str) -> String {
        let mut line = line.to_string();
        if !self.lease_key_prefixes.is_empty() {
            line = self.mask_base64_lease_keys(&line);
        }
        for &(prefix, token, class, then) in RULES {
            line = self.mask_after(&line, prefix, token, class, then);
        }
        line
    }

    fn mask_after(
        &mut self,
        line: &str,
        prefix: &str,
        token: Token,
        class: Class,
        then: &str,
    ) -> String {
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(found) = rest.find(prefix) {
            let start = found + prefix.len();
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let (before, value, after) = split_token(rest, token);
            let followed = rest[before + value.len() + after..].starts_with(then);
            if value.is_empty() || !followed {
                continue;
            }
            let replacement = match class {
                Class::Fixed(placeholder) => Some(placeholder.to_string()),
                Class::NonZero(_) | Class::DecimalId if value == "0" => None,
                Class::DecimalId => value.parse().ok().map(|id| self.id(id)),
                Class::NonZero(placeholder) => Some(placeholder.to_string()),
                Class::HexId => self.hex_id(value),
            };
            if let Some(replacement) = replacement {
                out.push_str(&rest[..before]);
                out.push_str(&replacement);
                rest = &rest[before + value.len()..];
            }
        }
        out.push_str(rest);
        out
    }

    /// JSON output carries keys in base64: a key `<prefix><hex lease id>` (see
    /// [`Masker::lease_keys`]) becomes `"key":"base64:<prefix><IDn>"`.
    fn mask_base64_lease_keys(&mut self, line: &str) -> String {
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(found) = rest.find("\"key\":\"") {
            let start = found + "\"key\":\"".len();
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let end = rest.find('"').unwrap_or(rest.len());
            let decoded =
                base64_decode(&rest[..end]).and_then(|bytes| String::from_utf8(bytes).ok());
            let Some(key) = decoded else { continue };
            for prefix in self.lease_key_prefixes.clone() {
                if let Some(hex) = key.strip_prefix(prefix.as_str()).filter(|hex| is_hex(hex)) {
                    if let Some(id) = self.hex_id(hex) {
                        out.push_str(&format!("base64:{prefix}{id}"));
                        rest = &rest[end..];
                        break;
                    }
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Replaces ids already seen wherever they appear as a whole word, in decimal, %x
    /// and %016x. Only ids of at least 2^32: generated ids are that large, and a small
    /// number (a lease id a test chose, 1234) could be a revision or a value elsewhere.
    fn mask_known_ids(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (index, &id) in self.ids.iter().enumerate() {
            if id < 1 << 32 {
                continue;
            }
            let placeholder = format!("<ID{}>", index + 1);
            for form in [id.to_string(), format!("{id:x}"), format!("{id:016x}")] {
                text = replace_word(&text, &form, &placeholder);
            }
        }
        text
    }
}

/// Splits `text` into (bytes before the value, the value, bytes after it that belong to
/// the token) per `token`; an empty value means no match.
fn split_token(text: &str, token: Token) -> (usize, &str, usize) {
    let take = |start: usize, accept: &dyn Fn(char) -> bool| -> &str {
        let tail = &text[start..];
        let end = tail.find(|c: char| !accept(c)).unwrap_or(tail.len());
        &tail[..end]
    };
    match token {
        Token::Digits => {
            let quoted = text.starts_with('"');
            let start = usize::from(quoted);
            let value = take(start, &|c| c.is_ascii_digit());
            let closed = !quoted || text[start + value.len()..].starts_with('"');
            if closed {
                (start, value, start)
            } else {
                (0, "", 0)
            }
        }
        Token::Hex => (
            0,
            take(0, &|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            0,
        ),
        Token::Quoted | Token::Scalar if text.starts_with('"') => match text[1..].find('"') {
            Some(end) => (1, &text[1..1 + end], 1),
            None => (0, "", 0),
        },
        Token::Quoted => (0, "", 0),
        Token::DottedQuoted => match split_token(text, Token::Quoted) {
            (1, value, 1) if value.contains('.') => (1, value, 1),
            _ => (0, "", 0),
        },
        Token::Scalar => (
            0,
            take(0, &|c| c.is_ascii_digit() || "+-.eE".contains(c)),
            0,
        ),
        Token::Word => (0, take(0, &|c| !c.is_whitespace()), 0),
        Token::Rest => (0, text, 0),
        Token::Uuid => (0, take(0, &|c| c.is_ascii_hexdigit() || c == '-'), 0),
    }
}

/// A table border becomes `+`; a table row gets its cells trimmed.
fn normalize_table_line(line: &str) -> String {
    if line.len() > 1 && line.starts_with('+') && line.chars().all(|c| c == '+' || c == '-') {
        return "+".to_string();
    }
    match table_cells(line) {
        Some(cells) => format!("| {} |", cells.join(" | ")),
        None => line.to_string(),
    }
}

fn table_cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// Go panic traces: pointers and program counters differ from run to run.
fn mask_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("0x") {
        out.push_str(&rest[..found + 2]);
        rest = &rest[found + 2..];
        let end = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        if end > 0 {
            out.push('?');
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn replace_word(text: &str, word: &str, placeholder: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    while let Some(found) = rest.find(word) {
        let before = if found == 0 {
            out.chars().last()
        } else {
            rest[..found].chars().last()
        };
        let after = rest[found + word.len()..].chars().next();
        out.push_str(&rest[..found]);
        if is_word(before) || is_word(after) {
            out.push_str(word);
        } else {
            out.push_str(placeholder);
        }
        rest = &rest[found + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Standard base64 with padding, as Go's encoding/json writes []byte; `None` if `text`
/// is not that.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if text.len() % 4 != 0 {
        return None;
    }
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 {
            return None;
        }
        let mut bits = 0u32;
        for &c in &chunk[..4 - padding] {
            let value = ALPHABET.iter().position(|&a| a == c)?;
            bits = bits << 6 | value as u32;
        }
        bits <<= 6 * padding;
        let decoded = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        bytes.extend_from_slice(&decoded[..3 - padding]);
    }
    Some(bytes)
}

fn is_hex(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        let mut masker = Masker::new();
        masker.literal("127.0.0.1:22379", "<ENDPOINT>");
        masker.literal("127.0.0.1:22380", "<PEER>");
        masker
    }

    #[test]
    fn json_header_ids_map_to_placeholders_in_order_and_revisions_stay() {
        // The same id twice gets the same placeholder; revisions and zeros are kept.
        let text = r#"{"header":{"cluster_id":14443903163313418560,"member_id":11417610130673999598,"revision":4,"raft_term":2},"responses":[{"header":{"cluster_id":0,"revision":4}}],"leader":11417610130673999598}"#;
        assert_eq!(
            masker().mask(text),
            r#"{"header":{"cluster_id":<ID1>,"member_id":<ID2>,"revision":4,"raft_term":<TERM>},"responses":[{"header":{"cluster_id":0,"revision":4}}],"leader":<ID2>}"#
        );
    }

    #[test]
    fn a_lease_id_in_hex_and_decimal_is_one_placeholder() {
        // Granted in hex, listed in decimal JSON, then named inside a key and an argument.
        let mut masker = masker();
        assert_eq!(
            masker.mask("lease 1eeea1fd22308906 granted with TTL(100s)\n"),
            "lease <ID1> granted with TTL(100s)\n"
        );
        assert_eq!(
            masker.mask(r#"{"leases":[{"id":2228896974167378182}]}"#),
            r#"{"leases":[{"id":<ID1>}]}"#
        );
        assert_eq!(
            masker.mask("lock/1eeea1fd22308906 x 1eeea1fd22308906a"),
            "lock/<ID1> x 1eeea1fd22308906a"
        );
        masker.lease_keys("mylock/");
        assert_eq!(masker.mask("mylock/1cdea1fd223\n"), "mylock/<ID2>\n");
        // In JSON the key is base64 of "mylock/1eeea1fd22308906".
        assert_eq!(
            masker.mask(r#"{"key":"bXlsb2NrLzFlZWVhMWZkMjIzMDg5MDY=","value":"eA=="}"#),
            r#"{"key":"base64:mylock/<ID1>","value":"eA=="}"#
        );
    }

    #[test]
    fn endpoint_status_simple_table_and_fields_are_masked() {
        // Ids, version, size, term and indexes go; the endpoint becomes <ENDPOINT>.
        let mut masker = masker();
        assert_eq!(
            masker
                .mask("127.0.0.1:22379, 9e737febb6b99eee, 3.4.23, 20 kB, true, false, 2, 7, 7, \n"),
            "<ENDPOINT>, <ID1>, <VERSION>, <SIZE>, true, false, <TERM>, <INDEX>, <INDEX>, \n"
        );
        let table = "\
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| 127.0.0.1:22379 | 9e737febb6b99eee |  3.4.23 |   20 kB |      true |      false |         2 |          7 |                  7 |        |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
";
        assert_eq!(
            masker.mask(table),
            "+\n| ENDPOINT | ID | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |\n+\n| <ENDPOINT> | <ID1> | <VERSION> | <SIZE> | true | false | <TERM> | <INDEX> | <INDEX> |  |\n+\n"
        );
        assert_eq!(
            masker.mask("\"Version\" : \"3.4.23\"\n\"DBSize\" : 20480\n\"Leader\" : 11417610130673999598\n\"Version\" : 3\n"),
            "\"Version\" : \"<VERSION>\"\n\"DBSize\" : <SIZE>\n\"Leader\" : <ID1>\n\"Version\" : 3\n"
        );
    }

    #[test]
    fn timings_hashes_and_client_logs_are_masked() {
        // took, ts, hash, the client uuid and the remaining TTL differ run to run.
        let mut masker = masker();
        assert_eq!(
            masker.mask(
                "127.0.0.1:22379 is healthy: successfully committed proposal: took = 2.333744ms\n"
            ),
            "<ENDPOINT> is healthy: successfully committed proposal: took = <TOOK>\n"
        );
        assert_eq!(
            masker.mask(
                "127.0.0.1:22379, 3024743460\n| 127.0.0.1:22379 |   true | 2.242569ms |       |\n"
            ),
            "<ENDPOINT>, <HASH>\n| <ENDPOINT> | true | <TOOK> |  |\n"
        );
        assert_eq!(
            masker.mask(r#"{"level":"warn","ts":"2026-11-21T07:51:47.725Z","target":"endpoint://client-fe1f7379-9c09-4f5f-94d3-72a4f10ab570/127.0.0.1:22379","took":0.0021}"#),
            r#"{"level":"warn","ts":"<TS>","target":"endpoint://client-<UUID>/<ENDPOINT>","took":<TOOK>}"#
        );
        assert_eq!(
            masker.mask("lease 694d7c9d2ec1b40a granted with TTL(100s), remaining(99s), attached keys([a])\n\"TTL\" : 99\n\"GrantedTTL\" : 100\n\"TTL\" : 10\n"),
            "lease <ID1> granted with TTL(100s), remaining(<REMAINING>s), attached keys([a])\n\"TTL\" : <REMAINING>\n\"GrantedTTL\" : 100\n\"TTL\" : 10\n"
        );
    }

    #[test]
    fn gateway_json_quotes_64_bit_integers() {
        // grpc-gateway prints int64 as strings; the quotes stay, the ids go.
        assert_eq!(
            masker().mask(r#"{"header":{"cluster_id":"14443903163313418560","member_id":"11417610130673999598","revision":"2","raft_term":"2"}}"#),
            r#"{"header":{"cluster_id":"<ID1>","member_id":"<ID2>","revision":"2","raft_term":"<TERM>"}}"#
        );
        assert_eq!(
            masker().mask(r#"{"ID":"2228896974167387237","TTL":"86","grantedTTL":"100"} {"ID":"2228896974167387237","TTL":"100"}"#),
            r#"{"ID":"<ID1>","TTL":"<REMAINING>","grantedTTL":"100"} {"ID":"<ID1>","TTL":"100"}"#
        );
        // A key's version stays; the server's version goes.
        assert_eq!(
            masker()
                .mask(r#"{"version":"2","value":"MQ=="} {"version":"3.4.23","dbSize":"20480"}"#),
            r#"{"version":"2","value":"MQ=="} {"version":"<VERSION>","dbSize":"<SIZE>"}"#
        );
    }

    #[test]
    fn member_list_and_move_leader_are_masked() {
        // Member ids in simple and table output, and both ids of move-leader.
        let mut masker = masker();
        assert_eq!(
            masker.mask("9e737febb6b99eee, started, default, http://127.0.0.1:22380, http://127.0.0.1:22379, false\n"),
            "<ID1>, started, default, http://<PEER>, http://<ENDPOINT>, false\n"
        );
        assert_eq!(
            masker.mask("| 9e737febb6b99eee | started | default | http://127.0.0.1:22380 | http://127.0.0.1:22379 |      false |"),
            "| <ID1> | started | default | http://<PEER> | http://<ENDPOINT> | false |"
        );
        assert_eq!(
            masker.mask("Leadership transferred from 9e737febb6b99eee to 8e737febb6b99eee\n"),
            "Leadership transferred from <ID1> to <ID2>\n"
        );
    }

    #[test]
    fn values_that_look_like_ids_are_not_masked() {
        // Plain values and revisions survive: only known shapes are masked.
        let text = "foo\n12345678901234567890\nabc\nPUT\n\"Revision\" : 18446744073709551615\n";
        assert_eq!(masker().mask(text), text);
    }
}
