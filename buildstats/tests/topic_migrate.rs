//! `buildstats admin topic migrate` end to end on a private tansu: the builds topic (3
//! partitions) is copied to a new topic version (5 partitions) by the real binary. Every record
//! arrives once with its key, value (tombstones stay null), headers and timestamp; each build's
//! records keep their order and sit on the one partition the Java partitioner gives their key
//! (where the gateways will write the build's later records); a rerun copies only the tail, a
//! third run nothing; a wrong `--to` is refused.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use buildstats_core::config::Config;
use buildstats_core::kafka;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use support::*;

const BUILDS: usize = 48;
const SOURCE_PARTITIONS: i32 = 3;
const TARGET_PARTITIONS: i32 = 5;

/// One record as the broker holds it (`None` value: a tombstone; `None` header value: a null header).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

#[derive(Debug, Clone)]
struct Placed {
    partition: i32,
    rec: Rec,
}

fn key(n: usize) -> Vec<u8> {
    format!("org/repo/run_{n}").into_bytes()
}

fn event(n: usize, k: usize, ts: i64) -> Rec {
    let mut headers = vec![
        ("bs-event-type".to_string(), Some(b"test_event".to_vec())),
        ("bs-request-id".to_string(), Some(format!("req-{n}-{k}").into_bytes())),
    ];
    if k == 0 {
        headers.push(("bs-null-header".to_string(), None));
    }
    Rec { key: Some(key(n)), value: Some(format!("run_{n}#{k}").into_bytes()), headers, timestamp: Some(ts) }
}

fn tombstone(n: usize, ts: i64) -> Rec {
    Rec {
        key: Some(key(n)),
        value: None,
        headers: vec![
            ("bs-event-type".to_string(), Some(b"tombstone".to_vec())),
            ("bs-tombstone-reason".to_string(), Some(b"retention".to_vec())),
        ],
        timestamp: Some(ts),
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Produce `records` to the builds topic in this order, as the gateway does (same settings).
async fn produce(config: &Config, records: &[Rec]) {
    let producer: FutureProducer = kafka::producer_config(&config.kafka).unwrap().create().unwrap();
    let mut deliveries = Vec::new();
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header { key: k, value: v.as_deref() });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&config.kafka.topic).headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k);
        }
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        if let Some(t) = r.timestamp {
            record = record.timestamp(t);
        }
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
    }
    for d in deliveries {
        d.await.expect("delivery report").map_err(|(e, _)| e).expect("acknowledged");
    }
}

/// Every record of `topic`, partition by partition in offset order.
async fn read_all(config: &Config, topic: &str) -> Vec<Placed> {
    read_records(config, topic, |m| Placed {
        partition: m.partition(),
        rec: Rec {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m.headers().map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        },
    })
    .await
}

/// The Java client's partitioner (`murmur2_random` in librdkafka): murmur2 of the key, made
/// positive, modulo the partition count.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let chunks = key.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes(c.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}

/// Each key's records in topic order, and the partitions each key is on.
fn by_key(records: &[Placed]) -> (BTreeMap<Vec<u8>, Vec<Rec>>, BTreeMap<Vec<u8>, BTreeSet<i32>>) {
    let mut order: BTreeMap<Vec<u8>, Vec<Rec>> = BTreeMap::new();
    let mut placed: BTreeMap<Vec<u8>, BTreeSet<i32>> = BTreeMap::new();
    for r in records {
        let k = r.rec.key.clone().expect("every record has a key");
        order.entry(k.clone()).or_default().push(r.rec.clone());
        placed.entry(k).or_default().insert(r.partition);
    }
    (order, placed)
}

fn sorted(records: &[Placed]) -> Vec<Rec> {
    let mut out: Vec<Rec> = records.iter().map(|r| r.rec.clone()).collect();
    out.sort();
    out
}

