//! `buildstats reindex --sink NAME [--org ORG [--repo REPO]] [--since DATE]`: rebuild a
//! store from the S3 archive, for builds older than the topic holds (`kafka.retention_days`).
//!
//! The S3 sink archives every completing event beside the build's documents
//! ([`crate::sinks::s3::archive`]). A reindex lists the archive, reads each build's events,
//! puts them back in the order they were emitted and hands them to the sink's own
//! [`Sink::write`], the same code a record from the topic goes through: the store ends up as
//! the topic would have left it (identical items, documents, points). Every write is
//! idempotent, so a reindex into a store that still holds builds changes nothing of them, and
//! an interrupted reindex is simply run again.
//!
//! What is skipped, as the sinks skip it: builds in the deleted register and builds past their
//! repo's retention (`runtime::deleted`; an archive normally holds neither, since the S3 sink
//! deletes and drops them too). `--since` keeps builds that started at or after the date.
//! The S3 store itself is the source, so `--sink s3` is refused: rebuild S3 with
//! `buildstats replay --sink s3` from the topic.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use buildstats_core::config::Config;
use buildstats_core::tenancy::Slug;
use buildstats_schemas::DecodeError;
use futures::stream::{self, StreamExt};

use crate::runtime::backoff::Backoff;
use crate::runtime::deleted::{DeletedBuilds, Dropped, Seen};
use crate::sink::{BuildKey, Change, ChangeKind, Payloads, Sink, Transient};
use crate::sinks::dynamodb::DynamoDbSink;
use crate::sinks::influxdb::InfluxDbSink;
use crate::sinks::opensearch::OpenSearchSink;
use crate::sinks::s3::archive;
use crate::sinks::s3::keys::{self, BuildPrefix};
use crate::sinks::SinkName;

/// Which builds to rebuild.
#[derive(Debug, Clone, Default)]
pub struct ReindexScope {
    pub org: Option<Slug>,
    /// Only with `org`.
    pub repo: Option<Slug>,
    /// Builds that started at or after this time (epoch milliseconds).
    pub since_ms: Option<i64>,
    /// Read and judge everything, write nothing: what a reindex would write.
    pub dry_run: bool,
}

/// What a reindex did, for the summary and the tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReindexSummary {
    /// Builds with archived events in the scope's prefix.
    pub builds_listed: u64,
    /// Builds whose events were written to the store.
    pub builds_written: u64,
    pub events_written: u64,
    /// Builds that started before `--since` (or whose start is not archived).
    pub skipped_since: u64,
    /// Builds in the deleted register.
    pub skipped_deleted: u64,
    /// Builds past their repo's retention policy.
    pub skipped_expired: u64,
    /// Archived events that cannot be read or that the store refused: (object or build, why).
    pub refused: Vec<(String, String)>,
}

/// Builds read and written together: enough to keep the store busy, few enough that the
/// progress moves and the memory stays small.
const BUILDS_PER_ROUND: usize = 64;
/// Builds read at once, and events of one build read at once.
const BUILDS_READ_AT_ONCE: usize = 8;
const EVENTS_READ_AT_ONCE: usize = 4;
/// A failing store call is retried for about two minutes before the reindex gives up.
const STORE_RETRY: Retry = Retry { first: Duration::from_millis(200), max: Duration::from_secs(15), attempts: 14 };
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// `--since`: RFC 3339, a date (midnight UTC) or epoch milliseconds.
pub fn parse_since(text: &str) -> Result<i64, String> {
    match crate::replay::parse_from(text) {
        Ok(crate::replay::ReplayFrom::Time(ms)) => Ok(ms),
        Ok(crate::replay::ReplayFrom::Earliest) => Err("leave --since out to rebuild every archived build".into()),
        Err(e) => Err(e.replace("`earliest`, ", "")),
    }
}

pub async fn reindex(config: &Config, sink: SinkName, scope: ReindexScope) -> anyhow::Result<ReindexSummary> {
    if scope.repo.is_some() && scope.org.is_none() {
        bail!("--repo needs --org: a repo is named within its org");
    }
    let deleted = DeletedBuilds::connect(config).await.context("reindex reads the register of deleted builds and the retention policies in Postgres")?;
    match sink {
        SinkName::S3 => bail!(
            "the S3 archive is what a reindex reads, so it cannot rebuild S3 itself: rebuild the S3 store from the topic with `buildstats replay --sink s3 --from earliest`"
        ),
        SinkName::DynamoDb => run(config, DynamoDbSink::from_config(config).await, &deleted, scope).await,
        SinkName::OpenSearch => run(config, OpenSearchSink::from_config(config)?, &deleted, scope).await,
        SinkName::InfluxDb => run(config, InfluxDbSink::from_config(config)?, &deleted, scope).await,
    }
}

