//! Running one task on a worker: decode the stage plan with the task's
//! offset ranges, run it, and write its rows to the sink. File outputs are
//! named by batch, task and attempt, so a re-run never overwrites a file
//! that a committed manifest names.

use std::sync::Arc;
use std::time::Instant;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::physical_plan::{ExecutionPlan, collect};
use serde::{Deserialize, Serialize};

use crate::OffsetRange;
use crate::codec::SpateCodec;
use crate::error::{EngineError, Result};
use crate::job::{PlanEnv, SinkSpec, session};
use crate::kafka::{KafkaScanExec, produce_batches};
use crate::workspace::Workspace;

/// One task of one batch, as the master sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    pub job_id: String,
    pub batch_id: u64,
    pub attempt_id: String,
    pub task_index: u32,
    pub plan: Vec<u8>,
    pub ranges: Vec<OffsetRange>,
    pub sink: SinkSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub input_rows: u64,
    pub output_rows: u64,
    /// Relative to the workspace root.
    pub output_files: Vec<String>,
    pub duration_ms: u64,
}

/// The file a task attempt writes into a file sink.
pub fn output_file_name(
    dir: &str,
    batch: u64,
    task_index: u32,
    attempt: &str,
    extension: &str,
) -> String {
    format!("{dir}/part-{batch:08}-{task_index:04}-{attempt}.{extension}")
}

pub async fn run_task(ws: &Workspace, task: &TaskSpec) -> Result<TaskOutcome> {
    let started = Instant::now();
    let env = PlanEnv {
        workspace: ws.clone(),
        default_bootstrap_servers: String::new(),
    };
    let ctx = session(&env);
    let codec = SpateCodec::for_task(task.ranges.clone());
    let plan = codec.decode_plan(&task.plan, &ctx.task_ctx())?;
    let batches = collect(Arc::clone(&plan), ctx.task_ctx())
        .await
        .map_err(|e| EngineError::from(e).unwrap_datafusion())?;
    let output_rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut output_files = Vec::new();
    match &task.sink {
        SinkSpec::Files { dir, format, .. } => {
            if output_rows > 0 {
                let path = output_file_name(
                    dir,
                    task.batch_id,
                    task.task_index,
                    &task.attempt_id,
                    format.extension(),
                );
                let bytes = format.encode(plan.schema(), &batches)?;
                ws.put(&path, bytes).await?;
                output_files.push(path);
            }
        }
        SinkSpec::Kafka(sink) => {
            produce_batches(sink, &batches).await?;
        }
    }
    Ok(TaskOutcome {
        input_rows: records_read(&plan),
        output_rows,
        output_files,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn records_read(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let mut total = 0u64;
    let _ = plan.apply(|node| {
        if node.is::<KafkaScanExec>()
            && let Some(metrics) = node.metrics()
        {
            total += metrics
                .sum_by_name("records_read")
                .map(|v| v.as_usize() as u64)
                .unwrap_or(0);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    total
}
