//! query-bench: latency of the query API over a repo of 100k generated builds, against the
//! same store queries sent directly in the same run (the baseline: what the API adds on top
//! of the store).
//!
//! The builds go straight into the stores through the sinks' own encoders (search documents
//! by `_bulk`, points by `/write`): this measures reads, not ingestion. Release builds only;
//! needs the servers of `dev/services up`.
//!
//!   cargo build --release -p buildstats -p bench && target/release/query-bench

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use buildstats_core::auth::Authenticator;
use buildstats_core::db;
use buildstats_core::tenancy::Slug;
use buildstats_core::tokens::Scope;
use buildstats_schemas::{BlobRef, CiInfo, EventHeader, GoalTiming, RunEnded, RunRecord};
use clap::Parser;
use opensearch::http::Method;
use processors::sink::BuildKey;
use processors::sinks::{influxdb, opensearch as search_sink};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Query API latency over generated builds vs the same store queries sent directly")]
struct Args {
    /// Builds in the repo.
    #[arg(long, default_value_t = 100_000)]
    builds: usize,
    /// Requests per query kind (and as many direct store queries).
    #[arg(long, default_value_t = 100)]
    requests: usize,
    #[arg(long, default_value = "target/release/buildstats")]
    bin: PathBuf,
    /// Builds sent through the gateway for the freshness measure.
    #[arg(long, default_value_t = 30)]
    fresh: usize,
    #[arg(long, default_value = "../shared/fixtures/pants-runs")]
    fixtures: PathBuf,
}

const USERS: usize = 40;
const BRANCHES_PER_USER: u64 = 4;
const GOALS: [&str; 6] = ["test", "lint", "check", "fmt", "package", "run"];
const DAYS: i64 = 90;

/// A deterministic pseudo-random stream (xorshift), so every run indexes the same builds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn blob() -> BlobRef {
    BlobRef { blob_id: "b".into(), kind: "final_document".into(), content_type: "application/json".into(), size: 0, sha256: String::new(), chunk_count: 0, inline: None }
}

fn build(org: &str, repo: &str, i: usize, now_us: i64, rng: &mut Rng) -> (BuildKey, RunEnded) {
    let run_id = format!("pants_run_bench_{i:07}");
    let user = rng.below(USERS as u64);
    let started_at = now_us - (rng.below((DAYS * 86_400) as u64) as i64) * 1_000_000 - rng.below(1_000_000) as i64;
    let outcome = match rng.below(20) {
        0..=15 => "SUCCESS",
        16..=18 => "FAILURE",
        _ => "ABORTED",
    };
    let goal_count = 1 + rng.below(3) as usize;
    let first = rng.below(GOALS.len() as u64) as usize;
    let goals: Vec<String> = (0..goal_count).map(|g| GOALS[(first + g) % GOALS.len()].to_string()).collect();
    let run_time_ms = 500 + rng.below(600_000) as i64;
    let ci = (rng.below(3) == 0).then(|| CiInfo {
        provider: "github_actions".into(),
        run_type: "pull_request".into(),
        pull_request: Some(1 + rng.below(5000) as i64),
        job_name: Some("ci".into()),
        build_num: Some(i as i64),
        build_url: None,
        ref_name: None,
        username: None,
        sha1: None,
    });
    let requests = rng.below(2000) as i64;
    let counters = BTreeMap::from([
        ("local_cache_requests".to_string(), requests),
        ("local_cache_requests_cached".to_string(), requests * (rng.below(100) as i64) / 100),
        ("local_cache_total_time_saved_ms".to_string(), rng.below(100_000) as i64),
    ]);
    let run = RunRecord {
        run_id: run_id.clone(),
        org: org.into(),
        repo: repo.into(),
        user: format!("user{user}"),
        machine: Some(format!("host{}", rng.below(60))),
        buildroot: None,
        // Like a real repo: a third of the builds on main, the rest on a few branches per user.
        branch: Some(if rng.below(3) == 0 { "main".to_string() } else { format!("user{user}/feature-{}", rng.below(BRANCHES_PER_USER)) }),
        revision: Some(format!("{:040x}", rng.next())),
        cmd_line: Some(format!("pants {} src/python/project{}::", goals.join(" "), rng.below(300))),
        goals: goals.clone(),
        specs: vec![],
        outcome: outcome.into(),
        started_at,
        datetime: None,
        run_time_ms: Some(run_time_ms),
        pants_version: Some("2.20.0".into()),
        plugin_version: None,
        stats_version: None,
        ci,
        counters,
        source: "plugin".into(),
    };
    let goal_timings = goals.iter().map(|g| GoalTiming { goal: g.clone(), duration_ms: run_time_ms / goals.len() as i64 }).collect();
    let header = EventHeader { event_id: format!("e{i}"), org: org.into(), repo: repo.into(), run_id: run_id.clone(), request_id: "bench".into(), emitted_at: 0 };
    let key = BuildKey { org: org.into(), repo: repo.into(), run_id };
    (key, RunEnded { header, run, final_document: blob(), workunit_count: 100, via: "run_end".into(), goal_timings, rule_timings: vec![] })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Latency {
    p50: f64,
    p99: f64,
}

async fn time_all<F, Fut>(n: usize, mut call: F) -> anyhow::Result<Latency>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        call(i).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(Latency { p50: percentile(&ms, 50.0), p99: percentile(&ms, 99.0) })
}

