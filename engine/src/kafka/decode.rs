//! Kafka records to Arrow: the declared columns are decoded from each
//! record's value (JSON, CSV or raw), the metadata columns come from the
//! record itself. Only projected columns are decoded.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::{csv, json};

use super::{KafkaSourceSpec, OnError, RecordFormat};
use crate::error::{EngineError, Result};

/// Where a record sits in its topic, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordPosition {
    pub partition: i32,
    pub offset: i64,
}

enum ValueDecoder {
    /// No declared column is projected: values are not decoded at all.
    Skip,
    Json(Box<json::reader::Decoder>),
    Csv(Box<csv::reader::Decoder>),
    Raw(StringBuilder),
}

#[derive(Clone, Copy)]
enum OutputColumn {
    /// Index into the decoded value batch.
    Value(usize),
    Key,
    Partition,
    Offset,
    Timestamp,
    /// `_corrupt`: the raw value of a record that did not decode (permissive).
    Corrupt,
}

/// Which parts of a record besides its value the output holds: the others
/// are neither read from the message nor built, record by record.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wanted {
    pub key: bool,
    pub partition: bool,
    pub offset: bool,
    pub timestamp: bool,
    pub corrupt: bool,
}

/// Decodes records, failing on the first that does not decode.
struct StrictDecoder {
    topic: String,
    output_schema: SchemaRef,
    columns: Vec<OutputColumn>,
    wanted: Wanted,
    values: ValueDecoder,
    keys: StringBuilder,
    partitions: Int32Builder,
    offsets: Int64Builder,
    timestamps: TimestampMillisecondBuilder,
    corrupt: StringBuilder,
    rows: usize,
    first: Option<RecordPosition>,
    last: Option<RecordPosition>,
}

