//! The state store: versioned Arrow IPC files per stateful operator and
//! shuffle partition, under the job's checkpoint:
//! `_spate/checkpoints/<job>/state/<operator>/<partition>/`.
//!
//! Every batch writes a version for every partition, so batch N always
//! starts from version N-1. A version is a snapshot (`<N>.arrow`, the whole
//! state) every `job.state_snapshot_interval` batches, and a delta
//! (`<N>.delta.arrow`) otherwise: the rows the batch changed, and the rows
//! it removed, flagged in a last column. Version N-1 is read back as the
//! latest snapshot at or before it plus the deltas after that, applied by
//! key (a delta's rows replace those of the same group). So a batch writes
//! what it changed, not the whole state, and a re-run of batch N reads the
//! same N-1 and writes the same N. Files are pruned once a later snapshot
//! makes them useless for version N-1, the oldest a re-run can ask for.
//!
//! A worker keeps the latest version it wrote or read per partition in
//! memory (`StateCache`), indexed by group key (`KeyedState`), up to
//! `worker.state_memory_mb`: past it, the partitions used least recently
//! are dropped. A partition larger than the whole cache is spilled: its
//! rows go to a local file that batches look up by key, and the cache
//! holds what stays on the heap (see `KeyedState::spill`). A task takes its
//! partition's state out of the cache and puts the next version back, so a
//! batch changes the state in place. A
//! partition not in memory (dropped, moved from another worker, or taken
//! by another attempt of the same task) is read back from the workspace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};

use crate::error::{EngineError, Result};
use crate::keyed::{KeyedState, StateLayout};
use crate::workspace::Workspace;

/// One partition's state version in memory.
#[derive(Debug)]
struct Cached {
    version: u64,
    state: KeyedState,
    bytes: usize,
    spilled_bytes: usize,
    /// When it was last put or got, on the cache's own clock.
    used: u64,
}

#[derive(Debug, Default)]
struct Versions {
    by_dir: HashMap<String, Cached>,
    bytes: usize,
    spilled_bytes: usize,
    clock: u64,
    evicted: u64,
    spills: u64,
}