/// One API request, refused unless 2xx, body read to the end.
async fn api_call(http: reqwest::Client, method: reqwest::Method, url: String, token: String) -> anyhow::Result<()> {
    let r = http.request(method, &url).bearer_auth(&token).send().await?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    r.bytes().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut config, unique) = common::bench_config("query-bench", &args.bin)?;
    config.opensearch.alias = format!("bench-{unique}-query");
    config.influxdb.database = format!("bench_{unique}_query");
    config.query.store_timeout_ms = 30_000;
    let org = format!("bench{unique}");
    let repo = "repo".to_string();

    eprintln!("[1/5] set-up: index {} and database {}", config.opensearch.index(), config.influxdb.database);
    db::migrate(&config.postgres).await.context("postgres migrations (is `dev/services up` running?)")?;
    let search = search_sink::client(&config)?;
    search_sink::index::ensure_index(&search, &config.opensearch).await?;
    let influx = influxdb::client(&config)?;
    influxdb::ensure_database(&influx, "").await?;
    let pool = db::connect(&config.postgres).await?;
    let auth = Authenticator::new(&config.auth, pool)?;
    let token = auth.create_token(&Slug::parse("org", &org)?, &Slug::parse("repo", &repo)?, Scope::Read, false, "query-bench", Some(1)).await?.token;

    eprintln!("[2/5] generating {} builds into the index (_bulk) and the time series (/write)", args.builds);
    let started = Instant::now();
    let now_us = chrono::Utc::now().timestamp_micros();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let chunk = 2_000;
    for first in (0..args.builds).step_by(chunk) {
        let mut body = Vec::new();
        let mut lines = Vec::new();
        for i in first..(first + chunk).min(args.builds) {
            let (key, ended) = build(&org, &repo, i, now_us, &mut rng);
            let doc = search_sink::document::run_ended(&key, &ended).map_err(|e| anyhow::anyhow!(e.0))?;
            serde_json::to_writer(&mut body, &json!({"index": {"_index": config.opensearch.alias, "_id": key.joined(), "version": search_sink::document::FINAL_VERSION, "version_type": "external"}}))?;
            body.push(b'\n');
            serde_json::to_writer(&mut body, &doc)?;
            body.push(b'\n');
            lines.extend(influxdb::points::final_report(&key, &ended).map_err(|e| anyhow::anyhow!(e.0))?);
        }
        let (status, answer) = search.call(Method::Post, "/_bulk", Some(body), true).await?;
        if !status.is_success() || answer["errors"] == json!(true) {
            bail!("_bulk failed: {status}: {}", answer.to_string().chars().take(500).collect::<String>());
        }
        influx.write(lines).await?;
        if (first + chunk) % 20_000 == 0 || first + chunk >= args.builds {
            eprintln!("      {} builds ({:.0} s)", (first + chunk).min(args.builds), started.elapsed().as_secs_f64());
        }
    }
    search.call(Method::Post, &format!("/{}/_refresh", config.opensearch.alias), None, false).await?;

    eprintln!("[3/5] query API on a free port");
    let state = query_api::prepare(&config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(query_api::serve(state, listener, std::future::pending()));
    let http = reqwest::Client::new();
    let base = format!("{url}/api/v1/repos/{org}/{repo}/builds/");
    // Cursors of the first pages, for "next page" requests.
    let mut cursors = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..20 {
        let page_url = match &next {
            Some(c) => format!("{base}?cursor={c}"),
            None => base.clone(),
        };
        let page: Value = http.get(&page_url).bearer_auth(&token).send().await?.json().await?;
        if page["total"].as_u64() != Some(args.builds as u64) {
            bail!("the list's total is {}, not {}", page["total"], args.builds);
        }
        next = page["next_cursor"].as_str().map(String::from);
        cursors.push(next.clone().context("a next page")?);
    }

    eprintln!("[4/5] {} requests per kind through the API, and the same store queries directly", args.requests);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let timeout_ms = config.query.running_timeout_seconds * 1000;
    let kinds: Vec<(&str, Box<dyn Fn(usize) -> String>)> = vec![
        ("list (newest first, page 1)", Box::new(|_| String::new())),
        ("list (a later page, cursor)", Box::new(|i| format!("cursor={}", cursors[i % cursors.len()]))),
        ("filter (user + outcome + 30 days)", Box::new(|i| format!("user=user{}&outcome=FAILURE&earliest={}", i % USERS, now_ms - 30 * 86_400_000))),
        ("search (free text + goal)", Box::new(|i| format!("q=project{}&goals=test", i % 300))),
        ("sort by run time", Box::new(|_| "sort=-run_time".to_string())),
    ];
    let mut rows = Vec::new();
    let direct_search = |query: String| {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query).unwrap_or_default();
        let params = query_api::params::list_params(&pairs, config.query.default_page_size).expect("valid bench query");
        query_api::search::list_body(&org, &repo, &params, now_ms, timeout_ms).expect("body")
    };
    for (name, query) in &kinds {
        let api = time_all(args.requests, |i| api_call(http.clone(), reqwest::Method::GET, format!("{base}?{}", query(i)), token.clone())).await?;
        let direct = time_all(args.requests, |i| {
            let body = direct_search(query(i));
            let search = search.clone();
            let path = format!("/{}/_search", config.opensearch.alias);
            async move {
                let (status, _) = search.call_json(Method::Post, &path, &body).await?;
                if !status.is_success() {
                    bail!("direct search: {status}");
                }
                Ok(())
            }
        })
        .await?;
        eprintln!("      {name}: API p50 {:.1} ms p99 {:.1} ms; direct p50 {:.1} ms p99 {:.1} ms", api.p50, api.p99, direct.p50, direct.p99);
        rows.push((name.to_string(), api, direct));
    }
    for (name, query) in [
        ("indicators (90 days, 1d)", format!("earliest={}&interval=1d", now_ms - DAYS * 86_400_000)),
        ("indicators (90 days, 1d, by user)", format!("earliest={}&interval=1d&group_by=user", now_ms - DAYS * 86_400_000)),
    ] {
        let api = time_all(args.requests, |_| api_call(http.clone(), reqwest::Method::GET, format!("{base}indicators/?{query}"), token.clone())).await?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query)?;
        let p = query_api::indicators::params(&pairs, now_ms).map_err(|e| anyhow::anyhow!(e.to_string()))?;
        let statement = query_api::indicators::statement(&org, &repo, &p);
        let direct = time_all(args.requests, |_| {
            let influx = influx.clone();
            let statement = statement.clone();
            async move {
                influx.query(&statement, Some("ms"), false).await?;
                Ok(())
            }
        })
        .await?;
        eprintln!("      {name}: API p50 {:.1} ms p99 {:.1} ms; direct p50 {:.1} ms p99 {:.1} ms", api.p50, api.p99, direct.p50, direct.p99);
        rows.push((name.to_string(), api, direct));
    }
    let facet = time_all(args.requests, |i| {
        let field = ["user", "branch", "outcome", "goals"][i % 4];
        api_call(http.clone(), reqwest::Method::OPTIONS, format!("{base}?field={field}"), token.clone())
    })
    .await?;
    let suggest = time_all(args.requests, |i| {
        let q = ["mai", "user1", "pants%20te", "pants%20li"][i % 4];
        api_call(http.clone(), reqwest::Method::GET, format!("{base}suggest/?q={q}"), token.clone())
    })
    .await?;
    eprintln!("[5/5] freshness: {} run ends through the gateway, until the API finds and counts each", args.fresh);
    let fresh = freshness(&args, &config, &auth, &org, &repo, &base, &token, &http).await?;

    println!();
    println!("query-bench: {} builds in one repo, {} sequential requests per kind", args.builds, args.requests);
    println!("| query | API p50 | API p99 | direct store p50 | direct store p99 | API / direct (p50) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut worst = 0.0f64;
    for (name, api, direct) in &rows {
        println!("| {name} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} |", api.p50, api.p99, direct.p50, direct.p99, api.p50 / direct.p50.max(0.001));
        worst = worst.max(api.p99);
    }
    for (name, l) in [("facet values (OPTIONS ?field=)", &facet), ("suggest", &suggest)] {
        println!("| {name} | {:.1} ms | {:.1} ms | | | |", l.p50, l.p99);
        worst = worst.max(l.p99);
    }
    println!();
    println!(
        "freshness (run end acknowledged -> visible through the API), {} builds: in search p50 {:.0} ms, max {:.0} ms; in indicators p50 {:.0} ms, max {:.0} ms",
        args.fresh, fresh.0.p50, fresh.0.p99, fresh.1.p50, fresh.1.p99
    );
    println!();
    println!("target: p99 <= 100 ms for list, search and indicators: {} (worst p99 {worst:.1} ms)", if worst <= 100.0 { "met" } else { "NOT met" });
    Ok(())
}

