//! etcdctl's txn syntax, read from standard input: compares, a blank line, success
//! operations, a blank line, failure operations (the end of input also ends a
//! section).
//!
//! ```text
//! mod("key1") > "0"
//! val("key2") = "abc"
//!
//! put key1 "new value"
//! get key2 --prefix
//!
//! del key1 --prev-kv
//! ```
//!
//! Compares: `val|value`, `ver|version`, `create|c`, `mod|m`, `lease` of `("key")` or
//! `("key", "range_end")`, then `=`, `!=`, `>` or `<`, then a quoted operand (lease ids
//! in hex, as etcdctl). Operations: `put key value [--lease=ID] [--prev-kv]
//! [--ignore-value] [--ignore-lease]`, `get key [range_end]` with get's flags, `del key
//! [range_end] [--prefix] [--from-key] [--prev-kv]`.

use corekv_engine::{
    Compare, CompareResult, CompareTarget, LeaseId, RequestOp, Revision, TxnRequest,
};

use super::args::{parse, split_words, switch, value, FlagSpec};
use super::keys::{key_range, parse_lease_id, sort_flags, RangeFlags};

/// The flags `get` accepts inside a txn (and on the command line).
pub const GET_FLAGS: &[FlagSpec] = &[
    switch("prefix"),
    switch("from-key"),
    value("rev"),
    value("limit"),
    switch("keys-only"),
    switch("count-only"),
    value("sort-by"),
    value("order"),
    value("consistency"),
    switch("print-value-only"),
];

/// The flags `put` accepts.
pub const PUT_FLAGS: &[FlagSpec] = &[
    value("lease"),
    switch("prev-kv"),
    switch("ignore-value"),
    switch("ignore-lease"),
];

/// The flags `del` accepts.
pub const DEL_FLAGS: &[FlagSpec] = &[switch("prefix"), switch("from-key"), switch("prev-kv")];

/// Parses the whole txn text.
pub fn parse_txn(text: &str) -> Result<TxnRequest, String> {
    let mut sections: [Vec<&str>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut section = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            section += 1;
            if section > 2 {
                break;
            }
            continue;
        }
        sections[section].push(line);
    }
    let compare = sections[0]
        .iter()
        .map(|line| parse_compare(line))
        .collect::<Result<_, _>>()?;
    let success = sections[1]
        .iter()
        .map(|line| parse_op(line))
        .collect::<Result<_, _>>()?;
    let failure = sections[2]
        .iter()
        .map(|line| parse_op(line))
        .collect::<Result<_, _>>()?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

/// Parses one compare line, e.g. `mod("key") > "5"`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let bad = || format!("malformed comparison: {line}");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    if close < open {
        return Err(bad());
    }
    let target = line[..open].trim();
    let keys = split_words(&line[open + 1..close].replace(',', " ")).map_err(|_| bad())?;
    let rest = split_words(&line[close + 1..]).map_err(|_| bad())?;
    let (key, range_end) = match keys.as_slice() {
        [key] => (key.clone(), String::new()),
        [key, end] => (key.clone(), end.clone()),
        _ => return Err(bad()),
    };
    let [op, operand] = rest.as_slice() else {
        return Err(bad());
    };
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => {
            return Err(format!(
                "malformed comparison: {line} (unknown operator {op})"
            ))
        }
    };
    let integer = |what: &str| {
        operand
            .parse::<i64>()
            .map_err(|_| format!("malformed comparison: {line} ({what} must be an integer)"))
    };
    let target = match target {
        "val" | "value" => CompareTarget::Value(operand.as_bytes().to_vec()),
        "ver" | "version" => CompareTarget::Version(integer("version")?),
        "c" | "create" => CompareTarget::Create(Revision(integer("create revision")?)),
        "m" | "mod" => CompareTarget::Mod(Revision(integer("mod revision")?)),
        "lease" => CompareTarget::Lease(parse_lease_id(operand)?),
        other => {
            return Err(format!(
                "malformed comparison: {line} (unknown target {other})"
            ))
        }
    };
    Ok(Compare {
        result,
        target,
        key: key.into_bytes(),
        range_end: range_end.into_bytes(),
    })
}

