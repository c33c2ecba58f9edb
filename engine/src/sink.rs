//! Sinks behind one trait. A task writes its part of a batch, named by the
//! batch and its attempt, so nothing it writes is seen before the commit
//! and no re-run overwrites a committed part. The job's controller commits
//! the batch from the parts of the attempts it counted, once, and cleans up
//! what other attempts left. The master calls this trait and knows no
//! sink's layout.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Writer;
use crate::error::{EngineError, Result};
use crate::files::{FileFormatSpec, FileSink};
use crate::kafka::{KafkaSink, KafkaSinkSpec};
use crate::postgres::{PostgresSink, PostgresSinkSpec};
use crate::redis::{RedisSink, RedisSinkSpec};
use crate::stateful::OutputMode;
use crate::workspace::{SPATE_DIR, Workspace};

/// Where a job's rows go, as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkSpec {
    Files {
        table: String,
        /// Relative to the workspace root.
        dir: String,
        format: FileFormatSpec,
    },
    Kafka(KafkaSinkSpec),
    /// An interactive query's rows: Arrow IPC files under `dir`, which the
    /// master streams to the client and then removes.
    Results {
        dir: String,
    },
    /// Printed by the master as each batch commits (Spark's console sink).
    Console {
        /// Rows shown per batch; the rest are counted.
        max_rows: u32,
    },
    /// A hash per row in Redis.
    Redis(RedisSinkSpec),
    /// A row per row in a PostgreSQL table, upserted by its primary key.
    Postgres(PostgresSinkSpec),
}

/// Rows a console sink shows per batch unless its table says otherwise
/// (Spark's `numRows`).
pub const CONSOLE_ROWS: u32 = 20;

impl SinkSpec {
    /// The sink of a job (or query) `job` in `ws`.
    pub fn open(&self, ws: &Workspace, job: &str) -> Arc<dyn Sink> {
        match self {
            SinkSpec::Files { dir, format, .. } => Arc::new(FileSink {
                ws: ws.clone(),
                dir: dir.clone(),
                format: format.clone(),
                compact_every: spate_config::settings().job.manifest_compaction,
            }),
            SinkSpec::Kafka(spec) => Arc::new(KafkaSink {
                spec: spec.clone(),
                job: job.to_string(),
            }),
            SinkSpec::Results { dir } => Arc::new(ResultsSink {
                ws: ws.clone(),
                dir: dir.clone(),
            }),
            SinkSpec::Console { max_rows } => Arc::new(ConsoleSink {
                ws: ws.clone(),
                dir: format!("{SPATE_DIR}/console/{job}"),
                job: job.to_string(),
                max_rows: *max_rows,
            }),
            SinkSpec::Redis(spec) => Arc::new(RedisSink {
                spec: spec.clone(),
                job: job.to_string(),
            }),
            SinkSpec::Postgres(spec) => Arc::new(PostgresSink {
                spec: spec.clone(),
                job: job.to_string(),
            }),
        }
    }

    /// Whether the sink can hold a group's newest row in place of its
    /// older one (update output mode).
    pub fn upserts(&self) -> bool {
        match self {
            SinkSpec::Kafka(_) | SinkSpec::Console { .. } | SinkSpec::Redis(_) => true,
            SinkSpec::Postgres(p) => !p.primary_key.is_empty(),
            SinkSpec::Files { .. } | SinkSpec::Results { .. } => false,
        }
    }

    /// For humans: the UI, progress records.
    pub fn describe(&self) -> String {
        match self {
            SinkSpec::Files { dir, format, .. } => {
                format!("{} files in {dir}/", format.kind.name())
            }
            SinkSpec::Kafka(k) => format!("kafka topic {}", k.topic),
            SinkSpec::Results { .. } => "the client".to_string(),
            SinkSpec::Console { .. } => "the master's console".to_string(),
            SinkSpec::Redis(r) => format!(
                "redis hashes {}* at {}",
                r.key_prefix,
                without_password(&r.url)
            ),
            SinkSpec::Postgres(p) => {
                format!("postgres table {} at {}", p.table, without_password(&p.url))
            }
        }
    }
}