/// The target holds exactly the source's records, each key's in the source's order, each key
/// on its Java-partitioner partition of the target.
fn assert_same_builds(source: &[Placed], target: &[Placed]) {
    assert_eq!(target.len(), source.len(), "as many records on the target as on the source");
    assert!(sorted(target) == sorted(source), "the same records (key, value, headers, timestamp) on both topics");
    let (source_order, source_placed) = by_key(source);
    let (target_order, target_placed) = by_key(target);
    assert_eq!(target_order.keys().collect::<Vec<_>>(), source_order.keys().collect::<Vec<_>>());
    for (k, records) in &source_order {
        let name = String::from_utf8_lossy(k);
        assert!(&target_order[k] == records, "{name}: its records in the same order on the target");
        assert_eq!(source_placed[k], BTreeSet::from([java_partition(k, SOURCE_PARTITIONS)]), "{name}: on its partition of the source");
        assert_eq!(
            target_placed[k],
            BTreeSet::from([java_partition(k, TARGET_PARTITIONS)]),
            "{name}: on one partition of the target, the partitioner's"
        );
    }
    let used: BTreeSet<i32> = target.iter().map(|r| r.partition).collect();
    assert_eq!(used.len(), TARGET_PARTITIONS as usize, "the builds spread over every target partition: {used:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_copies_every_build_in_order_to_more_partitions_resumes_and_refuses_its_source() {
    let _serial = support::serial().await;
    let test_started = Instant::now();
    let (mut config, _broker) = sink_config();
    config.kafka.partitions = SOURCE_PARTITIONS;
    let to = format!("{}.v2", config.kafka.topic);

    // No source yet: refused, pointing at `admin init`.
    let (status, out, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &to, "--partitions", "5"]);
    assert!(!status.success(), "a missing source topic is refused: {out}{err}");
    assert!(err.contains("does not exist") && err.contains("buildstats admin init"), "{err}");

    let (status, out, err) = run_cli(&config, &["admin", "init"]);
    assert!(status.success(), "admin init: {out}{err}");
    assert_eq!(kafka::partition_count(&config.kafka, &config.kafka.topic, Duration::from_secs(10)).await.unwrap(), SOURCE_PARTITIONS);

    // A real build through the gateway (chunks, Avro events, the gateway's headers).
    let gw = support::common::TestGateway::start_with(config.clone()).await;
    let token = gw.token().await;
    let now_s = now_ms() as f64 / 1000.0;
    send_fixture(&gw, &token, "pants_jvm_rules_run.json", now_s - 60.0, false).await;
    gw.stop().await;

    // 48 builds, four events each, the builds interleaved; every sixth build then tombstoned.
    let base = now_ms() - 3_600_000;
    let mut records = Vec::new();
    for k in 0..4 {
        for n in 0..BUILDS {
            records.push(event(n, k, base + (k * BUILDS + n) as i64));
        }
    }
    for n in (0..BUILDS).step_by(6) {
        records.push(tombstone(n, base + 10_000 + n as i64));
    }
    produce(&config, &records).await;
    let source = read_all(&config, &config.kafka.topic).await;
    let gateway_records = source.len() - records.len();
    assert!(gateway_records >= 2, "the gateway build is on the source: {gateway_records} records");

    // The copy.
    let t = Instant::now();
    let (status, out, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &to, "--partitions", "5"]);
    let first_run = t.elapsed();
    eprintln!("first run ({first_run:?}):\n{err}");
    assert!(status.success(), "migrate: {out}{err}");
    assert!(err.contains(&format!("copied {} records", source.len())), "the summary counts every record: {err}");
    assert!(
        err.contains(&format!("BUILDSTATS_KAFKA_TOPIC={to}")) && err.contains(&format!("BUILDSTATS_KAFKA_DEAD_LETTER_TOPIC={to}.dlq")),
        "{err}"
    );
    assert_eq!(kafka::partition_count(&config.kafka, &to, Duration::from_secs(10)).await.unwrap(), TARGET_PARTITIONS);
    assert_eq!(kafka::partition_count(&config.kafka, &format!("{to}.dlq"), Duration::from_secs(10)).await.unwrap(), TARGET_PARTITIONS);
    let target = read_all(&config, &to).await;
    assert_same_builds(&source, &target);
    let tombstones: BTreeSet<Vec<u8>> = target.iter().filter(|r| r.rec.value.is_none()).map(|r| r.rec.key.clone().unwrap()).collect();
    assert_eq!(tombstones, (0..BUILDS).step_by(6).map(key).collect::<BTreeSet<_>>(), "tombstones stay null values");
    assert!(
        target.iter().any(|r| r.rec.headers.iter().any(|(k, v)| k == "bs-null-header" && v.is_none())),
        "a header with a null value stays null"
    );
    // The shared support reader agrees.
    let mut five = config.clone();
    five.kafka.partitions = TARGET_PARTITIONS;
    assert_eq!(read_raw(&five, &to).await.len(), source.len());

    // The tail written after the first run (later events of old builds, new builds): a rerun
    // copies just that, behind what each build already has on the target.
    let mut tail = Vec::new();
    for n in (1..BUILDS).step_by(4) {
        tail.push(event(n, 4, base + 20_000 + n as i64));
    }
    for n in BUILDS..BUILDS + 4 {
        tail.push(event(n, 0, base + 30_000 + n as i64));
        tail.push(event(n, 1, base + 30_100 + n as i64));
    }
    produce(&config, &tail).await;
    let (status, out, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &to, "--partitions", "5"]);
    assert!(status.success(), "second migrate: {out}{err}");
    assert!(err.contains(&format!("copied {} records", tail.len())), "the rerun copies only the tail: {err}");
    let source = read_all(&config, &config.kafka.topic).await;
    let target = read_all(&config, &to).await;
    assert_same_builds(&source, &target);

    // Nothing left: nothing copied, the target unchanged.
    let (status, out, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &to, "--partitions", "5"]);
    assert!(status.success(), "third migrate: {out}{err}");
    assert!(err.contains("nothing to copy"), "{err}");
    let again = read_all(&config, &to).await;
    assert_eq!(again.len(), target.len(), "no duplicates");
    assert!(sorted(&again) == sorted(&target), "the target is unchanged");

    // Refusals: the source itself, and the existing target with another partition count.
    let source_topic = config.kafka.topic.clone();
    let (status, out, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &source_topic, "--partitions", "5"]);
    assert!(!status.success(), "--to the source is refused: {out}{err}");
    assert!(err.contains("is the builds topic itself"), "{err}");
    let (status, out, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &to, "--partitions", "4"]);
    assert!(!status.success(), "another partition count for an existing target is refused: {out}{err}");
    assert!(err.contains("already exists with 5 partitions"), "{err}");
    assert_eq!(read_all(&config, &to).await.len(), target.len(), "refusals touch nothing");
    eprintln!("topic migrate test: {:?} in all, first copy {first_run:?}", test_started.elapsed());
}

