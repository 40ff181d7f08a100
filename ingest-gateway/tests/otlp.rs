//! OTLP/HTTP traces through the gateway onto the real broker.

mod common;

use std::io::Write;

use buildstats_core::tokens::Scope;
use buildstats_schemas::{decode, Event};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn text(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A Pants-shaped trace: root `pants_run` (id 1) with counters, a goal, and `n` rules.
fn trace(trace_id: [u8; 16], n: u32) -> Vec<Span> {
    let t0 = 1_764_806_400_000_000_000u64; // 2025-12-04T00:00:00Z
    let mk = |id: u32, parent: Option<u32>, name: &str, start: u64, end: u64, extra: Vec<KeyValue>| {
        let mut attributes = vec![kv("pantsbuild.workunit.span_id", text(&format!("{id:016x}")))];
        if let Some(p) = parent {
            attributes.push(kv(
                "pantsbuild.workunit.parent_span_ids",
                any_value::Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(text(&format!("{p:016x}"))) }] }),
            ));
        }
        attributes.extend(extra);
        Span {
            trace_id: trace_id.to_vec(),
            span_id: (id as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: parent.map(|p| (p as u64 + 1).to_be_bytes().to_vec()).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: t0 + start,
            end_time_unix_nano: t0 + end,
            attributes,
            ..Default::default()
        }
    };
    let mut spans = vec![mk(2, Some(1), "pants.core.goals.lint.lint", 1_000_000, 9_000_000_000, vec![])];
    for i in 0..n {
        spans.push(mk(100 + i, Some(2), "pants.engine.process.fallible_to_exec_result_or_raise", 2_000_000 + i as u64, 3_000_000 + 2 * i as u64, vec![]));
    }
    spans.push(mk(1, None, "pants_run", 0, 10_000_000_000, vec![kv("pantsbuild.metrics-v0", text(r#"{"local_cache_requests": 40, "local_cache_requests_cached": 30}"#))]));
    spans
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text("pantsbuild")), kv("host.name", text("laptop")), kv("user.name", text("grace")), kv("vcs.repository.ref.name", text("main"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(gw: &TestGateway, path: &str, token: &str, body: Vec<u8>, content_type: &str, gzipped: bool) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{}{path}", gw.base_url))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body);
    if gzipped {
        r = r.header("content-encoding", "gzip");
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn a_trace_in_shuffled_repeated_batches_becomes_one_build() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let trace_id = *uuid::Uuid::new_v4().as_bytes();
    let spans = trace(trace_id, 250);
    let total = spans.len();
    let mut batches: Vec<Vec<Span>> = spans.chunks(100).map(|c| c.to_vec()).collect();
    batches.rotate_right(1); // the batch with the root arrives first
    let repeated = batches[1].clone();
    batches.push(repeated); // an exporter retry
    for (i, batch) in batches.into_iter().enumerate() {
        let body = request(batch).encode_to_vec();
        let (body, gz) = if i % 2 == 0 { (gzip(&body), true) } else { (body, false) };
        let path = if i == 1 { "//v1/traces" } else { "/v1/traces" };
        let response = post(&gw, path, &token, body, "application/x-protobuf", gz).await;
        assert_eq!(response.status().as_u16(), 200, "batch {i}");
        assert_eq!(response.headers()["content-type"], "application/x-protobuf");
        let decoded = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
        assert!(decoded.partial_success.is_none(), "nothing rejected");
    }

    let run_id = format!("otlp_{}", hex::encode(trace_id));
    let topic = gw.topic().await;
    let events = topic.events_of(&run_id);
    let ends: Vec<_> = events.iter().filter_map(|e| match e { Event::RunEnded(r) => Some(r), _ => None }).collect();
    assert_eq!(ends.len(), 1, "the root span arrived once: one final report");
    let end = ends[0];
    assert_eq!((end.via.as_str(), end.run.source.as_str()), ("otlp", "otlp"));
    assert_eq!((end.run.org.as_str(), end.run.repo.as_str()), (gw.org.as_str(), gw.repo.as_str()), "tenant from the token");
    assert_eq!(end.run.outcome, "SUCCESS");
    assert_eq!(end.run.run_time_ms, Some(10_000));
    assert_eq!((end.run.user.as_str(), end.run.branch.as_deref()), ("grace", Some("main")));
    assert_eq!(end.run.counters["local_cache_requests"], 40);
    // The root's batch came first here, so the goal span (in a later batch) arrived after the
    // final report: late spans join the workunit tree but never change the final record.
    assert!(end.run.goals.is_empty(), "{:?}", end.run.goals);
    assert!(matches!(events[0], Event::RunStarted(_)), "the trace's first batch reports the run start");
    assert_eq!(events.iter().filter(|e| matches!(e, Event::RunStarted(_))).count(), 1, "only the first batch does");
    let Event::RunStarted(start) = events[0] else { unreachable!() };
    assert_eq!((start.run.outcome.as_str(), start.run.user.as_str()), ("NOT_AVAILABLE", "grace"));
    let updates: Vec<_> = events.iter().filter_map(|e| match e { Event::WorkunitsUpdated(u) => Some(u), _ => None }).collect();
    assert_eq!(updates.len(), 4, "one workunits update per batch, the repeat included");
    let mut seen = std::collections::BTreeSet::new();
    for u in &updates {
        let Event::WorkunitList(list) = decode(&topic.blob(&u.workunits)).unwrap() else { panic!() };
        seen.extend(list.workunits.into_iter().map(|w| w.workunit_id));
    }
    assert_eq!(seen.len(), total, "every span is a workunit");
    let ids: std::collections::BTreeSet<_> = updates.iter().map(|u| u.header.event_id.clone()).collect();
    assert_eq!(ids.len(), 3, "the repeated batch has the same event id: sinks see a repeat");
    gw.stop().await;
}

#[tokio::test]
async fn otlp_json_encoding_is_accepted_too() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let trace_id = *uuid::Uuid::new_v4().as_bytes();
    let body = serde_json::to_vec(&request(trace(trace_id, 20))).unwrap();
    let as_text = String::from_utf8(body.clone()).unwrap();
    assert!(as_text.contains(&hex::encode(trace_id)), "OTLP/JSON ids are hex");
    let response = post(&gw, "/v1/traces", &token, gzip(&body), "application/json", true).await;
    assert_eq!(response.status().as_u16(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer.is_object());
    let topic = gw.topic().await;
    assert!(topic.events_of(&format!("otlp_{}", hex::encode(trace_id))).iter().any(|e| matches!(e, Event::RunEnded(_))));
    gw.stop().await;
}

#[tokio::test]
async fn refused_exports_change_nothing() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let (read_token, _) = gw.token_for(&gw.org, &gw.repo, Scope::Read, false).await;
    let body = request(trace(*uuid::Uuid::new_v4().as_bytes(), 5)).encode_to_vec();
    let client = reqwest::Client::new();
    let no_token = client.post(format!("{}/v1/traces", gw.base_url)).header("content-type", "application/x-protobuf").body(body.clone()).send().await.unwrap();
    assert_eq!(no_token.status().as_u16(), 403);
    assert_eq!(post(&gw, "/v1/traces", &read_token, body.clone(), "application/x-protobuf", false).await.status().as_u16(), 403);
    assert_eq!(post(&gw, "/v1/traces", "not-a-token", body.clone(), "application/x-protobuf", false).await.status().as_u16(), 403);
    let malformed = post(&gw, "/v1/traces", &token, b"\xff\xff\xff garbage".to_vec(), "application/x-protobuf", false).await;
    assert_eq!(malformed.status().as_u16(), 400);
    // Refusals carry a google.rpc.Status in the request's encoding.
    assert_eq!(malformed.headers()["content-type"], "application/x-protobuf");
    let status = ingest_gateway::routes::otlp::RpcStatus::decode(malformed.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(status.message.contains("not an OTLP ExportTraceServiceRequest"), "{}", status.message);
    let bad_json = post(&gw, "/v1/traces", &token, b"{not json".to_vec(), "application/json", false).await;
    assert_eq!(bad_json.status().as_u16(), 400);
    let status: serde_json::Value = bad_json.json().await.unwrap();
    assert_eq!(status["code"], serde_json::json!(3));
    assert!(status["message"].as_str().unwrap().contains("JSON"), "{status}");
    assert_eq!(post(&gw, "/v1/traces", &token, body.clone(), "text/plain", false).await.status().as_u16(), 415);
    let bomb = gzip(&vec![0u8; 80 * 1024 * 1024]);
    assert_eq!(post(&gw, "/v1/traces", &token, bomb, "application/x-protobuf", true).await.status().as_u16(), 413);

    // A trace of another service: accepted as a request, every span rejected and counted.
    let mut foreign = request(trace(*uuid::Uuid::new_v4().as_bytes(), 3));
    foreign.resource_spans[0].resource.as_mut().unwrap().attributes[0] = kv("service.name", text("checkout"));
    let response = post(&gw, "/v1/traces", &token, foreign.encode_to_vec(), "application/x-protobuf", false).await;
    assert_eq!(response.status().as_u16(), 200);
    let decoded = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = decoded.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 5);
    assert!(partial.error_message.contains("pantsbuild"), "{}", partial.error_message);

    assert!(gw.topic().await.records.is_empty(), "refused exports left records");
    gw.stop().await;
}
