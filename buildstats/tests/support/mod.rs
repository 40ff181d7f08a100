//! Harness of the sink tests: a config with its own topic, table, bucket and groups on the
//! dev servers; sink processes of the real binary (so faults are done to real processes);
//! readers of what the stores hold.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use buildstats_core::config::Config;
use buildstats_core::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

#[path = "../../../ingest-gateway/tests/common/mod.rs"]
pub mod common;

/// Tests of one binary run one at a time: each drives a gateway, two sink processes and
/// thousands of records through the one shared tansu, whose SQLite store stalls its group
/// coordinator for tens of seconds when several such loads overlap.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The test's own tansu, stopped and its store deleted when dropped. Sink tests push thousands
/// of records through the broker; on the shared one that would slow every later suite (tansu's
/// SQLite store gets slower as it fills).
pub struct TestBroker {
    broker: Option<common::PrivateBroker>,
    dir: PathBuf,
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A config of its own: its own broker, topic, dead-letter topic, DynamoDB table, S3 bucket,
/// OpenSearch alias, InfluxDB database and consumer groups, on the servers of
/// `dev/services up`.
pub fn sink_config() -> (Config, TestBroker) {
    let mut config = common::base_config();
    let dir = common::repo_root().join("target/test-brokers").join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let broker = common::PrivateBroker::start(&dir);
    config.kafka.brokers = format!("127.0.0.1:{}", broker.port);
    let vars = common::services_env();
    let endpoint = vars.get("BUILDSTATS_AWS_ENDPOINT_URL").cloned().unwrap_or_else(|| {
        panic!(
            "BUILDSTATS_AWS_ENDPOINT_URL is not set and target/dev/services.env does not name it: run `dev/services up` (it starts moto)"
        )
    });
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let addr: std::net::SocketAddr = hostport.parse().expect("moto endpoint is host:port");
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("moto (DynamoDB + S3) is not answering on {endpoint}: start it with `dev/services up`");
    }
    for (name, what, path) in
        [("BUILDSTATS_OPENSEARCH_URL", "OpenSearch (osmem-server)", "/"), ("BUILDSTATS_INFLUXDB_URL", "InfluxDB", "/ping")]
    {
        let url = vars.get(name).cloned().unwrap_or_else(|| {
            panic!("{name} is not set and target/dev/services.env does not name it: run `dev/services up` (it starts {what})")
        });
        let answered =
            std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "--max-time", "3", &format!("{url}{path}")]).status();
        if !answered.map(|s| s.success()).unwrap_or(false) {
            panic!("{what} is not answering on {url}: start it with `dev/services up`");
        }
    }
    let unique = uuid::Uuid::new_v4().simple().to_string();
    config.opensearch.alias = format!("bs-test-{unique}");
    config.influxdb.database = format!("bs_test_{unique}");
    config.dynamodb.table = format!("bs-test-{unique}");
    config.s3.bucket = format!("bs-test-{}", &unique[..24]);
    config.sinks.group_prefix = format!("bs-test-{unique}");
    config.sinks.batch_linger_ms = 50;
    config.sinks.commit_interval_ms = 1_000;
    config.sinks.retry_initial_ms = 100;
    config.sinks.retry_max_ms = 2_000;
    config.aws.attempt_timeout_ms = 3_000;
    config.aws.sdk_max_attempts = 1;
    config.log.level = "info,processors=debug".into();
    (config, TestBroker { broker: Some(broker), dir })
}

/// Every config key as its `BUILDSTATS_*` variable, to hand a config to a child process.
pub fn config_env(config: &Config) -> Vec<(String, String)> {
    config.to_env()
}

/// Everything a sink test starts with: one at a time ([`serial`]), its own broker and config,
/// stores and topics created, an in-process gateway and an ingest token for it.
pub struct SinkTest {
    pub config: Config,
    pub gw: common::TestGateway,
    pub token: String,
    pub stores: Stores,
    pub broker: TestBroker,
    pub serial: tokio::sync::MutexGuard<'static, ()>,
}