impl Versions {
    /// A partition's version, out of the cache and its byte counts.
    fn remove(&mut self, dir: &str) -> Option<Cached> {
        let cached = self.by_dir.remove(dir)?;
        self.bytes -= cached.bytes;
        self.spilled_bytes -= cached.spilled_bytes;
        Some(cached)
    }
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
    /// On the heap.
    pub bytes: usize,
    /// In spilled partitions' local files.
    pub spilled_bytes: usize,
    /// Partitions dropped to stay within the limit, since the start.
    pub evicted: u64,
    /// Times a partition was spilled, since the start.
    pub spills: u64,
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
            spilled_bytes: versions.spilled_bytes,
            evicted: versions.evicted,
            spills: versions.spills,
        }
    }

    /// Version `version` of a partition, out of the cache: the task that
    /// takes it puts the next version back.
    fn take(&self, dir: &str, version: u64) -> Option<KeyedState> {
        let mut versions = self.versions.lock().expect("state cache lock");
        if versions.by_dir.get(dir)?.version != version {
            return None;
        }
        versions.remove(dir).map(|cached| cached.state)
    }

    fn put(&self, dir: &str, version: u64, state: KeyedState) {
        // A partition larger than the whole cache keeps its rows in a local
        // file, looked up by key; should that fail, it is read back from
        // the workspace, which holds every version.
        let spilling = state.memory_size() > self.limit_bytes;
        // Spilled, a partition keeps under a byte per row on the heap.
        let state = if spilling && state.len() > self.limit_bytes {
            None
        } else if spilling {
            match state.spill() {
                Ok(spilled) => Some(spilled),
                Err(e) => {
                    tracing::warn!("the state of {dir} is read back next batch: {e}");
                    None
                }
            }
        } else {
            Some(state)
        };
        let bytes = state.as_ref().map_or(0, KeyedState::memory_size);
        let spilled_bytes = state.as_ref().map_or(0, KeyedState::spilled_bytes);
        let mut versions = self.versions.lock().expect("state cache lock");
        versions.clock += 1;
        versions.spills += u64::from(spilling && state.is_some());
        let used = versions.clock;
        versions.remove(dir);
        // Even spilled, it is larger than the whole cache: read from the workspace.
        let Some(state) = state.filter(|_| bytes <= self.limit_bytes) else {
            versions.evicted += 1;
            return;
        };
        versions.bytes += bytes;
        versions.spilled_bytes += spilled_bytes;
        versions.by_dir.insert(
            dir.to_string(),
            Cached {
                version,
                state,
                bytes,
                spilled_bytes,
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
            if versions.remove(&oldest).is_some() {
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

/// The column of a delta that says a row was removed rather than changed.
const REMOVED: &str = "_spate_removed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum VersionKind {
    Snapshot,
    Delta,
}

fn version_path(dir: &str, version: u64, kind: VersionKind) -> String {
    match kind {
        VersionKind::Snapshot => format!("{dir}/{version:020}.arrow"),
        VersionKind::Delta => format!("{dir}/{version:020}.delta.arrow"),
    }
}

/// The version a file of a partition's folder holds, and what it is.
fn version_of(name: &str) -> Option<(u64, VersionKind)> {
    let stem = name.strip_suffix(".arrow")?;
    match stem.strip_suffix(".delta") {
        Some(delta) => Some((delta.parse().ok()?, VersionKind::Delta)),
        None => Some((stem.parse().ok()?, VersionKind::Snapshot)),
    }
}

/// What a batch did to a partition's state.
#[derive(Debug)]
/// The state counters every stateful operator reports per partition, which
/// `task::measure` sums into the task's outcome.
pub struct StateMetrics {
    pub rows: Count,
    pub bytes: Count,
    pub rows_updated: Count,
    pub rows_removed: Count,
    pub bytes_written: Count,
}

impl StateMetrics {
    pub fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let count = |name: &'static str| MetricBuilder::new(metrics).counter(name, partition);
        StateMetrics {
            rows: count("state_rows"),
            bytes: count("state_bytes"),
            rows_updated: count("state_rows_updated"),
            rows_removed: count("state_rows_removed"),
            bytes_written: count("state_bytes_written"),
        }
    }

    /// Saves each store's change as version `batch`, counting it.
    pub async fn save(
        &self,
        batch: u64,
        changes: impl IntoIterator<Item = (&PartitionState, StateChange)>,
    ) -> Result<()> {
        for (store, change) in changes {
            self.rows.add(change.state.len());
            self.bytes.add(change.state.memory_size());
            self.rows_updated
                .add(change.changed.iter().map(RecordBatch::num_rows).sum());
            self.rows_removed
                .add(change.removed.iter().map(RecordBatch::num_rows).sum());
            self.bytes_written
                .add(store.save(batch, change).await? as usize);
        }
        Ok(())
    }
}

pub struct StateChange {
    /// The state after the batch: what the next batch starts from.
    pub state: KeyedState,
    /// Rows of groups the batch added or changed (among `state`).
    pub changed: Vec<RecordBatch>,
    /// Rows of groups the batch removed (not in `state`).
    pub removed: Vec<RecordBatch>,
}

/// Applies a delta (its batches): its removed rows' groups leave, then its
/// changed rows replace those of their groups.
fn apply_delta(state: &mut KeyedState, delta: &[RecordBatch]) -> Result<()> {
    let split = |part: &RecordBatch| -> Result<(RecordBatch, BooleanArray)> {
        let flag = part.num_columns() - 1;
        let removed = part.column(flag).as_boolean().clone();
        Ok((part.project(&(0..flag).collect::<Vec<_>>())?, removed))
    };
    for part in delta {
        let (rows, removed) = split(part)?;
        state.remove(&filter_record_batch(&rows, &removed)?)?;
    }
    for part in delta {
        let (rows, removed) = split(part)?;
        state.upsert(filter_record_batch(&rows, &not(&removed)?)?)?;
    }
    Ok(())
}

impl PartitionState {
    /// The state batch `batch` starts from: version `batch - 1`, or nothing
    /// for the first batch; taken out of the cache, or read back.
    pub async fn load_before(&self, batch: u64, layout: &StateLayout) -> Result<KeyedState> {
        let Some(version) = batch.checked_sub(1) else {
            return KeyedState::new(layout.clone());
        };
        if let Some(state) = self.cache.take(&self.dir, version) {
            return Ok(state);
        }
        self.read_version(version, layout).await
    }

    /// Version `version` from the latest snapshot at or before it and the
    /// deltas after that, each applied by key to the one state.
    async fn read_version(&self, version: u64, layout: &StateLayout) -> Result<KeyedState> {
        let files = self.versions().await?;
        let at_or_before: Vec<(u64, VersionKind)> =
            files.into_iter().filter(|(v, _)| *v <= version).collect();
        let mut state = KeyedState::new(layout.clone())?;
        if at_or_before.is_empty() {
            // A job's first stateful batch may not be its first batch.
            return Ok(state);
        }
        let snapshot = at_or_before
            .iter()
            .filter(|(_, kind)| *kind == VersionKind::Snapshot)
            .map(|(v, _)| *v)
            .max();
        // With no snapshot yet, the first delta was written over nothing:
        // files go only once a later snapshot stands in for them.
        let first_delta = match snapshot {
            Some(s) => s + 1,
            None => at_or_before.iter().map(|(v, _)| *v).min().unwrap_or(0),
        };
        if let Some(s) = snapshot
            && let Some(batches) = self.read_file(s, VersionKind::Snapshot).await?
        {
            for rows in batches {
                state.upsert(rows)?;
            }
        }
        for v in first_delta..=version {
            let Some(delta) = self.read_file(v, VersionKind::Delta).await? else {
                return Err(EngineError::plan(format!(
                    "state version {} is missing: the checkpoint is damaged",
                    version_path(&self.dir, v, VersionKind::Delta)
                )));
            };
            apply_delta(&mut state, &delta)?;
        }
        Ok(state)
    }

    /// One version file's batches; None when it is not there.
    async fn read_file(&self, version: u64, kind: VersionKind) -> Result<Option<Vec<RecordBatch>>> {
        let path = version_path(&self.dir, version, kind);
        let Some(bytes) = self.workspace.get(&path).await? else {
            return Ok(None);
        };
        let reader = FileReader::try_new(std::io::Cursor::new(bytes), None)?;
        Ok(Some(reader.collect::<std::result::Result<Vec<_>, _>>()?))
    }

    async fn versions(&self) -> Result<Vec<(u64, VersionKind)>> {
        let names = self.workspace.list_names(&self.dir).await?;
        Ok(names.iter().filter_map(|n| version_of(n)).collect())
    }

    /// Writes version `batch`, a snapshot or a delta, and prunes what no
    /// re-run can need. Returns the bytes written.
    pub async fn save(&self, batch: u64, change: StateChange) -> Result<u64> {
        let interval = spate_config::settings().job.state_snapshot_interval.max(1);
        let schema = Arc::clone(change.state.schema());
        let (kind, bytes) = if batch.is_multiple_of(interval) {
            (
                VersionKind::Snapshot,
                crate::ipc::file(&schema, &change.state.rows()?)?,
            )
        } else {
            (VersionKind::Delta, delta_ipc(&schema, &change)?)
        };
        let size = bytes.len() as u64;
        self.workspace
            .put(&version_path(&self.dir, batch, kind), bytes)
            .await?;
        self.cache.put(&self.dir, batch, change.state);
        self.prune(batch, kind).await?;
        Ok(size)
    }

    /// Removes the files older than the latest snapshot that version
    /// `batch - 1` can be read from, and a version `batch` of the other
    /// kind (left by an attempt under another snapshot interval).
    async fn prune(&self, batch: u64, written: VersionKind) -> Result<()> {
        let files = self.versions().await?;
        let base = files
            .iter()
            .filter(|(v, kind)| *kind == VersionKind::Snapshot && *v < batch)
            .map(|(v, _)| *v)
            .max();
        let doomed = |(v, kind): (u64, VersionKind)| {
            (v == batch && kind != written)
                || base.is_some_and(|base| v < base || (v == base && kind == VersionKind::Delta))
        };
        if files.iter().any(|f| doomed(*f)) {
            self.workspace
                .delete_names(&self.dir, |name| version_of(name).is_some_and(doomed))
                .await?;
        }
        Ok(())
    }
}

/// The changed rows, then the removed ones, each flagged.
fn delta_ipc(schema: &SchemaRef, change: &StateChange) -> Result<Vec<u8>> {
    let mut fields = schema.fields().to_vec();
    fields.push(Arc::new(Field::new(REMOVED, DataType::Boolean, false)));
    let flagged_schema = Arc::new(Schema::new(fields));
    let flag = |batch: &RecordBatch, removed: bool| -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(BooleanArray::from(vec![
            removed;
            batch.num_rows()
        ])));
        Ok(RecordBatch::try_new(Arc::clone(&flagged_schema), columns)?)
    };
    let mut batches = Vec::new();
    for b in change.changed.iter().filter(|b| b.num_rows() > 0) {
        batches.push(flag(b, false)?);
    }
    for b in change.removed.iter().filter(|b| b.num_rows() > 0) {
        // Only the key of a removed row matters; its values are kept as
        // they are, which costs a little and keeps one schema.
        batches.push(flag(b, true)?);
    }
    crate::ipc::file(&flagged_schema, &batches)
}

