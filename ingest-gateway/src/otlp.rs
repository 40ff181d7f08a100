//! OpenTelemetry traces from current Pants (one span per workunit) → the same build events
//! as the plugin path.
//!
//! Stateless, so any number of gateways can take any batch of any trace:
//! - **Build id**: `otlp_<trace id hex>`, the same for every batch of a trace.
//! - **Every batch** (per trace it holds) becomes a `WorkunitsUpdated`: its spans as workunits,
//!   a heartbeat for the running build. Sinks add late spans to the build's workunit tree;
//!   live updates never change a final record.
//! - **The batch with the root span** (no parent; Pants ends it last, with the run's counters in
//!   `pantsbuild.metrics-v0`) also becomes a `RunEnded`. Its final document is a `build_stats`
//!   JSON synthesized from the root span and the resource attributes, and goes through the
//!   plugin path's own normalization, so a traced build looks the same downstream.
//! - Repeated batches produce identical events (content-derived ids): idempotent like the rest.

use std::collections::{BTreeMap, HashMap};

use buildstats_schemas::CiInfo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, Span};
use serde_json::{json, Map, Value};

pub const SERVICE_NAME: &str = "pantsbuild";
pub const ATTR_WORKUNIT_SPAN_ID: &str = "pantsbuild.workunit.span_id";
pub const ATTR_PARENT_SPAN_IDS: &str = "pantsbuild.workunit.parent_span_ids";
pub const ATTR_LEVEL: &str = "pantsbuild.workunit.level";
pub const ATTR_METADATA_PREFIX: &str = "pantsbuild.workunit.metadata.";
pub const ATTR_METRICS: &str = "pantsbuild.metrics-v0";

/// The proto3 JSON mapping lets an encoder omit fields at their default value, so an empty
/// attribute array arrives as `{"arrayValue": {}}` (Pants' root span has no parents), which
/// `opentelemetry-proto`'s serde types refuse. Fill in the empty lists before decoding.
pub fn fill_omitted_json_defaults(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in ["arrayValue", "kvlistValue"] {
                if let Some(Value::Object(inner)) = map.get_mut(key) {
                    inner.entry("values").or_insert_with(|| Value::Array(Vec::new()));
                }
            }
            map.values_mut().for_each(fill_omitted_json_defaults);
        }
        Value::Array(items) => items.iter_mut().for_each(fill_omitted_json_defaults),
        _ => {}
    }
}

/// The build id of a trace.
pub fn run_id_for_trace(trace_id: &[u8]) -> String {
    format!("otlp_{}", hex::encode(trace_id))
}

/// An attribute value as JSON (arrays and maps kept, bytes as hex).
pub fn any_value_json(value: Option<&AnyValue>) -> Value {
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::BytesValue(b)) => json!(hex::encode(b)),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| any_value_json(Some(v))).collect()),
        Some(any_value::Value::KvlistValue(kv)) => {
            Value::Object(kv.values.iter().map(|kv| (kv.key.clone(), any_value_json(kv.value.as_ref()))).collect())
        }
        // Profiles-only string-table references: meaningless without their dictionary.
        Some(_) => Value::Null,
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<&str, Value> {
    kvs.iter().map(|kv| (kv.key.as_str(), any_value_json(kv.value.as_ref()))).collect()
}

fn as_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The spans of one trace in one export request, with their resource.
pub struct TraceSpans<'a> {
    pub trace_id: Vec<u8>,
    pub resource: BTreeMap<&'a str, Value>,
    pub spans: Vec<&'a Span>,
}

/// What an export request holds, after validation: accepted spans grouped by trace, and how
/// many were rejected and why (for `partial_success`).
pub struct Export<'a> {
    pub traces: Vec<TraceSpans<'a>>,
    pub rejected: i64,
    pub reasons: Vec<String>,
}

