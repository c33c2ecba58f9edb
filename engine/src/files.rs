//! File tables in the workspace: `STORED AS PARQUET | JSON | CSV LOCATION
//! 'dir/'`. A table is a static source (stream-static joins, the REPL) and a
//! streaming sink. A sink's directory holds a manifest per committed batch
//! under `_spate/manifests/`; where manifests exist, readers see only the
//! files they name, never a half-finished batch.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::{Expr, SessionContext};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Writer;
use crate::error::{EngineError, Result};
use crate::sink::{Attempt, Committing, Sink, SinkPart};
use crate::stateful::OutputMode;
use crate::workspace::Workspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormatKind {
    Parquet,
    Json,
    Csv,
}

impl FileFormatKind {
    pub fn from_stored_as(stored_as: &str) -> Option<Self> {
        match stored_as.to_uppercase().as_str() {
            "PARQUET" => Some(FileFormatKind::Parquet),
            "JSON" | "NDJSON" => Some(FileFormatKind::Json),
            "CSV" => Some(FileFormatKind::Csv),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            FileFormatKind::Parquet => "parquet",
            FileFormatKind::Json => "json",
            FileFormatKind::Csv => "csv",
        }
    }

    fn datafusion_format(self) -> Arc<dyn FileFormat> {
        match self {
            FileFormatKind::Parquet => Arc::new(ParquetFormat::default()),
            FileFormatKind::Json => Arc::new(JsonFormat::default()),
            FileFormatKind::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
        }
    }

    /// Encodes rows in this format, as one file's bytes.
    pub fn encode(self, schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        let mut buffer = Vec::new();
        match self {
            FileFormatKind::Parquet => {
                let mut writer =
                    datafusion::parquet::arrow::ArrowWriter::try_new(&mut buffer, schema, None)
                        .map_err(|e| EngineError::plan(format!("parquet: {e}")))?;
                for batch in batches {
                    writer
                        .write(batch)
                        .map_err(|e| EngineError::plan(format!("parquet: {e}")))?;
                }
                writer
                    .close()
                    .map_err(|e| EngineError::plan(format!("parquet: {e}")))?;
            }
            FileFormatKind::Json => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut buffer);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            FileFormatKind::Csv => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buffer);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
        }
        Ok(buffer)
    }
}

/// The commit record of one batch in a file sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkManifest {
    pub batch: u64,
    /// Paths relative to the workspace root.
    pub files: Vec<String>,
    /// Rows in those files.
    pub rows: u64,
    /// The batch holds the whole table (complete output mode): readers
    /// ignore the batches before it.
    #[serde(default)]
    pub replaces: bool,
    /// The job's controller that committed it.
    #[serde(default)]
    pub writer: Option<Writer>,
}

pub fn manifests_dir(sink_dir: &str) -> String {
    format!("{sink_dir}/_spate/manifests")
}

pub fn manifest_path(sink_dir: &str, batch: u64) -> String {
    format!("{}/{batch}.json", manifests_dir(sink_dir))
}

/// Commits a batch to a file sink: one manifest names its files. Until it is
/// written readers see none of them; once written, all. The manifest is
/// created exclusively: a batch another writer committed is refused, unless
/// it is this writer's own commit, repeated.
pub async fn commit_batch(
    ws: &Workspace,
    sink_dir: &str,
    mut manifest: SinkManifest,
) -> Result<()> {
    manifest.files.sort();
    let batch = manifest.batch;
    let path = manifest_path(sink_dir, batch);
    if ws.create_json(&path, &manifest).await? {
        return Ok(());
    }
    match ws.get_json::<SinkManifest>(&path).await? {
        Some(existing) if existing.files == manifest.files => Ok(()),
        existing => {
            let who = existing.and_then(|m| m.writer).map_or_else(
                || "an earlier version of Spate".to_string(),
                |w| w.to_string(),
            );
            Err(EngineError::AlreadyExists(format!(
                "batch {batch} of the sink in {sink_dir}/ was committed by {who}: another controller runs this job, so this one stops"
            )))
        }
    }
}

/// Batches committed to a file sink, in order.
pub async fn committed_batches(ws: &Workspace, sink_dir: &str) -> Result<Vec<u64>> {
    let mut batches: Vec<u64> = ws
        .list_names(&manifests_dir(sink_dir))
        .await?
        .iter()
        .filter_map(|n| n.strip_suffix(".json")?.parse().ok())
        .collect();
    batches.sort_unstable();
    Ok(batches)
}

