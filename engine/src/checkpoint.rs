//! A job's checkpoint: the write-ahead log of batch offsets and the log of
//! committed batches, under `_spate/checkpoints/<job>/`. A batch in
//! `offsets/` but not in `commits/` is re-run with the same ranges.
//!
//! Both logs are written with exclusive creates, and each entry names its
//! writer: a second controller of the same job, in this master or another
//! on the same workspace, fails at its first write and learns who holds
//! the job. That is the one-writer guarantee.

use serde::{Deserialize, Serialize};

use crate::OffsetRange;
use crate::error::{EngineError, Result};
use crate::workspace::{SPATE_DIR, Workspace};

/// Who writes a job's logs: one controller of one master process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The master process: host, pid and an id drawn at its start.
    pub master: String,
    /// The controller: drawn each time the master starts running the job.
    pub controller: String,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "controller {} of master {}",
            self.controller, self.master
        )
    }
}

/// Written before any task of the batch runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffsetsEntry {
    pub batch: u64,
    pub ranges: Vec<OffsetRange>,
    /// Unix milliseconds when the batch was planned.
    pub created_ms: i64,
    /// The event-time watermark (Unix ms) this batch drops late rows by
    /// and closes windows at; logged so that a re-run uses the same one.
    #[serde(default)]
    pub watermark_ms: Option<i64>,
    /// Records Kafka had deleted before this batch could read them, skipped
    /// because the table allows it (`fail_on_data_loss` false).
    #[serde(default)]
    pub skipped_records: u64,
    /// How many tasks the source stage shares the ranges among (see
    /// `master/src/stages.rs`); logged so that a re-run shares them the
    /// same way, as a sink that keeps its progress per task needs. None,
    /// in entries written before it was logged: a task per range.
    #[serde(default)]
    pub source_tasks: Option<u32>,
    #[serde(default)]
    pub writer: Option<Writer>,
}

/// Written after the sink committed the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitEntry {
    pub batch: u64,
    pub committed_ms: i64,
    pub input_rows: u64,
    pub output_rows: u64,
    /// Totals over every batch up to this one, so a restarted master needs
    /// only the latest entry.
    pub total_input_rows: u64,
    pub total_output_rows: u64,
    /// The largest event time seen up to this batch (Unix ms).
    #[serde(default)]
    pub max_event_time_ms: Option<i64>,
    /// Per topic, the largest event time read up to this batch (Unix ms),
    /// from which the next batch's watermark follows.
    #[serde(default)]
    pub event_times: std::collections::BTreeMap<String, i64>,
    #[serde(default)]
    pub writer: Option<Writer>,
}

/// What a checkpoint's offsets and state are bound to, written when the job
/// first starts: a resubmitted job must match it to resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The topics the job reads, in its sources' order.
    #[serde(alias = "topic", deserialize_with = "crate::job::one_or_many")]
    pub topics: Vec<String>,
    /// Partitions of the shuffle and the state; none for a stateless job.
    pub shuffle_partitions: Option<usize>,
    /// The stateful operator's state columns as `name: type`.
    pub state_columns: Vec<String>,
    /// The columns the sink was first written with; empty in checkpoints
    /// older than this record.
    #[serde(default)]
    pub sink_columns: Vec<String>,
    /// Drawn when the checkpoint is made; names what sinks keep of the
    /// job's progress outside the workspace (Kafka's transactional ids).
    #[serde(default)]
    pub run: String,
}

impl CheckpointMetadata {
    /// Why a job planned as `self` cannot resume from a checkpoint of `old`.
    pub fn incompatible_with(&self, old: &CheckpointMetadata, job: &str) -> Option<String> {
        let start_fresh = format!(
            "submit it with `driver submit --fresh` to start it afresh, forgetting its checkpoint and its sink's output (or give it another spate.job.name than '{job}')"
        );
        if self.topics != old.topics {
            let topics = |t: &[String]| {
                let quoted: Vec<String> = t.iter().map(|t| format!("'{t}'")).collect();
                quoted.join(" and ")
            };
            return Some(format!(
                "job '{job}' has a checkpoint of topic {}, and the query now reads topic {}; {start_fresh}",
                topics(&old.topics),
                topics(&self.topics)
            ));
        }
        if self.state_columns != old.state_columns {
            let describe = |c: &[String]| {
                if c.is_empty() {
                    "no state".to_string()
                } else {
                    c.join(", ")
                }
            };
            return Some(format!(
                "job '{job}' has a checkpoint whose state holds [{}]; the changed query would keep [{}], so its state cannot be reused; {start_fresh}",
                describe(&old.state_columns),
                describe(&self.state_columns)
            ));
        }
        if !old.sink_columns.is_empty() && self.sink_columns != old.sink_columns {
            return Some(format!(
                "job '{job}' has written its sink with columns [{}], and the query now writes [{}]; keep the query's columns, or {start_fresh}",
                old.sink_columns.join(", "),
                self.sink_columns.join(", ")
            ));
        }
        if self.shuffle_partitions != old.shuffle_partitions {
            return Some(format!(
                "job '{job}' has state in {} shuffle partitions and the query now sets {}; remove SET spate.shuffle.partitions or set it to {}, or {start_fresh}",
                old.shuffle_partitions.unwrap_or(0),
                self.shuffle_partitions.unwrap_or(0),
                old.shuffle_partitions.unwrap_or(0)
            ));
        }
        None
    }
}

/// A job's checkpoint folder, relative to the workspace root.
pub fn job_dir(job: &str) -> String {
    format!("{SPATE_DIR}/checkpoints/{job}")
}

