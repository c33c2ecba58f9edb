//! The first rows of each key over a stream: `ROW_NUMBER() OVER
//! (PARTITION BY k ORDER BY ...) <= N`. With N = 1 and the event time as
//! the order it is deduplication (Flink plans that query as its
//! Deduplicate; Spark's `dropDuplicates` keeps the first arrival instead).
//!
//! A row is numbered once its number is final, when the watermark W
//! reaches its close time (`FirstRowsSpec::close`):
//!
//! - ordered by the event time, a row's own time plus 1 ms: rows of later
//!   batches are not older than W, so none can come before it;
//! - ordered otherwise (Nexmark q9: each auction's highest bid), the end
//!   of the key's rows: the key is one side's of a join of two streams,
//!   and that side's row can join no more rows once W passes the column
//!   the join condition bounds the other side by (`B.ts BETWEEN A.ts AND
//!   A.expires`), so the key's rows are all in and ranked together.
//!
//! Each batch, per shuffle partition:
//!
//! 1. new rows of keys that already have their N rows are dropped;
//! 2. the rest wait in the pending state, keyed by a row number;
//! 3. pending rows whose close time W reached leave it, in order of key,
//!    the ORDER BY and row number; each key's are numbered after the rows
//!    it already wrote, and those numbered N or less are written, with
//!    their number;
//! 4. the written count per key is kept (the written state), so later rows
//!    of a full key are dropped: that state grows with the keys, as Flink's
//!    deduplication does without a state TTL.
//!
//! Rows that tie on the ORDER BY are numbered in arrival order, which
//! ROW_NUMBER leaves unspecified. Rows without a close time are dropped:
//! they would never be final. A join key whose rows close at different
//! times (two auctions with one id and different ends) is ranked at each:
//! the later rows are numbered after those written, and dropped once the
//! key has N.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, concat_batches, filter_record_batch, lexsort_to_indices,
    take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, split_conjunction};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::BoundedWindowAggExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::job::KeyClosing;
use crate::join::Expiry;
use crate::keyed::{Expired, KeyedState, StateLayout, WindowEnd};
use crate::state::{PartitionState, StateChange, StateMetrics};

/// The column numbering a pending row (its key in the pending state).
const ROW: &str = "_spate_row";
/// How many rows a key has written.
const WRITTEN: &str = "_spate_written";

/// What the codec carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstRowsSpec {
    /// Names the operator's state folders.
    pub operator: u32,
    /// The PARTITION BY columns of the input.
    pub keys: Vec<usize>,
    /// The ORDER BY columns of the input.
    pub order: Vec<OrderKey>,
    /// A row is final once the watermark reaches its `close.column` plus
    /// `close.after_ms`.
    pub close: Expiry,
    /// N: rows numbered N or less are written.
    pub limit: u64,
    /// The name of the row number column the operator adds.
    pub number: String,
}

/// A column of ORDER BY, with its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderKey {
    pub column: usize,
    pub descending: bool,
    pub nulls_first: bool,
}

impl OrderKey {
    fn options(self) -> SortOptions {
        SortOptions {
            descending: self.descending,
            nulls_first: self.nulls_first,
        }
    }
}

/// Known only inside a task.
#[derive(Debug, Clone)]
pub struct FirstRowsScope {
    pub pending: PartitionState,
    pub written: PartitionState,
    pub batch: u64,
    pub watermark_ms: Option<i64>,
}

/// The state folders of a first-rows operator's partition: its pending
/// rows, and what each key has written.
pub fn state_dirs(job: &str, operator: u32, partition: u32) -> [String; 2] {
    let dir = |part: &str| {
        format!(
            "{}/state/{operator}-{part}/{partition}",
            crate::checkpoint::job_dir(job)
        )
    };
    [dir("pending"), dir("written")]
}

#[derive(Debug)]
pub struct FirstRowsExec {
    spec: FirstRowsSpec,
    /// The rows, shuffled by the keys.
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    scope: Option<FirstRowsScope>,
    metrics: ExecutionPlanMetricsSet,
}