/// The files of every committed batch, or None where the directory is no
/// Spate sink (it has no manifests).
pub async fn committed_files(ws: &Workspace, sink_dir: &str) -> Result<Option<Vec<String>>> {
    let batches = committed_batches(ws, sink_dir).await?;
    if batches.is_empty() {
        return Ok(None);
    }
    // Newest first, down to the batch that replaced everything before it.
    let mut newest_first = Vec::new();
    for batch in batches.into_iter().rev() {
        if let Some(m) = ws
            .get_json::<SinkManifest>(&manifest_path(sink_dir, batch))
            .await?
        {
            let replaces = m.replaces;
            newest_first.push(m.files);
            if replaces {
                break;
            }
        }
    }
    Ok(Some(newest_first.into_iter().rev().flatten().collect()))
}

/// The rows one committed batch wrote to a file sink, with its manifest;
/// None where the batch is not committed.
pub async fn read_committed_batch(
    ws: &Workspace,
    sink_dir: &str,
    format: FileFormatKind,
    batch: u64,
) -> Result<Option<(SinkManifest, Vec<RecordBatch>)>> {
    let Some(manifest) = ws
        .get_json::<SinkManifest>(&manifest_path(sink_dir, batch))
        .await?
    else {
        return Ok(None);
    };
    if manifest.files.is_empty() {
        return Ok(Some((manifest, Vec::new())));
    }
    let urls = manifest
        .files
        .iter()
        .map(|f| ListingTableUrl::parse(ws.absolute(f).to_string_lossy()))
        .collect::<DfResult<Vec<_>>>()?;
    let ctx = SessionContext::new();
    let options =
        ListingOptions::new(format.datafusion_format()).with_file_extension(format.extension());
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .infer_schema(&ctx.state())
        .await?;
    let rows = ctx
        .read_table(Arc::new(ListingTable::try_new(config)?))?
        .collect()
        .await?;
    Ok(Some((manifest, rows)))
}

/// Builds file tables for `CREATE EXTERNAL TABLE ... STORED AS PARQUET|JSON|CSV`.
#[derive(Debug)]
pub struct WorkspaceTableFactory {
    pub workspace: Workspace,
}

#[async_trait]
impl TableProviderFactory for WorkspaceTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let name = cmd.name.to_string();
        let format = FileFormatKind::from_stored_as(&cmd.file_type).ok_or_else(|| {
            EngineError::plan(format!(
                "table '{name}': STORED AS {} is not supported; use KAFKA, PARQUET, JSON or CSV",
                cmd.file_type
            ))
        })?;
        if let Some(key) = cmd.options.keys().next() {
            return Err(EngineError::plan(format!(
                "table '{name}': unknown option '{}' for STORED AS {}; file tables take no options",
                key.strip_prefix("format.").unwrap_or(key),
                cmd.file_type
            ))
            .into());
        }
        let location = single_location(&name, &cmd.locations)?;
        let dir = self
            .workspace
            .resolve_user_path(location)
            .map_err(|e| EngineError::plan(format!("table '{name}': LOCATION {e}")))?;
        let mut table = WorkspaceTable {
            name: name.clone(),
            workspace: self.workspace.clone(),
            dir,
            format,
            schema: Arc::new(cmd.schema.as_arrow().clone()),
        };
        if table.schema.fields().is_empty() {
            let inferred = match table.listing_table(state, None).await? {
                Some(listing) => listing.schema(),
                None => Arc::new(Schema::empty()),
            };
            if inferred.fields().is_empty() {
                return Err(EngineError::plan(format!(
                    "table '{name}': declare its columns; LOCATION '{}' has no files to infer them from",
                    location
                ))
                .into());
            }
            table.schema = inferred;
        }
        Ok(Arc::new(table))
    }
}

/// A directory of files in the workspace.
#[derive(Debug)]
pub struct WorkspaceTable {
    pub name: String,
    pub workspace: Workspace,
    /// Relative to the workspace root.
    pub dir: String,
    pub format: FileFormatKind,
    pub schema: SchemaRef,
}

impl WorkspaceTable {
    /// A listing over the committed files (or the whole directory when it is
    /// no sink); None when there is nothing to read.
    async fn listing_table(
        &self,
        state: &dyn Session,
        schema: Option<SchemaRef>,
    ) -> DfResult<Option<ListingTable>> {
        let root = self.workspace.root();
        let urls: Vec<ListingTableUrl> = match committed_files(&self.workspace, &self.dir).await? {
            Some(files) if files.is_empty() => return Ok(None),
            Some(files) => files
                .iter()
                .map(|f| ListingTableUrl::parse(root.join(f).to_string_lossy()))
                .collect::<DfResult<_>>()?,
            None => {
                let path = root.join(&self.dir);
                if !path.exists() {
                    return Ok(None);
                }
                let mut url = path.to_string_lossy().into_owned();
                if path.is_dir() && !url.ends_with('/') {
                    url.push('/');
                }
                vec![ListingTableUrl::parse(url)?]
            }
        };
        let options = ListingOptions::new(self.format.datafusion_format())
            .with_file_extension(self.format.extension());
        let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options);
        let config = match schema {
            Some(s) => config.with_schema(s),
            None => config.infer_schema(state).await?,
        };
        Ok(Some(ListingTable::try_new(config)?))
    }
}

