//! A partition's rows beyond the state cache: written once to a local
//! file, mapped into memory, and looked up by key, so a batch reads the
//! groups it touches rather than the whole state.
//!
//! The file is Arrow IPC: the state's columns, then each row's group key
//! (Arrow's row format, as `KeyedState` indexes it) and the key's hash,
//! sorted by hash. The arrays point into the mapping, so the operating
//! system pages the rows in as lookups touch them and out under memory
//! pressure, as it does RocksDB's files for Flink; the process's heap keeps
//! a directory (where each hash prefix starts, about four bytes per eight
//! rows) and a bit per row that says whether the row is still the state's.
//! A row dies when a batch takes its group into memory or removes it; the
//! file itself never changes, and goes when the state is dropped or
//! spilled again.
//!
//! The file is a cache of the worker's, as the in-memory state is: the
//! workspace's snapshots and deltas stay the state's truth.

use std::io::{BufWriter, Write};
use std::ptr::NonNull;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, RecordBatch, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, ScalarBuffer};
use datafusion::arrow::compute::{filter_record_batch, interleave_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::Rows;

use crate::error::{EngineError, Result};
use crate::keyed::WindowEnd;

/// Rows per directory entry, on average: a lookup scans about this many
/// hashes past the one its directory entry points at.
const ROWS_PER_BUCKET: usize = 8;

#[derive(Debug)]
pub(crate) struct Spilled {
    /// The state's columns, sorted by the hash of their group key.
    rows: RecordBatch,
    keys: BinaryArray,
    hashes: ScalarBuffer<u64>,
    /// `directory[p]` is the first row whose hash starts with prefix `p`.
    directory: Vec<u32>,
    /// A hash's prefix is its top `64 - shift` bits.
    shift: u32,
    live: Vec<u64>,
    live_rows: usize,
    /// The earliest window end among the live rows, once computed; a lower
    /// bound after rows die.
    earliest_end: Option<Option<i64>>,
    file_bytes: usize,
}

impl Spilled {
    /// Writes `parts` (the state's rows, one per group, each batch with its
    /// keys in row format) to a file in the system's temporary folder,
    /// sorted by `hash` of each key, and maps it.
    pub fn write(
        schema: &SchemaRef,
        parts: &[(RecordBatch, Rows)],
        hash: impl Fn(&[u8]) -> u64,
    ) -> Result<Spilled> {
        Spilled::merge(schema, None, parts, hash)
    }

    /// This file's live rows and `parts` (of groups the file does not hold
    /// live) in one new file. The file's rows are in hash order already,
    /// with their keys and hashes: only `parts` are encoded and sorted,
    /// then merged in.
    pub fn respill(
        &self,
        schema: &SchemaRef,
        parts: &[(RecordBatch, Rows)],
        hash: impl Fn(&[u8]) -> u64,
    ) -> Result<Spilled> {
        Spilled::merge(schema, Some(self), parts, hash)
    }

    fn merge(
        schema: &SchemaRef,
        file: Option<&Spilled>,
        parts: &[(RecordBatch, Rows)],
        hash: impl Fn(&[u8]) -> u64,
    ) -> Result<Spilled> {
        let file_live = file.map_or(0, Spilled::len);
        let total = file_live + parts.iter().map(|(rows, _)| rows.num_rows()).sum::<usize>();
        if total >= u32::MAX as usize {
            return Err(EngineError::internal(format!(
                "{total} rows are too many for one partition's spilled state"
            )));
        }
        let mut order: Vec<(u64, u32, u32)> = Vec::with_capacity(total - file_live);
        for (part, (_, keys)) in parts.iter().enumerate() {
            for row in 0..keys.num_rows() {
                order.push((hash(keys.row(row).data()), part as u32, row as u32));
            }
        }
        order.sort_unstable();
        // Source 0 is the file's rows (when there is a file), then each part.
        let first_part = usize::from(file.is_some());
        let mut sources: Vec<&RecordBatch> = file.iter().map(|f| &f.rows).collect();
        sources.extend(parts.iter().map(|(rows, _)| rows));
        let key_bytes = file.map_or(0, |f| f.keys.values().len())
            + parts
                .iter()
                .map(|(_, keys)| keys.lengths().sum::<usize>())
                .sum::<usize>();
        let mut at: Vec<(usize, usize)> = Vec::with_capacity(total);
        let mut hashes: Vec<u64> = Vec::with_capacity(total);
        let mut keys = BinaryBuilder::with_capacity(total, key_bytes);
        // The file's live rows, already in hash order: (hash, key, row).
        let mut from_file = file
            .into_iter()
            .flat_map(|f| {
                (0..f.rows.num_rows())
                    .filter(|row| f.is_live(*row))
                    .map(move |row| (f.hashes[row], f.keys.value(row), row))
            })
            .peekable();
        let mut from_parts = order.iter().peekable();
        loop {
            let file_first = match (from_file.peek(), from_parts.peek()) {
                (None, None) => break,
                (Some((file_hash, _, _)), Some((part_hash, _, _))) => file_hash <= part_hash,
                (file_next, _) => file_next.is_some(),
            };
            if file_first && let Some((hash, key, row)) = from_file.next() {
                at.push((0, row));
                hashes.push(hash);
                keys.append_value(key);
            } else if let Some(&(hash, part, row)) = from_parts.next() {
                at.push((first_part + part as usize, row as usize));
                hashes.push(hash);
                keys.append_value(parts[part as usize].1.row(row as usize).data());
            }
        }
        drop(order);
        let rows = if total == 0 {
            RecordBatch::new_empty(Arc::clone(schema))
        } else {
            interleave_record_batch(&sources, &at)?
        };
        drop(at);
        let hashes = UInt64Array::from(hashes);

        let mut fields = schema.fields().to_vec();
        fields.push(Arc::new(Field::new("_spate_key", DataType::Binary, false)));
        fields.push(Arc::new(Field::new("_spate_hash", DataType::UInt64, false)));
        let file_schema = Arc::new(Schema::new(fields));
        let mut columns: Vec<ArrayRef> = crate::ipc::compacted(&rows)?.columns().to_vec();
        columns.push(Arc::new(keys.finish()));
        columns.push(Arc::new(hashes));
        let whole = RecordBatch::try_new(Arc::clone(&file_schema), columns)?;
        drop(rows);

        let spill_error = |e: std::io::Error| {
            EngineError::execution(format!(
                "could not spill a partition's state to {}: {e}",
                std::env::temp_dir().display()
            ))
        };
        // Unlinked at once: the file goes with the mapping, whatever ends the process.
        let mut file = tempfile::tempfile().map_err(spill_error)?;
        {
            let mut out = BufWriter::with_capacity(1 << 20, &mut file);
            let mut writer = StreamWriter::try_new(&mut out, &file_schema)?;
            writer.write(&whole)?;
            writer.finish()?;
            drop(writer);
            out.flush().map_err(spill_error)?;
        }
        drop(whole);
        // SAFETY: the file is this process's alone (unlinked, never written
        // again), so the mapped bytes do not change under the arrays.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(spill_error)?);
        let file_bytes = map.len();
        let start = NonNull::new(map.as_ptr() as *mut u8)
            .ok_or_else(|| EngineError::internal("an empty mapping of a spilled state"))?;
        // SAFETY: the pointer and length are the mapping's, which the
        // buffer keeps alive through the Arc it owns.
        let mut bytes = unsafe { Buffer::from_custom_allocation(start, file_bytes, map) };
        let mut decoder = StreamDecoder::new();
        let mut whole = None;
        while whole.is_none() && !bytes.is_empty() {
            whole = decoder.decode(&mut bytes)?;
        }
        let whole =
            whole.ok_or_else(|| EngineError::internal("a spilled state's file holds no rows"))?;
        let state_columns = schema.fields().len();
        let keys = whole.column(state_columns).as_binary::<i32>().clone();
        let hashes = whole
            .column(state_columns + 1)
            .as_primitive::<UInt64Type>()
            .values()
            .clone();
        let rows = RecordBatch::try_new(
            Arc::clone(schema),
            whole.columns()[..state_columns].to_vec(),
        )?;

        let bits = (total / ROWS_PER_BUCKET)
            .max(2)
            .next_power_of_two()
            .trailing_zeros();
        let shift = 64 - bits;
        let mut directory = Vec::with_capacity((1 << bits) + 1);
        let mut row = 0usize;
        for prefix in 0..(1u64 << bits) {
            while row < total && (hashes[row] >> shift) < prefix {
                row += 1;
            }
            directory.push(row as u32);
        }
        directory.push(total as u32);
        let mut live = vec![u64::MAX; total.div_ceil(64)];
        if !total.is_multiple_of(64)
            && let Some(last) = live.last_mut()
        {
            *last = (1u64 << (total % 64)) - 1;
        }
        Ok(Spilled {
            rows,
            keys,
            hashes,
            directory,
            shift,
            live,
            live_rows: total,
            earliest_end: None,
            file_bytes,
        })
    }

    /// Rows still the state's.
    pub fn len(&self) -> usize {
        self.live_rows
    }

    /// What the file takes on disk (and in the page cache, where it is).
    pub fn file_bytes(&self) -> usize {
        self.file_bytes
    }

    /// What this takes of the heap.
    pub fn heap_size(&self) -> usize {
        self.directory.capacity() * size_of::<u32>() + self.live.capacity() * size_of::<u64>()
    }

    fn is_live(&self, row: usize) -> bool {
        self.live[row / 64] & (1 << (row % 64)) != 0
    }

    /// The live row of the group whose key is `key`, hashed `hash`.
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let prefix = (hash >> self.shift) as usize;
        let (start, end) = (
            self.directory[prefix] as usize,
            self.directory[prefix + 1] as usize,
        );
        let first = start + self.hashes[start..end].partition_point(|h| *h < hash);
        (first..end)
            .take_while(|row| self.hashes[*row] == hash)
            .find(|row| self.is_live(*row) && self.keys.value(*row) == key)
    }

    /// The live row of the group whose key is `key`, hashed `hash`, which
    /// leaves the file (the batch takes the group into memory or removes
    /// it); None when the file holds no live row of it.
    pub fn take_out(&mut self, hash: u64, key: &[u8]) -> Option<usize> {
        let row = self.find(hash, key)?;
        self.kill(row);
        Some(row)
    }

    fn kill(&mut self, row: usize) {
        debug_assert!(self.is_live(row));
        self.live[row / 64] &= !(1 << (row % 64));
        self.live_rows -= 1;
    }

    /// The rows at `rows`, in their order.
    pub fn take(&self, rows: impl IntoIterator<Item = usize>) -> Result<RecordBatch> {
        let indices: UInt32Array = rows.into_iter().map(|row| row as u32).collect();
        Ok(take_record_batch(&self.rows, &indices)?)
    }

    fn live_mask(&self) -> BooleanArray {
        let bits = Buffer::from_slice_ref(&self.live);
        BooleanArray::new(BooleanBuffer::new(bits, 0, self.rows.num_rows()), None)
    }

    /// The live rows; None when none is.
    pub fn rows(&self) -> Result<Option<RecordBatch>> {
        if self.live_rows == 0 {
            return Ok(None);
        }
        if self.live_rows == self.rows.num_rows() {
            return Ok(Some(self.rows.clone()));
        }
        Ok(Some(filter_record_batch(&self.rows, &self.live_mask())?))
    }

    /// Removes and returns the live rows whose windows end at or before
    /// the watermark; the file is read only when one may.
    pub fn expire(&mut self, window_end: WindowEnd, watermark_ms: i64) -> Result<RecordBatch> {
        let schema = self.rows.schema();
        if self.live_rows == 0
            || self
                .earliest_end
                .is_some_and(|earliest| earliest.is_none_or(|end| end > watermark_ms))
        {
            return Ok(RecordBatch::new_empty(schema));
        }
        let ends = window_end.of(&self.rows)?;
        let mut closing = Vec::new();
        let mut earliest_left: Option<i64> = None;
        for (row, end) in ends.iter().enumerate() {
            if !self.is_live(row) {
                continue;
            }
            match end {
                Some(end) if *end <= watermark_ms => closing.push(row),
                Some(end) => earliest_left = Some(earliest_left.map_or(*end, |e| e.min(*end))),
                None => {}
            }
        }
        self.earliest_end = Some(earliest_left);
        let closed = self.take(closing.iter().copied())?;
        for row in closing {
            self.kill(row);
        }
        Ok(closed)
    }
}
