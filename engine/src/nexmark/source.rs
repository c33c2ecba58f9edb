//! `CREATE EXTERNAL TABLE bid STORED AS NEXMARK LOCATION 'bid' OPTIONS
//! ('events' '10000000')`: one of the suite's streams, generated inside the
//! tasks that read it instead of fetched from Kafka, as Flink's and
//! Arroyo's Nexmark sources do.
//!
//! The table is a partitioned log like a Kafka topic, so every part of a
//! job that plans, logs, replays and checkpoints ranges works on it
//! unchanged: its spec is a `KafkaSourceSpec` whose `generator` is set,
//! the controller's offsets come from arithmetic instead of a broker, and
//! the scan makes a range's events instead of fetching them. Partition `p`
//! of `P` holds events `p, p + P, p + 2P, ...` (as `driver produce
//! --nexmark` fills a topic's partitions), and offset `j` is event `p + jP`;
//! a stream's table skips the other streams' events, so its offsets are not
//! dense, as a compacted topic's are not. Each event is made from its
//! number alone, so a re-run batch makes the same rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, NullArray, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;
use serde::{Deserialize, Serialize};

use super::{Event, FieldKind, NexmarkConfig, NexmarkGenerator, NexmarkTable};
use crate::error::{EngineError, Result};
use crate::kafka::{
    KEY_COLUMN, KafkaSourceSpec, OFFSET_COLUMN, OnError, PARTITION_COLUMN, PartitionOffsets,
    RecordFormat, StartingOffsets, TIMESTAMP_COLUMN, WatermarkSpec, declared_primary_key,
    metadata_fields, normalized_options, planned_scan,
};

/// Partitions of a NEXMARK table unless `partitions` says otherwise: a
/// task generates each.
pub const DEFAULT_PARTITIONS: i32 = 4;
/// Events of a NEXMARK table unless `events` says otherwise (Flink's
/// Nexmark source makes 100 million by default).
pub const DEFAULT_EVENTS: u64 = 100_000_000;

const KNOWN_OPTIONS: &str = "events, events_per_second (of event time), partitions, \
base_time (RFC 3339, or Unix milliseconds), out_of_order_group, seed, \
make_other_streams (true or false), watermark ('<timestamp column> - INTERVAL <n> SECONDS'), max_offsets_per_trigger";

/// Which events a NEXMARK table generates, and how they are partitioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexmarkSource {
    pub stream: NexmarkTable,
    /// Events of all three streams: the table holds its stream's share.
    pub events: u64,
    pub partitions: i32,
    pub events_per_second: u64,
    pub base_time_ms: i64,
    pub out_of_order_group: u64,
    pub seed: u64,
    /// Make the other streams' events too, and drop them, as a source of
    /// one interleaved stream does (Flink's): a benchmark's like for like.
    #[serde(default)]
    pub make_other_streams: bool,
}

impl NexmarkSource {
    /// The name the table's ranges and checkpoint carry where a Kafka
    /// table's carry its topic.
    pub fn topic(stream: NexmarkTable) -> String {
        format!("nexmark:{}", stream.name())
    }

    pub fn config(&self) -> NexmarkConfig {
        NexmarkConfig {
            base_time_ms: self.base_time_ms,
            events_per_second: self.events_per_second,
            out_of_order_group: self.out_of_order_group,
            seed: self.seed,
            ..NexmarkConfig::default()
        }
    }

    /// Every partition's offsets: all its events exist from the start.
    pub fn partition_offsets(&self) -> Vec<PartitionOffsets> {
        let partitions = self.partitions.max(1) as u64;
        (0..partitions)
            .map(|p| PartitionOffsets {
                partition: p as i32,
                low: 0,
                high: self.events.saturating_sub(p).div_ceil(partitions) as i64,
            })
            .collect()
    }

    /// The number of the event at `offset` of `partition`.
    fn event_number(&self, partition: i32, offset: i64) -> u64 {
        partition as u64 + offset as u64 * self.partitions.max(1) as u64
    }
}

/// Builds NEXMARK tables from `CREATE EXTERNAL TABLE ... STORED AS NEXMARK`.
#[derive(Debug)]
pub struct NexmarkTableFactory;

