//! Test kit for the gateway's integration tests: real tansu and Postgres (started by
//! `dev/services up`), a gateway per test on its own topic, a topic reader, fixtures.
//!
//! A missing server is a test failure whose message says how to start it, never a skip.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use buildstats_core::auth::Authenticator;
use buildstats_core::config::{read_env_file, Config};
use buildstats_core::tenancy::Slug;
use buildstats_core::tokens::Scope;
use buildstats_core::{db, kafka};
use buildstats_schemas::{decode, BlobChunk, BlobRef, Event};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

pub const TEST_RECORD_LIMIT: usize = 4096;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("BUILDSTATS_FIXTURES_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("../shared/fixtures/pants-runs"))
}

/// `target/dev/services.env` overlaid by the process environment.
pub fn services_env() -> HashMap<String, String> {
    let path = repo_root().join("target/dev/services.env");
    let mut vars: HashMap<String, String> = read_env_file(&path).into_iter().collect();
    for (k, v) in std::env::vars() {
        if k.starts_with("BUILDSTATS_") {
            vars.insert(k, v);
        }
    }
    vars
}

fn require(vars: &HashMap<String, String>, name: &str) -> String {
    vars.get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not set and target/dev/services.env does not name it: run `dev/services up` first"))
}

fn assert_reachable(what: &str, hostport: &str) {
    let addr: SocketAddr = hostport.parse().unwrap_or_else(|_| panic!("{what} address {hostport:?} is not host:port"));
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("{what} is not answering on {hostport}: start it with `dev/services up`");
    }
}

fn host_port_of_url(url: &str) -> String {
    let after = url.split("://").nth(1).unwrap_or(url);
    let after = after.rsplit('@').next().unwrap();
    after.split('/').next().unwrap().to_string()
}

/// A config pointing at the dev servers, with a fresh topic and the test database.
pub fn base_config() -> Config {
    let vars = services_env();
    let mut config = Config::load(Path::new("/nonexistent"), false, |name| vars.get(name).cloned()).unwrap();
    config.postgres.url = require(&vars, "BUILDSTATS_POSTGRES_URL").replace("/buildstats", "/buildstats_test");
    assert_reachable("Kafka (tansu)", &require(&vars, "BUILDSTATS_KAFKA_BROKERS"));
    assert_reachable("PostgreSQL", &host_port_of_url(&config.postgres.url));
    assert!(!config.auth.keys.is_empty(), "BUILDSTATS_AUTH_KEYS missing: run `dev/services up`");
    let unique = uuid::Uuid::new_v4().simple().to_string();
    config.kafka.topic = format!("buildstats.test.{unique}");
    config.kafka.dead_letter_topic = format!("buildstats.test.{unique}.dlq");
    config.kafka.partitions = 3;
    config.kafka.record_limit_bytes = TEST_RECORD_LIMIT;
    config.kafka.produce_timeout_ms = 10_000;
    config.auth.revocation_check_seconds = 1;
    config
}

/// Apply migrations to the test database once per test binary.
pub fn migrate_once(config: &Config) {
    static DONE: OnceLock<()> = OnceLock::new();
    let pg = config.postgres.clone();
    DONE.get_or_init(move || {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(db::migrate(&pg)).expect("migrating the test database");
        })
        .join()
        .unwrap();
    });
}

