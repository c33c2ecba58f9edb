//! A partition's state in memory, indexed by group key, so that a batch
//! costs what it touches rather than what the state holds.
//!
//! The rows live in segments (Arrow batches, one per batch that changed
//! the state), each with a mask of the rows still live. A hash index maps
//! a group key (its bytes in Arrow's row format) to the one live row of
//! that group. An update appends the group's new row as part of a new
//! segment and marks the old one dead; a removal marks it dead. Nothing is
//! copied until dead rows outnumber live ones, when the segments are
//! compacted into one (amortised: a batch that changes a hundredth of the
//! state compacts once in a hundred batches).
//!
//! Windows the watermark may close are found per segment: a segment whose
//! earliest live window end is after the watermark is not looked at.
//!
//! A state larger than the worker's state cache is spilled
//! ([`KeyedState::spill`]): its rows go to a local file looked up by key
//! (`Spilled`), and the index starts empty. A batch's groups are looked up
//! in the index first, then in the file; a group found in the file is taken
//! into memory (its row copied into a segment, the file's row marked dead),
//! so a key is live in one place at most and a batch costs what it touches.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, interleave_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use hashbrown::hash_table::Entry;
use hashbrown::{HashSet, HashTable};

use crate::error::{EngineError, Result};
use crate::spilled::Spilled;
use crate::windows::epoch_millis;

/// How a state row's window ends, for the watermark to close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEnd {
    /// A `{start, end}` struct column.
    StructEnd { column: usize },
    /// A window-start column; the end is `width_ms` later.
    StartPlus { column: usize, width_ms: i64 },
}

impl WindowEnd {
    /// Each row's window end in Unix ms; None for a null window.
    pub fn of(&self, rows: &RecordBatch) -> Result<Vec<Option<i64>>> {
        let (times, width_ms) = match *self {
            WindowEnd::StructEnd { column } => (rows.column(column).as_struct().column(1), 0),
            WindowEnd::StartPlus { column, width_ms } => (rows.column(column), width_ms),
        };
        Ok(epoch_millis(times)?
            .iter()
            .map(|t| t.map(|t| t + width_ms))
            .collect())
    }

    /// Which rows' windows end at or before the watermark.
    pub fn closed(&self, rows: &RecordBatch, watermark_ms: i64) -> Result<BooleanArray> {
        Ok(self
            .of(rows)?
            .into_iter()
            .map(|end| Some(end.is_some_and(|end| end <= watermark_ms)))
            .collect())
    }
}

/// What a partition's state rows are.
#[derive(Debug, Clone)]
pub struct StateLayout {
    /// Group columns, then the aggregates' state columns.
    pub schema: SchemaRef,
    /// How many of the first columns are the group key.
    pub keys: usize,
    pub window_end: Option<WindowEnd>,
}

/// Where a live row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    segment: u32,
    row: u32,
}

impl At {
    /// No row: the key's group was removed.
    const GONE: At = At {
        segment: u32::MAX,
        row: u32::MAX,
    };

    fn live(self) -> Option<At> {
        (self != At::GONE).then_some(self)
    }
}

#[derive(Debug)]
struct Segment {
    rows: RecordBatch,
    /// Each row's key number in `Keys`, so a row leaves the index
    /// without its key being encoded again.
    keys: Vec<u32>,
    live: Vec<bool>,
    live_rows: usize,
    /// The earliest window end among the live rows, once computed; a
    /// lower bound after rows die.
    earliest_end: Option<Option<i64>>,
}

/// Where each key ends in the arena: keys of fixed-width columns (most
/// group keys) all have one length, so they need no offsets.
#[derive(Debug)]
enum KeyEnds {
    Fixed(usize),
    Offsets(Vec<usize>),
}

/// The group keys the index knows, as Arrow row-format bytes in one arena.
#[derive(Debug)]
struct Keys {
    bytes: Vec<u8>,
    ends: KeyEnds,
    /// The live row of each key, `At::GONE` once its group was removed.
    at: Vec<At>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            bytes: Vec::new(),
            ends: KeyEnds::Offsets(Vec::new()),
            at: Vec::new(),
        }
    }
}

impl Keys {
    fn key(&self, k: u32) -> &[u8] {
        let k = k as usize;
        match &self.ends {
            KeyEnds::Fixed(width) => &self.bytes[k * width..(k + 1) * width],
            KeyEnds::Offsets(ends) => {
                let start = if k == 0 { 0 } else { ends[k - 1] };
                &self.bytes[start..ends[k]]
            }
        }
    }

    fn push(&mut self, key: &[u8], at: At) -> u32 {
        let count = self.at.len();
        if count == 0 {
            self.ends = KeyEnds::Fixed(key.len());
        } else if let KeyEnds::Fixed(width) = self.ends
            && width != key.len()
        {
            self.ends = KeyEnds::Offsets((1..=count).map(|k| k * width).collect());
        }
        self.bytes.extend_from_slice(key);
        if let KeyEnds::Offsets(ends) = &mut self.ends {
            ends.push(self.bytes.len());
        }
        self.at.push(at);
        count as u32
    }

    fn heap_size(&self) -> usize {
        let ends = match &self.ends {
            KeyEnds::Fixed(_) => 0,
            KeyEnds::Offsets(ends) => ends.capacity() * size_of::<usize>(),
        };
        self.bytes.capacity() + ends + self.at.capacity() * size_of::<At>()
    }
}