impl FirstRowsExec {
    pub fn new(
        spec: FirstRowsSpec,
        input: Arc<dyn ExecutionPlan>,
        scope: Option<FirstRowsScope>,
    ) -> Self {
        let mut fields = input.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(&spec.number, DataType::UInt64, false)));
        let schema = Arc::new(Schema::new(fields));
        let input_properties = input.properties();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            input_properties.output_partitioning().clone(),
            input_properties.emission_type,
            input_properties.boundedness,
        );
        FirstRowsExec {
            spec,
            input,
            properties: Arc::new(properties),
            scope,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn spec(&self) -> &FirstRowsSpec {
        &self.spec
    }

    /// The state's columns: the pending rows', then the written counts'.
    pub fn state_schemas(&self) -> [SchemaRef; 2] {
        let step = Step::new(&self.spec, self.input.schema());
        [
            Arc::clone(&step.pending.schema),
            Arc::clone(&step.written.schema),
        ]
    }
}

impl DisplayAs for FirstRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let schema = self.input.schema();
        let keys: Vec<&str> = self
            .spec
            .keys
            .iter()
            .map(|k| schema.field(*k).name().as_str())
            .collect();
        let order: Vec<String> = self
            .spec
            .order
            .iter()
            .map(|o| {
                let name = schema.field(o.column).name();
                if o.descending {
                    format!("{name} DESC")
                } else {
                    name.clone()
                }
            })
            .collect();
        let close = &self.spec.close;
        write!(
            f,
            "FirstRowsExec: operator={}, first {} per [{}] by [{}], each once the watermark reaches {} + {} ms",
            self.spec.operator,
            self.spec.limit,
            keys.join(", "),
            order.join(", "),
            schema.field(close.column).name(),
            close.after_ms
        )
    }
}

impl ExecutionPlan for FirstRowsExec {
    fn name(&self) -> &'static str {
        "FirstRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("FirstRowsExec needs its input".into()))?;
        Ok(Arc::new(FirstRowsExec::new(
            self.spec.clone(),
            input,
            self.scope.clone(),
        )))
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
            DataFusionError::Internal("a first-rows operator runs only inside a task".into())
        })?;
        let step = Step::new(&self.spec, self.input.schema());
        let new = self.input.execute(partition, context)?;
        let counters = StateMetrics::new(&self.metrics, partition);
        let schema = self.schema();
        let run = async move {
            let new: Vec<RecordBatch> = new.try_collect().await?;
            let pending = scope
                .pending
                .load_before(scope.batch, &step.pending)
                .await?;
            let written = scope
                .written
                .load_before(scope.batch, &step.written)
                .await?;
            let done = step.run(pending, written, &new, scope.batch, scope.watermark_ms)?;
            counters
                .save(
                    scope.batch,
                    [
                        (&scope.pending, done.pending),
                        (&scope.written, done.written),
                    ],
                )
                .await?;
            Ok::<_, DataFusionError>(futures::stream::iter(done.emit.map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(run).try_flatten(),
        )))
    }
}

/// A batch's work.
struct Step {
    keys: Vec<usize>,
    order: Vec<OrderKey>,
    /// The input's column of each row's close time.
    close: usize,
    limit: u64,
    input: SchemaRef,
    output: SchemaRef,
    /// `[_spate_row, the input's columns...]`, keyed by the row number,
    /// each leaving once the watermark reaches its close time.
    pending: StateLayout,
    /// `[the keys..., _spate_written]`, keyed by the keys.
    written: StateLayout,
}

struct Done {
    emit: Option<RecordBatch>,
    pending: StateChange,
    written: StateChange,
}