#[cfg(test)]
mod cache_tests {
    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn rows(n: i64) -> KeyedState {
        let ids: Int64Array = (0..n).collect();
        let batch = RecordBatch::try_from_iter([("id", Arc::new(ids) as _)]).unwrap();
        let layout = StateLayout {
            schema: batch.schema(),
            keys: 1,
            window_end: None,
        };
        KeyedState::from_rows(layout, batch).unwrap()
    }

    #[test]
    fn the_partitions_used_least_recently_leave_first() {
        let one = rows(1000).memory_size();
        let cache = StateCache::with_limit(one * 2 + one / 2);
        cache.put("a", 1, rows(1000));
        cache.put("b", 1, rows(1000));
        // A task takes a's version 1 and puts its version 2 back.
        let a = cache.take("a", 1).expect("a is cached");
        assert!(cache.take("a", 1).is_none(), "taken");
        cache.put("a", 2, a);
        cache.put("c", 1, rows(1000));
        assert!(cache.take("b", 1).is_none(), "b was used least recently");
        assert!(cache.take("a", 1).is_none(), "an old version is no hit");
        assert_eq!(
            cache.usage(),
            CacheUse {
                partitions: 2,
                bytes: 2 * one,
                spilled_bytes: 0,
                evicted: 1,
                spills: 0,
            }
        );
        let c = cache.take("c", 1).expect("c is cached");
        assert_eq!(c.len(), 1000);
        assert_eq!(cache.usage().bytes, one, "what is taken is not held");

        // Larger than the whole cache: spilled, and kept.
        let small = StateCache::with_limit(one / 2);
        small.put("a", 1, rows(1000));
        assert_eq!(small.usage().partitions, 1);
        assert!(small.usage().bytes < one / 2);
        assert!(small.usage().spilled_bytes > 0);
        assert_eq!(small.usage().spills, 1);
        let a = small.take("a", 1).expect("a is cached");
        assert!(a.spilled_bytes() > 0, "spilled");
        assert_eq!(a.len(), 1000);
        let tiny = StateCache::with_limit(16);
        tiny.put("a", 1, rows(1000));
        assert_eq!(tiny.usage().partitions, 0, "too big to keep, even spilled");
    }
}

