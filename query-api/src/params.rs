//! The parameters of the list endpoints, validated (pure: no I/O). Unknown parameters,
//! repeated ones, bad dates and out-of-range numbers are refused with a message naming the
//! parameter.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::ApiError;

pub const MAX_PAGE_SIZE: usize = 100;

/// Outcomes a build can have, the derived ones included.
pub const OUTCOMES: [&str; 6] = ["SUCCESS", "FAILURE", "ABORTED", "NOT_AVAILABLE", "RUNNING", "TIMEOUT"];

/// The list's sort orders (`-` = descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    StartedDesc,
    StartedAsc,
    RunTimeDesc,
    RunTimeAsc,
}

impl Sort {
    pub const NAMES: [&'static str; 4] = ["-started_at", "started_at", "-run_time", "run_time"];

    pub fn parse(s: &str) -> Result<Sort, ApiError> {
        Ok(match s {
            "-started_at" | "-time" => Sort::StartedDesc,
            "started_at" | "time" => Sort::StartedAsc,
            "-run_time" => Sort::RunTimeDesc,
            "run_time" => Sort::RunTimeAsc,
            other => return Err(ApiError::bad(format!("sort={other:?} is not one of {}", Sort::NAMES.join(", ")))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::StartedDesc => "-started_at",
            Sort::StartedAsc => "started_at",
            Sort::RunTimeDesc => "-run_time",
            Sort::RunTimeAsc => "run_time",
        }
    }
}

/// What a list of builds is filtered by (all optional, all combined with AND; a filter
/// taking several comma-separated values matches any of them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BuildFilter {
    pub users: Vec<String>,
    pub branches: Vec<String>,
    pub outcomes: Vec<String>,
    pub goals: Vec<String>,
    pub ci: Option<bool>,
    pub pull_request: Option<i64>,
    pub run_time_min_ms: Option<i64>,
    pub run_time_max_ms: Option<i64>,
    /// Start times, epoch ms, inclusive earliest, exclusive latest.
    pub earliest_ms: Option<i64>,
    pub latest_ms: Option<i64>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListParams {
    pub filter: BuildFilter,
    pub sort: Sort,
    pub page_size: usize,
    pub cursor: Option<String>,
}

pub const LIST_PARAMS: [&str; 14] = [
    "user", "branch", "outcome", "goals", "ci", "pr", "run_time_min", "run_time_max", "earliest", "latest", "q", "sort", "cursor", "page_size",
];

/// The query string as a map, refusing unknown and repeated parameters.
pub fn single_values(pairs: &[(String, String)], known: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::bad(format!("unknown parameter {k:?}: this endpoint takes {}", known.join(", "))));
        }
        if map.insert(k.clone(), v.clone()).is_some() {
            return Err(ApiError::bad(format!("parameter {k:?} is given twice: give several values comma-separated, once")));
        }
    }
    Ok(map)
}

fn list_of(name: &str, value: &str) -> Result<Vec<String>, ApiError> {
    let items: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if items.is_empty() {
        return Err(ApiError::bad(format!("{name} is empty: give one value or several, comma-separated")));
    }
    if items.len() > 50 || items.iter().any(|i| i.chars().count() > 256) {
        return Err(ApiError::bad(format!("{name}: at most 50 values of at most 256 characters")));
    }
    Ok(items)
}

fn number(name: &str, value: &str, min: i64) -> Result<i64, ApiError> {
    let n: i64 = value.trim().parse().map_err(|_| ApiError::bad(format!("{name}={value:?} is not a whole number")))?;
    if n < min {
        return Err(ApiError::bad(format!("{name}={n} is below {min}")));
    }
    Ok(n)
}

/// A time: RFC 3339 (`2026-12-01T10:00:00Z`), a date (`2026-12-01`, midnight UTC) or epoch
/// milliseconds. Returns epoch ms.
pub fn time_ms(name: &str, value: &str) -> Result<i64, ApiError> {
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc).timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis());
    }
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(ms) = v.parse::<i64>() {
            return Ok(ms);
        }
    }
    Err(ApiError::bad(format!("{name}={value:?} is not a time: give RFC 3339 (2026-12-01T10:00:00Z), a date (2026-12-01) or epoch milliseconds")))
}

fn boolean(name: &str, value: &str) -> Result<bool, ApiError> {
    match value.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(ApiError::bad(format!("{name}={other:?} is not true or false"))),
    }
}

