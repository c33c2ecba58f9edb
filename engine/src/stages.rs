//! Cutting a physical plan into stages, Ballista's rule, all in one place:
//! a stage ends at each hash `RepartitionExec`, which becomes the stage's
//! `ShuffleWriterExec`; the plan above it reads through a `ShuffleReaderExec`.
//! Stages come out in the order they must run; the last one produces the
//! query's rows.
//!
//! An interactive query is also cut at each merge of partitions
//! (`CoalescePartitionsExec`, `SortPreservingMergeExec`): the stage below
//! writes its rows whole (a one-partition shuffle), and the merge runs in
//! one task over a gathering reader that gives it one partition per
//! producing task. Streaming jobs hold no merge but a join's build side,
//! which every task reads whole, so they are not cut there.
//!
//! Contract: every stage's leaves are sources whose tasks each read one
//! part (Kafka ranges, one shuffle partition, or one partition of a file
//! scan), so each task runs one partition of its stage's plan.

use std::sync::Arc;

use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
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
    /// planned scan partitions; the controller gives one range set each).
    pub tasks: usize,
}

/// Where a plan is cut besides its hash repartitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMerges {
    /// A streaming job: merges stay inside their stage.
    No,
    /// An interactive query: merges run in a stage of their own.
    Yes,
}

pub fn split_into_stages(plan: Arc<dyn ExecutionPlan>, merges: CutMerges) -> Result<Vec<Stage>> {
    let mut stages = Vec::new();
    let (top, reads) = cut(plan, &mut stages, merges)?;
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
    merges: CutMerges,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<u32>)> {
    let mut reads = Vec::new();
    let mut children = Vec::new();
    for child in plan.children() {
        let (child, child_reads) = cut(Arc::clone(child), stages, merges)?;
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
    if merges == CutMerges::Yes && is_merge(&plan) {
        return gather(plan, reads, stages);
    }
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
            gather: false,
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

fn is_merge(plan: &Arc<dyn ExecutionPlan>) -> bool {
    (plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>())
        && plan.children()[0].output_partitioning().partition_count() > 1
}

/// Cuts below a merge: the stage under it writes each task's rows whole,
/// and the merge reads them through a gathering reader.
fn gather(
    merge: Arc<dyn ExecutionPlan>,
    reads: Vec<u32>,
    stages: &mut Vec<Stage>,
) -> Result<(Arc<dyn ExecutionPlan>, Vec<u32>)> {
    let input = Arc::clone(merge.children()[0]);
    let id = stages.len() as u32 + 1;
    let tasks = input.output_partitioning().partition_count();
    let schema = input.schema().as_ref().clone();
    let whole = RepartitionExec::try_new(input, Partitioning::RoundRobinBatch(1))?;
    stages.push(Stage {
        id,
        plan: Arc::new(ShuffleWriterExec::new(id, Arc::new(whole), None)?),
        reads,
        tasks,
    });
    let reader = ShuffleReaderExec::new(
        ShuffleReaderSpec {
            stage: id,
            schema,
            partitions: tasks,
            gather: true,
        },
        None,
    );
    let merge = merge.replace_children(
        vec![Arc::new(reader)],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )?;
    Ok((merge, vec![id]))
}
