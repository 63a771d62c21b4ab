//! Keys and ranges as etcdctl spells them: `--prefix` (the range end is the prefix with
//! its last byte incremented), `--from-key` (range end `\0`), an explicit range end,
//! lease ids in hex, and `--sort-by`/`--order`.

use corekv_engine::{LeaseId, SortOrder, SortTarget};

use super::args::Parsed;

/// Range-shaping switches of get, del and watch.
#[derive(Clone, Copy, Debug, Default)]
pub struct RangeFlags {
    /// `--prefix`.
    pub prefix: bool,
    /// `--from-key`.
    pub from_key: bool,
}

impl From<&Parsed> for RangeFlags {
    fn from(parsed: &Parsed) -> RangeFlags {
        RangeFlags {
            prefix: parsed.switch("prefix"),
            from_key: parsed.switch("from-key"),
        }
    }
}

/// etcd's `GetPrefixRangeEnd`: the smallest key greater than every key with this
/// prefix; `\0` (every key) when the prefix is empty or all `0xff`.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key and range end for `positional` (`key [range_end]`) under `flags`, as
/// clientv3's `WithPrefix` / `WithFromKey` build them.
pub fn key_range(positional: &[String], flags: RangeFlags) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (key, explicit_end) = match positional {
        [key] => (key.as_bytes().to_vec(), None),
        [key, end] => (key.as_bytes().to_vec(), Some(end.as_bytes().to_vec())),
        [] => return Err("a key is required".to_string()),
        _ => return Err("too many arguments".to_string()),
    };
    if flags.prefix && flags.from_key {
        return Err("`--prefix` and `--from-key` cannot be set at the same time".to_string());
    }
    if explicit_end.is_some() && (flags.prefix || flags.from_key) {
        return Err("a range end cannot be combined with --prefix or --from-key".to_string());
    }
    if flags.prefix {
        if key.is_empty() {
            return Ok((vec![0], vec![0]));
        }
        let end = prefix_range_end(&key);
        return Ok((key, end));
    }
    if flags.from_key {
        let key = if key.is_empty() { vec![0] } else { key };
        return Ok((key, vec![0]));
    }
    Ok((key, explicit_end.unwrap_or_default()))
}

/// A lease id as etcdctl prints and reads it: hexadecimal.
pub fn parse_lease_id(text: &str) -> Result<LeaseId, String> {
    i64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map(LeaseId)
        .map_err(|_| format!("bad lease ID ({text:?}), expecting ID in Hex"))
}

/// `--sort-by` (CREATE, KEY, MODIFY, VALUE, VERSION) and `--order` (ASCEND, DESCEND),
/// with etcdctl's default: sorting by a target without an order ascends.
pub fn sort_flags(parsed: &Parsed) -> Result<(SortOrder, SortTarget), String> {
    let target = match parsed
        .value("sort-by")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("") => None,
        Some("CREATE") => Some(SortTarget::Create),
        Some("KEY") => Some(SortTarget::Key),
        Some("MODIFY") => Some(SortTarget::Mod),
        Some("VALUE") => Some(SortTarget::Value),
        Some("VERSION") => Some(SortTarget::Version),
        Some(other) => return Err(format!("bad sort target {other:?}")),
    };
    let order = match parsed
        .value("order")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("") => None,
        Some("ASCEND") => Some(SortOrder::Ascend),
        Some("DESCEND") => Some(SortOrder::Descend),
        Some(other) => return Err(format!("bad sort order {other:?}")),
    };
    Ok(match (order, target) {
        (None, None) => (SortOrder::None, SortTarget::Key),
        (None, Some(target)) => (SortOrder::Ascend, target),
        (Some(order), target) => (order, target.unwrap_or(SortTarget::Key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prefix ends increment the last byte below 0xff, as etcd's GetPrefixRangeEnd.
    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
    }

    /// `--prefix ""` reads every key; `--from-key` ends at `\0`; explicit ends pass.
    #[test]
    fn ranges() {
        let one = |s: &str| vec![s.to_string()];
        let prefix = RangeFlags {
            prefix: true,
            from_key: false,
        };
        assert_eq!(key_range(&one(""), prefix).unwrap(), (vec![0], vec![0]));
        assert_eq!(
            key_range(&one("foo"), prefix).unwrap(),
            (b"foo".to_vec(), b"fop".to_vec())
        );
        let from = RangeFlags {
            prefix: false,
            from_key: true,
        };
        assert_eq!(
            key_range(&one("b"), from).unwrap(),
            (b"b".to_vec(), vec![0])
        );
        let both = vec!["a".to_string(), "c".to_string()];
        assert_eq!(
            key_range(&both, RangeFlags::default()).unwrap(),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert!(key_range(&[], RangeFlags::default()).is_err());
    }

    /// Lease ids are hex, with or without 0x.
    #[test]
    fn lease_ids() {
        assert_eq!(
            parse_lease_id("694d77aa9e38260f").unwrap().0,
            0x694d77aa9e38260f
        );
        assert_eq!(parse_lease_id("0x10").unwrap(), LeaseId(16));
        assert!(parse_lease_id("xyz").is_err());
    }
}
