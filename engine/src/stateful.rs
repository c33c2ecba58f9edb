//! The stateful aggregation of a streaming job, one shuffle partition per
//! task. Stage 1 computes DataFusion's partial aggregates per Kafka range;
//! this operator takes the place of the `FinalPartitioned` aggregate above
//! the shuffle:
//!
//! 1. the batch's partial rows are grouped against the `KeyedState`'s
//!    index, and each group's row of state(N-1) and its new rows are merged
//!    by the aggregates' groups accumulators at the group's number: still
//!    partial state, one row per group, which replaces those groups' rows
//!    in the state (aggregates without a groups form, and GROUP BY without
//!    aggregates, take an `AggregateExec` in `PartialReduce` mode instead);
//! 2. rows to emit are finalised, each its own group: closed windows
//!    (append), changed groups (update) or all (complete);
//! 3. windows the watermark closed leave the state (append and update), so
//!    state holds what is open, not history; the rest is saved as state(N).
//!
//! The wrapped `FinalPartitioned` aggregate is kept as the only child, so
//! datafusion-proto carries its group and aggregate expressions.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StructArray, UInt32Array,
};
use datafusion::arrow::compute::{and, cast, concat_batches, filter_record_batch, not, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, aggregate_expressions};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, collect,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::keyed::{Expired, Grouped, KeyedState, StateLayout, WindowEnd};
use crate::state::{PartitionState, StateChange, StateMetrics};

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
    /// The event-time column itself, grouped by: closed once the
    /// watermark is past it, when a row of its time would be late.
    EventTime { column: usize },
    /// The end of a join side's row, grouped by with that side's keys
    /// (an auction's `expires` with its id): closed once the watermark
    /// reaches it plus `after_ms`, when the join can pair the row no more.
    KeyClose { column: usize, after_ms: i64 },
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

    /// A GROUP BY without aggregate functions in append mode: each group
    /// is written once, in the batch that first sees it.
    pub fn emits_first_seen(&self) -> bool {
        self.spec.mode == OutputMode::Append && self.aggregate().aggr_expr().is_empty()
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
                output_schema: agg.schema(),
            },
        };
        let new_rows = agg.input().execute(partition, Arc::clone(&context))?;
        let counters = StateMetrics::new(&self.metrics, partition);
        let output_schema = self.schema();
        let run = async move {
            let new_rows: Vec<RecordBatch> = new_rows.try_collect().await?;
            let before = scope
                .state
                .load_before(scope.batch, &merge.layout())
                .await
                .map_err(DataFusionError::from)?;
            let step = merge
                .run(before, &new_rows, scope.watermark_ms, context)
                .await?;
            let in_memory = step.change.state.memory_size();
            let written = scope
                .state
                .save(scope.batch, step.change)
                .await
                .map_err(DataFusionError::from)?;
            counters.rows.add(step.kept_rows);
            counters.bytes.add(in_memory);
            counters.bytes_written.add(written as usize);
            counters.rows_updated.add(step.updated_rows);
            counters.rows_removed.add(step.removed_rows);
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
    /// The final aggregate's rows: group columns, then each aggregate's value.
    output_schema: SchemaRef,
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

    /// Whether the aggregates can be merged by group number, without a
    /// hash table of their own: there is a GROUP BY (a global aggregate's
    /// rows have no key to index) and each aggregate has a groups
    /// accumulator. A GROUP BY without aggregates (DISTINCT) keeps the
    /// aggregate, which tells new groups from seen ones.
    fn merges_by_group_index(&self) -> bool {
        !self.aggr_expr.is_empty() && self.accumulates_by_group_index()
    }

    fn accumulates_by_group_index(&self) -> bool {
        !self.group_by.expr().is_empty()
            && self.group_by.is_single()
            && self
                .aggr_expr
                .iter()
                .all(|aggregate| aggregate.groups_accumulator_supported())
    }

    /// One partial row per group of `grouped`: its held row in the state
    /// (`held`, in the order of `held_groups`) and the batch's rows merged
    /// by each aggregate's groups accumulator at the group's number. The
    /// state's index grouped them, so no hash table is built here.
    fn merge_grouped(
        &self,
        grouped: &Grouped,
        held: &RecordBatch,
        new_rows: &RecordBatch,
        partial_schema: &SchemaRef,
    ) -> DfResult<RecordBatch> {
        if grouped.groups() == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(partial_schema)));
        }
        let first_rows = UInt32Array::from_iter_values(grouped.first_row.iter().map(|r| *r as u32));
        let mut columns = new_rows.columns()[..self.group_by.num_group_exprs()]
            .iter()
            .map(|column| take(column, &first_rows, None))
            .collect::<Result<Vec<_>, _>>()?;
        let inputs = [
            (held, grouped.held_groups.as_slice()),
            (new_rows, grouped.group_of_row.as_slice()),
        ];
        for mut accumulator in self.merged_accumulators(&inputs, grouped.groups())? {
            columns.extend(accumulator.state(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(partial_schema), columns)?)
    }

    /// Each aggregate's groups accumulator with the partial rows of
    /// `inputs` merged in, row `i` of an input into group `group_of_row[i]`.
    fn merged_accumulators(
        &self,
        inputs: &[(&RecordBatch, &[usize])],
        groups: usize,
    ) -> DfResult<Vec<Box<dyn GroupsAccumulator>>> {
        let merged = aggregate_expressions(
            &self.aggr_expr,
            &AggregateMode::PartialReduce,
            self.group_by.num_group_exprs(),
        )?;
        self.aggr_expr
            .iter()
            .zip(merged)
            .map(|(aggregate, state_columns)| {
                let mut accumulator = aggregate.create_groups_accumulator()?;
                for (rows, group_of_row) in inputs {
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    let states = state_columns
                        .iter()
                        .map(|expr| expr.evaluate(rows)?.into_array(rows.num_rows()))
                        .collect::<DfResult<Vec<_>>>()?;
                    accumulator.merge_batch(&states, group_of_row, groups)?;
                }
                Ok(accumulator)
            })
            .collect()
    }

    /// The final values of partial rows that hold each group once (the
    /// state's rows are): every row is its own group, so each accumulator
    /// merges row `i` into group `i` and no hash table is built. Falls
    /// back to a `Final` aggregate where [`Self::merges_by_group_index`]
    /// would.
    async fn finalize(
        &self,
        rows: RecordBatch,
        partial_schema: &SchemaRef,
        context: Arc<TaskContext>,
    ) -> DfResult<Vec<RecordBatch>> {
        if !self.accumulates_by_group_index() {
            return self
                .run(
                    AggregateMode::Final,
                    vec![rows],
                    Arc::clone(partial_schema),
                    context,
                )
                .await;
        }
        let count = rows.num_rows();
        let evaluate = |expr: &Arc<dyn PhysicalExpr>| expr.evaluate(&rows)?.into_array(count);
        let mut columns = self
            .group_by
            .input_exprs()
            .iter()
            .map(evaluate)
            .collect::<DfResult<Vec<_>>>()?;
        let each_its_own: Vec<usize> = (0..count).collect();
        for mut accumulator in self.merged_accumulators(&[(&rows, &each_its_own)], count)? {
            columns.push(accumulator.evaluate(EmitTo::All)?);
        }
        let finalized = RecordBatch::try_new(Arc::clone(&self.output_schema), columns)?;
        // Batches of the session's size, as an aggregate emits them.
        let size = context.session_config().batch_size().max(1);
        Ok((0..count)
            .step_by(size)
            .map(|start| finalized.slice(start, size.min(count - start)))
            .collect())
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

    /// Append mode over groups without aggregates (SELECT DISTINCT): a
    /// group's row is final when first seen, so it is written then, and
    /// the state only remembers it until its window or time closes.
    fn emits_first_seen(&self) -> bool {
        self.mode == OutputMode::Append && self.rebuild.aggr_expr.is_empty()
    }

    /// What the state's rows are, for the store.
    fn layout(&self) -> StateLayout {
        StateLayout {
            schema: Arc::clone(&self.partial_schema),
            keys: self.groups(),
            window_end: self.window.as_ref().map(EventWindow::end),
        }
    }

    /// Merges the batch's partial rows into the state.
    async fn run(
        &self,
        state: KeyedState,
        new_rows: &[RecordBatch],
        watermark_ms: Option<i64>,
        context: Arc<TaskContext>,
    ) -> DfResult<Step> {
        let new_rows = concat_batches(&self.partial_schema, new_rows)?;
        let merged = match &self.window {
            Some(EventWindow::Session { column }) => {
                self.merge_sessions(state, new_rows, *column, watermark_ms, &context)
                    .await?
            }
            _ => {
                self.merge_keyed(state, new_rows, watermark_ms, &context)
                    .await?
            }
        };
        let updated_rows = match self.mode {
            OutputMode::Append => 0,
            _ => merged.to_emit.num_rows(),
        };
        let emit = if merged.to_emit.num_rows() == 0 {
            Vec::new()
        } else {
            self.rebuild
                .finalize(merged.to_emit, &self.partial_schema, context)
                .await?
        };
        let removed_rows = merged.closed_rows;
        Ok(Step {
            emit,
            kept_rows: merged.state.len(),
            removed_rows,
            updated_rows,
            change: StateChange {
                state: merged.state,
                changed: vec![merged.changed],
                removed: vec![merged.removed],
            },
        })
    }

    /// Only the groups the batch touched are looked up and reduced with
    /// its rows, then put back; a batch costs what it touched, whatever the
    /// state holds (but for complete mode, which shows every group).
    async fn merge_keyed(
        &self,
        mut state: KeyedState,
        new_rows: RecordBatch,
        watermark_ms: Option<i64>,
        context: &Arc<TaskContext>,
    ) -> DfResult<Merged> {
        state.begin_batch();
        let reduced = if self.rebuild.merges_by_group_index() {
            let grouped = state.group(&new_rows)?;
            let held = state.held_rows(&grouped)?;
            let reduced =
                self.rebuild
                    .merge_grouped(&grouped, &held, &new_rows, &self.partial_schema)?;
            state.replace(&grouped, reduced.clone())?;
            reduced
        } else {
            let touched = state.rows_of_groups_in(&new_rows)?;
            let mut reduced = self.reduce(&[touched.clone(), new_rows], context).await?;
            if self.emits_first_seen() {
                // A group seen before is already written and has nothing to
                // change: only new groups enter the state and the output.
                let seen = key_in(&reduced, &touched, self.groups())?;
                reduced = filter_record_batch(&reduced, &not(&seen)?)?;
            }
            state.upsert(reduced.clone())?;
            reduced
        };
        let expired = match (self.mode, watermark_ms) {
            // Complete mode shows every group every time, so nothing leaves.
            (OutputMode::Complete, _) | (_, None) => Expired::none(&self.partial_schema),
            (_, Some(watermark_ms)) => state.expire_since(watermark_ms)?,
        };
        let changed = match (state.layout().window_end, watermark_ms, self.mode) {
            (Some(end), Some(watermark_ms), OutputMode::Append | OutputMode::Update) => {
                filter_record_batch(&reduced, &not(&end.closed(&reduced, watermark_ms)?)?)?
            }
            _ => reduced.clone(),
        };
        let closed_rows = expired.rows.num_rows();
        let to_emit = match self.mode {
            OutputMode::Append if self.emits_first_seen() => reduced,
            OutputMode::Append => expired.rows,
            OutputMode::Update => reduced,
            OutputMode::Complete => concat_batches(&self.partial_schema, &state.rows()?)?,
        };
        Ok(Merged {
            state,
            to_emit,
            changed,
            closed_rows,
            removed: expired.held_before,
        })
    }

    /// Sessions of a key merge across the state's rows, which changes
    /// their keys: every row takes part.
    async fn merge_sessions(
        &self,
        state: KeyedState,
        new_rows: RecordBatch,
        column: usize,
        watermark_ms: Option<i64>,
        context: &Arc<TaskContext>,
    ) -> DfResult<Merged> {
        let schema = Arc::clone(&self.partial_schema);
        let before = concat_batches(&schema, &state.rows()?)?;
        let all = concat_batches(&schema, [&before, &new_rows])?;
        let all = merge_sessions(&all, column, self.groups())?;
        let new_rows = all.slice(before.num_rows(), new_rows.num_rows());
        let reduced = self.reduce(&[all], context).await?;
        let changed = key_in(&reduced, &new_rows, self.groups())?;
        let closed = match (state.layout().window_end, watermark_ms) {
            (Some(end), Some(watermark_ms)) => end.closed(&reduced, watermark_ms)?,
            _ => BooleanArray::from(vec![false; reduced.num_rows()]),
        };
        let keep_mask = match self.mode {
            OutputMode::Complete => BooleanArray::from(vec![true; reduced.num_rows()]),
            _ => not(&closed)?,
        };
        let to_emit = match self.mode {
            OutputMode::Append => filter_record_batch(&reduced, &closed)?,
            OutputMode::Update => filter_record_batch(&reduced, &changed)?,
            OutputMode::Complete => reduced.clone(),
        };
        let keep = filter_record_batch(&reduced, &keep_mask)?;
        let changed = filter_record_batch(&reduced, &and(&changed, &keep_mask)?)?;
        // Sessions merged away leave keys that no row of the state has.
        let removed = filter_record_batch(&before, &not(&key_in(&before, &keep, self.groups())?)?)?;
        Ok(Merged {
            state: KeyedState::from_rows(state.layout().clone(), keep)?,
            to_emit,
            changed,
            closed_rows: removed.num_rows(),
            removed,
        })
    }

    /// `rows` reduced to one partial row per group.
    async fn reduce(
        &self,
        rows: &[RecordBatch],
        context: &Arc<TaskContext>,
    ) -> DfResult<RecordBatch> {
        let schema = Arc::clone(&self.partial_schema);
        let rows = concat_batches(&schema, rows)?;
        if rows.num_rows() == 0 {
            return Ok(rows);
        }
        let reduced = self
            .rebuild
            .run(
                AggregateMode::PartialReduce,
                vec![rows],
                Arc::clone(&schema),
                Arc::clone(context),
            )
            .await?;
        Ok(concat_batches(&schema, &reduced)?)
    }
}

