//! A progress record per committed batch, shaped like Spark's
//! `StreamingQueryProgress` so its readers feel at home. Records are kept
//! in the workspace (`_spate/jobs/<job>/progress/<batch>.json`), so a
//! restarted master still shows a job's history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spate_engine::Workspace;
use spate_engine::workspace::SPATE_DIR;

use crate::error::Result;

/// How many records a master keeps in memory per job.
pub const KEPT_PER_JOB: usize = 300;

/// Where a batch's wall time went, in milliseconds (Spark's `durationMs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    /// Asking Kafka for its latest offsets.
    pub latest_offset: u64,
    /// Writing the offsets log entry.
    pub wal_commit: u64,
    /// Preparing the tasks (the plan itself is made once, at submit).
    pub query_planning: u64,
    /// Running the tasks on workers.
    pub add_batch: u64,
    /// Writing the sink manifest and the commit log entry.
    pub commit_offsets: u64,
    /// The whole trigger.
    pub trigger_execution: u64,
}

/// Per partition offsets, keyed as Spark does: topic, then partition.
pub type TopicOffsets = BTreeMap<String, BTreeMap<String, i64>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceProgress {
    pub description: String,
    pub start_offset: TopicOffsets,
    pub end_offset: TopicOffsets,
    pub latest_offset: TopicOffsets,
    pub num_input_rows: u64,
    pub input_rows_per_second: f64,
    pub processed_rows_per_second: f64,
    /// Records in Kafka not yet read after this batch, over all partitions.
    pub offsets_behind_latest: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkProgress {
    pub description: String,
    pub num_output_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateOperatorProgress {
    pub operator_name: String,
    pub num_rows_total: u64,
    pub num_rows_updated: u64,
    /// Groups whose window the watermark closed, gone from state.
    #[serde(default)]
    pub num_rows_removed: u64,
    /// What the state takes in the workers' memory.
    pub memory_used_bytes: u64,
    /// What the batch wrote of the state: a delta of the groups it changed
    /// and removed, or, every `job.state_snapshot_interval` batches, all.
    #[serde(default)]
    pub state_bytes_written: u64,
    #[serde(default)]
    pub num_rows_dropped_by_watermark: u64,
}

/// Spark's `eventTime`: `watermark` and `max`, ISO-8601.
pub fn event_time(watermark_ms: Option<i64>, max_ms: Option<i64>) -> BTreeMap<String, String> {
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut map = BTreeMap::new();
    if let Some(w) = watermark_ms {
        map.insert("watermark".to_string(), iso(w));
    }
    if let Some(m) = max_ms {
        map.insert("max".to_string(), iso(m));
    }
    map
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchProgress {
    /// The job's id.
    pub id: String,
    pub name: String,
    /// When the trigger started, ISO-8601.
    pub timestamp: String,
    /// The same instant in Unix milliseconds, for charts.
    pub timestamp_ms: i64,
    pub batch_id: u64,
    pub num_input_rows: u64,
    pub num_output_rows: u64,
    /// Input rows over the time since the previous trigger started.
    pub input_rows_per_second: f64,
    /// Input rows over this trigger's own duration.
    pub processed_rows_per_second: f64,
    pub duration_ms: Durations,
    /// The longest time one of the batch's tasks waited for a slot and
    /// travelled to and from its worker.
    pub scheduling_delay_ms: u64,
    pub num_tasks: u32,
    /// The event-time watermark (`watermark`, ISO-8601), when the job has one.
    pub event_time: BTreeMap<String, String>,
    pub state_operators: Vec<StateOperatorProgress>,
    /// Rows dropped for arriving behind the watermark.
    pub late_rows_dropped: u64,
    /// Records Kafka deleted before the job read them, skipped because the
    /// table sets 'fail_on_data_loss' 'false'.
    #[serde(default)]
    pub records_lost_to_retention: u64,
    /// Records whose value did not decode: dropped, or kept with `_corrupt`,
    /// per the table's `on_error`.
    #[serde(default)]
    pub malformed_rows: u64,
    pub sources: Vec<SourceProgress>,
    pub sink: SinkProgress,
}

impl BatchProgress {
    pub fn state_rows(&self) -> u64 {
        self.state_operators.iter().map(|s| s.num_rows_total).sum()
    }

    pub fn offsets_behind_latest(&self) -> i64 {
        self.sources.iter().map(|s| s.offsets_behind_latest).sum()
    }
}

pub fn progress_dir(job: &str) -> String {
    format!("{SPATE_DIR}/jobs/{job}/progress")
}

pub async fn save(ws: &Workspace, progress: &BatchProgress) -> Result<()> {
    let path = format!("{}/{}.json", progress_dir(&progress.id), progress.batch_id);
    Ok(ws.put_json(&path, progress).await?)
}

/// Removes a job's records of batches before `first_kept`.
pub async fn prune(ws: &Workspace, job: &str, first_kept: u64) -> Result<()> {
    ws.delete_names(&progress_dir(job), |name| {
        let batch = name
            .strip_suffix(".json")
            .and_then(|b| b.parse::<u64>().ok());
        batch.is_some_and(|b| b < first_kept)
    })
    .await?;
    Ok(())
}

/// The latest records of a job, oldest first.
pub async fn load_recent(ws: &Workspace, job: &str) -> Result<Vec<BatchProgress>> {
    let dir = progress_dir(job);
    let mut batches: Vec<u64> = ws
        .list_names(&dir)
        .await?
        .iter()
        .filter_map(|n| n.strip_suffix(".json")?.parse().ok())
        .collect();
    batches.sort_unstable();
    let skip = batches.len().saturating_sub(KEPT_PER_JOB);
    let mut records = Vec::with_capacity(batches.len() - skip);
    for batch in &batches[skip..] {
        if let Some(record) = ws.get_json(&format!("{dir}/{batch}.json")).await? {
            records.push(record);
        }
    }
    Ok(records)
}
