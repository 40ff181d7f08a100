//! Graceful shutdown: stop accepting, finish what is in flight, flush the producer.
//! Its own test binary, so the process-wide metrics it watches are its own.

mod common;

use std::time::{Duration, Instant};

use buildstats_schemas::Event;
use common::*;
use reqwest::Method;

const RUN_ROUTE: &str = "gateway_http_requests_in_flight{route=\"/api/v1/repos/{org}/{repo}/buildsense/{run_id}/\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_refuses_new_ones() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let config = gw.config.clone();
    let (run_id, doc) = fixture_with_new_run_id("run_mypy_typecheck.json"); // 3.4 MB: ~1,000 chunks at 4 KiB
    let url = gw.url(&format!("{run_id}/"));
    let base = gw.base_url.clone();
    let in_flight = tokio::spawn({
        let token = token.clone();
        async move { send_doc(&reqwest::Client::new(), Method::PATCH, &url, &token, &doc).await.status().as_u16() }
    });
    // Wait until the gateway is handling the run end, then shut down under it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l.starts_with(RUN_ROUTE) && l.ends_with(" 1")) {
            break;
        }
        assert!(Instant::now() < deadline, "the run end never reached the gateway");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.stop().await; // returns once in-flight requests are answered and the producer flushed
    assert_eq!(in_flight.await.unwrap(), 201, "the request in flight at shutdown completes");
    let refused = reqwest::Client::new().get(format!("{base}/healthz")).send().await;
    assert!(refused.is_err(), "no new connections after shutdown");
    let topic = read_topic(&config, &config.kafka.topic).await;
    let Event::RunEnded(end) = topic.events_of(&run_id)[0] else { panic!("the in-flight run end is on the topic") };
    assert!(topic.blob(&end.final_document).len() > 3_000_000);
}