/// A batch being committed: which, in what output mode, by whom.
#[derive(Debug, Clone, Copy)]
pub struct Committing<'a> {
    pub batch: u64,
    pub mode: OutputMode,
    pub writer: &'a Writer,
}

/// One task attempt of a batch: what names its part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub batch: u64,
    pub task_index: u32,
    pub attempt_id: String,
}

/// What one task attempt wrote of a batch, for the controller's commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkPart {
    /// Files written, relative to the workspace root.
    pub files: Vec<String>,
    pub rows: u64,
}

#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Task side: writes one attempt's rows of a batch, where no reader
    /// sees them before the batch commits.
    async fn write(
        &self,
        attempt: &Attempt,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart>;

    /// The rows of `batch` when the sink already holds it: its controller
    /// stopped after the sink's commit and before the checkpoint's. None
    /// where the sink cannot tell (it then commits the batch again).
    async fn committed(&self, batch: u64) -> Result<Option<u64>> {
        let _ = batch;
        Ok(None)
    }

    /// Makes a batch visible, all of it at once, from the parts of its
    /// counted attempts, as `writer`. A batch another writer committed is
    /// `EngineError::AlreadyExists`, naming that writer. Nothing, for a
    /// sink whose tasks commit what they write themselves (with their
    /// partition's progress).
    async fn commit(&self, batch: &Committing<'_>, parts: Vec<SinkPart>) -> Result<()> {
        let _ = (batch, parts);
        Ok(())
    }

    /// Called once `batch` is committed: removes what its attempts wrote
    /// that the commit does not name (`kept`): failed, lost and cancelled
    /// attempts, or those of a crashed controller. Nothing, for a sink whose
    /// parts leave nothing behind.
    async fn clean_up(&self, batch: u64, kept: &[SinkPart]) -> Result<()> {
        let _ = (batch, kept);
        Ok(())
    }

    /// Called once the checkpoint committed `through`, off the batch's
    /// path: folds what the sink keeps per batch so that its readers'
    /// work stays bounded. Nothing, for a sink that keeps no such log.
    async fn compact(&self, through: u64) -> Result<()> {
        let _ = through;
        Ok(())
    }

    /// Forgets everything the sink committed (a job started afresh);
    /// nothing, for a sink that keeps no record of its own.
    async fn reset(&self) -> Result<()> {
        Ok(())
    }

    /// For following a job (`\tail`): the newest committed batch.
    async fn latest_committed(&self) -> Result<Option<u64>> {
        Err(self.cannot_read_back())
    }

    /// For following a job: the committed batches from `from` on, oldest
    /// first, each with its rows.
    async fn read_committed(&self, from: u64) -> Result<Vec<(u64, Vec<RecordBatch>)>> {
        let _ = from;
        Err(self.cannot_read_back())
    }

    /// Why `latest_committed` and `read_committed` do not work here.
    fn cannot_read_back(&self) -> EngineError {
        EngineError::plan(format!(
            "{} cannot be read back batch by batch; query it with a SELECT instead",
            self.describe()
        ))
    }

    fn describe(&self) -> String;
}

/// A URL with its password, if any, as `*****`, for humans.
pub fn without_password(url: &str) -> String {
    crate::redact::url_passwords(url).into_owned()
}

/// The batches of an Arrow IPC file in the workspace.
pub async fn read_ipc_file(ws: &Workspace, path: &str) -> Result<Vec<RecordBatch>> {
    let bytes = ws
        .get(path)
        .await?
        .ok_or_else(|| EngineError::internal(format!("{path} is missing from the workspace")))?;
    let reader = FileReader::try_new(std::io::Cursor::new(bytes), None)?;
    Ok(reader.collect::<std::result::Result<_, _>>()?)
}

