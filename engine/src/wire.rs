//! The engine's types as the wire's messages (`spate.proto`) and back: the
//! tasks the master launches, what they report, their sinks, their errors,
//! and Spate's operators inside plan bytes. Decoding says what it could not
//! read instead of guessing.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use spate_proto as pb;

use crate::OffsetRange;
use crate::error::{EngineError, ErrorKind, Result};
use crate::files::{FileFormatKind, FileFormatSpec};
use crate::first_rows::{FirstRowsSpec, OrderKey};
use crate::join::{Expiry, StreamJoinSpec};
use crate::kafka::{
    KafkaSinkSpec, KafkaSourceSpec, OnError, RecordFormat, StartingOffsets, WatermarkSpec,
};
use crate::nexmark::{NexmarkSource, NexmarkTable};
use crate::postgres::PostgresSinkSpec;
use crate::redis::RedisSinkSpec;
use crate::shuffle::ShuffleReaderSpec;
use crate::sink::{SinkPart, SinkSpec};
use crate::stateful::{EventWindow, OutputMode, StatefulSpec};
use crate::task::{StateMetrics, TaskOutcome, TaskSpec};

fn undecodable(what: &str) -> EngineError {
    EngineError::internal(format!(
        "undecodable {what} on the wire; are master and worker the same Spate version?"
    ))
}

// ----------------------------------------------------------------- errors --

impl From<ErrorKind> for pb::ErrorKind {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Plan => pb::ErrorKind::Plan,
            ErrorKind::Execution => pb::ErrorKind::Execution,
            ErrorKind::Internal => pb::ErrorKind::Internal,
            ErrorKind::NotFound => pb::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => pb::ErrorKind::AlreadyExists,
        }
    }
}

/// The kind an error on the wire says it is (an unknown one: internal).
pub fn error_kind(kind: i32) -> ErrorKind {
    match pb::ErrorKind::try_from(kind) {
        Ok(pb::ErrorKind::Plan) => ErrorKind::Plan,
        Ok(pb::ErrorKind::Execution) => ErrorKind::Execution,
        Ok(pb::ErrorKind::NotFound) => ErrorKind::NotFound,
        Ok(pb::ErrorKind::AlreadyExists) => ErrorKind::AlreadyExists,
        _ => ErrorKind::Internal,
    }
}

/// A task's failure as the worker reports it.
pub fn failure(kind: ErrorKind, message: String) -> pb::Failure {
    pb::Failure {
        kind: pb::ErrorKind::from(kind) as i32,
        message,
        retryable: kind.retryable(),
        count_to_failures: true,
    }
}

// ------------------------------------------------------------------ sinks --

fn file_format(format: FileFormatKind) -> pb::FileFormat {
    match format {
        FileFormatKind::Parquet => pb::FileFormat::Parquet,
        FileFormatKind::Json => pb::FileFormat::Json,
        FileFormatKind::Csv => pb::FileFormat::Csv,
    }
}

impl From<&SinkSpec> for pb::Sink {
    fn from(spec: &SinkSpec) -> Self {
        use pb::sink::Kind;
        let kind = match spec {
            SinkSpec::Files { table, dir, format } => Kind::Files(pb::FileSink {
                table: table.clone(),
                dir: dir.clone(),
                format: file_format(format.kind) as i32,
                options: format.options.clone().into_iter().collect(),
            }),
            SinkSpec::Kafka(k) => Kind::Kafka(pb::KafkaSink {
                topic: k.topic.clone(),
                bootstrap_servers: k.bootstrap_servers.clone(),
                client_options: k.client_options.clone().into_iter().collect(),
                at_least_once: !k.exactly_once,
                run: k.run.clone(),
            }),
            SinkSpec::Results { dir } => Kind::Results(pb::ResultsSink { dir: dir.clone() }),
            SinkSpec::Console { max_rows } => Kind::Console(pb::ConsoleSink {
                max_rows: *max_rows,
            }),
            SinkSpec::Redis(r) => Kind::Redis(pb::RedisSink {
                url: r.url.clone(),
                table: r.table.clone(),
                key_columns: r.key_columns.clone(),
                key_prefix: r.key_prefix.clone(),
            }),
            SinkSpec::Postgres(p) => Kind::Postgres(pb::PostgresSink {
                url: p.url.clone(),
                sink: p.sink.clone(),
                table: p.table.clone(),
                primary_key: p.primary_key.clone(),
            }),
        };
        pb::Sink { kind: Some(kind) }
    }
}

