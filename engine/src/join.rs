//! A join of two streams, one shuffle partition per task (Spark's
//! stream-stream join, in micro-batches). Both sides are shuffled by the
//! join keys; each side's rows are kept in the state until the watermark
//! makes a match with a future row of the other side impossible.
//!
//! Each batch, with L and R the rows the state holds and ΔL, ΔR the
//! batch's new rows:
//!
//! 1. the new matches are (L ∪ ΔL) ⋈ ΔR and ΔL ⋈ R, computed by
//!    DataFusion's own hash join (inner, with the query's keys and filter);
//! 2. ΔL and ΔR join the state; an outer side marks its rows that matched;
//! 3. rows whose time bound the watermark passed leave the state, and an
//!    outer side emits those that never matched, with nulls for the other
//!    side (append mode, as Spark does).
//!
//! A row's time bound comes from the join condition (`b.ts BETWEEN a.ts
//! AND a.ts + INTERVAL '1 hour'`): see `expiry_of`. A join without one (a
//! regular join) keeps its rows, and its state grows with them, as in
//! Spark and Flink. Each side is a `KeyedState` keyed by a row number, so
//! it is saved as deltas and snapshots and cached like an aggregation's.
//!
//! The wrapped `HashJoinExec` (partitioned, over the two shuffles) is kept
//! as the only child, so datafusion-proto carries its keys and filter.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, new_null_array,
};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinSide, JoinType, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal, TryCastExpr};
use datafusion::physical_expr::{ScalarFunctionExpr, split_conjunction};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, collect,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::keyed::{Expired, KeyedState, StateLayout, WindowEnd};
use crate::state::{PartitionState, StateChange, StateMetrics};

/// The column numbering a side's rows in its state (its group key).
const ROW: &str = "_spate_row";
/// Whether a row of an outer side has matched.
const MATCHED: &str = "_spate_matched";

/// When a row is done with: once the watermark reaches its time column
/// plus `after_ms`. A join side's row can then match no future row of the
/// other side; a ranked row's number is final (`first_rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    /// The column of the input holding the row's time.
    pub column: usize,
    pub after_ms: i64,
}

/// What the codec carries besides the wrapped join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamJoinSpec {
    /// Names the operator's state folders (one per side).
    pub operator: u32,
    pub left: Option<Expiry>,
    pub right: Option<Expiry>,
}

/// Known only inside a task.
#[derive(Debug, Clone)]
pub struct JoinScope {
    pub left: PartitionState,
    pub right: PartitionState,
    pub batch: u64,
    /// The batch's watermark (Unix ms): rows of the batch are not older.
    pub watermark_ms: Option<i64>,
}

/// The state folder of one side of a join operator's partition.
pub fn side_dir(job: &str, operator: u32, side: JoinSide, partition: u32) -> String {
    let side = match side {
        JoinSide::Left => "left",
        _ => "right",
    };
    format!(
        "{}/state/{operator}-{side}/{partition}",
        crate::checkpoint::job_dir(job)
    )
}

#[derive(Debug)]
pub struct StreamJoinExec {
    spec: StreamJoinSpec,
    /// A partitioned `HashJoinExec` over the two sides' shuffles.
    join: Arc<dyn ExecutionPlan>,
    scope: Option<JoinScope>,
    metrics: ExecutionPlanMetricsSet,
}

