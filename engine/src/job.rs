//! A job file's SQL to a planned streaming job: DDL runs in a planning
//! session (Kafka and file tables come from Spate's factories), `SET spate.*`
//! sets job options, and the one `INSERT INTO sink SELECT ...` becomes the
//! physical plan that each task runs over its offset ranges.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinSide, JoinType, ScalarValue};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateOutputMode, PhysicalGroupBy};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointMetadata;
use crate::codec::SpateCodec;
use crate::error::readable;
use crate::error::{EngineError, Result};
use crate::files::{WorkspaceTable, WorkspaceTableFactory};
use crate::first_rows::{FirstRowsExec, plan_first_rows};
use crate::join::{Expiry, StreamJoinExec, StreamJoinSpec, expiry_of, output_floor};
use crate::kafka::{KafkaScanExec, KafkaSourceSpec, KafkaTable, KafkaTableFactory};
use crate::nexmark::NexmarkTableFactory;
use crate::postgres::{PostgresTable, PostgresTableFactory};
use crate::redis::{RedisTable, RedisTableFactory};
use crate::sink::{ConsoleTable, ConsoleTableFactory};
use crate::stages::{CutMerges, split_into_stages};
use crate::stateful::{EventWindow, OutputMode, StatefulAggregateExec, StatefulSpec};
use crate::windows::{self, ExpandSlidingWindows};
use crate::workspace::Workspace;

pub use crate::sink::SinkSpec;

/// Options a job file sets with `SET spate.<name> = <value>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    pub name: Option<String>,
    /// Time between the starts of two batches when there is data.
    pub trigger_interval_ms: u64,
    /// Process what is in Kafka at the start, then finish (Spark's availableNow).
    pub available_now: bool,
    /// Times one task may fail by its own error before the job fails.
    pub max_task_failures: u32,
    /// Batches whose offsets, commit and progress records are kept.
    #[serde(default = "retained_batches")]
    pub retained_batches: u64,
    /// Spark's output mode: what an aggregation emits each batch.
    #[serde(default)]
    pub output_mode: OutputMode,
    /// Partitions of an aggregation's shuffle and state; fixed when the job
    /// is planned (default: the cluster's worker slots at submit time).
    #[serde(default)]
    pub shuffle_partitions: Option<usize>,
}

impl Default for JobOptions {
    /// The `[job]` settings of defaults.toml.
    fn default() -> Self {
        let job = &spate_config::settings().job;
        JobOptions {
            name: None,
            trigger_interval_ms: job.trigger_interval.as_millis() as u64,
            available_now: false,
            max_task_failures: job.max_task_failures.max(1),
            retained_batches: retained_batches(),
            output_mode: OutputMode::Append,
            shuffle_partitions: (job.shuffle_partitions > 0).then_some(job.shuffle_partitions),
        }
    }
}

/// A job recorded before the setting existed keeps the default.
fn retained_batches() -> u64 {
    spate_config::settings().job.retained_batches.max(1)
}

const KNOWN_JOB_OPTIONS: &str = "spate.job.name, spate.trigger.interval (e.g. '500ms', '2s'), spate.trigger.available_now (true/false), spate.task.max_failures, spate.checkpoint.retained_batches, spate.output_mode (append, update, complete), spate.shuffle.partitions";

impl JobOptions {
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = |expected: &str| {
            EngineError::plan(format!("SET {key} = '{value}': expected {expected}"))
        };
        match key {
            "spate.job.name" => {
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(bad("a name of letters, digits, '_' and '-'"));
                }
                self.name = Some(value.to_string());
            }
            "spate.trigger.interval" => {
                self.trigger_interval_ms = parse_duration(value)
                    .ok_or_else(|| bad("a duration such as '500ms', '2s' or '1 minute'"))?
                    .as_millis() as u64;
            }
            "spate.trigger.available_now" => {
                self.available_now = value.parse().map_err(|_| bad("true or false"))?;
            }
            "spate.task.max_failures" => {
                self.max_task_failures = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a positive whole number"))?;
            }
            "spate.checkpoint.retained_batches" => {
                self.retained_batches = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a positive whole number"))?;
            }
            "spate.output_mode" | "spate.output.mode" | "spate.outputmode" => {
                self.output_mode =
                    OutputMode::parse(value).ok_or_else(|| bad("append, update or complete"))?;
            }
            "spate.shuffle.partitions" => {
                self.shuffle_partitions = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=4096).contains(n))
                        .ok_or_else(|| bad("a whole number from 1 to 4096"))?,
                );
            }
            _ => {
                return Err(EngineError::plan(format!(
                    "SET {key}: unknown job option; known options: {KNOWN_JOB_OPTIONS}"
                )));
            }
        }
        Ok(())
    }
}

/// Parses '500ms', '2s', '2 seconds', '1 minute', '0'.
pub fn parse_duration(text: &str) -> Option<Duration> {
    spate_config::parse_duration(text).or_else(|| spoken_duration(text))
}

/// '2 seconds', '1 minute': durations as SQL users write intervals.
fn spoken_duration(text: &str) -> Option<Duration> {
    let text = text.trim().to_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" if number == 0.0 => 0.0,
        "ms" | "millis" | "millisecond" | "milliseconds" => number / 1000.0,
        "s" | "sec" | "second" | "seconds" => number,
        "m" | "min" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// What the planner needs from the cluster.
#[derive(Debug, Clone)]
pub struct PlanEnv {
    pub workspace: Workspace,
    /// For Kafka tables that name no `bootstrap.servers`.
    pub default_bootstrap_servers: String,
    /// Shuffle partitions of a job that does not set spate.shuffle.partitions.
    pub shuffle_partitions: usize,
}

impl PlanEnv {
    pub fn new(workspace: Workspace, default_bootstrap_servers: impl Into<String>) -> Self {
        PlanEnv {
            workspace,
            default_bootstrap_servers: default_bootstrap_servers.into(),
            shuffle_partitions: 4,
        }
    }
}

/// A job, planned: ready for the controller to run batch after batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedJob {
    pub name: String,
    pub sql: String,
    /// The Kafka tables the job reads, one per topic; two when it joins
    /// two streams. The first is the one a single-stream job reads.
    #[serde(alias = "source", deserialize_with = "one_or_many")]
    pub sources: Vec<KafkaSourceSpec>,
    pub sink: SinkSpec,
    /// In the order they run; the last one writes the sink.
    pub stages: Vec<PlannedStage>,
    /// The whole plan as text, for humans.
    pub explain: String,
    pub options: JobOptions,
    /// The stateful operator's state columns (`name: type`); empty when stateless.
    #[serde(default)]
    pub state_columns: Vec<String>,
    /// The columns the sink is written with (`name: type`).
    #[serde(default)]
    pub sink_columns: Vec<String>,
}

/// One stage of a job: its plan and where its input comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStage {
    pub id: u32,
    /// datafusion-proto bytes with `SpateCodec`.
    pub plan: Vec<u8>,
    /// Stages whose shuffle output it reads; none for the Kafka stage.
    pub reads: Vec<u32>,
    /// Tasks per batch of a shuffle-reading stage (its partitions); a
    /// Kafka stage runs one task per partition with new records.
    pub tasks: usize,
    pub explain: String,
    /// A query's stage over files: one task per partition of its scans.
    #[serde(default)]
    pub reads_files: bool,
    /// The Kafka topic a stage without shuffle inputs reads; its tasks
    /// take the batch's ranges of that topic.
    #[serde(default)]
    pub topic: Option<String>,
}

/// A list recorded as one value by Spate before joins of two streams
/// (a job's `source`, a checkpoint's `topic`).
pub(crate) fn one_or_many<'de, D, T>(deserializer: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(Box<T>),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![*one],
        OneOrMany::Many(many) => many,
    })
}

impl PlannedJob {
    /// Whether the job keeps state between batches.
    pub fn is_stateful(&self) -> bool {
        self.stages.len() > 1
    }

    /// Whether the job joins two streams: two stages read Kafka.
    pub fn joins_streams(&self) -> bool {
        self.stages.iter().filter(|s| s.topic.is_some()).count() > 1
    }

    /// The source a single-stream job reads; the first of a join's.
    pub fn source(&self) -> &KafkaSourceSpec {
        &self.sources[0]
    }

    /// The source that reads `topic`.
    pub fn source_of(&self, topic: &str) -> Option<&KafkaSourceSpec> {
        self.sources.iter().find(|s| s.topic == topic)
    }

    /// The topics the job reads, as messages name them: `'bid'`, `'auction' and 'bid'`.
    pub fn describe_topics(&self) -> String {
        let topics: Vec<String> = self
            .sources
            .iter()
            .map(|s| format!("'{}'", s.topic))
            .collect();
        topics.join(" and ")
    }

