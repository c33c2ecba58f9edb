//! File tables in the workspace: `STORED AS PARQUET | JSON | CSV LOCATION
//! 'dir/'`. A table is a static source (stream-static joins, the REPL) and a
//! streaming sink. A sink's directory holds a manifest per committed batch
//! under `_spate/manifests/`; where manifests exist, readers see only the
//! files they name, never a half-finished batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::GetExt;
use datafusion::common::config::{ConfigFileType, TableOptions};
use datafusion::common::file_options::csv_writer::CsvWriterOptions;
use datafusion::common::file_options::parquet_writer::ParquetWriterOptions;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::CreateExternalTable;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::{Expr, SessionContext};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Writer;
use crate::error::{EngineError, Result};
use crate::sink::{Attempt, Committing, Sink, SinkPart};
use crate::stateful::OutputMode;
use crate::workspace::{EntryKind, Workspace};

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

    pub fn name(self) -> &'static str {
        match self {
            FileFormatKind::Parquet => "parquet",
            FileFormatKind::Json => "json",
            FileFormatKind::Csv => "csv",
        }
    }

    fn config_type(self) -> ConfigFileType {
        match self {
            FileFormatKind::Parquet => ConfigFileType::PARQUET,
            FileFormatKind::Json => ConfigFileType::JSON,
            FileFormatKind::Csv => ConfigFileType::CSV,
        }
    }
}

/// A file table's format with its OPTIONS, as DataFusion takes them:
/// `'format.has_header' 'false'`, `'format.delimiter' ';'`,
/// `'format.compression' 'zstd(3)'` (Parquet) or `'gzip'` (CSV, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFormatSpec {
    pub kind: FileFormatKind,
    /// Keyed as DataFusion keys them (`format.delimiter`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl FileFormatSpec {
    pub fn plain(kind: FileFormatKind) -> Self {
        FileFormatSpec {
            kind,
            options: BTreeMap::new(),
        }
    }

    /// A table's format and options, checked: an unknown option or a bad
    /// value is an error naming it, with the options the format knows.
    pub fn new(
        table: &str,
        kind: FileFormatKind,
        options: &HashMap<String, String>,
    ) -> Result<Self> {
        let spec = FileFormatSpec {
            kind,
            options: options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        spec.table_options().map_err(|e| {
            let known: Vec<String> = {
                let mut defaults = TableOptions::default();
                defaults.set_config_format(kind.config_type());
                // With a format set, the entries are that format's, as
                // `format.<key>`.
                defaults
                    .entries()
                    .into_iter()
                    .map(|entry| entry.key)
                    .collect()
            };
            EngineError::plan(format!(
                "table '{table}': {}; STORED AS {} takes {}",
                crate::error::readable(&e)
                    .trim_start_matches("Invalid or Unsupported Configuration: "),
                kind.name().to_uppercase(),
                known.join(", ")
            ))
        })?;
        Ok(spec)
    }

    /// DataFusion's options for this table, from its defaults and OPTIONS.
    fn table_options(&self) -> DfResult<TableOptions> {
        let mut options = TableOptions::default();
        options.set_config_format(self.kind.config_type());
        let given: HashMap<String, String> = self.options.clone().into_iter().collect();
        options.alter_with_string_hash_map(&given)?;
        Ok(options)
    }

    /// The compression of CSV and JSON files (Parquet compresses inside).
    fn file_compression(&self) -> DfResult<FileCompressionType> {
        let options = self.table_options()?;
        Ok(match self.kind {
            FileFormatKind::Parquet => FileCompressionType::UNCOMPRESSED,
            FileFormatKind::Json => options.json.compression.into(),
            FileFormatKind::Csv => options.csv.compression.into(),
        })
    }

    /// Files of this format end so: `.csv`, `.csv.gz`, `.parquet`.
    pub fn extension(&self) -> String {
        let plain = self.kind.name();
        match self.file_compression() {
            Ok(c) if c.is_compressed() => {
                format!("{plain}{}", c.get_ext())
            }
            _ => plain.to_string(),
        }
    }

    /// How DataFusion reads it.
    pub fn datafusion_format(&self) -> DfResult<Arc<dyn FileFormat>> {
        let options = self.table_options()?;
        Ok(match self.kind {
            FileFormatKind::Parquet => {
                Arc::new(ParquetFormat::default().with_options(options.parquet))
            }
            FileFormatKind::Json => Arc::new(JsonFormat::default().with_options(options.json)),
            FileFormatKind::Csv => Arc::new(CsvFormat::default().with_options(options.csv)),
        })
    }

    /// Encodes rows in this format, as one file's bytes.
    pub async fn encode(&self, schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
        let options = self.table_options()?;
        let mut buffer = Vec::new();
        match self.kind {
            FileFormatKind::Parquet => {
                let mut parquet_options = options.parquet;
                // As DataFusion's own writer does: the Arrow schema travels
                // in the file's metadata, so readers get its exact types.
                parquet_options.arrow_schema(&schema);
                let properties = ParquetWriterOptions::try_from(&parquet_options)?;
                let parquet = |e: datafusion::parquet::errors::ParquetError| {
                    EngineError::execution(format!("parquet: {e}"))
                };
                let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
                    &mut buffer,
                    schema,
                    Some(properties.writer_options().clone()),
                )
                .map_err(parquet)?;
                for batch in batches {
                    writer.write(batch).map_err(parquet)?;
                }
                writer.close().map_err(parquet)?;
                return Ok(buffer);
            }
            FileFormatKind::Json => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut buffer);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            FileFormatKind::Csv => {
                let csv = CsvWriterOptions::try_from(&options.csv)?;
                let mut writer = csv.writer_options.build(&mut buffer);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
        }
        let compression = self.file_compression()?;
        if !compression.is_compressed() {
            return Ok(buffer);
        }
        let plain =
            futures::stream::once(
                async move { Ok::<_, DataFusionError>(bytes::Bytes::from(buffer)) },
            );
        let mut compressed = Vec::new();
        let mut stream = compression.convert_to_compress_stream(Box::pin(plain))?;
        while let Some(chunk) = stream.next().await {
            compressed.extend_from_slice(&chunk?);
        }
        Ok(compressed)
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

/// The manifests of batches through `through`, folded into one: the files
/// they leave visible. Readers take the latest compaction and the batches'
/// manifests after it, so a scan reads a bounded number of manifests however
/// long the job ran (Spark's `_spark_metadata` compaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactedManifests {
    pub through: u64,
    /// Paths relative to the workspace root, in commit order.
    pub files: Vec<String>,
}