impl StrictDecoder {
    fn new(
        spec: &KafkaSourceSpec,
        projection: &[usize],
        output_schema: SchemaRef,
        batch_size: usize,
    ) -> Result<Self> {
        let value_count = spec.value_column_count();
        let value_indices: Vec<usize> = projection
            .iter()
            .copied()
            .filter(|i| *i < value_count)
            .collect();
        let mut columns = Vec::with_capacity(projection.len());
        let mut next_value = 0;
        for &i in projection {
            columns.push(match i.checked_sub(value_count) {
                None => {
                    let position = value_indices
                        .iter()
                        .position(|v| *v == i)
                        .unwrap_or(next_value);
                    next_value += 1;
                    OutputColumn::Value(position)
                }
                Some(0) => OutputColumn::Key,
                Some(1) => OutputColumn::Partition,
                Some(2) => OutputColumn::Offset,
                Some(3) => OutputColumn::Timestamp,
                _ => OutputColumn::Corrupt,
            });
        }
        let values = if value_indices.is_empty() {
            ValueDecoder::Skip
        } else {
            let decoded_schema = Arc::new(spec.schema.project(&value_indices)?);
            match spec.format {
                RecordFormat::Json => ValueDecoder::Json(Box::new(
                    json::ReaderBuilder::new(decoded_schema)
                        .with_batch_size(batch_size.max(1))
                        .build_decoder()?,
                )),
                RecordFormat::Csv => {
                    // CSV is positional: the decoder sees every declared
                    // column and keeps the projected ones.
                    let all_values: Vec<usize> = (0..value_count).collect();
                    let csv_schema = Arc::new(spec.schema.project(&all_values)?);
                    ValueDecoder::Csv(Box::new(
                        csv::ReaderBuilder::new(csv_schema)
                            .with_batch_size(batch_size.max(1))
                            .with_projection(value_indices.clone())
                            .build_decoder(),
                    ))
                }
                RecordFormat::Raw => ValueDecoder::Raw(StringBuilder::new()),
            }
        };
        let mut wanted = Wanted::default();
        for column in &columns {
            match column {
                OutputColumn::Value(_) => {}
                OutputColumn::Key => wanted.key = true,
                OutputColumn::Partition => wanted.partition = true,
                OutputColumn::Offset => wanted.offset = true,
                OutputColumn::Timestamp => wanted.timestamp = true,
                OutputColumn::Corrupt => wanted.corrupt = true,
            }
        }
        Ok(StrictDecoder {
            topic: spec.topic.clone(),
            output_schema,
            columns,
            wanted,
            values,
            keys: StringBuilder::new(),
            partitions: Int32Builder::new(),
            offsets: Int64Builder::new(),
            timestamps: TimestampMillisecondBuilder::new(),
            corrupt: StringBuilder::new(),
            rows: 0,
            first: None,
            last: None,
        })
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn malformed(&self, at: RecordPosition, reason: impl Into<String>) -> EngineError {
        EngineError::MalformedRecord {
            topic: self.topic.clone(),
            partition: at.partition,
            offset: at.offset,
            reason: reason.into(),
        }
    }

    /// Adds one record; a value that does not decode is an error naming its
    /// offset. `corrupt` fills the `_corrupt` column.
    fn push(
        &mut self,
        at: RecordPosition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        corrupt: Option<&str>,
    ) -> Result<()> {
        let value = value.unwrap_or_default();
        match &mut self.values {
            ValueDecoder::Skip => {}
            ValueDecoder::Json(decoder) => {
                let before = decoder.len();
                let payload: &[u8] = if value.iter().all(u8::is_ascii_whitespace) {
                    b"{}"
                } else {
                    value
                };
                let fed = decoder.decode(payload).and_then(|_| decoder.decode(b"\n"));
                if let Err(e) = fed {
                    return Err(self.malformed(at, e.to_string()));
                }
                if decoder.has_partial_record() || decoder.len() != before + 1 {
                    return Err(self.malformed(at, "the value is not exactly one JSON object"));
                }
            }
            ValueDecoder::Csv(decoder) => {
                let line = value.strip_suffix(b"\n").unwrap_or(value);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.contains(&b'\n') {
                    return Err(self.malformed(at, "a CSV value must be a single line"));
                }
                let room = decoder.capacity();
                let fed = decoder.decode(line).and_then(|_| decoder.decode(b"\n"));
                if let Err(e) = fed {
                    return Err(self.malformed(at, e.to_string()));
                }
                // An open quote makes the line part of a record that the
                // next value would continue.
                if decoder.capacity() + 1 != room {
                    return Err(self.malformed(
                        at,
                        "the value is not one complete CSV record (a quote is not closed)",
                    ));
                }
            }
            ValueDecoder::Raw(builder) => builder.append_value(String::from_utf8_lossy(value)),
        }
        if self.wanted.key {
            match key {
                Some(k) => self.keys.append_value(String::from_utf8_lossy(k)),
                None => self.keys.append_null(),
            }
        }
        if self.wanted.partition {
            self.partitions.append_value(at.partition);
        }
        if self.wanted.offset {
            self.offsets.append_value(at.offset);
        }
        if self.wanted.timestamp {
            self.timestamps.append_option(timestamp_ms);
        }
        if self.wanted.corrupt {
            self.corrupt.append_option(corrupt);
        }
        self.rows += 1;
        self.first.get_or_insert(at);
        self.last = Some(at);
        Ok(())
    }

    /// Emits the buffered records as one batch of the projected schema.
    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.rows);
        let (first, last) = (self.first.take(), self.last.take());
        let decoded: std::result::Result<
            Option<RecordBatch>,
            datafusion::arrow::error::ArrowError,
        > = match &mut self.values {
            ValueDecoder::Skip => Ok(None),
            ValueDecoder::Json(d) => d.flush(),
            ValueDecoder::Csv(d) => d.flush(),
            ValueDecoder::Raw(b) => RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, true)])),
                vec![Arc::new(b.finish()) as ArrayRef],
            )
            .map(Some),
        };
        // Type errors surface only when the buffered records are converted,
        // so they are reported with the range that holds the culprit.
        let values = decoded.map_err(|e| {
            let at = first.unwrap_or(RecordPosition {
                partition: -1,
                offset: -1,
            });
            let to = last.map_or(at.offset, |l| l.offset);
            self.malformed(
                at,
                format!("{e} (a record in offsets {}..={to})", at.offset),
            )
        })?;
        let decoded_rows = match (&values, &self.values) {
            (Some(v), _) => v.num_rows(),
            (None, ValueDecoder::Skip) => rows,
            (None, _) => 0,
        };
        if decoded_rows != rows {
            let at = first.unwrap_or(RecordPosition {
                partition: -1,
                offset: -1,
            });
            return Err(self.malformed(
                at,
                format!("decoded {decoded_rows} rows from {rows} records"),
            ));
        }
        let keys: ArrayRef = Arc::new(self.keys.finish());
        let partitions: ArrayRef = Arc::new(self.partitions.finish());
        let offsets: ArrayRef = Arc::new(self.offsets.finish());
        let timestamps: ArrayRef = Arc::new(self.timestamps.finish());
        let corrupt: ArrayRef = Arc::new(self.corrupt.finish());
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|c| match c {
                OutputColumn::Value(i) => {
                    Arc::clone(values.as_ref().expect("values decoded").column(*i))
                }
                OutputColumn::Key => Arc::clone(&keys),
                OutputColumn::Partition => Arc::clone(&partitions),
                OutputColumn::Offset => Arc::clone(&offsets),
                OutputColumn::Timestamp => Arc::clone(&timestamps),
                OutputColumn::Corrupt => Arc::clone(&corrupt),
            })
            .collect();
        let options =
            datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(Some(RecordBatch::try_new_with_options(
            Arc::clone(&self.output_schema),
            arrays,
            &options,
        )?))
    }
}

