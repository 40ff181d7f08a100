//! From Pants' documents to the normalized records every sink reads.
//!
//! Rules kept from the original service: `cmd_line` is trimmed to 1024 characters, at most
//! 10 specs of at most 128 characters each are kept, run time is
//! `cumulative_timings[0].timing` of the final report. CI builds reported with a CI token are
//! attributed to the CI actor, the same way on every endpoint (see [`attribute_user`]).

use std::collections::{BTreeMap, HashMap};

use buildstats_schemas::{CiInfo, GoalTiming, RuleTiming, RunRecord, Workunit};
use sha2::{Digest, Sha256};

use crate::ci;
use crate::documents::{counters, BuildStats, RunInfo, WorkunitDoc};

pub const MAX_CMD_LINE_CHARS: usize = 1024;
pub const MAX_SPECS: usize = 10;
pub const MAX_SPEC_CHARS: usize = 128;
pub const MAX_GOALS: usize = 50;
pub const MAX_RULE_TIMINGS: usize = 50;
pub const OUTCOME_RUNNING: &str = "NOT_AVAILABLE";

/// What the gateway knows about a request besides its document.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub org: String,
    pub repo: String,
    pub token_is_ci: bool,
    pub pants_version: Option<String>,
    pub plugin_version: Option<String>,
    pub stats_version: Option<String>,
    pub source: &'static str,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DocumentError {
    #[error("run_info is missing")]
    NoRunInfo,
    #[error("run_info.id is missing")]
    NoRunId,
    #[error("run_info.id {doc:?} does not match the run id in the URL {url:?}")]
    RunIdMismatch { doc: String, url: String },
    #[error("run_info.timestamp is missing or not a number")]
    NoTimestamp,
}

fn trim_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s.to_string(),
    }
}

/// `User-Agent: pants/v2.16.0 toolchain/v0.27.0` → (pants, plugin) versions.
pub fn versions_from_user_agent(ua: Option<&str>) -> (Option<String>, Option<String>) {
    let mut pants = None;
    let mut plugin = None;
    for token in ua.unwrap_or("").split_whitespace() {
        if let Some(v) = token.strip_prefix("pants/") {
            pants = Some(v.trim_start_matches('v').to_string());
        } else if let Some(v) = token.strip_prefix("toolchain/") {
            plugin = Some(v.trim_start_matches('v').to_string());
        }
    }
    (pants, plugin)
}

/// Who a build is attributed to: the CI actor when a CI token reports a CI build whose
/// environment names one, else the `run_info.user` Pants recorded.
pub fn attribute_user(run_info: &RunInfo, ci: Option<&CiInfo>, token_is_ci: bool) -> String {
    let actor = ci.and_then(|c| c.username.as_deref()).filter(|u| !u.is_empty());
    match actor {
        Some(actor) if token_is_ci => actor.to_string(),
        _ => run_info.user.clone().unwrap_or_default(),
    }
}

/// The `ci_user_api_id` handed to the plugin at run start, which it echoes back in
/// `X-Toolchain-Impersonate`. Opaque and stable for one CI actor of one repo.
pub fn ci_user_api_id(org: &str, repo: &str, ci: &CiInfo) -> Option<String> {
    let actor = ci.username.as_deref().filter(|u| !u.is_empty())?;
    let digest = Sha256::digest(format!("{org}\0{repo}\0{}\0{actor}", ci.provider).as_bytes());
    Some(format!("ciu_{}", &hex::encode(digest)[..32]))
}

/// Check the run id of a document against the URL's.
pub fn run_id_of<'a>(doc: &'a BuildStats, url_run_id: Option<&str>) -> Result<&'a str, DocumentError> {
    let run_info = doc.run_info.as_ref().ok_or(DocumentError::NoRunInfo)?;
    let id = run_info.id.as_deref().filter(|s| !s.is_empty()).ok_or(DocumentError::NoRunId)?;
    if let Some(url) = url_run_id {
        if url != id {
            return Err(DocumentError::RunIdMismatch { doc: id.to_string(), url: url.to_string() });
        }
    }
    Ok(id)
}