impl SinkTest {
    pub async fn start() -> SinkTest {
        SinkTest::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with `adjust` applied to the config first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> SinkTest {
        let serial = serial().await;
        let (mut config, broker) = sink_config();
        adjust(&mut config);
        init_stores(&config).await;
        let gw = common::TestGateway::start_with(config.clone()).await;
        let token = gw.token().await;
        let stores = Stores::new(&config).await;
        SinkTest { config, gw, token, stores, broker, serial }
    }
}

pub async fn init_stores(config: &Config) {
    processors::init::init_stores(config).await.expect("init-stores on moto");
    kafka::ensure_topics(&config.kafka).await.expect("topics");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn log_dir() -> PathBuf {
    let dir = common::repo_root().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `buildstats sink NAME` process.
pub struct SinkProcess {
    pub name: String,
    pub ops_url: String,
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl SinkProcess {
    pub fn spawn(config: &Config, name: &str, group: Option<&str>) -> SinkProcess {
        let port = free_port();
        let mut c = config.clone();
        c.sinks.listen = format!("127.0.0.1:{port}");
        // Static membership: a restarted process (same instance id) takes its partitions back
        // at once. tansu 0.6.0 does not evict a dynamic member that died without leaving
        // while another member joins, so a dynamic restart can sit with no partitions.
        c.sinks.instance_id = format!("{name}-{port}");
        let mut args = vec!["sink".to_string(), name.to_string()];
        if let Some(g) = group {
            args.extend(["--group".to_string(), g.to_string()]);
        }
        let log = log_dir().join(format!("{name}-{}-{port}.log", &config.dynamodb.table));
        let mut p = SinkProcess {
            name: name.to_string(),
            ops_url: format!("http://127.0.0.1:{port}"),
            log,
            child: None,
            args,
            env: config_env(&c),
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_buildstats"))
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .env("BUILDSTATS_ENV_FILE", "/nonexistent")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn buildstats sink");
        self.child = Some(child);
    }

    /// Start again after [`kill9`](Self::kill9) or [`terminate`](Self::terminate).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.start();
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(child.id() as i32, "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{} did not stop within 60 s of SIGTERM; log: {}", self.name, self.log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("{}/metrics", self.ops_url)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Sum of a metric's samples (every label set) in this process.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics().await, name)
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.ops_url)).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{} not ready within 60 s; log:\n{}", self.name, self.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn signal(pid: i32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Poll `check` until it returns true; on timeout fail with `what` and `context()`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The offsets the group of `consumer` has committed on partitions `0..partitions` of `topic`
/// (`None`: nothing committed on that partition).
pub fn committed_offsets(consumer: &BaseConsumer, topic: &str, partitions: i32) -> rdkafka::error::KafkaResult<Vec<Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect())
}

/// Whether `group` has committed offsets at the end of every partition of the topic.
pub fn group_caught_up(config: &Config, group: &str) -> bool {
    let consumer: BaseConsumer = kafka::client_config(&config.kafka).unwrap().set("group.id", group).create().unwrap();
    let topic = &config.kafka.topic;
    let Ok(committed) = committed_offsets(&consumer, topic, config.kafka.partitions) else { return false };
    committed.iter().zip(0..).all(|(committed, p)| {
        let Ok((_, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) else { return false };
        match committed {
            Some(o) => *o >= high,
            None => high == 0,
        }
    })
}

pub async fn wait_caught_up(config: &Config, group: &str, timeout: Duration) {
    let c = config.clone();
    let g = group.to_string();
    wait_until(&format!("group {group} to commit the end of {}", config.kafka.topic), timeout, move || {
        let c = c.clone();
        let g = g.clone();
        async move { tokio::task::spawn_blocking(move || group_caught_up(&c, &g)).await.unwrap() }
    })
    .await;
}

/// What the stores hold.
pub struct Stores {
    pub dynamo: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub table: String,
    pub bucket: String,
}

pub type Item = std::collections::HashMap<String, AttributeValue>;

impl Stores {
    pub async fn new(config: &Config) -> Stores {
        Stores {
            dynamo: processors::sinks::dynamodb::client(config).await,
            s3: processors::sinks::s3::client(config).await,
            table: config.dynamodb.table.clone(),
            bucket: config.s3.bucket.clone(),
        }
    }

    /// Every item, by `pk`.
    pub async fn items(&self) -> BTreeMap<String, Item> {
        let mut out = BTreeMap::new();
        let mut start = None;
        loop {
            let page = self.dynamo.scan().table_name(&self.table).set_exclusive_start_key(start).send().await.expect("scan");
            for item in page.items() {
                let AttributeValue::S(pk) = &item["pk"] else { panic!("pk is a string") };
                out.insert(pk.clone(), item.clone());
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return out,
            }
        }
    }

    /// Every object under a prefix: key → (size, etag).
    pub async fn objects(&self, prefix: &str) -> BTreeMap<String, (i64, String)> {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .expect("list objects");
            for o in page.contents() {
                out.insert(o.key().unwrap().to_string(), (o.size().unwrap_or(0), o.e_tag().unwrap_or("").to_string()));
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return out,
            }
        }
    }

    pub async fn get(&self, key: &str) -> (Vec<u8>, Option<String>) {
        let out = self.s3.get_object().bucket(&self.bucket).key(key).send().await.unwrap_or_else(|e| panic!("get {key}: {e:?}"));
        let content_type = out.content_type().map(str::to_string);
        (out.body.collect().await.unwrap().into_bytes().to_vec(), content_type)
    }
}

/// The keys of one build's prefix, split into its archived events (`events/`) and the rest.
pub fn archive_of(objects: &BTreeMap<String, (i64, String)>, prefix: &str) -> (Vec<String>, Vec<String>) {
    objects.keys().filter(|k| k.starts_with(prefix)).cloned().partition(|k| k[prefix.len()..].starts_with("events/"))
}

pub fn s(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        other => panic!("{name} is not a string: {other:?}"),
    }
}

pub struct RawRecord {
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Every record of a topic, undecoded.
pub async fn read_raw(config: &Config, topic: &str) -> Vec<RawRecord> {
    use rdkafka::message::Headers;
    use rdkafka::Message;
    read_records(config, topic, |m| RawRecord {
        key: m.key().map(|k| String::from_utf8_lossy(k).to_string()),
        value: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string())).collect())
            .unwrap_or_default(),
    })
    .await
}