#[async_trait]
impl TableProviderFactory for NexmarkTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        Ok(Arc::new(NexmarkTableProvider {
            spec: source_spec(cmd)?,
        }))
    }
}

fn source_spec(cmd: &CreateExternalTable) -> Result<KafkaSourceSpec> {
    let table = cmd.name.to_string();
    let location = crate::files::single_location(&table, &cmd.locations)?;
    let stream = NexmarkTable::ALL
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(location.trim()))
        .ok_or_else(|| {
            EngineError::plan(format!(
                "table '{table}': LOCATION '{location}' is not a Nexmark stream; use 'person', 'auction' or 'bid'"
            ))
        })?;
    let defaults = NexmarkConfig::default();
    let mut source = NexmarkSource {
        stream,
        events: DEFAULT_EVENTS,
        partitions: DEFAULT_PARTITIONS,
        events_per_second: defaults.events_per_second,
        base_time_ms: defaults.base_time_ms,
        out_of_order_group: defaults.out_of_order_group,
        seed: defaults.seed,
        make_other_streams: false,
    };
    let mut watermark = None;
    let mut max_offsets_per_trigger = None;
    let options: BTreeMap<String, String> = normalized_options(&cmd.options);
    for (key, value) in &options {
        let number = || -> Result<u64> {
            value.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                EngineError::plan(format!(
                    "table '{table}': option '{key}' is '{value}'; use a positive whole number"
                ))
            })
        };
        match key.as_str() {
            "events" => source.events = number()?,
            "events_per_second" => source.events_per_second = number()?,
            "partitions" => {
                source.partitions = i32::try_from(number()?).map_err(|_| {
                    EngineError::plan(format!(
                        "table '{table}': option 'partitions' is '{value}'; that is more partitions than a table may have"
                    ))
                })?
            }
            "out_of_order_group" => source.out_of_order_group = number()?,
            "seed" => {
                source.seed = value.trim().parse().map_err(|_| {
                    EngineError::plan(format!(
                        "table '{table}': option 'seed' is '{value}'; use a whole number"
                    ))
                })?
            }
            "base_time" => source.base_time_ms = parse_time(&table, value)?,
            "make_other_streams" => {
                source.make_other_streams = value.trim().parse().map_err(|_| {
                    EngineError::plan(format!(
                        "table '{table}': option 'make_other_streams' is '{value}'; use 'true' or 'false'"
                    ))
                })?
            }
            "watermark" => watermark = Some(value.clone()),
            "max_offsets_per_trigger" | "maxoffsetspertrigger" => {
                max_offsets_per_trigger = Some(number()?)
            }
            other => {
                return Err(EngineError::plan(format!(
                    "table '{table}': unknown option '{other}' for STORED AS NEXMARK; known options: {KNOWN_OPTIONS}"
                )));
            }
        }
    }
    let mut fields = declared_fields(&table, stream, cmd.schema.as_arrow())?;
    // A person's and an auction's id are unique: the generator counts them.
    let has_id = fields.iter().any(|f| f.name() == "id");
    let primary_key = match declared_primary_key(cmd) {
        declared if !declared.is_empty() => declared,
        _ if has_id && stream != NexmarkTable::Bid => vec!["id".to_string()],
        _ => Vec::new(),
    };
    fields.extend(metadata_fields());
    let schema = Schema::new(fields);
    let watermark = watermark
        .map(|w| WatermarkSpec::parse(&table, &w, &schema))
        .transpose()?;
    Ok(KafkaSourceSpec {
        topic: NexmarkSource::topic(stream),
        table,
        bootstrap_servers: String::new(),
        format: RecordFormat::Json,
        client_options: BTreeMap::new(),
        schema,
        starting_offsets: StartingOffsets::Earliest,
        max_offsets_per_trigger,
        watermark,
        fail_on_data_loss: true,
        on_error: OnError::Fail,
        dead_letter_topic: None,
        exactly_once: true,
        generator: Some(source),
        primary_key,
    })
}

/// `2026-12-01T09:00:00Z`, or Unix milliseconds.
fn parse_time(table: &str, value: &str) -> Result<i64> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            EngineError::plan(format!(
                "table '{table}': option 'base_time' is '{value}' ({e}); write it as 2026-12-01T09:00:00Z or in Unix milliseconds"
            ))
        })
}

