//! The plugin's API end to end: HTTP → gateway → real Kafka (tansu) → decoded records.

mod common;

use buildstats_core::tokens::Scope;
use buildstats_schemas::{decode, Event};
use common::*;
use reqwest::Method;
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn every_fixture_is_stored_byte_exact_through_run_start_and_run_end() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let c = client();
    let mut sent = Vec::new();
    for name in build_stats_fixtures() {
        let (run_id, doc) = fixture_with_new_run_id(&name);
        let (status, body, headers) = status_json(send_doc(&c, Method::POST, &gw.url(&format!("{run_id}/")), &token, &doc).await).await;
        assert_eq!(status, 201, "run start of {name}: {body}");
        assert_eq!(body["saved"], json!(true));
        assert!(headers.contains_key("x-request-id"));
        let (status, body, _) = status_json(send_doc(&c, Method::PATCH, &gw.url(&format!("{run_id}/")), &token, &doc).await).await;
        assert_eq!(status, 201, "run end of {name}: {body}");
        assert_eq!(body["created"], json!(true));
        sent.push((name, run_id, doc));
    }
    assert!(sent.len() >= 50, "{} fixtures", sent.len());

    let topic = gw.topic().await;
    for (name, run_id, doc) in &sent {
        let records = topic.for_run(run_id);
        assert!(records.iter().all(|r| r.key == format!("{}/{}/{run_id}", gw.org, gw.repo)), "{name}: key");
        assert!(records.windows(2).all(|w| w[0].partition == w[1].partition), "{name}: one partition per build");
        assert!(records.iter().all(|r| r.headers.contains_key("bs-event-type") && r.headers.contains_key("bs-schema")));
        let events = topic.events_of(run_id);
        assert_eq!(events.len(), 2, "{name}: one run start and one run end");
        let Event::RunStarted(start) = events[0] else { panic!("{name}: first event {:?}", events[0]) };
        let Event::RunEnded(end) = events[1] else { panic!("{name}: second event {:?}", events[1]) };
        assert_eq!(&topic.blob(&start.start_document), doc, "{name}: start document byte-exact");
        assert_eq!(&topic.blob(&end.final_document), doc, "{name}: final document byte-exact");
        assert_eq!(end.run.run_id, *run_id);
        assert_eq!((end.run.org.as_str(), end.run.repo.as_str()), (gw.org.as_str(), gw.repo.as_str()));
        assert_eq!(end.via, "run_end");
        assert_eq!(end.run.plugin_version.as_deref(), Some("0.27.0"));
        // Chunks of a blob come before the event that completes it.
        let completing_offset = records.iter().find(|r| matches!(r.event, Event::RunEnded(_))).unwrap().offset;
        for r in &records {
            if let Event::BlobChunk(c) = &r.event {
                if c.blob_id == end.final_document.blob_id {
                    assert!(r.offset < completing_offset, "{name}: chunk after its completing event");
                }
            }
        }
    }
    // The 4 KiB test limit forces the chunked path for the big reports.
    assert!(topic.records.iter().any(|r| matches!(r.event, Event::BlobChunk(_))));
    assert!(topic.records.iter().all(|r| decode(&buildstats_schemas::encode(&r.event).unwrap()).is_ok()));
    gw.stop().await;
}

#[tokio::test]
async fn uncompressed_and_plain_json_bodies_are_accepted() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let (run_id, doc) = fixture_with_new_run_id("pants_run_mypy_with_wu_local_env.json");
    // Plain application/json body, no multipart.
    let response = client()
        .patch(gw.url(&format!("{run_id}/")))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(doc.clone())
        .send()
        .await
        .unwrap();
    let (status, body, _) = status_json(response).await;
    assert_eq!(status, 201, "{body}");
    // Multipart, compressed with zlib but sent as gzip in the header (the original read both).
    let (run_id2, doc2) = fixture_with_new_run_id("run_lint_failed.json");
    let (mp, ct) = multipart(&[("buildsense", &zlib(&doc2))]);
    let response = client()
        .patch(gw.url(&format!("{run_id2}/")))
        .bearer_auth(&token)
        .header("content-type", ct)
        .header("content-encoding", "gzip")
        .body(mp)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let topic = gw.topic().await;
    for (id, d) in [(&run_id, &doc), (&run_id2, &doc2)] {
        let events = topic.events_of(id);
        let Event::RunEnded(end) = events[0] else { panic!() };
        assert_eq!(&topic.blob(&end.final_document), d);
    }
    gw.stop().await;
}

