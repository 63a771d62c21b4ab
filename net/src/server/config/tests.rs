//! Tests of the configuration: every rule of the module doc, each with the exact value
//! or message it must produce. The environment is always injected; config files are
//! written to a fresh temporary directory per test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::values::{parse_go_duration, parse_signed, parse_unsigned, parse_url};
use super::*;

mod checks;
mod command_line;
mod sources;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn env_pairs(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Parses to a server configuration and its warnings, or the refusal's message.
fn parse_full(args: &[&str], env: &[(&str, &str)]) -> Result<(ServerConfig, Vec<String>), String> {
    match Command::parse_with(strings(args), env_pairs(env)) {
        Ok(Parsed {
            command: Command::Serve(config),
            warnings,
        }) => Ok((*config, warnings)),
        Ok(other) => panic!("expected a server configuration, got {other:?}"),
        Err(rejected) => Err(rejected.to_string()),
    }
}

fn parse(args: &[&str]) -> ServerConfig {
    parse_env(args, &[])
}

fn parse_env(args: &[&str], env: &[(&str, &str)]) -> ServerConfig {
    let (config, warnings) = parse_full(args, env).expect("valid configuration");
    assert_eq!(warnings, Vec::<String>::new());
    config
}

fn error(args: &[&str]) -> String {
    error_env(args, &[])
}

fn error_env(args: &[&str], env: &[(&str, &str)]) -> String {
    match parse_full(args, env) {
        Ok((config, _)) => panic!("expected an error for {args:?} {env:?}, got {config:?}"),
        Err(message) => message,
    }
}

fn address(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

/// A directory of its own for each test's config files, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "corekv-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write config file");
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