/// (batches committed, total input rows, total output rows) after `latest`.
pub fn totals_after(latest: Option<&CommitEntry>) -> (u64, u64, u64) {
    latest.map_or((0, 0, 0), |c| {
        (c.batch + 1, c.total_input_rows, c.total_output_rows)
    })
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    ws: Workspace,
    dir: String,
}

impl Checkpoint {
    pub fn new(ws: &Workspace, job: &str) -> Self {
        Checkpoint {
            ws: ws.clone(),
            dir: job_dir(job),
        }
    }

    /// Removes the whole checkpoint, so the job starts afresh.
    pub async fn delete(&self) -> Result<()> {
        self.ws.delete_dir(&self.dir).await
    }

    pub async fn metadata(&self) -> Result<Option<CheckpointMetadata>> {
        self.ws.get_json(&format!("{}/metadata", self.dir)).await
    }

    /// Writes the metadata of a new checkpoint; one that exists stays.
    pub async fn write_metadata(&self, metadata: &CheckpointMetadata) -> Result<()> {
        self.ws
            .create_json(&format!("{}/metadata", self.dir), metadata)
            .await?;
        Ok(())
    }

    /// Creates a log entry, or says which writer created it first.
    async fn create_entry<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        log: &str,
        batch: u64,
        entry: &T,
        writer: Option<&Writer>,
        writer_of: impl Fn(&T) -> Option<&Writer>,
    ) -> Result<()> {
        // Older entries are pruned, so an exclusive create alone would let a
        // controller far behind write a batch again: a later entry refuses it.
        if let Some(later) = self.latest_in(log).await?.filter(|l| *l > batch) {
            return Err(EngineError::AlreadyExists(format!(
                "{log}/{later} of {} is past batch {batch}: another controller runs this job, so this one stops",
                self.dir
            )));
        }
        let path = format!("{}/{log}/{batch}", self.dir);
        if self.ws.create_json(&path, entry).await? {
            return Ok(());
        }
        let existing: Option<T> = self.ws.get_json(&path).await?;
        let other = existing.as_ref().and_then(&writer_of);
        if other.is_some() && other == writer {
            return Ok(());
        }
        let who = other.map_or_else(
            || "an earlier version of Spate".to_string(),
            Writer::to_string,
        );
        Err(EngineError::AlreadyExists(format!(
            "{log}/{batch} of {} was written by {who}: another controller runs this job, so this one stops",
            self.dir
        )))
    }

    async fn latest_in(&self, log: &str) -> Result<Option<u64>> {
        let names = self.ws.list_names(&format!("{}/{log}", self.dir)).await?;
        Ok(names.iter().filter_map(|n| n.parse::<u64>().ok()).max())
    }

    pub async fn latest_offsets(&self) -> Result<Option<OffsetsEntry>> {
        match self.latest_in("offsets").await? {
            Some(batch) => self.offsets(batch).await,
            None => Ok(None),
        }
    }

    pub async fn offsets(&self, batch: u64) -> Result<Option<OffsetsEntry>> {
        self.ws
            .get_json(&format!("{}/offsets/{batch}", self.dir))
            .await
    }

    /// Logs a batch's offsets before any of its tasks run; refused where
    /// another writer logged this batch.
    pub async fn write_offsets(&self, entry: &OffsetsEntry) -> Result<()> {
        self.create_entry("offsets", entry.batch, entry, entry.writer.as_ref(), |e| {
            e.writer.as_ref()
        })
        .await
    }

    pub async fn latest_commit(&self) -> Result<Option<CommitEntry>> {
        match self.latest_in("commits").await? {
            Some(batch) => self.commit(batch).await,
            None => Ok(None),
        }
    }

    pub async fn commit(&self, batch: u64) -> Result<Option<CommitEntry>> {
        self.ws
            .get_json(&format!("{}/commits/{batch}", self.dir))
            .await
    }

    /// Refuses to re-run a logged batch that another writer committed in
    /// the meantime: this controller is not the job's one writer any more.
    pub async fn check_not_committed(&self, batch: u64) -> Result<()> {
        match self.commit(batch).await? {
            None => Ok(()),
            Some(commit) => {
                let who = commit.writer.map_or_else(
                    || "an earlier version of Spate".to_string(),
                    |w| w.to_string(),
                );
                Err(EngineError::AlreadyExists(format!(
                    "commits/{batch} of {} was written by {who}: another controller runs this job, so this one stops",
                    self.dir
                )))
            }
        }
    }

    /// (batches committed, total input rows, total output rows) so far.
    pub async fn totals(&self) -> Result<(u64, u64, u64)> {
        Ok(totals_after(self.latest_commit().await?.as_ref()))
    }

    /// Removes the offsets and commit entries of batches before the last
    /// `retained` up to `latest`; returns how many went.
    pub async fn prune(&self, latest: u64, retained: u64) -> Result<usize> {
        let old = |name: &str| name.parse::<u64>().is_ok_and(|b| b + retained <= latest);
        let mut removed = 0;
        for log in ["offsets", "commits"] {
            removed += self
                .ws
                .delete_names(&format!("{}/{log}", self.dir), old)
                .await?;
        }
        Ok(removed)
    }

    /// Records a committed batch; refused where another writer did.
    pub async fn write_commit(&self, entry: &CommitEntry) -> Result<()> {
        self.create_entry("commits", entry.batch, entry, entry.writer.as_ref(), |e| {
            e.writer.as_ref()
        })
        .await
    }
}
