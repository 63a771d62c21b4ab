//! The value syntax of etcd's flags, written after the Go functions etcd hands its
//! values to: `strconv.ParseBool`, `strconv.ParseUint`/`ParseInt` with base 0 (so
//! `0x10`, `0o17`, `017` and `1_000` are numbers, as for etcd), `strconv.Atoi`,
//! `time.ParseDuration`, and etcd's URL rules (`pkg/types.NewURLs`, `checkBindURLs`,
//! `checkHostURLs` in `embed/config.go`).
//!
//! Every function here is pure and returns the reason a value is wrong as a sentence;
//! the caller adds which flag, variable or file key the value came from.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Go's `strconv.ParseBool`: exactly these spellings, nothing else (no `yes`/`on`).
pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("not a boolean (true or false)".to_string()),
    }
}

/// Go's `strconv.ParseUint(text, 0, 64)`, which etcd's unsigned flags use.
pub(super) fn parse_unsigned(text: &str) -> Result<u64, String> {
    let (radix, digits) = split_radix(text).ok_or_else(not_a_number)?;
    let value = u64::from_str_radix(&digits, radix).map_err(|error| match error.kind() {
        std::num::IntErrorKind::PosOverflow => "out of range".to_string(),
        _ => not_a_number(),
    })?;
    Ok(value)
}

/// Go's `strconv.ParseInt(text, 0, 64)` (`--quota-backend-bytes` is signed in etcd).
pub(super) fn parse_signed(text: &str) -> Result<i64, String> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = parse_unsigned(rest)?;
    let value = if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    };
    value.ok_or_else(|| "out of range".to_string())
}

/// Go's `strconv.Atoi`: decimal only, optional sign, no prefixes or underscores.
pub(super) fn parse_decimal(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn not_a_number() -> String {
    "not a number".to_string()
}

/// The radix Go's base-0 parsing picks and the digits with underscores removed, or
/// `None` when the text cannot be a number (empty, a sign, misplaced underscores).
fn split_radix(text: &str) -> Option<(u32, String)> {
    let lower = text.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest, true)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[..], false)
    } else {
        (10, &lower[..], false)
    };
    // Go allows an underscore only between digits, or right after a base prefix.
    let underscores_fine =
        !digits.contains("__") && !digits.ends_with('_') && (prefixed || !digits.starts_with('_'));
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !underscores_fine || digits.starts_with(['+', '-']) {
        return None;
    }
    Some((radix, digits))
}

/// Go's `time.ParseDuration` for durations that are not negative: a sequence of decimal
/// numbers, each with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`,
/// `h`), as in `300ms`, `1.5h` or `1h30m`; `0` alone needs no unit.
pub(super) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let whole_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let whole = &rest[..whole_end];
        rest = &rest[whole_end..];
        let mut fraction = "";
        if let Some(after_point) = rest.strip_prefix('.') {
            let fraction_end = after_point
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_point.len());
            fraction = &after_point[..fraction_end];
            rest = &after_point[fraction_end..];
        }
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_end = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        if unit.is_empty() {
            return Err(format!("missing unit in duration {text:?}"));
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("unknown unit {unit:?} in duration {text:?}")),
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        // Digits past nanosecond precision of an hour cannot change the result.
        let fraction = &fraction[..fraction.len().min(19)];
        let mut fraction_nanos: u128 = 0;
        if !fraction.is_empty() {
            let numerator: u128 = fraction.parse().map_err(|_| invalid())?;
            fraction_nanos = numerator * unit_nanos / 10u128.pow(fraction.len() as u32);
        }
        total_nanos = whole
            .checked_mul(unit_nanos)
            .and_then(|nanos| nanos.checked_add(fraction_nanos))
            .and_then(|nanos| nanos.checked_add(total_nanos))
            .filter(|&nanos| nanos <= i64::MAX as u128)
            .ok_or_else(invalid)?;
    }
    if negative && total_nanos > 0 {
        return Err(format!("negative duration {text:?}"));
    }
    Ok(Duration::from_nanos(total_nanos as u64))
}