impl TryFrom<pb::Sink> for SinkSpec {
    type Error = EngineError;

    fn try_from(sink: pb::Sink) -> Result<Self> {
        use pb::sink::Kind;
        Ok(match sink.kind.ok_or_else(|| undecodable("sink"))? {
            Kind::Files(f) => SinkSpec::Files {
                format: FileFormatSpec {
                    kind: match pb::FileFormat::try_from(f.format) {
                        Ok(pb::FileFormat::Parquet) => FileFormatKind::Parquet,
                        Ok(pb::FileFormat::Json) => FileFormatKind::Json,
                        Ok(pb::FileFormat::Csv) => FileFormatKind::Csv,
                        _ => return Err(undecodable("file format")),
                    },
                    options: f.options.into_iter().collect(),
                },
                table: f.table,
                dir: f.dir,
            },
            Kind::Kafka(k) => SinkSpec::Kafka(KafkaSinkSpec {
                topic: k.topic,
                bootstrap_servers: k.bootstrap_servers,
                client_options: k.client_options.into_iter().collect(),
                exactly_once: !k.at_least_once,
                run: k.run,
            }),
            Kind::Results(r) => SinkSpec::Results { dir: r.dir },
            Kind::Console(c) => SinkSpec::Console {
                max_rows: c.max_rows,
            },
            Kind::Redis(r) => SinkSpec::Redis(RedisSinkSpec {
                url: r.url,
                table: r.table,
                key_columns: r.key_columns,
                key_prefix: r.key_prefix,
            }),
            Kind::Postgres(p) => SinkSpec::Postgres(PostgresSinkSpec {
                url: p.url,
                sink: p.sink,
                table: p.table,
                primary_key: p.primary_key,
            }),
        })
    }
}

impl From<&SinkPart> for pb::SinkPart {
    fn from(part: &SinkPart) -> Self {
        pb::SinkPart {
            files: part.files.clone(),
            rows: part.rows,
        }
    }
}

impl From<pb::SinkPart> for SinkPart {
    fn from(part: pb::SinkPart) -> Self {
        SinkPart {
            files: part.files,
            rows: part.rows,
        }
    }
}

// ------------------------------------------------------------------ tasks --

/// The message that launches `spec` as task `task_id`.
pub fn launch_task(task_id: &str, spec: &TaskSpec) -> pb::LaunchTask {
    pb::LaunchTask {
        task_id: task_id.to_string(),
        job_id: spec.job_id.clone(),
        batch_id: spec.batch_id,
        attempt_id: spec.attempt_id.clone(),
        plan: spec.plan.clone(),
        ranges: spec
            .ranges
            .iter()
            .map(|r| pb::OffsetRange {
                topic: r.topic.clone(),
                partition: r.partition,
                start_offset: r.start,
                end_offset: r.end,
            })
            .collect(),
        task_index: spec.task_index,
        stage_id: spec.stage_id,
        partition: spec.partition,
        shuffle_inputs: spec
            .shuffle_inputs
            .iter()
            .map(|(stage, stems)| pb::ShuffleInput {
                stage: *stage,
                stems: stems.clone(),
            })
            .collect(),
        watermark_ms: spec.watermark_ms,
        sink: Some(pb::Sink::from(&spec.sink)),
    }
}

/// The task a LaunchTask asks for.
pub fn task_spec(launch: pb::LaunchTask) -> Result<TaskSpec> {
    let sink = launch
        .sink
        .ok_or_else(|| undecodable("task without a sink"))?;
    Ok(TaskSpec {
        job_id: launch.job_id,
        batch_id: launch.batch_id,
        attempt_id: launch.attempt_id,
        task_index: launch.task_index,
        stage_id: launch.stage_id,
        partition: launch.partition,
        shuffle_inputs: launch
            .shuffle_inputs
            .into_iter()
            .map(|input| (input.stage, input.stems))
            .collect(),
        watermark_ms: launch.watermark_ms,
        plan: launch.plan,
        ranges: launch
            .ranges
            .into_iter()
            .map(|r| OffsetRange {
                topic: r.topic,
                partition: r.partition,
                start: r.start_offset,
                end: r.end_offset,
            })
            .collect(),
        sink: SinkSpec::try_from(sink)?,
    })
}

