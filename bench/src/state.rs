//! B9 state that scales: a running total per id, the stateful operator of a
//! job driven batch after batch in this process over the workspace (no
//! Kafka: 10,000,000 ids do not fit the development broker's retention).
//! The operator is Spate's own, wrapping the aggregate DataFusion plans for
//! `SELECT id, sum(amount) FROM updates GROUP BY id`; each batch brings
//! `--updates` distinct ids drawn over `--ids`, after a first batch that
//! puts every id in the state. What a batch costs and writes at 10,000,000
//! ids is set beside the same at 100,000, with the state cache large enough
//! and, then, limited to half the state: the partition, larger than the
//! cache, is spilled to a local file that batches look up by key.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use spate_engine::state::{PartitionState, StateCache};
use spate_engine::stateful::{OutputMode, StateScope, StatefulAggregateExec, StatefulSpec};
use spate_engine::{Workspace, WorkspaceLocation};

use crate::{Error, Figure, percentile};

#[derive(clap::Args, Clone, Debug)]
pub struct StateArgs {
    /// Distinct ids of the small run.
    #[arg(long, default_value_t = 100_000)]
    pub small_ids: u64,
    /// Distinct ids of the large run.
    #[arg(long, default_value_t = 10_000_000)]
    pub large_ids: u64,
    /// Distinct ids each batch updates.
    #[arg(long, default_value_t = 100_000)]
    pub state_updates: u64,
    /// Batches measured after the first.
    #[arg(long, default_value_t = 30)]
    pub state_batches: u64,
    /// Where the runs keep their state, a fresh folder under it each: a
    /// local folder, or s3://bucket/prefix to measure an object store
    /// (configured by the AWS_* variables). A temporary folder by default.
    #[arg(long, value_name = "LOCATION")]
    pub state_workspace: Option<WorkspaceLocation>,
}

/// One run's figures.
struct Run {
    /// Per measured batch, in ms.
    batch_ms: Vec<u64>,
    /// Bytes a delta batch wrote, median.
    delta_bytes: u64,
    /// Bytes a snapshot batch wrote, largest.
    snapshot_bytes: u64,
    state_bytes: usize,
    /// Times the state was spilled over the measured batches.
    spills: u64,
    /// The spilled file's size, largest.
    spilled_bytes: usize,
}

impl Run {
    fn mean_ms(&self) -> u64 {
        self.batch_ms.iter().sum::<u64>() / (self.batch_ms.len() as u64).max(1)
    }

    /// Where the state lived.
    fn held(&self) -> String {
        // The mean takes in the batches that write a snapshot or spill.
        if self.spills == 0 {
            format!(
                "state {} MB in memory; mean {} ms",
                self.state_bytes >> 20,
                self.mean_ms()
            )
        } else {
            format!(
                "{} MB on the heap, a {} MB local file; spilled {} times in {} batches; mean {} ms",
                self.state_bytes >> 20,
                self.spilled_bytes >> 20,
                self.spills,
                self.batch_ms.len(),
                self.mean_ms()
            )
        }
    }
}

pub async fn run(args: StateArgs) -> Result<Vec<Figure>, Error> {
    let mut figures = Vec::new();
    for limited in [false, true] {
        let small = one_run(args.small_ids, &args, limited).await?;
        let large = one_run(args.large_ids, &args, limited).await?;
        let cache = if limited {
            "cache at half the state"
        } else {
            "state in the cache"
        };
        let p50 = |r: &Run| {
            let mut sorted = r.batch_ms.clone();
            sorted.sort_unstable();
            percentile(&sorted, 50.0)
        };
        let (small_ms, large_ms) = (p50(&small), p50(&large));
        let time_ratio = large_ms as f64 / small_ms.max(1) as f64;
        figures.push(Figure {
            bench: format!(
                "B9 running total, {} updates/batch, {} ids vs {} ids, {cache}: batch time p50",
                args.state_updates, args.large_ids, args.small_ids
            ),
            spate: format!("{large_ms} ms ({})", large.held()),
            baseline: format!("{small_ms} ms ({})", small.held()),
            ratio: format!("{time_ratio:.2}"),
            target: "<= 2".into(),
            met: Some(time_ratio <= 2.0),
        });
        if !limited {
            let bytes_ratio = large.delta_bytes as f64 / small.delta_bytes.max(1) as f64;
            figures.push(Figure {
                bench: format!(
                    "B9 bytes a batch writes (a delta; a snapshot every {} batches: {} MB vs {} MB)",
                    spate_config::settings().job.state_snapshot_interval,
                    large.snapshot_bytes >> 20,
                    small.snapshot_bytes >> 20
                ),
                spate: format!("{} KB", large.delta_bytes >> 10),
                baseline: format!("{} KB", small.delta_bytes >> 10),
                ratio: format!("{bytes_ratio:.2}"),
                target: "<= 2".into(),
                met: Some(bytes_ratio <= 2.0),
            });
        }
    }
    Ok(figures)
}