/// The suite's columns the table declares, or all of them where it
/// declares none. A declared column must be one of the stream's, of a type
/// its values can be given as.
fn declared_fields(table: &str, stream: NexmarkTable, declared: &Schema) -> Result<Vec<Field>> {
    let suite = stream.fields();
    if declared.fields().is_empty() {
        return Ok(suite
            .iter()
            .map(|(name, kind)| Field::new(*name, kind.data_type(), true))
            .collect());
    }
    // Declared metadata columns are accepted and placed with the others.
    let metadata = metadata_fields();
    let names: Vec<&str> = suite.iter().map(|(name, _)| *name).collect();
    let mut fields = Vec::new();
    for field in declared.fields() {
        if metadata.iter().any(|m| m.name() == field.name()) {
            continue;
        }
        let Some((_, kind)) = suite.iter().find(|(name, _)| name == field.name()) else {
            return Err(EngineError::plan(format!(
                "table '{table}': the Nexmark stream '{}' has no column '{}'; its columns are {} (quote the mixed-case ones, e.g. \"dateTime\")",
                stream.name(),
                field.name(),
                names.join(", ")
            )));
        };
        let fits = match kind {
            FieldKind::Int => field.data_type() == &DataType::Int64,
            FieldKind::Text => matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            FieldKind::Time => matches!(field.data_type(), DataType::Timestamp(..)),
        };
        if !fits {
            return Err(EngineError::plan(format!(
                "table '{table}': column '{}' is declared {}, but the stream's values are {}; declare it {}",
                field.name(),
                field.data_type(),
                kind.sql_type(),
                kind.sql_type()
            )));
        }
        fields.push(field.as_ref().clone().with_nullable(true));
    }
    Ok(fields)
}