#[async_trait]
impl TableProvider for WorkspaceTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match self
            .listing_table(state, Some(Arc::clone(&self.schema)))
            .await?
        {
            Some(listing) => listing.scan(state, projection, filters, limit).await,
            None => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => Arc::clone(&self.schema),
                };
                Ok(Arc::new(EmptyExec::new(schema)))
            }
        }
    }
}

/// Registers a file sink's committed output as a table, for readers (tests,
/// the REPL) that want exactly what was committed.
pub async fn register_committed_output(
    ctx: &SessionContext,
    ws: &Workspace,
    table: &str,
    sink_dir: &str,
    format: FileFormatKind,
    schema: SchemaRef,
) -> Result<()> {
    let provider = WorkspaceTable {
        name: table.to_string(),
        workspace: ws.clone(),
        dir: ws.resolve_user_path(sink_dir)?,
        format,
        schema,
    };
    ctx.register_table(table, Arc::new(provider))?;
    Ok(())
}

/// The one LOCATION of a table; Spate tables name a single directory or topic.
pub(crate) fn single_location<'a>(table: &str, locations: &'a [String]) -> Result<&'a str> {
    match locations {
        [one] => Ok(one.as_str()),
        [] => Err(EngineError::plan(format!(
            "table '{table}': LOCATION is missing"
        ))),
        _ => Err(EngineError::plan(format!(
            "table '{table}': give one LOCATION"
        ))),
    }
}

/// The file a task attempt writes into a file sink.
pub fn part_file_name(dir: &str, attempt: &Attempt, extension: &str) -> String {
    format!(
        "{dir}/{}{:04}-{}.{extension}",
        part_prefix(attempt.batch),
        attempt.task_index,
        attempt.attempt_id
    )
}

/// What every part file of `batch` starts with.
fn part_prefix(batch: u64) -> String {
    format!("part-{batch:08}-")
}

/// A file table as a streaming sink: a file per task attempt, a manifest
/// per committed batch.
#[derive(Debug)]
pub struct FileSink {
    pub ws: Workspace,
    /// Relative to the workspace root.
    pub dir: String,
    pub format: FileFormatKind,
}

#[async_trait]
impl Sink for FileSink {
    async fn write(
        &self,
        attempt: &Attempt,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if rows == 0 {
            return Ok(SinkPart::default());
        }
        let path = part_file_name(&self.dir, attempt, self.format.extension());
        self.ws
            .put(&path, self.format.encode(schema, batches)?)
            .await?;
        Ok(SinkPart {
            files: vec![path],
            rows,
        })
    }

    async fn committed(&self, batch: u64) -> Result<Option<u64>> {
        Ok(self
            .ws
            .get_json::<SinkManifest>(&manifest_path(&self.dir, batch))
            .await?
            .map(|m| m.rows))
    }

    async fn commit(&self, batch: &Committing<'_>, parts: Vec<SinkPart>) -> Result<()> {
        let manifest = SinkManifest {
            batch: batch.batch,
            rows: parts.iter().map(|p| p.rows).sum(),
            files: parts.into_iter().flat_map(|p| p.files).collect(),
            replaces: batch.mode == OutputMode::Complete,
            writer: Some(batch.writer.clone()),
        };
        commit_batch(&self.ws, &self.dir, manifest).await
    }

    async fn clean_up(&self, batch: u64, kept: &[SinkPart]) -> Result<()> {
        let prefix = part_prefix(batch);
        let kept: Vec<&str> = kept
            .iter()
            .flat_map(|p| &p.files)
            .filter_map(|f| f.rsplit('/').next())
            .collect();
        for name in self.ws.list_names(&self.dir).await? {
            if name.starts_with(&prefix) && !kept.contains(&name.as_str()) {
                self.ws.delete(&format!("{}/{name}", self.dir)).await?;
            }
        }
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        self.ws.delete_dir(&self.dir).await
    }

    async fn latest_committed(&self) -> Result<Option<u64>> {
        Ok(committed_batches(&self.ws, &self.dir)
            .await?
            .last()
            .copied())
    }

    async fn read_committed(&self, from: u64) -> Result<Vec<(u64, Vec<RecordBatch>)>> {
        let mut out = Vec::new();
        for batch in committed_batches(&self.ws, &self.dir).await? {
            if batch < from {
                continue;
            }
            if let Some((_, rows)) =
                read_committed_batch(&self.ws, &self.dir, self.format, batch).await?
            {
                out.push((batch, rows));
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("{} files in {}/", self.format.extension(), self.dir)
    }
}