#[tokio::test]
async fn workunits_updates_become_decodable_workunit_lists() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let run_id = new_run_id();
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures_dir().join("pants_pytest_with_address.json")).unwrap()).unwrap();
    let workunits = fixture["workunits"].as_array().unwrap().clone();
    assert!(workunits.len() > 20);
    let update = json!({"run_id": run_id, "workunits": workunits});
    let doc = serde_json::to_vec(&update).unwrap();
    let (status, body, _) = status_json(send_doc(&client(), Method::POST, &gw.url(&format!("{run_id}/workunits/")), &token, &doc).await).await;
    assert_eq!((status, body), (201, json!("OK")));

    let topic = gw.topic().await;
    let events = topic.events_of(&run_id);
    let Event::WorkunitsUpdated(update) = events[0] else { panic!("{events:?}") };
    assert_eq!(update.workunit_count as usize, workunits.len());
    let Event::WorkunitList(list) = decode(&topic.blob(&update.workunits)).unwrap() else { panic!() };
    assert_eq!(list.workunits.len(), workunits.len());
    assert_eq!(list.workunits[0].workunit_id, workunits[0]["workunit_id"].as_str().unwrap());
    assert!(update.last_update.is_some());

    // A body naming another run is refused.
    let other = serde_json::to_vec(&json!({"run_id": "someone_else", "workunits": []})).unwrap();
    let (status, _, _) = status_json(send_doc(&client(), Method::POST, &gw.url(&format!("{run_id}/workunits/")), &token, &other).await).await;
    assert_eq!(status, 400);
    gw.stop().await;
}

#[tokio::test]
async fn batches_store_each_report_byte_exact() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let mut entries = serde_json::Map::new();
    let mut expected = Vec::new();
    for name in ["ci_build_pr_final_1.json", "run_lint_failed.json", "typecheck_with_local_cache.json"] {
        let (run_id, doc) = fixture_with_new_run_id(name);
        let value: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        entries.insert(run_id.clone(), value);
        expected.push(run_id);
    }
    let batch = serde_json::to_vec(&json!({"version": "1", "build_stats": entries})).unwrap();
    let (status, body, _) = status_json(send_doc(&client(), Method::POST, &gw.url("batch/"), &token, &batch).await).await;
    assert_eq!((status, body), (201, json!("OK")));

    let raw: serde_json::Value = serde_json::from_slice(&batch).unwrap();
    let topic = gw.topic().await;
    for run_id in &expected {
        let events = topic.events_of(run_id);
        assert_eq!(events.len(), 1, "one final report per batch entry");
        let Event::RunEnded(end) = events[0] else { panic!() };
        assert_eq!(end.via, "batch");
        let stored: serde_json::Value = serde_json::from_slice(&topic.blob(&end.final_document)).unwrap();
        assert_eq!(stored, raw["build_stats"][run_id]);
    }
    gw.stop().await;
}

#[tokio::test]
async fn artifacts_with_descriptors_and_a_large_log_round_trip() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let run_id = new_run_id();
    let log: Vec<u8> = (0..120_000).flat_map(|i| format!("12:00:{:02} [INFO] line {i} of the run\n", i % 60).into_bytes()).collect();
    assert!(log.len() > 4_000_000, "a multi-MB log");
    let coverage = std::fs::read(fixtures_dir().join("pytest_coverage.xml")).unwrap();
    let part = "7f3e2a10c0b111ee8f0e0242ac120002";
    let descriptors = serde_json::to_vec(&json!({part: {"workunit_id": "abc", "name": "coverage_xml", "path": "dist/coverage.xml"}})).unwrap();
    let parts: [(&str, &[u8]); 3] = [("pants_run_log", &log), (part, &coverage), ("descriptors.json", &descriptors)];
    let response = send_artifacts(&client(), &gw.url(&format!("{run_id}/artifacts/")), &token, &parts).await;
    let (status, body, _) = status_json(response).await;
    assert_eq!((status, body), (201, json!("OK")));

    let topic = gw.topic().await;
    let events = topic.events_of(&run_id);
    let Event::ArtifactsUploaded(up) = events[0] else { panic!("{events:?}") };
    assert_eq!(up.artifacts.len(), 2);
    let log_artifact = up.artifacts.iter().find(|a| a.name == "pants_run_log").unwrap();
    assert_eq!(topic.blob(&log_artifact.blob), log);
    assert!(log_artifact.blob.content_type.starts_with("text/plain"));
    let cov = up.artifacts.iter().find(|a| a.name == part).unwrap();
    assert_eq!(topic.blob(&cov.blob), coverage);
    assert_eq!(cov.blob.content_type, "application/xml");
    assert_eq!(cov.descriptor_name.as_deref(), Some("coverage_xml"));
    assert_eq!(cov.path.as_deref(), Some("dist/coverage.xml"));
    assert_eq!(cov.workunit_id.as_deref(), Some("abc"));
    gw.stop().await;
}

