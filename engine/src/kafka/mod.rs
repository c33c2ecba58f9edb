//! Kafka as a DataFusion table: `CREATE EXTERNAL TABLE t (...) STORED AS KAFKA
//! LOCATION 'topic' OPTIONS (...)`. The table is a source (read exact offset
//! ranges) and a sink (rows encoded as JSON).

mod broker;
mod client;
mod decode;
#[cfg(feature = "fuzzing")]
pub(crate) use decode::decode_for_fuzzing;
mod partitions;
mod pool;
mod scan;
mod sink;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;
use serde::{Deserialize, Serialize};

pub use broker::DevBroker;
pub use client::{KafkaAdmin, PartitionOffsets, enqueue};
pub use partitions::release_partitions;
pub use scan::KafkaScanExec;
pub use sink::KafkaSink;

use crate::error::{EngineError, Result};

/// Metadata columns every Kafka table has besides the declared ones.
pub const KEY_COLUMN: &str = "_key";
pub const PARTITION_COLUMN: &str = "_partition";
pub const OFFSET_COLUMN: &str = "_offset";
pub const TIMESTAMP_COLUMN: &str = "_timestamp";
/// With `on_error` permissive: the raw value of a record that did not decode.
pub const CORRUPT_COLUMN: &str = "_corrupt";

/// How record values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    Json,
    Csv,
    /// The value as one UTF-8 string column, `value`.
    Raw,
}

/// Where a stream starts when its job has no checkpoint yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartingOffsets {
    Earliest,
    Latest,
    /// Per partition; -2 means earliest and -1 latest, as in Spark.
    Specific(BTreeMap<i32, i64>),
}

/// Everything needed to read a Kafka table: the topic, how to reach it, how
/// to decode it and where a new stream starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaSourceSpec {
    pub table: String,
    pub topic: String,
    pub bootstrap_servers: String,
    pub format: RecordFormat,
    /// Passed to librdkafka as they are (`kafka.` prefix removed).
    pub client_options: BTreeMap<String, String>,
    /// Declared columns followed by the metadata columns.
    pub schema: Schema,
    pub starting_offsets: StartingOffsets,
    /// Caps a batch's size, summed over partitions.
    pub max_offsets_per_trigger: Option<u64>,
    /// The event-time column and how late its rows may come.
    #[serde(default)]
    pub watermark: Option<WatermarkSpec>,
    /// Whether records deleted by retention before the job read them fail
    /// the job (Spark's failOnDataLoss) or are skipped and counted.
    #[serde(default = "yes")]
    pub fail_on_data_loss: bool,
    /// What a record whose value does not decode does.
    #[serde(default)]
    pub on_error: OnError,
    /// Where bad records are copied, as they were (key and value).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// As a sink: transactions, or plain idempotent produce requests.
    #[serde(default = "yes")]
    pub exactly_once: bool,
}

/// `on_error`: what a record whose value does not decode does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The task fails, naming topic, partition and offset.
    #[default]
    Fail,
    /// The record is left out and counted.
    Drop,
    /// The record becomes a row of NULLs with its raw value in `_corrupt`.
    Permissive,
}

fn yes() -> bool {
    true
}

/// `'watermark' 'ts - INTERVAL 5 SECONDS'`: the watermark trails the
/// largest event time seen by `delay_ms`; rows older than it are late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkSpec {
    pub column: String,
    pub delay_ms: i64,
}

impl WatermarkSpec {
    fn parse(table: &str, value: &str, schema: &Schema) -> Result<Self> {
        let bad = |why: String| {
            EngineError::plan(format!(
                "table '{table}': option 'watermark' is '{value}': {why}; write it as '<timestamp column> - INTERVAL <n> SECONDS'"
            ))
        };
        let (column, delay) = match value.split_once('-') {
            Some((column, delay)) => (column.trim(), delay.trim()),
            None => (value.trim(), "0 seconds"),
        };
        let column = column.trim_matches('"');
        let field = schema
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(column))
            .ok_or_else(|| bad(format!("the table has no column '{column}'")))?;
        if !matches!(field.data_type(), DataType::Timestamp(..)) {
            return Err(bad(format!(
                "column '{column}' is {}, not a TIMESTAMP",
                field.data_type()
            )));
        }
        let delay = delay
            .strip_prefix("INTERVAL")
            .or_else(|| delay.strip_prefix("interval"))
            .unwrap_or(delay)
            .trim()
            .trim_matches('\'');
        let delay_ms = crate::windows::duration_ms(delay)
            .filter(|d| *d >= 0)
            .ok_or_else(|| bad(format!("'{delay}' is not a duration")))?;
        Ok(WatermarkSpec {
            column: field.name().clone(),
            delay_ms,
        })
    }
}