fn compaction_path(sink_dir: &str, through: u64) -> String {
    format!("{}/compact-{through}.json", manifests_dir(sink_dir))
}

/// What a sink's manifests folder holds: batches with a manifest and the
/// batches compactions run through, each in order.
async fn manifest_log(ws: &Workspace, sink_dir: &str) -> Result<(Vec<u64>, Vec<u64>)> {
    let (mut batches, mut compactions) = (Vec::new(), Vec::new());
    for name in ws.list_names(&manifests_dir(sink_dir)).await? {
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        match stem.strip_prefix("compact-") {
            Some(through) => compactions.extend(through.parse::<u64>().ok()),
            None => batches.extend(stem.parse::<u64>().ok()),
        }
    }
    batches.sort_unstable();
    compactions.sort_unstable();
    Ok((batches, compactions))
}

/// Batches committed to a file sink whose manifests are kept, in order.
pub async fn committed_batches(ws: &Workspace, sink_dir: &str) -> Result<Vec<u64>> {
    Ok(manifest_log(ws, sink_dir).await?.0)
}

/// The files of every committed batch, or None where the directory is no
/// Spate sink (it has no manifests).
pub async fn committed_files(ws: &Workspace, sink_dir: &str) -> Result<Option<Vec<String>>> {
    let (batches, compactions) = manifest_log(ws, sink_dir).await?;
    if batches.is_empty() && compactions.is_empty() {
        return Ok(None);
    }
    let base = compactions.last().copied();
    Ok(Some(
        visible_files(ws, sink_dir, &batches, base, None).await?,
    ))
}

