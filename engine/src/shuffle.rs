//! Shuffle through the workspace. A `ShuffleWriterExec` ends a stage: it
//! hash-partitions its task's rows and writes one Arrow IPC file per output
//! partition under the batch's shuffle folder; a `ShuffleReaderExec` starts
//! the next stage and reads every file written for its task's partition.
//!
//! Layout: `<dir>/stage-<s>/to-<p>/from-<task>-<attempt>.arrow`, where `dir` is
//! `_spate/shuffle/<job>/<batch>` for streaming jobs. A gathering reader (a
//! query's merge, see `stages`) reads `to-0` of every producing task, one
//! task's file per partition. A task is named by its
//! attempt; the reader takes one file per producing task (the attempt the
//! controller committed), so a re-run never double-counts.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::{BatchPartitioner, RepartitionExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::workspace::Workspace;

/// Where one task's shuffle files go, known only when the task runs.
#[derive(Debug, Clone)]
pub struct ShuffleScope {
    pub workspace: Workspace,
    /// The batch's shuffle folder, relative to the workspace root.
    pub dir: String,
    /// This task's index within its stage.
    pub task_index: u32,
    pub attempt_id: String,
    /// For a reading task: the partition it reads, and the producing tasks'
    /// committed attempts per stage (`from-<task>-<attempt>` file stems).
    pub reads: Vec<(u32, Vec<String>)>,
    pub partition: u32,
}

/// A streaming job's shuffle folders, one per batch in flight.
pub fn job_dir(job: &str) -> String {
    format!("{}/shuffle/{job}", crate::workspace::SPATE_DIR)
}

/// A streaming batch's shuffle folder, removed once the batch commits.
pub fn batch_dir(job: &str, batch: u64) -> String {
    format!("{}/{batch}", job_dir(job))
}

/// Removes a batch's shuffle files, once the batch committed (or before
/// it re-runs).
pub async fn remove_batch(ws: &Workspace, job: &str, batch: u64) -> Result<()> {
    ws.delete_dir(&batch_dir(job, batch)).await
}

/// Removes every shuffle file of a job (started afresh, or a query ended).
pub async fn remove_job(ws: &Workspace, job: &str) -> Result<()> {
    ws.delete_dir(&job_dir(job)).await
}

/// Removes shuffle folders of batches before `next_batch`, which a crash
/// left behind after their commits.
pub async fn remove_batches_before(ws: &Workspace, job: &str, next_batch: u64) {
    let Ok(names) = ws.list_names(&job_dir(job)).await else {
        return;
    };
    for batch in names.iter().filter_map(|n| n.parse::<u64>().ok()) {
        if batch < next_batch {
            let _ = remove_batch(ws, job, batch).await;
        }
    }
}

pub fn file_stem(task_index: u32, attempt_id: &str) -> String {
    format!("from-{task_index}-{attempt_id}")
}

fn partition_dir(dir: &str, stage: u32, partition: usize) -> String {
    format!("{dir}/stage-{stage}/to-{partition}")
}

/// What a writer task reports: rows per output partition.
pub fn writer_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::UInt32, false),
        Field::new("rows", DataType::UInt64, false),
    ]))
}

fn plan_properties(schema: SchemaRef, partitioning: Partitioning) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        partitioning,
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// Ends a stage: its child is the `RepartitionExec` the stage was cut at,
/// kept so that datafusion-proto carries the hash expressions; the writer
/// runs the repartition's input itself and splits rows with its partitioning.
#[derive(Debug)]
pub struct ShuffleWriterExec {
    stage: u32,
    repartition: Arc<dyn ExecutionPlan>,
    scope: Option<ShuffleScope>,
    properties: Arc<PlanProperties>,
}

impl ShuffleWriterExec {
    pub fn new(
        stage: u32,
        repartition: Arc<dyn ExecutionPlan>,
        scope: Option<ShuffleScope>,
    ) -> Result<Self> {
        if !repartition.is::<RepartitionExec>() {
            return Err(EngineError::plan(
                "internal: a shuffle writer wraps a RepartitionExec",
            ));
        }
        // One partition per input partition: a task runs the one it owns.
        let inputs = repartition.children()[0]
            .output_partitioning()
            .partition_count();
        Ok(ShuffleWriterExec {
            stage,
            repartition,
            scope,
            properties: plan_properties(writer_schema(), Partitioning::UnknownPartitioning(inputs)),
        })
    }

    pub fn stage(&self) -> u32 {
        self.stage
    }

    fn parts(&self) -> (&Arc<dyn ExecutionPlan>, &Partitioning) {
        let repartition = self
            .repartition
            .downcast_ref::<RepartitionExec>()
            .expect("checked in new");
        (repartition.input(), repartition.partitioning())
    }