#[tokio::test]
async fn token_refresh_gives_a_scoped_access_token_in_the_plugin_format() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let url = format!("{}/api/v1/token/refresh/", gw.base_url);
    let (status, body, _) = status_json(client().post(&url).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let access = body["token"]["access_token"].as_str().unwrap().to_string();
    let expires_at = body["token"]["expires_at"].as_str().unwrap();
    assert!(expires_at.ends_with("+00:00") && !expires_at.ends_with('Z'), "{expires_at}");
    let parsed = chrono::DateTime::parse_from_rfc3339(expires_at).unwrap();
    let minutes = (parsed.timestamp() - chrono::Utc::now().timestamp()) / 60;
    assert!((44..=45).contains(&minutes), "45 minute access tokens, got {minutes}");
    assert!(body["remote_cache"]["address"].is_string());
    assert!(body["token"]["repo_id"].is_string() && body["token"]["customer_id"].is_string());

    // The access token works on the build API...
    let (run_id, doc) = fixture_with_new_run_id("sample4.json");
    let (status, _, _) = status_json(send_doc(&client(), Method::PATCH, &gw.url(&format!("{run_id}/")), &access, &doc).await).await;
    assert_eq!(status, 201);
    // ...but cannot be refreshed itself, and that refusal is final for the plugin.
    let (status, body, _) = status_json(client().post(&url).bearer_auth(&access).send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert_eq!(body["rejected"], json!(true));
    assert!(body["detail"].is_string());
    gw.stop().await;
}

#[tokio::test]
async fn the_plugin_config_is_served_to_the_repos_own_callers() {
    let gw = TestGateway::start().await;
    let token = gw.token().await;
    let response = client().request(Method::OPTIONS, gw.url("")).bearer_auth(&token).send().await.unwrap();
    let (status, body, _) = status_json(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["config"]["work_units"]["artifacts"], json!(["stdout", "stderr", "xml_results"]));
    assert!(body["config"]["ci_capture"]["GITHUB_ACTIONS"].is_string());
    let response = client().request(Method::OPTIONS, gw.url("")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    gw.stop().await;
}

#[tokio::test]
async fn tokens_are_confined_to_their_repo_scope_and_lifetime() {
    let gw = TestGateway::start().await;
    let (other_repo_token, _) = gw.token_for(&gw.org, "another-repo", Scope::Ingest, false).await;
    let (read_token, _) = gw.token_for(&gw.org, &gw.repo, Scope::Read, false).await;
    let (ingest_token, jid) = gw.token_for(&gw.org, &gw.repo, Scope::Ingest, false).await;
    let c = client();

    let mut refused = Vec::new();
    for (label, token) in [("other repo", other_repo_token.as_str()), ("read scope", &read_token), ("garbage", "abc.def.ghi"), ("none", "")] {
        let (run_id, doc) = fixture_with_new_run_id("sample4.json");
        let mut request = c.patch(gw.url(&format!("{run_id}/"))).header("content-type", "application/json").body(doc);
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        let (status, body, headers) = status_json(request.send().await.unwrap()).await;
        assert_eq!(status, 403, "{label}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{label}: JSON detail");
        assert!(headers.contains_key("x-request-id"));
        refused.push(run_id);
    }
    // Another org's build API with this org's token.
    let (run_id, doc) = fixture_with_new_run_id("sample4.json");
    let url = format!("{}/api/v1/repos/someone-else/{}/buildsense/{run_id}/", gw.base_url, gw.repo);
    assert_eq!(send_doc(&c, Method::PATCH, &url, &ingest_token, &doc).await.status().as_u16(), 403);
    refused.push(run_id);

    // Revocation: the token and an access token issued from it stop working within seconds.
    let refresh_url = format!("{}/api/v1/token/refresh/", gw.base_url);
    let (_, body, _) = status_json(c.post(&refresh_url).bearer_auth(&ingest_token).send().await.unwrap()).await;
    let access = body["token"]["access_token"].as_str().unwrap().to_string();
    let (run_id, doc) = fixture_with_new_run_id("sample4.json");
    assert_eq!(send_doc(&c, Method::PATCH, &gw.url(&format!("{run_id}/")), &access, &doc).await.status().as_u16(), 201);
    assert!(buildstats_core::db::revoke_token(gw.auth.pool(), jid).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await; // revocation_check_seconds = 1 in tests
    for t in [&ingest_token, &access] {
        let (run_id, doc) = fixture_with_new_run_id("sample4.json");
        let (status, body, _) = status_json(send_doc(&c, Method::PATCH, &gw.url(&format!("{run_id}/")), t, &doc).await).await;
        assert_eq!(status, 403, "revoked: {body}");
        refused.push(run_id);
    }
    let (status, body, _) = status_json(c.post(&refresh_url).bearer_auth(&ingest_token).send().await.unwrap()).await;
    assert_eq!((status, body["rejected"].clone()), (403, json!(true)));

    let topic = gw.topic().await;
    for run_id in &refused {
        assert!(topic.for_run(run_id).is_empty(), "a refused request left records for {run_id}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn impersonation_is_for_ci_tokens_and_must_name_the_ci_user() {
    let gw = TestGateway::start().await;
    let (ci_token, _) = gw.token_for(&gw.org, &gw.repo, Scope::Ingest, true).await;
    let plain = gw.token().await;
    let c = client();
    let (run_id, start) = fixture_with_new_run_id("ci_build_pr_start_1.json");
    let (status, body, _) = status_json(send_doc(&c, Method::POST, &gw.url(&format!("{run_id}/")), &ci_token, &start).await).await;
    assert_eq!(status, 201);
    let api_id = body["ci_user_api_id"].as_str().expect("a CI token gets a ci_user_api_id").to_string();

    // Run end with the impersonation header the plugin echoes back.
    let mut end: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures_dir().join("ci_build_pr_final_1.json")).unwrap()).unwrap();
    end["run_info"]["id"] = json!(run_id);
    let end = serde_json::to_vec(&end).unwrap();
    let (mp, ct) = multipart(&[("buildsense", &end)]);
    let response = c
        .patch(gw.url(&format!("{run_id}/")))
        .bearer_auth(&ci_token)
        .header("content-type", ct.clone())
        .header("x-toolchain-impersonate", &api_id)
        .body(mp.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    // A non-CI token may not impersonate; a wrong id is refused too.
    for (token, id) in [(&plain, api_id.as_str()), (&ci_token, "ciu_0000")] {
        let response = c
            .patch(gw.url(&format!("{run_id}/")))
            .bearer_auth(token)
            .header("content-type", ct.clone())
            .header("x-toolchain-impersonate", id)
            .body(mp.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403);
    }
    // A non-CI token gets no ci_user_api_id and its CI builds keep run_info.user.
    let (run_id2, start2) = fixture_with_new_run_id("ci_build_pr_start_2.json");
    let (_, body, _) = status_json(send_doc(&c, Method::POST, &gw.url(&format!("{run_id2}/")), &plain, &start2).await).await;
    assert_eq!(body["ci_user_api_id"], json!(null));

    let topic = gw.topic().await;
    let events = topic.events_of(&run_id);
    assert_eq!(events.len(), 2, "run start and one accepted run end");
    let (Event::RunStarted(s), Event::RunEnded(e)) = (events[0], events[1]) else { panic!() };
    assert_eq!(s.run.user, "asherf");
    assert_eq!(e.run.user, "asherf", "attributed to the CI actor on both");
    assert_eq!(e.run.ci.as_ref().unwrap().pull_request, Some(6490));
    let Event::RunStarted(s2) = topic.events_of(&run_id2)[0] else { panic!() };
    assert_eq!(s2.run.user, "toolchain");
    gw.stop().await;
}

#[tokio::test]
async fn every_bad_request_gets_a_json_error_and_leaves_nothing_on_the_topic() {
    let mut config = base_config();
    config.gateway.max_body_bytes = 1024 * 1024;
    config.gateway.max_decompressed_bytes = 8 * 1024 * 1024;
    config.gateway.max_parts = 8;
    let gw = TestGateway::start_with(config).await;
    let token = gw.token().await;
    let c = client();
    let run_id = new_run_id();
    let run_url = gw.url(&format!("{run_id}/"));
    let send = |method: Method, url: &str, body: Vec<u8>, ct: &str, ce: Option<&str>| {
        let mut r = c.request(method, url).bearer_auth(&token).header("content-type", ct.to_string()).body(body);
        if let Some(ce) = ce {
            r = r.header("content-encoding", ce.to_string());
        }
        r
    };
    let json_ct = "application/json";
    let doc_no_id = serde_json::to_vec(&json!({"run_info": {"timestamp": 1.0}})).unwrap();
    let (two_files, two_ct) = multipart(&[("buildsense", b"{}"), ("other", b"{}")]);
    let (undecompressable, und_ct) = multipart(&[("buildsense", b"\x78\x9cnot zlib at all")]);
    let bomb = zlib(&vec![b' '; 64 * 1024 * 1024]);
    let (bomb_mp, bomb_ct) = multipart(&[("buildsense", &bomb)]);
    let oversized = vec![b'{'; 2 * 1024 * 1024];
    let malformed = b"--XyZ\r\nContent-Disposition: form-data; name=\"buildsense\"\r\n\r\n{\"run_info\":{}}".to_vec();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("missing run_info.id", send(Method::PATCH, &run_url, doc_no_id, json_ct, None), 400),
        ("not a JSON object", send(Method::PATCH, &run_url, b"[1, 2]".to_vec(), json_ct, None), 400),
        ("bad JSON", send(Method::PATCH, &run_url, b"{\"run_info\": ".to_vec(), json_ct, None), 400),
        ("two files", send(Method::PATCH, &run_url, two_files, &two_ct, None), 400),
        ("undecompressable", send(Method::PATCH, &run_url, undecompressable, &und_ct, Some("compress")), 400),
        ("claims compression, sends plain", send(Method::PATCH, &run_url, b"{\"run_info\":{}}".to_vec(), json_ct, Some("compress")), 400),
        ("zlib bomb", send(Method::PATCH, &run_url, bomb_mp, &bomb_ct, Some("compress")), 413),
        ("oversized body", send(Method::PATCH, &run_url, oversized, json_ct, None), 413),
        ("malformed multipart", send(Method::PATCH, &run_url, malformed, "multipart/form-data; boundary=XyZ", None), 400),
        ("run id mismatch", send(Method::PATCH, &run_url, serde_json::to_vec(&json!({"run_info": {"id": "other", "timestamp": 1}})).unwrap(), json_ct, None), 400),
        ("bad run id in URL", send(Method::PATCH, &gw.url("a%2Fb/"), b"{}".to_vec(), json_ct, None), 400),
    ];
    for (label, request, expected) in cases {
        let (status, body, headers) = status_json(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "{label}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{label}: {body}");
        assert!(headers.contains_key("x-request-id"), "{label}");
    }

    // Batch errors.
    let batch_url = gw.url("batch/");
    let (good_id, good) = fixture_with_new_run_id("sample4.json");
    let good: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let batch_cases = [
        ("unknown version", json!({"version": "2", "build_stats": {good_id.clone(): good.clone()}})),
        ("empty batch", json!({"version": "1", "build_stats": {}})),
        ("entry without run_info.id", json!({"version": "1", "build_stats": {good_id.clone(): good.clone(), "x": {"run_info": {}}}})),
    ];
    for (label, batch) in batch_cases {
        let (status, body, _) = status_json(send(Method::POST, &batch_url, serde_json::to_vec(&batch).unwrap(), json_ct, None).send().await.unwrap()).await;
        assert_eq!(status, 400, "{label}: {body}");
        assert!(body["error"]["message"].is_string());
    }

    // Artifacts without descriptors.json when a part is not the run log.
    let art_url = gw.url(&format!("{run_id}/artifacts/"));
    let response = send_artifacts(&c, &art_url, &token, &[("pants_run_log", b"log"), ("coverage", b"<xml/>")]).await;
    let (status, body, _) = status_json(response).await;
    assert_eq!(status, 400, "{body}");
    // Too many parts.
    let names: Vec<String> = (0..9).map(|i| format!("p{i}")).collect();
    let parts: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let (mp, ct) = multipart(&parts);
    let response = c.post(&art_url).bearer_auth(&token).header("content-type", ct).body(mp).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let topic = gw.topic().await;
    assert!(topic.records.is_empty(), "refused requests left {} records", topic.records.len());
    gw.stop().await;
}

#[tokio::test]
async fn request_ids_probes_and_metrics() {
    let gw = TestGateway::start().await;
    let c = client();
    let response = c.get(format!("{}/healthz", gw.base_url)).header("x-request-id", "my-req-1").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-request-id"], "my-req-1", "a sane client id is echoed");
    let response = c.get(format!("{}/readyz", gw.base_url)).header("x-request-id", "bad id with spaces").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "broker and Postgres reachable");
    assert_ne!(response.headers()["x-request-id"], "bad id with spaces");
    let (status, _, headers) = status_json(c.get(format!("{}/nope", gw.base_url)).send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert!(headers.contains_key("x-request-id"));
    let (status, body, _) = status_json(c.get(gw.url("batch/")).send().await.unwrap()).await;
    assert_eq!(status, 405, "{body}");

    let token = gw.token().await;
    let (run_id, doc) = fixture_with_new_run_id("sample4.json");
    assert_eq!(send_doc(&c, Method::PATCH, &gw.url(&format!("{run_id}/")), &token, &doc).await.status().as_u16(), 201);
    let metrics = c.get(format!("{}/metrics", gw.base_url)).send().await.unwrap().text().await.unwrap();
    for name in ["gateway_http_requests_total", "gateway_http_request_seconds", "gateway_records_produced_total", "gateway_produce_seconds", "gateway_http_request_bytes_total"] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(metrics.contains("route=\"/api/v1/repos/{org}/{repo}/buildsense/{run_id}/\""), "per-route labels");
    gw.stop().await;
}

#[tokio::test]
async fn a_token_past_its_rate_limit_gets_429_with_retry_after_and_others_are_not_slowed() {
    let mut config = base_config();
    config.gateway.rate_limit_per_second = 1;
    config.gateway.rate_limit_burst = 3;
    let gw = TestGateway::start_with(config).await;
    let (busy, _) = gw.token_for(&gw.org, &gw.repo, Scope::Ingest, false).await;
    let (other, _) = gw.token_for(&gw.org, &gw.repo, Scope::Ingest, false).await;
    let c = client();
    // The plugin-config call is authorized like every write, and answers in milliseconds:
    // the burst is spent before the bucket refills.
    let config_url = gw.url("");
    let call = |token: String| {
        let c = c.clone();
        let url = config_url.clone();
        async move { status_json(c.request(Method::OPTIONS, &url).bearer_auth(token).send().await.unwrap()).await }
    };
    for i in 0..3 {
        let (status, body, _) = call(busy.clone()).await;
        assert_eq!(status, 200, "request {i} within the burst: {body}");
    }
    let (status, body, headers) = call(busy.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(body["error"]["message"].as_str().unwrap().contains("too many requests"), "{body}");
    // A refused write is refused before its body is read: nothing reaches the topic.
    let (run_id, doc) = fixture_with_new_run_id("sample4.json");
    let (status, _, _) = status_json(send_doc(&c, Method::PATCH, &gw.url(&format!("{run_id}/")), &busy, &doc).await).await;
    assert_eq!(status, 429);
    assert!(gw.topic().await.for_run(&run_id).is_empty(), "a refused run end left nothing on the topic");
    let (status, _, _) = call(other.clone()).await;
    assert_eq!(status, 200, "another token has its own budget");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, _) = call(busy.clone()).await;
    assert_eq!(status, 200, "a second later the token may call again");
}
