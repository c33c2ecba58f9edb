//! Event-time windows with the syntax a Spark user writes:
//!
//! ```sql
//! SELECT window.start, window.end, customer, sum(amount)
//! FROM sales GROUP BY window(ts, '30 seconds', '10 seconds'), customer
//! ```
//!
//! Three DataFusion extension points make that work:
//! - `window(ts, size [, slide])` is a scalar UDF giving a struct
//!   `{start, end}`: the one window of a tumbling window.
//! - A sliding window puts each row in several windows, which a scalar
//!   cannot: the `ExpandSlidingWindows` analyzer rule turns the group key
//!   into an unnest of `spate_windows(ts, size, slide)`, the list of windows
//!   a row falls in, as Spark's TimeWindowing rule expands rows.
//! - `window` in the select list is the group key, as in Spark, so
//!   `window.start` / `window.end` / `window` are rewritten on the parsed
//!   query (sqlparser's visitor) to fields of the `window(...)` call that the
//!   GROUP BY names, before DataFusion plans it.
//!
//! Windows align to the epoch, like Spark's without a start offset.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, Int64Type, IntervalMonthDayNanoType, TimeUnit,
};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue, exec_err, plan_err};
use datafusion::error::DataFusionError;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::sql::sqlparser::ast::{
    self as sql, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, VisitorMut,
};

/// The names users call; also the names of the group columns they give.
pub const WINDOW: &str = "window";
pub const SESSION_WINDOW: &str = "session_window";
const WINDOW_LIST: &str = "spate_windows";
const EXPANDED: &str = "__spate_window";

pub fn window_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(WindowUdf::new(WINDOW))
}

fn window_list_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(WindowUdf::new(WINDOW_LIST))
}

/// The UDFs a Spate session registers.
pub fn udfs() -> Vec<ScalarUDF> {
    vec![
        window_udf(),
        window_list_udf(),
        ScalarUDF::new_from_impl(WindowUdf::new(SESSION_WINDOW)),
    ]
}

/// The struct a window is: `{start, end}` in the event time's own type.
pub fn window_type(time: &DataType) -> DataType {
    DataType::Struct(window_fields(time))
}

fn window_fields(time: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("start", time.clone(), false),
        Field::new("end", time.clone(), false),
    ])
}

/// Whether a group column is an event-time window, and the index of its end.
pub fn is_window_field(field: &Field) -> bool {
    matches!(field.data_type(), DataType::Struct(fields)
        if fields.len() == 2 && fields[0].name() == "start" && fields[1].name() == "end"
            && matches!(fields[1].data_type(), DataType::Timestamp(..)))
        && (field.name().starts_with("window(") || field.name() == WINDOW)
}

/// Whether a group column is a session window, which merging decides.
pub fn is_session_field(field: &Field) -> bool {
    field.name().starts_with("session_window(")
}

/// `window(ts, size [, slide])` (one window, the row's tumbling one),
/// `spate_windows(ts, size, slide)` (every window the row falls in) and
/// `session_window(ts, gap)`: `[ts, ts + gap)`, the session of the row
/// alone; the stateful aggregate merges the sessions of a key that
/// overlap, so a session ends `gap` after its last row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowUdf {
    name: &'static str,
    signature: Signature,
}

impl WindowUdf {
    fn new(name: &'static str) -> Self {
        WindowUdf {
            name,
            signature: Signature::one_of(
                if name == SESSION_WINDOW {
                    vec![TypeSignature::Any(2)]
                } else {
                    vec![TypeSignature::Any(2), TypeSignature::Any(3)]
                },
                Volatility::Immutable,
            ),
        }
    }
}

/// Window size and slide, in the event time's unit.
#[derive(Debug, Clone, Copy)]
struct WindowShape {
    size: i64,
    slide: i64,
}