/// The files visible through batch `through` (None: the latest): those of the compaction
/// `base` and of the manifests after it, read newest first down to a batch
/// that replaced everything before it (complete output mode).
async fn visible_files(
    ws: &Workspace,
    sink_dir: &str,
    batches: &[u64],
    base: Option<u64>,
    through: Option<u64>,
) -> Result<Vec<String>> {
    let after = base.map_or(0, |b| b + 1);
    let mut newest_first = Vec::new();
    let mut replaced = false;
    let in_range = |b: &&u64| **b >= after && through.is_none_or(|t| **b <= t);
    for batch in batches.iter().rev().filter(in_range) {
        if let Some(m) = ws
            .get_json::<SinkManifest>(&manifest_path(sink_dir, *batch))
            .await?
        {
            newest_first.push(m.files);
            if m.replaces {
                replaced = true;
                break;
            }
        }
    }
    if !replaced && let Some(base) = base {
        let compacted = ws
            .get_json::<CompactedManifests>(&compaction_path(sink_dir, base))
            .await?;
        newest_first.extend(compacted.map(|c| c.files));
    }
    Ok(newest_first.into_iter().rev().flatten().collect())
}

/// Folds the manifests of batches through `through` into one compaction,
/// then removes what readers no longer need: manifests and compactions up
/// to the previous compaction (the batches since it keep theirs, for
/// followers and re-runs). Safe beside readers and a running job: the
/// compaction is created whole, and only files it covers are removed.
pub async fn compact(ws: &Workspace, sink_dir: &str, through: u64) -> Result<()> {
    let (batches, compactions) = manifest_log(ws, sink_dir).await?;
    if compactions.last().is_some_and(|c| *c >= through) {
        return Ok(());
    }
    let previous = compactions.last().copied();
    let files = visible_files(ws, sink_dir, &batches, previous, Some(through)).await?;
    let compaction = CompactedManifests { through, files };
    ws.create_json(&compaction_path(sink_dir, through), &compaction)
        .await?;
    if let Some(previous) = previous {
        for batch in batches.iter().filter(|b| **b <= previous) {
            ws.delete(&manifest_path(sink_dir, *batch)).await?;
        }
        for older in compactions.iter().filter(|c| **c < previous) {
            ws.delete(&compaction_path(sink_dir, *older)).await?;
        }
    }
    Ok(())
}