/// A batch's rows grouped by key, each group matched to the state's live
/// row of its key (see [`KeyedState::group`]).
#[derive(Debug)]
pub struct Grouped {
    /// Each row's group, numbered in order of first appearance.
    pub group_of_row: Vec<usize>,
    /// Each group's first row.
    pub first_row: Vec<usize>,
    /// Where the state holds a live row of a group: (segment, row).
    held: Vec<(usize, usize)>,
    /// The group of each of those rows.
    pub held_groups: Vec<usize>,
    /// Each group's key number in the index.
    key_numbers: Vec<u32>,
}

impl Grouped {
    pub fn groups(&self) -> usize {
        self.first_row.len()
    }
}

/// What [`KeyedState::expire_since`] removed.
#[derive(Debug)]
pub struct Expired {
    /// Every row the watermark closed.
    pub rows: RecordBatch,
    /// Those of groups the state held before the batch began.
    pub held_before: RecordBatch,
}

impl Expired {
    /// Nothing expired.
    pub fn none(schema: &SchemaRef) -> Self {
        Expired {
            rows: RecordBatch::new_empty(Arc::clone(schema)),
            held_before: RecordBatch::new_empty(Arc::clone(schema)),
        }
    }
}

/// One partition's state: its rows by group key.
#[derive(Debug)]
pub struct KeyedState {
    layout: StateLayout,
    converter: RowConverter,
    segments: Vec<Segment>,
    /// Indices into `keys`, by the hash of the key's bytes.
    index: HashTable<u32>,
    keys: Keys,
    hasher: foldhash::fast::FixedState,
    live_rows: usize,
    dead_rows: usize,
    /// Keys numbered from here on came with the current batch (see
    /// [`KeyedState::begin_batch`]); None: no batch was begun.
    first_key_of_batch: Option<u32>,
    /// Rows beyond memory, of groups the index does not know.
    spilled: Option<Spilled>,
    /// Keys the current batch took from `spilled`: numbered as the batch's
    /// own, but of groups held before it.
    faulted: HashSet<u32>,
}

impl KeyedState {
    /// No rows.
    pub fn new(layout: StateLayout) -> Result<Self> {
        let converter = RowConverter::new(
            layout.schema.fields()[..layout.keys]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(KeyedState {
            layout,
            converter,
            segments: Vec::new(),
            index: HashTable::new(),
            keys: Keys::default(),
            hasher: foldhash::fast::FixedState::default(),
            live_rows: 0,
            dead_rows: 0,
            first_key_of_batch: None,
            spilled: None,
            faulted: HashSet::new(),
        })
    }

    /// The same state with its rows in a local file, looked up by key
    /// (see `Spilled`): what stays on the heap is a directory of the file,
    /// a bit per row, and what later batches change. A spilled state spills
    /// again as a whole, its file and its changes into one new file.
    pub fn spill(mut self) -> Result<KeyedState> {
        let started = std::time::Instant::now();
        let file = self.spilled.take();
        let parts = self
            .segment_rows()?
            .into_iter()
            .map(|rows| {
                let keys = self.key_rows(&rows)?;
                Ok((rows, keys))
            })
            .collect::<Result<Vec<_>>>()?;
        let hasher = self.hasher;
        let hash = |key: &[u8]| hasher.hash_one(key);
        let spilled = match file {
            Some(file) => file.respill(&self.layout.schema, &parts, hash)?,
            None => Spilled::write(&self.layout.schema, &parts, hash)?,
        };
        drop(parts);
        tracing::debug!(
            rows = spilled.len(),
            file_mb = spilled.file_bytes() >> 20,
            took_ms = started.elapsed().as_millis() as u64,
            "spilled a partition's state"
        );
        let mut state = KeyedState::new(self.layout)?;
        state.spilled = Some(spilled);
        Ok(state)
    }

    /// What a spilled state's file takes on disk; 0 when it is all in memory.
    pub fn spilled_bytes(&self) -> usize {
        self.spilled.as_ref().map_or(0, Spilled::file_bytes)
    }

    /// The state holding `rows`, one per group.
    pub fn from_rows(layout: StateLayout, rows: RecordBatch) -> Result<Self> {
        let mut state = KeyedState::new(layout)?;
        state.upsert(rows)?;
        Ok(state)
    }

    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.layout.schema
    }

