//! The broker goes away: the gateway answers 503 with Retry-After, and every request it
//! acknowledged before is on the topic after the broker comes back. Runs its own tansu
//! (from `dev/services`, path in BUILDSTATS_DEV_TANSU_BIN) so the shared one is untouched.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use buildstats_schemas::Event;
use common::*;
use reqwest::Method;

/// (run id, status, Retry-After, body)
async fn run_end(gw: &TestGateway, token: &str) -> (String, u16, Option<String>, serde_json::Value) {
    let (run_id, doc) = fixture_with_new_run_id("run_lint_failed.json");
    let response = send_doc(&reqwest::Client::new(), Method::PATCH, &gw.url(&format!("{run_id}/")), token, &doc).await;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body: serde_json::Value = response.json().await.expect("every answer is JSON");
    if status == 503 {
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("retry")), "{body}");
    }
    (run_id, status, retry_after, body)
}

/// tansu 0.6.0 sometimes panics in its idempotent-producer check during the first produce
/// requests on a fresh SQLite store ("more or less than one row", tansu-storage lite.rs), and
/// the instance (and a restart on the same store) then stops acknowledging anything. That is
/// a defect of the test broker, visible in its own log, not a gateway behaviour: when it
/// happens during warm-up, the attempt is discarded and run again on a fresh broker.
const TANSU_KNOWN_PANIC: &str = "more or less than one row";
const ATTEMPTS: usize = 5;

fn broker_hit_known_defect(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).any(|e| {
        e.path().extension().is_some_and(|x| x == "log")
            && std::fs::read_to_string(e.path()).unwrap_or_default().contains(TANSU_KNOWN_PANIC)
    })
}

#[tokio::test]
async fn broker_down_means_503_and_nothing_acknowledged_is_lost() {
    for attempt in 1..=ATTEMPTS {
        let dir = std::env::temp_dir().join(format!("bs-outage-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if outage_scenario(&dir).await {
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        eprintln!("attempt {attempt}: the private tansu hit its known panic during warm-up ({}); starting over on a fresh broker", dir.display());
        let _ = std::fs::remove_dir_all(&dir);
    }
    panic!("tansu hit its known idempotent-producer panic in {ATTEMPTS} fresh brokers in a row: the test broker is unusable here");
}

/// Returns false when the attempt must be discarded (the broker's own defect, see above).
async fn outage_scenario(dir: &Path) -> bool {
    let mut broker = PrivateBroker::start(dir);
    let mut config = base_config();
    config.kafka.brokers = format!("127.0.0.1:{}", broker.port);
    config.kafka.produce_timeout_ms = 2_000;
    let gw = TestGateway::start_with(config).await;
    let token = gw.token().await;

    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        let (run_id, status, _, body) = run_end(&gw, &token).await;
        assert_eq!(status, 201, "{body}");
        acknowledged.push(run_id);
    }
    if broker_hit_known_defect(dir) {
        gw.stop().await;
        return false;
    }

    broker.stop();
    let outage: Vec<_> = futures::future::join_all((0..4).map(|_| run_end(&gw, &token))).await;
    for (_, status, retry_after, _) in &outage {
        assert_eq!(*status, 503, "broker down must be 503, not a false 2xx");
        assert_eq!(retry_after.as_deref(), Some("5"), "Retry-After tells the client when to come back");
    }
    let ready = reqwest::get(format!("{}/readyz", gw.base_url)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503, "not ready while the broker is down");

    broker.spawn();
    // The producer reconnects on its own; the first tries may still meet its backoff.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (run_id, status, _, body) = run_end(&gw, &token).await;
        if status == 201 {
            acknowledged.push(run_id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not recover after the broker came back; last answer {status} {body}; broker logs in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for _ in 0..5 {
        let (run_id, status, _, body) = run_end(&gw, &token).await;
        assert_eq!(status, 201, "{body}");
        acknowledged.push(run_id);
    }

    let topic = gw.topic().await;
    for run_id in &acknowledged {
        let ends: Vec<_> = topic.events_of(run_id).into_iter().filter(|e| matches!(e, Event::RunEnded(_))).collect();
        assert_eq!(ends.len(), 1, "acknowledged run {run_id} has {} run-end records", ends.len());
        let Event::RunEnded(end) = ends[0] else { unreachable!() };
        topic.blob(&end.final_document); // complete chunk set
    }
    gw.stop().await;
    drop(broker);
    true
}