impl StreamJoinExec {
    pub fn new(
        spec: StreamJoinSpec,
        join: Arc<dyn ExecutionPlan>,
        scope: Option<JoinScope>,
    ) -> Result<Self> {
        if !join.is::<HashJoinExec>() {
            return Err(EngineError::plan(
                "internal: a stream join wraps a HashJoinExec",
            ));
        }
        Ok(StreamJoinExec {
            spec,
            join,
            scope,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn spec(&self) -> &StreamJoinSpec {
        &self.spec
    }

    /// The schemas of the rows each side keeps (before the state's own
    /// columns): left, then right.
    pub fn side_schemas(&self) -> [SchemaRef; 2] {
        [self.join().left().schema(), self.join().right().schema()]
    }

    /// The wrapped partitioned hash join.
    pub fn join(&self) -> &HashJoinExec {
        self.join
            .downcast_ref::<HashJoinExec>()
            .expect("checked in new")
    }
}

impl DisplayAs for StreamJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let join = self.join();
        let bound = |e: &Option<Expiry>, side: &Arc<dyn ExecutionPlan>| {
            e.map_or("none".to_string(), |e| {
                let schema = side.schema();
                let column = schema
                    .fields()
                    .get(e.column)
                    .map_or_else(|| format!("column {}", e.column), |f| f.name().clone());
                format!("watermark >= {column} + {} ms", e.after_ms)
            })
        };
        write!(
            f,
            "StreamJoinExec: operator={}, type={}, left kept until {}, right kept until {}",
            self.spec.operator,
            join.join_type(),
            bound(&self.spec.left, join.left()),
            bound(&self.spec.right, join.right())
        )
    }
}

impl ExecutionPlan for StreamJoinExec {
    fn name(&self) -> &'static str {
        "StreamJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.join.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.join]
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
        let join = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("StreamJoinExec needs its child".into()))?;
        Ok(Arc::new(StreamJoinExec::new(
            self.spec.clone(),
            join,
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
            DataFusionError::Internal("a stream join runs only inside a task".into())
        })?;
        let join = self.join();
        let step = JoinStep {
            on: join.on().to_vec(),
            filter: join.filter().cloned(),
            null_equality: join.null_equality(),
            projection: join.projection.as_ref().map(|p| p.to_vec()),
            left: Side::new(
                join.left().schema(),
                self.spec.left,
                outer_left(join.join_type()),
            ),
            right: Side::new(
                join.right().schema(),
                self.spec.right,
                outer_right(join.join_type()),
            ),
            output: self.schema(),
        };
        let left_new = join.left().execute(partition, Arc::clone(&context))?;
        let right_new = join.right().execute(partition, Arc::clone(&context))?;
        let counters = StateMetrics::new(&self.metrics, partition);
        let output_schema = self.schema();
        let run = async move {
            let left_new: Vec<RecordBatch> = left_new.try_collect().await?;
            let right_new: Vec<RecordBatch> = right_new.try_collect().await?;
            let left = scope
                .left
                .load_before(scope.batch, &step.left.layout)
                .await?;
            let right = scope
                .right
                .load_before(scope.batch, &step.right.layout)
                .await?;
            let done = step
                .run(
                    (left, left_new),
                    (right, right_new),
                    scope.batch,
                    scope.watermark_ms,
                    context,
                )
                .await?;
            counters
                .save(
                    scope.batch,
                    [(&scope.left, done.left), (&scope.right, done.right)],
                )
                .await?;
            Ok::<_, DataFusionError>(futures::stream::iter(done.emit.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            output_schema,
            futures::stream::once(run).try_flatten(),
        )))
    }
}

fn outer_left(join_type: &JoinType) -> bool {
    matches!(join_type, JoinType::Left | JoinType::Full)
}

fn outer_right(join_type: &JoinType) -> bool {
    matches!(join_type, JoinType::Right | JoinType::Full)
}

/// One side's rows as the state keeps them: `[_spate_row, the side's
/// columns..., _spate_matched]`.
struct Side {
    /// The side's own columns.
    columns: usize,
    layout: StateLayout,
    /// Unmatched rows are emitted when they leave the state.
    outer: bool,
}

impl Side {
    fn new(input: SchemaRef, expiry: Option<Expiry>, outer: bool) -> Self {
        let mut fields = vec![Arc::new(Field::new(ROW, DataType::Int64, false))];
        fields.extend(input.fields().iter().cloned());
        fields.push(Arc::new(Field::new(MATCHED, DataType::Boolean, false)));
        Side {
            columns: input.fields().len(),
            layout: StateLayout {
                schema: Arc::new(Schema::new(fields)),
                keys: 1,
                window_end: expiry.map(|e| WindowEnd::StartPlus {
                    column: e.column + 1,
                    width_ms: e.after_ms,
                }),
            },
            outer,
        }
    }