impl KafkaSourceSpec {
    /// Number of declared (value) columns at the front of the schema.
    pub fn value_column_count(&self) -> usize {
        let corrupt = usize::from(self.on_error == OnError::Permissive);
        self.schema.fields().len() - 4 - corrupt
    }
}

/// A Kafka topic written by a job, rows encoded as JSON. A `_key` column in
/// the rows becomes the record key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaSinkSpec {
    pub topic: String,
    pub bootstrap_servers: String,
    pub client_options: BTreeMap<String, String>,
    /// Each task writes in a transaction with its progress (see `sink`).
    #[serde(default = "yes")]
    pub exactly_once: bool,
    /// The checkpoint's run, which names the transactional ids and progress
    /// groups, so that a job started afresh does not find its old progress.
    #[serde(default)]
    pub run: String,
}

const KNOWN_OPTIONS: &str = "bootstrap.servers, format (json, csv, raw), starting_offsets \
(earliest, latest, or {\"<topic>\":{\"<partition>\":<offset>}}), max_offsets_per_trigger, \
watermark ('<timestamp column> - INTERVAL <n> SECONDS'), fail_on_data_loss (true, false), \
on_error (fail, drop, permissive), dead_letter_topic, delivery_guarantee (exactly_once, at_least_once; as a sink), kafka.<librdkafka option>";

/// Builds Kafka tables from `CREATE EXTERNAL TABLE ... STORED AS KAFKA`.
#[derive(Debug)]
pub struct KafkaTableFactory {
    /// Used when a table omits `bootstrap.servers`.
    pub default_bootstrap_servers: String,
}

#[async_trait]
impl TableProviderFactory for KafkaTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let spec = self.source_spec(cmd)?;
        Ok(Arc::new(KafkaTable { spec }))
    }
}

