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
//! memory (`StateCache`), up to `worker.state_memory_mb`: past it, the
//! partitions used least recently are dropped. A partition not in memory
//! (dropped, or moved from another worker) is read back from the workspace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};
use crate::workspace::Workspace;

/// One partition's state version in memory.
#[derive(Debug)]
struct Cached {
    version: u64,
    batches: Arc<Vec<RecordBatch>>,
    bytes: usize,
    /// When it was last put or got, on the cache's own clock.
    used: u64,
}

#[derive(Debug, Default)]
struct Versions {
    by_dir: HashMap<String, Cached>,
    bytes: usize,
    clock: u64,
    evicted: u64,
}

/// The latest state version per partition folder that this process holds,
/// within a memory limit; the least recently used partitions go first.
#[derive(Debug)]
pub struct StateCache {
    versions: Mutex<Versions>,
    limit_bytes: usize,
}

impl Default for StateCache {
    /// Limited by `worker.state_memory_mb`.
    fn default() -> Self {
        StateCache::with_limit((spate_config::settings().worker.state_memory_mb as usize) << 20)
    }
}

/// What a state cache holds, for tests and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    pub partitions: usize,
    pub bytes: usize,
    /// Partitions dropped to stay within the limit, since the start.
    pub evicted: u64,
}

impl StateCache {
    pub fn with_limit(limit_bytes: usize) -> Self {
        StateCache {
            versions: Mutex::default(),
            limit_bytes,
        }
    }

    pub fn usage(&self) -> CacheUse {
        let versions = self.versions.lock().expect("state cache lock");
        CacheUse {
            partitions: versions.by_dir.len(),
            bytes: versions.bytes,
            evicted: versions.evicted,
        }
    }

    fn get(&self, dir: &str, version: u64) -> Option<Arc<Vec<RecordBatch>>> {
        let mut versions = self.versions.lock().expect("state cache lock");
        versions.clock += 1;
        let now = versions.clock;
        let cached = versions
            .by_dir
            .get_mut(dir)
            .filter(|c| c.version == version)?;
        cached.used = now;
        Some(Arc::clone(&cached.batches))
    }

    fn put(&self, dir: &str, version: u64, batches: Arc<Vec<RecordBatch>>) {
        let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        let mut versions = self.versions.lock().expect("state cache lock");
        versions.clock += 1;
        let used = versions.clock;
        if let Some(old) = versions.by_dir.remove(dir) {
            versions.bytes -= old.bytes;
        }
        // A partition larger than the whole cache is read from the workspace.
        if bytes > self.limit_bytes {
            versions.evicted += 1;
            return;
        }
        versions.bytes += bytes;
        versions.by_dir.insert(
            dir.to_string(),
            Cached {
                version,
                batches,
                bytes,
                used,
            },
        );
        while versions.bytes > self.limit_bytes {
            let Some(oldest) = versions
                .by_dir
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(d, _)| d.clone())
            else {
                break;
            };
            if let Some(gone) = versions.by_dir.remove(&oldest) {
                versions.bytes -= gone.bytes;
                versions.evicted += 1;
            }
        }
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

/// The version a file of a partition's folder holds.
fn version_of(name: &str) -> Option<u64> {
    name.strip_suffix(".arrow")?.parse().ok()
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
        Ok(names.iter().filter_map(|n| version_of(n)).collect())
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
        self.workspace
            .delete_names(&self.dir, |name| {
                version_of(name).is_some_and(|old| old + 1 < batch)
            })
            .await?;
        Ok(size)
    }
}

#[cfg(test)]
mod cache_tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn rows(n: i64) -> Arc<Vec<RecordBatch>> {
        let ids: Int64Array = (0..n).collect();
        Arc::new(vec![
            RecordBatch::try_from_iter([("id", Arc::new(ids) as _)]).unwrap(),
        ])
    }

    #[test]
    fn the_partitions_used_least_recently_leave_first() {
        let one = rows(1000)[0].get_array_memory_size();
        let cache = StateCache::with_limit(one * 2 + one / 2);
        cache.put("a", 1, rows(1000));
        cache.put("b", 1, rows(1000));
        assert!(cache.get("a", 1).is_some());
        cache.put("c", 1, rows(1000));
        assert!(cache.get("b", 1).is_none(), "b was used least recently");
        assert!(cache.get("a", 1).is_some() && cache.get("c", 1).is_some());
        assert_eq!(
            cache.usage(),
            CacheUse {
                partitions: 2,
                bytes: 2 * one,
                evicted: 1
            }
        );
        // A new version replaces the old one's bytes; an old version is no hit.
        cache.put("a", 2, rows(1000));
        assert!(cache.get("a", 1).is_none());
        assert_eq!(cache.usage().bytes, 2 * one);

        let small = StateCache::with_limit(one / 2);
        small.put("a", 1, rows(1000));
        assert_eq!(small.usage().partitions, 0, "too big to keep");
    }
}
