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
pub const ATTR_DESCRIPTION: &str = "pantsbuild.workunit.description";
pub const ATTR_METADATA_PREFIX: &str = "pantsbuild.workunit.metadata.";
pub const ATTR_METRICS: &str = "pantsbuild.metrics-v0";

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

fn is_error(span: &Span, attrs: &BTreeMap<&str, Value>) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == status::StatusCode::Error as i32)
        || as_str(attrs.get(ATTR_LEVEL)).is_some_and(|l| l.eq_ignore_ascii_case("error"))
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
    if let Some(description) = as_str(attrs.get(ATTR_DESCRIPTION)) {
        wu["description"] = json!(description);
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

/// A `build_stats` final report synthesized from the root span, for the plugin path's
/// normalization. `spans` are the trace's spans in the same batch (goal timings).
pub fn final_document(run_id: &str, root: &Span, spans: &[&Span], resource: &BTreeMap<&str, Value>) -> Value {
    let attrs = attributes(&root.attributes);
    let failed = is_error(root, &attrs);
    let counters = match attrs.get(ATTR_METRICS) {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => Value::Null,
    };
    let start_s = root.start_time_unix_nano as f64 / 1e9;
    let run_time_s = root.end_time_unix_nano.saturating_sub(root.start_time_unix_nano) as f64 / 1e9;
    let goals: Vec<String> = spans
        .iter()
        .filter_map(|s| as_str(attributes(&s.attributes).get(ATTR_DESCRIPTION)))
        .filter_map(|d| d.strip_prefix('`').and_then(|d| d.strip_suffix("` goal")).map(str::to_string))
        .collect();
    let metadata = |key: &str| as_str(attrs.get(format!("{ATTR_METADATA_PREFIX}{key}").as_str()));
    json!({
        "run_info": {
            "id": run_id,
            "timestamp": start_s,
            "outcome": if failed { "FAILURE" } else { "SUCCESS" },
            "user": as_str(resource.get("user.name")).or_else(|| as_str(resource.get("enduser.id"))),
            "machine": as_str(resource.get("host.name")),
            "branch": as_str(resource.get("vcs.repository.ref.name")).or_else(|| as_str(resource.get("vcs.ref.head.name"))),
            "revision": as_str(resource.get("vcs.ref.head.revision")).or_else(|| as_str(resource.get("vcs.repository.ref.revision"))),
            "version": as_str(resource.get("service.version")).or_else(|| metadata("pants_version")),
            "cmd_line": metadata("cmd_line"),
            "computed_goals": goals,
        },
        "cumulative_timings": [{"label": "main", "timing": run_time_s}],
        "counters": counters,
        "workunits": spans.iter().map(|s| workunit_json(s)).collect::<Vec<_>>(),
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
            span(trace, 2, Some(1), "pants.core.goals.lint.lint", 1_700_000_001, 1_700_000_029, vec![kv(ATTR_DESCRIPTION, s("`lint` goal"))]),
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
        let doc = final_document(&run_id, root, &trace.spans, &trace.resource);
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