    /// What the job's checkpoint is bound to.
    pub fn checkpoint_metadata(&self) -> CheckpointMetadata {
        CheckpointMetadata {
            topics: self.sources.iter().map(|s| s.topic.clone()).collect(),
            shuffle_partitions: self
                .is_stateful()
                .then_some(self.options.shuffle_partitions)
                .flatten(),
            state_columns: self.state_columns.clone(),
            sink_columns: self.sink_columns.clone(),
            run: String::new(),
        }
    }
}

/// `STORED AS` types Spate's sessions know.
const TABLE_TYPES: &[&str] = &[
    "KAFKA",
    "NEXMARK",
    "PARQUET",
    "JSON",
    "NDJSON",
    "CSV",
    "CONSOLE",
    "REDIS",
    "POSTGRES",
    "POSTGRESQL",
];

/// A session with Spate's table factories, as the planner and the workers use.
pub fn session(env: &PlanEnv) -> SessionContext {
    session_with_partitions(env, 1)
}

/// A session that plans for `partitions` shuffle partitions: stages are cut
/// at hash repartitions, never at round-robin ones, which only balance load
/// inside one process.
pub fn session_with_partitions(env: &PlanEnv, partitions: usize) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .with_information_schema(true);
    let options = config.options_mut();
    options.optimizer.enable_round_robin_repartition = false;
    // A static table joined with a stream is broadcast to every task (a
    // collect-left hash join), never shuffled with the stream.
    options.optimizer.hash_join_single_partition_threshold = usize::MAX;
    options.optimizer.hash_join_single_partition_threshold_rows = usize::MAX;
    options.optimizer.repartition_joins = false;
    // A file scan's partition may take unopened files from its siblings,
    // which works when all of them run in one process; a task runs one
    // partition of a stage, and would read every file.
    options.execution.enable_file_stream_work_stealing = false;
    // Dynamic filters are runtime state between operators of one process;
    // a job's stages run in other processes and batches.
    options.optimizer.enable_dynamic_filter_pushdown = false;
    options.optimizer.enable_join_dynamic_filter_pushdown = false;
    options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    // A task's partial aggregate reads its Kafka partitions one after
    // another, and a group's rows lie spread over them: probed on its first
    // 100,000 rows (DataFusion's default), one partition's, it sees each
    // group about once and stops aggregating, so every row went to the
    // shuffle. Probed on a million, a micro-batch task's whole input as a
    // rule, it aggregates where the task's rows share groups and still
    // stops where they do not.
    options
        .execution
        .skip_partial_aggregation_probe_rows_threshold = 1_000_000;
    // A COUNT(DISTINCT x) alone would become two aggregations, and a
    // streaming job keeps state for one: the distinct set stays state.
    let optimizer_rules = datafusion::optimizer::Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    let files = Arc::new(WorkspaceTableFactory {
        workspace: env.workspace.clone(),
    });
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_table_factory(
            "KAFKA".to_string(),
            Arc::new(KafkaTableFactory {
                default_bootstrap_servers: env.default_bootstrap_servers.clone(),
            }),
        )
        .with_table_factory("NEXMARK".to_string(), Arc::new(NexmarkTableFactory))
        .with_table_factory("PARQUET".to_string(), files.clone())
        .with_table_factory("JSON".to_string(), files.clone())
        .with_table_factory("NDJSON".to_string(), files.clone())
        .with_table_factory("CSV".to_string(), files)
        .with_table_factory("CONSOLE".to_string(), Arc::new(ConsoleTableFactory))
        .with_table_factory("REDIS".to_string(), Arc::new(RedisTableFactory))
        .with_table_factory("POSTGRES".to_string(), Arc::new(PostgresTableFactory))
        .with_table_factory("POSTGRESQL".to_string(), Arc::new(PostgresTableFactory))
        .with_optimizer_rules(optimizer_rules)
        .with_analyzer_rule(Arc::new(ExpandSlidingWindows))
        .build();
    env.workspace.register_in(state.runtime_env());
    let ctx = SessionContext::new_with_state(state);
    for udf in windows::udfs() {
        ctx.register_udf(udf);
    }
    ctx
}

/// Runs one SQL statement in a Spate session as a job would read it:
/// `window.start` and friends resolve as in jobs. For the REPL and tests.
pub async fn sql(ctx: &SessionContext, text: &str) -> Result<datafusion::dataframe::DataFrame> {
    let plan = statement_plan(ctx, text).await?;
    Ok(ctx.execute_logical_plan(plan).await?)
}

/// The logical plan of one SQL statement, with `window.start` and friends
/// resolved as in jobs.
pub async fn statement_plan(ctx: &SessionContext, text: &str) -> Result<LogicalPlan> {
    let mut statements = parse(text)?;
    let (Some(mut statement), None) = (statements.pop_front(), statements.pop_front()) else {
        return Err(EngineError::plan("expected exactly one SQL statement"));
    };
    if let DfStatement::Statement(inner) = &mut statement {
        windows::resolve_window_columns(inner);
    }
    Ok(ctx.state().statement_to_plan(statement).await?)
}

/// Parses SQL text; a syntax error says its line and column.
pub fn parse(text: &str) -> Result<std::collections::VecDeque<DfStatement>> {
    DFParser::parse_sql(text).map_err(|e| EngineError::plan(readable(&e)))
}

