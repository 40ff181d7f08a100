//! What every bench binary shares: the release-only guard, the config of the dev servers with
//! fresh topic names, and reading a child process's memory.

use std::path::Path;

use anyhow::bail;
use buildstats_core::config::{read_env_file, Config};

/// Refuse debug builds, check the servers' env file and the role binary, and load the config
/// of `dev/services up` (process environment first) with a fresh topic and dead-letter topic.
/// Returns the config and the run's unique suffix.
pub fn bench_config(bench: &str, role_bin: &Path) -> anyhow::Result<(Config, String)> {
    if cfg!(debug_assertions) {
        bail!("{bench} measures release builds only: cargo build --release -p buildstats -p bench && target/release/{bench}");
    }
    let vars: std::collections::HashMap<String, String> = read_env_file(Path::new("target/dev/services.env")).into_iter().collect();
    if vars.is_empty() {
        bail!("target/dev/services.env is missing: run `dev/services up` first (from the repository root)");
    }
    if !role_bin.exists() {
        bail!("{} not found: cargo build --release -p buildstats", role_bin.display());
    }
    let mut config = Config::load(Path::new("/nonexistent"), false, |n| std::env::var(n).ok().or_else(|| vars.get(n).cloned()))?;
    let unique = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    config.kafka.topic = format!("buildstats.bench.{unique}");
    config.kafka.dead_letter_topic = format!("buildstats.bench.{unique}.dlq");
    // Benchmarks drive one token far past any per-token budget: measure the gateway, not it.
    config.gateway.rate_limit_per_second = 0;
    Ok((config, unique))
}

#[allow(dead_code)] // not every bench reads memory
/// A `/proc/PID/status` field in kB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// What the plugin's requests carry besides the document (versions, tenant), for benches that
/// build the gateway's records themselves.
#[allow(dead_code)] // the query bench writes to the stores directly
pub fn plugin_context(org: &str, repo: &str) -> ingest_gateway::normalize::RequestContext {
    ingest_gateway::normalize::RequestContext {
        org: org.to_string(),
        repo: repo.to_string(),
        token_is_ci: false,
        pants_version: Some("2.16.0".into()),
        plugin_version: Some("0.27.0".into()),
        stats_version: Some("3".into()),
        source: "plugin",
    }
}
