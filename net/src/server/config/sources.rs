//! The three places a setting comes from, each turned into `(flag, text)` settings
//! that [`super::build::build`] applies: the command line, `ETCD_*` environment variables and
//! the YAML config file.
//!
//! - Command line: Go's `flag` package rules, as etcd uses it. `--flag value`,
//!   `--flag=value`, `-flag value`; a boolean takes no separate value (`--enable-v2`,
//!   `--enable-v2=false`; `--enable-v2 false` leaves `false` as a stray argument, an
//!   error); `--` ends the flags; a repeated flag keeps its last value; `-h`/`--help`
//!   stops at once.
//! - Environment: etcd's `pkg/flags.SetFlagsFromEnv` rules. `ETCD_<FLAG>` with the name
//!   in upper snake case sets a flag the command line did not; an empty value is ignored;
//!   an `ETCD_*` variable that names no flag is ignored with etcd's warning
//!   "unrecognized environment variable". etcd 3.4 exits when a variable and its flag
//!   are both set; corekv lets the flag win and warns.
//! - Config file: etcd's YAML keys. A key corekv does not take is ignored with a
//!   warning (etcd ignores unknown keys silently), except a TLS key written at the top
//!   level instead of under `client-transport-security`/`peer-transport-security`,
//!   which is an error: ignoring it would serve plaintext where TLS was meant.
//!   A null or empty value leaves the default, as etcd does for its URL keys.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

use super::flags::{self, Flag, Id, Kind};
use super::values::parse_bool;

/// Which place a setting came from; later places override earlier ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Source {
    File,
    Environment,
    CommandLine,
}

/// One value for one flag, and where it came from (for error messages).
#[derive(Clone, Debug)]
pub(super) struct Setting {
    pub flag: &'static Flag,
    pub value: String,
    pub source: Source,
    /// How the user spelled it: `--name`, `ETCD_NAME`, `name in config file "c.yaml"`.
    pub origin: String,
}

/// What the command line asked for.
#[derive(Debug)]
pub(super) enum CommandLine {
    Help,
    Flags {
        settings: Vec<Setting>,
        version: bool,
    },
}

/// Parses the arguments after the program name.
pub(super) fn command_line(args: impl IntoIterator<Item = String>) -> Result<CommandLine> {
    let mut settings = Vec::new();
    let mut version = false;
    // The last boolean flag given without `=`, to explain a stray `true`/`false`.
    let mut bare_boolean: Option<&'static str> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            match args.next() {
                Some(extra) => bail!("unexpected argument {extra:?} (see --help)"),
                None => break,
            }
        }
        let flag_text = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|text| !text.is_empty() && !text.starts_with(['-', '=']));
        let Some(flag_text) = flag_text else {
            if let Some(name) = bare_boolean.filter(|_| parse_bool(&arg).is_ok()) {
                bail!(
                    "unexpected argument {arg:?} after --{name}: a boolean flag takes its \
                     value as --{name}={arg}"
                );
            }
            bail!("unexpected argument {arg:?} (flags start with --; see --help)");
        };
        let (name, inline) = match flag_text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag_text, None),
        };
        if name == "h" || name == "help" {
            return Ok(CommandLine::Help);
        }
        let Some(flag) = flags::find(name) else {
            if flags::is_etcd_unsupported(name) {
                bail!("flag --{name} is etcd's but corekv does not support it yet (see --help)");
            }
            bail!("unknown flag: --{name} (see --help)");
        };
        bare_boolean = None;
        let value = match (flag.kind, inline) {
            (_, Some(value)) => value,
            (Kind::Bool, None) => {
                bare_boolean = Some(flag.name);
                "true".to_string()
            }
            (Kind::Value, None) => args
                .next()
                .ok_or_else(|| anyhow!("flag --{name} needs {}", flag.needs()))?,
        };
        if flag.kind == Kind::Bool {
            // Go checks a boolean as it reads it, before any other value.
            parse_bool(&value)
                .map_err(|why| anyhow!("invalid value {value:?} for --{name}: {why}"))?;
        }
        if flag.id == Id::Version {
            version = parse_bool(&value).expect("checked above");
            continue;
        }
        settings.push(Setting {
            flag,
            value,
            source: Source::CommandLine,
            origin: format!("--{name}"),
        });
    }
    Ok(CommandLine::Flags { settings, version })
}