/// Every record of `topic` (which must exist), partition by partition in offset order, each
/// made into a `T` by `convert`.
pub async fn read_records<T: Send + 'static>(config: &Config, topic: &str, convert: fn(&rdkafka::message::BorrowedMessage<'_>) -> T) -> Vec<T> {
    use rdkafka::Message;
    let partitions = kafka::partition_count(&config.kafka, topic, Duration::from_secs(10)).await.unwrap();
    assert!(partitions > 0, "{topic} exists");
    let c = config.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka::client_config(&c.kafka)
            .unwrap()
            .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut out = Vec::new();
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).unwrap();
            if high <= low {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(low)).unwrap();
            consumer.assign(&tpl).unwrap();
            let mut next = low;
            let deadline = Instant::now() + Duration::from_secs(60);
            while next < high {
                assert!(Instant::now() < deadline, "reading {topic} partition {p} timed out");
                let Some(m) = consumer.poll(Duration::from_secs(1)) else { continue };
                let m = m.unwrap();
                assert_eq!(m.partition(), p);
                assert!(m.offset() >= next, "offsets go forward");
                next = m.offset() + 1;
                out.push(convert(&m));
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The query API, in this process, on a free port of its own; stopped when dropped.
pub struct QueryServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl QueryServer {
    pub async fn start(config: &Config) -> QueryServer {
        let state = query_api::prepare(config).await.expect("query API state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            query_api::serve(state, listener, async move {
                let _ = rx.await;
            })
            .await
            .expect("query API serves");
        });
        QueryServer { url, stop: Some(tx) }
    }

    /// GET `path` (under the server) with `token`: status, headers and the body bytes.
    pub async fn get(&self, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        self.call(reqwest::Method::GET, path, token).await
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("query API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    /// GET `path` as JSON, asserting a 200.
    pub async fn json(&self, path: &str, token: &str) -> serde_json::Value {
        let (status, _, body) = self.get(path, token).await;
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e})"))
    }
}