    /// The batch's new rows in the state's layout, numbered after the
    /// batch, unmatched.
    fn number(&self, rows: &[RecordBatch], batch: u64) -> DfResult<RecordBatch> {
        let input = Arc::new(Schema::new(
            self.layout.schema.fields()[1..=self.columns].to_vec(),
        ));
        let rows = concat_batches(&input, rows)?;
        let first = (batch as i64) << 32;
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (0..rows.num_rows() as i64).map(|i| first + i),
        ));
        let matched: ArrayRef = Arc::new(BooleanArray::from(vec![false; rows.num_rows()]));
        let mut columns = vec![ids];
        columns.extend(rows.columns().iter().cloned());
        columns.push(matched);
        Ok(RecordBatch::try_new(
            Arc::clone(&self.layout.schema),
            columns,
        )?)
    }

    /// State rows as the join reads them: the side's columns, then the row
    /// number (so the join's column indices stay as planned).
    fn for_join(&self, rows: &RecordBatch) -> DfResult<RecordBatch> {
        let mut order: Vec<usize> = (1..=self.columns).collect();
        order.push(0);
        Ok(rows.project(&order)?)
    }

    /// The rows of `rows` whose numbers are in `matched`, flagged matched.
    fn newly_matched(&self, rows: &RecordBatch, matched: &HashSet<i64>) -> DfResult<RecordBatch> {
        let ids = rows.column(0).as_primitive::<Int64Type>();
        let flags = rows.column(self.columns + 1).as_boolean();
        let mask: BooleanArray = (0..rows.num_rows())
            .map(|i| Some(!flags.value(i) && matched.contains(&ids.value(i))))
            .collect();
        let newly = filter_record_batch(rows, &mask)?;
        let mut columns = newly.columns().to_vec();
        columns[self.columns + 1] = Arc::new(BooleanArray::from(vec![true; newly.num_rows()]));
        Ok(RecordBatch::try_new(newly.schema(), columns)?)
    }

    /// Of the rows that left the state, those that never matched.
    fn unmatched(&self, gone: &RecordBatch) -> DfResult<RecordBatch> {
        let matched = gone.column(self.columns + 1).as_boolean();
        Ok(filter_record_batch(gone, &not(matched)?)?)
    }
}

/// Which input of a join its hash table is built on.
#[derive(Debug, Clone, Copy)]
enum Build {
    Left,
    Right,
}

/// A batch's work, from the task's scope and the wrapped join.
struct JoinStep {
    on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
    filter: Option<datafusion::physical_plan::joins::utils::JoinFilter>,
    null_equality: datafusion::common::NullEquality,
    /// Columns of `left ++ right` the join outputs.
    projection: Option<Vec<usize>>,
    left: Side,
    right: Side,
    output: SchemaRef,
}

struct Joined {
    emit: Vec<RecordBatch>,
    left: StateChange,
    right: StateChange,
}

impl JoinStep {
    async fn run(
        &self,
        (mut left, left_new): (KeyedState, Vec<RecordBatch>),
        (mut right, right_new): (KeyedState, Vec<RecordBatch>),
        batch: u64,
        watermark_ms: Option<i64>,
        context: Arc<TaskContext>,
    ) -> DfResult<Joined> {
        let left_new = self.left.number(&left_new, batch)?;
        let right_new = self.right.number(&right_new, batch)?;
        // The state's rows as they lie, segment by segment: copying them
        // into one batch cost a copy of the whole state every batch.
        let left_old = left.rows()?;
        let right_old = right.rows()?;
        // (L ∪ ΔL) ⋈ ΔR, then ΔL ⋈ R: every new pair once. Each hash table
        // is built on the batch's new rows and probed with the state's, so
        // a batch does not hash the state into a table of its own.
        let left_all: Vec<&RecordBatch> = left_old.iter().chain([&left_new]).collect();
        let mut pairs = self
            .pairs(&left_all, &[&right_new], Build::Right, &context)
            .await?;
        let right_all: Vec<&RecordBatch> = right_old.iter().collect();
        pairs.extend(
            self.pairs(&[&left_new], &right_all, Build::Left, &context)
                .await?,
        );

        let mut emit = Vec::with_capacity(pairs.len());
        let (mut left_ids, mut right_ids) = (HashSet::new(), HashSet::new());
        let left_id = self.left.columns;
        let right_id = self.left.columns + 1 + self.right.columns;
        for pair in &pairs {
            if pair.num_rows() == 0 {
                continue;
            }
            if self.left.outer {
                left_ids.extend(pair.column(left_id).as_primitive::<Int64Type>().values());
            }
            if self.right.outer {
                right_ids.extend(pair.column(right_id).as_primitive::<Int64Type>().values());
            }
            let columns = self.output_columns(|i| Arc::clone(pair.column(i)));
            emit.push(RecordBatch::try_new(Arc::clone(&self.output), columns)?);
        }

        let mut changes = Vec::with_capacity(2);
        for (side, state, old, new, matched) in [
            (&self.left, &mut left, &left_old, left_new, &left_ids),
            (&self.right, &mut right, &right_old, right_new, &right_ids),
        ] {
            let new = if side.outer {
                let flags: BooleanArray = new
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .map(|id| Some(matched.contains(id)))
                    .collect();
                let mut columns = new.columns().to_vec();
                columns[side.columns + 1] = Arc::new(flags);
                RecordBatch::try_new(new.schema(), columns)?
            } else {
                new
            };
            state.begin_batch();
            let mut changed = vec![new.clone()];
            state.upsert(new)?;
            if side.outer && !matched.is_empty() {
                for old in old {
                    let newly = side.newly_matched(old, matched)?;
                    if newly.num_rows() > 0 {
                        state.upsert(newly.clone())?;
                        changed.push(newly);
                    }
                }
            }
            let gone = match watermark_ms {
                Some(watermark_ms) => state.expire_since(watermark_ms)?,
                None => Expired::none(&side.layout.schema),
            };
            let changed = state.without_groups_of(&changed, &gone.rows)?;
            changes.push((changed, gone));
        }
        let (right_changed, right_gone) = changes.pop().expect("two sides");
        let (left_changed, left_gone) = changes.pop().expect("two sides");
        if self.left.outer {
            emit.push(self.unmatched_left(&self.left.unmatched(&left_gone.rows)?)?);
        }
        if self.right.outer {
            emit.push(self.unmatched_right(&self.right.unmatched(&right_gone.rows)?)?);
        }
        emit.retain(|b| b.num_rows() > 0);
        Ok(Joined {
            emit,
            left: StateChange {
                state: left,
                changed: left_changed,
                // Groups that came and went within the batch were never saved.
                removed: vec![left_gone.held_before],
            },
            right: StateChange {
                state: right,
                changed: right_changed,
                removed: vec![right_gone.held_before],
            },
        })
    }

