//! A job file's SQL to a planned streaming job: DDL runs in a planning
//! session (Kafka and file tables come from Spate's factories), `SET spate.*`
//! sets job options, and the one `INSERT INTO sink SELECT ...` becomes the
//! physical plan that each task runs over its offset ranges.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use serde::{Deserialize, Serialize};

use crate::codec::SpateCodec;
use crate::error::{EngineError, Result};
use crate::files::{FileFormatKind, WorkspaceTable, WorkspaceTableFactory};
use crate::kafka::{KafkaScanExec, KafkaSinkSpec, KafkaSourceSpec, KafkaTable, KafkaTableFactory};
use crate::workspace::Workspace;

/// Where a job's rows go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkSpec {
    Files {
        table: String,
        /// Relative to the workspace root.
        dir: String,
        format: FileFormatKind,
    },
    Kafka(KafkaSinkSpec),
}

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
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            name: None,
            trigger_interval_ms: 1000,
            available_now: false,
            max_task_failures: 4,
        }
    }
}

const KNOWN_JOB_OPTIONS: &str = "spate.job.name, spate.trigger.interval (e.g. '500ms', '2s'), spate.trigger.available_now (true/false), spate.task.max_failures";

impl JobOptions {
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
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
}

/// A job, planned: ready for the coordinator to run batch after batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedJob {
    pub name: String,
    pub sql: String,
    pub source: KafkaSourceSpec,
    pub sink: SinkSpec,
    /// The stage's physical plan, datafusion-proto bytes with `SpateCodec`.
    pub plan: Vec<u8>,
    /// The plan as text, for humans.
    pub explain: String,
    pub options: JobOptions,
}

/// `STORED AS` types Spate's sessions know.
const TABLE_TYPES: &[&str] = &["KAFKA", "PARQUET", "JSON", "NDJSON", "CSV"];

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
    config
        .options_mut()
        .optimizer
        .enable_round_robin_repartition = false;
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
        .with_table_factory("PARQUET".to_string(), files.clone())
        .with_table_factory("JSON".to_string(), files.clone())
        .with_table_factory("NDJSON".to_string(), files.clone())
        .with_table_factory("CSV".to_string(), files)
        .build();
    SessionContext::new_with_state(state)
}

/// Plans a job file. `default_name` is used unless the SQL sets spate.job.name.
pub async fn plan_job(env: &PlanEnv, sql: &str, default_name: &str) -> Result<PlannedJob> {
    let ctx = session(env);
    let statements =
        DFParser::parse_sql(sql).map_err(|e| EngineError::plan(format!("syntax error: {e}")))?;
    if statements.is_empty() {
        return Err(EngineError::plan("the job has no SQL statements"));
    }
    let count = statements.len();
    let mut options = JobOptions::default();
    let mut insert: Option<DmlStatement> = None;
    for (index, statement) in statements.into_iter().enumerate() {
        let at = |e: EngineError| {
            EngineError::plan(format!(
                "statement {} of {count} ({}): {}",
                index + 1,
                summary(&statement),
                e.unwrap_datafusion()
            ))
        };
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
                    "table '{}': STORED AS {} is not supported; use KAFKA, PARQUET, JSON or CSV",
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
    let physical = ctx
        .state()
        .create_physical_plan(&insert.input)
        .await
        .map_err(|e| EngineError::from(e).unwrap_datafusion())?;
    let source = check_streamable(&physical)?;
    let plan = SpateCodec::default().encode_plan(Arc::clone(&physical))?;
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| default_name.to_string());
    Ok(PlannedJob {
        name,
        sql: sql.to_string(),
        source,
        sink,
        plan,
        explain: displayable(physical.as_ref()).indent(true).to_string(),
        options,
    })
}

fn summary(statement: &DfStatement) -> String {
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
            format: files.format,
        });
    }
    Err(EngineError::plan(format!(
        "INSERT INTO {}: a job writes to a table STORED AS KAFKA, PARQUET, JSON or CSV",
        insert.table_name
    )))
}

/// Operators a stateless stage may hold: they work row by row, so running
/// them per task over a part of the stream gives the same rows as over all of it.
const STATELESS_OPERATORS: &[&str] = &[
    "KafkaScanExec",
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "CooperativeExec",
];

/// Checks that the plan can run per micro-batch task, and returns its one Kafka source.
fn check_streamable(plan: &Arc<dyn ExecutionPlan>) -> Result<KafkaSourceSpec> {
    let mut sources = Vec::new();
    let mut refused = None;
    plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            sources.push(scan.source().as_ref().clone());
        } else if !STATELESS_OPERATORS.contains(&node.name()) && refused.is_none() {
            refused = Some(node.name().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(operator) = refused {
        return Err(EngineError::plan(format!(
            "this query needs {operator}, which a streaming job cannot run yet: jobs filter and project Kafka rows; aggregations, joins, ORDER BY and LIMIT over a stream come with stateful streaming"
        )));
    }
    match sources.len() {
        0 => Err(EngineError::plan(
            "the query reads no Kafka table; a streaming job reads one table STORED AS KAFKA",
        )),
        1 => {
            if plan.output_partitioning().partition_count() != 1 {
                return Err(EngineError::plan(
                    "internal: a stateless stage must have one partition",
                ));
            }
            Ok(sources.remove(0))
        }
        _ => Err(EngineError::plan(
            "the query reads more than one Kafka table; joining two streams is not supported yet",
        )),
    }
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