impl KafkaTableFactory {
    pub(crate) fn source_spec(&self, cmd: &CreateExternalTable) -> Result<KafkaSourceSpec> {
        let table = cmd.name.to_string();
        let topic = crate::files::single_location(&table, &cmd.locations)?
            .trim()
            .to_string();
        if topic.is_empty() {
            return Err(EngineError::plan(format!(
                "table '{table}': LOCATION must name the Kafka topic"
            )));
        }
        let options = normalized_options(&cmd.options);
        let mut bootstrap = self.default_bootstrap_servers.clone();
        let mut format = RecordFormat::Json;
        let mut starting_offsets = StartingOffsets::Earliest;
        let mut max_offsets_per_trigger = None;
        let mut watermark = None;
        let mut fail_on_data_loss = true;
        let mut on_error = OnError::Fail;
        let mut dead_letter_topic = None;
        let mut exactly_once = true;
        let mut client_options = BTreeMap::new();
        for (key, value) in &options {
            match key.as_str() {
                "bootstrap.servers" | "kafka.bootstrap.servers" => bootstrap = value.clone(),
                "format" => {
                    format = match value.to_lowercase().as_str() {
                        "json" => RecordFormat::Json,
                        "csv" => RecordFormat::Csv,
                        "raw" => RecordFormat::Raw,
                        other => {
                            return Err(EngineError::plan(format!(
                                "table '{table}': option 'format' is '{other}'; use json, csv or raw"
                            )));
                        }
                    }
                }
                "starting_offsets" | "startingoffsets" => {
                    starting_offsets = parse_starting_offsets(&table, &topic, value)?
                }
                "max_offsets_per_trigger" | "maxoffsetspertrigger" => {
                    let n: u64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        EngineError::plan(format!(
                            "table '{table}': option 'max_offsets_per_trigger' is '{value}'; use a positive whole number"
                        ))
                    })?;
                    max_offsets_per_trigger = Some(n);
                }
                "watermark" => watermark = Some(value.clone()),
                "fail_on_data_loss" | "failondataloss" => {
                    fail_on_data_loss = value.parse().map_err(|_| {
                        EngineError::plan(format!(
                            "table '{table}': option 'fail_on_data_loss' is '{value}'; use true or false"
                        ))
                    })?;
                }
                "on_error" => {
                    on_error = match value.to_lowercase().as_str() {
                        "fail" => OnError::Fail,
                        "drop" => OnError::Drop,
                        "permissive" => OnError::Permissive,
                        other => {
                            return Err(EngineError::plan(format!(
                                "table '{table}': option 'on_error' is '{other}'; use fail, drop or permissive"
                            )));
                        }
                    }
                }
                "dead_letter_topic" => dead_letter_topic = Some(value.clone()),
                "delivery_guarantee" => {
                    exactly_once = match value.to_lowercase().replace('-', "_").as_str() {
                        "exactly_once" => true,
                        "at_least_once" => false,
                        other => {
                            return Err(EngineError::plan(format!(
                                "table '{table}': option 'delivery_guarantee' is '{other}'; use exactly_once (Kafka transactions) or at_least_once"
                            )));
                        }
                    }
                }
                k if k.starts_with("kafka.") => {
                    client_options.insert(k["kafka.".len()..].to_string(), value.clone());
                }
                other => {
                    return Err(EngineError::plan(format!(
                        "table '{table}': unknown option '{other}' for STORED AS KAFKA; known options: {KNOWN_OPTIONS}"
                    )));
                }
            }
        }
        if dead_letter_topic.is_some() && on_error == OnError::Fail {
            return Err(EngineError::plan(format!(
                "table '{table}': 'dead_letter_topic' copies bad records the job goes on without; set 'on_error' to 'drop' or 'permissive'"
            )));
        }
        let mut schema = table_schema(&table, cmd.schema.as_arrow(), format)?;
        if on_error == OnError::Permissive {
            let mut fields: Vec<Field> =
                schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new(CORRUPT_COLUMN, DataType::Utf8, true));
            schema = Schema::new(fields);
        }
        let watermark = watermark
            .map(|w| WatermarkSpec::parse(&table, &w, &schema))
            .transpose()?;
        Ok(KafkaSourceSpec {
            watermark,
            fail_on_data_loss,
            on_error,
            dead_letter_topic,
            exactly_once,
            table,
            topic,
            bootstrap_servers: bootstrap,
            format,
            client_options,
            schema,
            starting_offsets,
            max_offsets_per_trigger,
        })
    }
}

/// DataFusion prefixes option keys without a dot by `format.` and lowercases
/// them; Kafka users write them bare, so undo the prefix.
fn normalized_options(options: &HashMap<String, String>) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|(k, v)| {
            let key = k.strip_prefix("format.").unwrap_or(k).to_lowercase();
            (key, v.clone())
        })
        .collect()
}

fn parse_starting_offsets(table: &str, topic: &str, value: &str) -> Result<StartingOffsets> {
    match value.trim().to_lowercase().as_str() {
        "earliest" => return Ok(StartingOffsets::Earliest),
        "latest" => return Ok(StartingOffsets::Latest),
        _ => {}
    }
    let bad = |why: String| {
        EngineError::plan(format!(
            "table '{table}': option 'starting_offsets' is '{value}': {why}; use earliest, latest, or {{\"{topic}\":{{\"0\":42,\"1\":-2}}}}"
        ))
    };
    let parsed: BTreeMap<String, BTreeMap<String, i64>> =
        serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
    let partitions = parsed
        .get(topic)
        .ok_or_else(|| bad(format!("it does not name topic '{topic}'")))?;
    let mut offsets = BTreeMap::new();
    for (partition, offset) in partitions {
        let p: i32 = partition
            .parse()
            .map_err(|_| bad(format!("'{partition}' is not a partition number")))?;
        offsets.insert(p, *offset);
    }
    Ok(StartingOffsets::Specific(offsets))
}