impl FieldKind {
    /// The Arrow type the generator makes a column of this kind as.
    fn data_type(self) -> DataType {
        match self {
            FieldKind::Int => DataType::Int64,
            FieldKind::Text => DataType::Utf8,
            FieldKind::Time => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

/// A NEXMARK stream as a table: a source only.
#[derive(Debug)]
pub struct NexmarkTableProvider {
    pub spec: KafkaSourceSpec,
}

#[async_trait]
impl TableProvider for NexmarkTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::new(self.spec.schema.clone())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        planned_scan(&self.spec, state, projection)
    }
}

/// Where an output column's values come from.
#[derive(Debug, Clone, Copy)]
enum Column {
    /// The stream's field at this index of `NexmarkTable::fields`.
    Field(usize),
    Key,
    Partition,
    Offset,
    Timestamp,
}

/// One output column being built.
enum Builder {
    Int(Int64Builder),
    Text(StringBuilder),
    Time(TimestampMillisecondBuilder),
    Partition(Int32Builder),
    /// `_key`: generated events have none.
    Null(usize),
}

/// One value of an event's field.
enum Value<'a> {
    Int(i64),
    Text(&'a str),
}

/// Makes a stream's events at given offsets into Arrow batches of the
/// scan's columns.
pub(crate) struct EventBatches {
    source: NexmarkSource,
    generator: NexmarkGenerator,
    columns: Vec<Column>,
    builders: Vec<Builder>,
    schema: SchemaRef,
    rows: usize,
}

impl EventBatches {
    /// `projection` indexes `table_schema` (the spec's); `schema` is the
    /// projected one the batches must have.
    pub(crate) fn new(
        source: &NexmarkSource,
        table_schema: &Schema,
        projection: &[usize],
        schema: SchemaRef,
    ) -> Result<Self> {
        let suite = source.stream.fields();
        let columns = projection
            .iter()
            .map(|&index| {
                let name = table_schema.field(index).name().as_str();
                Ok(match name {
                    KEY_COLUMN => Column::Key,
                    PARTITION_COLUMN => Column::Partition,
                    OFFSET_COLUMN => Column::Offset,
                    TIMESTAMP_COLUMN => Column::Timestamp,
                    _ => Column::Field(suite.iter().position(|(n, _)| *n == name).ok_or_else(
                        || {
                            EngineError::internal(format!(
                                "the Nexmark stream '{}' has no column '{name}'",
                                source.stream.name()
                            ))
                        },
                    )?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut batches = EventBatches {
            generator: NexmarkGenerator::new(source.config()),
            source: source.clone(),
            builders: Vec::new(),
            columns,
            schema,
            rows: 0,
        };
        batches.builders = batches.new_builders();
        Ok(batches)
    }

    fn new_builders(&self) -> Vec<Builder> {
        let suite = self.source.stream.fields();
        self.columns
            .iter()
            .map(|column| match column {
                Column::Field(i) => match suite[*i].1 {
                    FieldKind::Int => Builder::Int(Int64Builder::new()),
                    FieldKind::Text => Builder::Text(StringBuilder::new()),
                    FieldKind::Time => Builder::Time(TimestampMillisecondBuilder::new()),
                },
                Column::Key => Builder::Null(0),
                Column::Partition => Builder::Partition(Int32Builder::new()),
                Column::Offset => Builder::Int(Int64Builder::new()),
                Column::Timestamp => Builder::Time(TimestampMillisecondBuilder::new()),
            })
            .collect()
    }

    /// Rows made since the last batch.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Makes the event at `offset` of `partition` if it is of this
    /// table's stream (and one of another stream only to drop it, where
    /// `make_other_streams` says so); true if it was of this one.
    pub(crate) fn push(&mut self, partition: i32, offset: i64) -> bool {
        let number = self.source.event_number(partition, offset);
        if number >= self.source.events {
            return false;
        }
        if self.generator.table_of(number) != self.source.stream {
            if self.source.make_other_streams {
                std::hint::black_box(self.generator.event(number));
            }
            return false;
        }
        let event = self.generator.event(number);
        for (column, builder) in self.columns.iter().zip(&mut self.builders) {
            match (column, builder) {
                (Column::Field(i), builder) => match (field(&event, *i), builder) {
                    (Value::Int(v), Builder::Int(b)) => b.append_value(v),
                    (Value::Int(v), Builder::Time(b)) => b.append_value(v),
                    (Value::Text(v), Builder::Text(b)) => b.append_value(v),
                    _ => unreachable!("a field's builder is made from its kind"),
                },
                (Column::Key, Builder::Null(n)) => *n += 1,
                (Column::Partition, Builder::Partition(b)) => b.append_value(partition),
                (Column::Offset, Builder::Int(b)) => b.append_value(offset),
                (Column::Timestamp, Builder::Time(b)) => b.append_value(event.date_time()),
                _ => unreachable!("a column's builder is made from it"),
            }
        }
        self.rows += 1;
        true
    }

    /// The rows made since the last batch, as one batch of the scan's columns.
    pub(crate) fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let fresh = self.new_builders();
        let builders = std::mem::replace(&mut self.builders, fresh);
        let rows = std::mem::take(&mut self.rows);
        let arrays = builders
            .into_iter()
            .zip(self.schema.fields())
            .map(|(builder, field)| {
                let array: ArrayRef = match builder {
                    Builder::Int(mut b) => Arc::new(b.finish()),
                    Builder::Text(mut b) => Arc::new(b.finish()),
                    Builder::Time(mut b) => Arc::new(b.finish()),
                    Builder::Partition(mut b) => Arc::new(b.finish()),
                    Builder::Null(n) => Arc::new(NullArray::new(n)),
                };
                if array.data_type() == field.data_type() {
                    Ok(array)
                } else {
                    Ok(cast(&array, field.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let options =
            datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(Some(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &options,
        )?))
    }
}

/// The `index`th of the event's fields, in `NexmarkTable::fields` order.
fn field(event: &Event, index: usize) -> Value<'_> {
    use Value::{Int, Text};
    match event {
        Event::Person(p) => match index {
            0 => Int(p.id),
            1 => Text(&p.name),
            2 => Text(&p.email_address),
            3 => Text(&p.credit_card),
            4 => Text(p.city),
            5 => Text(p.state),
            6 => Int(p.date_time),
            _ => Text(&p.extra),
        },
        Event::Auction(a) => match index {
            0 => Int(a.id),
            1 => Text(&a.item_name),
            2 => Text(&a.description),
            3 => Int(a.initial_bid),
            4 => Int(a.reserve),
            5 => Int(a.date_time),
            6 => Int(a.expires),
            7 => Int(a.seller),
            8 => Int(a.category),
            _ => Text(&a.extra),
        },
        Event::Bid(b) => match index {
            0 => Int(b.auction),
            1 => Int(b.bidder),
            2 => Int(b.price),
            3 => Text(&b.channel),
            4 => Text(&b.url),
            5 => Int(b.date_time),
            _ => Text(&b.extra),
        },
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampNanosecondType};
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn source(stream: NexmarkTable, events: u64, partitions: i32) -> NexmarkSource {
        NexmarkSource {
            stream,
            events,
            partitions,
            events_per_second: 1000,
            base_time_ms: 1_700_000_000_000,
            out_of_order_group: 10,
            seed: 3,
            make_other_streams: false,
        }
    }

    fn session() -> SessionContext {
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_table_factory("NEXMARK".to_string(), Arc::new(NexmarkTableFactory))
            .build();
        SessionContext::new_with_state(state)
    }

    async fn spec_of(ctx: &SessionContext, table: &str) -> KafkaSourceSpec {
        let provider = ctx.table_provider(table).await.unwrap();
        let provider = provider.downcast_ref::<NexmarkTableProvider>().unwrap();
        provider.spec.clone()
    }

    #[test]
    fn partitions_hold_every_event_once() {
        for partitions in [1, 3, 4, 7] {
            let source = source(NexmarkTable::Bid, 1003, partitions);
            let mut numbers: Vec<u64> = source
                .partition_offsets()
                .iter()
                .flat_map(|p| (p.low..p.high).map(|o| source.event_number(p.partition, o)))
                .collect();
            numbers.sort_unstable();
            assert_eq!(numbers, (0..1003).collect::<Vec<_>>(), "{partitions}");
        }
    }

    #[tokio::test]
    async fn a_tables_batches_hold_its_streams_events_in_the_declared_columns() {
        let ctx = session();
        ctx.sql(
            "CREATE EXTERNAL TABLE bid (price BIGINT, \"dateTime\" TIMESTAMP, auction BIGINT) \
             STORED AS NEXMARK LOCATION 'bid' OPTIONS ('events' '5000', 'partitions' '3', \
             'events_per_second' '1000', 'base_time' '2023-11-14T22:13:20Z', \
             'out_of_order_group' '10', 'seed' '3', 'watermark' 'dateTime - INTERVAL 4 SECONDS')",
        )
        .await
        .unwrap();
        let spec = spec_of(&ctx, "bid").await;
        assert!(spec.primary_key.is_empty());
        let generator = spec.generator.clone().unwrap();
        assert_eq!(generator, source(NexmarkTable::Bid, 5000, 3));
        assert_eq!(spec.watermark.as_ref().unwrap().column, "dateTime");

        // price, dateTime, auction, _offset: in the scan's order.
        let projection = vec![0, 1, 2, 5];
        let schema = Arc::new(spec.schema.project(&projection).unwrap());
        let mut batches =
            EventBatches::new(&generator, &spec.schema, &projection, Arc::clone(&schema)).unwrap();
        let mut rows = Vec::new();
        for p in generator.partition_offsets() {
            for offset in p.low..p.high {
                batches.push(p.partition, offset);
            }
            let batch = batches.flush().unwrap().unwrap();
            assert_eq!(batch.schema(), schema);
            let price = batch.column(0).as_primitive::<Int64Type>();
            let time = batch.column(1).as_primitive::<TimestampNanosecondType>();
            let auction = batch.column(2).as_primitive::<Int64Type>();
            let offset = batch.column(3).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let number = generator.event_number(p.partition, offset.value(i));
                rows.push((
                    number,
                    price.value(i),
                    time.value(i) / 1_000_000,
                    auction.value(i),
                ));
            }
        }
        assert!(batches.flush().unwrap().is_none());
        rows.sort_unstable();

        let reference = NexmarkGenerator::new(generator.config());
        let want: Vec<_> = (0..5000)
            .filter_map(|n| match reference.event(n) {
                Event::Bid(b) => Some((n, b.price, b.date_time, b.auction)),
                _ => None,
            })
            .collect();
        assert_eq!(want.len(), 4600);
        assert_eq!(rows, want);
    }

    #[tokio::test]
    async fn a_table_without_columns_has_the_suites() {
        let ctx = session();
        ctx.sql("CREATE EXTERNAL TABLE p STORED AS NEXMARK LOCATION 'person'")
            .await
            .unwrap();
        let spec = spec_of(&ctx, "p").await;
        let names: Vec<&str> = spec.schema.fields()[..8]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let suite: Vec<&str> = NexmarkTable::Person.fields().iter().map(|f| f.0).collect();
        assert_eq!(names, suite);
        assert_eq!(spec.value_column_count(), 8);
        assert_eq!(spec.topic, "nexmark:person");
        // A person's id is unique without a declared key; bids have none.
        assert_eq!(spec.primary_key, ["id"]);
        let generator = spec.generator.unwrap();
        assert_eq!(
            (generator.events, generator.partitions),
            (DEFAULT_EVENTS, DEFAULT_PARTITIONS)
        );
        // Every event's columns, _key left empty.
        let projection: Vec<usize> = (0..spec.schema.fields().len()).collect();
        let schema = Arc::new(spec.schema.clone());
        let mut batches = EventBatches::new(&generator, &spec.schema, &projection, schema).unwrap();
        (0..100).for_each(|offset| {
            batches.push(0, offset);
        });
        let batch = batches.flush().unwrap().unwrap();
        // Partition 0 of 4 holds every fourth event; a person is one in 50.
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.column(8).null_count(), batch.num_rows());

        // Making the other streams' events too changes no row.
        ctx.sql(
            "CREATE EXTERNAL TABLE all_made STORED AS NEXMARK LOCATION 'person' \
             OPTIONS ('make_other_streams' 'true')",
        )
        .await
        .unwrap();
        let spec = spec_of(&ctx, "all_made").await;
        let generator = spec.generator.unwrap();
        assert!(generator.make_other_streams);
        let schema = Arc::new(spec.schema.clone());
        let mut batches = EventBatches::new(&generator, &spec.schema, &projection, schema).unwrap();
        (0..100).for_each(|offset| {
            batches.push(0, offset);
        });
        assert_eq!(batches.flush().unwrap().unwrap(), batch);
    }

    #[tokio::test]
    async fn bad_tables_are_refused_saying_what_and_where() {
        let ctx = session();
        for (ddl, says) in [
            (
                "CREATE EXTERNAL TABLE b STORED AS NEXMARK LOCATION 'bids'",
                "table 'b': LOCATION 'bids' is not a Nexmark stream; use 'person', 'auction' or 'bid'",
            ),
            (
                "CREATE EXTERNAL TABLE b STORED AS NEXMARK LOCATION 'bid' OPTIONS ('rate' '5')",
                "table 'b': unknown option 'rate' for STORED AS NEXMARK; known options: events,",
            ),
            (
                "CREATE EXTERNAL TABLE b STORED AS NEXMARK LOCATION 'bid' OPTIONS ('events' '-1')",
                "table 'b': option 'events' is '-1'; use a positive whole number",
            ),
            (
                "CREATE EXTERNAL TABLE b (datetime TIMESTAMP) STORED AS NEXMARK LOCATION 'bid'",
                "table 'b': the Nexmark stream 'bid' has no column 'datetime'; its columns are auction, bidder, price, channel, url, dateTime, extra",
            ),
            (
                "CREATE EXTERNAL TABLE b (price BOOLEAN) STORED AS NEXMARK LOCATION 'bid'",
                "table 'b': column 'price' is declared Boolean, but the stream's values are BIGINT; declare it BIGINT",
            ),
            (
                "CREATE EXTERNAL TABLE b STORED AS NEXMARK LOCATION 'bid' OPTIONS ('base_time' 'today')",
                "table 'b': option 'base_time' is 'today'",
            ),
            (
                "CREATE EXTERNAL TABLE b STORED AS NEXMARK LOCATION 'bid' OPTIONS ('make_other_streams' 'yes')",
                "table 'b': option 'make_other_streams' is 'yes'; use 'true' or 'false'",
            ),
        ] {
            let error = ctx.sql(ddl).await.expect_err(ddl).to_string();
            assert!(error.contains(says), "{ddl}\n{error}");
        }
    }
}