/// Group spans by trace; reject those that cannot be a Pants workunit.
pub fn split(request: &ExportTraceServiceRequest) -> Export<'_> {
    let mut by_trace: HashMap<Vec<u8>, TraceSpans<'_>> = HashMap::new();
    let mut order = Vec::new();
    let mut rejected = 0i64;
    let mut reasons = Vec::new();
    let mut reject = |n: usize, reason: String, reasons: &mut Vec<String>| {
        rejected += n as i64;
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
    };
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref().map(|r| attributes(&r.attributes)).unwrap_or_default();
        let spans: Vec<&Span> = resource_spans.scope_spans.iter().flat_map(|s| s.spans.iter()).collect();
        let service = as_str(resource.get("service.name"));
        if service.as_deref() != Some(SERVICE_NAME) {
            reject(
                spans.len(),
                format!("resource service.name is {service:?}, not \"{SERVICE_NAME}\": only Pants traces are builds"),
                &mut reasons,
            );
            continue;
        }
        for span in spans {
            if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
                reject(1, "a span has an invalid trace_id (16 non-zero bytes required)".into(), &mut reasons);
                continue;
            }
            if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
                reject(1, "a span has an invalid span_id (8 non-zero bytes required)".into(), &mut reasons);
                continue;
            }
            if span.name.is_empty() {
                reject(1, "a span has no name (the workunit name)".into(), &mut reasons);
                continue;
            }
            let entry = by_trace.entry(span.trace_id.clone()).or_insert_with(|| {
                order.push(span.trace_id.clone());
                TraceSpans { trace_id: span.trace_id.clone(), resource: resource.clone(), spans: Vec::new() }
            });
            entry.spans.push(span);
        }
    }
    let traces = order.into_iter().filter_map(|t| by_trace.remove(&t)).collect();
    Export { traces, rejected, reasons }
}

/// The workunit id of a span: Pants' own span id attribute when present, else the OTel id.
fn workunit_id(span: &Span, attrs: &BTreeMap<&str, Value>) -> String {
    as_str(attrs.get(ATTR_WORKUNIT_SPAN_ID)).unwrap_or_else(|| hex::encode(&span.span_id))
}

fn parent_ids(span: &Span, attrs: &BTreeMap<&str, Value>) -> Vec<String> {
    match attrs.get(ATTR_PARENT_SPAN_IDS) {
        Some(Value::Array(items)) => items.iter().filter_map(|v| as_str(Some(v))).collect(),
        Some(Value::String(s)) if !s.is_empty() => {
            s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).map(str::to_string).collect()
        }
        _ if !span.parent_span_id.is_empty() && span.parent_span_id.iter().any(|b| *b != 0) => {
            vec![hex::encode(&span.parent_span_id)]
        }
        _ => Vec::new(),
    }
}

/// The root span: the one without a parent.
pub fn is_root(span: &Span) -> bool {
    let attrs = attributes(&span.attributes);
    parent_ids(span, &attrs).is_empty()
}

/// Does any span of this trace's batch report an error?
pub fn has_error(spans: &[&Span]) -> bool {
    spans.iter().any(|s| is_error(s, &attributes(&s.attributes)))
}

fn is_error(span: &Span, attrs: &BTreeMap<&str, Value>) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == status::StatusCode::Error as i32)
        || as_str(attrs.get(ATTR_LEVEL)).is_some_and(|l| l.eq_ignore_ascii_case("error"))
}

/// The goal a rule name stands for, if it looks like a goal rule: `<...>.goals.<goal>.<rule>`
/// (`pants.core.goals.test.run_tests`) or `<...>.<goal>.<goal>`
/// (`pants.backend.project_info.count_loc.count_loc`). Pants' spans carry no description, so
/// this is all there is; a candidate is a goal only as a direct child of the root. Goal names
/// use dashes where rule names use underscores.
fn goal_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    if n >= 3 && parts[n - 3] == "goals" {
        return Some(parts[n - 2].replace('_', "-"));
    }
    (n >= 2 && parts[n - 1] == parts[n - 2] && !parts[n - 1].is_empty()).then(|| parts[n - 1].replace('_', "-"))
}