impl From<&TaskOutcome> for pb::TaskResult {
    fn from(outcome: &TaskOutcome) -> Self {
        pb::TaskResult {
            input_rows: outcome.input_rows,
            output_rows: outcome.output_rows,
            duration_ms: outcome.duration_ms,
            max_event_time_ms: outcome.max_event_time_ms,
            late_rows: outcome.late_rows,
            state: Some(pb::StateStats {
                rows: outcome.state.rows,
                bytes: outcome.state.bytes,
                rows_updated: outcome.state.rows_updated,
                rows_removed: outcome.state.rows_removed,
                bytes_written: outcome.state.bytes_written,
            }),
            malformed_rows: outcome.malformed_rows,
            sink_part: outcome.sink_part.as_ref().map(pb::SinkPart::from),
        }
    }
}

impl From<pb::TaskResult> for TaskOutcome {
    fn from(r: pb::TaskResult) -> Self {
        TaskOutcome {
            input_rows: r.input_rows,
            output_rows: r.output_rows,
            sink_part: r.sink_part.map(SinkPart::from),
            duration_ms: r.duration_ms,
            max_event_time_ms: r.max_event_time_ms,
            late_rows: r.late_rows,
            malformed_rows: r.malformed_rows,
            state: r.state.map_or_else(Default::default, |s| StateMetrics {
                rows: s.rows,
                bytes: s.bytes,
                rows_updated: s.rows_updated,
                rows_removed: s.rows_removed,
                bytes_written: s.bytes_written,
            }),
        }
    }
}

// -------------------------------------------------------------- operators --

/// A schema as an Arrow IPC schema message.
pub fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

pub fn schema_from_bytes(bytes: &[u8]) -> Result<Schema> {
    check_schema_message(bytes)?;
    // arrow-ipc panics on some schemas it cannot read instead of erring (an
    // Int of bit width 255, found by fuzz/decode_plan): bytes off the wire
    // get an error either way.
    let read = std::panic::catch_unwind(|| {
        StreamReader::try_new(Cursor::new(bytes), None).map(|reader| reader.schema())
    });
    match read {
        Ok(schema) => Ok(Arc::unwrap_or_clone(schema?)),
        Err(_) => Err(EngineError::Internal(
            "the message holds an Arrow schema with a type Arrow does not know".to_string(),
        )),
    }
}

