//! The stateful aggregation of a streaming job, one shuffle partition per
//! task. Stage 1 computes DataFusion's partial aggregates per Kafka range;
//! this operator takes the place of the `FinalPartitioned` aggregate above
//! the shuffle:
//!
//! 1. state(N-1) + this batch's partial rows are merged with an
//!    `AggregateExec` in `PartialReduce` mode: still partial state, one row
//!    per group;
//! 2. rows to emit are finalised with an `AggregateExec` in `Final` mode:
//!    closed windows (append), changed groups (update) or all (complete);
//! 3. windows the watermark closed leave the state (append and update), so
//!    state holds what is open, not history; the rest is saved as state(N).
//!
//! The wrapped `FinalPartitioned` aggregate is kept as the only child, so
//! datafusion-proto carries its group and aggregate expressions.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, collect,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::state::PartitionState;

/// Spark's output modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputMode {
    /// Each group once, when the watermark closes its window.
    #[default]
    Append,
    /// The groups a batch changed, every batch.
    Update,
    /// Every group, every batch.
    Complete,
}

impl OutputMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_lowercase().as_str() {
            "append" => Some(OutputMode::Append),
            "update" => Some(OutputMode::Update),
            "complete" => Some(OutputMode::Complete),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputMode::Append => "append",
            OutputMode::Update => "update",
            OutputMode::Complete => "complete",
        }
    }
}

/// What the codec carries besides the wrapped aggregate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatefulSpec {
    /// Names the operator's state folder; the stage id.
    pub operator: u32,
    pub mode: OutputMode,
    /// The group key that is an event-time window, which the watermark closes.
    pub window: Option<EventWindow>,
}

/// A group column holding event-time windows, and how to find their end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventWindow {
    /// `window(...)`: a struct `{start, end}`.
    Struct { column: usize },
    /// `date_bin(width, ts)`: the start; the end is `width` later.
    Bin { column: usize, width_ms: i64 },
}

/// Known only inside a task.
#[derive(Debug, Clone)]
pub struct StateScope {
    pub state: PartitionState,
    pub batch: u64,
    /// Windows ending at or before it are closed (Unix ms).
    pub watermark_ms: Option<i64>,
}

#[derive(Debug)]
pub struct StatefulAggregateExec {
    spec: StatefulSpec,
    /// `AggregateExec` in `FinalPartitioned` mode over the partial rows.
    aggregate: Arc<dyn ExecutionPlan>,
    scope: Option<StateScope>,
    metrics: ExecutionPlanMetricsSet,
}

impl StatefulAggregateExec {
    pub fn new(
        spec: StatefulSpec,
        aggregate: Arc<dyn ExecutionPlan>,
        scope: Option<StateScope>,
    ) -> Result<Self> {
        let Some(agg) = aggregate.downcast_ref::<AggregateExec>() else {
            return Err(EngineError::plan(
                "internal: a stateful aggregate wraps an AggregateExec",
            ));
        };
        if !matches!(
            agg.mode(),
            AggregateMode::FinalPartitioned | AggregateMode::Final
        ) {
            return Err(EngineError::plan(format!(
                "internal: a stateful aggregate wraps a final aggregate, not {:?}",
                agg.mode()
            )));
        }
        Ok(StatefulAggregateExec {
            spec,
            aggregate,
            scope,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn spec(&self) -> &StatefulSpec {
        &self.spec
    }

    fn aggregate(&self) -> &AggregateExec {
        self.aggregate
            .downcast_ref::<AggregateExec>()
            .expect("checked in new")
    }
}

impl DisplayAs for StatefulAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StatefulAggregateExec: operator={}, mode={}",
            self.spec.operator,
            self.spec.mode.name()
        )
    }
}

impl ExecutionPlan for StatefulAggregateExec {
    fn name(&self) -> &'static str {
        "StatefulAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.aggregate]
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
        let aggregate = children.pop().ok_or_else(|| {
            DataFusionError::Internal("StatefulAggregateExec needs its child".into())
        })?;
        Ok(Arc::new(StatefulAggregateExec::new(
            self.spec.clone(),
            aggregate,
            self.scope.clone(),
        )?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let scope = self.scope.clone().ok_or_else(|| {
            DataFusionError::Internal("a stateful aggregate runs only inside a task".into())
        })?;
        let agg = self.aggregate();
        let merge = Merge {
            mode: self.spec.mode,
            partial_schema: agg.input().schema(),
            window: self.spec.window.clone(),
            rebuild: AggregateParts {
                group_by: Arc::new(agg.group_expr().clone()),
                aggr_expr: agg.aggr_expr().to_vec(),
                filter_expr: agg.filter_expr().to_vec(),
                input_schema: agg.input_schema(),
            },
        };
        let new_rows = agg.input().execute(partition, Arc::clone(&context))?;
        let metric =
            |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, partition);
        let counters = [
            metric("state_rows"),
            metric("state_bytes"),
            metric("state_rows_updated"),
            metric("state_rows_removed"),
        ];
        let output_schema = self.schema();
        let run = async move {
            let new_rows: Vec<RecordBatch> = new_rows.try_collect().await?;
            let before = scope
                .state
                .load_before(scope.batch)
                .await
                .map_err(DataFusionError::from)?;
            let step = merge
                .run(&before, &new_rows, scope.watermark_ms, context)
                .await?;
            let bytes = scope
                .state
                .save(scope.batch, Arc::clone(&merge.partial_schema), step.keep)
                .await
                .map_err(DataFusionError::from)?;
            let [rows, size, updated, removed] = &counters;
            rows.add(step.kept_rows);
            size.add(bytes as usize);
            updated.add(step.updated_rows);
            removed.add(step.removed_rows);
            Ok::<_, DataFusionError>(futures::stream::iter(step.emit.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            output_schema,
            futures::stream::once(run).try_flatten(),
        )))
    }
}