impl Step {
    fn new(spec: &FirstRowsSpec, input: SchemaRef) -> Self {
        let mut pending = vec![Arc::new(Field::new(ROW, DataType::Int64, false))];
        pending.extend(input.fields().iter().cloned());
        let mut written: Vec<_> = spec
            .keys
            .iter()
            .map(|k| Arc::new(input.field(*k).clone()))
            .collect();
        written.push(Arc::new(Field::new(WRITTEN, DataType::UInt64, false)));
        let mut output = input.fields().to_vec();
        output.push(Arc::new(Field::new(&spec.number, DataType::UInt64, false)));
        Step {
            keys: spec.keys.clone(),
            order: spec.order.clone(),
            close: spec.close.column,
            limit: spec.limit,
            input,
            output: Arc::new(Schema::new(output)),
            pending: StateLayout {
                schema: Arc::new(Schema::new(pending)),
                keys: 1,
                // Final, and leaving, once the watermark reaches the close.
                window_end: Some(WindowEnd::StartPlus {
                    column: spec.close.column + 1,
                    width_ms: spec.close.after_ms,
                }),
            },
            written: StateLayout {
                schema: Arc::new(Schema::new(written)),
                keys: spec.keys.len(),
                window_end: None,
            },
        }
    }

    fn run(
        &self,
        mut pending: KeyedState,
        mut written: KeyedState,
        new: &[RecordBatch],
        batch: u64,
        watermark_ms: Option<i64>,
    ) -> DfResult<Done> {
        let converter = RowConverter::new(
            self.written.schema.fields()[..self.keys.len()]
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        // 1. Rows without a close time (never final) and rows of keys that
        // wrote their N rows already are dropped.
        let new = concat_batches(&self.input, new)?;
        let new = match new.column(self.close).logical_nulls() {
            Some(nulls) if nulls.null_count() > 0 => {
                filter_record_batch(&new, &BooleanArray::from(nulls.into_inner()))?
            }
            _ => new,
        };
        let new_keys = new.project(&self.keys)?;
        let counts = self.counts(&written, &new_keys, &converter)?;
        let key_rows = converter.convert_columns(new_keys.columns())?;
        let open: BooleanArray = (0..new.num_rows())
            .map(|i| Some(counts.get(key_rows.row(i).data()).copied().unwrap_or(0) < self.limit))
            .collect();
        let new = filter_record_batch(&new, &open)?;

        // 2. The rest wait, numbered after the batch.
        let first = (batch as i64) << 32;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            (0..new.num_rows() as i64).map(|i| first + i),
        ))];
        columns.extend(new.columns().iter().cloned());
        let numbered = RecordBatch::try_new(Arc::clone(&self.pending.schema), columns)?;
        pending.begin_batch();
        pending.upsert(numbered.clone())?;

        // 3. Those the watermark passed are final: numbered per key.
        let done = match watermark_ms {
            Some(watermark_ms) => pending.expire_since(watermark_ms)?,
            None => Expired::none(&self.pending.schema),
        };
        let (emit, changed_counts) = self.number(&done.rows, &written, &converter)?;
        if changed_counts.num_rows() > 0 {
            written.upsert(changed_counts.clone())?;
        }
        // A row that came and closed within the batch is neither a change
        // nor a removal: the delta would bring it back and write it again.
        let waiting = pending.without_groups_of(&[numbered], &done.rows)?;
        Ok(Done {
            emit: (emit.num_rows() > 0).then_some(emit),
            pending: StateChange {
                state: pending,
                changed: waiting,
                removed: vec![done.held_before],
            },
            written: StateChange {
                state: written,
                changed: vec![changed_counts],
                removed: Vec::new(),
            },
        })
    }

    /// What each key of `keys` has written, by the key's row bytes.
    fn counts(
        &self,
        written: &KeyedState,
        keys: &RecordBatch,
        converter: &RowConverter,
    ) -> DfResult<HashMap<Vec<u8>, u64>> {
        let known = written.rows_of_groups_in(keys)?;
        let known_keys = converter.convert_columns(&known.columns()[..self.keys.len()])?;
        let counts = known.column(self.keys.len()).as_primitive::<UInt64Type>();
        Ok((0..known.num_rows())
            .map(|i| (known_keys.row(i).data().to_vec(), counts.value(i)))
            .collect())
    }

    /// The final rows `done` (pending rows) in order of key, the ORDER BY
    /// and row number, each numbered after what its key wrote; returns those
    /// numbered N or less, with their numbers, and the new counts.
    fn number(
        &self,
        done: &RecordBatch,
        written: &KeyedState,
        converter: &RowConverter,
    ) -> DfResult<(RecordBatch, RecordBatch)> {
        let empty = || {
            (
                RecordBatch::new_empty(Arc::clone(&self.output)),
                RecordBatch::new_empty(Arc::clone(&self.written.schema)),
            )
        };
        if done.num_rows() == 0 {
            return Ok(empty());
        }
        let mut order: Vec<SortColumn> = self
            .keys
            .iter()
            .map(|k| SortColumn {
                values: Arc::clone(done.column(k + 1)),
                options: None,
            })
            .collect();
        for key in &self.order {
            order.push(SortColumn {
                values: Arc::clone(done.column(key.column + 1)),
                options: Some(key.options()),
            });
        }
        order.push(SortColumn {
            values: Arc::clone(done.column(0)),
            options: None,
        });
        let sorted = take_record_batch(done, &lexsort_to_indices(&order, None)?)?;
        let keys = sorted.project(&self.keys.iter().map(|k| k + 1).collect::<Vec<_>>())?;
        let mut counts = self.counts(written, &keys, converter)?;
        let key_rows = converter.convert_columns(keys.columns())?;
        let (mut taken, mut numbers) = (Vec::new(), Vec::new());
        // Per key, its last row written: where its new count is read.
        let (mut changed, mut last_taken) = (Vec::new(), None);
        for i in 0..sorted.num_rows() {
            let count = counts.entry(key_rows.row(i).data().to_vec()).or_insert(0);
            if *count < self.limit {
                *count += 1;
                taken.push(i as u32);
                numbers.push(*count);
                last_taken = Some(i as u32);
            }
            let last_of_key = i + 1 == sorted.num_rows() || key_rows.row(i + 1) != key_rows.row(i);
            if last_of_key && let Some(row) = last_taken.take() {
                changed.push(row);
            }
        }
        if taken.is_empty() {
            return Ok(empty());
        }
        let rows = take_record_batch(&sorted, &UInt32Array::from(taken))?;
        let mut columns = rows.columns()[1..].to_vec();
        columns.push(Arc::new(UInt64Array::from(numbers)));
        let emit = RecordBatch::try_new(Arc::clone(&self.output), columns)?;

        let changed = UInt32Array::from(changed);
        let mut count_columns = take_record_batch(&keys, &changed)?.columns().to_vec();
        let changed_counts: UInt64Array = changed
            .values()
            .iter()
            .map(|i| counts[key_rows.row(*i as usize).data()])
            .collect();
        count_columns.push(Arc::new(changed_counts));
        let counts = RecordBatch::try_new(Arc::clone(&self.written.schema), count_columns)?;
        Ok((emit, counts))
    }
}