pub struct TestGateway {
    pub base_url: String,
    pub config: Config,
    pub auth: Authenticator,
    pub org: String,
    pub repo: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(base_config()).await
    }

    pub async fn start_with(config: Config) -> TestGateway {
        migrate_once(&config);
        let state = ingest_gateway::prepare(&config).await.expect("gateway prepares");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ingest_gateway::serve(state, listener, Duration::from_secs(5), async {
            let _ = rx.await;
        }));
        let pool = db::connect(&config.postgres).await.unwrap();
        let auth = Authenticator::new(&config.auth, pool).unwrap();
        let unique = &uuid::Uuid::new_v4().simple().to_string()[..12];
        TestGateway { base_url, config, auth, org: format!("org{unique}"), repo: "repo".into(), shutdown: Some(tx), task: Some(task) }
    }

    /// A long-lived token for this gateway's org/repo (or another).
    pub async fn token_for(&self, org: &str, repo: &str, scope: Scope, ci: bool) -> (String, uuid::Uuid) {
        let created = self
            .auth
            .create_token(&Slug::parse("org", org).unwrap(), &Slug::parse("repo", repo).unwrap(), scope, ci, "test", None)
            .await
            .unwrap();
        (created.token, created.jid)
    }

    pub async fn token(&self) -> String {
        self.token_for(&self.org, &self.repo, Scope::Ingest, false).await.0
    }

    pub fn url(&self, path: &str) -> String {
        self.url_in(&self.repo, path)
    }

    /// [`url`](Self::url) for another repo of the gateway's org.
    pub fn url_in(&self, repo: &str, path: &str) -> String {
        format!("{}/api/v1/repos/{}/{repo}/buildsense/{path}", self.base_url, self.org)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Everything on this gateway's topic, decoded.
    pub async fn topic(&self) -> TopicContents {
        read_topic(&self.config, &self.config.kafka.topic).await
    }
}

#[derive(Debug)]
pub struct TopicRecord {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    pub event: Event,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct TopicContents {
    pub records: Vec<TopicRecord>,
}

impl TopicContents {
    pub fn for_run(&self, run_id: &str) -> Vec<&TopicRecord> {
        self.records.iter().filter(|r| r.key.ends_with(&format!("/{run_id}"))).collect()
    }

    /// Completing events (not chunks) of one run, in topic order.
    pub fn events_of(&self, run_id: &str) -> Vec<&Event> {
        self.for_run(run_id).into_iter().map(|r| &r.event).filter(|e| !matches!(e, Event::BlobChunk(_))).collect()
    }

    /// The bytes of a blob: inline, or its chunks reassembled (checking they precede `before`).
    pub fn blob(&self, blob: &BlobRef) -> Vec<u8> {
        if let Some(inline) = &blob.inline {
            return inline.clone();
        }
        let mut chunks: Vec<BlobChunk> = self
            .records
            .iter()
            .filter_map(|r| match &r.event {
                Event::BlobChunk(c) if c.blob_id == blob.blob_id => Some(c.clone()),
                _ => None,
            })
            .collect();
        // A retried request republishes the same chunks: keep one of each index.
        chunks.sort_by_key(|c| c.index);
        chunks.dedup_by_key(|c| c.index);
        let bytes =
            ingest_gateway::records::reassemble(&mut chunks).unwrap_or_else(|| panic!("blob {} has an incomplete chunk set", blob.blob_id));
        assert_eq!(bytes.len() as i64, blob.size, "blob size");
        bytes
    }
}

/// Read a topic from the beginning to its current end, with a throwaway consumer.
pub async fn read_topic(config: &Config, topic: &str) -> TopicContents {
    let kafka_config = config.kafka.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka::client_config(&kafka_config)
            .unwrap()
            .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap();
        let metadata = with_retries("topic metadata", || consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)));
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut assignment = TopicPartitionList::new();
        let mut end: HashMap<i32, i64> = HashMap::new();
        for p in 0..partitions {
            let (low, high) = with_retries("watermarks", || consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)));
            if high > low {
                end.insert(p, high);
                assignment.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
            }
        }
        let mut contents = TopicContents::default();
        if end.is_empty() {
            return contents;
        }
        consumer.assign(&assignment).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done: HashMap<i32, bool> = HashMap::new();
        while done.len() < end.len() {
            assert!(Instant::now() < deadline, "timed out reading {topic}");
            let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
            let message = message.expect("consume");
            let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
            let value = message.payload().expect("no tombstones from the gateway");
            let event = decode(value).unwrap_or_else(|e| panic!("record {key}@{}: {e}", message.offset()));
            let mut headers = BTreeMap::new();
            if let Some(hs) = rdkafka::message::Message::headers(&message) {
                use rdkafka::message::Headers;
                for h in hs.iter() {
                    headers.insert(h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string());
                }
            }
            if message.offset() + 1 >= end[&message.partition()] {
                done.insert(message.partition(), true);
            }
            contents.records.push(TopicRecord { key, partition: message.partition(), offset: message.offset(), event, headers });
        }
        contents
    })
    .await
    .unwrap()
}