/// A record that did not decode, for counting and the dead-letter topic.
#[derive(Debug, Clone)]
pub(crate) struct BadRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// A record kept until its batch decodes, so a bad one can be set apart.
struct PendingRecord {
    at: RecordPosition,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp_ms: Option<i64>,
    /// Set for a bad record kept as a row of NULLs (permissive).
    corrupt: Option<String>,
}

/// Decodes records with the table's `on_error` policy: `fail` stops at the
/// first bad record, naming it; `drop` leaves bad records out; `permissive`
/// keeps them as rows of NULLs with the raw value in `_corrupt`. Outside
/// `fail`, the batch's records are kept until it decodes: when it does not,
/// each record is tried alone to find the bad ones, so the cost falls on
/// batches that hold one.
pub(crate) struct RecordDecoder {
    strict: StrictDecoder,
    policy: OnError,
    pending: Vec<PendingRecord>,
    bad: Vec<BadRecord>,
    spec: KafkaSourceSpec,
    projection: Vec<usize>,
    output_schema: SchemaRef,
    batch_size: usize,
}

impl RecordDecoder {
    pub fn new(
        spec: &KafkaSourceSpec,
        projection: &[usize],
        output_schema: SchemaRef,
        batch_size: usize,
    ) -> Result<Self> {
        Ok(RecordDecoder {
            strict: StrictDecoder::new(spec, projection, Arc::clone(&output_schema), batch_size)?,
            policy: spec.on_error,
            pending: Vec::new(),
            bad: Vec::new(),
            spec: spec.clone(),
            projection: projection.to_vec(),
            output_schema,
            batch_size,
        })
    }

    fn fresh(&self) -> Result<StrictDecoder> {
        StrictDecoder::new(
            &self.spec,
            &self.projection,
            Arc::clone(&self.output_schema),
            self.batch_size,
        )
    }

    pub fn rows(&self) -> usize {
        self.strict.rows()
    }

    /// What the caller must pass besides the value. Outside `fail` a bad
    /// record's key goes to the dead-letter topic, so it is always wanted.
    pub fn wants(&self) -> Wanted {
        Wanted {
            key: self.strict.wanted.key || self.policy != OnError::Fail,
            ..self.strict.wanted
        }
    }

    /// Records set apart since the last call.
    pub fn take_bad(&mut self) -> Vec<BadRecord> {
        std::mem::take(&mut self.bad)
    }

    pub fn push(
        &mut self,
        at: RecordPosition,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: Option<i64>,
    ) -> Result<()> {
        if self.policy == OnError::Fail {
            return self.strict.push(at, key, value, timestamp_ms, None);
        }
        let record = PendingRecord {
            at,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            timestamp_ms,
            corrupt: None,
        };
        match self.strict.push(at, key, value, timestamp_ms, None) {
            Ok(()) => {
                self.pending.push(record);
                Ok(())
            }
            // The value decoder may hold part of the bad record: start it
            // again with the good ones.
            Err(_) => {
                let good = std::mem::take(&mut self.pending);
                self.strict = self.fresh()?;
                for r in good {
                    self.replay(r)?;
                }
                self.reject(record)
            }
        }
    }

