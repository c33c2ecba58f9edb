//! Cutting a physical plan into stages, Ballista's rule, all in one place:
//! a stage ends at each hash `RepartitionExec`, which becomes the stage's
//! `ShuffleWriterExec`; the plan above it reads through a `ShuffleReaderExec`.
//! Stages come out in the order they must run; the last one produces the
//! query's rows.
//!
//! Contract: every stage's leaves are sources whose tasks each read one
//! part (Kafka ranges, or one shuffle partition), so each task runs
//! partition 0 of its stage's plan.

use std::sync::Arc;

use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::error::{EngineError, Result};
use crate::shuffle::{ShuffleReaderExec, ShuffleReaderSpec, ShuffleWriterExec};

#[derive(Debug, Clone)]
pub struct Stage {
    pub id: u32,
    /// A `ShuffleWriterExec`, or the query's own top for the last stage.
    pub plan: Arc<dyn ExecutionPlan>,
    /// Stages whose shuffle output this one reads.
    pub reads: Vec<u32>,
    /// Tasks the stage runs: its input's partitions (for a Kafka stage, the
    /// planned scan partitions; the coordinator gives one range set each).
    pub tasks: usize,
}

pub fn split_into_stages(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<Stage>> {
    let mut stages = Vec::new();
    let (top, reads) = cut(plan, &mut stages)?;
    let tasks = top.output_partitioning().partition_count();
    stages.push(Stage {
        id: stages.len() as u32 + 1,
        plan: top,
        reads,
        tasks,
    });
    Ok(stages)
}

/// Returns the plan with its hash repartitions replaced by shuffle readers,
/// and the stages those readers read.
fn cut(
    plan: Arc<dyn ExecutionPlan>,
    stages: &mut Vec<Stage>,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<u32>)> {
    let mut reads = Vec::new();
    let mut children = Vec::new();
    for child in plan.children() {
        let (child, child_reads) = cut(Arc::clone(child), stages)?;
        reads.extend(child_reads);
        children.push(child);
    }
    let plan = if children.is_empty() {
        plan
    } else {
        // Readers claim the partitions the repartition produced, so the
        // parents' properties are recomputed, not kept.
        plan.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?
    };
    let Some(repartition) = plan.downcast_ref::<RepartitionExec>() else {
        return Ok((plan, reads));
    };
    let Partitioning::Hash(_, partitions) = repartition.partitioning() else {
        return Err(EngineError::plan(format!(
            "internal: cannot distribute {}; only hash repartitions become shuffles",
            repartition.partitioning()
        )));
    };
    let id = stages.len() as u32 + 1;
    let tasks = repartition.input().output_partitioning().partition_count();
    let reader = ShuffleReaderExec::new(
        ShuffleReaderSpec {
            stage: id,
            schema: plan.schema().as_ref().clone(),
            partitions: *partitions,
        },
        None,
    );
    stages.push(Stage {
        id,
        plan: Arc::new(ShuffleWriterExec::new(id, Arc::clone(&plan), None)?),
        reads,
        tasks,
    });
    Ok((Arc::new(reader), vec![id]))
}