async fn one_run(ids: u64, args: &StateArgs, limited: bool) -> Result<Run, Error> {
    let scratch = tempfile::tempdir()?;
    let run_folder = format!("b9-{ids}-{}", uuid::Uuid::new_v4().simple());
    let ws = Workspace::open(match &args.state_workspace {
        None => WorkspaceLocation::Local(scratch.path().to_path_buf()),
        Some(WorkspaceLocation::Local(root)) => WorkspaceLocation::Local(root.join(&run_folder)),
        Some(WorkspaceLocation::S3 { bucket, prefix }) => WorkspaceLocation::S3 {
            bucket: bucket.clone(),
            prefix: format!("{}/{run_folder}", prefix.trim_end_matches('/'))
                .trim_start_matches('/')
                .to_string(),
        },
    })?;
    ws.probe().await?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    ctx.register_table(
        "updates",
        Arc::new(MemTable::try_new(
            Arc::clone(&schema),
            vec![vec![], vec![]],
        )?),
    )?;
    let plan = ctx
        .sql("SELECT id, sum(amount) AS total FROM updates GROUP BY id")
        .await?
        .create_physical_plan()
        .await?;
    let final_aggregate = find_final(&plan).ok_or_else(|| {
        format!(
            "no final aggregate in the plan:\n{}",
            datafusion::physical_plan::displayable(plan.as_ref()).indent(false)
        )
    })?;
    let partial_schema = final_aggregate.children()[0].schema();

    // Each batch's partial rows: its ids are distinct, so a row per id.
    let batch_rows = |batch: u64, count: u64| -> Result<RecordBatch, Error> {
        let stride = ids / count.max(1);
        let ids: Int64Array = (0..count)
            .map(|i| ((i * stride.max(1) + batch * 7919) % ids) as i64)
            .collect();
        let amounts: Float64Array = (0..count).map(|i| (i % 100) as f64).collect();
        Ok(RecordBatch::try_new(
            Arc::clone(&partial_schema),
            vec![Arc::new(ids), Arc::new(amounts)],
        )?)
    };
    // What the rows take (an id and a sum); the index comes on top.
    let state_bytes = (ids as usize) * 16;
    let cache = Arc::new(StateCache::with_limit(if limited {
        state_bytes / 2
    } else {
        state_bytes * 8
    }));
    let mut run = Run {
        batch_ms: Vec::new(),
        delta_bytes: 0,
        snapshot_bytes: 0,
        state_bytes: 0,
        spills: 0,
        spilled_bytes: 0,
    };
    let mut deltas = Vec::new();
    let interval = spate_config::settings().job.state_snapshot_interval.max(1);
    // Batch 0 is a snapshot: the first batch starts at 1 and holds every id.
    let mut spills_before = 0;
    for batch in 1..=args.state_batches + 1 {
        let rows = if batch == 1 {
            batch_rows(0, ids)?
        } else {
            batch_rows(batch, args.state_updates)?
        };
        let input =
            MemorySourceConfig::try_new_exec(&[vec![rows]], Arc::clone(&partial_schema), None)?;
        let aggregate = Arc::clone(&final_aggregate).replace_children(
            vec![input],
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )?;
        let scope = StateScope {
            state: PartitionState {
                workspace: ws.clone(),
                dir: "state/0/0".into(),
                cache: Arc::clone(&cache),
            },
            batch,
            watermark_ms: None,
        };
        let spec = StatefulSpec {
            operator: 0,
            mode: OutputMode::Update,
            window: None,
        };
        let exec = Arc::new(StatefulAggregateExec::new(spec, aggregate, Some(scope))?);
        let started = Instant::now();
        collect(Arc::clone(&exec) as _, ctx.task_ctx()).await?;
        let took = started.elapsed().as_millis() as u64;
        let usage = cache.usage();
        if batch == 1 {
            spills_before = usage.spills;
        }
        let metrics = exec.metrics().unwrap_or_default();
        let metric = |name| metrics.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
        let written = metric("state_bytes_written");
        run.state_bytes = metric("state_bytes") as usize;
        if batch > 1 {
            run.spills = usage.spills - spills_before;
            run.spilled_bytes = run.spilled_bytes.max(usage.spilled_bytes);
            run.batch_ms.push(took);
            if batch.is_multiple_of(interval) {
                run.snapshot_bytes = run.snapshot_bytes.max(written);
            } else {
                deltas.push(written);
            }
        }
    }
    deltas.sort_unstable();
    run.delta_bytes = percentile(&deltas, 50.0);
    // A folder of its own under a given workspace: the run's files go.
    ws.delete_dir("state").await?;
    Ok(run)
}

/// The aggregate that finishes `SELECT ... GROUP BY` above its shuffle
/// (two target partitions make DataFusion split it), as a stateful
/// operator wraps it.
fn find_final(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(agg) = plan.downcast_ref::<AggregateExec>()
        && matches!(
            agg.mode(),
            AggregateMode::Final | AggregateMode::FinalPartitioned
        )
    {
        return Some(Arc::clone(plan));
    }
    plan.children().into_iter().find_map(find_final)
}