/// The normalized record of a run-start or final document.
pub fn run_record(doc: &BuildStats, ctx: &RequestContext, run_id: &str) -> Result<RunRecord, DocumentError> {
    let run_info = doc.run_info.as_ref().ok_or(DocumentError::NoRunInfo)?;
    let started_at = run_info
        .timestamp
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| (t * 1_000_000.0).round() as i64)
        .ok_or(DocumentError::NoTimestamp)?;
    let ci = ci::ci_info(doc.ci_env.as_ref());
    let mut counter_map = counters(doc.counters.as_ref());
    if counter_map.is_empty() {
        counter_map = root_counters(doc.workunits.as_deref().unwrap_or_default());
    }
    let run_time_ms = doc
        .cumulative_timings
        .as_ref()
        .and_then(|t| t.first())
        .and_then(|t| t.timing)
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| (t * 1000.0).round() as i64);
    Ok(RunRecord {
        run_id: run_id.to_string(),
        org: ctx.org.clone(),
        repo: ctx.repo.clone(),
        user: attribute_user(run_info, ci.as_ref(), ctx.token_is_ci),
        machine: run_info.machine.clone(),
        buildroot: run_info.buildroot.clone().or_else(|| run_info.path.clone()),
        branch: run_info.branch.clone(),
        revision: run_info.revision.clone(),
        goals: run_info.computed_goals.iter().take(MAX_GOALS).cloned().collect(),
        specs: run_info
            .specs_from_command_line
            .iter()
            .take(MAX_SPECS)
            .map(|s| trim_chars(s, MAX_SPEC_CHARS))
            .collect(),
        cmd_line: run_info.cmd_line.as_deref().map(|c| trim_chars(c.trim(), MAX_CMD_LINE_CHARS)),
        outcome: run_info.outcome.clone().filter(|o| !o.is_empty()).unwrap_or_else(|| OUTCOME_RUNNING.to_string()),
        started_at,
        datetime: run_info.datetime.clone(),
        run_time_ms,
        pants_version: run_info.version.clone().or_else(|| ctx.pants_version.clone()),
        plugin_version: ctx.plugin_version.clone(),
        stats_version: ctx.stats_version.clone(),
        ci,
        counters: counter_map,
        source: ctx.source.to_string(),
    })
}

/// Older reports carry counters only on the root workunits.
fn root_counters(workunits: &[WorkunitDoc]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for wu in workunits.iter().filter(|w| w.parents().is_empty()) {
        for (k, v) in counters(wu.counters.as_ref()) {
            *out.entry(k).or_insert(0) += v;
        }
    }
    out
}

fn duration_ms(wu: &WorkunitDoc) -> Option<i64> {
    match (wu.start_usecs, wu.end_usecs) {
        (Some(start), Some(end)) if end >= start => Some(((end - start) / 1000.0).round() as i64),
        _ => None,
    }
}

/// The goal a workunit stands for: Pants describes goal workunits as "`check` goal".
fn goal_of(wu: &WorkunitDoc) -> Option<&str> {
    let description = wu.description.as_deref()?;
    let goal = description.strip_prefix('`')?.strip_suffix("` goal")?;
    (!goal.is_empty() && !goal.contains('`')).then_some(goal)
}

/// Duration of each goal's workunit (summed if a goal ran more than once).
pub fn goal_timings(workunits: &[WorkunitDoc]) -> Vec<GoalTiming> {
    let mut by_goal: BTreeMap<&str, i64> = BTreeMap::new();
    for wu in workunits {
        if let (Some(goal), Some(ms)) = (goal_of(wu), duration_ms(wu)) {
            *by_goal.entry(goal).or_insert(0) += ms;
        }
    }
    by_goal.into_iter().map(|(goal, duration_ms)| GoalTiming { goal: goal.to_string(), duration_ms }).collect()
}

/// Finished workunits aggregated by name, slowest total first, at most `MAX_RULE_TIMINGS`.
pub fn rule_timings(workunits: &[WorkunitDoc]) -> Vec<RuleTiming> {
    let mut by_name: HashMap<&str, RuleTiming> = HashMap::new();
    for wu in workunits {
        let (Some(name), Some(ms)) = (wu.name.as_deref(), duration_ms(wu)) else { continue };
        let entry = by_name
            .entry(name)
            .or_insert_with(|| RuleTiming { name: name.to_string(), count: 0, total_ms: 0, max_ms: 0 });
        entry.count += 1;
        entry.total_ms += ms;
        entry.max_ms = entry.max_ms.max(ms);
    }
    let mut out: Vec<RuleTiming> = by_name.into_values().collect();
    out.sort_by(|a, b| b.total_ms.cmp(&a.total_ms).then_with(|| a.name.cmp(&b.name)));
    out.truncate(MAX_RULE_TIMINGS);
    out
}

