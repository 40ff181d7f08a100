//! `buildstats replay --sink NAME --from earliest|TIME [--group G]`: move a sink's consumer
//! group back, so the sink rebuilds its store from what the builds topic holds.
//!
//! The group's processes must be stopped: a member that is still running would commit its own
//! offsets over the moved ones at its next commit. The command refuses while the group has
//! members. For each partition it commits the oldest offset the topic holds (`earliest`) or
//! the first offset at or after the time (Kafka's offsets-for-times), then prints what the
//! sink will re-read. Every sink write is idempotent, and a build's tombstone follows its
//! records on the same partition, so a replay ends with deleted builds deleted: a wiped store
//! comes back exactly as it was, for every build the topic still holds
//! (`kafka.retention_days`).
//!
//! A `--group` that never committed anything is a fresh group: it is created at those offsets.

use std::time::Duration;

use anyhow::Context;
use buildstats_core::config::Config;
use buildstats_core::kafka;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::sinks::SinkName;

/// Where the replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The oldest record the topic still holds.
    Earliest,
    /// The first record at or after this time (epoch milliseconds).
    Time(i64),
}

/// `earliest`, RFC 3339, a date (midnight UTC) or epoch milliseconds.
pub fn parse_from(text: &str) -> Result<ReplayFrom, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("earliest") {
        return Ok(ReplayFrom::Earliest);
    }
    if let Ok(ms) = text.parse::<i64>() {
        if ms < 0 {
            return Err(format!("{text} is before 1970: give epoch milliseconds, a date or an RFC 3339 time"));
        }
        return Ok(ReplayFrom::Time(ms));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(ReplayFrom::Time(t.timestamp_millis()));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(ReplayFrom::Time(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis()));
    }
    Err(format!(
        "{text:?} is not `earliest`, an RFC 3339 time (2026-12-01T00:00:00Z), a date (2026-12-01) or epoch milliseconds"
    ))
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMove {
    pub partition: i32,
    /// The group's committed offset before (None: nothing committed).
    pub before: Option<i64>,
    pub after: i64,
    /// Records the sink will read from `after` to the end of the partition.
    pub to_read: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySummary {
    pub group: String,
    pub partitions: Vec<PartitionMove>,
}

impl ReplaySummary {
    pub fn records_to_read(&self) -> i64 {
        self.partitions.iter().map(|p| p.to_read).sum()
    }
}

pub async fn replay(config: &Config, sink: SinkName, group: &str, from: ReplayFrom) -> anyhow::Result<ReplaySummary> {
    let topic = config.kafka.topic.clone();
    let partitions = kafka::partition_count(&config.kafka, &topic, Duration::from_secs(10)).await?;
    if partitions == 0 {
        anyhow::bail!("topic {topic} does not exist: run `buildstats admin init` (or check kafka.topic)");
    }
    let mut consumer_config = kafka::consumer_config(&config.kafka, group, config.sinks.commit_interval_ms)?;
    consumer_config.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = consumer_config.create().context("cannot create a Kafka client for the replay")?;
    let group_owned = group.to_string();
    let summary = tokio::task::spawn_blocking(move || move_group(&consumer, &topic, partitions, &group_owned, from))
        .await
        .context("the replay task panicked")??;

    eprintln!("replay {sink}: group {group} on {} ({} partitions)", config.kafka.topic, summary.partitions.len());
    eprintln!("  partition  committed before  now   records to re-read");
    for p in &summary.partitions {
        let before = p.before.map_or_else(|| "-".to_string(), |o| o.to_string());
        eprintln!("  {:>9}  {:>16}  {:>4}  {:>18}", p.partition, before, p.after, p.to_read);
    }
    let start = match from {
        ReplayFrom::Earliest => "the oldest record the topic holds".to_string(),
        ReplayFrom::Time(ms) => chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| ms.to_string()),
    };
    let default_group = sink.default_group(&config.sinks.group_prefix);
    let run = if group == default_group { format!("buildstats sink {sink}") } else { format!("buildstats sink {sink} --group {group}") };
    eprintln!(
        "replay {sink} ready: {} records from {start} will be re-read. Start the sink (`{run}`); its writes are idempotent and tombstones are replayed too. Watch sink_consumer_lag{{sink=\"{sink}\"}} fall to 0.",
        summary.records_to_read()
    );
    Ok(summary)
}

