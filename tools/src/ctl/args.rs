//! Command-line parsing in etcdctl's style: `--flag value`, `--flag=value`, boolean
//! `--flag` (or `--flag=true|false`), short aliases, flags anywhere among the
//! positional arguments, and `--` ending the flags.
//!
//! Each command declares the flags it accepts; an unknown flag or a missing value is an
//! error naming it (exit code 128, etcdctl's ExitBadArgs). Never: guess at a flag.

use std::collections::BTreeMap;

/// A flag a command accepts.
#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    /// Long name without dashes.
    pub name: &'static str,
    /// One-letter alias, if any.
    pub short: Option<char>,
    /// Whether it takes a value (else boolean).
    pub takes_value: bool,
}

/// Shorthand for a flag with a value.
pub const fn value(name: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        short: None,
        takes_value: true,
    }
}

/// Shorthand for a boolean flag.
pub const fn switch(name: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        short: None,
        takes_value: false,
    }
}

/// Parsed flags and positional arguments.
#[derive(Debug, Default)]
pub struct Parsed {
    flags: BTreeMap<&'static str, String>,
    /// Positional arguments in order.
    pub positional: Vec<String>,
}

impl Parsed {
    /// The value of a flag, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// Whether a boolean flag is set.
    pub fn switch(&self, name: &str) -> bool {
        self.flags.get(name).is_some_and(|v| v == "true")
    }

    /// A flag's value parsed as an integer, or `default`.
    pub fn integer(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("invalid value {text:?} for --{name}: not an integer")),
        }
    }
}

/// Parses `args` against `specs`.
pub fn parse(args: &[String], specs: &[FlagSpec]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut i = 0;
    let mut flags_done = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if flags_done || !arg.starts_with('-') || arg == "-" {
            parsed.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            flags_done = true;
            continue;
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let spec = specs
            .iter()
            .find(|spec| {
                spec.name == name
                    || (arg.len() == 2 && spec.short.is_some_and(|c| name == c.to_string()))
            })
            .ok_or_else(|| format!("unknown flag: {arg}"))?;
        let value = if spec.takes_value {
            match inline {
                Some(value) => value,
                None => {
                    let value = args
                        .get(i)
                        .ok_or_else(|| format!("flag needs an argument: --{}", spec.name))?;
                    i += 1;
                    value.clone()
                }
            }
        } else {
            match inline.as_deref() {
                None | Some("true") => "true".to_string(),
                Some("false") => "false".to_string(),
                Some(other) => {
                    return Err(format!(
                        "invalid value {other:?} for --{}: expected true or false",
                        spec.name
                    ))
                }
            }
        };
        parsed.flags.insert(spec.name, value);
    }
    Ok(parsed)
}

/// Splits a line into words as etcdctl's txn reader does: whitespace separates,
/// double or single quotes group (backslash escapes inside double quotes).
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated quote in {line:?}")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some(escaped) => word.push(escaped),
                            None => return Err(format!("unterminated quote in {line:?}")),
                        },
                        Some(other) => word.push(other),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated quote in {line:?}")),
                        Some('\'') => break,
                        Some(other) => word.push(other),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    /// Flags before, between and after positionals, in both value spellings.
    #[test]
    fn flags_anywhere() {
        let specs = [value("rev"), switch("prefix"), value("limit")];
        let parsed = parse(
            &strings(&["--prefix", "a", "--rev=3", "b", "--limit", "5"]),
            &specs,
        )
        .unwrap();
        assert!(parsed.switch("prefix"));
        assert_eq!(parsed.value("rev"), Some("3"));
        assert_eq!(parsed.integer("limit", 0), Ok(5));
        assert_eq!(parsed.positional, vec!["a", "b"]);
    }

    /// Unknown flags, missing values and `--` are handled as etcdctl does.
    #[test]
    fn errors_and_double_dash() {
        let specs = [value("rev")];
        assert_eq!(
            parse(&strings(&["--nope"]), &specs).unwrap_err(),
            "unknown flag: --nope"
        );
        assert_eq!(
            parse(&strings(&["--rev"]), &specs).unwrap_err(),
            "flag needs an argument: --rev"
        );
        let parsed = parse(&strings(&["--", "--rev"]), &specs).unwrap();
        assert_eq!(parsed.positional, vec!["--rev"]);
    }

    /// Quoted words keep their spaces and escapes.
    #[test]
    fn words() {
        assert_eq!(
            split_words(r#"put "a b" 'c d' e\x "q\"q""#).unwrap(),
            vec!["put", "a b", "c d", r"e\x", "q\"q"]
        );
        assert_eq!(split_words(r#"put "" v"#).unwrap(), vec!["put", "", "v"]);
        assert!(split_words(r#"put "a"#).is_err());
    }
}