/// A workunit in the schema's shape. Workunits without an id or name are dropped.
pub fn workunit(wu: &WorkunitDoc) -> Option<Workunit> {
    Some(Workunit {
        workunit_id: wu.workunit_id.clone().filter(|s| !s.is_empty())?,
        name: wu.name.clone().filter(|s| !s.is_empty())?,
        state: wu.state.clone(),
        version: wu.version.map(|v| v as i64),
        parent_ids: wu.parents(),
        start_usecs: wu.start_usecs.map(|v| v as i64),
        end_usecs: wu.end_usecs.map(|v| v as i64),
        last_update: wu.last_update,
        description: wu.description.clone(),
        level: wu.level.clone(),
        counters: counters(wu.counters.as_ref()),
        metadata_json: wu.metadata.as_ref().filter(|m| !m.is_null()).map(|m| m.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(ci: bool) -> RequestContext {
        RequestContext {
            org: "acme".into(),
            repo: "rocket".into(),
            token_is_ci: ci,
            pants_version: Some("2.16.0".into()),
            plugin_version: Some("0.27.0".into()),
            stats_version: Some("3".into()),
            source: "plugin",
        }
    }

    fn fixture(name: &str) -> BuildStats {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pants-runs");
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    }

    #[test]
    fn a_final_report_normalizes_with_run_time_counters_and_goals() {
        let doc = fixture("pants_run_mypy_with_wu_local_env.json");
        let id = run_id_of(&doc, None).unwrap();
        let run = run_record(&doc, &ctx(false), id).unwrap();
        assert_eq!(run.user, "asher");
        assert_eq!(run.outcome, "SUCCESS");
        assert_eq!(run.goals, vec!["check"]);
        assert_eq!(run.run_time_ms, Some(25_920));
        assert_eq!(run.started_at, 1_681_311_580_956_347);
        assert_eq!(run.counters["local_cache_requests"], 574);
        assert_eq!(run.counters["local_cache_requests_cached"], 558);
        assert_eq!(run.pants_version.as_deref(), Some("2.16.0rc0"));
        assert!(run.ci.is_none());
        let timings = goal_timings(doc.workunits.as_deref().unwrap());
        assert_eq!(timings, vec![GoalTiming { goal: "check".into(), duration_ms: 22_905 }]);
    }

    #[test]
    fn long_command_lines_and_many_specs_are_trimmed() {
        let long = format!(
            r#"{{"run_info": {{"id": "r", "timestamp": 1.5, "cmd_line": "  pants {}  ", "specs_from_command_line": [{}]}}}}"#,
            "é".repeat(2000),
            (0..20).map(|i| format!("\"{}{i}\"", "s".repeat(200))).collect::<Vec<_>>().join(",")
        );
        let doc: BuildStats = serde_json::from_str(&long).unwrap();
        let run = run_record(&doc, &ctx(false), "r").unwrap();
        assert_eq!(run.cmd_line.as_ref().unwrap().chars().count(), MAX_CMD_LINE_CHARS);
        assert!(run.cmd_line.unwrap().starts_with("pants é"));
        assert_eq!(run.specs.len(), MAX_SPECS);
        assert!(run.specs.iter().all(|s| s.chars().count() == MAX_SPEC_CHARS));
        assert_eq!(run.outcome, OUTCOME_RUNNING);
        assert_eq!(run.started_at, 1_500_000);
    }

    #[test]
    fn ci_builds_are_attributed_to_the_actor_only_with_a_ci_token() {
        let doc = fixture("ci_build_pr_final_1.json");
        let with_ci = run_record(&doc, &ctx(true), "x").unwrap();
        assert_eq!(with_ci.user, "asherf");
        let without = run_record(&doc, &ctx(false), "x").unwrap();
        assert_eq!(without.user, "toolchain");
        let ci = with_ci.ci.unwrap();
        let id = ci_user_api_id("acme", "rocket", &ci).unwrap();
        assert_eq!(id, ci_user_api_id("acme", "rocket", &ci).unwrap(), "stable");
        assert_ne!(id, ci_user_api_id("acme", "other", &ci).unwrap(), "per repo");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }

    #[test]
    fn documents_without_ids_or_with_the_wrong_id_are_refused() {
        let doc: BuildStats = serde_json::from_str(r#"{"run_info": {"timestamp": 1}}"#).unwrap();
        assert_eq!(run_id_of(&doc, None).unwrap_err(), DocumentError::NoRunId);
        let doc: BuildStats = serde_json::from_str(r#"{"other": 1}"#).unwrap();
        assert_eq!(run_id_of(&doc, None).unwrap_err(), DocumentError::NoRunInfo);
        let doc: BuildStats = serde_json::from_str(r#"{"run_info": {"id": "a"}}"#).unwrap();
        assert!(matches!(run_id_of(&doc, Some("b")), Err(DocumentError::RunIdMismatch { .. })));
        assert_eq!(run_record(&doc, &ctx(false), "a").unwrap_err(), DocumentError::NoTimestamp);
    }

    #[test]
    fn user_agent_versions() {
        assert_eq!(
            versions_from_user_agent(Some("pants/v2.16.0 toolchain/v0.27.0")),
            (Some("2.16.0".into()), Some("0.27.0".into()))
        );
        assert_eq!(versions_from_user_agent(None), (None, None));
    }

    #[test]
    fn rule_timings_are_aggregated_and_capped() {
        let doc = fixture("run_mypy_typecheck.json");
        let timings = rule_timings(doc.workunits.as_deref().unwrap());
        assert!(!timings.is_empty() && timings.len() <= MAX_RULE_TIMINGS);
        assert!(timings.windows(2).all(|w| w[0].total_ms >= w[1].total_ms));
        assert!(timings.iter().all(|t| t.max_ms <= t.total_ms && t.count >= 1));
    }
}