/// Plans a job file. `default_name` is used unless the SQL sets spate.job.name.
pub async fn plan_job(env: &PlanEnv, sql: &str, default_name: &str) -> Result<PlannedJob> {
    let ctx = session(env);
    let statements = parse(sql)?;
    if statements.is_empty() {
        return Err(EngineError::plan("the job has no SQL statements"));
    }
    let count = statements.len();
    let mut options = JobOptions::default();
    let mut insert: Option<DmlStatement> = None;
    for (index, mut statement) in statements.into_iter().enumerate() {
        // Errors name the statement as the user wrote it.
        let described = summary(&statement);
        if let DfStatement::Statement(inner) = &mut statement {
            windows::resolve_window_columns(inner);
        }
        let at = |e: EngineError| {
            EngineError::plan(format!(
                "statement {} of {count} ({described}): {}",
                index + 1,
                e.unwrap_datafusion()
            ))
        };
        let statement = crate::insert::prepare(&ctx, statement).await.map_err(at)?;
        let plan = ctx
            .state()
            .statement_to_plan(statement.clone())
            .await
            .map_err(|e| at(e.into()))?;
        match plan {
            LogicalPlan::Statement(datafusion::logical_expr::Statement::SetVariable(set))
                if set.variable.to_lowercase().starts_with("spate.") =>
            {
                let value = set.value;
                let value = value.trim_matches('\'').to_string();
                options
                    .set(&set.variable.to_lowercase(), &value)
                    .map_err(at)?;
            }
            LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => {
                if insert.is_some() {
                    return Err(at(EngineError::plan(
                        "a job runs one INSERT INTO ... SELECT; put each stream in its own job file",
                    )));
                }
                insert = Some(dml);
            }
            LogicalPlan::Dml(_) => {
                return Err(at(EngineError::plan(
                    "only INSERT INTO writes from a streaming job",
                )));
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create))
                if !TABLE_TYPES.contains(&create.file_type.to_uppercase().as_str()) =>
            {
                return Err(at(EngineError::plan(format!(
                    "table '{}': STORED AS {} is not supported; use KAFKA, PARQUET, JSON, CSV, CONSOLE, REDIS or POSTGRES",
                    create.name, create.file_type
                ))));
            }
            plan @ (LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) => {
                ctx.execute_logical_plan(plan)
                    .await
                    .map_err(|e| at(e.into()))?;
            }
            _ => {
                return Err(at(EngineError::plan(
                    "a job file holds CREATE EXTERNAL TABLE, SET and one INSERT INTO ... SELECT; run a bare query in the REPL",
                )));
            }
        }
    }
    let insert = insert.ok_or_else(|| {
        EngineError::plan("the job has no INSERT INTO ... SELECT, so it would write nothing")
    })?;
    let sink = sink_spec(&ctx, &insert).await?;
    let sink_columns = crate::insert::describe_columns(insert.target.schema().as_ref());
    let aggregates = insert.input.exists(|node| {
        Ok(matches!(
            node,
            LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_)
        ))
    })?;
    let mut state = ctx.state();
    if aggregates {
        // A stateful job needs its shuffle, which one partition would not plan.
        let partitions = options
            .shuffle_partitions
            .unwrap_or(env.shuffle_partitions)
            .max(2);
        options.shuffle_partitions = Some(partitions);
        state.config_mut().options_mut().execution.target_partitions = partitions;
    }
    let physical = state
        .create_physical_plan(&insert.input)
        .await
        .map_err(|e| EngineError::from(e).unwrap_datafusion())?;
    let physical = stream_on_probe_side(physical)?;
    // Stateful operators Spate shuffles itself (rather than DataFusion,
    // which plans aggregations' shuffles) use this many partitions.
    let keyed_partitions = options
        .shuffle_partitions
        .unwrap_or(env.shuffle_partitions)
        .max(2);
    let (physical, first_rows) = plan_first_rows(
        physical,
        0,
        keyed_partitions,
        |plan, column| trace_time(plan, column) == Some(TimeColumn::EventTime),
        key_close,
    )
    .map_err(|e| EngineError::from(e).unwrap_datafusion())?;
    let sources = check_streamable(&physical)?;
    let (physical, aggregations) =
        make_stateful(physical, &sources, &sink, options.output_mode, first_rows)?;
    let (physical, joins) = make_stream_joins(physical, keyed_partitions, aggregations)?;
    if joins || first_rows > 0 {
        options.shuffle_partitions = Some(keyed_partitions);
    }
    check_first_rows_last(&physical)?;
    check_join_output_mode(&physical, options.output_mode)?;
    check_per_window(&physical)?;
    let state_columns = state_columns(&physical);
    let explain = displayable(physical.as_ref()).indent(true).to_string();
    let stages = split_into_stages(physical, CutMerges::No)?
        .into_iter()
        .map(|stage| {
            if stage.reads.is_empty() != reads_stream(&stage.plan) {
                return Err(EngineError::plan(format!(
                    "this query would shuffle a static table or read the stream twice (stage {}); a streaming job reads the stream once, joined with static tables whole",
                    stage.id
                )));
            }
            Ok(PlannedStage {
                id: stage.id,
                explain: displayable(stage.plan.as_ref()).indent(true).to_string(),
                plan: SpateCodec::default().encode_plan(Arc::clone(&stage.plan))?,
                topic: stage
                    .reads
                    .is_empty()
                    .then(|| first_stream_source(&stage.plan, |s| s.topic.clone()))
                    .flatten(),
                reads: stage.reads,
                tasks: stage.tasks,
                reads_files: false,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| default_name.to_string());
    Ok(PlannedJob {
        name,
        sql: sql.to_string(),
        sources,
        sink,
        stages,
        explain,
        options,
        state_columns,
        sink_columns,
    })
}

/// The columns each stateful operator keeps, as `name: type`: an
/// aggregation its partial aggregate's output, a join each side's input.
/// Operator 1's columns go bare, as in checkpoints of jobs with one
/// operator; the others' are named `operator N:` (and the join's side).
fn state_columns(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut columns = Vec::new();
    let mut add = |operator: u32, side: &str, schema: &datafusion::arrow::datatypes::SchemaRef| {
        let prefix = match (operator, side) {
            (1, "") => String::new(),
            (_, "") => format!("operator {operator}: "),
            _ => format!("operator {operator} {side}: "),
        };
        columns.extend(
            schema
                .fields()
                .iter()
                .map(|f| format!("{prefix}{}: {}", f.name(), f.data_type())),
        );
    };
    let _ = plan.apply(|node| {
        if let Some(stateful) = node.downcast_ref::<StatefulAggregateExec>() {
            add(stateful.spec().operator, "", &stateful.state_schema());
        }
        if let Some(first) = node.downcast_ref::<FirstRowsExec>() {
            let [pending, written] = first.state_schemas();
            add(first.spec().operator, "pending", &pending);
            add(first.spec().operator, "written", &written);
        }
        if let Some(join) = node.downcast_ref::<StreamJoinExec>() {
            let operator = join.spec().operator;
            let [left, right] = join.side_schemas();
            add(operator, "left", &left);
            add(operator, "right", &right);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    columns
}

/// Puts a `StatefulAggregateExec` in place of each final aggregate of the
/// job, after checking the output mode against the query and the sink with
/// Spark's rules. An aggregation that feeds another stateful operator (an
/// aggregation over it, or a join of two streams) passes on the windows
/// the watermark closed, in append mode whatever the job's; the job's
/// output mode is its last operator's. Aggregations are numbered after
/// `operators_before`, lower ones first; returns the plan and the last
/// number.
fn make_stateful(
    plan: Arc<dyn ExecutionPlan>,
    sources: &[KafkaSourceSpec],
    sink: &SinkSpec,
    mode: OutputMode,
    operators_before: u32,
) -> Result<(Arc<dyn ExecutionPlan>, u32)> {
    let finals = count_nodes(&plan, |node| final_aggregate(node).is_some());
    if finals == 0 {
        if mode == OutputMode::Complete {
            return Err(EngineError::plan(
                "complete output mode re-emits every group each batch, so it needs an aggregation (GROUP BY); this query has none: use append",
            ));
        }
        return Ok((plan, operators_before));
    }
    if mode == OutputMode::Update && !sink.upserts() {
        return Err(EngineError::plan(
            "update output mode rewrites groups as they change, which a file sink cannot; write to a Kafka table (its _key column makes a compacted topic hold the latest row per key), or use append or complete",
        ));
    }
    let mut rewrite = StatefulRewrite {
        sources,
        mode,
        operators: operators_before,
    };
    let plan = rewrite
        .rewrite(plan, false)
        .map_err(|e| EngineError::from(e).unwrap_datafusion())?;
    Ok((plan, rewrite.operators))
}

/// The first rows per key are written once the watermark has passed
/// them, later than any operator above would take them.
fn check_first_rows_last(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let feeds = plan.exists(|node| {
        let stateful = node.is::<StatefulAggregateExec>() || node.is::<StreamJoinExec>();
        Ok(stateful && node.exists(|n| Ok(n.is::<FirstRowsExec>()))?)
    })?;
    if feeds {
        return Err(EngineError::plan(FIRST_ROWS_FEED));
    }
    Ok(())
}

/// A join of two streams as the last stateful step writes each pair once:
/// only append mode says what it does (complete would replace a file
/// sink's table with each batch's pairs).
fn check_join_output_mode(plan: &Arc<dyn ExecutionPlan>, mode: OutputMode) -> Result<()> {
    let mut last = None;
    plan.apply(|node| {
        if node.is::<StreamJoinExec>() || node.is::<StatefulAggregateExec>() {
            last = Some(node.is::<StreamJoinExec>());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if last == Some(true) && mode != OutputMode::Append {
        return Err(EngineError::plan(format!(
            "a join of two streams writes each pair once, when both rows have come, so it runs in append output mode, not {}: SET spate.output_mode = 'append', or aggregate the join",
            mode.name()
        )));
    }
    Ok(())
}

/// How else a group closes, for the refusals of aggregations without one.
pub(crate) const KEY_CLOSE_HINT: &str = ", or the PRIMARY KEY of the table on one side of a join of two streams whose condition bounds the other side's time by a column of that table, which closes a key when the join is done with its row (GROUP BY A.id over B.ts BETWEEN A.ts AND A.expires, with PRIMARY KEY (id) NOT ENFORCED among the auction table's columns, as in Nexmark q4)";

const FIRST_ROWS_FEED: &str = "ROW_NUMBER() over a stream writes each key's first rows once the watermark has passed them, so it cannot feed an aggregation or a join of two streams yet; write its rows to a Kafka table and aggregate or join that in a second job";

/// The walk of `make_stateful`: children first, so that aggregations are
/// numbered bottom up and an aggregation sees what is below it already
/// stateful.
struct StatefulRewrite<'a> {
    sources: &'a [KafkaSourceSpec],
    mode: OutputMode,
    operators: u32,
}

impl StatefulRewrite<'_> {
    /// `feeds_state`: an aggregation or a join of two streams is above.
    fn rewrite(
        &mut self,
        node: Arc<dyn ExecutionPlan>,
        feeds_state: bool,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let aggregate = final_aggregate(node.as_ref()).is_some();
        let children_feed = feeds_state || aggregate || joins_two_streams(node.as_ref());
        let children = node.children();
        let mut rewritten = Vec::with_capacity(children.len());
        let mut changed = false;
        for child in children {
            let new = self.rewrite(Arc::clone(child), children_feed)?;
            changed |= !Arc::ptr_eq(&new, child);
            rewritten.push(new);
        }
        let node = if changed {
            node.replace_children(
                rewritten,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?
        } else {
            node
        };
        if !aggregate {
            return Ok(node);
        }
        self.stateful(node, feeds_state)
    }

    /// A final aggregate, made stateful.
    fn stateful(
        &mut self,
        node: Arc<dyn ExecutionPlan>,
        feeds_state: bool,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let final_agg = final_aggregate(node.as_ref()).expect("a final aggregate");
        if final_agg.input().exists(|n| Ok(n.is::<FirstRowsExec>()))? {
            return Err(DataFusionError::Plan(FIRST_ROWS_FEED.into()));
        }
        let Some(partial) = partial_under(final_agg.input()) else {
            return Err(DataFusionError::Internal(
                "a final aggregate without its partial one".into(),
            ));
        };
        let upstream = final_agg
            .input()
            .exists(|n| Ok(n.is::<StatefulAggregateExec>()))?;
        let upstream_first_seen = final_agg.input().exists(|n| {
            Ok(n.downcast_ref::<StatefulAggregateExec>()
                .is_some_and(StatefulAggregateExec::emits_first_seen))
        })?;
        if upstream_first_seen {
            // Its windows come over many batches, not whole when closed.
            return Err(DataFusionError::Plan(
                "an aggregation over a GROUP BY without aggregate functions is not supported: that GROUP BY writes each group when first seen, not when its window closes; add an aggregate to it (count(*))".into(),
            ));
        }
        let window = if upstream {
            upstream_window(partial)
        } else {
            let sources = sources_of(&(Arc::clone(final_agg.input())));
            let watermarked = sources.iter().all(|topic| {
                self.sources
                    .iter()
                    .any(|s| &s.topic == topic && s.watermark.is_some())
            });
            event_window(partial)
                .filter(|_| watermarked)
                .or_else(|| event_time_key(partial))
        };
        // Without a window, groups of one side's keys of a join of two
        // streams still close, when the join drops that side's row, if
        // its end joins the group keys: each group is then final, so an
        // aggregation may feed another (q4) or append.
        let closing = match &window {
            None if !upstream && (feeds_state || self.mode == OutputMode::Append) => {
                close_groups_by_key(final_agg, partial)?
            }
            _ => None,
        };
        let (planned, window, close_column) = match closing {
            Some(closing) => (closing.plan, Some(closing.window), closing.added),
            None => (Arc::clone(&node), window, None),
        };
        let over_join = final_agg
            .input()
            .exists(|n| Ok(joins_two_streams(n.as_ref()) || n.is::<StreamJoinExec>()))?;
        // A window closes with the watermark only if rows of later batches
        // never fall in it: its time must not be behind the watermark. A
        // join writes a pair in the batch of its later row, so over a join
        // that is the time of the side its condition makes later.
        // (None: the window's time is no plain column, left as it was.)
        let floor = |window: &EventWindow| {
            window_time(partial, window.column()).map(|time| {
                trace_time(partial.input(), time)
                    .and_then(TimeColumn::floor_ms)
                    .is_some_and(|floor| floor >= 0)
            })
        };
        let closes = match &window {
            Some(EventWindow::EventTime { .. } | EventWindow::KeyClose { .. }) | None => true,
            Some(_) if upstream => true,
            Some(w @ EventWindow::Session { .. }) => !over_join && floor(w) != Some(false),
            Some(w) => floor(w).unwrap_or(!over_join),
        };
        if !closes && !over_join {
            return Err(DataFusionError::Plan(
                "the query groups by a window of a column that is not the Kafka table's 'watermark' column: late rows of it could reopen a window already written; window by the watermark column".into(),
            ));
        }
        if !closes {
            return Err(DataFusionError::Plan(
                "this query aggregates the join of two streams by an event-time window whose time the join may write older than the watermark: a pair comes out when its later row comes; window by the time of the side the condition makes later (b.ts in b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' HOUR), aggregate without a window (SET spate.output_mode = 'update' or 'complete'), or write the join to a Kafka table and aggregate that in a second job".into(),
            ));
        }
        let mode = if feeds_state {
            OutputMode::Append
        } else {
            self.mode
        };
        // An aggregation without aggregate functions (SELECT DISTINCT, or
        // a GROUP BY of keys alone) emits each group once, when first seen.
        let distinct = final_agg.aggr_expr().is_empty();
        // A GROUP BY without aggregates writes a group when first seen,
        // which its window's end still bounds: it may feed a join.
        if feeds_state && window.is_none() {
            return Err(DataFusionError::Plan(format!(
                "an aggregation that feeds a join or another aggregation passes on each group once the watermark closes it, so it must GROUP BY an event-time window (window(ts, '10 seconds') or date_bin) of a table with a 'watermark'{KEY_CLOSE_HINT}"
            )));
        }
        if feeds_state && matches!(window, Some(EventWindow::Session { .. })) {
            return Err(DataFusionError::Plan(
                "an aggregation over session windows cannot feed a join or another aggregation yet: sessions close one key at a time".into(),
            ));
        }
        if mode == OutputMode::Append && !distinct && window.is_none() {
            let why = if upstream {
                "an aggregation over a streaming aggregation in append mode emits each group once, when the watermark closes it, so over a windowed aggregation it must GROUP BY that window (window.start, window.end or window itself); otherwise SET spate.output_mode = 'update' or 'complete'".to_string()
            } else {
                format!(
                    "append output mode emits each group once, when the watermark closes its window, so the query must GROUP BY an event-time window (window(ts, '10 seconds') or date_bin) and the Kafka table must declare 'watermark' 'ts - INTERVAL 5 SECONDS'{KEY_CLOSE_HINT}; or SET spate.output_mode = 'update' or 'complete'"
                )
            };
            return Err(DataFusionError::Plan(why));
        }
        let node = match &window {
            Some(EventWindow::Session { column }) => session_shuffled(&planned, *column)?,
            _ => planned,
        };
        self.operators += 1;
        let spec = StatefulSpec {
            operator: self.operators,
            mode,
            window,
        };
        let stateful =
            Arc::new(StatefulAggregateExec::new(spec, node, None).map_err(DataFusionError::from)?)
                as Arc<dyn ExecutionPlan>;
        match close_column {
            Some(added) => without_column(stateful, added),
            None => Ok(stateful),
        }
    }
}

/// A final aggregate whose groups close with a join's rows.
struct ClosingGroups {
    plan: Arc<dyn ExecutionPlan>,
    window: EventWindow,
    /// The group column added for the window (none where it was among
    /// the keys already), which the aggregate's parent must not see.
    added: Option<usize>,
}

/// The final aggregate `final_agg` (over `partial`) with the column that
/// ends its groups' rows among its group keys, where `key_end` finds one
/// for them: the keys hold a primary key, so they decide that column.
fn close_groups_by_key(
    final_agg: &AggregateExec,
    partial: &AggregateExec,
) -> DfResult<Option<ClosingGroups>> {
    let groups = partial.group_expr();
    if !groups.is_single() {
        return Ok(None);
    }
    let keys: Option<Vec<usize>> = groups
        .expr()
        .iter()
        .map(|(e, _)| e.downcast_ref::<Column>().map(Column::index))
        .collect();
    let Some(keys) = keys.filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    let Some(closing) = key_close(partial.input(), &keys)? else {
        return Ok(None);
    };
    let (input, close, end) = (closing.plan, closing.close.column, closing.close);
    if let Some(at) = keys.iter().position(|k| *k == close) {
        let window = EventWindow::KeyClose {
            column: at,
            after_ms: end.after_ms,
        };
        return Ok(Some(ClosingGroups {
            plan: Arc::new(final_agg.clone()),
            window,
            added: None,
        }));
    }
    let name = input.schema().field(close).name().clone();
    let mut exprs = groups.expr().to_vec();
    exprs.push((Arc::new(Column::new(&name, close)) as _, name));
    let group_by = PhysicalGroupBy::new_single(exprs);
    let input_schema = input.schema();
    let closing_partial = Arc::new(AggregateExec::try_new(
        *partial.mode(),
        group_by.clone(),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        input,
        Arc::clone(&input_schema),
    )?) as Arc<dyn ExecutionPlan>;
    let partial_ptr = partial as *const AggregateExec as *const ();
    let replaced = Arc::clone(final_agg.input()).transform_up(|n| {
        Ok(if Arc::as_ptr(&n) as *const () == partial_ptr {
            Transformed::yes(Arc::clone(&closing_partial))
        } else {
            Transformed::no(n)
        })
    })?;
    if !replaced.transformed {
        return Err(DataFusionError::Internal(
            "a final aggregate without its partial one".into(),
        ));
    }
    let input = replaced.data;
    let closing = AggregateExec::try_new(
        *final_agg.mode(),
        group_by.as_final(),
        final_agg.aggr_expr().to_vec(),
        final_agg.filter_expr().to_vec(),
        input,
        input_schema,
    )?;
    let added = keys.len();
    let window = EventWindow::KeyClose {
        column: added,
        after_ms: end.after_ms,
    };
    Ok(Some(ClosingGroups {
        plan: Arc::new(closing),
        window,
        added: Some(added),
    }))
}

/// `plan`'s columns but one: a projection that leaves it out.
pub(crate) fn without_column(
    plan: Arc<dyn ExecutionPlan>,
    dropped: usize,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != dropped)
        .map(|(i, f)| (Arc::new(Column::new(f.name(), i)) as _, f.name().clone()))
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

/// Whether `node` is a hash join whose sides both read a stream.
fn joins_two_streams(node: &dyn ExecutionPlan) -> bool {
    node.downcast_ref::<HashJoinExec>()
        .is_some_and(|j| reads_stream(j.left()) && reads_stream(j.right()))
}

/// The partial aggregate a final one merges: below its shuffle or merge.
fn partial_under(plan: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        return (aggregate.mode().output_mode() == AggregateOutputMode::Partial)
            .then_some(aggregate);
    }
    passes_columns(plan)
        .then(|| partial_under(plan.children()[0]))
        .flatten()
}

/// The topics a plan reads.
fn sources_of(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut topics = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            topics.push(scan.source().topic.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    topics
}

/// `plan` (passing up the column that says when, where it did not) and
/// when a key of its rows can get no more rows, if its columns are one
/// side's of an inner join of two streams (or the side an outer join
/// keeps) and hold the primary key of that side's table: a pair is
/// written before either row leaves the join's state, so a key's rows are
/// all in once the join has dropped its one row of that table, which
/// `expiry_of` says when. The primary key is declared, not enforced (as
/// Flink's): two rows of one key that end at different times are ranked
/// or grouped at each (see `first_rows`).
pub(crate) fn key_close(
    plan: &Arc<dyn ExecutionPlan>,
    keys: &[usize],
) -> DfResult<Option<KeyClosing>> {
    let Some((join, side, end)) = key_end(plan, keys) else {
        return Ok(None);
    };
    let Some((widened, column)) = keeping_join_column(plan, join, side, end.column)? else {
        return Ok(None);
    };
    Ok(Some(KeyClosing {
        added: column >= plan.schema().fields().len(),
        plan: widened,
        close: Expiry {
            column,
            after_ms: end.after_ms,
        },
    }))
}

/// A plan whose keys close with a join's row (`key_close`).
pub(crate) struct KeyClosing {
    pub plan: Arc<dyn ExecutionPlan>,
    /// When a row's key is closed: its column of `plan`, and after it.
    pub close: Expiry,
    /// Whether `close.column` was added to the plan's columns (last).
    pub added: bool,
}

/// The join of two streams whose one side's rows `keys` of `plan` come
/// from, that side, and when the join drops such a row (in a column of
/// that side's input): see `key_close`.
fn key_end<'a>(
    plan: &'a Arc<dyn ExecutionPlan>,
    keys: &[usize],
) -> Option<(&'a HashJoinExec, JoinSide, Expiry)> {
    let traced: Vec<_> = keys
        .iter()
        .map(|k| column_of_stream_join(plan, *k))
        .collect::<Option<_>>()?;
    let (join, side, _) = *traced.first()?;
    if traced
        .iter()
        .any(|(j, s, _)| !std::ptr::eq(*j, join) || *s != side)
    {
        return None;
    }
    let keeps_side = match join.join_type() {
        JoinType::Inner => true,
        JoinType::Left => side == JoinSide::Left,
        JoinType::Right => side == JoinSide::Right,
        _ => false,
    };
    if !keeps_side {
        return None;
    }
    let (left, right) = expiry_of(join, |side, column| {
        trace_time(side_input(join, side), column).and_then(TimeColumn::floor_ms)
    });
    let end = match side {
        JoinSide::Left => left,
        _ => right,
    }?;
    // The keys must hold the declared primary key of the table the side's
    // rows come from, and the end be a column of that table: then a key's
    // rows all come from one row of it, and end together. Not where the
    // side is itself a join of two streams: it writes a pair when its
    // later row comes, maybe after the end.
    let input = side_input(join, side);
    if input.exists(|n| Ok(joins_two_streams(n.as_ref()))).ok()? {
        return None;
    }
    let (table, _) = scan_column(input, end.column)?;
    let key_names: Vec<String> = traced
        .iter()
        .filter_map(|(_, _, c)| scan_column(input, *c))
        .filter(|(scan, _)| std::ptr::eq(*scan, table))
        .map(|(_, name)| name)
        .collect();
    let primary_key = &table.source().primary_key;
    if primary_key.is_empty() || !primary_key.iter().all(|k| key_names.contains(k)) {
        return None;
    }
    Some((join, side, end))
}

/// Follows column `column` of `plan` down through projections, filters,
/// shuffles and joins to the stream table it is a column of: the scan
/// and the column's name.
fn scan_column(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<(&KafkaScanExec, String)> {
    if let Some(scan) = plan.downcast_ref::<KafkaScanExec>() {
        return Some((scan, plan.schema().fields().get(column)?.name().clone()));
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        // Joins whose rows are a left row's columns, then a right row's.
        let pairs = matches!(
            join.join_type(),
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
        );
        let (side, column) = join_input_column(join, column).filter(|_| pairs)?;
        return scan_column(side_input(join, side), column);
    }
    let (child, column) = passed_from(plan, column)?;
    scan_column(child, column)
}

/// `plan` with column `column` of side `side` of `join` (a node of it)
/// passed up to its output, as its last column where it was not there:
/// the plan and where the column is. Through projections, filters and
/// shuffles, as `column_of_stream_join` follows them.
fn keeping_join_column(
    plan: &Arc<dyn ExecutionPlan>,
    join: &HashJoinExec,
    side: JoinSide,
    column: usize,
) -> DfResult<Option<(Arc<dyn ExecutionPlan>, usize)>> {
    if let Some(at) = output_column_of(plan, join, side, column) {
        return Ok(Some((Arc::clone(plan), at)));
    }
    let width = plan.schema().fields().len();
    if let Some(this) = plan.downcast_ref::<HashJoinExec>()
        && std::ptr::eq(this, join)
    {
        let Some(projection) = &this.projection else {
            return Ok(None);
        };
        let mut projection = projection.to_vec();
        projection.push(match side {
            JoinSide::Left => column,
            _ => this.left().schema().fields().len() + column,
        });
        let kept = HashJoinExec::try_new(
            Arc::clone(this.left()),
            Arc::clone(this.right()),
            this.on().to_vec(),
            this.filter().cloned(),
            this.join_type(),
            Some(projection),
            *this.partition_mode(),
            this.null_equality(),
            this.null_aware,
        )?;
        return Ok(Some((Arc::new(kept), width)));
    }
    let Some(child) = plan.children().first().map(|c| Arc::clone(c)) else {
        return Ok(None);
    };
    let Some((input, at)) = keeping_join_column(&child, join, side, column)? else {
        return Ok(None);
    };
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let mut exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = projection
            .expr()
            .iter()
            .map(|e| (Arc::clone(&e.expr), e.alias.clone()))
            .collect();
        let name = input.schema().field(at).name().clone();
        exprs.push((Arc::new(Column::new(&name, at)), name));
        return Ok(Some((
            Arc::new(ProjectionExec::try_new(exprs, input)?),
            width,
        )));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let (projection, at) = match filter.projection() {
            Some(projection) => {
                let mut projection = projection.to_vec();
                projection.push(at);
                (Some(projection), width)
            }
            None => (None, at),
        };
        let filtered = FilterExecBuilder::new(Arc::clone(filter.predicate()), input)
            .apply_projection(projection)?
            .build()?;
        return Ok(Some((Arc::new(filtered), at)));
    }
    if passes_columns(plan) {
        let passed = Arc::clone(plan).replace_children(
            vec![input],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
        return Ok(Some((passed, at)));
    }
    Ok(None)
}

/// The column of `plan`'s output that is column `column` of side `side`
/// of `join`, if `plan` passes it up.
fn output_column_of(
    plan: &Arc<dyn ExecutionPlan>,
    join: &HashJoinExec,
    side: JoinSide,
    column: usize,
) -> Option<usize> {
    (0..plan.schema().fields().len()).find(|c| {
        column_of_stream_join(plan, *c)
            .is_some_and(|(j, s, at)| std::ptr::eq(j, join) && s == side && at == column)
    })
}

/// A join's input on `side`.
fn side_input(join: &HashJoinExec, side: JoinSide) -> &Arc<dyn ExecutionPlan> {
    match side {
        JoinSide::Left => join.left(),
        _ => join.right(),
    }
}

/// Follows column `column` of `plan` down through projections, filters
/// and shuffles to the first join of two streams: the join, the side and
/// the column of that side's input.
fn column_of_stream_join(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
) -> Option<(&HashJoinExec, JoinSide, usize)> {
    if let Some(join) = plan
        .downcast_ref::<HashJoinExec>()
        .filter(|_| joins_two_streams(plan.as_ref()))
    {
        let (side, column) = join_input_column(join, column)?;
        return Some((join, side, column));
    }
    let (child, column) = passed_from(plan, column)?;
    column_of_stream_join(child, column)
}

/// Where column `column` of `plan` comes from one node down, through a
/// projection of columns, a filter or a shuffle: that child and its column.
fn passed_from(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
) -> Option<(&Arc<dyn ExecutionPlan>, usize)> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let c = projection
            .expr()
            .get(column)?
            .expr
            .downcast_ref::<Column>()?;
        return Some((projection.input(), c.index()));
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(projection) => *projection.get(column)?,
            None => column,
        };
        return Some((filter.input(), column));
    }
    passes_columns(plan).then(|| (plan.children()[0], column))
}

/// Whether `plan` passes its one child's columns through as they are.
fn passes_columns(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<RepartitionExec>()
        || plan.is::<CoalescePartitionsExec>()
        || matches!(plan.name(), "CoalesceBatchesExec" | "CooperativeExec")
}

/// The side and the column of that side's input that column `column` of
/// a join's output is.
fn join_input_column(join: &HashJoinExec, column: usize) -> Option<(JoinSide, usize)> {
    let column = match &join.projection {
        Some(projection) => *projection.get(column)?,
        None => column,
    };
    let left = join.left().schema().fields().len();
    Some(match column.checked_sub(left) {
        Some(right) => (JoinSide::Right, right),
        None => (JoinSide::Left, column),
    })
}

/// Sessions of one key merge with each other, so they must meet in one
/// shuffle partition: the aggregation's own shuffle hashes the other group
/// keys only.
fn session_shuffled(
    final_agg: &Arc<dyn ExecutionPlan>,
    session_column: usize,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let input = Arc::clone(final_agg.children()[0]);
    let Some(shuffle) = input.downcast_ref::<RepartitionExec>() else {
        return Ok(Arc::clone(final_agg));
    };
    let shuffle = by_session_key(shuffle, session_column)?;
    Arc::clone(final_agg).replace_children(
        vec![shuffle],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// A group key of an aggregation over a windowed aggregation that is the
/// window below (itself, its start or its end): each comes whole in the
/// batch that closes it, so the group closes there too. The struct closes
/// at its end, a start or end at itself, both already passed.
fn upstream_window(partial: &AggregateExec) -> Option<EventWindow> {
    partial
        .group_expr()
        .expr()
        .iter()
        .enumerate()
        .find_map(|(column, (expr, _))| {
            let input = expr.downcast_ref::<Column>()?;
            match trace_time(partial.input(), input.index())? {
                TimeColumn::Window => Some(EventWindow::Struct { column }),
                TimeColumn::WindowStart { .. } | TimeColumn::WindowEnd => Some(EventWindow::Bin {
                    column,
                    width_ms: 0,
                }),
                TimeColumn::EventTime | TimeColumn::Bin { .. } | TimeColumn::Joined { .. } => None,
            }
        })
}

/// What a column of a plan's output is, as far as the watermark goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeColumn {
    /// A Kafka table's watermark column: rows of later batches are not
    /// older than the watermark (older ones are late).
    EventTime,
    /// The window struct of a windowed aggregation in append mode, which
    /// emits a window once the watermark passed its end (or, without
    /// aggregate functions, when first seen: from on-time rows, so its end
    /// is after the watermark then too).
    Window,
    /// Such a window's start, and its width when known.
    WindowStart { width_ms: Option<i64> },
    /// Such a window's end.
    WindowEnd,
    /// `date_bin(width, ts)` of a table's watermark column, row by row.
    Bin { width_ms: i64 },
    /// A time column of the rows an inner join of two streams writes,
    /// with the floor the join's condition gives it.
    Joined { floor_ms: i64 },
}

impl TimeColumn {
    /// `k` such that rows of later batches hold at least `watermark + k`
    /// in this column.
    fn floor_ms(self) -> Option<i64> {
        match self {
            TimeColumn::EventTime => Some(0),
            // A bin starts less than a width before its rows' times.
            TimeColumn::Bin { width_ms } => Some(1 - width_ms),
            TimeColumn::Joined { floor_ms } => Some(floor_ms),
            // Windows ending at or before the watermark are out already.
            TimeColumn::WindowEnd => Some(1),
            TimeColumn::WindowStart { width_ms } => width_ms.map(|w| 1 - w),
            TimeColumn::Window => None,
        }
    }
}

/// Follows column `column` of `plan` down through projections, filters
/// and shuffles to a Kafka table's watermark column or a stateful
/// aggregation's window.
fn trace_time(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<TimeColumn> {
    if let Some(scan) = plan.downcast_ref::<KafkaScanExec>() {
        let watermark = scan.source().watermark.as_ref()?;
        let schema = plan.schema();
        let field = schema.fields().get(column)?;
        return field
            .name()
            .eq_ignore_ascii_case(&watermark.column)
            .then_some(TimeColumn::EventTime);
    }
    if let Some(stateful) = plan.downcast_ref::<StatefulAggregateExec>() {
        let spec = stateful.spec();
        if spec.mode != OutputMode::Append {
            return None;
        }
        return match spec.window.as_ref()? {
            EventWindow::Struct { column: c } if *c == column => Some(TimeColumn::Window),
            EventWindow::Bin {
                column: c,
                width_ms,
            } if *c == column && *width_ms > 0 => Some(TimeColumn::WindowStart {
                width_ms: Some(*width_ms),
            }),
            _ => None,
        };
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let expr = &projection.expr().get(column)?.expr;
        if let Some(c) = expr.downcast_ref::<Column>() {
            return trace_time(projection.input(), c.index());
        }
        let call = expr.downcast_ref::<ScalarFunctionExpr>()?;
        let (Some(of), Some(field)) = (call.args().first(), call.args().get(1)) else {
            return None;
        };
        if call.name() == "date_bin" {
            // date_bin(width, ts) of a table's event time.
            let width_ms = match of.downcast_ref::<Literal>()?.value() {
                ScalarValue::IntervalMonthDayNano(Some(w)) if w.months == 0 => {
                    w.days as i64 * 86_400_000 + w.nanoseconds / 1_000_000
                }
                _ => return None,
            };
            let ts = field.downcast_ref::<Column>()?;
            return (width_ms > 0
                && trace_time(projection.input(), ts.index())? == TimeColumn::EventTime)
                .then_some(TimeColumn::Bin { width_ms });
        }
        let of = of.downcast_ref::<Column>()?;
        let field = field.downcast_ref::<Literal>()?.value().try_as_str()??;
        if call.name() != "get_field"
            || trace_time(projection.input(), of.index())? != TimeColumn::Window
        {
            return None;
        }
        return match field {
            "start" => Some(TimeColumn::WindowStart { width_ms: None }),
            "end" => Some(TimeColumn::WindowEnd),
            _ => None,
        };
    }
    let stream_join = match plan.downcast_ref::<StreamJoinExec>() {
        Some(wrapped) => Some(wrapped.join()),
        None => plan
            .downcast_ref::<HashJoinExec>()
            .filter(|_| joins_two_streams(plan.as_ref())),
    };
    if let Some(join) = stream_join {
        let (side, column) = join_input_column(join, column)?;
        let floor_ms = output_floor(join, side, column, |side, column| {
            trace_time(side_input(join, side), column).and_then(TimeColumn::floor_ms)
        })?;
        return Some(TimeColumn::Joined { floor_ms });
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && matches!(join.join_type(), JoinType::Inner | JoinType::Right)
    {
        // A stream joined with a table: the stream is the right side.
        return match join_input_column(join, column)? {
            (JoinSide::Right, column) => trace_time(join.right(), column),
            _ => None,
        };
    }
    // Filters and shuffles (projections returned above).
    let (child, column) = passed_from(plan, column)?;
    trace_time(child, column)
}

/// Sessions of one key merge with each other, so they must meet in one
/// shuffle partition: the shuffle hashes the other group keys only.
fn by_session_key(
    shuffle: &RepartitionExec,
    session_column: usize,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let Partitioning::Hash(exprs, partitions) = shuffle.partitioning() else {
        return Ok(Arc::new(shuffle.clone()));
    };
    let keys: Vec<_> = exprs
        .iter()
        .filter(|e| {
            e.downcast_ref::<Column>()
                .is_none_or(|c| c.index() != session_column)
        })
        .cloned()
        .collect();
    if keys.is_empty() {
        return Err(DataFusionError::Plan(
            "session_window(...) needs a key to group by besides the session, e.g. GROUP BY session_window(ts, '5 minutes'), user_id".into(),
        ));
    }
    Ok(Arc::new(RepartitionExec::try_new(
        Arc::clone(shuffle.input()),
        Partitioning::Hash(keys, *partitions),
    )?))
}

/// A hash join collects its left input whole; where DataFusion put the
/// stream there (it knows no sizes of either side), the inputs swap, so the
/// static table is what each task holds in memory.
fn stream_on_probe_side(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if reads_stream(join.left()) && !reads_stream(join.right()) {
                return Ok(Transformed::yes(
                    join.swap_inputs(PartitionMode::CollectLeft)?,
                ));
            }
            Ok(Transformed::no(node))
        })?
        .data
        .transform_up(|node| {
            // The collected side is read whole, as one partition.
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if join.left().output_partitioning().partition_count() <= 1 {
                return Ok(Transformed::no(node));
            }
            let left: Arc<dyn ExecutionPlan> =
                Arc::new(CoalescePartitionsExec::new(Arc::clone(join.left())));
            let right = Arc::clone(join.right());
            Ok(Transformed::yes(node.replace_children(
                vec![left, right],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?))
        })?
        .data)
}

/// Whether the plan reads the stream (has a Kafka scan).
pub(crate) fn reads_stream(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|n| Ok(n.is::<KafkaScanExec>()))
        .unwrap_or(false)
}

/// The Kafka tables a plan reads, for messages: `'bid'`, `'auction' and 'bid'`.
fn describe_stream_tables(plan: &Arc<dyn ExecutionPlan>) -> String {
    let mut tables = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            tables.push(format!("'{}'", scan.source().table));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables.sort();
    tables.dedup();
    tables.join(" and ")
}

/// What `of` says of the first Kafka table a plan reads.
fn first_stream_source<T>(
    plan: &Arc<dyn ExecutionPlan>,
    of: impl Fn(&KafkaSourceSpec) -> T,
) -> Option<T> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            found = Some(of(scan.source()));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

fn count_nodes(plan: &Arc<dyn ExecutionPlan>, f: impl Fn(&dyn ExecutionPlan) -> bool) -> usize {
    let mut count = 0;
    let _ = plan.apply(|node| {
        if f(node.as_ref()) {
            count += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    count
}

/// The partial aggregate's group key that is an event-time window:
/// `window(...)` (a struct with its end) or `date_bin(width, ts)`.
fn event_window(partial: &AggregateExec) -> Option<EventWindow> {
    let schema = partial.schema();
    partial
        .group_expr()
        .expr()
        .iter()
        .enumerate()
        .find_map(|(column, (expr, _))| {
            if windows::is_session_field(schema.field(column)) {
                return Some(EventWindow::Session { column });
            }
            if windows::is_window_field(schema.field(column)) {
                return Some(EventWindow::Struct { column });
            }
            let call = expr.downcast_ref::<ScalarFunctionExpr>()?;
            if call.name() != "date_bin" {
                return None;
            }
            let width = call.args().first()?.downcast_ref::<Literal>()?;
            let ScalarValue::IntervalMonthDayNano(Some(width)) = width.value() else {
                return None;
            };
            (width.months == 0).then_some(EventWindow::Bin {
                column,
                width_ms: width.days as i64 * 86_400_000 + width.nanoseconds / 1_000_000,
            })
        })
}

/// The input column a windowed group key is computed from: the time
/// argument of `window(ts, ...)` or `date_bin(width, ts)`.
fn window_time(partial: &AggregateExec, group: usize) -> Option<usize> {
    let (expr, _) = partial.group_expr().expr().get(group)?;
    let call = expr.downcast_ref::<ScalarFunctionExpr>()?;
    let time = match call.name() {
        "date_bin" => call.args().get(1)?,
        _ => call.args().first()?,
    };
    time.downcast_ref::<Column>().map(Column::index)
}

/// A group key that is a Kafka table's event-time column itself: its
/// groups take no rows once the watermark has passed it (later rows are
/// late).
fn event_time_key(partial: &AggregateExec) -> Option<EventWindow> {
    partial
        .group_expr()
        .expr()
        .iter()
        .position(|(expr, _)| {
            expr.downcast_ref::<Column>().is_some_and(|c| {
                trace_time(partial.input(), c.index()) == Some(TimeColumn::EventTime)
            })
        })
        .map(|column| EventWindow::EventTime { column })
}

pub(crate) fn summary(statement: &DfStatement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(5).collect();
    let mut s = words.join(" ");
    if text.split_whitespace().count() > 5 {
        s.push_str(" ...");
    }
    s
}

async fn sink_spec(ctx: &SessionContext, insert: &DmlStatement) -> Result<SinkSpec> {
    let provider = ctx.table_provider(insert.table_name.clone()).await?;
    if let Some(kafka) = provider.downcast_ref::<KafkaTable>() {
        return Ok(SinkSpec::Kafka(kafka.sink_spec()));
    }
    if let Some(files) = provider.downcast_ref::<WorkspaceTable>() {
        return Ok(SinkSpec::Files {
            table: files.name.clone(),
            dir: files.dir.clone(),
            format: files.format.clone(),
        });
    }
    if let Some(console) = provider.downcast_ref::<ConsoleTable>() {
        return Ok(SinkSpec::Console {
            max_rows: console.spec.max_rows,
        });
    }
    if let Some(redis) = provider.downcast_ref::<RedisTable>() {
        return Ok(SinkSpec::Redis(redis.spec.clone()));
    }
    if let Some(postgres) = provider.downcast_ref::<PostgresTable>() {
        return Ok(SinkSpec::Postgres(postgres.spec.clone()));
    }
    Err(EngineError::plan(format!(
        "INSERT INTO {}: a job writes to a table STORED AS KAFKA, PARQUET, JSON, CSV, CONSOLE, REDIS or POSTGRES",
        insert.table_name
    )))
}

/// Operators a streaming job may hold. Row-by-row ones give the same rows
/// over parts of the stream as over all of it; an aggregation becomes a
/// partial aggregate, a shuffle and a stateful merge; a static table is
/// read whole by every task that joins it.
const STREAMING_OPERATORS: &[&str] = &[
    "KafkaScanExec",
    "FirstRowsExec",
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
    "AggregateExec",
    "RepartitionExec",
    "UnnestExec",
    "HashJoinExec",
    "CoalescePartitionsExec",
    "DataSourceExec",
    "EmptyExec",
];

/// Checks that the plan can run per micro-batch task, and returns its
/// Kafka sources, one per topic.
fn check_streamable(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<KafkaSourceSpec>> {
    let mut sources: Vec<KafkaSourceSpec> = Vec::new();
    let mut refused = None;
    plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            if !sources.iter().any(|s| s.topic == scan.source().topic) {
                sources.push(scan.source().as_ref().clone());
            }
        } else if refused.is_none() {
            refused = refusal(node.as_ref());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(why) = refused {
        return Err(EngineError::plan(why));
    }
    if sources.is_empty() {
        return Err(EngineError::plan(
            "the query reads no Kafka table; a streaming job reads one table STORED AS KAFKA",
        ));
    }
    Ok(sources)
}

/// Why a streaming job cannot run this operator, if it cannot.
fn refusal(node: &dyn ExecutionPlan) -> Option<String> {
    let name = node.name();
    if is_per_window(node) && above_an_aggregation(node) {
        // Judged once the aggregation is stateful: see `check_per_window`.
        return None;
    }
    if !STREAMING_OPERATORS.contains(&name) {
        let what = match name {
            "SortExec" | "SortPreservingMergeExec" => "ORDER BY",
            "GlobalLimitExec" | "LocalLimitExec" => "LIMIT",
            "WindowAggExec" | "BoundedWindowAggExec" => "an OVER (...) window function",
            "NestedLoopJoinExec" | "CrossJoinExec" | "SortMergeJoinExec" => {
                "a join without an equality condition"
            }
            _ => name,
        };
        return Some(refusal_of(what, name));
    }
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        if reads_stream(join.left()) && reads_stream(join.right()) {
            // Judged in `make_stream_joins`, which knows the time bounds.
            return None;
        }
        if *join.partition_mode() != PartitionMode::CollectLeft || reads_stream(join.left()) {
            return Some(
                "a stream joins a static table (a Parquet, CSV or JSON table in the workspace); this join would hold the stream itself in memory".to_string(),
            );
        }
        if !matches!(join.join_type(), JoinType::Inner | JoinType::Right) {
            return Some(format!(
                "a {} join of a stream with a table is not supported: use an inner join, or a LEFT JOIN with the stream on the left",
                join.join_type()
            ));
        }
    }
    None
}

/// A join of two streams becomes a `StreamJoinExec` over both sides
/// shuffled by the join keys (one more stage per side), whose state keeps
/// each side's rows while the join condition lets them match. Returns the
/// plan and whether it joins streams.
fn make_stream_joins(
    plan: Arc<dyn ExecutionPlan>,
    partitions: usize,
    operators_before: u32,
) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
    let mut operator = operators_before;
    let planned = plan.transform_up(|node| {
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return Ok(Transformed::no(node));
        };
        if !(reads_stream(join.left()) && reads_stream(join.right())) {
            return Ok(Transformed::no(node));
        }
        let tables = format!(
            "the query joins two streams ({} with {})",
            describe_stream_tables(join.left()),
            describe_stream_tables(join.right())
        );
        let join_type = *join.join_type();
        if !matches!(
            join_type,
            JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full
        ) {
            return Err(DataFusionError::Plan(format!(
                "{tables} as a {join_type} join, which is not supported: join two streams with an inner, left, right or full outer join"
            )));
        }
        let shuffle = |side: &Arc<dyn ExecutionPlan>, keys: Vec<Arc<dyn PhysicalExpr>>| {
            RepartitionExec::try_new(under_merges(side), Partitioning::Hash(keys, partitions))
                .map(|r| Arc::new(r) as Arc<dyn ExecutionPlan>)
        };
        let shuffled = HashJoinExec::try_new(
            shuffle(join.left(), join.on().iter().map(|(l, _)| Arc::clone(l)).collect())?,
            shuffle(join.right(), join.on().iter().map(|(_, r)| Arc::clone(r)).collect())?,
            join.on().to_vec(),
            join.filter().cloned(),
            &join_type,
            join.projection.as_ref().map(|p| p.to_vec()),
            PartitionMode::Partitioned,
            join.null_equality(),
            join.null_aware,
        )?;
        let (left, right) = expiry_of(&shuffled, |side, column| {
            trace_time(side_input(&shuffled, side), column).and_then(TimeColumn::floor_ms)
        });
        let unbounded = |outer: &str, other: &str| {
            DataFusionError::Plan(format!(
                "{tables} with a {join_type} join, which emits a {outer} row without a match once the watermark makes a match impossible; so the join condition must bound the {other} side's event time by the {outer} side's, e.g. {other}.ts BETWEEN {outer}.ts AND {outer}.ts + INTERVAL '1 hour', and both tables must declare a 'watermark'"
            ))
        };
        if matches!(join_type, JoinType::Left | JoinType::Full) && left.is_none() {
            return Err(unbounded("left", "right"));
        }
        if matches!(join_type, JoinType::Right | JoinType::Full) && right.is_none() {
            return Err(unbounded("right", "left"));
        }
        operator += 1;
        let spec = StreamJoinSpec {
            operator,
            left,
            right,
        };
        Ok(Transformed::yes(Arc::new(
            StreamJoinExec::new(spec, Arc::new(shuffled), None).map_err(DataFusionError::from)?,
        ) as Arc<dyn ExecutionPlan>))
    });
    let planned = planned.map_err(|e| EngineError::from(e).unwrap_datafusion())?;
    Ok((planned.data, planned.transformed))
}

/// A side of a join below the merges DataFusion put there to collect it.
pub(crate) fn under_merges(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.is::<CoalescePartitionsExec>() || plan.name() == "CoalesceBatchesExec" {
        return under_merges(plan.children()[0]);
    }
    Arc::clone(plan)
}

fn refusal_of(what: &str, operator: &str) -> String {
    format!(
        "this query needs {what} ({operator}), which a streaming job cannot run: an unbounded stream has no last row to sort or limit by; aggregate it by window (a window function may then rank each window's rows: PARTITION BY window.start), or run the query in the REPL over a sink"
    )
}

/// A window function and the sort it reads, which may run over what a
/// windowed aggregation emits.
fn is_per_window(node: &dyn ExecutionPlan) -> bool {
    node.is::<BoundedWindowAggExec>() || node.is::<WindowAggExec>() || node.is::<SortExec>()
}

pub(crate) fn above_an_aggregation(node: &dyn ExecutionPlan) -> bool {
    node.children().iter().any(|child| {
        child
            .exists(|n| Ok(final_aggregate(n.as_ref()).is_some()))
            .unwrap_or(false)
    })
}

/// The aggregate that gives a query's aggregated rows (final or single mode).
fn final_aggregate(node: &dyn ExecutionPlan) -> Option<&AggregateExec> {
    node.downcast_ref::<AggregateExec>()
        .filter(|a| a.mode().output_mode() == AggregateOutputMode::Final)
}

/// An OVER (...) window function above a windowed aggregation in append
/// mode runs, each batch, over the windows the watermark closed: each
/// comes out whole, in one batch, so per-window functions (top-N by
/// `ROW_NUMBER()` or `RANK()`, a share of the window's total) see every
/// row of it. That holds only when the function partitions by the
/// aggregation's window; anything else would mix batches, and is refused.
fn check_per_window(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let mut feeding_windows = Vec::new();
    let mut refused = None;
    plan.apply(|node| {
        let partition_keys = if let Some(w) = node.downcast_ref::<BoundedWindowAggExec>() {
            Some(w.partition_keys())
        } else {
            node.downcast_ref::<WindowAggExec>()
                .map(WindowAggExec::partition_keys)
        };
        if let Some(keys) = partition_keys {
            let input = Arc::clone(node.children()[0]);
            if input.is::<SortExec>() {
                feeding_windows.push(Arc::as_ptr(&input) as *const () as usize);
            }
            if let Some(why) = per_window_refusal(&input, &keys) {
                refused.get_or_insert(why);
            }
        } else if node.is::<SortExec>()
            && !feeding_windows.contains(&(Arc::as_ptr(node) as *const () as usize))
        {
            refused.get_or_insert_with(|| refusal_of("ORDER BY", node.name()));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    refused.map_or(Ok(()), |why| Err(EngineError::plan(why)))
}

fn per_window_refusal(
    input: &Arc<dyn ExecutionPlan>,
    keys: &[Arc<dyn PhysicalExpr>],
) -> Option<String> {
    let stateful = find_stateful(input)?;
    let spec = stateful.spec();
    let per_window = "an OVER (...) window function over a streaming aggregation runs on each window's rows when the watermark closes it";
    if spec.mode != OutputMode::Append {
        return Some(format!(
            "{per_window}, which needs append output mode, not {}",
            spec.mode.name()
        ));
    }
    match &spec.window {
        None => Some(format!(
            "{per_window}, so the aggregation must GROUP BY an event-time window"
        )),
        Some(EventWindow::Session { .. }) => Some(format!(
            "{per_window}; sessions close one key at a time, so they cannot be ranked together"
        )),
        Some(EventWindow::KeyClose { .. }) => Some(format!(
            "{per_window}; groups of a join side's keys close one key at a time, when the join drops its row, so they cannot be ranked together"
        )),
        Some(window) => {
            let by_window = keys.iter().any(|key| {
                collect_columns(key)
                    .iter()
                    .any(|c| from_window(input, c.index(), window.column()))
            });
            (!by_window).then(|| {
                format!(
                    "{per_window}, so it must PARTITION BY the window (e.g. PARTITION BY window.start), or it would mix windows that close in different batches"
                )
            })
        }
    }
}

fn find_stateful(plan: &Arc<dyn ExecutionPlan>) -> Option<&StatefulAggregateExec> {
    if let Some(stateful) = plan.downcast_ref::<StatefulAggregateExec>() {
        return Some(stateful);
    }
    plan.children().into_iter().find_map(find_stateful)
}

/// Whether column `column` of `plan`'s output is computed from the window
/// group column `window` of the stateful aggregation below.
fn from_window(plan: &Arc<dyn ExecutionPlan>, column: usize, window: usize) -> bool {
    if plan.is::<StatefulAggregateExec>() {
        return column == window;
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return projection.expr().get(column).is_some_and(|p| {
            collect_columns(&p.expr)
                .iter()
                .any(|c| from_window(projection.input(), c.index(), window))
        });
    }
    let Some(input) = plan.children().first().map(|c| Arc::clone(c)) else {
        return false;
    };
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let column = match filter.projection() {
            Some(projection) => match projection.get(column) {
                Some(c) => *c,
                None => return false,
            },
            None => column,
        };
        return from_window(&input, column, window);
    }
    let passes_columns = plan.is::<RepartitionExec>()
        || plan.is::<SortExec>()
        || plan.is::<BoundedWindowAggExec>()
        || plan.is::<WindowAggExec>();
    passes_columns && column < input.schema().fields().len() && from_window(&input, column, window)
}

/// Per-partition starting offsets as the source spec gives them, resolved
/// against the partitions' current watermarks.
pub fn starting_offset(spec: &KafkaSourceSpec, partition: i32, low: i64, high: i64) -> i64 {
    use crate::kafka::StartingOffsets;
    match &spec.starting_offsets {
        StartingOffsets::Earliest => low,
        StartingOffsets::Latest => high,
        StartingOffsets::Specific(map) => match map.get(&partition) {
            Some(-2) | None => low,
            Some(-1) => high,
            // Below `low` the read fails: those records are gone, and
            // skipping them silently would lose data.
            Some(o) => (*o).min(high),
        },
    }
}