fn goal_of(span: &Span, root_workunit_id: &str) -> Option<String> {
    let attrs = attributes(&span.attributes);
    if parent_ids(span, &attrs) != [root_workunit_id] {
        return None;
    }
    goal_name(&span.name)
}

/// Spans of a batch that may be goals: goal-like rule names with a single parent.
pub fn goal_candidates(spans: &[&Span]) -> Vec<buildstats_core::db::GoalCandidate> {
    spans
        .iter()
        .filter_map(|s| {
            let attrs = attributes(&s.attributes);
            let parents = parent_ids(s, &attrs);
            let [parent] = parents.as_slice() else { return None };
            Some(buildstats_core::db::GoalCandidate {
                parent_id: parent.clone(),
                goal: goal_name(&s.name)?,
                workunit_id: workunit_id(s, &attrs),
                start_usecs: (s.start_time_unix_nano / 1000) as i64,
                end_usecs: (s.end_time_unix_nano / 1000) as i64,
            })
        })
        .collect()
}

/// The workunit id of the root span (what its children name as parent).
pub fn root_workunit_id(root: &Span) -> String {
    workunit_id(root, &attributes(&root.attributes))
}

/// A span as a workunit of a `workunits` update (the plugin's JSON shape).
pub fn workunit_json(span: &Span) -> Value {
    let attrs = attributes(&span.attributes);
    let mut metadata = Map::new();
    for (k, v) in &attrs {
        if let Some(key) = k.strip_prefix(ATTR_METADATA_PREFIX) {
            metadata.insert(key.to_string(), v.clone());
        }
    }
    let mut wu = json!({
        "workunit_id": workunit_id(span, &attrs),
        "name": span.name,
        "state": "finished",
        "parent_ids": parent_ids(span, &attrs),
        "start_usecs": span.start_time_unix_nano / 1000,
        "end_usecs": span.end_time_unix_nano / 1000,
        "last_update": span.end_time_unix_nano as f64 / 1e9,
    });
    if let Some(level) = as_str(attrs.get(ATTR_LEVEL)) {
        wu["level"] = json!(level);
    }
    if !metadata.is_empty() {
        wu["metadata"] = Value::Object(metadata);
    }
    wu
}

/// The body of a `workunits` update for the spans of one trace.
pub fn workunits_document(run_id: &str, spans: &[&Span]) -> Value {
    json!({"run_id": run_id, "workunits": spans.iter().map(|s| workunit_json(s)).collect::<Vec<_>>()})
}

/// CI details from the OpenTelemetry CI/CD and VCS semantic conventions, when present.
pub fn ci_from_resource(resource: &BTreeMap<&str, Value>) -> Option<CiInfo> {
    let pipeline = as_str(resource.get("cicd.pipeline.name"));
    let run = as_str(resource.get("cicd.pipeline.run.id"));
    if pipeline.is_none() && run.is_none() {
        return None;
    }
    let change = as_str(resource.get("vcs.change.id")).and_then(|c| c.parse::<i64>().ok());
    let ref_type = as_str(resource.get("vcs.ref.head.type"));
    let run_type = match (change, ref_type.as_deref()) {
        (Some(_), _) => "pull_request",
        (None, Some("tag")) => "tag",
        _ => "branch",
    };
    Some(CiInfo {
        provider: as_str(resource.get("cicd.provider.name")).unwrap_or_else(|| "otel".into()),
        run_type: run_type.into(),
        pull_request: change,
        job_name: pipeline,
        build_num: run.as_deref().and_then(|r| r.parse().ok()),
        build_url: as_str(resource.get("cicd.pipeline.run.url.full")),
        ref_name: as_str(resource.get("vcs.ref.head.name")).or_else(|| as_str(resource.get("vcs.repository.ref.name"))),
        username: as_str(resource.get("enduser.id")).or_else(|| as_str(resource.get("user.name"))),
        sha1: as_str(resource.get("vcs.ref.head.revision")).or_else(|| as_str(resource.get("vcs.repository.ref.revision"))),
    })
}