    /// Live rows: one per group.
    pub fn len(&self) -> usize {
        self.live_rows + self.spilled.as_ref().map_or(0, Spilled::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the rows and the index take on the heap (a spilled state's
    /// file is not counted: the operating system pages it).
    pub fn memory_size(&self) -> usize {
        self.spilled.as_ref().map_or(0, Spilled::heap_size)
            + self.faulted.allocation_size()
            + self
                .segments
                .iter()
                .map(|s| {
                    s.rows.get_array_memory_size()
                        + s.live.capacity()
                        + s.keys.capacity() * size_of::<u32>()
                })
                .sum::<usize>()
            + self.index.allocation_size()
            + self.keys.heap_size()
    }

    /// The live rows: those of a spilled state's file, then segment by
    /// segment.
    pub fn rows(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::with_capacity(self.segments.len() + 1);
        if let Some(rows) = self
            .spilled
            .as_ref()
            .map(Spilled::rows)
            .transpose()?
            .flatten()
        {
            batches.push(rows);
        }
        batches.extend(self.segment_rows()?);
        Ok(batches)
    }

    /// The live rows in memory, segment by segment.
    fn segment_rows(&self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::with_capacity(self.segments.len());
        for segment in &self.segments {
            if segment.live_rows == segment.rows.num_rows() {
                batches.push(segment.rows.clone());
            } else if segment.live_rows > 0 {
                let live = BooleanArray::from(segment.live.clone());
                batches.push(filter_record_batch(&segment.rows, &live)?);
            }
        }
        Ok(batches)
    }

    /// The live rows of the groups some row of `of` has, each once (`of`
    /// may hold several rows of a group), in no set order.
    pub fn rows_of_groups_in(&self, of: &RecordBatch) -> Result<RecordBatch> {
        let keys = self.key_rows(of)?;
        let mut found: Vec<(usize, usize)> = Vec::new();
        let mut spilled_rows: Vec<usize> = Vec::new();
        for i in 0..keys.num_rows() {
            let key = keys.row(i).data();
            let hash = self.hasher.hash_one(key);
            match self.index.find(hash, |k| self.keys.key(*k) == key) {
                Some(k) => found.extend(
                    self.keys.at[*k as usize]
                        .live()
                        .map(|at| (at.segment as usize, at.row as usize)),
                ),
                None => spilled_rows.extend(self.spilled.as_ref().and_then(|s| s.find(hash, key))),
            }
        }
        found.sort_unstable();
        found.dedup();
        let in_memory = self.rows_at(&found)?;
        let Some(spilled) = self.spilled.as_ref().filter(|_| !spilled_rows.is_empty()) else {
            return Ok(in_memory);
        };
        spilled_rows.sort_unstable();
        spilled_rows.dedup();
        let from_file = spilled.take(spilled_rows)?;
        Ok(concat_batches(
            &self.layout.schema,
            [&from_file, &in_memory],
        )?)
    }

    /// The rows at `(segment, row)` positions, in their order.
    fn rows_at(&self, at: &[(usize, usize)]) -> Result<RecordBatch> {
        if at.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.layout.schema)));
        }
        let segments: Vec<&RecordBatch> = self.segments.iter().map(|s| &s.rows).collect();
        Ok(interleave_record_batch(&segments, at)?)
    }

    /// Groups `rows` by key and matches each group to the state: the index
    /// learns every key, so [`KeyedState::replace`] needs no second lookup.
    /// Each key is encoded and hashed once, and the index (large, so out
    /// of the CPU's caches) is probed once per group, not per row.
    pub fn group(&mut self, rows: &RecordBatch) -> Result<Grouped> {
        let key_rows = self.key_rows(rows)?;
        let count = key_rows.num_rows();
        let mut grouped = Grouped {
            group_of_row: Vec::with_capacity(count),
            first_row: Vec::new(),
            held: Vec::new(),
            held_groups: Vec::new(),
            key_numbers: Vec::new(),
        };
        let mut hashes: Vec<u64> = Vec::new();
        let mut local: HashTable<u32> = HashTable::with_capacity(count);
        for row in 0..count {
            let key = key_rows.row(row).data();
            let hash = self.hasher.hash_one(key);
            let group = match local.entry(
                hash,
                |g| key_rows.row(grouped.first_row[*g as usize]).data() == key,
                |g| hashes[*g as usize],
            ) {
                Entry::Occupied(entry) => *entry.get(),
                Entry::Vacant(entry) => {
                    let group = grouped.first_row.len() as u32;
                    grouped.first_row.push(row);
                    hashes.push(hash);
                    entry.insert(group);
                    group
                }
            };
            grouped.group_of_row.push(group as usize);
        }
        grouped.key_numbers.reserve(grouped.first_row.len());
        if self.index.is_empty() {
            // A first batch or a state read back: its keys in one go, without regrowing.
            let bytes = grouped
                .first_row
                .iter()
                .map(|row| key_rows.row(*row).data().len());
            self.reserve(grouped.first_row.len(), bytes.sum());
        }
        // Groups found in a spilled state's file: (key number, file row, group).
        let mut faults: Vec<(u32, usize, usize)> = Vec::new();
        for (group, (&row, &hash)) in grouped.first_row.iter().zip(&hashes).enumerate() {
            let key = key_rows.row(row).data();
            let (keys, hasher) = (&mut self.keys, &self.hasher);
            let k = match self.index.entry(
                hash,
                |k| keys.key(*k) == key,
                |k| hasher.hash_one(keys.key(*k)),
            ) {
                Entry::Occupied(entry) => *entry.get(),
                Entry::Vacant(entry) => {
                    let k = *entry.insert(keys.push(key, At::GONE)).get();
                    if let Some(file_row) =
                        self.spilled.as_mut().and_then(|s| s.take_out(hash, key))
                    {
                        faults.push((k, file_row, group));
                    }
                    k
                }
            };
            if let Some(at) = keys.at[k as usize].live() {
                grouped.held.push((at.segment as usize, at.row as usize));
                grouped.held_groups.push(group);
            }
            grouped.key_numbers.push(k);
        }
        if !faults.is_empty() {
            self.fault_in(&faults, &mut grouped)?;
        }
        Ok(grouped)
    }

    /// Takes groups found in a spilled state's file into memory, as a
    /// segment of their own, and marks them held by `grouped`.
    fn fault_in(&mut self, faults: &[(u32, usize, usize)], grouped: &mut Grouped) -> Result<()> {
        let spilled = self
            .spilled
            .as_ref()
            .ok_or_else(|| EngineError::internal("groups faulted in from no spilled state"))?;
        let rows = spilled.take(faults.iter().map(|(_, file_row, _)| *file_row))?;
        let rows = RecordBatch::try_new(Arc::clone(&self.layout.schema), rows.columns().to_vec())?;
        let segment = self.segments.len() as u32;
        for (row, &(k, _, group)) in faults.iter().enumerate() {
            self.keys.at[k as usize] = At {
                segment,
                row: row as u32,
            };
            grouped.held.push((segment as usize, row));
            grouped.held_groups.push(group);
            self.faulted.insert(k);
        }
        self.live_rows += faults.len();
        self.segments.push(Segment {
            live: vec![true; faults.len()],
            live_rows: faults.len(),
            keys: faults.iter().map(|(k, _, _)| *k).collect(),
            rows,
            earliest_end: None,
        });
        Ok(())
    }

    /// The live rows of the groups `grouped` found in the state, in the
    /// order of its `held_groups`.
    pub fn held_rows(&self, grouped: &Grouped) -> Result<RecordBatch> {
        self.rows_at(&grouped.held)
    }

    /// Puts the groups of a [`KeyedState::group`] call in the state: row
    /// `g` of `rows` is group `g`'s, and replaces its live row.
    pub fn replace(&mut self, grouped: &Grouped, rows: RecordBatch) -> Result<()> {
        if rows.num_rows() != grouped.groups() {
            return Err(EngineError::internal(format!(
                "{} rows replace {} groups",
                rows.num_rows(),
                grouped.groups()
            )));
        }
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let rows = RecordBatch::try_new(Arc::clone(&self.layout.schema), rows.columns().to_vec())?;
        let segment = self.segments.len() as u32;
        for (row, &k) in grouped.key_numbers.iter().enumerate() {
            let at = At {
                segment,
                row: row as u32,
            };
            if let Some(old) = std::mem::replace(&mut self.keys.at[k as usize], at).live() {
                Self::kill(&mut self.segments, old);
                self.dead_rows += 1;
            } else {
                self.live_rows += 1;
            }
        }
        self.segments.push(Segment {
            live: vec![true; rows.num_rows()],
            live_rows: rows.num_rows(),
            keys: grouped.key_numbers.clone(),
            rows,
            earliest_end: None,
        });
        self.compact_if_sparse()
    }

    /// Room for `count` more keys of `bytes` bytes in all.
    fn reserve(&mut self, count: usize, bytes: usize) {
        let hasher = &self.hasher;
        let keys = &self.keys;
        self.index.reserve(count, |k| hasher.hash_one(keys.key(*k)));
        self.keys.at.reserve(count);
        self.keys.bytes.reserve(bytes);
    }

    /// Puts `rows` in the state: each replaces the live row of its group,
    /// if there is one.
    pub fn upsert(&mut self, rows: RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let rows = RecordBatch::try_new(Arc::clone(&self.layout.schema), rows.columns().to_vec())?;
        let key_rows = self.key_rows(&rows)?;
        if self.index.is_empty() {
            // A state read back: its keys in one go, without regrowing.
            self.reserve(key_rows.num_rows(), key_rows.lengths().sum());
        }
        let segment = self.segments.len() as u32;
        let mut row_keys = Vec::with_capacity(rows.num_rows());
        // Pushed first: a group twice in `rows` kills its earlier row here.
        self.segments.push(Segment {
            live: vec![true; rows.num_rows()],
            live_rows: rows.num_rows(),
            keys: Vec::new(),
            rows,
            earliest_end: None,
        });
        self.live_rows += key_rows.num_rows();
        for row in 0..key_rows.num_rows() {
            let key = key_rows.row(row).data();
            let at = At {
                segment,
                row: row as u32,
            };
            let hash = self.hasher.hash_one(key);
            let (keys, hasher) = (&mut self.keys, &self.hasher);
            match self.index.entry(
                hash,
                |k| keys.key(*k) == key,
                |k| hasher.hash_one(keys.key(*k)),
            ) {
                Entry::Occupied(entry) => {
                    let k = *entry.get();
                    row_keys.push(k);
                    if let Some(old) = std::mem::replace(&mut keys.at[k as usize], at).live() {
                        Self::kill(&mut self.segments, old);
                        self.live_rows -= 1;
                        self.dead_rows += 1;
                    }
                }
                Entry::Vacant(entry) => {
                    let k = keys.push(key, at);
                    row_keys.push(k);
                    entry.insert(k);
                    // The row replaces its group's in a spilled state's file.
                    if let Some(spilled) = &mut self.spilled
                        && spilled.take_out(hash, key).is_some()
                    {
                        self.faulted.insert(k);
                    }
                }
            }
        }
        self.segments[segment as usize].keys = row_keys;
        self.compact_if_sparse()
    }

    /// Removes the groups of `rows`' keys.
    pub fn remove(&mut self, rows: &RecordBatch) -> Result<()> {
        let key_rows = self.key_rows(rows)?;
        for row in 0..key_rows.num_rows() {
            self.remove_key(key_rows.row(row).data());
        }
        self.compact_if_sparse()
    }

    /// Marks where a batch starts: [`KeyedState::expire_since`] tells the
    /// groups it brings from those the state held before it.
    pub fn begin_batch(&mut self) {
        self.first_key_of_batch = Some(self.keys.at.len() as u32);
        self.faulted.clear();
    }

    /// Removes and returns the rows whose windows end at or before the
    /// watermark; only segments that may hold one are looked at.
    pub fn expire(&mut self, watermark_ms: i64) -> Result<RecordBatch> {
        Ok(self.expire_since(watermark_ms)?.rows)
    }

    /// [`KeyedState::expire`], and which of the rows are of groups the
    /// state held before the batch began: a group that came and went
    /// within the batch was never saved, so a delta need not remove it.
    pub fn expire_since(&mut self, watermark_ms: i64) -> Result<Expired> {
        let schema = Arc::clone(&self.layout.schema);
        let Some(window_end) = self.layout.window_end else {
            return Ok(Expired::none(&schema));
        };
        let first_new_key = self.first_key_of_batch.unwrap_or(u32::MAX);
        let faulted = &self.faulted;
        let held_before_batch = |k: u32| k < first_new_key || faulted.contains(&k);
        let mut closed = Vec::new();
        let mut held_before = Vec::new();
        let mut leaving = Vec::new();
        if let Some(spilled) = &mut self.spilled {
            // A file's rows are all of groups held before the batch.
            let rows = spilled.expire(window_end, watermark_ms)?;
            if rows.num_rows() > 0 {
                let rows = RecordBatch::try_new(Arc::clone(&schema), rows.columns().to_vec())?;
                held_before.push(rows.clone());
                closed.push(rows);
            }
        }
        for segment in &mut self.segments {
            if segment.live_rows == 0 {
                continue;
            }
            let mut ends = None;
            let earliest = match segment.earliest_end {
                Some(earliest) => earliest,
                None => earliest_live(segment, ends.insert(window_end.of(&segment.rows)?)),
            };
            segment.earliest_end = Some(earliest);
            if earliest.is_none_or(|end| end > watermark_ms) {
                continue;
            }
            let ends = match ends {
                Some(ends) => ends,
                None => window_end.of(&segment.rows)?,
            };
            let mask: BooleanArray = ends
                .iter()
                .zip(&segment.live)
                .map(|(end, live)| Some(*live && end.is_some_and(|end| end <= watermark_ms)))
                .collect();
            closed.push(filter_record_batch(&segment.rows, &mask)?);
            segment.earliest_end = Some(earliest_live_after(segment, &ends, &mask));
            let before = leaving.len();
            leaving.extend(mask.values().set_indices().map(|row| segment.keys[row]));
            let held = leaving[before..]
                .iter()
                .filter(|k| held_before_batch(**k))
                .count();
            if held == leaving.len() - before {
                held_before.push(closed[closed.len() - 1].clone());
            } else if held > 0 {
                let held: BooleanArray = (0..segment.rows.num_rows())
                    .map(|row| Some(mask.value(row) && held_before_batch(segment.keys[row])))
                    .collect();
                held_before.push(filter_record_batch(&segment.rows, &held)?);
            }
        }
        // Their keys leave the index, which marks their rows dead.
        for k in leaving {
            self.remove_key_number(k);
        }
        self.compact_if_sparse()?;
        Ok(Expired {
            rows: concat_batches(&schema, &closed)?,
            held_before: concat_batches(&schema, &held_before)?,
        })
    }

    /// Each of `batches` without the rows of the groups `gone` holds a row
    /// of. A batch's changed rows leave out the groups that expired within
    /// it: a delta applies its removals before its changes, and would
    /// bring them back. `gone`'s keys are encoded and hashed once for all.
    pub fn without_groups_of(
        &self,
        batches: &[RecordBatch],
        gone: &RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        if gone.num_rows() == 0 {
            return Ok(batches.to_vec());
        }
        let gone_keys = self.key_rows(gone)?;
        let mut gone_set: HashTable<usize> = HashTable::with_capacity(gone_keys.num_rows());
        for row in 0..gone_keys.num_rows() {
            let key = gone_keys.row(row).data();
            gone_set
                .entry(
                    self.hasher.hash_one(key),
                    |r| gone_keys.row(*r).data() == key,
                    |r| self.hasher.hash_one(gone_keys.row(*r).data()),
                )
                .or_insert(row);
        }
        batches
            .iter()
            .map(|rows| {
                if rows.num_rows() == 0 {
                    return Ok(rows.clone());
                }
                let keys = self.key_rows(rows)?;
                let stays: BooleanArray = (0..keys.num_rows())
                    .map(|row| {
                        let key = keys.row(row).data();
                        let gone = gone_set
                            .find(self.hasher.hash_one(key), |r| {
                                gone_keys.row(*r).data() == key
                            })
                            .is_some();
                        Some(!gone)
                    })
                    .collect();
                Ok(filter_record_batch(rows, &stays)?)
            })
            .collect()
    }

    fn remove_key(&mut self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Ok(entry) = self.index.find_entry(hash, |k| keys.key(*k) == key) {
            let (k, _) = entry.remove();
            self.forget(k);
        } else if let Some(spilled) = &mut self.spilled {
            spilled.take_out(hash, key);
        }
    }

    /// Removes key number `k`, whose bytes the arena holds.
    fn remove_key_number(&mut self, k: u32) {
        let hash = self.hasher.hash_one(self.keys.key(k));
        if let Ok(entry) = self.index.find_entry(hash, |other| *other == k) {
            entry.remove();
            self.forget(k);
        }
    }

    /// Key number `k` has left the index: its live row dies.
    fn forget(&mut self, k: u32) {
        if let Some(old) = std::mem::replace(&mut self.keys.at[k as usize], At::GONE).live() {
            Self::kill(&mut self.segments, old);
            self.live_rows -= 1;
            self.dead_rows += 1;
        }
    }

    fn kill(segments: &mut [Segment], at: At) {
        let segment = &mut segments[at.segment as usize];
        segment.live[at.row as usize] = false;
        segment.live_rows -= 1;
    }

    fn key_rows(&self, rows: &RecordBatch) -> Result<Rows> {
        Ok(self
            .converter
            .convert_columns(&rows.columns()[..self.layout.keys])?)
    }

    /// Once dead rows outnumber live ones: the live rows as one segment,
    /// the index pointing into it. Keys are not hashed again.
    fn compact_if_sparse(&mut self) -> Result<()> {
        if self.dead_rows <= self.live_rows.max(1024) && self.segments.len() <= 256 {
            return Ok(());
        }
        // Where each segment's live rows land in the compacted one.
        let mut ranks: Vec<Vec<u32>> = Vec::with_capacity(self.segments.len());
        let mut next = 0u32;
        for segment in &self.segments {
            ranks.push(
                segment
                    .live
                    .iter()
                    .map(|live| {
                        let rank = next;
                        next += u32::from(*live);
                        rank
                    })
                    .collect(),
            );
        }
        let rows = concat_batches(&self.layout.schema, &self.segment_rows()?)?;
        // Keys of removed groups go too; the index's entries are renumbered.
        let mut keys = Keys::default();
        let mut renumbered = vec![u32::MAX; self.keys.at.len()];
        let mut first_key_of_batch = None;
        for (k, at) in self.keys.at.iter().enumerate() {
            // Renumbering keeps the keys' order, so the batch's keys still
            // come last.
            if Some(k as u32) == self.first_key_of_batch {
                first_key_of_batch = Some(keys.at.len() as u32);
            }
            if let Some(at) = at.live() {
                let row = ranks[at.segment as usize][at.row as usize];
                renumbered[k] = keys.push(self.keys.key(k as u32), At { segment: 0, row });
            }
        }
        self.index.retain(|k| {
            *k = renumbered[*k as usize];
            *k != u32::MAX
        });
        let mut row_keys = vec![0u32; rows.num_rows()];
        for (k, at) in keys.at.iter().enumerate() {
            row_keys[at.row as usize] = k as u32;
        }
        if self.first_key_of_batch.is_some() {
            self.first_key_of_batch = first_key_of_batch.or(Some(keys.at.len() as u32));
        }
        self.faulted = self
            .faulted
            .iter()
            .map(|k| renumbered[*k as usize])
            .filter(|k| *k != u32::MAX)
            .collect();
        self.keys = keys;
        self.segments = vec![Segment {
            live: vec![true; rows.num_rows()],
            live_rows: rows.num_rows(),
            keys: row_keys,
            rows,
            earliest_end: None,
        }];
        self.dead_rows = 0;
        Ok(())
    }
}