    pub fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.policy == OnError::Fail {
            return self.strict.flush();
        }
        match self.strict.flush() {
            Ok(batch) => {
                self.pending.clear();
                Ok(batch)
            }
            Err(_) => {
                // A value converted badly (a type error): try each alone.
                let records = std::mem::take(&mut self.pending);
                self.strict = self.fresh()?;
                for r in records {
                    if r.corrupt.is_some() || self.decodes_alone(&r)? {
                        self.replay(r)?;
                    } else {
                        self.reject(r)?;
                    }
                }
                let batch = self.strict.flush();
                self.pending.clear();
                batch
            }
        }
    }

    fn decodes_alone(&self, r: &PendingRecord) -> Result<bool> {
        let mut probe = self.fresh()?;
        Ok(probe
            .push(
                r.at,
                r.key.as_deref(),
                r.value.as_deref(),
                r.timestamp_ms,
                None,
            )
            .and_then(|_| probe.flush())
            .is_ok())
    }

    /// Pushes a record known to decode (or its stand-in, if it is corrupt).
    fn replay(&mut self, r: PendingRecord) -> Result<()> {
        let substitute = self.substitute();
        let value = match &r.corrupt {
            Some(_) => Some(substitute.as_slice()),
            None => r.value.as_deref(),
        };
        self.strict.push(
            r.at,
            r.key.as_deref(),
            value,
            r.timestamp_ms,
            r.corrupt.as_deref(),
        )?;
        self.pending.push(r);
        Ok(())
    }

    fn reject(&mut self, mut r: PendingRecord) -> Result<()> {
        self.bad.push(BadRecord {
            key: r.key.clone(),
            value: r.value.clone(),
        });
        if self.policy == OnError::Permissive {
            r.corrupt =
                Some(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
            self.replay(r)?;
        }
        Ok(())
    }

    /// A value that decodes to all NULLs in the table's format.
    fn substitute(&self) -> Vec<u8> {
        match self.spec.format {
            RecordFormat::Csv => ","
                .repeat(self.spec.value_column_count().saturating_sub(1))
                .into_bytes(),
            RecordFormat::Json | RecordFormat::Raw => b"{}".to_vec(),
        }
    }
}

/// Decodes `values` as records of a table of `spec`, flushing every 64;
/// errors end it (they are what bad input gets), panics are bugs.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_for_fuzzing<'a>(
    spec: &KafkaSourceSpec,
    values: impl Iterator<Item = &'a [u8]>,
) {
    let projection: Vec<usize> = (0..spec.schema.fields().len()).collect();
    let Ok(schema) = spec.schema.project(&projection) else {
        return;
    };
    let Ok(mut decoder) = RecordDecoder::new(spec, &projection, Arc::new(schema), 64) else {
        return;
    };
    for (offset, value) in values.enumerate() {
        let at = RecordPosition {
            partition: 0,
            offset: offset as i64,
        };
        if decoder
            .push(at, Some(b"key"), Some(value), Some(0))
            .is_err()
        {
            return;
        }
        if decoder.rows() >= 64 && decoder.flush().is_err() {
            return;
        }
    }
    let _ = decoder.flush();
    let _ = decoder.take_bad();
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{DdlStatement, LogicalPlan};

    use super::*;
    use crate::job::{PlanEnv, session, statement_plan};
    use crate::kafka::KafkaTableFactory;
    use crate::workspace::Workspace;

    async fn csv_table(on_error: &str) -> KafkaSourceSpec {
        let dir = tempfile::tempdir().unwrap();
        let env = PlanEnv::new(Workspace::open(dir.path()).unwrap(), "127.0.0.1:9");
        let ddl = format!(
            "CREATE EXTERNAL TABLE t (id BIGINT, customer VARCHAR) STORED AS KAFKA \
             LOCATION 'sales' OPTIONS ('format' 'csv', 'on_error' '{on_error}')"
        );
        let plan = statement_plan(&session(&env), &ddl).await.unwrap();
        let LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) = plan else {
            panic!("no CREATE EXTERNAL TABLE");
        };
        let factory = KafkaTableFactory {
            default_bootstrap_servers: "127.0.0.1:9".into(),
        };
        factory.source_spec(&create).unwrap()
    }

    fn decoder(spec: &KafkaSourceSpec) -> RecordDecoder {
        let projection: Vec<usize> = (0..spec.schema.fields().len()).collect();
        let schema = Arc::new(spec.schema.project(&projection).unwrap());
        RecordDecoder::new(spec, &projection, schema, 64).unwrap()
    }

    fn at(offset: i64) -> RecordPosition {
        RecordPosition {
            partition: 0,
            offset,
        }
    }

    // Found by fuzz/decode_records: a value with an open quote left the CSV
    // decoder holding a partial record, and the batch's flush panicked.
    #[tokio::test]
    async fn a_csv_value_with_an_open_quote_is_a_bad_record() {
        let mut strict = decoder(&csv_table("fail").await);
        let refused = strict
            .push(at(7), None, Some(b"1,\"alice"), None)
            .unwrap_err();
        assert!(
            refused.to_string().contains("quote is not closed"),
            "{refused}"
        );

        let mut dropping = decoder(&csv_table("drop").await);
        dropping.push(at(0), None, Some(b"1,alice"), None).unwrap();
        dropping.push(at(1), None, Some(b"2,\"bob"), None).unwrap();
        dropping.push(at(2), None, Some(b"3,carol"), None).unwrap();
        let batch = dropping.flush().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(dropping.take_bad().len(), 1);
    }
}