/// The `run_info` fields a trace's resource gives (semantic conventions, newest names first),
/// plus the run's own id, start, and outcome.
fn run_info(run_id: &str, timestamp_s: f64, outcome: &str, resource: &BTreeMap<&str, Value>, fallback_user: &str) -> Map<String, Value> {
    let first = |keys: &[&str]| keys.iter().find_map(|k| as_str(resource.get(k)));
    let mut info = Map::new();
    info.insert("id".into(), json!(run_id));
    info.insert("timestamp".into(), json!(timestamp_s));
    info.insert("outcome".into(), json!(outcome));
    info.insert("user".into(), json!(first(&["user.name", "enduser.id"]).unwrap_or_else(|| fallback_user.to_string())));
    info.insert("machine".into(), json!(first(&["host.name"])));
    info.insert("branch".into(), json!(first(&["vcs.ref.head.name", "vcs.repository.ref.name"])));
    info.insert("revision".into(), json!(first(&["vcs.ref.head.revision", "vcs.repository.ref.revision"])));
    info.insert("version".into(), json!(first(&["service.version"])));
    info
}

/// A `build_stats` run-start report synthesized from a trace's first batch: the run is
/// running (`NOT_AVAILABLE`), started at its earliest span, by the resource's user.
pub fn start_document(run_id: &str, spans: &[&Span], resource: &BTreeMap<&str, Value>, fallback_user: &str) -> Value {
    let start_ns = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
    json!({
        "run_info": run_info(run_id, start_ns as f64 / 1e9, "NOT_AVAILABLE", resource, fallback_user),
        "otlp": {"trace_id": spans.first().map(|s| hex::encode(&s.trace_id)), "resource": resource},
    })
}

/// A `build_stats` final report synthesized from the root span, for the plugin path's
/// normalization. `spans` are the trace's spans in the same batch (goal timings).
///
/// Outcome: FAILURE when `earlier_error` (an earlier batch of the trace had an ERROR span,
/// see `db::trace_failed`) or any span of this batch is an error (status ERROR or level
/// ERROR): Pants does not mark the root span itself. `fallback_user` (the token's user) stands
/// in when the resource names no `user.name`.
pub fn final_document(
    run_id: &str,
    root: &Span,
    spans: &[&Span],
    resource: &BTreeMap<&str, Value>,
    fallback_user: &str,
    earlier_error: bool,
    earlier_goals: &[buildstats_core::db::GoalCandidate],
) -> Value {
    let attrs = attributes(&root.attributes);
    let failed = earlier_error || has_error(spans);
    let root_id = workunit_id(root, &attrs);
    let counters = match attrs.get(ATTR_METRICS) {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => Value::Null,
    };
    let start_s = root.start_time_unix_nano as f64 / 1e9;
    let run_time_s = root.end_time_unix_nano.saturating_sub(root.start_time_unix_nano) as f64 / 1e9;
    let mut goals: Vec<String> = Vec::new();
    let mut workunits: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut wu = workunit_json(s);
            if let Some(goal) = goal_of(s, &root_id) {
                wu["description"] = json!(format!("`{goal}` goal")); // as the plugin path describes goals
                if !goals.contains(&goal) {
                    goals.push(goal);
                }
            }
            wu
        })
        .collect();
    // Goals whose spans came in earlier batches, as minimal goal workunits (for goal timings).
    let in_batch: Vec<String> = workunits.iter().filter_map(|w| w["workunit_id"].as_str().map(str::to_string)).collect();
    for g in earlier_goals.iter().filter(|g| g.parent_id == root_id && !in_batch.contains(&g.workunit_id)) {
        workunits.push(json!({
            "workunit_id": g.workunit_id, "name": format!("goal {}", g.goal), "state": "finished",
            "parent_ids": [root_id], "start_usecs": g.start_usecs, "end_usecs": g.end_usecs,
            "description": format!("`{}` goal", g.goal),
        }));
        if !goals.contains(&g.goal) {
            goals.push(g.goal.clone());
        }
    }
    let metadata = |key: &str| as_str(attrs.get(format!("{ATTR_METADATA_PREFIX}{key}").as_str()));
    let mut info = run_info(run_id, start_s, if failed { "FAILURE" } else { "SUCCESS" }, resource, fallback_user);
    if info["version"].is_null() {
        info.insert("version".into(), json!(metadata("pants_version")));
    }
    info.insert("cmd_line".into(), json!(metadata("cmd_line")));
    info.insert("computed_goals".into(), json!(goals));
    json!({
        "run_info": info,
        "cumulative_timings": [{"label": "main", "timing": run_time_s}],
        "counters": counters,
        "workunits": workunits,
        "otlp": {
            "trace_id": hex::encode(&root.trace_id),
            "root_span_id": hex::encode(&root.span_id),
            "resource": resource,
        },
    })
}