/// `target` holds `source`'s records in order, a suffix possibly repeated once after a stop
/// (the records acknowledged since the last commit): `source[..j] ++ source[i..]`, `i <= j`.
/// Records of `topic` the migration group `consumer` belongs to has committed, over all
/// partitions (every test topic starts at offset 0).
fn committed_total(consumer: &BaseConsumer, topic: &str) -> i64 {
    committed_offsets(consumer, topic, SOURCE_PARTITIONS).expect("the migration group's committed offsets").into_iter().flatten().sum()
}

fn is_prefix_then_replayed_suffix(source: &[Rec], target: &[Rec]) -> bool {
    let n = source.len();
    let Some(extra) = target.len().checked_sub(n) else { return false };
    (extra..=n).any(|j| target[..j] == source[..j] && target[j..] == source[j - extra..])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_killed_midway_continues_on_rerun_without_losing_or_reordering_a_build() {
    let _serial = support::serial().await;
    let (mut config, _broker) = sink_config();
    config.kafka.partitions = SOURCE_PARTITIONS;
    let to = format!("{}.v2", config.kafka.topic);
    let (status, out, err) = run_cli(&config, &["admin", "init"]);
    assert!(status.success(), "admin init: {out}{err}");
    // Enough records that the copy spans many of its commits: 200 builds of 60 events.
    let base = now_ms() - 3_600_000;
    let mut records = Vec::new();
    for k in 0..60 {
        for n in 0..200 {
            let mut r = event(n, k, base + (k * 200 + n) as i64);
            r.value.as_mut().unwrap().extend(std::iter::repeat(b'x').take(512));
            records.push(r);
        }
    }
    produce(&config, &records).await;
    let source = read_all(&config, &config.kafka.topic).await;

    // Start a copy and kill it (SIGKILL: nothing of its own shutdown runs) as soon as the
    // broker holds a commit of its group. The copy commits every `sinks.commit_interval_ms`,
    // short here: on tansu the records of a partition arrive in one burst after a first fetch
    // of seconds and are copied in about a second, well within one progress report (2 s).
    config.sinks.commit_interval_ms = 50;
    let group = format!("{}-topic-migrate-{to}", config.sinks.group_prefix);
    let log = std::env::temp_dir().join(format!("topic-migrate-{}.log", uuid::Uuid::new_v4()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_buildstats"))
        .args(["admin", "topic", "migrate", "--to", &to, "--partitions", "5"])
        .envs(config_env(&config))
        .env("BUILDSTATS_ENV_FILE", "/nonexistent")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let watcher: BaseConsumer = kafka::client_config(&config.kafka).unwrap().set("group.id", &group).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let committed_before_kill = loop {
        let committed = committed_total(&watcher, &config.kafka.topic);
        if committed > 0 {
            child.kill().unwrap();
            child.wait().unwrap();
            break committed;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the copy ended ({status}) before the test saw a commit of group {group}:\n{text}");
        }
        assert!(Instant::now() < deadline, "no commit of group {group} within 120 s:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed = std::fs::read_to_string(&log).unwrap();
    eprintln!("killed run (group {group} had committed {committed_before_kill} records):\n{killed}");
    assert!(!killed.contains("topic migrate done"), "the copy was killed before its end:\n{killed}");
    let reported = committed_total(&watcher, &config.kafka.topic) as usize;
    assert!(reported < source.len(), "killed midway: the group committed {reported} of {} records", source.len());
    let partial = read_all(&config, &to).await;
    assert!(!partial.is_empty() && partial.len() < source.len(), "killed midway: {} of {} copied", partial.len(), source.len());

    // The rerun continues from the commit: it copies less than everything, and the target then
    // has every record, each build's in order (a replayed tail at most).
    let (status, out, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &to, "--partitions", "5"]);
    eprintln!("rerun:\n{err}");
    assert!(status.success(), "rerun: {out}{err}");
    let copied: usize = err
        .lines()
        .find_map(|l| l.strip_prefix("topic migrate done: copied ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a summary: {err}"));
    assert_eq!(
        copied,
        source.len() - reported,
        "the rerun starts where the killed run committed: it copied {copied} of {}, {reported} were committed",
        source.len()
    );
    let target = read_all(&config, &to).await;
    assert!(target.len() <= source.len() + copied, "at most the rerun's records twice: {} on the target", target.len());
    let mut distinct = sorted(&target);
    distinct.dedup();
    assert!(distinct == sorted(&source), "every source record is on the target, nothing else");
    let (source_order, _) = by_key(&source);
    let (target_order, target_placed) = by_key(&target);
    for (k, records) in &source_order {
        let name = String::from_utf8_lossy(k);
        assert!(is_prefix_then_replayed_suffix(records, &target_order[k]), "{name}: in order, at most a replayed tail");
        assert_eq!(target_placed[k].len(), 1, "{name}: on one target partition");
    }
    let (status, _, err) = run_cli(&config, &["admin", "topic", "migrate", "--to", &to, "--partitions", "5"]);
    assert!(status.success() && err.contains("nothing to copy"), "{err}");
    let _ = std::fs::remove_file(&log);
}