/// Parses one operation line, e.g. `put key value --prev-kv`.
pub fn parse_op(line: &str) -> Result<RequestOp, String> {
    let words = split_words(line)?;
    let (command, args) = words
        .split_first()
        .ok_or_else(|| format!("empty operation: {line}"))?;
    match command.as_str() {
        "put" => {
            let parsed = parse(args, PUT_FLAGS)?;
            let [key, value] = parsed.positional.as_slice() else {
                return Err(format!("put needs a key and a value: {line}"));
            };
            Ok(RequestOp::Put(corekv_engine::PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                lease: match parsed.value("lease") {
                    Some(id) => parse_lease_id(id)?,
                    None => LeaseId::NONE,
                },
                prev_kv: parsed.switch("prev-kv"),
                ignore_value: parsed.switch("ignore-value"),
                ignore_lease: parsed.switch("ignore-lease"),
            }))
        }
        "get" => {
            let parsed = parse(args, GET_FLAGS)?;
            let flags = RangeFlags::from(&parsed);
            let (key, range_end) = key_range(&parsed.positional, flags)?;
            let (sort_order, sort_target) = sort_flags(&parsed)?;
            Ok(RequestOp::Range(corekv_engine::RangeRequest {
                key,
                range_end,
                limit: parsed.integer("limit", 0)?,
                revision: Revision(parsed.integer("rev", 0)?),
                sort_order,
                sort_target,
                serializable: parsed.value("consistency") == Some("s"),
                keys_only: parsed.switch("keys-only"),
                count_only: parsed.switch("count-only"),
                ..Default::default()
            }))
        }
        "del" | "delete" => {
            let parsed = parse(args, DEL_FLAGS)?;
            let (key, range_end) = key_range(&parsed.positional, RangeFlags::from(&parsed))?;
            Ok(RequestOp::DeleteRange(corekv_engine::DeleteRangeRequest {
                key,
                range_end,
                prev_kv: parsed.switch("prev-kv"),
            }))
        }
        other => Err(format!(
            "unknown operation {other:?} in txn (expected put, get or del): {line}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three sections of etcdctl's txn input map to compares, success and failure.
    #[test]
    fn sections() {
        let txn = parse_txn(
            "mod(\"key1\") > \"0\"\nval(\"key2\") = \"a b\"\n\nput key1 \"new v\"\nget key2 --prefix\n\ndel key1 --prev-kv\n",
        )
        .unwrap();
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(txn.compare[0].target, CompareTarget::Mod(Revision(0)));
        assert_eq!(txn.compare[0].result, CompareResult::Greater);
        assert_eq!(txn.compare[1].target, CompareTarget::Value(b"a b".to_vec()));
        assert_eq!(txn.success.len(), 2);
        let RequestOp::Put(put) = &txn.success[0] else {
            panic!("put")
        };
        assert_eq!(put.value, b"new v");
        let RequestOp::Range(get) = &txn.success[1] else {
            panic!("get")
        };
        assert_eq!(get.range_end, b"key3");
        let RequestOp::DeleteRange(del) = &txn.failure[0] else {
            panic!("del")
        };
        assert!(del.prev_kv);
    }

    /// Only success ops, no trailing blank lines; lease compares in hex; ranges.
    #[test]
    fn short_forms() {
        let txn =
            parse_txn("lease(\"k\") = \"1f\"\nver(\"a\", \"c\") != \"3\"\n\nput k v").unwrap();
        assert_eq!(txn.compare[0].target, CompareTarget::Lease(LeaseId(0x1f)));
        assert_eq!(txn.compare[1].range_end, b"c");
        assert_eq!(txn.success.len(), 1);
        assert!(txn.failure.is_empty());
    }

    /// Malformed lines are refused with the line in the message.
    #[test]
    fn malformed() {
        assert!(parse_compare("mod(\"k\") >").is_err());
        assert!(parse_compare("foo(\"k\") = \"1\"").is_err());
        assert!(parse_compare("ver(\"k\") = \"x\"").is_err());
        assert!(parse_op("frob k").is_err());
        assert!(parse_op("put k").is_err());
    }
}