#[cfg(test)]
mod delta_tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::Int64Type;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("total", DataType::Int64, false),
        ]))
    }

    fn batch(rows: impl IntoIterator<Item = (i64, i64)>) -> RecordBatch {
        let (ids, totals): (Vec<i64>, Vec<i64>) = rows.into_iter().unzip();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(totals)),
            ],
        )
        .unwrap()
    }

    fn layout() -> StateLayout {
        StateLayout {
            schema: schema(),
            keys: 1,
            window_end: None,
        }
    }

    fn keyed(rows: RecordBatch) -> KeyedState {
        KeyedState::from_rows(layout(), rows).unwrap()
    }

    fn contents(state: &KeyedState) -> BTreeMap<i64, i64> {
        state
            .rows()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_primitive::<Int64Type>().clone();
                let totals = b.column(1).as_primitive::<Int64Type>().clone();
                (0..b.num_rows())
                    .map(|i| (ids.value(i), totals.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn partition(ws: &Workspace) -> PartitionState {
        PartitionState {
            workspace: ws.clone(),
            dir: "state/0/0".into(),
            cache: Arc::new(StateCache::with_limit(1 << 30)),
        }
    }

    #[tokio::test]
    async fn snapshots_and_deltas_read_back_as_the_state_each_batch_left() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let interval = spate_config::settings().job.state_snapshot_interval;
        let writer = partition(&ws);
        let mut state = BTreeMap::new();
        let mut sizes = Vec::new();
        for b in 0..(interval * 3 + 4) {
            let b_i = b as i64;
            // Each batch adds ten ids, changes two and removes one.
            let changed: Vec<(i64, i64)> = (0..10)
                .map(|i| (b_i * 10 + i, b_i))
                .chain([(b_i / 2, 100 + b_i), (b_i / 3 + 1, 200 + b_i)])
                .collect();
            let removed: Vec<(i64, i64)> = state.iter().take(1).map(|(k, v)| (*k, *v)).collect();
            for (id, _) in &removed {
                state.remove(id);
            }
            state.extend(changed.iter().copied());
            let change = StateChange {
                state: keyed(batch(state.clone())),
                changed: vec![batch(changed)],
                removed: vec![batch(removed)],
            };
            sizes.push(writer.save(b, change).await.unwrap());

            // A worker that never saw the partition reads the same state.
            let read = partition(&ws).load_before(b + 1, &layout()).await.unwrap();
            assert_eq!(contents(&read), state, "version {b}");
            let files = ws.list_names("state/0/0").await.unwrap();
            assert!(files.len() as u64 <= interval + 1, "{files:?}");
        }
        // A re-run of the last batch still finds the version before it.
        let last = interval * 3 + 3;
        let again = partition(&ws).load_before(last, &layout()).await.unwrap();
        assert!(!again.is_empty());
        // Deltas hold what changed; a snapshot everything.
        let snapshot = sizes[(interval * 3) as usize];
        let delta = sizes[(interval * 3 + 1) as usize];
        assert!(
            delta * 3 < snapshot,
            "delta {delta} B, snapshot {snapshot} B"
        );
    }

    #[tokio::test]
    async fn a_missing_delta_is_a_damaged_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let writer = partition(&ws);
        for b in 1..4 {
            let change = StateChange {
                state: keyed(batch([(b as i64, 1)])),
                changed: vec![batch([(b as i64, 1)])],
                removed: vec![],
            };
            writer.save(b, change).await.unwrap();
        }
        ws.delete(&version_path("state/0/0", 2, VersionKind::Delta))
            .await
            .unwrap();
        let err = partition(&ws).load_before(4, &layout()).await.unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