/// Puts a `FirstRowsExec` in place of each `ROW_NUMBER() OVER (PARTITION
/// BY k ORDER BY ...) <= N` over a stream (a filter on the row number over
/// the window function and its sort) over the rows shuffled by the keys
/// into `partitions`, numbering the operators from `operators_before + 1`.
/// `event_time(plan, column)` tells whether a column is a Kafka table's
/// watermark column; `key_close(plan, keys)` when a key's rows are all in
/// where ordered otherwise (see the module's comment), `plan` widened with
/// the column that says so where it lacked it. Returns the plan and
/// the number of operators put in; other window functions are left for
/// the streaming checks to refuse.
pub(crate) fn plan_first_rows(
    plan: Arc<dyn ExecutionPlan>,
    operators_before: u32,
    partitions: usize,
    event_time: impl Fn(&Arc<dyn ExecutionPlan>, usize) -> bool,
    key_close: impl Fn(&Arc<dyn ExecutionPlan>, &[usize]) -> DfResult<Option<KeyClosing>>,
) -> DfResult<(Arc<dyn ExecutionPlan>, u32)> {
    let mut operator = operators_before;
    let planned = plan.transform_up(|node| {
        let Some(filter) = node.downcast_ref::<FilterExec>() else {
            return Ok(Transformed::no(node));
        };
        // The window function, maybe under a projection of columns.
        let projection = filter.input().downcast_ref::<ProjectionExec>();
        let window_node = projection.map_or(filter.input(), |p| p.input());
        let Some(window) = window_node.downcast_ref::<BoundedWindowAggExec>() else {
            return Ok(Transformed::no(node));
        };
        let [expr] = window.window_expr() else {
            return Ok(Transformed::no(node));
        };
        let number = window.input().schema().fields().len();
        let filtered = match projection {
            None => Some(number),
            Some(p) => p.expr().iter().position(|e| {
                e.expr
                    .downcast_ref::<Column>()
                    .is_some_and(|c| c.index() == number)
            }),
        };
        let Some(limit) = filtered.and_then(|n| row_number_limit(filter.predicate(), n)) else {
            return Ok(Transformed::no(node));
        };
        // Over a windowed aggregation it ranks closed windows instead:
        // see `job::check_per_window`.
        if !expr.name().starts_with("row_number(") || crate::job::above_an_aggregation(window) {
            return Ok(Transformed::no(node));
        }
        let refuse = |why: &str| {
            Err(DataFusionError::Plan(format!(
                "ROW_NUMBER() over a stream numbers a key's rows once their numbers are final: {why}"
            )))
        };
        let Some(sorted) = window.input().downcast_ref::<SortExec>() else {
            return Ok(Transformed::no(node));
        };
        // DataFusion's own shuffle, if it planned one, gives way to ours.
        let input = match sorted.input().downcast_ref::<RepartitionExec>() {
            Some(shuffle) => Arc::clone(shuffle.input()),
            None => Arc::clone(sorted.input()),
        };
        let input = crate::job::under_merges(&input);
        let keys: Option<Vec<usize>> = expr
            .partition_by()
            .iter()
            .map(|k| k.downcast_ref::<Column>().map(Column::index))
            .collect();
        let Some(keys) = keys.filter(|k| !k.is_empty()) else {
            return refuse("it must PARTITION BY columns of the stream");
        };
        let order: Option<Vec<OrderKey>> = expr
            .order_by()
            .iter()
            .map(|o| {
                Some(OrderKey {
                    column: o.expr.downcast_ref::<Column>()?.index(),
                    descending: o.options.descending,
                    nulls_first: o.options.nulls_first,
                })
            })
            .collect();
        let Some(order) = order.filter(|o| !o.is_empty()) else {
            return refuse("it must ORDER BY columns of the stream");
        };
        let by_event_time = match order.as_slice() {
            [only] if event_time(&input, only.column) => Some(*only),
            _ => None,
        };
        // By the event time ascending, each row is final on its own; else
        // a key's rows are, once its row of a join side has left the join.
        let (input, close, added) = match by_event_time {
            Some(time) if !time.descending => {
                if time.nulls_first {
                    return refuse(
                        "NULLS FIRST would number rows without a time before the others, and such rows are never final: drop NULLS FIRST (rows without a time are dropped)",
                    );
                }
                let close = Expiry {
                    column: time.column,
                    after_ms: 1,
                };
                (input, close, false)
            }
            _ => match key_close(&input, &keys)? {
                Some(closing) => (closing.plan, closing.close, closing.added),
                None if by_event_time.is_some() => {
                    return refuse(
                        "ORDER BY ... DESC would keep the latest rows, which are never final while the stream runs; order by the event time ascending, or rank per window (PARTITION BY window.start over a windowed aggregation)",
                    );
                }
                None => {
                    return refuse(
                        "ordered by anything but a Kafka table's event-time column (one with a 'watermark'), ascending, a key's rows are final only once the key can get no more rows; Spate knows when that is for a key of one side of a join of two streams that holds the PRIMARY KEY of that side's table (declared, or a NEXMARK person's or auction's id), where the join condition bounds the other side's time by a column of that table (PARTITION BY A.id over B.ts BETWEEN A.ts AND A.expires, as in Nexmark q9); otherwise order by the event time, or rank per window (PARTITION BY window.start over a windowed aggregation)",
                    );
                }
            },
        };
        let by_keys = keys
            .iter()
            .map(|k| Arc::new(Column::new(input.schema().field(*k).name(), *k)) as _)
            .collect();
        let input = Arc::new(RepartitionExec::try_new(
            input,
            Partitioning::Hash(by_keys, partitions),
        )?) as Arc<dyn ExecutionPlan>;
        operator += 1;
        let spec = FirstRowsSpec {
            operator,
            keys,
            order,
            close,
            limit,
            number: window.schema().field(number).name().clone(),
        };
        let mut first = Arc::new(FirstRowsExec::new(spec, input, None)) as Arc<dyn ExecutionPlan>;
        if added {
            // The close column was passed up for the operator alone.
            first = crate::job::without_column(first, close.column)?;
        }
        let replace = |parent: Arc<dyn ExecutionPlan>, child| {
            parent.replace_children(
                vec![child],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )
        };
        let filter_input = match projection {
            Some(_) => replace(Arc::clone(filter.input()), first)?,
            None => first,
        };
        Ok(Transformed::yes(replace(node, filter_input)?))
    })?;
    Ok((planned.data, operator - operators_before))
}

