//! The metrics every sink reports, labelled `sink` (and `partition` where it matters).
//! Names are listed in ARCHITECTURE.md ("Sink metrics").

pub const RECORDS_IN: &str = "sink_records_in_total";
pub const RECORDS_WRITTEN: &str = "sink_records_written_total";
pub const RECORDS_SKIPPED: &str = "sink_records_skipped_total";
pub const RETRIES: &str = "sink_retries_total";
pub const DEAD_LETTERED: &str = "sink_dead_lettered_total";
pub const BATCH_SECONDS: &str = "sink_batch_seconds";
pub const BATCH_RECORDS: &str = "sink_batch_records";
pub const CONSUMER_LAG: &str = "sink_consumer_lag";
pub const PARTITIONS_ASSIGNED: &str = "sink_partitions_assigned";
pub const PARTITIONS_PAUSED: &str = "sink_partitions_paused";
pub const PARTITIONS_STOPPED: &str = "sink_partitions_stopped";
pub const CHUNKS_STAGED: &str = "sink_chunks_staged_total";
/// Records dropped because their build was deleted (`reason="deleted"`) or is older than its
/// repo's retention policy (`reason="expired"`).
pub const RECORDS_DROPPED: &str = "sink_records_dropped_total";
