//! A job's checkpoint: the write-ahead log of batch offsets and the log of
//! committed batches, under `_spate/checkpoints/<job>/`. A batch in
//! `offsets/` but not in `commits/` is re-run with the same ranges.

use serde::{Deserialize, Serialize};

use crate::OffsetRange;
use crate::error::Result;
use crate::workspace::{SPATE_DIR, Workspace};

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
    /// The largest event time seen up to this batch (Unix ms), from which
    /// the next batch's watermark follows.
    #[serde(default)]
    pub max_event_time_ms: Option<i64>,
}

/// A job's checkpoint folder, relative to the workspace root.
pub fn job_dir(job: &str) -> String {
    format!("{SPATE_DIR}/checkpoints/{job}")
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

    pub async fn write_offsets(&self, entry: &OffsetsEntry) -> Result<()> {
        self.ws
            .put_json(&format!("{}/offsets/{}", self.dir, entry.batch), entry)
            .await
    }

    pub async fn latest_commit(&self) -> Result<Option<CommitEntry>> {
        match self.latest_in("commits").await? {
            Some(batch) => {
                self.ws
                    .get_json(&format!("{}/commits/{batch}", self.dir))
                    .await
            }
            None => Ok(None),
        }
    }

    /// (batches committed, total input rows, total output rows) so far.
    pub async fn totals(&self) -> Result<(u64, u64, u64)> {
        Ok(self.latest_commit().await?.map_or((0, 0, 0), |c| {
            (c.batch + 1, c.total_input_rows, c.total_output_rows)
        }))
    }

    pub async fn write_commit(&self, entry: &CommitEntry) -> Result<()> {
        self.ws
            .put_json(&format!("{}/commits/{}", self.dir, entry.batch), entry)
            .await
    }
}
