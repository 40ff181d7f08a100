//! Indicators: time series of a repo's builds from InfluxDB (InfluxQL building and answer
//! parsing; pure, no I/O). Points and their fields are the InfluxDB sink's
//! (`processors::sinks::influxdb::points`).
//!
//! Per interval (and group): build count, run time p50/p95 (InfluxQL `percentile`, nearest
//! rank), cache requests/hits and hit ratio, time saved. Grouped by goal, the series come
//! from the `goals` measurement: count and duration percentiles of that goal, no cache
//! figures.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use processors::sinks::influxdb::client::{quote_ident, quote_literal};
use processors::sinks::influxdb::points::{build_measurement, GOALS};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::{single_values, time_ms};

pub const PARAMS: [&str; 6] = ["earliest", "latest", "interval", "group_by", "user", "branch"];
pub const GROUPS: [&str; 6] = ["none", "goal", "user", "branch", "outcome", "ci"];
/// Most buckets one answer may hold (per group).
pub const MAX_BUCKETS: i64 = 2_000;

#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorParams {
    pub earliest_ms: i64,
    pub latest_ms: i64,
    pub interval: String,
    pub interval_ms: i64,
    pub group_by: Option<String>,
    pub user: Option<String>,
    pub branch: Option<String>,
}

/// `30m`, `1h`, `1d`, `1w`.
pub fn interval_ms(value: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad(format!("interval={value:?} is not a duration like 15m, 1h, 1d or 1w"));
    let v = value.trim();
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    if n < 1 || n > 10_000 {
        return Err(bad());
    }
    Ok(n * unit_ms)
}

pub fn params(pairs: &[(String, String)], now_ms: i64) -> Result<IndicatorParams, ApiError> {
    let map = single_values(pairs, &PARAMS)?;
    let latest_ms = map.get("latest").map(|v| time_ms("latest", v)).transpose()?.unwrap_or(now_ms);
    let earliest_ms = map.get("earliest").map(|v| time_ms("earliest", v)).transpose()?.unwrap_or(latest_ms - 30 * 86_400_000);
    if earliest_ms >= latest_ms {
        return Err(ApiError::bad("earliest must be before latest"));
    }
    let interval = map.get("interval").cloned().unwrap_or_else(|| "1d".into());
    let interval_ms = interval_ms(&interval)?;
    if (latest_ms - earliest_ms) / interval_ms > MAX_BUCKETS {
        return Err(ApiError::bad(format!("earliest..latest holds more than {MAX_BUCKETS} intervals of {interval}: take a longer interval or a shorter range")));
    }
    let group_by = match map.get("group_by").map(String::as_str) {
        None | Some("none") => None,
        Some(g) if GROUPS.contains(&g) => Some(g.to_string()),
        Some(g) => return Err(ApiError::bad(format!("group_by={g:?} is not one of {}", GROUPS.join(", ")))),
    };
    let one = |k: &str| -> Result<Option<String>, ApiError> {
        match map.get(k).map(|v| v.trim()) {
            None => Ok(None),
            Some(v) if v.is_empty() || v.chars().count() > 256 => Err(ApiError::bad(format!("{k}: give 1 to 256 characters"))),
            Some(v) => Ok(Some(v.to_string())),
        }
    };
    Ok(IndicatorParams { earliest_ms, latest_ms, interval: interval.trim().to_string(), interval_ms, group_by, user: one("user")?, branch: one("branch")? })
}

/// The narrowest build measurement with every tag the request groups or filters by.
fn measurement(p: &IndicatorParams) -> &'static str {
    let mut needed: Vec<&str> = p.group_by.iter().map(String::as_str).collect();
    if p.user.is_some() {
        needed.push("user");
    }
    if p.branch.is_some() {
        needed.push("branch");
    }
    build_measurement(&needed)
}

