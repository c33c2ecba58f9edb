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

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StructArray,
};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
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
use crate::state::{PartitionState, StateChange, key_in};
use crate::windows::epoch_millis;

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
    /// `session_window(ts, gap)`: a struct `{start, end}` that grows as
    /// sessions of the same key overlap and merge.
    Session { column: usize },
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

    /// The columns the state holds: the partial aggregate's output, group
    /// columns first.
    pub fn state_schema(&self) -> SchemaRef {
        self.aggregate().input().schema()
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
            partial_schema: self.state_schema(),
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
            metric("state_bytes_written"),
        ];
        let output_schema = self.schema();
        let run = async move {
            let new_rows: Vec<RecordBatch> = new_rows.try_collect().await?;
            let before = scope
                .state
                .load_before(scope.batch, merge.groups())
                .await
                .map_err(DataFusionError::from)?;
            let step = merge
                .run(&before, &new_rows, scope.watermark_ms, context)
                .await?;
            let in_memory = step
                .change
                .state
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum();
            let written = scope
                .state
                .save(scope.batch, Arc::clone(&merge.partial_schema), step.change)
                .await
                .map_err(DataFusionError::from)?;
            let [rows, size, updated, removed, bytes_written] = &counters;
            rows.add(step.kept_rows);
            size.add(in_memory);
            bytes_written.add(written as usize);
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
    change: StateChange,
    kept_rows: usize,
    updated_rows: usize,
    removed_rows: usize,
}

impl Merge {
    /// The group columns, first in every state row.
    fn groups(&self) -> usize {
        self.rebuild.group_by.expr().len()
    }

    /// Merges the batch's partial rows into the state. Only the state rows
    /// of groups the batch touched are reduced with them; the others pass
    /// through as they are, so a batch costs what it touched plus a scan of
    /// the state's keys, not a re-aggregation of all of it.
    async fn run(
        &self,
        before: &[RecordBatch],
        new_rows: &[RecordBatch],
        watermark_ms: Option<i64>,
        context: Arc<TaskContext>,
    ) -> DfResult<Step> {
        let schema = Arc::clone(&self.partial_schema);
        let before = one_batch(&schema, before)?;
        let new_rows = one_batch(&schema, new_rows)?;
        // Sessions of a key merge across the state's rows, which changes
        // their keys: every row takes part.
        let (untouched, touched, new_rows) = match &self.window {
            Some(EventWindow::Session { column }) => {
                let all = concat_batches(&schema, [&before, &new_rows])?;
                let all = merge_sessions(&all, *column, self.groups())?;
                let new_rows = all.slice(before.num_rows(), new_rows.num_rows());
                let before = all.slice(0, before.num_rows());
                (
                    RecordBatch::new_empty(Arc::clone(&schema)),
                    before,
                    new_rows,
                )
            }
            _ => {
                let hit = self.touched_by(&before, &new_rows)?;
                (
                    filter_record_batch(&before, &datafusion::arrow::compute::not(&hit)?)?,
                    filter_record_batch(&before, &hit)?,
                    new_rows,
                )
            }
        };
        let reduce_input = concat_batches(&schema, [&touched, &new_rows])?;
        let reduced = if reduce_input.num_rows() == 0 {
            reduce_input
        } else {
            let reduced = self
                .rebuild
                .run(
                    AggregateMode::PartialReduce,
                    vec![reduce_input],
                    Arc::clone(&schema),
                    Arc::clone(&context),
                )
                .await?;
            concat_batches(&schema, &reduced)?
        };
        // Of the reduced rows, those the batch changed: all of them, but for
        // sessions, where the state's rows were reduced too.
        let changed = match &self.window {
            Some(EventWindow::Session { .. }) => self.touched_by(&reduced, &new_rows)?,
            _ => BooleanArray::from(vec![true; reduced.num_rows()]),
        };
        let merged = concat_batches(&schema, [&untouched, &reduced])?;
        let changed = concat_masks(
            &BooleanArray::from(vec![false; untouched.num_rows()]),
            &changed,
        )?;
        let closed = self.closed(&merged, watermark_ms)?;
        let all = BooleanArray::from(vec![true; merged.num_rows()]);
        let emit_mask = match self.mode {
            OutputMode::Append => closed.clone(),
            OutputMode::Update => changed.clone(),
            OutputMode::Complete => all.clone(),
        };
        let keep_mask = match self.mode {
            // Complete mode shows every group every time, so nothing leaves.
            OutputMode::Complete => all,
            _ => datafusion::arrow::compute::not(&closed)?,
        };
        let to_emit = filter_record_batch(&merged, &emit_mask)?;
        let keep = filter_record_batch(&merged, &keep_mask)?;
        let changed_kept = filter_record_batch(
            &merged,
            &datafusion::arrow::compute::and(&changed, &keep_mask)?,
        )?;
        let removed = match &self.window {
            // Sessions merged away leave keys that no row of the state has.
            Some(EventWindow::Session { .. }) => self.gone(&before, &keep)?,
            _ => filter_record_batch(&merged, &datafusion::arrow::compute::not(&keep_mask)?)?,
        };
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
            change: StateChange {
                state: vec![keep],
                changed: vec![changed_kept],
                removed: vec![removed],
            },
        })
    }

    /// Which rows of `rows` have a group that `of` has too.
    fn touched_by(&self, rows: &RecordBatch, of: &RecordBatch) -> DfResult<BooleanArray> {
        Ok(key_in(rows, of, self.groups())?)
    }

    /// Rows of `before` whose group `after` no longer has.
    fn gone(&self, before: &RecordBatch, after: &RecordBatch) -> DfResult<RecordBatch> {
        let gone = datafusion::arrow::compute::not(&self.touched_by(before, after)?)?;
        Ok(filter_record_batch(before, &gone)?)
    }

    /// Rows whose window ends at or before the watermark.
    fn closed(&self, merged: &RecordBatch, watermark_ms: Option<i64>) -> DfResult<BooleanArray> {
        let (Some(window), Some(watermark_ms)) = (&self.window, watermark_ms) else {
            return Ok(BooleanArray::from(vec![false; merged.num_rows()]));
        };
        let (times, width_ms) = match window {
            EventWindow::Struct { column } | EventWindow::Session { column } => {
                (merged.column(*column).as_struct().column(1), 0)
            }
            EventWindow::Bin { column, width_ms } => (merged.column(*column), *width_ms),
        };
        Ok(epoch_millis(times)?
            .iter()
            .map(|t| Some(t.is_some_and(|t| t + width_ms <= watermark_ms)))
            .collect())
    }
}