    /// The matching pairs of `left` and `right` (state-layout batches):
    /// `[left columns, left row, right columns, right row]`, the hash table
    /// built on the `build` side.
    async fn pairs(
        &self,
        left: &[&RecordBatch],
        right: &[&RecordBatch],
        build: Build,
        context: &Arc<TaskContext>,
    ) -> DfResult<Vec<RecordBatch>> {
        let for_join = |side: &Side, batches: &[&RecordBatch]| {
            batches
                .iter()
                .filter(|b| b.num_rows() > 0)
                .map(|b| side.for_join(b))
                .collect::<DfResult<Vec<_>>>()
        };
        let (left, right) = (for_join(&self.left, left)?, for_join(&self.right, right)?);
        let (Some(left_schema), Some(right_schema)) = (
            left.first().map(RecordBatch::schema),
            right.first().map(RecordBatch::schema),
        ) else {
            return Ok(Vec::new());
        };
        let join = HashJoinExec::try_new(
            MemorySourceConfig::try_new_exec(&[left], left_schema, None)?,
            MemorySourceConfig::try_new_exec(&[right], right_schema, None)?,
            self.on.clone(),
            self.filter.clone(),
            &JoinType::Inner,
            None,
            PartitionMode::CollectLeft,
            self.null_equality,
            false,
        )?;
        let plan: Arc<dyn ExecutionPlan> = match build {
            Build::Left => Arc::new(join),
            // The same pairs, in the same columns, with right built.
            Build::Right => join.swap_inputs(PartitionMode::CollectLeft)?,
        };
        collect(plan, Arc::clone(context)).await
    }

    /// The output's columns, given how to get column `i` of
    /// `[left columns, left row, right columns, right row]`.
    fn output_columns(&self, column: impl Fn(usize) -> ArrayRef) -> Vec<ArrayRef> {
        let both = self.left.columns + self.right.columns;
        let chosen: Vec<usize> = match &self.projection {
            Some(projection) => projection.clone(),
            None => (0..both).collect(),
        };
        chosen
            .into_iter()
            .map(|i| {
                if i < self.left.columns {
                    column(i)
                } else {
                    column(i + 1)
                }
            })
            .collect()
    }

    /// Left rows that never matched, with nulls for the right side.
    fn unmatched_left(&self, rows: &RecordBatch) -> DfResult<RecordBatch> {
        self.padded(rows, |i| (i < self.left.columns).then_some(i + 1))
    }