/// Validate a list request's query string.
pub fn list_params(pairs: &[(String, String)], default_page_size: usize) -> Result<ListParams, ApiError> {
    let map = single_values(pairs, &LIST_PARAMS)?;
    let mut f = BuildFilter::default();
    for (k, v) in &map {
        match k.as_str() {
            "user" => f.users = list_of(k, v)?,
            "branch" => f.branches = list_of(k, v)?,
            "outcome" => {
                f.outcomes = list_of(k, v)?.into_iter().map(|o| o.to_ascii_uppercase()).collect();
                if let Some(bad) = f.outcomes.iter().find(|o| !OUTCOMES.contains(&o.as_str())) {
                    return Err(ApiError::bad(format!("outcome {bad:?} is not one of {}", OUTCOMES.join(", "))));
                }
            }
            "goals" => f.goals = list_of(k, v)?,
            "ci" => f.ci = Some(boolean(k, v)?),
            "pr" => f.pull_request = Some(number(k, v, 1)?),
            "run_time_min" => f.run_time_min_ms = Some(number(k, v, 0)?),
            "run_time_max" => f.run_time_max_ms = Some(number(k, v, 0)?),
            "earliest" => f.earliest_ms = Some(time_ms(k, v)?),
            "latest" => f.latest_ms = Some(time_ms(k, v)?),
            "q" => {
                let text = v.trim();
                if text.is_empty() || text.chars().count() > 256 {
                    return Err(ApiError::bad("q: give 1 to 256 characters of text"));
                }
                f.text = Some(text.to_string());
            }
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (f.run_time_min_ms, f.run_time_max_ms) {
        if a > b {
            return Err(ApiError::bad(format!("run_time_min={a} is above run_time_max={b}")));
        }
    }
    if let (Some(a), Some(b)) = (f.earliest_ms, f.latest_ms) {
        if a >= b {
            return Err(ApiError::bad("earliest must be before latest"));
        }
    }
    let sort = map.get("sort").map(|s| Sort::parse(s)).transpose()?.unwrap_or(Sort::StartedDesc);
    let page_size = match map.get("page_size") {
        Some(v) => {
            let n = number("page_size", v, 1)?;
            if n as usize > MAX_PAGE_SIZE {
                return Err(ApiError::bad(format!("page_size={n} is above the maximum of {MAX_PAGE_SIZE}")));
            }
            n as usize
        }
        None => default_page_size.clamp(1, MAX_PAGE_SIZE),
    };
    let cursor = map.get("cursor").cloned().filter(|c| !c.is_empty());
    Ok(ListParams { filter: f, sort, page_size, cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn filters_parse_and_bad_input_names_the_parameter() {
        let p = list_params(
            &pairs(&[("user", "ada,bob"), ("outcome", "success,running"), ("ci", "false"), ("earliest", "2026-12-01"), ("page_size", "100")]),
            20,
        )
        .unwrap();
        assert_eq!(p.filter.users, ["ada", "bob"]);
        assert_eq!(p.filter.outcomes, ["SUCCESS", "RUNNING"]);
        assert_eq!(p.filter.ci, Some(false));
        assert_eq!(p.filter.earliest_ms, Some(1_796_083_200_000));
        assert_eq!(p.page_size, 100);
        assert_eq!(p.sort, Sort::StartedDesc);
        assert_eq!(list_params(&[], 20).unwrap().page_size, 20);

        let err = |q: &[(&str, &str)]| list_params(&pairs(q), 20).unwrap_err().to_string();
        assert!(err(&[("colour", "red")]).contains("unknown parameter \"colour\""));
        assert!(err(&[("page_size", "101")]).contains("maximum of 100"));
        assert!(err(&[("page_size", "0")]).contains("below 1"));
        assert!(err(&[("earliest", "yesterday")]).contains("earliest=\"yesterday\" is not a time"));
        assert!(err(&[("outcome", "GREEN")]).contains("not one of"));
        assert!(err(&[("user", "a"), ("user", "b")]).contains("given twice"));
        assert!(err(&[("sort", "name")]).contains("sort=\"name\""));
        assert!(err(&[("run_time_min", "5"), ("run_time_max", "4")]).contains("above run_time_max"));
        assert!(err(&[("ci", "maybe")]).contains("not true or false"));
    }

    #[test]
    fn times_take_rfc3339_dates_and_epoch_ms() {
        assert_eq!(time_ms("t", "2026-12-01T00:00:01Z").unwrap(), 1_796_083_201_000);
        assert_eq!(time_ms("t", "2026-12-01T01:00:00+01:00").unwrap(), 1_796_083_200_000);
        assert_eq!(time_ms("t", "1764547200000").unwrap(), 1_764_547_200_000);
        assert!(time_ms("t", "-5").is_err());
    }
}