/// One attempt's rows as an Arrow IPC file in `dir`, for sinks whose parts
/// wait in the workspace until they are read back.
async fn write_ipc_part(
    ws: &Workspace,
    dir: &str,
    attempt: &Attempt,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<SinkPart> {
    let path = format!(
        "{dir}/part-{:04}-{}.arrow",
        attempt.task_index, attempt.attempt_id
    );
    ws.put(&path, crate::ipc::file(schema, batches)?).await?;
    Ok(SinkPart {
        files: vec![path],
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
    })
}

/// The rows of IPC parts, in their order.
async fn read_ipc_parts(ws: &Workspace, parts: &[SinkPart]) -> Result<Vec<RecordBatch>> {
    let mut rows = Vec::new();
    for file in parts.iter().flat_map(|p| &p.files) {
        rows.extend(read_ipc_file(ws, file).await?);
    }
    Ok(rows)
}

/// An interactive query's result: each last-stage task's rows in one IPC
/// file, streamed to the client by the master and then removed.
#[derive(Debug)]
pub struct ResultsSink {
    ws: Workspace,
    dir: String,
}

impl ResultsSink {
    pub fn new(ws: Workspace, dir: String) -> Self {
        ResultsSink { ws, dir }
    }

    /// The rows of `parts`, in their order.
    pub async fn rows(&self, parts: &[SinkPart]) -> Result<Vec<RecordBatch>> {
        read_ipc_parts(&self.ws, parts).await
    }
}

#[async_trait]
impl Sink for ResultsSink {
    async fn write(
        &self,
        attempt: &Attempt,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart> {
        write_ipc_part(&self.ws, &self.dir, attempt, &schema, batches).await
    }

    async fn reset(&self) -> Result<()> {
        self.ws.delete_dir(&self.dir).await
    }

    fn describe(&self) -> String {
        "the client".to_string()
    }
}

/// Spark's console sink: each committed batch printed on the master's
/// standard output. Parts wait as IPC files in the workspace until the
/// commit prints them; a batch re-run after a crash may print twice, as in
/// Spark, since a console keeps no record of what it showed.
#[derive(Debug)]
pub struct ConsoleSink {
    ws: Workspace,
    dir: String,
    job: String,
    max_rows: u32,
}

impl ConsoleSink {
    fn batch_dir(&self, batch: u64) -> String {
        format!("{}/{batch}", self.dir)
    }
}

#[async_trait]
impl Sink for ConsoleSink {
    async fn write(
        &self,
        attempt: &Attempt,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart> {
        let dir = self.batch_dir(attempt.batch);
        write_ipc_part(&self.ws, &dir, attempt, &schema, batches).await
    }

    async fn commit(&self, committing: &Committing<'_>, parts: Vec<SinkPart>) -> Result<()> {
        let batch = committing.batch;
        let rows = read_ipc_parts(&self.ws, &parts).await?;
        let total: usize = rows.iter().map(RecordBatch::num_rows).sum();
        let shown = (self.max_rows as usize).min(total);
        let mut kept = Vec::new();
        let mut left = shown;
        for batch in &rows {
            if left == 0 {
                break;
            }
            let take = left.min(batch.num_rows());
            kept.push(batch.slice(0, take));
            left -= take;
        }
        let rule = "-".repeat(43);
        let mut text = format!("{rule}\nJob: {}, batch: {batch}\n{rule}\n", self.job);
        if !kept.is_empty() {
            text.push_str(
                &datafusion::arrow::util::pretty::pretty_format_batches(&kept)?.to_string(),
            );
            text.push('\n');
        }
        if total > shown {
            text.push_str(&format!("only showing the first {shown} of {total} rows\n"));
        } else if total == 0 {
            text.push_str("(no rows)\n");
        }
        println!("{text}");
        self.ws.delete_dir(&self.batch_dir(batch)).await
    }

    async fn clean_up(&self, batch: u64, _kept: &[SinkPart]) -> Result<()> {
        self.ws.delete_dir(&self.batch_dir(batch)).await
    }

    async fn reset(&self) -> Result<()> {
        self.ws.delete_dir(&self.dir).await
    }

    fn describe(&self) -> String {
        "the master's console".to_string()
    }
}

/// Builds console tables: `CREATE EXTERNAL TABLE out (...) STORED AS CONSOLE
/// LOCATION 'stdout' [OPTIONS ('rows' '20')]`.
#[derive(Debug)]
pub struct ConsoleTableFactory;

#[async_trait]
impl datafusion::catalog::TableProviderFactory for ConsoleTableFactory {
    async fn create(
        &self,
        _state: &dyn datafusion::catalog::Session,
        cmd: &datafusion::logical_expr::CreateExternalTable,
    ) -> datafusion::error::Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let name = cmd.name.to_string();
        let mut max_rows = CONSOLE_ROWS;
        for (key, value) in &cmd.options {
            match key.strip_prefix("format.").unwrap_or(key) {
                "rows" | "numrows" => {
                    max_rows = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        EngineError::plan(format!(
                            "table '{name}': option 'rows' is '{value}'; use a positive whole number"
                        ))
                    })?;
                }
                other => {
                    return Err(EngineError::plan(format!(
                        "table '{name}': unknown option '{other}' for STORED AS CONSOLE; known options: rows (rows shown per batch, default {CONSOLE_ROWS})"
                    ))
                    .into());
                }
            }
        }
        Ok(Arc::new(ConsoleTable::new(
            ConsoleSpec { max_rows },
            Arc::new(cmd.schema.as_arrow().clone()),
        )?))
    }
}