impl WindowShape {
    fn from_args(name: &str, args: &[ColumnarValue], unit: TimeUnit) -> DfResult<Self> {
        let duration = |index: usize, what: &str| -> DfResult<i64> {
            let ColumnarValue::Scalar(value) = &args[index] else {
                return plan_err!("{name}(): the {what} must be a constant such as '10 seconds'");
            };
            interval_in_unit(value, unit)
                .filter(|d| *d > 0)
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Plan(format!(
                        "{name}(): the {what} '{}' is not a positive duration of days, hours, minutes, seconds or milliseconds", value.to_string().trim_matches('\'')
                    ))
                })
        };
        let size = duration(1, "window size")?;
        let slide = if args.len() == 3 {
            duration(2, "slide")?
        } else {
            size
        };
        if slide > size {
            return plan_err!("{name}(): the slide must not exceed the window size");
        }
        Ok(WindowShape { size, slide })
    }

    /// Starts of the windows holding `ts`, latest first.
    fn starts(self, ts: i64) -> impl Iterator<Item = i64> {
        let last = ts - ts.rem_euclid(self.slide);
        (0..)
            .map(move |k| last - k * self.slide)
            .take_while(move |start| start + self.size > ts)
    }
}

/// Event times of any TIMESTAMP unit as Unix milliseconds, the unit of
/// watermarks.
pub fn epoch_millis(times: &ArrayRef) -> datafusion::arrow::error::Result<Int64Array> {
    let millis = cast(times, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let millis = cast(&millis, &DataType::Int64)?;
    Ok(millis.as_primitive::<Int64Type>().clone())
}

/// '5 seconds', '1 minute', '250 milliseconds' in milliseconds.
pub fn duration_ms(text: &str) -> Option<i64> {
    interval_in_unit(
        &ScalarValue::Utf8(Some(text.to_string())),
        TimeUnit::Millisecond,
    )
}

fn interval_in_unit(value: &ScalarValue, unit: TimeUnit) -> Option<i64> {
    let interval = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => *v,
        other => {
            let text = ScalarValue::Utf8(Some(other.to_string().trim_matches('\'').to_string()));
            let array = cast(
                &text.to_array().ok()?,
                &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
            )
            .ok()?;
            if array.is_null(0) {
                return None;
            }
            array.as_primitive::<IntervalMonthDayNanoType>().value(0)
        }
    };
    if interval.months != 0 {
        return None;
    }
    let nanos = interval.days as i64 * 86_400_000_000_000 + interval.nanoseconds;
    let per_unit = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    (nanos % per_unit == 0).then_some(nanos / per_unit)
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let time = &args[0];
        if !matches!(time, DataType::Timestamp(..)) {
            return plan_err!(
                "{}(): the first argument is the event time, a TIMESTAMP column; got {time}",
                self.name
            );
        }
        let window = window_type(time);
        Ok(if self.name == WINDOW_LIST {
            DataType::new_list(window, false)
        } else {
            window
        })
    }

    /// Checks the sizes when the query is planned, not when a task runs.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let data_type = self.return_type(&types)?;
        if let DataType::Timestamp(unit, _) = &types[0] {
            let constants: Vec<ColumnarValue> = args.scalar_arguments[1..]
                .iter()
                .map(|a| {
                    a.map(|v| ColumnarValue::Scalar(v.clone())).ok_or_else(|| {
                        DataFusionError::Plan(format!(
                            "{}(): sizes are constants such as '10 seconds'",
                            self.name
                        ))
                    })
                })
                .collect::<DfResult<_>>()?;
            let mut checked = vec![ColumnarValue::Scalar(ScalarValue::Null)];
            checked.extend(constants);
            WindowShape::from_args(self.name, &checked, *unit)?;
        }
        Ok(Arc::new(Field::new(self.name, data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let DataType::Timestamp(unit, _) = args.arg_fields[0].data_type().clone() else {
            return exec_err!("{}(): the event time must be a TIMESTAMP", self.name);
        };
        let shape = WindowShape::from_args(self.name, &args.args, unit)?;
        let times = args.args[0].to_array(args.number_rows)?;
        let time_type = times.data_type().clone();
        let values = cast(&times, &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let fields = window_fields(&time_type);
        let as_time = |v: Vec<i64>| cast(&(Arc::new(Int64Array::from(v)) as ArrayRef), &time_type);
        if self.name != WINDOW_LIST {
            let starts: Vec<i64> = if self.name == SESSION_WINDOW {
                values.iter().map(|t| t.unwrap_or(0)).collect()
            } else if shape.slide != shape.size {
                return exec_err!(
                    "window(ts, size, slide) with a slide shorter than the size puts a row in several windows; use it in GROUP BY"
                );
            } else {
                values
                    .iter()
                    .map(|t| t.map_or(0, |t| shape.starts(t).next().unwrap_or(t)))
                    .collect()
            };
            let ends = starts.iter().map(|s| s + shape.size).collect();
            let windows = StructArray::try_new(
                fields,
                vec![as_time(starts)?, as_time(ends)?],
                times.nulls().cloned(),
            )?;
            return Ok(ColumnarValue::Array(Arc::new(windows)));
        }
        let mut starts = Vec::new();
        let mut offsets = vec![0i32];
        for t in values.iter() {
            if let Some(t) = t {
                // Earliest first, as Spark lists them.
                let mut mine: Vec<i64> = shape.starts(t).collect();
                mine.reverse();
                starts.extend(mine);
            }
            offsets.push(starts.len() as i32);
        }
        let ends = starts.iter().map(|s| s + shape.size).collect();
        let windows =
            StructArray::try_new(fields.clone(), vec![as_time(starts)?, as_time(ends)?], None)?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(window_type(&time_type), false)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(windows),
            times.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// Rewrites `GROUP BY window(ts, size, slide)` with a slide shorter than the
/// size into a group by the unnested list of the row's windows.
#[derive(Debug, Default)]
pub struct ExpandSlidingWindows;

impl AnalyzerRule for ExpandSlidingWindows {
    fn name(&self) -> &str {
        "spate_expand_sliding_windows"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some(index) = aggregate.group_expr.iter().position(is_sliding_window) else {
                return Ok(Transformed::no(node));
            };
            let Expr::ScalarFunction(call) = &aggregate.group_expr[index] else {
                unreachable!("checked by is_sliding_window");
            };
            let name = aggregate.group_expr[index].schema_name().to_string();
            let list = Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(window_list_udf()),
                call.args.clone(),
            ))
            .alias(EXPANDED);
            let mut columns: Vec<Expr> = aggregate
                .input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            columns.push(list);
            let input = LogicalPlanBuilder::from(Arc::clone(&aggregate.input))
                .project(columns)?
                .unnest_column(EXPANDED)?
                .build()?;
            let mut group_expr = aggregate.group_expr.clone();
            group_expr[index] = Expr::Column(Column::from_name(EXPANDED)).alias(name);
            let rewritten =
                Aggregate::try_new(Arc::new(input), group_expr, aggregate.aggr_expr.clone())?;
            Ok(Transformed::yes(LogicalPlan::Aggregate(rewritten)))
        })
        .map(|t| t.data)
    }
}