    /// Right rows that never matched, with nulls for the left side.
    fn unmatched_right(&self, rows: &RecordBatch) -> DfResult<RecordBatch> {
        let first_right = self.left.columns + 1;
        self.padded(rows, |i| {
            (first_right..first_right + self.right.columns)
                .contains(&i)
                .then(|| i - first_right + 1)
        })
    }

    /// An output row per state row: `from(i)` is the state column that
    /// gives pair column `i`, none for the other side's nulls.
    fn padded(
        &self,
        rows: &RecordBatch,
        from: impl Fn(usize) -> Option<usize>,
    ) -> DfResult<RecordBatch> {
        let n = rows.num_rows();
        let mut fields = self.output.fields().iter();
        let columns = self.output_columns(|i| match from(i) {
            Some(c) => Arc::clone(rows.column(c)),
            None => new_null_array(&DataType::Null, 0),
        });
        // Nulls take the output field's type.
        let columns = columns
            .into_iter()
            .map(|c| {
                let field = fields.next().expect("one field per column");
                if c.data_type() == &DataType::Null {
                    new_null_array(field.data_type(), n)
                } else {
                    c
                }
            })
            .collect();
        Ok(RecordBatch::try_new(Arc::clone(&self.output), columns)?)
    }
}

/// An expression over one column of one side of a join, as the range it
/// lies in: `column + low ..= column + high` (ms).
#[derive(Debug, Clone, Copy)]
struct SideRange {
    side: JoinSide,
    column: usize,
    low: i64,
    high: i64,
}

/// The time bounds a join's condition puts on each side's rows: a row of
/// side Y can be dropped once no future row of side X can match it.
/// `floor(side, column)` is `k` where rows of later batches hold at least
/// `W + k` in that column, W being the watermark (0 for a table's
/// watermark column, whose older rows are late; 1 for the end of a window
/// an aggregation emitted once closed); none where nothing bounds it. So a
/// conjunct `X.t <= Y.u + c` ends Y's row once `W + k > u + c`, that is
/// once `W >= u + c - k + 1`. Equal join keys count both ways, which
/// bounds joins of windows by their ends. A side of a conjunct may be a
/// range rather than a column plus a constant (`date_bin(w, t)` lies in
/// `t - w + 1 ..= t`): X's lowest and Y's highest value then count.
pub fn expiry_of(
    join: &HashJoinExec,
    floor: impl Fn(JoinSide, usize) -> Option<i64>,
) -> (Option<Expiry>, Option<Expiry>) {
    let (mut left, mut right): (Option<Expiry>, Option<Expiry>) = (None, None);
    for (x, y, strict) in bounds_of(join) {
        if x.side == y.side {
            continue;
        }
        let Some(k) = floor(x.side, x.column) else {
            continue;
        };
        // X's side is at least X.t + x.low, Y's at most Y.u + y.high: no
        // match once X.t + x.low > Y.u + y.high, so c = y.high - x.low.
        let c = y.high - x.low;
        let expiry = Expiry {
            column: y.column,
            after_ms: c - k + i64::from(!strict),
        };
        let slot = match y.side {
            JoinSide::Left => &mut left,
            _ => &mut right,
        };
        // The earliest end wins; only one column holds each side's.
        if slot.is_none_or(|s| s.column == expiry.column && expiry.after_ms < s.after_ms) {
            *slot = Some(expiry);
        }
    }
    (left, right)
}

/// The floor (as in `expiry_of`) of column `column` of side `side` in the
/// rows an inner join writes: a pair is written in the batch of its later
/// row, so either that side's row is new, and holds its own floor, or the
/// other side's is, and the condition bounds this column from below by
/// it (`Y.u <= X.t + c` gives `X.t >= W + k - c`). None for outer joins,
/// whose unmatched rows come out late, and where nothing bounds it.
pub fn output_floor(
    join: &HashJoinExec,
    side: JoinSide,
    column: usize,
    floor: impl Fn(JoinSide, usize) -> Option<i64>,
) -> Option<i64> {
    if *join.join_type() != JoinType::Inner {
        return None;
    }
    let own = floor(side, column)?;
    let through_other = bounds_of(join)
        .into_iter()
        .filter(|(other, this, _)| this.side == side && this.column == column && other.side != side)
        .filter_map(|(other, this, strict)| {
            // Y.u + other.low <= other <= this <= X.t + this.high.
            let k = floor(other.side, other.column)?;
            Some(k + other.low - this.high + i64::from(strict))
        })
        .max()?;
    Some(own.min(through_other))
}

