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
    #[arg(long, default_value_t = 200)]
    requests: usize,
    #[arg(long, default_value = "target/release/buildstats")]
    bin: PathBuf,
}

const USERS: usize = 40;
const BRANCHES: usize = 150;
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
        user: format!("user{}", rng.below(USERS as u64)),
        machine: Some(format!("host{}", rng.below(60))),
        buildroot: None,
        branch: Some(format!("feature/branch-{}", rng.below(BRANCHES as u64))),
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut config, unique) = common::bench_config("query-bench", &args.bin)?;
    config.opensearch.alias = format!("bench-{unique}-query");
    config.influxdb.database = format!("bench_{unique}_query");
    config.query.store_timeout_ms = 30_000;
    let org = format!("bench{unique}");
    let repo = "repo".to_string();

    eprintln!("[1/4] set-up: index {} and database {}", config.opensearch.index(), config.influxdb.database);
    db::migrate(&config.postgres).await.context("postgres migrations (is `dev/services up` running?)")?;
    let search = search_sink::client(&config)?;
    search_sink::index::ensure_index(&search, &config.opensearch).await?;
    let influx = influxdb::client(&config)?;
    influxdb::ensure_database(&influx, "").await?;
    let pool = db::connect(&config.postgres).await?;
    let auth = Authenticator::new(&config.auth, pool)?;
    let token = auth.create_token(&Slug::parse("org", &org)?, &Slug::parse("repo", &repo)?, Scope::Read, false, "query-bench", Some(1)).await?.token;

    eprintln!("[2/4] generating {} builds into the index (_bulk) and the time series (/write)", args.builds);
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

    eprintln!("[3/4] query API on a free port");
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

    eprintln!("[4/4] {} requests per kind through the API, and the same store queries directly", args.requests);
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
        let api = time_all(args.requests, |i| {
            let u = format!("{base}?{}", query(i));
            let http = http.clone();
            let token = token.clone();
            async move {
                let r = http.get(&u).bearer_auth(&token).send().await?;
                if !r.status().is_success() {
                    bail!("{u}: {}", r.status());
                }
                r.bytes().await?;
                Ok(())
            }
        })
        .await?;
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
        let api = time_all(args.requests, |_| {
            let u = format!("{base}indicators/?{query}");
            let http = http.clone();
            let token = token.clone();
            async move {
                let r = http.get(&u).bearer_auth(&token).send().await?;
                if !r.status().is_success() {
                    bail!("{u}: {}", r.status());
                }
                r.bytes().await?;
                Ok(())
            }
        })
        .await?;
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
        let u = format!("{base}?field={field}");
        let http = http.clone();
        let token = token.clone();
        async move {
            let r = http.request(reqwest::Method::OPTIONS, &u).bearer_auth(&token).send().await?;
            if !r.status().is_success() {
                bail!("{u}: {}", r.status());
            }
            r.bytes().await?;
            Ok(())
        }
    })
    .await?;
    let suggest = time_all(args.requests, |i| {
        let u = format!("{base}suggest/?q={}", ["feat", "user1", "pants te", "pants li"][i % 4]);
        let http = http.clone();
        let token = token.clone();
        async move {
            let r = http.get(&u).bearer_auth(&token).send().await?;
            if !r.status().is_success() {
                bail!("{u}: {}", r.status());
            }
            r.bytes().await?;
            Ok(())
        }
    })
    .await?;

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
    println!("target: p99 <= 100 ms for list, search and indicators: {} (worst p99 {worst:.1} ms)", if worst <= 100.0 { "met" } else { "NOT met" });
    Ok(())
}