/// The InfluxQL statement of an indicators request.
pub fn statement(org: &str, repo: &str, p: &IndicatorParams) -> String {
    let mut filter = format!(
        "\"org\" = {} AND \"repo\" = {} AND time >= {}ms AND time < {}ms",
        quote_literal(org),
        quote_literal(repo),
        p.earliest_ms,
        p.latest_ms
    );
    if let Some(u) = &p.user {
        filter.push_str(&format!(" AND \"user\" = {}", quote_literal(u)));
    }
    if let Some(b) = &p.branch {
        filter.push_str(&format!(" AND \"branch\" = {}", quote_literal(b)));
    }
    let interval = format!("{}ms", p.interval_ms);
    let group = p.group_by.as_deref().map(|g| format!(", {}", quote_ident(g))).unwrap_or_default();
    if p.group_by.as_deref() == Some("goal") {
        format!(
            "SELECT count(\"duration_ms\") AS \"build_count\", percentile(\"duration_ms\", 50) AS \"p50\", percentile(\"duration_ms\", 95) AS \"p95\" \
             FROM {} WHERE {filter} GROUP BY time({interval}){group} fill(none)",
            quote_ident(GOALS)
        )
    } else {
        format!(
            "SELECT sum(\"count\") AS \"build_count\", percentile(\"run_time_ms\", 50) AS \"p50\", percentile(\"run_time_ms\", 95) AS \"p95\", \
             sum(\"cache_requests\") AS \"cache_requests\", sum(\"cache_hits\") AS \"cache_hits\", sum(\"time_saved_ms\") AS \"time_saved_ms\" \
             FROM {} WHERE {filter} GROUP BY time({interval}){group} fill(none)",
            quote_ident(measurement(p))
        )
    }
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// The points of an InfluxQL answer (times in ms), in time then group order.
pub fn points(answer: &Value, p: &IndicatorParams) -> Vec<Value> {
    let mut out: Vec<(i64, String, Value)> = Vec::new();
    for series in answer["results"][0]["series"].as_array().into_iter().flatten() {
        let columns: Vec<&str> = series["columns"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let group: BTreeMap<String, Value> = match &p.group_by {
            Some(g) => BTreeMap::from([(g.clone(), series["tags"][g].clone())]),
            None => BTreeMap::new(),
        };
        let group_key = serde_json::to_string(&group).expect("json");
        for row in series["values"].as_array().into_iter().flatten() {
            let get = |name: &str| columns.iter().position(|c| *c == name).map(|i| row[i].clone()).unwrap_or(Value::Null);
            let Some(time) = get("time").as_i64() else { continue };
            let requests = get("cache_requests").as_i64();
            let hits = get("cache_hits").as_i64();
            // Six decimals: plenty for a ratio, and the same number in every JSON parser.
            let ratio = match (hits, requests) {
                (Some(h), Some(r)) if r > 0 => json!((h as f64 / r as f64 * 1e6).round() / 1e6),
                _ => Value::Null,
            };
            let point = json!({
                "time": rfc3339(time),
                "group": if p.group_by.is_some() { json!(group) } else { Value::Null },
                "build_count": get("build_count"),
                "run_time_p50_ms": get("p50"),
                "run_time_p95_ms": get("p95"),
                "cache_requests": requests,
                "cache_hits": hits,
                "cache_hit_ratio": ratio,
                "time_saved_ms": get("time_saved_ms"),
            });
            out.push((time, group_key.clone(), point));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    out.into_iter().map(|(_, _, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn statements_hold_the_tenant_and_escape_input() {
        let p = params(&pairs(&[("earliest", "2026-12-01"), ("latest", "2026-12-03"), ("group_by", "user"), ("branch", "it's")]), 0).unwrap();
        let q = statement("acme", "rocket", &p);
        assert!(q.contains("\"org\" = 'acme' AND \"repo\" = 'rocket'"), "{q}");
        assert!(q.contains("\"branch\" = 'it\\'s'"), "{q}");
        assert!(q.contains("GROUP BY time(86400000ms), \"user\""), "{q}");
        assert!(q.contains("FROM \"builds\""), "user and branch together: the full measurement: {q}");
        assert!(statement("acme", "rocket", &IndicatorParams { group_by: Some("goal".into()), ..p.clone() }).contains("FROM \"goals\""));
        let plain = IndicatorParams { group_by: None, branch: None, ..p.clone() };
        assert!(statement("acme", "rocket", &plain).contains("FROM \"builds_by_repo\""));
        let by_user = IndicatorParams { group_by: Some("user".into()), branch: None, ..p };
        assert!(statement("acme", "rocket", &by_user).contains("FROM \"builds_by_user\""));
    }

    #[test]
    fn bad_indicator_parameters_are_refused() {
        let err = |q: &[(&str, &str)]| params(&pairs(q), 1_800_000_000_000).unwrap_err().to_string();
        assert!(err(&[("interval", "1y")]).contains("interval=\"1y\""));
        assert!(err(&[("group_by", "machine")]).contains("group_by=\"machine\""));
        assert!(err(&[("interval", "1m"), ("earliest", "2020-01-01")]).contains("more than"));
        assert!(err(&[("earliest", "2026-12-03"), ("latest", "2026-12-01")]).contains("before latest"));
        assert_eq!(interval_ms("2h").unwrap(), 7_200_000);
    }

    #[test]
    fn answers_become_points_with_ratios() {
        let p = params(&pairs(&[("earliest", "2026-12-01"), ("latest", "2026-12-02")]), 0).unwrap();
        let answer = json!({"results": [{"series": [{"name": "builds", "columns": ["time", "build_count", "p50", "p95", "cache_requests", "cache_hits", "time_saved_ms"],
            "values": [[1796083200000i64, 3, 100, 300, 10, 4, 50]]}]}]});
        let pts = points(&answer, &p);
        assert_eq!(pts.len(), 1);
        assert_eq!(pts[0]["time"], "2026-12-01T00:00:00Z");
        assert_eq!(pts[0]["cache_hit_ratio"], json!(0.4));
        assert_eq!(pts[0]["group"], Value::Null);
    }
}