/// The conjuncts of a join's keys and filter that order a side's time
/// against the other's, as (bounded, bounding, strict): bounded <=
/// bounding (or <).
fn bounds_of(join: &HashJoinExec) -> Vec<(SideRange, SideRange, bool)> {
    let mut bounds: Vec<(SideRange, SideRange, bool)> = Vec::new();
    let on_side = |side, (column, low, high)| SideRange {
        side,
        column,
        low,
        high,
    };
    for (left, right) in join.on() {
        let (Some(l), Some(r)) = (time_range(left), time_range(right)) else {
            continue;
        };
        let (l, r) = (on_side(JoinSide::Left, l), on_side(JoinSide::Right, r));
        bounds.push((l, r, false));
        bounds.push((r, l, false));
    }
    if let Some(filter) = join.filter() {
        let column_of = |expr: &Arc<dyn PhysicalExpr>| -> Option<SideRange> {
            let (index, low, high) = time_range(expr)?;
            let at = filter.column_indices().get(index)?;
            Some(on_side(at.side, (at.index, low, high)))
        };
        for conjunct in split_conjunction(filter.expression()) {
            let Some(binary) = conjunct.downcast_ref::<BinaryExpr>() else {
                continue;
            };
            let (Some(lhs), Some(rhs)) = (column_of(binary.left()), column_of(binary.right()))
            else {
                continue;
            };
            match binary.op() {
                Operator::LtEq => bounds.push((lhs, rhs, false)),
                Operator::Lt => bounds.push((lhs, rhs, true)),
                Operator::GtEq => bounds.push((rhs, lhs, false)),
                Operator::Gt => bounds.push((rhs, lhs, true)),
                Operator::Eq => {
                    bounds.push((lhs, rhs, false));
                    bounds.push((rhs, lhs, false));
                }
                _ => {}
            }
        }
    }
    bounds
}

/// `column`, `column ± interval` (through casts) and `date_bin(width,
/// ...)` of those: the column and the range the value lies in around it,
/// in milliseconds.
fn time_range(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, i64, i64)> {
    if let Some(column) = expr.downcast_ref::<Column>() {
        return Some((column.index(), 0, 0));
    }
    let cast = match (
        expr.downcast_ref::<CastExpr>(),
        expr.downcast_ref::<TryCastExpr>(),
    ) {
        (Some(cast), _) => Some((cast.expr(), cast.cast_type())),
        (_, Some(cast)) => Some((cast.expr(), cast.cast_type())),
        _ => None,
    };
    if let Some((inner, to)) = cast {
        // A cast to a coarser time rounds down by up to its unit.
        let rounds_off = match to {
            DataType::Timestamp(TimeUnit::Second, _) => 999,
            DataType::Timestamp(_, _) => 0,
            DataType::Date32 | DataType::Date64 => 86_399_999,
            _ => return None,
        };
        let (column, low, high) = time_range(inner)?;
        return Some((column, low - rounds_off, high));
    }
    if let Some(call) = expr.downcast_ref::<ScalarFunctionExpr>() {
        // A bin's start is at most the time, and less than a width before.
        let width = interval_ms(call.args().first()?)?;
        if call.name() != "date_bin" || width <= 0 {
            return None;
        }
        let (column, low, high) = time_range(call.args().get(1)?)?;
        return Some((column, low - width + 1, high));
    }
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let sign = match binary.op() {
        Operator::Plus => 1,
        Operator::Minus => -1,
        _ => return None,
    };
    if let Some(ms) = interval_ms(binary.right()) {
        let (column, low, high) = time_range(binary.left())?;
        return Some((column, low + sign * ms, high + sign * ms));
    }
    if sign == 1
        && let Some(ms) = interval_ms(binary.left())
    {
        let (column, low, high) = time_range(binary.right())?;
        return Some((column, low + ms, high + ms));
    }
    None
}

/// A literal interval or duration of fixed length, in milliseconds.
fn interval_ms(expr: &Arc<dyn PhysicalExpr>) -> Option<i64> {
    let literal = expr.downcast_ref::<Literal>()?;
    match literal.value() {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1000),
        ScalarValue::DurationMillisecond(Some(ms)) => Some(*ms),
        ScalarValue::DurationMicrosecond(Some(us)) => Some(us / 1000),
        ScalarValue::DurationNanosecond(Some(ns)) => Some(ns / 1_000_000),
        _ => None,
    }
}