/// arrow-ipc allocates the body length a message declares before reading
/// it, so a corrupt length would have a few bytes ask for gigabytes (found
/// by fuzz/decode_plan): the schema message's lengths must fit the bytes.
fn check_schema_message(bytes: &[u8]) -> Result<()> {
    let bad = |why: &str| EngineError::Internal(format!("an Arrow schema message {why}"));
    let word = |at: usize| -> Option<i32> {
        Some(i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    // An optional continuation marker, then the metadata's length.
    let (start, length) = match word(0) {
        Some(-1) => (8, word(4)),
        other => (4, other),
    };
    let length = length
        .and_then(|l| usize::try_from(l).ok())
        .ok_or_else(|| bad("is cut short"))?;
    let metadata = bytes
        .get(start..start + length)
        .ok_or_else(|| bad("claims more metadata than it holds"))?;
    let message = datafusion::arrow::ipc::root_as_message(metadata)
        .map_err(|e| bad(&format!("does not parse: {e}")))?;
    let rest = bytes.len() - start - length;
    if usize::try_from(message.bodyLength()).map_or(true, |body| body > rest) {
        return Err(bad("claims a longer body than it holds"));
    }
    Ok(())
}

impl TryFrom<&KafkaSourceSpec> for pb::KafkaSource {
    type Error = EngineError;

    fn try_from(s: &KafkaSourceSpec) -> Result<Self> {
        use pb::starting_offsets::Start;
        Ok(pb::KafkaSource {
            table: s.table.clone(),
            topic: s.topic.clone(),
            bootstrap_servers: s.bootstrap_servers.clone(),
            format: match s.format {
                RecordFormat::Json => pb::RecordFormat::Json,
                RecordFormat::Csv => pb::RecordFormat::Csv,
                RecordFormat::Raw => pb::RecordFormat::Raw,
            } as i32,
            client_options: s.client_options.clone().into_iter().collect(),
            arrow_schema: schema_bytes(&s.schema)?,
            starting_offsets: Some(pb::StartingOffsets {
                start: Some(match &s.starting_offsets {
                    StartingOffsets::Earliest => Start::Earliest(true),
                    StartingOffsets::Latest => Start::Latest(true),
                    StartingOffsets::Specific(map) => Start::Specific(pb::PartitionOffsetMap {
                        offsets: map.clone().into_iter().collect(),
                    }),
                }),
            }),
            max_offsets_per_trigger: s.max_offsets_per_trigger,
            watermark: s.watermark.as_ref().map(|w| pb::Watermark {
                column: w.column.clone(),
                delay_ms: w.delay_ms,
            }),
            fail_on_data_loss: s.fail_on_data_loss,
            on_error: match s.on_error {
                OnError::Fail => pb::OnError::Fail,
                OnError::Drop => pb::OnError::Drop,
                OnError::Permissive => pb::OnError::Permissive,
            } as i32,
            dead_letter_topic: s.dead_letter_topic.clone(),
            at_least_once: !s.exactly_once,
            nexmark: s.generator.as_ref().map(|g| pb::NexmarkSource {
                stream: g.stream.name().to_string(),
                events: g.events,
                partitions: g.partitions,
                events_per_second: g.events_per_second,
                base_time_ms: g.base_time_ms,
                out_of_order_group: g.out_of_order_group,
                seed: g.seed,
                make_other_streams: g.make_other_streams,
            }),
            primary_key: s.primary_key.clone(),
        })
    }
}

impl TryFrom<pb::KafkaSource> for KafkaSourceSpec {
    type Error = EngineError;

    fn try_from(s: pb::KafkaSource) -> Result<Self> {
        use pb::starting_offsets::Start;
        let starting_offsets = match s.starting_offsets.and_then(|o| o.start) {
            Some(Start::Earliest(_)) | None => StartingOffsets::Earliest,
            Some(Start::Latest(_)) => StartingOffsets::Latest,
            Some(Start::Specific(map)) => {
                StartingOffsets::Specific(map.offsets.into_iter().collect::<BTreeMap<_, _>>())
            }
        };
        Ok(KafkaSourceSpec {
            table: s.table,
            topic: s.topic,
            bootstrap_servers: s.bootstrap_servers,
            format: match pb::RecordFormat::try_from(s.format) {
                Ok(pb::RecordFormat::Json) => RecordFormat::Json,
                Ok(pb::RecordFormat::Csv) => RecordFormat::Csv,
                Ok(pb::RecordFormat::Raw) => RecordFormat::Raw,
                _ => return Err(undecodable("record format")),
            },
            client_options: s.client_options.into_iter().collect(),
            schema: schema_from_bytes(&s.arrow_schema)?,
            starting_offsets,
            max_offsets_per_trigger: s.max_offsets_per_trigger,
            watermark: s.watermark.map(|w| WatermarkSpec {
                column: w.column,
                delay_ms: w.delay_ms,
            }),
            fail_on_data_loss: s.fail_on_data_loss,
            on_error: match pb::OnError::try_from(s.on_error) {
                Ok(pb::OnError::Fail) => OnError::Fail,
                Ok(pb::OnError::Drop) => OnError::Drop,
                Ok(pb::OnError::Permissive) => OnError::Permissive,
                _ => return Err(undecodable("on_error")),
            },
            dead_letter_topic: s.dead_letter_topic,
            exactly_once: !s.at_least_once,
            generator: s
                .nexmark
                .map(|g| {
                    Ok::<_, EngineError>(NexmarkSource {
                        stream: NexmarkTable::ALL
                            .into_iter()
                            .find(|t| t.name() == g.stream)
                            .ok_or_else(|| undecodable("Nexmark stream"))?,
                        events: g.events,
                        partitions: g.partitions,
                        events_per_second: g.events_per_second,
                        base_time_ms: g.base_time_ms,
                        out_of_order_group: g.out_of_order_group,
                        seed: g.seed,
                        make_other_streams: g.make_other_streams,
                    })
                })
                .transpose()?,
            primary_key: s.primary_key,
        })
    }
}

impl TryFrom<&ShuffleReaderSpec> for pb::ShuffleReader {
    type Error = EngineError;

    fn try_from(spec: &ShuffleReaderSpec) -> Result<Self> {
        Ok(pb::ShuffleReader {
            stage: spec.stage,
            arrow_schema: schema_bytes(&spec.schema)?,
            partitions: spec.partitions as u32,
            gather: spec.gather,
        })
    }
}

impl TryFrom<pb::ShuffleReader> for ShuffleReaderSpec {
    type Error = EngineError;

    fn try_from(reader: pb::ShuffleReader) -> Result<Self> {
        Ok(ShuffleReaderSpec {
            stage: reader.stage,
            schema: schema_from_bytes(&reader.arrow_schema)?,
            partitions: reader.partitions as usize,
            gather: reader.gather,
        })
    }
}

impl From<OutputMode> for pb::OutputMode {
    fn from(mode: OutputMode) -> Self {
        match mode {
            OutputMode::Append => pb::OutputMode::Append,
            OutputMode::Update => pb::OutputMode::Update,
            OutputMode::Complete => pb::OutputMode::Complete,
        }
    }
}

impl From<&StatefulSpec> for pb::StatefulAggregate {
    fn from(spec: &StatefulSpec) -> Self {
        use pb::event_window::Kind;
        pb::StatefulAggregate {
            operator: spec.operator,
            mode: pb::OutputMode::from(spec.mode) as i32,
            window: spec.window.as_ref().map(|w| match w {
                EventWindow::Struct { column } => pb::EventWindow {
                    column: *column as u32,
                    kind: Some(Kind::StructWindow(true)),
                },
                EventWindow::Bin { column, width_ms } => pb::EventWindow {
                    column: *column as u32,
                    kind: Some(Kind::BinWidthMs(*width_ms)),
                },
                EventWindow::Session { column } => pb::EventWindow {
                    column: *column as u32,
                    kind: Some(Kind::Session(true)),
                },
                EventWindow::EventTime { column } => pb::EventWindow {
                    column: *column as u32,
                    kind: Some(Kind::EventTime(true)),
                },
                EventWindow::KeyClose { column, after_ms } => pb::EventWindow {
                    column: *column as u32,
                    kind: Some(Kind::KeyCloseAfterMs(*after_ms)),
                },
            }),
        }
    }
}

impl TryFrom<pb::StatefulAggregate> for StatefulSpec {
    type Error = EngineError;

    fn try_from(s: pb::StatefulAggregate) -> Result<Self> {
        use pb::event_window::Kind;
        let mode = match pb::OutputMode::try_from(s.mode) {
            Ok(pb::OutputMode::Append) => OutputMode::Append,
            Ok(pb::OutputMode::Update) => OutputMode::Update,
            Ok(pb::OutputMode::Complete) => OutputMode::Complete,
            _ => return Err(undecodable("output mode")),
        };
        let window = match s.window {
            None => None,
            Some(w) => {
                let column = w.column as usize;
                Some(match w.kind.ok_or_else(|| undecodable("event window"))? {
                    Kind::StructWindow(_) => EventWindow::Struct { column },
                    Kind::BinWidthMs(width_ms) => EventWindow::Bin { column, width_ms },
                    Kind::Session(_) => EventWindow::Session { column },
                    Kind::EventTime(_) => EventWindow::EventTime { column },
                    Kind::KeyCloseAfterMs(after_ms) => EventWindow::KeyClose { column, after_ms },
                })
            }
        };
        Ok(StatefulSpec {
            operator: s.operator,
            mode,
            window,
        })
    }
}

impl From<Expiry> for pb::JoinExpiry {
    fn from(e: Expiry) -> Self {
        pb::JoinExpiry {
            column: e.column as u32,
            after_ms: e.after_ms,
        }
    }
}

impl From<pb::JoinExpiry> for Expiry {
    fn from(e: pb::JoinExpiry) -> Self {
        Expiry {
            column: e.column as usize,
            after_ms: e.after_ms,
        }
    }
}

impl From<&StreamJoinSpec> for pb::StreamJoin {
    fn from(spec: &StreamJoinSpec) -> Self {
        pb::StreamJoin {
            operator: spec.operator,
            left_expiry: spec.left.map(Into::into),
            right_expiry: spec.right.map(Into::into),
        }
    }
}

impl From<pb::StreamJoin> for StreamJoinSpec {
    fn from(s: pb::StreamJoin) -> Self {
        StreamJoinSpec {
            operator: s.operator,
            left: s.left_expiry.map(Into::into),
            right: s.right_expiry.map(Into::into),
        }
    }
}

impl From<&FirstRowsSpec> for pb::FirstRows {
    fn from(spec: &FirstRowsSpec) -> Self {
        pb::FirstRows {
            operator: spec.operator,
            keys: spec.keys.iter().map(|k| *k as u32).collect(),
            time: spec.close.column as u32,
            order: spec.order.iter().map(|o| (*o).into()).collect(),
            close: Some(spec.close.into()),
            limit: spec.limit,
            number: spec.number.clone(),
        }
    }
}

impl From<pb::OrderKey> for OrderKey {
    fn from(o: pb::OrderKey) -> Self {
        OrderKey {
            column: o.column as usize,
            descending: o.descending,
            nulls_first: o.nulls_first,
        }
    }
}

impl From<OrderKey> for pb::OrderKey {
    fn from(o: OrderKey) -> Self {
        pb::OrderKey {
            column: o.column as u32,
            descending: o.descending,
            nulls_first: o.nulls_first,
        }
    }
}

impl From<pb::FirstRows> for FirstRowsSpec {
    fn from(f: pb::FirstRows) -> Self {
        // A plan stored by an earlier version (a resumed job's) has only
        // the event time: its rows are ordered by it, and final after it.
        let time = f.time as usize;
        let mut order: Vec<OrderKey> = f.order.into_iter().map(Into::into).collect();
        if order.is_empty() {
            order.push(OrderKey {
                column: time,
                descending: false,
                nulls_first: false,
            });
        }
        let close = f.close.map_or(
            Expiry {
                column: time,
                after_ms: 1,
            },
            Expiry::from,
        );
        FirstRowsSpec {
            operator: f.operator,
            keys: f.keys.into_iter().map(|k| k as usize).collect(),
            order,
            close,
            limit: f.limit,
            number: f.number,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn first_rows_cross_the_wire_and_old_plans_still_decode() {
        let spec = FirstRowsSpec {
            operator: 2,
            keys: vec![0],
            order: vec![
                OrderKey {
                    column: 3,
                    descending: true,
                    nulls_first: true,
                },
                OrderKey {
                    column: 1,
                    descending: false,
                    nulls_first: false,
                },
            ],
            close: Expiry {
                column: 2,
                after_ms: 1,
            },
            limit: 1,
            number: "rownum".into(),
        };
        assert_eq!(FirstRowsSpec::from(pb::FirstRows::from(&spec)), spec);
        // An earlier version's plan: ROW_NUMBER() OVER (... ORDER BY ts).
        let old = pb::FirstRows {
            operator: 1,
            keys: vec![0],
            time: 4,
            limit: 3,
            number: "n".into(),
            ..Default::default()
        };
        let decoded = FirstRowsSpec::from(old);
        assert_eq!(
            (decoded.order, decoded.close),
            (
                vec![OrderKey {
                    column: 4,
                    descending: false,
                    nulls_first: false
                }],
                Expiry {
                    column: 4,
                    after_ms: 1
                }
            )
        );
    }

    #[test]
    fn every_event_window_crosses_the_wire() {
        for window in [
            EventWindow::Struct { column: 1 },
            EventWindow::Bin {
                column: 0,
                width_ms: 60_000,
            },
            EventWindow::Session { column: 2 },
            EventWindow::EventTime { column: 3 },
            EventWindow::KeyClose {
                column: 2,
                after_ms: 1,
            },
        ] {
            let spec = StatefulSpec {
                operator: 1,
                mode: OutputMode::Append,
                window: Some(window.clone()),
            };
            let back = StatefulSpec::try_from(pb::StatefulAggregate::from(&spec)).unwrap();
            assert_eq!(back.window, Some(window));
        }
    }

    // fuzz/decode_plan found arrow-ipc panicking on an Int of bit width 255.
    #[test]
    fn a_schema_with_any_byte_changed_is_read_or_refused_without_a_panic() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("customer", DataType::Utf8, true),
        ]);
        let bytes = schema_bytes(&schema).unwrap();
        assert_eq!(schema_from_bytes(&bytes).unwrap(), schema);
        let mut refused = 0;
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] = 0xFF;
            refused += usize::from(schema_from_bytes(&changed).is_err());
        }
        assert!(refused > 0);
    }

    #[test]
    fn a_message_claiming_a_huge_body_is_refused_before_allocating_it() {
        use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
        use datafusion::arrow::ipc::root_as_message;

        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let batch = RecordBatch::try_from_iter([("id", ids)]).unwrap();
        let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let bytes = writer.into_inner().unwrap();
        let word = |b: &[u8], at: usize| i32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        // The batch's message, after the schema's, declares a body: make it 1 TiB.
        let rest = &bytes[8 + word(&bytes, 4) as usize..];
        let length = word(rest, 4) as usize;
        let body = root_as_message(&rest[8..8 + length]).unwrap().bodyLength();
        let at = 8 + rest[8..8 + length]
            .windows(8)
            .position(|w| w == body.to_le_bytes())
            .unwrap();
        let mut claimed = rest.to_vec();
        claimed[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
        let message = root_as_message(&claimed[8..8 + length]).unwrap();
        assert_eq!(message.bodyLength(), 1 << 40);
        let refused = schema_from_bytes(&claimed).unwrap_err();
        assert!(refused.to_string().contains("longer body"), "{refused}");
        assert!(schema_from_bytes(&bytes[..6]).is_err());
        assert_eq!(schema_from_bytes(&bytes).unwrap(), *batch.schema());
    }

    #[test]
    fn sources_and_tasks_travel_whole() {
        let source = KafkaSourceSpec {
            table: "sales".into(),
            topic: "sales".into(),
            bootstrap_servers: "k:9092".into(),
            format: RecordFormat::Csv,
            client_options: BTreeMap::from([("security.protocol".into(), "ssl".into())]),
            schema: Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("ts", DataType::Utf8, true)
                    .with_metadata(std::collections::HashMap::from([("k".into(), "v".into())])),
            ]),
            starting_offsets: StartingOffsets::Specific(BTreeMap::from([(0, 42), (1, -2)])),
            max_offsets_per_trigger: Some(10),
            watermark: Some(WatermarkSpec {
                column: "ts".into(),
                delay_ms: 5000,
            }),
            fail_on_data_loss: false,
            on_error: OnError::Permissive,
            dead_letter_topic: Some("dead".into()),
            exactly_once: false,
            generator: None,
            primary_key: vec!["id".into()],
        };
        let wire = pb::KafkaSource::try_from(&source).unwrap();
        assert_eq!(KafkaSourceSpec::try_from(wire).unwrap(), source);
        let generated = KafkaSourceSpec {
            generator: Some(NexmarkSource {
                stream: NexmarkTable::Auction,
                events: 1_000_000,
                partitions: 3,
                events_per_second: 5000,
                base_time_ms: 1_700_000_000_000,
                out_of_order_group: 10,
                seed: 7,
                make_other_streams: true,
            }),
            ..source
        };
        let wire = pb::KafkaSource::try_from(&generated).unwrap();
        assert_eq!(KafkaSourceSpec::try_from(wire).unwrap(), generated);

        let task = TaskSpec {
            job_id: "j".into(),
            batch_id: 7,
            attempt_id: "a1".into(),
            stage_id: 2,
            task_index: 3,
            plan: vec![1, 2, 3],
            ranges: vec![OffsetRange {
                topic: "t".into(),
                partition: 1,
                start: 5,
                end: 9,
            }],
            partition: 4,
            shuffle_inputs: vec![(1, vec!["from-0-x".into()])],
            watermark_ms: Some(99),
            sink: SinkSpec::Files {
                table: "out".into(),
                dir: "output/x".into(),
                format: FileFormatSpec {
                    kind: FileFormatKind::Csv,
                    options: BTreeMap::from([("format.delimiter".into(), ";".into())]),
                },
            },
        };
        let back = task_spec(launch_task("id", &task)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{task:?}"));
    }
}