/// A console table's options.
#[derive(Debug, Clone)]
pub struct ConsoleSpec {
    pub max_rows: u32,
}

impl SinkOnly for ConsoleSpec {
    fn cannot_read(&self) -> String {
        "a console table is a sink: its rows are printed by the master, not kept to be read"
            .to_string()
    }
}

/// A table a job writes to the master's console; it cannot be read.
pub type ConsoleTable = SinkOnlyTable<ConsoleSpec>;

/// What a table that is only a sink (Redis, PostgreSQL, the console) says
/// of itself.
pub trait SinkOnly: std::fmt::Debug + Clone + Send + Sync + 'static {
    /// Why reading the table with SQL does not work, and what to do instead.
    fn cannot_read(&self) -> String;

    /// Checks the table's options against its columns (a key column must
    /// be one of them); called once the columns are known.
    fn check(&self, columns: &datafusion::arrow::datatypes::Schema) -> Result<()> {
        let _ = columns;
        Ok(())
    }
}

/// A table a job writes and SQL does not read.
#[derive(Debug)]
pub struct SinkOnlyTable<S> {
    pub spec: S,
    schema: SchemaRef,
}

impl<S: SinkOnly> SinkOnlyTable<S> {
    /// The table, its options checked against `schema` where it declares columns.
    pub fn new(spec: S, schema: SchemaRef) -> Result<Self> {
        if !schema.fields().is_empty() {
            spec.check(&schema)?;
        }
        Ok(SinkOnlyTable { spec, schema })
    }
}

impl<S: SinkOnly> crate::insert::SinkTable for SinkOnlyTable<S> {
    fn declared_columns(&self) -> Vec<datafusion::arrow::datatypes::FieldRef> {
        self.schema.fields().to_vec()
    }

    fn with_columns(
        &self,
        columns: Vec<datafusion::arrow::datatypes::Field>,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(columns));
        Ok(Arc::new(SinkOnlyTable::new(self.spec.clone(), schema)?))
    }
}

#[async_trait]
impl<S: SinkOnly> datafusion::catalog::TableProvider for SinkOnlyTable<S> {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        datafusion::datasource::TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[datafusion::prelude::Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        Err(EngineError::plan(self.spec.cannot_read()).into())
    }
}

/// A sink option's list of columns, `'region, id'`.
pub fn column_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// A column named in a sink's options that the table lacks, as an error.
pub fn check_columns_exist(
    table: &str,
    what: &str,
    names: &[String],
    columns: &datafusion::arrow::datatypes::Schema,
) -> Result<()> {
    for name in names {
        if columns.field_with_name(name).is_err() {
            let have: Vec<&str> = columns.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(EngineError::plan(format!(
                "table '{table}': {what} column '{name}' is not one of its columns ({})",
                have.join(", ")
            )));
        }
    }
    Ok(())
}