/// The declared columns plus the metadata columns.
fn table_schema(table: &str, declared: &Schema, format: RecordFormat) -> Result<Schema> {
    let metadata = [
        KEY_COLUMN,
        PARTITION_COLUMN,
        OFFSET_COLUMN,
        TIMESTAMP_COLUMN,
        CORRUPT_COLUMN,
    ];
    let mut fields: Vec<Field> = Vec::new();
    for f in declared.fields() {
        if metadata.contains(&f.name().as_str()) {
            // Declared metadata columns are accepted and placed with the others.
            continue;
        }
        fields.push(f.as_ref().clone().with_nullable(true));
    }
    // Declared without columns, a table is a sink that takes its columns
    // from the query writing it; reading it needs them (see `scan`).
    if fields.is_empty() && format == RecordFormat::Raw {
        fields.push(Field::new("value", DataType::Utf8, true));
    }
    if format == RecordFormat::Raw
        && (fields.len() != 1
            || !matches!(fields[0].data_type(), DataType::Utf8 | DataType::Utf8View))
    {
        return Err(EngineError::plan(format!(
            "table '{table}': format 'raw' has one VARCHAR column (the record value)"
        )));
    }
    fields.extend(metadata_fields());
    Ok(Schema::new(fields))
}

/// The metadata columns every Kafka table has after its declared ones.
/// Nullable, so that a Kafka sink can be written with a column list
/// (`INSERT INTO t (a, b, _key) SELECT ...`), the rest left NULL.
fn metadata_fields() -> [Field; 4] {
    [
        Field::new(KEY_COLUMN, DataType::Utf8, true),
        Field::new(PARTITION_COLUMN, DataType::Int32, true),
        Field::new(OFFSET_COLUMN, DataType::Int64, true),
        Field::new(
            TIMESTAMP_COLUMN,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]
}

/// A Kafka topic as a table.
#[derive(Debug)]
pub struct KafkaTable {
    pub spec: KafkaSourceSpec,
}

impl crate::insert::SinkTable for KafkaTable {
    fn declared_columns(&self) -> Vec<FieldRef> {
        let count = self.spec.value_column_count();
        if count == 1 && self.spec.format == RecordFormat::Raw {
            return vec![Arc::clone(&self.spec.schema.fields()[0])];
        }
        self.spec.schema.fields()[..count].to_vec()
    }

    fn extra_columns(&self) -> Vec<FieldRef> {
        metadata_fields().into_iter().map(Arc::new).collect()
    }

    fn with_columns(&self, columns: Vec<Field>) -> Result<Arc<dyn TableProvider>> {
        let mut spec = self.spec.clone();
        spec.schema = table_schema(&spec.table, &Schema::new(columns), spec.format)?;
        Ok(Arc::new(KafkaTable { spec }))
    }
}

impl KafkaTable {
    pub fn sink_spec(&self) -> KafkaSinkSpec {
        KafkaSinkSpec {
            topic: self.spec.topic.clone(),
            bootstrap_servers: self.spec.bootstrap_servers.clone(),
            client_options: self.spec.client_options.clone(),
            exactly_once: self.spec.exactly_once,
            run: String::new(),
        }
    }
}

#[async_trait]
impl TableProvider for KafkaTable {
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
        if self.spec.value_column_count() == 0 {
            let table = &self.spec.table;
            return Err(EngineError::plan(format!(
                "table '{table}' declares no columns, so its records cannot be decoded: declare them, e.g. CREATE EXTERNAL TABLE {table} (id BIGINT, name VARCHAR) STORED AS KAFKA ... (without columns, a Kafka table is a sink that takes its columns from the query writing it)"
            ))
            .into());
        }
        // The ranges are filled in per task, when the worker decodes the plan.
        Ok(Arc::new(KafkaScanExec::new(
            Arc::new(self.spec.clone()),
            projection.cloned(),
            Vec::new(),
            state.config().target_partitions(),
        )?))
    }
}