/// The settings of `ETCD_*` variables, warning about those a command-line flag shadows.
pub(super) fn environment(
    env: impl IntoIterator<Item = (String, String)>,
    command_line: &[Setting],
    warnings: &mut Vec<String>,
) -> Result<Vec<Setting>> {
    let mut settings: Vec<Setting> = Vec::new();
    for (variable, value) in env {
        if !variable.starts_with("ETCD_") {
            continue;
        }
        let Some(flag) = flags::find_env(&variable) else {
            match flags::find_env_unsupported(&variable) {
                Some(name) => warnings.push(format!(
                    "ignored environment variable {variable}: etcd's --{name} is not \
                     supported by corekv yet"
                )),
                None => warnings.push(format!(
                    "unrecognized environment variable {variable}={value}"
                )),
            }
            continue;
        };
        if value.is_empty() {
            continue;
        }
        if flag.kind == Kind::Bool {
            parse_bool(&value)
                .map_err(|why| anyhow!("invalid value {value:?} for {variable}: {why}"))?;
        }
        if flag.id == Id::Version {
            // etcd reads --version before the environment: the variable has no effect.
            continue;
        }
        // Kept all the same: the merge lets the flag win.
        if command_line
            .iter()
            .any(|setting| setting.flag.id == flag.id)
        {
            warnings.push(format!(
                "conflicting environment variable {variable} is shadowed by --{}: the flag \
                 wins (etcd 3.4 refuses to start instead)",
                flag.name
            ));
        }
        settings.retain(|setting| setting.flag.id != flag.id);
        settings.push(Setting {
            flag,
            value,
            source: Source::Environment,
            origin: variable,
        });
    }
    Ok(settings)
}

/// The settings of the YAML config file at `path`.
pub(super) fn config_file(path: &Path, warnings: &mut Vec<String>) -> Result<Vec<Setting>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|error| anyhow!("cannot read config file \"{shown}\": {error}"))?;
    let document: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|error| anyhow!("cannot parse config file \"{shown}\": {error}"))?;
    let mapping = match document {
        serde_yaml::Value::Null => return Ok(Vec::new()),
        serde_yaml::Value::Mapping(mapping) => mapping,
        _ => bail!(
            "config file \"{shown}\" must be a mapping of etcd's keys (name: ..., data-dir: ...)"
        ),
    };
    let mut settings = Vec::new();
    for (key, value) in &mapping {
        let key = key
            .as_str()
            .ok_or_else(|| anyhow!("config file \"{shown}\" has a key that is not a string"))?;
        let section = flags::FLAGS.iter().find_map(|flag| match flag.file_key {
            flags::FileKey::Under(section, _) if section == key => Some(section),
            _ => None,
        });
        if let Some(section) = section {
            let entries = match value {
                serde_yaml::Value::Null => continue,
                serde_yaml::Value::Mapping(entries) => entries,
                _ => bail!("{key} in config file \"{shown}\" must be a mapping (cert-file: ...)"),
            };
            for (inner, value) in entries {
                let inner = inner.as_str().unwrap_or_default();
                let origin = format!("{key}.{inner} in config file \"{shown}\"");
                let flag = flags::FLAGS.iter().find(|flag| match flag.file_key {
                    flags::FileKey::Under(s, k) => s == section && k == inner,
                    _ => false,
                });
                match flag {
                    Some(flag) => settings.extend(file_setting(flag, value, origin)?),
                    None => warnings.push(format!("ignored {origin}: not a key corekv takes")),
                }
            }
            continue;
        }
        let origin = format!("{key} in config file \"{shown}\"");
        match flags::find(key) {
            Some(flag) if flag.file_key == flags::FileKey::Top => {
                settings.extend(file_setting(flag, value, origin)?);
            }
            Some(flags::Flag {
                file_key: flags::FileKey::Under(section, inner),
                ..
            }) => bail!(
                "{origin} must be written as {inner} under {section}: \
                 a top-level {key} is ignored by etcd"
            ),
            _ if flags::is_etcd_unsupported(key) => warnings.push(format!(
                "ignored {origin}: etcd's {key} is not supported by corekv yet"
            )),
            _ => warnings.push(format!("ignored {origin}: not a key corekv takes")),
        }
    }
    Ok(settings)
}

/// One file value as the text a flag would take; `None` for null or empty.
fn file_setting(
    flag: &'static Flag,
    value: &serde_yaml::Value,
    origin: String,
) -> Result<Option<Setting>> {
    let text = match value {
        serde_yaml::Value::Null => return Ok(None),
        serde_yaml::Value::Bool(value) => value.to_string(),
        serde_yaml::Value::Number(value) => value.to_string(),
        serde_yaml::Value::String(value) => value.clone(),
        _ => bail!("invalid value for {origin}: expected a single value, not a list or mapping"),
    };
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(Setting {
        flag,
        value: text,
        source: Source::File,
        origin,
    }))
}