/// The rows of `batches` as one batch; the state is one already, and a
/// copy of it per batch is what a large state cannot afford.
fn one_batch(schema: &SchemaRef, batches: &[RecordBatch]) -> DfResult<RecordBatch> {
    match batches {
        [one] => Ok(one.clone()),
        _ => Ok(concat_batches(schema, batches)?),
    }
}

/// `first` followed by `second`, bit by bit rather than value by value:
/// `first` has a bit for every row of the state.
fn concat_masks(first: &BooleanArray, second: &BooleanArray) -> DfResult<BooleanArray> {
    Ok(datafusion::arrow::compute::concat(&[first, second])?
        .as_boolean()
        .clone())
}

/// Gives every row the merged session of its key: sessions of one key
/// (the other group columns) that overlap become one, from the earliest
/// start to the latest end. A row's session is `[ts, ts + gap)`, so rows
/// less than `gap` apart share a session, as in Spark.
fn merge_sessions(rows: &RecordBatch, column: usize, groups: usize) -> DfResult<RecordBatch> {
    if rows.num_rows() == 0 {
        return Ok(rows.clone());
    }
    let keys: Vec<usize> = (0..groups).filter(|i| *i != column).collect();
    let converter = RowConverter::new(
        keys.iter()
            .map(|i| SortField::new(rows.schema().field(*i).data_type().clone()))
            .collect(),
    )?;
    let key_columns: Vec<_> = keys.iter().map(|i| Arc::clone(rows.column(*i))).collect();
    let key_rows = converter.convert_columns(&key_columns)?;
    let sessions = rows.column(column).as_struct();
    let bound = |i: usize| -> DfResult<Vec<i64>> {
        let values = cast(sessions.column(i), &DataType::Int64)?;
        Ok(values.as_primitive::<Int64Type>().values().to_vec())
    };
    let (starts, ends) = (bound(0)?, bound(1)?);
    let mut order: Vec<usize> = (0..rows.num_rows()).collect();
    order.sort_by(|a, b| {
        key_rows
            .row(*a)
            .cmp(&key_rows.row(*b))
            .then(starts[*a].cmp(&starts[*b]))
    });
    let (mut merged_starts, mut merged_ends) = (starts.clone(), ends.clone());
    let mut run: Vec<usize> = Vec::new();
    let mut run_end = i64::MIN;
    let mut close = |run: &mut Vec<usize>, end: i64| {
        if let Some(first) = run.first() {
            let start = starts[*first];
            for &i in run.iter() {
                merged_starts[i] = start;
                merged_ends[i] = end;
            }
        }
        run.clear();
    };
    for (n, &i) in order.iter().enumerate() {
        let same_key = n > 0 && key_rows.row(order[n - 1]) == key_rows.row(i);
        if !(same_key && starts[i] < run_end) {
            close(&mut run, run_end);
            run_end = i64::MIN;
        }
        run.push(i);
        run_end = run_end.max(ends[i]);
    }
    close(&mut run, run_end);
    let time_type = sessions.column(0).data_type().clone();
    let as_time = |v: Vec<i64>| cast(&(Arc::new(Int64Array::from(v)) as ArrayRef), &time_type);
    let merged = StructArray::try_new(
        sessions.fields().clone(),
        vec![as_time(merged_starts)?, as_time(merged_ends)?],
        sessions.nulls().cloned(),
    )?;
    let mut columns = rows.columns().to_vec();
    columns[column] = Arc::new(merged);
    Ok(RecordBatch::try_new(rows.schema(), columns)?)
}
