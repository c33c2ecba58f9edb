//! One statement of an interactive session (the REPL). The master keeps no
//! session: each request brings the DDL and SET statements that ran before,
//! which are replayed into a fresh planning session, and then the new
//! statement is classified:
//!
//! - DDL and SET belong to the session: checked here, kept by the client;
//! - a query over tables becomes stages for the workers, cut like a job's
//!   plus a stage for each merge of partitions (ORDER BY, LIMIT, a global
//!   aggregate), reading a Kafka table as a bounded snapshot;
//! - a statement without table data (SHOW, DESCRIBE, EXPLAIN, constants)
//!   is answered by the planner alone;
//! - `INSERT INTO ... SELECT` is a streaming job: the session's statements
//!   and the insert make its job file.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};

use crate::codec::SpateCodec;
use crate::error::{EngineError, Result};
use crate::job::{
    JobOptions, PlanEnv, PlannedStage, reads_stream, session_with_partitions, statement_plan,
};
use crate::kafka::{KafkaScanExec, KafkaSourceSpec};
use crate::stages::{CutMerges, split_into_stages};
use crate::windows;

/// What a statement is, and what to do with it.
pub enum Statement {
    /// DDL or SET, checked: the session keeps it.
    Session { message: String },
    /// Answered by the planner alone: no table data to read.
    Local(DataFrame),
    /// Runs on the workers.
    Distributed(Box<PlannedQuery>),
    /// `INSERT INTO ... SELECT`: a streaming job with this SQL.
    Job { sql: String, default_name: String },
}

/// A query planned for the workers: one batch job.
#[derive(Debug, Clone)]
pub struct PlannedQuery {
    /// In the order they run; the last one's rows are the result.
    pub stages: Vec<PlannedStage>,
    pub schema: SchemaRef,
    /// The Kafka table it reads, if any, of which the master takes a snapshot.
    pub source: Option<KafkaSourceSpec>,
    /// The stages and their plans, for `\explain`.
    pub explain: String,
}

/// Replays the session and classifies (and plans) `text`.
pub async fn plan_statement(env: &PlanEnv, session: &[String], text: &str) -> Result<Statement> {
    let ctx = session_with_partitions(env, env.shuffle_partitions);
    for (index, earlier) in session.iter().enumerate() {
        let plan = statement_plan(&ctx, earlier).await.map_err(|e| {
            EngineError::plan(format!(
                "session statement {} no longer plans: {}",
                index + 1,
                e.unwrap_datafusion()
            ))
        })?;
        if job_option(&plan).is_none() {
            ctx.execute_logical_plan(plan).await?.collect().await?;
        }
    }
    let plan = statement_plan(&ctx, text)
        .await
        .map_err(EngineError::unwrap_datafusion)?;
    if let Some((key, value)) = job_option(&plan) {
        JobOptions::default().set(&key, &value)?;
        return Ok(Statement::Session {
            message: format!("{key} = '{value}' (for the streaming jobs this session starts)"),
        });
    }
    match &plan {
        LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => {
            let mut sql: String = session.iter().map(|s| format!("{s};\n")).collect();
            sql.push_str(text);
            return Ok(Statement::Job {
                sql,
                default_name: dml.table_name.table().to_string(),
            });
        }
        LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => {
            return Err(EngineError::plan(
                "only INSERT INTO ... SELECT writes from the REPL (it starts a streaming job)",
            ));
        }
        LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
            let message = session_message(&plan);
            ctx.execute_logical_plan(plan).await?.collect().await?;
            return Ok(Statement::Session { message });
        }
        _ => {}
    }
    let physical = ctx
        .state()
        .create_physical_plan(&plan)
        .await
        .map_err(|e| EngineError::from(e).unwrap_datafusion())?;
    if !reads_data(&physical) {
        return Ok(Statement::Local(ctx.execute_logical_plan(plan).await?));
    }
    if groups_by_session(&physical) {
        return Err(EngineError::plan(
            "session_window(...) merges a key's sessions across batches in a streaming job only; a query here would see each row as its own session. Run it as a job (INSERT INTO ... SELECT) and query its sink",
        ));
    }
    let source = kafka_source(&physical)?;
    let stages = split_into_stages(Arc::clone(&physical), CutMerges::Yes)?;
    let mut explain = String::new();
    let stages = stages
        .into_iter()
        .map(|stage| {
            let text = displayable(stage.plan.as_ref()).indent(true).to_string();
            explain.push_str(&format!(
                "Stage {} ({} task{}{}):\n{text}\n",
                stage.id,
                stage.tasks,
                if stage.tasks == 1 { "" } else { "s" },
                if stage.reads.is_empty() {
                    String::new()
                } else {
                    format!(", reads stage {:?}", stage.reads)
                }
            ));
            Ok(PlannedStage {
                id: stage.id,
                reads_files: stage.reads.is_empty() && !reads_stream(&stage.plan),
                plan: SpateCodec::default().encode_plan(Arc::clone(&stage.plan))?,
                reads: stage.reads,
                tasks: stage.tasks,
                explain: text,
                // A query reads one topic, whose ranges every source task splits.
                topic: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Statement::Distributed(Box::new(PlannedQuery {
        stages,
        schema: physical.schema(),
        source,
        explain,
    })))
}

/// `SET spate.<option> = value`: a job option, not a DataFusion setting.
fn job_option(plan: &LogicalPlan) -> Option<(String, String)> {
    match plan {
        LogicalPlan::Statement(datafusion::logical_expr::Statement::SetVariable(set))
            if set.variable.to_lowercase().starts_with("spate.") =>
        {
            Some((
                set.variable.to_lowercase(),
                set.value.trim_matches('\'').to_string(),
            ))
        }
        _ => None,
    }
}

fn session_message(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(c)) => {
            format!("table {} created", c.name)
        }
        LogicalPlan::Ddl(DdlStatement::CreateView(c)) => format!("view {} created", c.name),
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
            format!("table {} created", c.name)
        }
        LogicalPlan::Ddl(DdlStatement::DropTable(d)) => format!("table {} dropped", d.name),
        LogicalPlan::Ddl(DdlStatement::DropView(d)) => format!("view {} dropped", d.name),
        LogicalPlan::Statement(datafusion::logical_expr::Statement::SetVariable(set)) => {
            format!("{} = {}", set.variable, set.value)
        }
        other => other.display().to_string(),
    }
}

/// Whether the plan reads a table's data (files or Kafka).
fn reads_data(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| Ok(node.is::<KafkaScanExec>() || node.is::<DataSourceExec>()))
        .unwrap_or(true)
}

fn groups_by_session(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.exists(|node| {
        Ok(node.downcast_ref::<AggregateExec>().is_some_and(|a| {
            a.schema()
                .fields()
                .iter()
                .any(|f| windows::is_session_field(f))
        }))
    })
    .unwrap_or(false)
}

/// The query's Kafka table: every task of its first stage reads a share
/// of one snapshot, so a query reads one topic, once.
fn kafka_source(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<KafkaSourceSpec>> {
    let mut sources: Vec<KafkaSourceSpec> = Vec::new();
    plan.apply(|node| {
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            sources.push(scan.source().as_ref().clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if sources.len() > 1 {
        return Err(EngineError::plan(
            "the query reads Kafka more than once; a query reads one topic once (join it with file tables, or query a job's sink)",
        ));
    }
    Ok(sources.pop())
}
