//! The state store: one versioned Arrow IPC file per stateful operator,
//! shuffle partition and batch, under the job's checkpoint:
//! `_spate/checkpoints/<job>/state/<operator>/<partition>/<batch>.arrow`.
//!
//! Every batch writes a version for every partition (a no-op batch rewrites
//! an unchanged one), so batch N always starts from version N-1. A re-run of
//! batch N reads the same N-1 and writes the same N, byte for byte. Versions
//! older than N-1 are pruned once N is written: nothing can need them, since
//! batch N runs only after N-1 committed.
//!
//! A worker keeps the latest version it wrote or read per partition in
//! memory (`StateCache`); a partition that moved to another worker is read
//! back from the workspace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};
use crate::workspace::Workspace;

/// One state version: its batch and rows.
type Version = (u64, Arc<Vec<RecordBatch>>);

/// The latest state version per partition folder that this process holds.
#[derive(Debug, Default)]
pub struct StateCache {
    versions: Mutex<HashMap<String, Version>>,
}

impl StateCache {
    fn get(&self, dir: &str, version: u64) -> Option<Arc<Vec<RecordBatch>>> {
        let versions = self.versions.lock().expect("state cache lock");
        versions
            .get(dir)
            .filter(|(v, _)| *v == version)
            .map(|(_, batches)| Arc::clone(batches))
    }

    fn put(&self, dir: &str, version: u64, batches: Arc<Vec<RecordBatch>>) {
        let mut versions = self.versions.lock().expect("state cache lock");
        versions.insert(dir.to_string(), (version, batches));
    }
}

/// One operator's state for one shuffle partition.
#[derive(Debug, Clone)]
pub struct PartitionState {
    pub workspace: Workspace,
    /// `_spate/checkpoints/<job>/state/<operator>/<partition>`.
    pub dir: String,
    pub cache: Arc<StateCache>,
}

/// The state folder of a job's operator and partition.
pub fn partition_dir(job: &str, operator: u32, partition: u32) -> String {
    format!(
        "{}/state/{operator}/{partition}",
        crate::checkpoint::job_dir(job)
    )
}

fn version_path(dir: &str, version: u64) -> String {
    format!("{dir}/{version:020}.arrow")
}

impl PartitionState {
    /// The state batch `batch` starts from: version `batch - 1`, or nothing
    /// for the first batch.
    pub async fn load_before(&self, batch: u64) -> Result<Arc<Vec<RecordBatch>>> {
        let Some(version) = batch.checked_sub(1) else {
            return Ok(Arc::new(Vec::new()));
        };
        if let Some(batches) = self.cache.get(&self.dir, version) {
            return Ok(batches);
        }
        let path = version_path(&self.dir, version);
        let batches = match self.workspace.get(&path).await? {
            Some(bytes) => FileReader::try_new(std::io::Cursor::new(bytes), None)?
                .collect::<std::result::Result<Vec<_>, _>>()?,
            // A job's first stateful batch may not be its first batch.
            None if self.any_version_before(version).await? => {
                return Err(EngineError::plan(format!(
                    "state version {path} is missing: the checkpoint is damaged"
                )));
            }
            None => Vec::new(),
        };
        let batches = Arc::new(batches);
        self.cache.put(&self.dir, version, Arc::clone(&batches));
        Ok(batches)
    }

    async fn any_version_before(&self, version: u64) -> Result<bool> {
        Ok(self.versions().await?.into_iter().any(|v| v < version))
    }

    async fn versions(&self) -> Result<Vec<u64>> {
        let names = self.workspace.list_names(&self.dir).await?;
        Ok(names
            .iter()
            .filter_map(|n| n.strip_suffix(".arrow")?.parse().ok())
            .collect())
    }

    /// Writes version `batch` and prunes versions before `batch - 1`.
    /// Returns the file's size in bytes.
    pub async fn save(&self, batch: u64, schema: SchemaRef, rows: Vec<RecordBatch>) -> Result<u64> {
        let mut writer = FileWriter::try_new(Vec::new(), &schema)?;
        for b in &rows {
            writer.write(b)?;
        }
        writer.finish()?;
        let bytes = writer.into_inner()?;
        let size = bytes.len() as u64;
        self.workspace
            .put(&version_path(&self.dir, batch), bytes)
            .await?;
        self.cache.put(&self.dir, batch, Arc::new(rows));
        for old in self.versions().await? {
            if old + 1 < batch {
                self.workspace.delete(&version_path(&self.dir, old)).await?;
            }
        }
        Ok(size)
    }
}
