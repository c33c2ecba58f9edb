//! Running one task on a worker: decode the stage plan with the task's
//! offset ranges, shuffle inputs, watermark and state, run it, and write
//! its rows to the sink (last stage) or the shuffle (earlier stages). File
//! outputs are named by batch, task and attempt, so a re-run never
//! overwrites a file that a committed manifest names.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::OffsetRange;
use crate::codec::{SpateCodec, TaskState};
use crate::error::{EngineError, Result};
use crate::first_rows::FirstRowsExec;
use crate::job::{PlanEnv, session};
use crate::join::StreamJoinExec;
use crate::kafka::KafkaScanExec;
use crate::shuffle::{ShuffleScope, ShuffleWriterExec, batch_dir};
use crate::sink::{Attempt, SinkPart, SinkSpec};
use crate::state::StateCache;
use crate::stateful::StatefulAggregateExec;
use crate::workspace::Workspace;

/// One task of one batch, as the master sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSpec {
    pub job_id: String,
    pub batch_id: u64,
    pub attempt_id: String,
    pub stage_id: u32,
    pub task_index: u32,
    pub plan: Vec<u8>,
    pub ranges: Vec<OffsetRange>,
    /// For a shuffle-reading stage: the partition it reads, and per stage
    /// read, the committed attempts (`from-<task>-<attempt>` file stems).
    pub partition: u32,
    pub shuffle_inputs: Vec<(u32, Vec<String>)>,
    pub watermark_ms: Option<i64>,
    pub sink: SinkSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub input_rows: u64,
    pub output_rows: u64,
    /// What the last stage's task wrote to the sink; none for a stage
    /// that writes a shuffle.
    pub sink_part: Option<SinkPart>,
    pub duration_ms: u64,
    /// The largest event time read (Unix ms), where the source has a watermark.
    pub max_event_time_ms: Option<i64>,
    /// Rows dropped for coming after the watermark.
    pub late_rows: u64,
    /// Records whose value did not decode (dropped or kept per `on_error`).
    #[serde(default)]
    pub malformed_rows: u64,
    pub state: StateMetrics,
}

/// What a task's stateful operator holds after the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StateMetrics {
    pub rows: u64,
    /// What the state takes in memory.
    pub bytes: u64,
    pub rows_updated: u64,
    pub rows_removed: u64,
    /// What the batch wrote to the workspace: a delta, or a snapshot.
    pub bytes_written: u64,
}

pub async fn run_task(
    ws: &Workspace,
    task: &TaskSpec,
    state_cache: &Arc<StateCache>,
) -> Result<TaskOutcome> {
    let started = Instant::now();
    // Tests make a task panic here, to see that its end is reported.
    fail::fail_point!("spate-task-start");
    let ctx = task_session(ws);
    let codec = SpateCodec::for_task(task.ranges.clone())
        .with_watermark(task.watermark_ms)
        .with_shuffle(ShuffleScope {
            workspace: ws.clone(),
            dir: batch_dir(&task.job_id, task.batch_id),
            task_index: task.task_index,
            attempt_id: task.attempt_id.clone(),
            reads: task.shuffle_inputs.clone(),
            partition: task.partition,
        })
        .with_state(TaskState {
            workspace: ws.clone(),
            job: task.job_id.clone(),
            batch: task.batch_id,
            partition: task.partition,
            cache: Arc::clone(state_cache),
        });
    let plan = codec.decode_plan(&task.plan, &ctx.task_ctx())?;
    // A stage over a file scan has a partition per task; over Kafka ranges
    // or a shuffle partition, the task's plan has just its own.
    let partition = if plan.output_partitioning().partition_count() > 1 {
        task.partition as usize
    } else {
        0
    };
    let mut rows = plan.execute(partition, ctx.task_ctx())?;
    let mut batches = Vec::new();
    while let Some(batch) = rows.next().await {
        batches.push(batch.map_err(|e| EngineError::from(e).unwrap_datafusion())?);
        // A cancelled task stops at its next yield; operators whose input
        // is always ready never yield by themselves.
        tokio::task::yield_now().await;
    }
    let mut outcome = measure(&plan);
    if plan.is::<ShuffleWriterExec>() {
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(outcome);
    }
    let attempt = Attempt {
        batch: task.batch_id,
        task_index: task.task_index,
        attempt_id: task.attempt_id.clone(),
    };
    let part = task
        .sink
        .open(ws, &task.job_id)
        .write(&attempt, plan.schema(), &batches)
        .await?;
    outcome.output_rows = part.rows;
    outcome.sink_part = Some(part);
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    Ok(outcome)
}

/// The session tasks decode and run plans in, one per workspace and
/// process: building one registers every function DataFusion has, which
/// costs more than a small task's work. Tasks share it safely: they
/// register nothing in it, and each runs with a task context of its own.
fn task_session(ws: &Workspace) -> SessionContext {
    static SESSIONS: LazyLock<Mutex<HashMap<String, SessionContext>>> =
        LazyLock::new(Mutex::default);
    let mut sessions = SESSIONS.lock().unwrap_or_else(|p| p.into_inner());
    sessions
        .entry(ws.location().to_string())
        .or_insert_with(|| session(&PlanEnv::new(ws.clone(), String::new())))
        .clone()
}

/// Reads what the plan's operators counted.
fn measure(plan: &Arc<dyn ExecutionPlan>) -> TaskOutcome {
    let mut outcome = TaskOutcome::default();
    let _ = plan.apply(|node| {
        let counter = |name: &str| {
            node.metrics()
                .and_then(|m| m.sum_by_name(name))
                .map_or(0, |v| v.as_usize() as u64)
        };
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            outcome.input_rows += counter("records_read");
            outcome.late_rows += scan.scan_stats().late_rows();
            outcome.malformed_rows += scan.scan_stats().malformed();
            outcome.max_event_time_ms = outcome.max_event_time_ms.max(scan.scan_stats().max_ms());
        } else if node.is::<StatefulAggregateExec>()
            || node.is::<StreamJoinExec>()
            || node.is::<FirstRowsExec>()
        {
            let state = &mut outcome.state;
            state.rows += counter("state_rows");
            state.bytes += counter("state_bytes");
            state.rows_updated += counter("state_rows_updated");
            state.rows_removed += counter("state_rows_removed");
            state.bytes_written += counter("state_bytes_written");
        }
        Ok(TreeNodeRecursion::Continue)
    });
    outcome
}