/// A sink process of the release binary, stopped when dropped.
struct SinkProcess(std::process::Child);

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Run ends through an in-process gateway to the OpenSearch and InfluxDB sink processes:
/// how long after the 201 each build is the newest in the list, and counted in the indicators.
#[allow(clippy::too_many_arguments)]
async fn freshness(
    args: &Args,
    config: &buildstats_core::config::Config,
    auth: &Authenticator,
    org: &str,
    repo: &str,
    base: &str,
    token: &str,
    http: &reqwest::Client,
) -> anyhow::Result<(Latency, Latency)> {
    buildstats_core::kafka::ensure_topics(&config.kafka).await?;
    let ingest = auth.create_token(&Slug::parse("org", org)?, &Slug::parse("repo", repo)?, Scope::Ingest, false, "query-bench", Some(1)).await?.token;
    let state = ingest_gateway::prepare(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway = format!("http://{}/api/v1/repos/{org}/{repo}/buildsense", listener.local_addr()?);
    tokio::spawn(ingest_gateway::serve(state, listener, std::time::Duration::from_secs(5), std::future::pending()));
    let mut sinks = Vec::new();
    for name in ["opensearch", "influxdb"] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut c = config.clone();
        c.sinks.listen = format!("127.0.0.1:{port}");
        c.sinks.group_prefix = format!("query-bench-{}", uuid::Uuid::new_v4().simple());
        c.log.level = "warn".into();
        let child = std::process::Command::new(&args.bin)
            .args(["sink", name])
            .envs(c.to_env())
            .env("BUILDSTATS_ENV_FILE", "/nonexistent")
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", args.bin.display()))?;
        sinks.push(SinkProcess(child));
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while !http.get(&ready).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
            if Instant::now() > deadline {
                bail!("the {name} sink was not ready within 60 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let template: Value = serde_json::from_slice(&std::fs::read(args.fixtures.join("sample3.json")).context("fixture sample3.json")?)?;
    let indicators = |since_ms: i64| format!("{base}indicators/?earliest={since_ms}&interval=1h");
    let count_since = |answer: &Value| answer["results"].as_array().map(|r| r.iter().filter_map(|p| p["build_count"].as_i64()).sum::<i64>()).unwrap_or(0);
    let since_ms = chrono::Utc::now().timestamp_millis() - 1000;
    let mut counted_before = count_since(&http.get(indicators(since_ms)).bearer_auth(token).send().await?.json().await?);
    let (mut in_search, mut in_indicators) = (Vec::new(), Vec::new());
    for i in 0..args.fresh {
        let run_id = format!("pants_run_fresh_{}_{i}", uuid::Uuid::new_v4().simple());
        let mut doc = template.clone();
        doc["run_info"]["id"] = json!(run_id);
        doc["run_info"]["timestamp"] = json!(chrono::Utc::now().timestamp_micros() as f64 / 1e6);
        let response = http.patch(format!("{gateway}/{run_id}/")).bearer_auth(&ingest).json(&doc).send().await?;
        if response.status().as_u16() != 201 {
            bail!("run end answered {}: {}", response.status(), response.text().await.unwrap_or_default());
        }
        let acknowledged = Instant::now();
        let (mut searched, mut counted) = (None, None);
        while searched.is_none() || counted.is_none() {
            if acknowledged.elapsed() > std::time::Duration::from_secs(60) {
                bail!("build {run_id} was not visible through the API within 60 s");
            }
            if searched.is_none() {
                let page: Value = http.get(format!("{base}?page_size=1")).bearer_auth(token).send().await?.json().await?;
                if page["results"][0]["run_id"] == json!(run_id) {
                    searched = Some(acknowledged.elapsed());
                }
            }
            if counted.is_none() {
                let n = count_since(&http.get(indicators(since_ms)).bearer_auth(token).send().await?.json().await?);
                if n > counted_before {
                    counted = Some(acknowledged.elapsed());
                    counted_before = n;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        in_search.push(searched.unwrap_or_default().as_secs_f64() * 1000.0);
        in_indicators.push(counted.unwrap_or_default().as_secs_f64() * 1000.0);
    }
    let summarize = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        Latency { p50: percentile(&v, 50.0), p99: *v.last().unwrap_or(&0.0) }
    };
    let out = (summarize(in_search), summarize(in_indicators));
    eprintln!("      in search p50 {:.0} ms (max {:.0}); in indicators p50 {:.0} ms (max {:.0})", out.0.p50, out.0.p99, out.1.p50, out.1.p99);
    drop(sinks);
    Ok(out)
}
