//! Encoding of final reports into InfluxDB points (pure: no I/O).
//!
//! Measurements, all at the same time; the full tag set is `org`, `repo`, `user`, `branch`,
//! `outcome`, `ci` (`true`/`false`):
//!
//! | measurement | tags | fields |
//! |---|---|---|
//! | `builds` | all six | `count`=1, `run_time_ms`, `workunit_count`, `local_cache_requests`, `local_cache_hits`, `remote_cache_requests`, `remote_cache_hits`, `cache_requests`, `cache_hits`, `cache_hit_ratio` (when requests > 0), `time_saved_ms`, `run_id` |
//! | `builds_by_repo`, `builds_by_user`, `builds_by_branch` | `org`, `repo` (+ `user` / `branch`) | the same but `run_id` |
//! | `goals` | all six + `goal` | `duration_ms` |
//! | `rules` | all six + `rule` | `count`, `total_ms`, `max_ms` |
//!
//! Tags stay low cardinality (no run id, no machine). A point is identified by measurement +
//! tags + time, so the time is the build's start (whole milliseconds) plus an offset below
//! one millisecond derived from the build key ([`point_time_ns`]): two builds never collide,
//! and a build's points can be found and deleted by their time.

use buildstats_schemas::RunEnded;
use influxdb_line_protocol::builder::{BeforeMeasurement, LineProtocolBuilder};

use crate::sink::{BuildKey, Rejected};

pub const BUILDS: &str = "builds";
/// The same build points with fewer tags: a query that needs no other tag reads one series
/// per repo (or per user, per branch) instead of every combination of the `builds` tags.
/// InfluxDB's cost grows with the series a query touches.
pub const BUILDS_BY_REPO: &str = "builds_by_repo";
pub const BUILDS_BY_USER: &str = "builds_by_user";
pub const BUILDS_BY_BRANCH: &str = "builds_by_branch";
/// Each build-level measurement and the tags it has (besides `org` and `repo`), narrowest first.
pub const BUILD_MEASUREMENTS: [(&str, &[&str]); 4] = [
    (BUILDS_BY_REPO, &[]),
    (BUILDS_BY_USER, &["user"]),
    (BUILDS_BY_BRANCH, &["branch"]),
    (BUILDS, &["user", "branch", "outcome", "ci"]),
];
pub const GOALS: &str = "goals";
pub const RULES: &str = "rules";
pub const MEASUREMENTS: [&str; 6] = [BUILDS, BUILDS_BY_REPO, BUILDS_BY_USER, BUILDS_BY_BRANCH, GOALS, RULES];

/// The narrowest build-level measurement that has every tag in `needed`.
pub fn build_measurement(needed: &[&str]) -> &'static str {
    BUILD_MEASUREMENTS.iter().find(|(_, tags)| needed.iter().all(|n| tags.contains(n))).map(|(m, _)| *m).unwrap_or(BUILDS)
}

/// FNV-1a, 64 bit: stable across versions and platforms (unlike `std`'s hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The time of a build's points: its start, truncated to the millisecond, plus
/// `fnv1a(key) mod 10^6` nanoseconds.
pub fn point_time_ns(key: &BuildKey, started_at_us: i64) -> i64 {
    started_at_us.div_euclid(1000) * 1_000_000 + (fnv1a(key.joined().as_bytes()) % 1_000_000) as i64
}

/// Counters of a run, by the names Pants gives them.
fn counter(event: &RunEnded, name: &str) -> i64 {
    event.run.counters.get(name).copied().unwrap_or(0)
}

/// The run-level indicators, as (field, value) pairs.
pub struct Indicators {
    pub local_cache_requests: i64,
    pub local_cache_hits: i64,
    pub remote_cache_requests: i64,
    pub remote_cache_hits: i64,
    pub time_saved_ms: i64,
}

impl Indicators {
    pub fn of(event: &RunEnded) -> Indicators {
        Indicators {
            local_cache_requests: counter(event, "local_cache_requests"),
            local_cache_hits: counter(event, "local_cache_requests_cached"),
            remote_cache_requests: counter(event, "remote_cache_requests"),
            remote_cache_hits: counter(event, "remote_cache_requests_cached"),
            time_saved_ms: counter(event, "local_cache_total_time_saved_ms") + counter(event, "remote_cache_total_time_saved_ms"),
        }
    }