    pub fn output_partitions(&self) -> usize {
        self.parts().1.partition_count()
    }
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleWriterExec: stage={}, partitioning={}",
            self.stage,
            self.parts().1
        )
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &'static str {
        "ShuffleWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.repartition]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let repartition = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("ShuffleWriterExec needs its child".into()))?;
        Ok(Arc::new(ShuffleWriterExec::new(
            self.stage,
            repartition,
            self.scope.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let scope = self.scope.clone().ok_or_else(|| {
            DataFusionError::Internal("a shuffle writer runs only inside a task".into())
        })?;
        let (input, partitioning) = self.parts();
        let outputs = partitioning.partition_count();
        let mut partitioner = BatchPartitioner::try_new(
            partitioning.clone(),
            Time::new(),
            partition,
            input.output_partitioning().partition_count(),
        )?;
        let mut rows = input.execute(partition, context)?;
        let schema = input.schema();
        let stage = self.stage;
        let output = async move {
            let mut writers: Vec<Option<FileWriter<Vec<u8>>>> =
                (0..outputs).map(|_| None).collect();
            let mut counts = vec![0u64; outputs];
            while let Some(batch) = rows.next().await {
                for slice in partitioner.partition_iter(batch?)? {
                    let (p, slice) = slice?;
                    counts[p] += slice.num_rows() as u64;
                    let writer = match &mut writers[p] {
                        Some(w) => w,
                        empty => empty.insert(FileWriter::try_new(Vec::new(), &schema)?),
                    };
                    writer.write(&crate::ipc::compacted(&slice)?)?;
                }
            }
            let stem = file_stem(scope.task_index, &scope.attempt_id);
            for (p, writer) in writers.into_iter().enumerate() {
                // Empty partitions get a file too: readers then know the task ran.
                let bytes = match writer {
                    Some(mut w) => {
                        w.finish()?;
                        w.into_inner()?
                    }
                    None => {
                        let mut w = FileWriter::try_new(Vec::new(), &schema)?;
                        w.finish()?;
                        w.into_inner()?
                    }
                };
                let path = format!("{}/{stem}.arrow", partition_dir(&scope.dir, stage, p));
                scope
                    .workspace
                    .put(&path, bytes)
                    .await
                    .map_err(DataFusionError::from)?;
            }
            let report = RecordBatch::try_new(
                writer_schema(),
                vec![
                    Arc::new(UInt32Array::from_iter_values(0..outputs as u32)),
                    Arc::new(UInt64Array::from(counts)),
                ],
            )?;
            Ok::<_, DataFusionError>(report)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            writer_schema(),
            futures::stream::once(output),
        )))
    }
}

/// Starts a stage: reads the files the previous stage wrote for one partition.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    stage: u32,
    schema: SchemaRef,
    /// How many partitions the writing stage produced.
    partitions: usize,
    gather: bool,
    scope: Option<ShuffleScope>,
    properties: Arc<PlanProperties>,
}

/// What the codec carries of a reader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShuffleReaderSpec {
    pub stage: u32,
    pub schema: Schema,
    pub partitions: usize,
    /// Reads every producing task's whole output, one task per partition,
    /// instead of one hash partition of all of them.
    #[serde(default)]
    pub gather: bool,
}

impl ShuffleReaderExec {
    pub fn new(spec: ShuffleReaderSpec, scope: Option<ShuffleScope>) -> Self {
        let schema = Arc::new(spec.schema);
        // Planned, it stands for all partitions; in a task, for the task's
        // one, or, gathering, for each producing task's output.
        let partitions = match &scope {
            Some(scope) if spec.gather => scope
                .reads
                .iter()
                .find(|(stage, _)| *stage == spec.stage)
                .map_or(0, |(_, stems)| stems.len()),
            Some(_) => 1,
            None => spec.partitions,
        };
        ShuffleReaderExec {
            stage: spec.stage,
            properties: plan_properties(
                Arc::clone(&schema),
                Partitioning::UnknownPartitioning(partitions.max(1)),
            ),
            schema,
            partitions: spec.partitions,
            gather: spec.gather,
            scope,
        }
    }

    pub fn spec(&self) -> ShuffleReaderSpec {
        ShuffleReaderSpec {
            stage: self.stage,
            schema: self.schema.as_ref().clone(),
            partitions: self.partitions,
            gather: self.gather,
        }
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = if self.gather { ", gather" } else { "" };
        write!(
            f,
            "ShuffleReaderExec: stage={}, partitions={}{mode}",
            self.stage, self.partitions
        )
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &'static str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let scope = self.scope.clone().ok_or_else(|| {
            DataFusionError::Internal("a shuffle reader runs only inside a task".into())
        })?;
        let mut stems = scope
            .reads
            .iter()
            .find(|(stage, _)| *stage == self.stage)
            .map(|(_, stems)| stems.clone())
            .ok_or_else(|| {
                DataFusionError::Internal(format!("no committed writers of stage {}", self.stage))
            })?;
        let read = if self.gather {
            // No producing task (an empty source): an empty partition.
            stems = stems.into_iter().skip(partition).take(1).collect();
            0
        } else {
            scope.partition as usize
        };
        let dir = partition_dir(&scope.dir, self.stage, read);
        let files = futures::stream::iter(stems).then(move |stem| {
            let (workspace, path) = (scope.workspace.clone(), format!("{dir}/{stem}.arrow"));
            async move {
                let bytes = workspace
                    .get(&path)
                    .await?
                    .ok_or_else(|| EngineError::plan(format!("shuffle file {path} is missing")))?;
                let batches = FileReader::try_new(std::io::Cursor::new(bytes), None)?
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok::<_, EngineError>(futures::stream::iter(batches.into_iter().map(Ok)))
            }
        });
        let batches = files.map_err(DataFusionError::from).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }
}