/// How to rebuild the aggregate in other modes.
struct AggregateParts {
    group_by: Arc<datafusion::physical_plan::aggregates::PhysicalGroupBy>,
    aggr_expr: Vec<Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>>,
    filter_expr: Vec<Option<Arc<dyn PhysicalExpr>>>,
    input_schema: SchemaRef,
}

impl AggregateParts {
    async fn run(
        &self,
        mode: AggregateMode,
        rows: Vec<RecordBatch>,
        schema: SchemaRef,
        context: Arc<TaskContext>,
    ) -> DfResult<Vec<RecordBatch>> {
        let input = MemorySourceConfig::try_new_exec(&[rows], schema, None)?;
        let aggregate = AggregateExec::try_new(
            mode,
            Arc::clone(&self.group_by),
            self.aggr_expr.clone(),
            self.filter_expr.clone(),
            input,
            Arc::clone(&self.input_schema),
        )?;
        collect(Arc::new(aggregate), context).await
    }
}

struct Merge {
    mode: OutputMode,
    /// Group columns followed by the aggregates' state columns.
    partial_schema: SchemaRef,
    window: Option<EventWindow>,
    rebuild: AggregateParts,
}

struct Step {
    emit: Vec<RecordBatch>,
    keep: Vec<RecordBatch>,
    kept_rows: usize,
    updated_rows: usize,
    removed_rows: usize,
}

impl Merge {
    async fn run(
        &self,
        before: &[RecordBatch],
        new_rows: &[RecordBatch],
        watermark_ms: Option<i64>,
        context: Arc<TaskContext>,
    ) -> DfResult<Step> {
        let schema = Arc::clone(&self.partial_schema);
        let mut input: Vec<RecordBatch> = before.to_vec();
        input.extend(new_rows.iter().cloned());
        let merged = if input.iter().all(|b| b.num_rows() == 0) {
            RecordBatch::new_empty(Arc::clone(&schema))
        } else {
            let reduced = self
                .rebuild
                .run(
                    AggregateMode::PartialReduce,
                    input,
                    Arc::clone(&schema),
                    Arc::clone(&context),
                )
                .await?;
            concat_batches(&schema, &reduced)?
        };
        let closed = self.closed(&merged, watermark_ms)?;
        let changed = self.changed(&merged, new_rows)?;
        let emit_mask = match self.mode {
            OutputMode::Append => closed.clone(),
            OutputMode::Update => changed,
            OutputMode::Complete => BooleanArray::from(vec![true; merged.num_rows()]),
        };
        let keep_mask = match self.mode {
            // Complete mode shows every group every time, so nothing leaves.
            OutputMode::Complete => BooleanArray::from(vec![true; merged.num_rows()]),
            _ => datafusion::arrow::compute::not(&closed)?,
        };
        let to_emit = filter_record_batch(&merged, &emit_mask)?;
        let keep = filter_record_batch(&merged, &keep_mask)?;
        let updated_rows = match self.mode {
            OutputMode::Append => 0,
            _ => to_emit.num_rows(),
        };
        let emit = if to_emit.num_rows() == 0 {
            Vec::new()
        } else {
            self.rebuild
                .run(AggregateMode::Final, vec![to_emit], schema, context)
                .await?
        };
        Ok(Step {
            emit,
            kept_rows: keep.num_rows(),
            removed_rows: merged.num_rows() - keep.num_rows(),
            updated_rows,
            keep: vec![keep],
        })
    }

    /// Rows whose window ends at or before the watermark.
    fn closed(&self, merged: &RecordBatch, watermark_ms: Option<i64>) -> DfResult<BooleanArray> {
        let (Some(window), Some(watermark_ms)) = (&self.window, watermark_ms) else {
            return Ok(BooleanArray::from(vec![false; merged.num_rows()]));
        };
        let (times, width_ms) = match window {
            EventWindow::Struct { column } => (merged.column(*column).as_struct().column(1), 0),
            EventWindow::Bin { column, width_ms } => (merged.column(*column), *width_ms),
        };
        let millis = cast(times, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let millis = cast(&millis, &DataType::Int64)?;
        Ok(millis
            .as_primitive::<Int64Type>()
            .iter()
            .map(|t| Some(t.is_some_and(|t| t + width_ms <= watermark_ms)))
            .collect())
    }

    /// Rows whose group this batch's input touched.
    fn changed(&self, merged: &RecordBatch, new_rows: &[RecordBatch]) -> DfResult<BooleanArray> {
        let groups = self.rebuild.group_by.expr().len();
        let fields: Vec<SortField> = (0..groups)
            .map(|i| SortField::new(self.partial_schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let mut touched = HashSet::new();
        for batch in new_rows {
            let rows = converter.convert_columns(&batch.columns()[..groups])?;
            touched.extend(rows.iter().map(|r| r.as_ref().to_vec()));
        }
        let rows = converter.convert_columns(&merged.columns()[..groups])?;
        Ok(rows
            .iter()
            .map(|r| Some(touched.contains(r.as_ref())))
            .collect())
    }
}