fn is_sliding_window(expr: &Expr) -> bool {
    let Expr::ScalarFunction(call) = expr else {
        return false;
    };
    if call.func.name() != WINDOW || call.args.len() != 3 {
        return false;
    }
    let constant = |e: &Expr| match e {
        Expr::Literal(value, _) => Some(value.to_string()),
        _ => None,
    };
    constant(&call.args[1]) != constant(&call.args[2])
}

/// Makes `window`, `window.start` and `window.end` in a select list mean the
/// group key, as in Spark: each becomes a field of the `window(...)` call
/// that the query's GROUP BY holds.
pub fn resolve_window_columns(statement: &mut sql::Statement) {
    let _ = statement.visit(&mut WindowColumns);
}

use datafusion::sql::sqlparser::ast::VisitMut;

struct WindowColumns;

impl VisitorMut for WindowColumns {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let GroupByExpr::Expressions(group_by, _) = &select.group_by else {
            return ControlFlow::Continue(());
        };
        let Some(call) = group_by.iter().find(|e| is_window_call(e)).cloned() else {
            return ControlFlow::Continue(());
        };
        for item in select.projection.iter_mut() {
            match item {
                SelectItem::UnnamedExpr(expr) => {
                    if let Some((rewritten, alias)) = window_column(expr, &call) {
                        *item = SelectItem::ExprWithAlias {
                            expr: rewritten,
                            alias: Ident::new(alias),
                        };
                    }
                }
                SelectItem::ExprWithAlias { expr, .. } => {
                    if let Some((rewritten, _)) = window_column(expr, &call) {
                        *expr = rewritten;
                    }
                }
                _ => {}
            }
        }
        // ORDER BY window.start (a REPL query; jobs cannot sort) too.
        if let Some(order_by) = query.order_by.as_mut()
            && let sql::OrderByKind::Expressions(exprs) = &mut order_by.kind
        {
            for order in exprs {
                if let Some((rewritten, _)) = window_column(&order.expr, &call) {
                    order.expr = rewritten;
                }
            }
        }
        ControlFlow::Continue(())
    }
}