/// The rows one committed batch wrote to a file sink, with its manifest;
/// None where the batch is not committed.
pub async fn read_committed_batch(
    ws: &Workspace,
    sink_dir: &str,
    format: &FileFormatSpec,
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
        .map(|f| ws.table_url(f, EntryKind::File))
        .collect::<Result<Vec<_>>>()?;
    let ctx = SessionContext::new();
    ws.register_in(ctx.runtime_env().as_ref());
    let options =
        ListingOptions::new(format.datafusion_format()?).with_file_extension(format.extension());
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
        let kind = FileFormatKind::from_stored_as(&cmd.file_type).ok_or_else(|| {
            EngineError::plan(format!(
                "table '{name}': STORED AS {} is not supported; use KAFKA, PARQUET, JSON or CSV",
                cmd.file_type
            ))
        })?;
        let format = FileFormatSpec::new(&name, kind, &cmd.options)?;
        if !cmd.table_partition_cols.is_empty() {
            return Err(EngineError::plan(format!(
                "table '{name}': PARTITIONED BY is not supported for workspace tables yet; leave it out, and filter by the column instead"
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
        // Without columns, a table takes them from its files, or, as a
        // job's sink, from the job's query (`job::adopt_query_schema`).
        if table.schema.fields().is_empty()
            && let Some(listing) = table.listing_table(state, None).await?
        {
            table.schema = listing.schema();
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
    pub format: FileFormatSpec,
    pub schema: SchemaRef,
}

impl crate::insert::SinkTable for WorkspaceTable {
    fn declared_columns(&self) -> Vec<FieldRef> {
        self.schema.fields().to_vec()
    }

    fn with_columns(&self, columns: Vec<Field>) -> Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(WorkspaceTable {
            name: self.name.clone(),
            workspace: self.workspace.clone(),
            dir: self.dir.clone(),
            format: self.format.clone(),
            schema: Arc::new(Schema::new(columns)),
        }))
    }
}

impl WorkspaceTable {
    /// A listing over the committed files (or the whole directory when it is
    /// no sink); None when there is nothing to read.
    async fn listing_table(
        &self,
        state: &dyn Session,
        schema: Option<SchemaRef>,
    ) -> DfResult<Option<ListingTable>> {
        let ws = &self.workspace;
        let urls: Vec<ListingTableUrl> = match committed_files(ws, &self.dir).await? {
            Some(files) if files.is_empty() => return Ok(None),
            Some(files) => files
                .iter()
                .map(|f| ws.table_url(f, EntryKind::File))
                .collect::<Result<_>>()?,
            None => match ws.entry_kind(&self.dir).await? {
                None => return Ok(None),
                Some(kind) => vec![ws.table_url(&self.dir, kind)?],
            },
        };
        let options = ListingOptions::new(self.format.datafusion_format()?)
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
        if self.schema.fields().is_empty() {
            return Err(EngineError::plan(format!(
                "table '{}' has no columns: declare them, or let a job's INSERT give them (LOCATION '{}' has no files to take them from)",
                self.name, self.dir
            ))
            .into());
        }
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
    format: FileFormatSpec,
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
    pub format: FileFormatSpec,
    /// Batches between two compactions of the manifests.
    pub compact_every: u64,
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
        let path = part_file_name(&self.dir, attempt, &self.format.extension());
        let bytes = self.format.encode(schema, batches).await?;
        self.ws.put(&path, bytes).await?;
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
        self.ws
            .delete_names(&self.dir, |name| {
                name.starts_with(&prefix) && !kept.contains(&name)
            })
            .await?;
        Ok(())
    }

    async fn reset(&self) -> Result<()> {
        self.ws.delete_dir(&self.dir).await
    }

    async fn compact(&self, through: u64) -> Result<()> {
        let every = self.compact_every.max(1);
        if through > 0 && (through + 1).is_multiple_of(every) {
            compact(&self.ws, &self.dir, through).await?;
        }
        Ok(())
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
                read_committed_batch(&self.ws, &self.dir, &self.format, batch).await?
            {
                out.push((batch, rows));
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("{} files in {}/", self.format.kind.name(), self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn commit(ws: &Workspace, batch: u64, replaces: bool) {
        let manifest = SinkManifest {
            batch,
            files: vec![format!("out/part-{batch:08}.parquet")],
            rows: 1,
            replaces,
            writer: None,
        };
        commit_batch(ws, "out", manifest).await.unwrap();
    }

    fn names(ws: &Workspace) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(ws.local_root().unwrap().join(manifests_dir("out")))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn compactions_keep_what_readers_see_and_bound_the_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let sink = FileSink {
            ws: ws.clone(),
            dir: "out".to_string(),
            format: FileFormatSpec::plain(FileFormatKind::Parquet),
            compact_every: 4,
        };
        let mut seen = Vec::new();
        for batch in 0..10 {
            commit(&ws, batch, false).await;
            sink.compact(batch).await.unwrap();
            seen.push(format!("out/part-{batch:08}.parquet"));
            assert_eq!(
                committed_files(&ws, "out").await.unwrap(),
                Some(seen.clone())
            );
        }
        // Compactions at batches 3 and 7; what 3 covers went with 7's.
        assert_eq!(
            names(&ws),
            [
                "4.json",
                "5.json",
                "6.json",
                "7.json",
                "8.json",
                "9.json",
                "compact-3.json",
                "compact-7.json"
            ]
        );
        assert_eq!(sink.latest_committed().await.unwrap(), Some(9));

        // A batch that replaces the table hides what the compaction holds,
        // and a compaction after it starts from it.
        commit(&ws, 10, true).await;
        commit(&ws, 11, false).await;
        let replaced = vec![
            "out/part-00000010.parquet".to_string(),
            "out/part-00000011.parquet".to_string(),
        ];
        assert_eq!(
            committed_files(&ws, "out").await.unwrap(),
            Some(replaced.clone())
        );
        sink.compact(11).await.unwrap();
        assert_eq!(committed_files(&ws, "out").await.unwrap(), Some(replaced));
        let compacted: CompactedManifests = ws
            .get_json(&compaction_path("out", 11))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(compacted.files.len(), 2);
        assert!(!names(&ws).contains(&"compact-3.json".to_string()));
    }
}