/// The test's own reads of broker metadata: a slow answer from a loaded broker is not what
/// is under test, so retry a few times before failing with the broker's error.
fn with_retries<T>(what: &str, mut f: impl FnMut() -> rdkafka::error::KafkaResult<T>) -> T {
    let mut last = None;
    for attempt in 0..5 {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(500 * (attempt + 1)));
            }
        }
    }
    panic!("reading {what} from the broker failed 5 times: {:?}", last.unwrap())
}

/// A fixture document with a fresh run id (so runs never collide across tests).
pub fn fixture_with_new_run_id(name: &str) -> (String, Vec<u8>) {
    let bytes = std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let run_id = new_run_id();
    doc["run_info"]["id"] = serde_json::json!(run_id);
    (run_id, serde_json::to_vec(&doc).unwrap())
}

pub fn new_run_id() -> String {
    format!("pants_run_2026_12_04_12_00_00_000_{}", uuid::Uuid::new_v4().simple())
}

/// Every fixture that is a build_stats document.
pub fn build_stats_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap_or_else(|e| panic!("fixtures at {}: {e}", fixtures_dir().display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            let bytes = std::fs::read(&path).ok()?;
            let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            value.get("run_info")?;
            Some(path.file_name()?.to_string_lossy().to_string())
        })
        .collect();
    names.sort();
    names
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A multipart body the way the plugin builds it: one part per file.
pub fn multipart(parts: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let boundary = format!("bs{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (name, data) in parts {
        write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n").unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// Send a JSON document as the plugin does: multipart `buildsense`, zlib over 10 KiB.
pub async fn send_doc(client: &reqwest::Client, method: reqwest::Method, url: &str, token: &str, doc: &[u8]) -> reqwest::Response {
    let compress = doc.len() > 10 * 1024;
    let data = if compress { zlib(doc) } else { doc.to_vec() };
    let (body, content_type) = multipart(&[("buildsense", &data)]);
    let mut request = client
        .request(method, url)
        .bearer_auth(token)
        .header("content-type", content_type)
        .header("user-agent", "pants/v2.16.0 toolchain/v0.27.0")
        .header("x-pants-stats-version", "3")
        .body(body);
    if compress {
        request = request.header("content-encoding", "compress");
    }
    request.send().await.unwrap()
}

/// Upload artifacts as the plugin does: one zlib-compressed multipart part per file (name →
/// content), `Content-Encoding: compress`.
pub async fn send_artifacts(client: &reqwest::Client, url: &str, token: &str, parts: &[(&str, &[u8])]) -> reqwest::Response {
    let compressed: Vec<(&str, Vec<u8>)> = parts.iter().map(|(name, data)| (*name, zlib(data))).collect();
    let borrowed: Vec<(&str, &[u8])> = compressed.iter().map(|(name, data)| (*name, data.as_slice())).collect();
    let (body, content_type) = multipart(&borrowed);
    client
        .post(url)
        .bearer_auth(token)
        .header("content-type", content_type)
        .header("content-encoding", "compress")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Status and JSON body of a response.
pub async fn status_json(response: reqwest::Response) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    (status, json, headers)
}

/// A tansu of a test's own (from `dev/services`, path in BUILDSTATS_DEV_TANSU_BIN), on a free
/// port with its SQLite store in `dir`: for tests that stop the broker or load it heavily, so
/// the shared one is untouched.
pub struct PrivateBroker {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
    pub starts: usize,
}

impl PrivateBroker {
    pub fn start(dir: &Path) -> PrivateBroker {
        let bin = services_env()
            .get("BUILDSTATS_DEV_TANSU_BIN")
            .cloned()
            .unwrap_or_else(|| panic!("BUILDSTATS_DEV_TANSU_BIN is not in target/dev/services.env: run `dev/services up`"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut broker = PrivateBroker { bin: bin.into(), dir: dir.to_path_buf(), port, child: None, starts: 0 };
        broker.spawn();
        broker
    }

    pub fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("tansu-start{}.log", self.starts))).unwrap();
        let child = std::process::Command::new(&self.bin)
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "sqlite://tansu.db"])
            .env("RUST_LOG", std::env::var("BUILDSTATS_TEST_TANSU_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private tansu did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the broker the way an operator (or Kubernetes) does: SIGTERM, then wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    child.kill().unwrap();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