impl Drop for QueryServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Publish every record of the topic again (same key, value, headers), as a replay or a
/// producer retry would deliver duplicates. Returns how many.
pub async fn republish_topic(config: &Config) -> usize {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let records = read_raw(config, &config.kafka.topic).await;
    let producer: FutureProducer = kafka::producer_config(&config.kafka).unwrap().create().unwrap();
    for r in &records {
        let mut h = OwnedHeaders::new();
        for (k, v) in &r.headers {
            h = h.insert(Header { key: k, value: Some(v.as_bytes()) });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&config.kafka.topic).headers(h);
        if let Some(k) = &r.key {
            record = record.key(k.as_bytes());
        }
        if let Some(v) = &r.value {
            record = record.payload(v);
        }
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }
    records.len()
}

/// Send a document as the plugin does, retrying a 503 after 2 s as the plugin does on
/// `Retry-After` (the test broker can be slow to acknowledge); asserts the final 201.
pub async fn send_accepted(c: &reqwest::Client, method: reqwest::Method, url: &str, token: &str, doc: &[u8], what: &str) {
    for attempt in 1..=6 {
        let (status, body, _) = common::status_json(common::send_doc(c, method.clone(), url, token, doc).await).await;
        if status == 503 && attempt < 6 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        assert_eq!(status, 201, "{what} (attempt {attempt}): {body}");
        return;
    }
}

/// Send a fixture as the plugin would (run start, then run end unless `start_only`), with a
/// fresh run id and the given start time. Returns the run id and the document sent.
pub async fn send_fixture(gw: &common::TestGateway, token: &str, name: &str, timestamp: f64, start_only: bool) -> (String, Vec<u8>) {
    send_fixture_to(gw, &gw.repo, token, name, timestamp, start_only).await
}

/// [`send_fixture`] to another repo of the gateway's org (the token must be that repo's).
pub async fn send_fixture_to(gw: &common::TestGateway, repo: &str, token: &str, name: &str, timestamp: f64, start_only: bool) -> (String, Vec<u8>) {
    let bytes = std::fs::read(common::fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let run_id = common::new_run_id();
    doc["run_info"]["id"] = serde_json::json!(run_id);
    doc["run_info"]["timestamp"] = serde_json::json!(timestamp);
    let doc = serde_json::to_vec(&doc).unwrap();
    let c = reqwest::Client::new();
    let url = gw.url_in(repo, &format!("{run_id}/"));
    let steps: &[(reqwest::Method, &str)] = if start_only {
        &[(reqwest::Method::POST, "run start")]
    } else {
        &[(reqwest::Method::POST, "run start"), (reqwest::Method::PATCH, "run end")]
    };
    for (method, what) in steps {
        send_accepted(&c, method.clone(), &url, token, &doc, &format!("{what} of {name}")).await;
    }
    (run_id, doc)
}

/// Run the real binary with `config` (no env file) and `args`: exit status, stdout, stderr.
pub fn run_cli(config: &Config, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_buildstats"))
        .args(args)
        .envs(config_env(config))
        .env("BUILDSTATS_ENV_FILE", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("run buildstats");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every search document of the alias: `_id` → (`_version`, `_source`).
pub async fn documents(config: &Config) -> BTreeMap<String, (i64, serde_json::Value)> {
    let search = processors::sinks::opensearch::client(config).unwrap();
    let (status, answer) = search
        .call_json(
            opensearch::http::Method::Post,
            &format!("/{}/_search", config.opensearch.alias),
            &serde_json::json!({"size": 1000, "version": true, "query": {"match_all": {}}}),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "search: {answer}");
    answer["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_string(), (h["_version"].as_i64().unwrap_or(-1), h["_source"].clone())))
        .collect()
}

pub async fn wipe_search_index(config: &Config) {
    let search = processors::sinks::opensearch::client(config).unwrap();
    let index = format!("{}-v{}", config.opensearch.alias, config.opensearch.index_version);
    let (status, answer) = search.call_json(opensearch::http::Method::Delete, &format!("/{index}"), &serde_json::json!({})).await.unwrap();
    assert!(status.is_success(), "delete index {index}: {answer}");
}

pub async fn wipe_table(config: &Config, stores: &Stores) {
    stores.dynamo.delete_table().table_name(&config.dynamodb.table).send().await.expect("delete table");
    wait_until("the table to be gone", Duration::from_secs(30), || async {
        stores.dynamo.describe_table().table_name(&config.dynamodb.table).send().await.is_err()
    })
    .await;
}