#[cfg(test)]
pub mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;

    pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    pub fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    pub fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start_s: u64, end_s: u64, attrs: Vec<KeyValue>) -> Span {
        let mut attributes = vec![kv(ATTR_WORKUNIT_SPAN_ID, s(&format!("wu{id:02x}")))];
        if let Some(p) = parent {
            attributes.push(kv(
                ATTR_PARENT_SPAN_IDS,
                any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s(&format!("wu{p:02x}"))) }] }),
            ));
        }
        attributes.extend(attrs);
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: start_s * 1_000_000_000,
            end_time_unix_nano: end_s * 1_000_000_000,
            attributes,
            ..Default::default()
        }
    }

    pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s(service)),
                        kv("host.name", s("ci-runner-7")),
                        kv("user.name", s("ada")),
                        kv("vcs.repository.ref.name", s("main")),
                        kv("vcs.ref.head.revision", s("fa7eadb4")),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { scope: Some(InstrumentationScope::default()), spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    pub fn pants_run(trace: u8, failed: bool) -> Vec<Span> {
        let mut root = span(trace, 1, None, "pants_run", 1_700_000_000, 1_700_000_030, vec![kv(
            ATTR_METRICS,
            s(r#"{"local_cache_requests": 10, "local_cache_requests_cached": 7}"#),
        )]);
        if failed {
            root.status = Some(Status { code: status::StatusCode::Error as i32, message: "lint failed".into() });
        }
        vec![
            span(trace, 2, Some(1), "pants.core.goals.lint.lint", 1_700_000_001, 1_700_000_029, vec![]),
            span(trace, 3, Some(2), "pants.backend.python.lint.flake8", 1_700_000_002, 1_700_000_012, vec![kv(
                &format!("{ATTR_METADATA_PREFIX}exit_code"),
                any_value::Value::IntValue(0),
            )]),
            root,
        ]
    }

    #[test]
    fn spans_become_plugin_shaped_workunits() {
        let spans = pants_run(7, false);
        let wu = workunit_json(&spans[1]);
        assert_eq!(wu["workunit_id"], json!("wu03"));
        assert_eq!(wu["parent_ids"], json!(["wu02"]));
        assert_eq!(wu["start_usecs"], json!(1_700_000_002_000_000u64));
        assert_eq!(wu["end_usecs"], json!(1_700_000_012_000_000u64));
        assert_eq!(wu["metadata"]["exit_code"], json!(0));
        assert!(is_root(&spans[2]) && !is_root(&spans[0]));
    }

    #[test]
    fn the_root_span_becomes_a_final_report_that_normalizes_like_a_plugin_one() {
        let request = request(SERVICE_NAME, pants_run(7, true));
        let export = split(&request);
        assert_eq!((export.traces.len(), export.rejected), (1, 0));
        let trace = &export.traces[0];
        let run_id = run_id_for_trace(&trace.trace_id);
        assert_eq!(run_id, format!("otlp_{}", "07".repeat(16)));
        let root = trace.spans.iter().find(|s| is_root(s)).unwrap();
        let doc = final_document(&run_id, root, &trace.spans, &trace.resource, "token-user", false, &[]);
        let parsed: crate::documents::BuildStats = serde_json::from_value(doc).unwrap();
        let ctx = crate::normalize::RequestContext {
            org: "acme".into(),
            repo: "rocket".into(),
            token_is_ci: false,
            pants_version: None,
            plugin_version: None,
            stats_version: None,
            source: "otlp",
        };
        let run = crate::normalize::run_record(&parsed, &ctx, &run_id).unwrap();
        assert_eq!(run.outcome, "FAILURE", "root status ERROR");
        assert_eq!(run.run_time_ms, Some(30_000));
        assert_eq!(run.started_at, 1_700_000_000_000_000);
        assert_eq!((run.user.as_str(), run.machine.as_deref(), run.branch.as_deref()), ("ada", Some("ci-runner-7"), Some("main")));
        assert_eq!(run.revision.as_deref(), Some("fa7eadb4"));
        assert_eq!(run.goals, vec!["lint"]);
        assert_eq!(run.counters["local_cache_requests_cached"], 7);
        let goals = crate::normalize::goal_timings(parsed.workunits.as_deref().unwrap());
        assert_eq!(goals[0].duration_ms, 28_000);
    }

    #[test]
    fn an_error_span_fails_the_run_and_a_missing_user_falls_back_to_the_token() {
        let mut spans = pants_run(5, false);
        spans[1].attributes.push(kv(ATTR_LEVEL, s("ERROR")));
        let mut request = request(SERVICE_NAME, spans);
        request.resource_spans[0].resource.as_mut().unwrap().attributes.retain(|kv| kv.key == "service.name");
        let export = split(&request);
        let trace = &export.traces[0];
        let root = trace.spans.iter().find(|s| is_root(s)).unwrap();
        let doc = final_document("r", root, &trace.spans, &trace.resource, "ci-bot", false, &[]);
        assert_eq!(doc["run_info"]["outcome"], json!("FAILURE"));
        let clean: Vec<&Span> = trace.spans.iter().copied().filter(|s| !has_error(&[s])).collect();
        let earlier = final_document("r", root, &clean, &trace.resource, "ci-bot", true, &[]);
        assert_eq!(earlier["run_info"]["outcome"], json!("FAILURE"), "an error in an earlier batch");
        let none = final_document("r", root, &clean, &trace.resource, "ci-bot", false, &[]);
        assert_eq!(none["run_info"]["outcome"], json!("SUCCESS"));
        assert_eq!(doc["run_info"]["user"], json!("ci-bot"));
        assert_eq!(doc["run_info"]["computed_goals"], json!(["lint"]));
    }

    #[test]
    fn goals_are_recognised_by_rule_name_under_the_root() {
        let root = span(1, 1, None, "pants_run", 0, 10, vec![]);
        let goal = span(1, 2, Some(1), "pants.backend.project_info.count_loc.count_loc", 0, 5, vec![]);
        let nested = span(1, 3, Some(2), "pants.core.goals.lint.lint", 0, 1, vec![]);
        assert_eq!(goal_of(&goal, "wu01").as_deref(), Some("count-loc"));
        assert_eq!(goal_of(&nested, "wu01"), None, "only direct children of the root");
        assert_eq!(goal_of(&root, "wu01"), None);
        assert_eq!(goal_name("pants.core.goals.test.run_tests").as_deref(), Some("test"));
        assert_eq!(goal_name("pants.engine.process.fallible_to_exec_result_or_raise"), None);
    }

    #[test]
    fn goals_from_earlier_batches_count_with_their_timings() {
        let spans = pants_run(4, false);
        let root = &spans[2];
        let earlier = vec![buildstats_core::db::GoalCandidate {
            parent_id: "wu01".into(),
            goal: "check".into(),
            workunit_id: "wu99".into(),
            start_usecs: 1_000_000,
            end_usecs: 4_000_000,
        }];
        let only_root: Vec<&Span> = vec![root];
        let doc = final_document("r", root, &only_root, &BTreeMap::new(), "u", false, &earlier);
        assert_eq!(doc["run_info"]["computed_goals"], json!(["check"]));
        let parsed: crate::documents::BuildStats = serde_json::from_value(doc).unwrap();
        let timings = crate::normalize::goal_timings(parsed.workunits.as_deref().unwrap());
        assert_eq!((timings[0].goal.as_str(), timings[0].duration_ms), ("check", 3_000));
    }

    #[test]
    fn foreign_services_and_broken_ids_are_rejected_and_counted() {
        let mut spans = pants_run(9, false);
        spans[0].span_id = vec![0; 8];
        let mut request = request(SERVICE_NAME, spans);
        request.resource_spans.extend(super::tests::request("checkout-service", pants_run(8, false)).resource_spans);
        let export = split(&request);
        assert_eq!(export.rejected, 4);
        assert_eq!(export.traces.len(), 1);
        assert_eq!(export.traces[0].spans.len(), 2);
        assert_eq!(export.reasons.len(), 2, "{:?}", export.reasons);
    }

    #[test]
    fn two_traces_in_one_request_stay_apart() {
        let mut all = pants_run(1, false);
        all.extend(pants_run(2, false));
        let request = request(SERVICE_NAME, all);
        let export = split(&request);
        assert_eq!(export.traces.len(), 2);
        assert!(export.traces.iter().all(|t| t.spans.len() == 3));
    }

    #[test]
    fn omitted_empty_lists_in_otlp_json_are_accepted() {
        let mut value = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [
            {"key": "pantsbuild.workunit.parent_span_ids", "value": {"arrayValue": {}}},
            {"key": "m", "value": {"kvlistValue": {}}}
        ]}]}]}]});
        fill_omitted_json_defaults(&mut value);
        let attrs = &value["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"];
        assert_eq!(attrs[0]["value"]["arrayValue"]["values"], json!([]));
        assert_eq!(attrs[1]["value"]["kvlistValue"]["values"], json!([]));
    }

    #[test]
    fn a_first_batch_reports_a_running_build_from_its_earliest_span() {
        let spans = pants_run(3, false);
        let batch: Vec<&Span> = spans[..2].iter().collect();
        let request = request(SERVICE_NAME, vec![]);
        let resource = attributes(&request.resource_spans[0].resource.as_ref().unwrap().attributes);
        let doc = start_document("r", &batch, &resource, "u");
        assert_eq!(doc["run_info"]["outcome"], json!("NOT_AVAILABLE"));
        assert_eq!(doc["run_info"]["timestamp"], json!(1_700_000_001.0));
        assert_eq!((doc["run_info"]["user"].clone(), doc["run_info"]["branch"].clone()), (json!("ada"), json!("main")));
    }

    #[test]
    fn ci_details_follow_the_semantic_conventions() {
        let resource: BTreeMap<&str, Value> = BTreeMap::from([
            ("cicd.pipeline.name", json!("build")),
            ("cicd.pipeline.run.id", json!("4242")),
            ("vcs.change.id", json!("77")),
            ("vcs.ref.head.name", json!("feature")),
        ]);
        let ci = ci_from_resource(&resource).unwrap();
        assert_eq!((ci.run_type.as_str(), ci.pull_request, ci.build_num), ("pull_request", Some(77), Some(4242)));
        assert!(ci_from_resource(&BTreeMap::new()).is_none());
    }
}