fn earliest_live(segment: &Segment, ends: &[Option<i64>]) -> Option<i64> {
    ends.iter()
        .zip(&segment.live)
        .filter(|(_, live)| **live)
        .filter_map(|(end, _)| *end)
        .min()
}

/// The earliest end among rows live and not in `leaving`.
fn earliest_live_after(
    segment: &Segment,
    ends: &[Option<i64>],
    leaving: &BooleanArray,
) -> Option<i64> {
    ends.iter()
        .zip(&segment.live)
        .zip(leaving.values().iter())
        .filter(|((_, live), leaves)| **live && !*leaves)
        .filter_map(|((end, _), _)| *end)
        .min()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
    use rand::{Rng, SeedableRng};

    use super::*;

    /// `(id, window start, total)` rows; windows are 10 ms wide.
    fn layout() -> StateLayout {
        StateLayout {
            schema: Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new(
                    "start",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    false,
                ),
                Field::new("total", DataType::Int64, false),
            ])),
            keys: 2,
            window_end: Some(WindowEnd::StartPlus {
                column: 1,
                width_ms: 10,
            }),
        }
    }

    type Model = BTreeMap<(i64, i64), i64>;

    fn batch(rows: &[((i64, i64), i64)]) -> RecordBatch {
        RecordBatch::try_new(
            layout().schema,
            vec![
                Arc::new(rows.iter().map(|r| r.0.0).collect::<Int64Array>()),
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.0.1).collect::<Vec<_>>(),
                )),
                Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
            ],
        )
        .unwrap()
    }

    fn contents(batches: &[RecordBatch]) -> Model {
        let mut model = Model::new();
        for b in batches {
            let ids = b.column(0).as_primitive::<Int64Type>();
            let starts = epoch_millis(b.column(1)).unwrap();
            let totals = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let old = model.insert((ids.value(i), starts.value(i)), totals.value(i));
                assert!(
                    old.is_none(),
                    "group ({}, {}) twice",
                    ids.value(i),
                    starts.value(i)
                );
            }
        }
        model
    }

    #[test]
    fn updates_removals_and_expiry_keep_one_row_per_group_through_compactions() {
        against_a_model(None);
    }

    #[test]
    fn a_spilled_state_is_the_same_state() {
        // Spilled every 13 batches: between spills, groups come from the
        // file, are updated, removed and closed, and spill again.
        against_a_model(Some(13));
    }

    /// Random batches, checked against a map after each; the state spilled
    /// every `spill_every` batches.
    fn against_a_model(spill_every: Option<i64>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut state = KeyedState::new(layout()).unwrap();
        let mut model = Model::new();
        let mut compacted = false;
        for batch_no in 0..400i64 {
            state.begin_batch();
            let held_at_start: Vec<(i64, i64)> = model.keys().copied().collect();
            // Keys over a small space, so groups are updated again and again.
            let mut changed = BTreeMap::new();
            for _ in 0..rng.random_range(0..300) {
                let key = (rng.random_range(0..500), batch_no / 20 * 10);
                changed.insert(key, rng.random_range(0..1000));
            }
            let rows: Vec<_> = changed.into_iter().collect();
            let expected: Model = rows
                .iter()
                .filter_map(|(k, _)| model.get(k).map(|v| (*k, *v)))
                .collect();
            if batch_no % 2 == 0 {
                let touched = state.rows_of_groups_in(&batch(&rows)).unwrap();
                assert_eq!(contents(&[touched]), expected, "batch {batch_no}");
                state.upsert(batch(&rows)).unwrap();
                model.extend(rows.iter().copied());
            } else {
                // Grouped: each key twice, reduced by summing with its held row.
                let twice: Vec<_> = rows.iter().chain(&rows).copied().collect();
                let grouped = state.group(&batch(&twice)).unwrap();
                assert_eq!(grouped.groups(), rows.len());
                let held = state.held_rows(&grouped).unwrap();
                assert_eq!(
                    contents(std::slice::from_ref(&held)),
                    expected,
                    "batch {batch_no}"
                );
                let mut reduced: Vec<_> = grouped
                    .first_row
                    .iter()
                    .map(|row| (twice[*row].0, 0))
                    .collect();
                for (row, group) in grouped.group_of_row.iter().enumerate() {
                    reduced[*group].1 += twice[row].1;
                }
                let held_totals = held.column(2).as_primitive::<Int64Type>();
                for (i, group) in grouped.held_groups.iter().enumerate() {
                    reduced[*group].1 += held_totals.value(i);
                }
                state.replace(&grouped, batch(&reduced)).unwrap();
                for (k, v) in rows {
                    *model.entry(k).or_default() += 2 * v;
                }
            }

            let gone: Vec<_> = model
                .iter()
                .filter(|_| rng.random_bool(0.01))
                .map(|(k, v)| (*k, *v))
                .collect();
            state.remove(&batch(&gone)).unwrap();
            for (k, _) in &gone {
                model.remove(k);
            }

            if batch_no % 7 == 0 {
                let watermark = batch_no / 20 * 10 - 5;
                let expired = state.expire_since(watermark).unwrap();
                let closed = contents(std::slice::from_ref(&expired.rows));
                let held_before: Model = closed
                    .iter()
                    .filter(|(k, _)| held_at_start.binary_search(k).is_ok())
                    .map(|(k, v)| (*k, *v))
                    .collect();
                assert_eq!(
                    contents(&[expired.held_before]),
                    held_before,
                    "closed at {watermark}, held before batch {batch_no}"
                );
                let expected: Model = model
                    .iter()
                    .filter(|((_, start), _)| start + 10 <= watermark)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                assert_eq!(closed, expected, "closed at {watermark}");
                model.retain(|k, _| !expected.contains_key(k));
            }
            compacted |= state.segments.len() == 1 && batch_no > 0;
            assert_eq!(state.len(), model.len());
            assert_eq!(contents(&state.rows().unwrap()), model, "batch {batch_no}");
            if spill_every.is_some_and(|every| batch_no % every == every - 1) {
                state = state.spill().unwrap();
                assert!(state.segments.is_empty() && state.spilled_bytes() > 0);
                assert_eq!(contents(&state.rows().unwrap()), model, "spilled");
            }
        }
        assert!(compacted, "the test never compacted the state");
    }

    #[test]
    fn a_group_that_came_and_went_within_the_batch_is_not_held_before() {
        let mut state = KeyedState::new(layout()).unwrap();
        state.begin_batch();
        state
            .upsert(batch(&[((1, 0), 10), ((2, 100), 20)]))
            .unwrap();
        // Batch 2: group 1 is updated, 3 is new; both close.
        state.begin_batch();
        let grouped = state.group(&batch(&[((3, 0), 30), ((1, 0), 11)])).unwrap();
        state
            .replace(&grouped, batch(&[((3, 0), 30), ((1, 0), 21)]))
            .unwrap();
        let expired = state.expire_since(10).unwrap();
        assert_eq!(
            contents(std::slice::from_ref(&expired.rows)),
            Model::from([((1, 0), 21), ((3, 0), 30)])
        );
        assert_eq!(
            contents(&[expired.held_before]),
            Model::from([((1, 0), 21)])
        );

        // Through a compaction, which renumbers the keys: many groups come
        // and go within batch 3 while group 2, held before, closes.
        state.begin_batch();
        let many: Vec<_> = (10..5_000).map(|id| ((id, 50), id)).collect();
        state.upsert(batch(&many)).unwrap();
        state.remove(&batch(&many[..4_000])).unwrap();
        assert_eq!(state.segments.len(), 1, "compacted");
        let expired = state.expire_since(200).unwrap();
        assert_eq!(expired.rows.num_rows(), 991);
        assert_eq!(
            contents(&[expired.held_before]),
            Model::from([((2, 100), 20)])
        );
    }

    #[test]
    fn a_group_taken_from_a_spilled_file_was_held_before_the_batch() {
        let rows: Vec<_> = (0..1_000).map(|i| ((i, 0), i)).collect();
        let mut state = KeyedState::from_rows(layout(), batch(&rows))
            .unwrap()
            .spill()
            .unwrap();
        // Group 1 through `group`, group 2 through `upsert`, group 5000 is
        // new, 4 removed; all close with the batch, with the file's other rows.
        state.begin_batch();
        let grouped = state.group(&batch(&[((1, 0), 5), ((5000, 0), 7)])).unwrap();
        let held = state.held_rows(&grouped).unwrap();
        assert_eq!(contents(&[held]), Model::from([((1, 0), 1)]));
        state
            .replace(&grouped, batch(&[((1, 0), 6), ((5000, 0), 7)]))
            .unwrap();
        state.upsert(batch(&[((2, 0), 20)])).unwrap();
        state.remove(&batch(&[((4, 0), 0)])).unwrap();
        assert_eq!(state.len(), 1_000);
        let expired = state.expire_since(10).unwrap();
        assert_eq!(expired.rows.num_rows(), 1_000);
        let held_before = contents(&[expired.held_before]);
        assert_eq!(held_before.len(), 999, "all but the new group");
        assert_eq!(held_before[&(1, 0)], 6);
        assert_eq!(held_before[&(2, 0)], 20);
        assert!(!held_before.contains_key(&(5000, 0)));
        assert!(!held_before.contains_key(&(4, 0)), "removed");
        assert!(state.is_empty());
    }

    #[test]
    fn a_batch_touches_its_own_groups_not_the_state() {
        let rows: Vec<_> = (0..100_000).map(|i| ((i, 0), i)).collect();
        let mut state = KeyedState::from_rows(layout(), batch(&rows)).unwrap();
        let update = batch(&[((5, 0), 50), ((7, 0), 70), ((100_001, 0), 1)]);
        assert_eq!(state.rows_of_groups_in(&update).unwrap().num_rows(), 2);
        let twice = batch(&[((5, 0), 1), ((5, 0), 2)]);
        assert_eq!(
            state.rows_of_groups_in(&twice).unwrap().num_rows(),
            1,
            "a group once"
        );
        state.upsert(update).unwrap();
        // The update is a segment of its own; the big one is not copied.
        assert_eq!(state.segments.len(), 2);
        assert_eq!(state.segments[0].live_rows, 100_000 - 2);
        assert_eq!(state.len(), 100_001);
        // No window of the big segment ends before 10: it is not scanned.
        assert_eq!(state.expire(5).unwrap().num_rows(), 0);
        assert_eq!(state.expire(10).unwrap().num_rows(), 100_001);
        assert!(state.is_empty());

        // A group twice in one batch keeps its last row, which expires.
        state.upsert(twice).unwrap();
        assert_eq!(contents(&state.rows().unwrap()), Model::from([((5, 0), 2)]));
        assert_eq!(
            contents(&[state.expire(10).unwrap()]),
            Model::from([((5, 0), 2)])
        );
        assert!(state.is_empty());
    }
}

#[cfg(test)]
mod string_key_tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn keys_of_many_lengths_are_found_after_fixed_width_ones() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let rows = |names: Vec<Option<&str>>| {
            let n: Int64Array = (0..names.len() as i64).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(StringArray::from(names)), Arc::new(n)],
            )
            .unwrap()
        };
        let layout = StateLayout {
            schema: Arc::clone(&schema),
            keys: 1,
            window_end: None,
        };
        let mut state = KeyedState::from_rows(layout, rows(vec![Some("ab"), Some("cd")])).unwrap();
        state
            .upsert(rows(vec![Some("a much longer name"), None, Some("cd")]))
            .unwrap();
        assert_eq!(state.len(), 4);
        let found = state
            .rows_of_groups_in(&rows(vec![
                Some("ab"),
                Some("a much longer name"),
                None,
                Some("x"),
            ]))
            .unwrap();
        assert_eq!(found.num_rows(), 3);
        state.remove(&rows(vec![Some("ab"), None])).unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(
            state
                .rows_of_groups_in(&rows(vec![Some("ab"), Some("cd")]))
                .unwrap()
                .num_rows(),
            1
        );
    }
}