/// One build of the listing: its prefix and the keys of its archived events.
struct Listed {
    prefix: String,
    keys: Vec<String>,
}

async fn run<S: Sink>(config: &Config, sink: S, deleted: &DeletedBuilds, scope: ReindexScope) -> anyhow::Result<ReindexSummary> {
    let name = sink.name();
    sink.check_ready().await.map_err(|e| {
        anyhow!("the {name} store is not ready: {e}. Create it with `buildstats admin init-stores` (idempotent) and check its endpoint in the config")
    })?;
    let s3 = crate::sinks::s3::client(config).await;
    let bucket = config.s3.bucket.clone();
    let lead = keys::lead(&config.s3.prefix);
    let staging = format!("{}/", config.sinks.staging_prefix.trim_matches('/'));
    let list_prefix = match (&scope.org, &scope.repo) {
        (Some(org), Some(repo)) => format!("{lead}{org}/{repo}/"),
        (Some(org), None) => format!("{lead}{org}/"),
        _ => lead.clone(),
    };
    let since = scope.since_ms.map(|ms| chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339()));
    eprintln!(
        "reindex {name}: from s3://{bucket}/{list_prefix} (the archive){}",
        since.as_deref().map(|s| format!(", builds started since {s}")).unwrap_or_default()
    );

    let started = Instant::now();
    let mut summary = ReindexSummary::default();
    let mut round: Vec<Listed> = Vec::new();
    let mut current: Option<Listed> = None;
    let mut pending: Option<ReadRound> = None;
    let mut token: Option<String> = None;
    let ctx = Round { config, sink: &sink, deleted, s3: &s3, bucket: &bucket, since_ms: scope.since_ms, dry_run: scope.dry_run };
    let mut progress = Progress { name, started, last: started, dry_run: scope.dry_run };
    loop {
        let (bucket, list_prefix, from) = (&bucket, &list_prefix, &token);
        let page = retried("list the archive", || {
            let call = s3.list_objects_v2().bucket(bucket).prefix(list_prefix).set_continuation_token(from.clone()).send();
            async move { call.await.map_err(|e| Transient(format!("list s3://{bucket}/{list_prefix}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))) }
        })
        .await?;
        // Keys come sorted, so a build's keys are next to each other.
        for key in page.contents().iter().filter_map(|o| o.key()) {
            if key.starts_with(&staging) {
                continue;
            }
            let Some(build) = archive::event_key_build(&lead, key) else { continue };
            match &mut current {
                Some(listed) if listed.prefix == build => listed.keys.push(key.to_string()),
                _ => {
                    if let Some(done) = current.replace(Listed { prefix: build.to_string(), keys: vec![key.to_string()] }) {
                        round.push(done);
                    }
                }
            }
            if round.len() >= BUILDS_PER_ROUND {
                // Read this round while the previous one is written.
                let (read, written) = tokio::join!(ctx.read(std::mem::take(&mut round)), ctx.write(pending.take(), &mut summary));
                written?;
                pending = Some(read?);
                progress.tick(&summary);
            }
        }
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    round.extend(current.take());
    ctx.write(pending.take(), &mut summary).await?;
    let last = ctx.read(round).await?;
    ctx.write(Some(last), &mut summary).await?;
    progress.finish(&summary);
    Ok(summary)
}

struct Round<'a, S> {
    config: &'a Config,
    sink: &'a S,
    deleted: &'a DeletedBuilds,
    s3: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    since_ms: Option<i64>,
    dry_run: bool,
}

/// One round of builds, read: each build's events in order, and what could not be read.
struct ReadRound {
    listed: u64,
    builds: Vec<Vec<Change>>,
    refused: Vec<(String, String)>,
}

impl<S: Sink> Round<'_, S> {
    /// Read every build's events, in emission order.
    async fn read(&self, listed: Vec<Listed>) -> anyhow::Result<ReadRound> {
        let mut round = ReadRound { listed: listed.len() as u64, builds: Vec::new(), refused: Vec::new() };
        let read: Vec<anyhow::Result<(Vec<Change>, Vec<(String, String)>)>> =
            stream::iter(listed).map(|listed| self.read_build(listed)).buffered(BUILDS_READ_AT_ONCE).collect().await;
        for result in read {
            let (changes, refused) = result?;
            round.refused.extend(refused);
            if !changes.is_empty() {
                round.builds.push(changes);
            }
        }
        Ok(round)
    }

    /// Filter a read round as the sinks would, and write what is left.
    async fn write(&self, round: Option<ReadRound>, summary: &mut ReindexSummary) -> anyhow::Result<()> {
        let Some(ReadRound { listed, mut builds, refused }) = round else { return Ok(()) };
        summary.builds_listed += listed;
        summary.refused.extend(refused);
        let name = self.sink.name();
        // `--since`, then what the sinks drop: deleted builds and builds past their policy.
        builds.retain(|changes| {
            let Some(since) = self.since_ms else { return true };
            let keep = start_us(changes).is_some_and(|us| us.div_euclid(1000) >= since);
            if !keep {
                summary.skipped_since += 1;
            }
            keep
        });
        let seen: Vec<Seen> = builds.iter().map(|c| Seen { build_key: c[0].key.joined(), started_at_us: start_us(c) }).collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let drop = retried("check the deleted builds", || self.deleted.judge(&seen, now_ms)).await?;
        builds.retain(|changes| match drop.get(&changes[0].key.joined()) {
            None => true,
            Some(Dropped::Deleted) => {
                summary.skipped_deleted += 1;
                false
            }
            Some(Dropped::Expired) => {
                summary.skipped_expired += 1;
                false
            }
        });
        // Each build's events in order, in batches of at most `batch_max_records`.
        summary.builds_written += builds.len() as u64;
        let all: Vec<Change> = builds.into_iter().flatten().collect();
        if self.dry_run {
            summary.events_written += all.len() as u64;
            return Ok(());
        }
        for part in all.chunks(self.config.sinks.batch_max_records.max(1)) {
            let batch = Arc::new(part.to_vec());
            let outcome = retried(&format!("write to {name}"), || self.sink.write(batch.clone())).await?;
            for (change, result) in batch.iter().zip(outcome) {
                match result {
                    Ok(()) => summary.events_written += 1,
                    Err(r) => summary.refused.push((format!("{} ({})", change.key.joined(), change.kind.name()), r.0)),
                }
            }
        }
        Ok(())
    }

    /// The build's events, decoded and checked as the topic's records are, sorted into
    /// emission order, each event once; and what could not be read.
    async fn read_build(&self, listed: Listed) -> anyhow::Result<(Vec<Change>, Vec<(String, String)>)> {
        let bodies: Vec<anyhow::Result<(String, Option<bytes::Bytes>)>> = stream::iter(listed.keys)
            .map(|key| async move {
                let body = retried("read an archived event", || archive::read(self.s3, self.bucket, &key)).await?;
                Ok((key, body))
            })
            .buffered(EVENTS_READ_AT_ONCE)
            .collect()
            .await;
        let mut changes = Vec::new();
        let mut refused = Vec::new();
        for body in bodies {
            let (key, Some(bytes)) = body? else { continue };
            // Decoded and validated as the topic's records are; it must name the build whose
            // prefix holds it.
            let event = match buildstats_schemas::decode(&bytes) {
                Ok(event) => event,
                Err(e @ DecodeError::UnknownWriterSchema { .. }) => bail!(
                    "{key} was written with a schema this build does not know ({e}): run the reindex with a buildstats version that knows it"
                ),
                Err(e) => {
                    refused.push((key, format!("cannot be decoded: {e}")));
                    continue;
                }
            };
            let Some(kind) = ChangeKind::from_event(event) else {
                refused.push((key, "not a completing event".into()));
                continue;
            };
            let header = kind.header().expect("a completing event has a header");
            let build = match BuildKey::parse(&format!("{}/{}/{}", header.org, header.repo, header.run_id)) {
                Ok(build) => build,
                Err(e) => {
                    refused.push((key, format!("names no valid build: {e}")));
                    continue;
                }
            };
            if BuildPrefix::new(&self.config.s3.prefix, &build).as_str() != listed.prefix {
                refused.push((key, format!("names build {} but is archived under another build", build.joined())));
                continue;
            }
            changes.push(Change { key: build, partition: -1, offset: -1, kind, payloads: Payloads::default() });
        }
        changes.sort_by_cached_key(|c| archive::replay_order(&c.kind));
        let mut ids = HashSet::new();
        changes.retain(|c| c.kind.header().is_some_and(|h| ids.insert(h.event_id.clone())));
        Ok((changes, refused))
    }
}

/// When the build started (microseconds), from its run start or final report.
fn start_us(changes: &[Change]) -> Option<i64> {
    changes.iter().find_map(|c| c.kind.started_at_us())
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    first: Duration,
    max: Duration,
    attempts: u32,
}

/// A store call retried with backoff ([`STORE_RETRY`]), then an error that says what to do.
async fn retried<T, F, Fut>(what: &str, call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Transient>>,
{
    retried_with(STORE_RETRY, what, call).await
}

async fn retried_with<T, F, Fut>(retry: Retry, what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Transient>>,
{
    let mut backoff = Backoff::new(retry.first, retry.max);
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if backoff.attempts() + 1 < retry.attempts => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, attempt = backoff.attempts(), ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => bail!(
                "{what} kept failing ({} attempts): {e}. Fix the store or its endpoint and run the reindex again: every write is idempotent, so what was written stays as it is",
                retry.attempts
            ),
        }
    }
}

struct Progress {
    name: &'static str,
    started: Instant,
    last: Instant,
    dry_run: bool,
}

impl Progress {
    fn tick(&mut self, s: &ReindexSummary) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            eprintln!("reindex {}: {}", self.name, self.line(s));
        }
    }

    fn line(&self, s: &ReindexSummary) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        format!(
            "{} builds listed, {} {} ({} events), {} skipped, {} refused; {:.0} builds/s, {:.1} s",
            s.builds_listed,
            s.builds_written,
            if self.dry_run { "would be written (dry run: nothing was)" } else { "written" },
            s.events_written,
            s.skipped_since + s.skipped_deleted + s.skipped_expired,
            s.refused.len(),
            s.builds_listed as f64 / secs.max(1e-3),
            secs
        )
    }

    fn finish(&self, s: &ReindexSummary) {
        eprintln!("reindex {} done: {}", self.name, self.line(s));
        eprintln!(
            "  skipped: {} started before --since, {} deleted, {} past their retention policy",
            s.skipped_since, s.skipped_deleted, s.skipped_expired
        );
        for (what, why) in s.refused.iter().take(20) {
            eprintln!("  refused {what}: {why}");
        }
        if s.refused.len() > 20 {
            eprintln!("  ... and {} more refused", s.refused.len() - 20);
        }
        if s.builds_listed == 0 {
            eprintln!(
                "  nothing archived here: check s3.bucket, s3.prefix and --org/--repo. builds stored before the S3 sink archived events have none; rebuild those from the topic with `buildstats replay`"
            );
        } else if !s.refused.is_empty() {
            eprintln!("  the refused events were left out; the rest of their builds was written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records;

    fn change(kind: ChangeKind) -> Change {
        Change { key: test_records::key("r1"), partition: -1, offset: -1, kind, payloads: Payloads::default() }
    }

    #[test]
    fn since_takes_times_and_dates() {
        assert_eq!(parse_since("2025-12-04"), Ok(1_764_806_400_000));
        assert!(parse_since("earliest").unwrap_err().contains("leave --since out"));
        let e = parse_since("soon").unwrap_err();
        assert!(e.contains("RFC 3339") && !e.contains("earliest"), "{e}");
    }

    #[test]
    fn a_build_starts_when_its_run_record_says() {
        let ended = test_records::run_ended(test_records::run_record("r1"));
        assert_eq!(start_us(&[change(ChangeKind::Tombstone), change(ChangeKind::Ended(ended))]), Some(1_700_000_000_123_456));
        assert_eq!(start_us(&[change(ChangeKind::Tombstone)]), None);
    }

    #[tokio::test]
    async fn a_store_that_keeps_failing_ends_the_reindex_with_what_to_do() {
        let quick = Retry { first: Duration::from_millis(1), max: Duration::from_millis(2), attempts: 5 };
        let mut calls = 0;
        let result: anyhow::Result<()> = retried_with(quick, "write to dynamodb", || {
            calls += 1;
            async { Err(Transient("throttled".into())) }
        })
        .await;
        let err = result.unwrap_err().to_string();
        assert_eq!(calls, 5);
        assert!(err.contains("throttled") && err.contains("run the reindex again"), "{err}");
        let mut calls = 0;
        let ok = retried_with(quick, "write", || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(Transient("busy".into())) } else { Ok(n) } }
        })
        .await
        .unwrap();
        assert_eq!(ok, 3);
    }
}