fn move_group(consumer: &BaseConsumer, topic: &str, partitions: i32, group: &str, from: ReplayFrom) -> anyhow::Result<ReplaySummary> {
    let timeout = Duration::from_secs(10);
    // A running member would overwrite what we commit: refuse while there is one.
    match consumer.fetch_group_list(Some(group), timeout) {
        Ok(list) => {
            if let Some(g) = list.groups().iter().find(|g| g.name() == group) {
                let members = g.members();
                if !members.is_empty() {
                    let who: Vec<String> = members.iter().map(|m| format!("{} ({})", m.client_id(), m.client_host())).collect();
                    anyhow::bail!(
                        "consumer group {group} has {} running member(s): {}. Stop every sink process of this group first (a running member commits its own offsets over the replay's), then run the replay again",
                        members.len(),
                        who.join(", ")
                    );
                }
            }
        }
        Err(e) => tracing::warn!(group, error = %e, "cannot list the group's members (the broker may not support it): make sure its sink processes are stopped"),
    }
    let mut all = TopicPartitionList::new();
    for p in 0..partitions {
        all.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(all.clone(), timeout).context("cannot read the group's committed offsets")?;
    let by_time = match from {
        ReplayFrom::Earliest => None,
        ReplayFrom::Time(ms) => {
            let mut wanted = TopicPartitionList::new();
            for p in 0..partitions {
                wanted.add_partition_offset(topic, p, Offset::Offset(ms))?;
            }
            Some(consumer.offsets_for_times(wanted, timeout).context("cannot look up offsets by time (offsets-for-times)")?)
        }
    };
    let mut target = TopicPartitionList::new();
    let mut moves = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout).context("cannot read the topic's offsets")?;
        let after = match (&by_time, from) {
            (Some(found), ReplayFrom::Time(ms)) => match found.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 && o < high && record_at_or_after(consumer, topic, p, o.max(low), ms)? => o.max(low),
                // No record at or after the time: nothing to re-read on this partition.
                _ => high,
            },
            _ => low,
        };
        let before = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        target.add_partition_offset(topic, p, Offset::Offset(after))?;
        moves.push(PartitionMove { partition: p, before, after, to_read: high - after });
    }
    consumer.assign(&target).context("cannot assign the partitions to commit them")?;
    consumer
        .commit(&target, CommitMode::Sync)
        .with_context(|| format!("cannot commit the replay offsets for group {group}: is a sink of this group still running?"))?;
    Ok(ReplaySummary { group: group.to_string(), partitions: moves })
}

/// Whether the record at `offset` was written at or after `ms`. Kafka answers "no record
/// that late" with offset -1, but some brokers (tansu 0.6.0) answer offset 0 with timestamp
/// -1, which librdkafka hands on as offset 0: reading that one record tells them apart.
fn record_at_or_after(consumer: &BaseConsumer, topic: &str, partition: i32, offset: i64, ms: i64) -> anyhow::Result<bool> {
    let mut one = TopicPartitionList::new();
    one.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&one).context("cannot read the record found by time")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(record)) if record.partition() == partition => {
                return Ok(record.timestamp().to_millis().is_none_or(|t| t >= ms));
            }
            Some(Ok(_)) => {}
            // Connection errors are reported here too; librdkafka reconnects by itself.
            Some(Err(e)) => tracing::debug!(partition, error = %e, "reading the record found by time; retrying"),
            None => {}
        }
    }
    anyhow::bail!("partition {partition} of {topic}: the record at offset {offset} did not arrive within 30 s; is the broker up?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_earliest_times_dates_and_epoch_ms_and_refuses_the_rest() {
        assert_eq!(parse_from("earliest"), Ok(ReplayFrom::Earliest));
        assert_eq!(parse_from("1764806400000"), Ok(ReplayFrom::Time(1_764_806_400_000)));
        assert_eq!(parse_from("2025-12-04"), Ok(ReplayFrom::Time(1_764_806_400_000)));
        assert_eq!(parse_from("2025-12-04T01:00:00+01:00"), Ok(ReplayFrom::Time(1_764_806_400_000)));
        for bad in ["latest", "yesterday", "-5", "2025-13-01", ""] {
            let e = parse_from(bad).unwrap_err();
            assert!(e.contains("earliest") || e.contains("1970"), "{bad}: {e}");
        }
    }
}