    pub fn cache_requests(&self) -> i64 {
        self.local_cache_requests + self.remote_cache_requests
    }

    pub fn cache_hits(&self) -> i64 {
        self.local_cache_hits + self.remote_cache_hits
    }
}

fn tags<'a>(key: &'a BuildKey, event: &'a RunEnded) -> Vec<(&'static str, &'a str)> {
    let ci = if event.run.ci.is_some() { "true" } else { "false" };
    // Line protocol has no empty tag values: an absent branch is an absent tag.
    [("org", key.org.as_str()), ("repo", key.repo.as_str()), ("user", event.run.user.as_str()), ("branch", event.run.branch.as_deref().unwrap_or("")), ("outcome", event.run.outcome.as_str()), ("ci", ci)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

enum Field<'a> {
    I(i64),
    F(f64),
    S(&'a str),
}

fn line(
    lp: LineProtocolBuilder<Vec<u8>, BeforeMeasurement>,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, Field<'_>)],
    time: i64,
) -> LineProtocolBuilder<Vec<u8>, BeforeMeasurement> {
    let mut m = lp.measurement(measurement);
    for (k, v) in tags {
        m = m.tag(k, v);
    }
    let (first, rest) = fields.split_first().expect("a point has a field");
    let mut f = match &first.1 {
        Field::I(v) => m.field(first.0, *v),
        Field::F(v) => m.field(first.0, *v),
        Field::S(v) => m.field(first.0, *v),
    };
    for (k, v) in rest {
        f = match v {
            Field::I(v) => f.field(k, *v),
            Field::F(v) => f.field(k, *v),
            Field::S(v) => f.field(k, *v),
        };
    }
    f.timestamp(time).close_line()
}

/// The points of a final report, in line protocol (nanosecond precision).
pub fn final_report(key: &BuildKey, event: &RunEnded) -> Result<Vec<u8>, Rejected> {
    let run = &event.run;
    key.check_record(run)?;
    let time = point_time_ns(key, run.started_at);
    let tags = tags(key, event);
    let ind = Indicators::of(event);
    let mut fields = vec![("count", Field::I(1)), ("workunit_count", Field::I(i64::from(event.workunit_count)))];
    if let Some(ms) = run.run_time_ms {
        fields.push(("run_time_ms", Field::I(ms)));
    }
    fields.extend([
        ("local_cache_requests", Field::I(ind.local_cache_requests)),
        ("local_cache_hits", Field::I(ind.local_cache_hits)),
        ("remote_cache_requests", Field::I(ind.remote_cache_requests)),
        ("remote_cache_hits", Field::I(ind.remote_cache_hits)),
        ("cache_requests", Field::I(ind.cache_requests())),
        ("cache_hits", Field::I(ind.cache_hits())),
        ("time_saved_ms", Field::I(ind.time_saved_ms)),
    ]);
    if ind.cache_requests() > 0 {
        fields.push(("cache_hit_ratio", Field::F(ind.cache_hits() as f64 / ind.cache_requests() as f64)));
    }
    // The narrow measurements first; the full one also names the run (how a tombstone finds
    // the build's time).
    let mut lp = LineProtocolBuilder::new();
    for (measurement, extra) in &BUILD_MEASUREMENTS[..3] {
        let narrow: Vec<(&str, &str)> = tags.iter().filter(|(k, _)| *k == "org" || *k == "repo" || extra.contains(k)).copied().collect();
        lp = line(lp, measurement, &narrow, &fields, time);
    }
    fields.push(("run_id", Field::S(&key.run_id)));
    lp = line(lp, BUILDS, &tags, &fields, time);
    for goal in &event.goal_timings {
        if goal.goal.is_empty() {
            continue;
        }
        let mut goal_tags = tags.clone();
        goal_tags.push(("goal", goal.goal.as_str()));
        lp = line(lp, GOALS, &goal_tags, &[("duration_ms", Field::I(goal.duration_ms))], time);
    }
    for rule in &event.rule_timings {
        if rule.name.is_empty() {
            continue;
        }
        let mut rule_tags = tags.clone();
        rule_tags.push(("rule", rule.name.as_str()));
        let fields = [("count", Field::I(rule.count)), ("total_ms", Field::I(rule.total_ms)), ("max_ms", Field::I(rule.max_ms))];
        lp = line(lp, RULES, &rule_tags, &fields, time);
    }
    Ok(lp.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildstats_schemas::{CiInfo, GoalTiming, RuleTiming, RunRecord};
    use std::collections::BTreeMap;

    fn ended(run_id: &str, branch: Option<&str>, counters: &[(&str, i64)]) -> (BuildKey, RunEnded) {
        let ci = CiInfo { provider: "github".into(), run_type: "branch".into(), pull_request: None, job_name: None, build_num: None, build_url: None, ref_name: None, username: None, sha1: None };
        let run = RunRecord {
            user: "ada lovelace".into(),
            branch: branch.map(String::from),
            cmd_line: None,
            run_time_ms: Some(2_500),
            ci: Some(ci),
            counters: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            ..crate::test_records::run_record(run_id)
        };
        let event = RunEnded {
            goal_timings: vec![GoalTiming { goal: "test".into(), duration_ms: 2_000 }],
            rule_timings: vec![RuleTiming { name: "pants.core.goals.test.run_tests".into(), count: 3, total_ms: 900, max_ms: 500 }],
            ..crate::test_records::run_ended(run)
        };
        (crate::test_records::key(run_id), event)
    }

    #[test]
    fn a_build_has_one_time_unique_to_it_within_its_start_millisecond() {
        let (a, _) = ended("run_a", None, &[]);
        let (b, _) = ended("run_b", None, &[]);
        let ta = point_time_ns(&a, 1_700_000_000_123_456);
        assert_eq!(ta / 1_000_000, 1_700_000_000_123, "the start millisecond is kept");
        assert_eq!(ta, point_time_ns(&a, 1_700_000_000_123_999), "same build, same time");
        assert_ne!(ta, point_time_ns(&b, 1_700_000_000_123_456), "another build, another time");
        // Stable across releases: points written by an older build must stay addressable.
        // (the published FNV-1a 64 test vectors)
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn final_reports_become_escaped_points_with_cache_indicators() {
        let (key, event) = ended("run_a", Some("feature/x y"), &[("local_cache_requests", 10), ("local_cache_requests_cached", 4), ("remote_cache_requests", 10), ("remote_cache_requests_cached", 1), ("local_cache_total_time_saved_ms", 70)]);
        let text = String::from_utf8(final_report(&key, &event).unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        let t = point_time_ns(&key, event.run.started_at);
        assert!(lines[0].starts_with("builds_by_repo,org=acme,repo=rocket count=1i,"), "{}", lines[0]);
        assert!(lines[1].starts_with(r"builds_by_user,org=acme,repo=rocket,user=ada\ lovelace count=1i,"), "{}", lines[1]);
        assert!(lines[2].starts_with(r"builds_by_branch,org=acme,repo=rocket,branch=feature/x\ y count=1i,"), "{}", lines[2]);
        assert!(lines[3].starts_with(r"builds,org=acme,repo=rocket,user=ada\ lovelace,branch=feature/x\ y,outcome=SUCCESS,ci=true "), "{}", lines[3]);
        assert!(lines[3].contains("cache_requests=20i,cache_hits=5i,time_saved_ms=70i,cache_hit_ratio=0.25,run_id=\"run_a\""), "{}", lines[3]);
        assert!(!lines[0].contains("run_id"), "only the full measurement names the run");
        assert!(lines.iter().all(|l| l.ends_with(&format!(" {t}"))), "one time for every point of the build");
        assert!(lines[4].starts_with("goals,") && lines[4].contains(",goal=test duration_ms=2000i"), "{}", lines[4]);
        assert!(lines[5].contains(",rule=pants.core.goals.test.run_tests count=3i,total_ms=900i,max_ms=500i"), "{}", lines[5]);
        let (_, no_branch) = ended("run_a", None, &[]);
        let text = String::from_utf8(final_report(&key, &no_branch).unwrap()).unwrap();
        assert!(!text.contains("branch="), "no empty tags: {text}");
        assert!(!text.contains("cache_hit_ratio"), "no ratio without requests: {text}");
    }
}