fn is_window_call(expr: &sql::Expr) -> bool {
    window_call_name(expr).is_some()
}

/// `window` or `session_window`, where `expr` calls one.
fn window_call_name(expr: &sql::Expr) -> Option<&'static str> {
    let sql::Expr::Function(f) = expr else {
        return None;
    };
    let name = f.name.to_string();
    [WINDOW, SESSION_WINDOW]
        .into_iter()
        .find(|w| name.eq_ignore_ascii_case(w))
}

fn window_column(expr: &sql::Expr, call: &sql::Expr) -> Option<(sql::Expr, String)> {
    let name = window_call_name(call)?;
    match expr {
        sql::Expr::Identifier(id) if id.value.eq_ignore_ascii_case(name) => {
            Some((call.clone(), name.to_string()))
        }
        sql::Expr::CompoundIdentifier(ids)
            if ids.len() == 2
                && ids[0].value.eq_ignore_ascii_case(name)
                && ["start", "end"].contains(&ids[1].value.to_lowercase().as_str()) =>
        {
            let field = ids[1].value.to_lowercase();
            let get_field = sql::Expr::Function(sql::Function {
                name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new("get_field"))]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(call.clone())),
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(sql::Expr::Value(
                            sql::Value::SingleQuotedString(field.clone()).into(),
                        ))),
                    ],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
            Some((get_field, field))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_falls_in_size_over_slide_windows() {
        let sliding = WindowShape {
            size: 30,
            slide: 10,
        };
        assert_eq!(sliding.starts(25).collect::<Vec<_>>(), vec![20, 10, 0]);
        assert_eq!(sliding.starts(30).collect::<Vec<_>>(), vec![30, 20, 10]);
        assert_eq!(sliding.starts(-5).collect::<Vec<_>>(), vec![-10, -20, -30]);
        let tumbling = WindowShape {
            size: 10,
            slide: 10,
        };
        assert_eq!(tumbling.starts(19).collect::<Vec<_>>(), vec![10]);
    }

    #[test]
    fn durations_convert_to_the_event_time_unit() {
        let text = |s: &str| ScalarValue::Utf8(Some(s.to_string()));
        assert_eq!(
            interval_in_unit(&text("30 seconds"), TimeUnit::Millisecond),
            Some(30_000)
        );
        assert_eq!(
            interval_in_unit(&text("1 minute"), TimeUnit::Nanosecond),
            Some(60_000_000_000)
        );
        assert_eq!(interval_in_unit(&text("1 month"), TimeUnit::Second), None);
        assert_eq!(interval_in_unit(&text("soon"), TimeUnit::Second), None);
    }
}
