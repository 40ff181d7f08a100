//! The query API end to end: builds sent through the gateway (in-process) flow through tansu
//! to real `buildstats sink` processes for all four stores (moto, osmem-server, InfluxDB),
//! and are found, opened and counted through the query API alone.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use buildstats_core::tokens::Scope;
use reqwest::Method;
use serde_json::{json, Value};
use support::common::{fixtures_dir, new_run_id, send_artifacts, send_doc, status_json};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(240);

/// 2026-11-02T10:00:00Z and 2026-11-03T10:00:00Z, epoch seconds.
const DAY1: f64 = 1_793_613_600.0;
const DAY2: f64 = DAY1 + 86_400.0;

fn group(config: &buildstats_core::config::Config, sink: &str) -> String {
    format!("{}-{sink}", config.sinks.group_prefix)
}

/// The run ids of every page of a list, following `next_cursor`; asserts `total` on each.
async fn all_pages(q: &QueryServer, token: &str, path: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    for _ in 0..10_000 {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let page = q.json(&url, token).await;
        for r in page["results"].as_array().unwrap() {
            ids.push(r["run_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
    panic!("{path}: more than 10,000 pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_sent_by_the_plugin_is_found_opened_and_counted_through_the_query_api() {
    let SinkTest { config, gw, token, stores: _, broker: _broker, serial: _serial } = SinkTest::start_with(|c| c.kafka.record_limit_bytes = 64 * 1024).await;
    let sinks: Vec<SinkProcess> = ["dynamodb", "s3", "opensearch", "influxdb"].iter().map(|s| SinkProcess::spawn(&config, s, None)).collect();
    let q = QueryServer::start(&config).await;
    let base = format!("/api/v1/repos/{}/{}/builds/", gw.org, gw.repo);

    // Five finished builds on two days, one running now, one that stopped reporting.
    let mut run = BTreeMap::new();
    let mut docs = BTreeMap::new();
    for (label, name, ts, start_only) in [
        ("A", "pants_jvm_rules_run.json", DAY1, false),
        ("B", "pants_run_mypy_with_wu_local_env.json", DAY1 + 60.0, false),
        ("C", "remote_execution_failed.json", DAY1 + 120.0, false),
        ("D", "pants_package_run.json", DAY2, false),
        ("E", "run_lint_failed.json", DAY2 + 60.0, false),
        ("R", "ci_build_pr_start_1.json", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64(), true),
        ("T", "travis_branch_start_1.json", DAY2 + 7200.0, true),
    ] {
        let (id, doc) = send_fixture(&gw, &token, name, ts, start_only).await;
        run.insert(label, id);
        docs.insert(label, doc);
    }
    // A's log and coverage report.
    let c = reqwest::Client::new();
    let log: Vec<u8> = (0..20_000).flat_map(|i| format!("12:00:{:02} [INFO] line {i}\n", i % 60).into_bytes()).collect();
    let coverage = std::fs::read(fixtures_dir().join("pytest_coverage.xml")).unwrap();
    let part = "7f3e2a10c0b111ee8f0e0242ac120002";
    let descriptors = serde_json::to_vec(&json!({part: {"workunit_id": "abc", "name": "coverage_xml", "path": "dist/coverage.xml"}})).unwrap();
    let parts: [(&str, &[u8]); 3] = [("pants_run_log", &log), (part, &coverage), ("descriptors.json", &descriptors)];
    let (status, body, _) = status_json(send_artifacts(&c, &gw.url(&format!("{}/artifacts/", run["A"])), &token, &parts).await).await;
    assert_eq!(status, 201, "{body}");

    for sink in ["dynamodb", "s3", "opensearch", "influxdb"] {
        wait_caught_up(&config, &group(&config, sink), CATCH_UP).await;
    }
    for sink in &sinks {
        assert_eq!(sink.metric("sink_dead_lettered_total").await, 0.0, "{} dead-lettered: {}", sink.name, sink.log_text());
    }

    // Search: every filter, by the builds' known fields.
    let labels = |ids: Vec<String>| -> BTreeSet<&str> {
        ids.iter().map(|id| *run.iter().find(|(_, v)| *v == id).unwrap_or_else(|| panic!("unknown build {id}")).0).collect()
    };
    let set = |s: &[&'static str]| s.iter().copied().collect::<BTreeSet<&str>>();
    let everything = q.json(&base, &token).await;
    assert_eq!(everything["total"], 7, "{everything}");
    assert_eq!(labels(all_pages(&q, &token, &base).await), set(&["A", "B", "C", "D", "E", "R", "T"]));
    for (filter, expected) in [
        ("user=asher", &["A", "B"][..]),
        ("user=stuhood,tdyas", &["C", "E"]),
        ("branch=keith", &["B"]),
        ("outcome=FAILURE", &["C", "E"]),
        ("outcome=SUCCESS", &["A", "B", "D"]),
        ("outcome=RUNNING", &["R"]),
        ("outcome=TIMEOUT", &["T"]),
        ("outcome=running,failure", &["C", "E", "R"]),
        ("ci=true", &["D", "R", "T"]),
        ("ci=false", &["A", "B", "C", "E"]),
        ("goals=lint", &["A", "E"]),
        ("run_time_min=25000", &["A", "B", "E"]),
        ("run_time_min=24100&run_time_max=25920", &["B", "C"]),
        ("earliest=2026-11-03", &["D", "E", "R", "T"]),
        ("earliest=2026-11-02T10:00:30Z&latest=2026-11-03", &["B", "C"]),
        ("q=awslambda", &["T"]),
        ("q=validate", &["R"]),
        ("q=email_test.py", &["C"]),
        ("user=asher&outcome=FAILURE", &[]),
    ] {
        let page = q.json(&format!("{base}?{filter}"), &token).await;
        let got = labels(page["results"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect());
        assert_eq!(got, set(expected), "{filter}");
        assert_eq!(page["total"], expected.len(), "{filter}: total");
    }
    let newest_first: Vec<&str> = labels_in_order(&q.json(&base, &token).await, &run);
    assert_eq!(newest_first, ["R", "T", "E", "D", "C", "B", "A"]);
    let slowest_first = labels_in_order(&q.json(&format!("{base}?sort=-run_time"), &token).await, &run);
    assert_eq!(slowest_first[..5], ["E", "A", "B", "C", "D"], "running builds (no run time) last: {slowest_first:?}");
    // Pages of 2: each build once, in order.
    let paged = all_pages(&q, &token, &format!("{base}?page_size=2")).await;
    assert_eq!(paged.iter().map(|id| *run.iter().find(|(_, v)| *v == id).unwrap().0).collect::<Vec<_>>(), ["R", "T", "E", "D", "C", "B", "A"]);

    // A result carries what a list shows.
    let b = everything["results"].as_array().unwrap().iter().find(|r| r["run_id"] == run["B"].as_str()).unwrap();
    assert_eq!(b["user"], "asher");
    assert_eq!(b["branch"], "keith");
    assert_eq!(b["outcome"], "SUCCESS");
    assert_eq!(b["run_time_ms"], 25_920);
    assert_eq!(b["started_at"], "2026-11-02T10:01:00.000Z");
    assert_eq!(b["link"], format!("{base}{}/", run["B"]));

    // Facets and completion.
    let outcomes = q.call(Method::OPTIONS, &format!("{base}?field=outcome"), &token).await;
    assert_eq!(outcomes.0, 200, "{}", String::from_utf8_lossy(&outcomes.2));
    let outcomes: Value = serde_json::from_slice(&outcomes.2).unwrap();
    let counts: BTreeMap<String, u64> = outcomes["results"].as_array().unwrap().iter().map(|v| (v["value"].as_str().unwrap().to_string(), v["count"].as_u64().unwrap())).collect();
    assert_eq!(counts, BTreeMap::from([("SUCCESS".into(), 3), ("FAILURE".into(), 2), ("RUNNING".into(), 1), ("TIMEOUT".into(), 1)]));
    let users: Value = serde_json::from_slice(&q.call(Method::OPTIONS, &format!("{base}?field=user"), &token).await.2).unwrap();
    assert_eq!(users["results"][0], json!({"value": "asher", "count": 2}), "{users}");
    let suggest = q.json(&format!("{base}suggest/?q=stu"), &token).await;
    let suggested: BTreeSet<(String, String)> = suggest["results"].as_array().unwrap().iter().map(|s| (s["kind"].as_str().unwrap().into(), s["value"].as_str().unwrap().into())).collect();
    assert_eq!(suggested, BTreeSet::from([("branch".into(), "stuhood/action-digest".into()), ("user".into(), "stuhood".into())]));
    let titles = q.json(&format!("{base}suggest/?q=pants%20fmt"), &token).await;
    assert_eq!(titles["results"][0], json!({"kind": "title", "value": "pants fmt package check lint src/python/::", "count": 1}), "{titles}");

    // One build: record, workunits, raw document, artifacts.
    let detail = q.json(&format!("{base}{}/", run["B"]), &token).await;
    assert_eq!(detail["run_id"], run["B"].as_str());
    assert_eq!(detail["outcome"], "SUCCESS");
    assert_eq!(detail["timings"]["run_time_ms"], 25_920);
    assert_eq!(detail["timings"]["started_at"], "2026-11-02T10:01:00.000000Z");
    assert_eq!(detail["counters"]["local_cache_requests"], 574);
    assert_eq!(detail["links"]["workunits"], format!("{base}{}/workunits/", run["B"]));
    let running = q.json(&format!("{base}{}/", run["R"]), &token).await;
    assert_eq!((running["outcome"].as_str(), running["state"].as_str()), (Some("RUNNING"), Some("running")));
    assert_eq!(q.json(&format!("{base}{}/", run["T"]), &token).await["outcome"], "TIMEOUT");
    for label in ["A", "B", "C"] {
        let sent: Value = serde_json::from_slice(&docs[label]).unwrap();
        let ids: BTreeSet<&str> = sent["workunits"].as_array().unwrap().iter().filter_map(|w| w["workunit_id"].as_str()).collect();
        let tree = q.json(&format!("{base}{}/workunits/", run[label]), &token).await;
        assert_eq!(tree["source"], "final_report");
        assert_eq!(tree["total"], ids.len(), "{label}: every workunit once");
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Value> = tree["results"].as_array().unwrap().iter().collect();
        while let Some(n) = stack.pop() {
            assert!(seen.insert(n["workunit_id"].as_str().unwrap().to_string()), "{label}: a workunit twice in the tree");
            stack.extend(n["children"].as_array().unwrap());
        }
        assert_eq!(seen.iter().map(String::as_str).collect::<BTreeSet<_>>(), ids, "{label}");
        let (status, headers, raw) = q.get(&format!("{base}{}/documents/final/", run[label]), &token).await;
        assert_eq!(status, 200);
        assert_eq!(raw, docs[label], "{label}: the final document byte for byte");
        assert_eq!(headers["content-type"], "application/json");
    }
    let artifacts = q.json(&format!("{base}{}/artifacts/", run["A"]), &token).await;
    assert_eq!(artifacts["total"], 2, "{artifacts}");
    for (name, content, content_type) in [("pants_run_log", &log, "text/plain"), ("coverage_xml", &coverage, "application/xml")] {
        let a = artifacts["results"].as_array().unwrap().iter().find(|a| a["name"] == name || a["descriptor_name"] == name).unwrap_or_else(|| panic!("{name} in {artifacts}"));
        let (status, headers, body) = q.get(a["link"].as_str().unwrap(), &token).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(&body, content, "{name}: byte for byte");
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{name}: {:?}", headers["content-type"]);
    }
    let with_artifacts = q.json(&format!("{base}{}/", run["A"]), &token).await;
    assert_eq!(with_artifacts["artifacts"].as_array().unwrap().len(), 2, "{with_artifacts}");

    // Indicators, worked out by hand from the fixtures (run times rounded to ms; cache counters
    // local_cache_requests / _cached / _total_time_saved_ms):
    //   day 1: A 30 841 ms (1132 / 1096 / 328 764), B 25 920 (574 / 558 / 68 052), C 24 100 (250 / 224 / 88 217)
    //   day 2: D 9 661 (125 / 108 / 0), E 100 632 (no counters)
    // InfluxQL percentile is nearest rank: the value at floor(n * p / 100 + 0.5) of the sorted values;
    // the hit ratio is hits / requests to six decimals (1878 / 1956 = 0.9601227).
    let ind = q.json(&format!("{base}indicators/?earliest=2026-11-02&latest=2026-11-04&interval=1d"), &token).await;
    assert_eq!(
        ind["results"],
        json!([
            {"time": "2026-11-02T00:00:00Z", "group": null, "build_count": 3, "run_time_p50_ms": 25920, "run_time_p95_ms": 30841,
             "cache_requests": 1956, "cache_hits": 1878, "cache_hit_ratio": 0.960123, "time_saved_ms": 485033},
            {"time": "2026-11-03T00:00:00Z", "group": null, "build_count": 2, "run_time_p50_ms": 9661, "run_time_p95_ms": 100632,
             "cache_requests": 125, "cache_hits": 108, "cache_hit_ratio": 0.864, "time_saved_ms": 0},
        ]),
        "{ind}"
    );
    let by_user = q.json(&format!("{base}indicators/?earliest=2026-11-02&latest=2026-11-03&interval=1d&group_by=user"), &token).await;
    let per_user: BTreeMap<String, (i64, i64)> = by_user["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["group"]["user"].as_str().unwrap().to_string(), (p["build_count"].as_i64().unwrap(), p["run_time_p50_ms"].as_i64().unwrap())))
        .collect();
    assert_eq!(per_user, BTreeMap::from([("asher".into(), (2, 25_920)), ("stuhood".into(), (1, 24_100))]));
    let by_goal = q.json(&format!("{base}indicators/?earliest=2026-11-02&latest=2026-11-04&interval=1d&group_by=goal"), &token).await;
    assert!(by_goal["results"].as_array().unwrap().iter().any(|p| p["group"]["goal"] == "lint"), "{by_goal}");

    // Duplicates and replays change nothing: every record of the topic once more.
    let before = (q.json(&format!("{base}?page_size=100"), &token).await, ind.clone());
    republish_topic(&config).await;
    for sink in ["dynamodb", "s3", "opensearch", "influxdb"] {
        wait_caught_up(&config, &group(&config, sink), CATCH_UP).await;
    }
    let after = (
        q.json(&format!("{base}?page_size=100"), &token).await,
        q.json(&format!("{base}indicators/?earliest=2026-11-02&latest=2026-11-04&interval=1d"), &token).await,
    );
    assert_eq!(before, after, "a replay of the whole topic changed what the API answers");

    // Refusals: no token, another tenant, bad input, a read token writing.
    let (status, _, body) = q.get(&base, "").await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("Bearer"), "{error}");
    let (other, _) = gw.token_for("otherorg", "otherrepo", Scope::Read, false).await;
    for path in [base.clone(), format!("{base}{}/", run["A"]), format!("{base}{}/artifacts/", run["A"]), format!("{base}indicators/"), format!("{base}{}/documents/final/", run["A"])] {
        let (status, _, body) = q.get(&path, &other).await;
        assert_eq!(status, 404, "{path} with another tenant's token");
        assert!(!String::from_utf8_lossy(&body).contains(run["A"].as_str()), "{path}: nothing of the build");
    }
    let other_base = "/api/v1/repos/otherorg/otherrepo/builds/";
    assert_eq!(q.json(other_base, &other).await["total"], 0, "the other tenant sees none of these builds");
    assert_eq!(q.get(&format!("{other_base}{}/", run["A"]), &other).await.0, 404);
    for (query, needle) in [("page_size=101", "maximum of 100"), ("colour=red", "unknown parameter"), ("earliest=someday", "is not a time"), ("outcome=GREEN", "not one of"), ("cursor=garbage", "cursor")] {
        let (status, _, body) = q.get(&format!("{base}?{query}"), &token).await;
        assert_eq!(status, 400, "{query}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(error["error"]["message"].as_str().unwrap().contains(needle), "{query}: {error}");
    }
    assert_eq!(q.get(&format!("{base}indicators/?interval=1y"), &token).await.0, 400);
    assert_eq!(q.get(&format!("{base}no_such_run/"), &token).await.0, 404);
    let (read, _) = gw.token_for(&gw.org, &gw.repo, Scope::Read, false).await;
    assert_eq!(q.json(&base, &read).await["total"], 7, "a read token reads");
    let (status, body, _) = status_json(send_doc(&c, Method::POST, &gw.url(&format!("{}/", new_run_id())), &read, &docs["A"]).await).await;
    assert_eq!(status, 403, "a read token may not write: {body}");
    let spec: Value = serde_json::from_slice(&q.get("/api/v1/openapi.json", "").await.2).unwrap();
    assert!(spec["paths"].get("/api/v1/repos/{org}/{repo}/builds/").is_some());
    gw.stop().await;
}

fn labels_in_order<'a>(page: &Value, run: &BTreeMap<&'a str, String>) -> Vec<&'a str> {
    page["results"].as_array().unwrap().iter().map(|r| *run.iter().find(|(_, v)| **v == r["run_id"]).unwrap().0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_over_1000_builds_visits_each_exactly_once() {
    let SinkTest { config, gw, token, stores: _, broker: _broker, serial: _serial } = SinkTest::start().await;
    let search = SinkProcess::spawn(&config, "opensearch", None);
    let q = QueryServer::start(&config).await;
    let base = format!("/api/v1/repos/{}/{}/builds/", gw.org, gw.repo);
    // Run ends only, 1,000 of them, sharing 10 start times and 7 run times: the order has many
    // ties, which only the build-key tie-break keeps stable across pages.
    let template: Value = serde_json::from_slice(&std::fs::read(fixtures_dir().join("sample3.json")).unwrap()).unwrap();
    let c = reqwest::Client::new();
    let mut sent = BTreeSet::new();
    let bodies: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| {
            let mut doc = template.clone();
            let id = new_run_id();
            doc["run_info"]["id"] = json!(id);
            doc["run_info"]["timestamp"] = json!(DAY1 + (i % 10) as f64);
            doc["cumulative_timings"] = json!([{"label": "main", "timing": (i % 7) as f64}]);
            (id, serde_json::to_vec(&doc).unwrap())
        })
        .collect();
    let sends = futures::stream::iter(bodies.iter()).map(|(id, doc)| {
        let c = c.clone();
        let url = gw.url(&format!("{id}/"));
        let token = token.clone();
        async move { send_accepted(&c, Method::PATCH, &url, &token, doc, "run end").await }
    });
    use futures::StreamExt;
    sends.buffer_unordered(16).collect::<Vec<()>>().await;
    sent.extend(bodies.iter().map(|(id, _)| id.clone()));
    wait_caught_up(&config, &group(&config, "opensearch"), CATCH_UP).await;
    assert_eq!(search.metric("sink_dead_lettered_total").await, 0.0);
    for (sort, page_size) in [("-started_at", 100), ("started_at", 37), ("-run_time", 100), ("run_time", 9)] {
        let ids = all_pages(&q, &token, &format!("{base}?sort={sort}&page_size={page_size}")).await;
        assert_eq!(ids.len(), 1000, "sort={sort}: every build once (no repeats)");
        assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), sent, "sort={sort}: no build skipped");
    }
    let first = q.json(&format!("{base}?page_size=5"), &token).await;
    assert_eq!(first["total"], 1000);
    assert_eq!(first["results"].as_array().unwrap().len(), 5);
    gw.stop().await;
}