/// A batch merged into the state.
struct Merged {
    /// The state after the batch.
    state: KeyedState,
    /// Partial rows to finalise and emit.
    to_emit: RecordBatch,
    /// Rows of groups the batch changed that stay in the state.
    changed: RecordBatch,
    /// Rows of groups that left the state, which a delta records: those
    /// the state held before the batch.
    removed: RecordBatch,
    /// Groups that left the state, whether held before the batch or not.
    closed_rows: usize,
}

impl EventWindow {
    /// The group column holding the window.
    pub fn column(&self) -> usize {
        match *self {
            EventWindow::Struct { column }
            | EventWindow::Bin { column, .. }
            | EventWindow::Session { column }
            | EventWindow::EventTime { column }
            | EventWindow::KeyClose { column, .. } => column,
        }
    }

    /// How the store finds a row's window end.
    fn end(&self) -> WindowEnd {
        match *self {
            EventWindow::Struct { column } | EventWindow::Session { column } => {
                WindowEnd::StructEnd { column }
            }
            EventWindow::Bin { column, width_ms } => WindowEnd::StartPlus { column, width_ms },
            // Rows older than the watermark are late, so a time ends a
            // millisecond after itself.
            EventWindow::EventTime { column } => WindowEnd::StartPlus {
                column,
                width_ms: 1,
            },
            EventWindow::KeyClose { column, after_ms } => WindowEnd::StartPlus {
                column,
                width_ms: after_ms,
            },
        }
    }
}

/// Which rows of `rows` have a group (their first `keys` columns) that
/// some row of `of` has too.
fn key_in(rows: &RecordBatch, of: &RecordBatch, keys: usize) -> DfResult<BooleanArray> {
    if of.num_rows() == 0 {
        return Ok(BooleanArray::from(vec![false; rows.num_rows()]));
    }
    let fields: Vec<SortField> = rows.schema().fields()[..keys]
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let wanted = converter.convert_columns(&of.columns()[..keys])?;
    let wanted: HashSet<&[u8]> = wanted.iter().map(|r| r.data()).collect();
    let candidates = converter.convert_columns(&rows.columns()[..keys])?;
    Ok(candidates
        .iter()
        .map(|r| Some(wanted.contains(r.data())))
        .collect())
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