/// One URL of an etcd URL flag, checked as `pkg/types.NewURLs` checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Url {
    /// The URL as written (trimmed).
    pub text: String,
    /// `http`, `https`, `unix` or `unixs`, lower case.
    pub scheme: String,
    /// The host without brackets (an IPv6 address is bare).
    pub host: String,
    /// The port as written.
    pub port: String,
}

impl Url {
    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == "https" || self.scheme == "unixs"
    }

    /// The address to bind, as etcd's `checkBindURLs` allows it: an IP address or
    /// `localhost` (which etcd binds as the loopback address).
    pub fn bind_address(&self) -> Result<SocketAddr, String> {
        if self.scheme.starts_with("unix") {
            return Err(format!(
                "corekv does not listen on unix sockets yet ({})",
                self.text
            ));
        }
        let ip = if self.host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.host
                .parse()
                .map_err(|_| format!("expected IP in URL for binding ({})", self.text))?
        };
        let port = self
            .port
            .parse()
            .map_err(|_| format!("invalid port in URL ({})", self.text))?;
        Ok(SocketAddr::new(ip, port))
    }

    /// The URL as compared with the other spelling of the same member: scheme in lower
    /// case and `localhost` as `127.0.0.1`. etcd compares peer URLs after resolving
    /// their host names; corekv does no DNS while parsing flags, and `localhost` is the
    /// one name the defaults use.
    pub fn comparable(&self) -> String {
        let host = if self.host == "localhost" {
            "127.0.0.1"
        } else {
            &self.host
        };
        if host.contains(':') {
            format!("{}://[{host}]:{}", self.scheme, self.port)
        } else {
            format!("{}://{host}:{}", self.scheme, self.port)
        }
    }
}

/// Parses one URL: a scheme etcd knows, `host:port`, no path.
pub(super) fn parse_url(text: &str) -> Result<Url, String> {
    let text = text.trim();
    let scheme_error = || format!("URL scheme must be http, https, unix, or unixs: {text}");
    let (scheme, rest) = text.split_once("://").ok_or_else(scheme_error)?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(scheme_error());
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_end < rest.len() {
        return Err(format!("URL must not contain a path: {text}"));
    }
    let authority = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("URL address does not have the form \"host:port\": {text}"))?;
    Ok(Url {
        text: text.to_string(),
        scheme,
        host: host.to_string(),
        port: port.to_string(),
    })
}

/// Go's `net.SplitHostPort`: `host:port` or `[ipv6]:port`.
fn split_host_port(authority: &str) -> Option<(&str, &str)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        let (host, port) = authority.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    if host.contains(['[', ']']) || port.contains(['[', ']']) {
        return None;
    }
    Some((host, port))
}

/// A comma-separated list of URLs, sorted and without repeats (etcd sorts them too).
/// Every item must be a URL: an empty item is an error, as in etcd.
pub(super) fn parse_url_list(text: &str) -> Result<Vec<Url>, String> {
    let mut urls = text
        .split(',')
        .map(parse_url)
        .collect::<Result<Vec<_>, _>>()?;
    urls.sort_by(|a, b| a.text.cmp(&b.text));
    urls.dedup_by(|a, b| a.text == b.text);
    Ok(urls)
}

/// `--initial-cluster`: `name=url,name=url,...`; a name may appear with several URLs.
/// Parsed as etcd's `types.NewURLsMap`: empty items are skipped, an item without `=`
/// is a name with an empty (so invalid) URL. Sorted by name, then URL; repeats are
/// kept so that the duplicate check can name them.
pub(super) fn parse_initial_cluster(text: &str) -> Result<Vec<(String, Url)>, String> {
    let mut members = Vec::new();
    for item in text.split(',').filter(|item| !item.is_empty()) {
        let (name, url) = item.split_once('=').unwrap_or((item, ""));
        members.push((name.to_string(), parse_url(url)?));
    }
    members.sort_by(|a, b| (&a.0, &a.1.text).cmp(&(&b.0, &b.1.text)));
    Ok(members)
}