/// N of a `number <= N` (`= 1`, `< N + 1`, or the other way round) among
/// the predicate's conjuncts, where `number` is the row number's column.
fn row_number_limit(predicate: &Arc<dyn PhysicalExpr>, number: usize) -> Option<u64> {
    split_conjunction(predicate)
        .into_iter()
        .find_map(|conjunct| {
            let binary = conjunct.downcast_ref::<BinaryExpr>()?;
            let is_number = |e: &Arc<dyn PhysicalExpr>| {
                e.downcast_ref::<Column>()
                    .is_some_and(|c| c.index() == number)
            };
            let literal = |e: &Arc<dyn PhysicalExpr>| -> Option<i64> {
                let value = e
                    .downcast_ref::<Literal>()?
                    .value()
                    .cast_to(&DataType::Int64)
                    .ok()?;
                match value {
                    ScalarValue::Int64(Some(v)) => Some(v),
                    _ => None,
                }
            };
            let (op, n) = if is_number(binary.left()) {
                (*binary.op(), literal(binary.right())?)
            } else if is_number(binary.right()) {
                (binary.op().swap()?, literal(binary.left())?)
            } else {
                return None;
            };
            let limit = match op {
                Operator::Eq if n == 1 => 1,
                Operator::LtEq => n,
                Operator::Lt => n.checked_sub(1)?,
                _ => return None,
            };
            u64::try_from(limit).ok().filter(|l| *l > 0)
        })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{TimestampMillisecondArray, as_primitive_array};
    use datafusion::arrow::datatypes::{Int64Type, TimeUnit};

    use super::*;

    /// Bids joined with their auctions: `[auction, expires, price, at]`.
    fn input() -> SchemaRef {
        let time = DataType::Timestamp(TimeUnit::Millisecond, None);
        Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("expires", time.clone(), false),
            Field::new("price", DataType::Int64, false),
            Field::new("at", time, false),
        ]))
    }

    fn pairs(rows: &[(i64, i64, i64, i64)]) -> RecordBatch {
        let column = |f: fn(&(i64, i64, i64, i64)) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from(column(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from(column(|r| r.1))),
                Arc::new(Int64Array::from(column(|r| r.2))),
                Arc::new(TimestampMillisecondArray::from(column(|r| r.3))),
            ],
        )
        .unwrap()
    }

    /// The highest price per auction, the earliest among equal ones
    /// (Nexmark q9), each once the watermark passes its auction's end.
    fn winning_bids() -> Step {
        let spec = FirstRowsSpec {
            operator: 1,
            keys: vec![0],
            order: vec![
                OrderKey {
                    column: 2,
                    descending: true,
                    nulls_first: true,
                },
                OrderKey {
                    column: 3,
                    descending: false,
                    nulls_first: false,
                },
            ],
            close: Expiry {
                column: 1,
                after_ms: 1,
            },
            limit: 1,
            number: "rownum".into(),
        };
        Step::new(&spec, input())
    }

    /// `[auction, price, at, rownum]` of what a batch wrote.
    fn written(done: &Done) -> Vec<(i64, i64, i64, u64)> {
        let Some(emit) = &done.emit else {
            return Vec::new();
        };
        let int = |c: usize| as_primitive_array::<Int64Type>(emit.column(c)).clone();
        let (auction, price) = (int(0), int(2));
        let at = emit
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        let number = emit.column(4).as_primitive::<UInt64Type>();
        (0..emit.num_rows())
            .map(|i| {
                (
                    auction.value(i),
                    price.value(i),
                    at.value(i),
                    number.value(i),
                )
            })
            .collect()
    }

    #[test]
    fn a_key_is_ranked_by_its_order_once_the_watermark_passes_its_close() {
        let step = winning_bids();
        let pending = KeyedState::new(step.pending.clone()).unwrap();
        let written_state = KeyedState::new(step.written.clone()).unwrap();
        // Auction 1 ends at 100, auction 2 at 300.
        let first = step
            .run(
                pending,
                written_state,
                &[pairs(&[(1, 100, 5, 10), (2, 300, 7, 20), (1, 100, 9, 30)])],
                1,
                Some(50),
            )
            .unwrap();
        assert_eq!(written(&first), [], "nothing has closed at 50");

        // A higher bid of auction 1 and one equal to its best, later.
        let second = step
            .run(
                first.pending.state,
                first.written.state,
                &[pairs(&[
                    (1, 100, 12, 60),
                    (1, 100, 12, 70),
                    (2, 300, 1, 80),
                ])],
                2,
                Some(101),
            )
            .unwrap();
        assert_eq!(
            written(&second),
            [(1, 12, 60, 1)],
            "auction 1 closed at 101"
        );

        // A row of the closed auction that ends later is numbered after
        // what it wrote, and dropped; auction 2 closes with its best.
        let third = step
            .run(
                second.pending.state,
                second.written.state,
                &[pairs(&[(1, 400, 99, 150), (2, 300, 8, 160)])],
                3,
                Some(500),
            )
            .unwrap();
        assert_eq!(written(&third), [(2, 8, 160, 1)]);
        assert!(third.pending.state.is_empty());
    }
    /// Each batch's state read back from its saved versions, as a worker
    /// that never held the partition (or restarted) does.
    #[tokio::test]
    async fn a_row_that_comes_and_closes_in_one_batch_is_not_read_back() {
        use crate::state::{PartitionState, StateCache};
        use crate::workspace::Workspace;

        let mut step = winning_bids();
        step.limit = 2;
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        // A cache that keeps nothing: every batch reads its state back.
        let store = |name: &str| PartitionState {
            workspace: ws.clone(),
            dir: format!("state/{name}"),
            cache: Arc::new(StateCache::with_limit(0)),
        };
        let (pending_store, written_store) = (store("pending"), store("written"));
        // Each batch's pairs and watermark. Auction 2 ends before the
        // watermark of the batch its bid comes in: the bid closes at once.
        let batches = [
            (pairs(&[(1, 100, 5, 10)]), 50),
            (pairs(&[(2, 100, 7, 150)]), 200),
            (pairs(&[]), 300),
        ];
        let mut wrote = Vec::new();
        for (b, (rows, watermark)) in batches.into_iter().enumerate() {
            let b = b as u64 + 1;
            let pending = pending_store.load_before(b, &step.pending).await.unwrap();
            let written_state = written_store.load_before(b, &step.written).await.unwrap();
            let done = step
                .run(pending, written_state, &[rows], b, Some(watermark))
                .unwrap();
            wrote.extend(written(&done));
            pending_store.save(b, done.pending).await.unwrap();
            written_store.save(b, done.written).await.unwrap();
        }
        assert_eq!(
            wrote,
            [(1, 5, 10, 1), (2, 7, 150, 1)],
            "each bid is written once, though its auction has room for two"
        );
    }
}
