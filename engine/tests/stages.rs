//! A distributed aggregation, one micro-batch: the plan is cut into stages,
//! stage-1 tasks (one per Kafka partition) shuffle partial aggregates through
//! the workspace, stage-2 tasks (one per shuffle partition) finish them, and
//! the union equals DataFusion's answer over the same records in one process.

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use spate_engine::codec::SpateCodec;
use spate_engine::job::{PlanEnv, session_with_partitions};
use spate_engine::kafka::DevBroker;
use spate_engine::shuffle::{ShuffleScope, file_stem};
use spate_engine::stages::{CutMerges, split_into_stages};
use spate_engine::{OffsetRange, Workspace};

mod common;
use common::produce_lines;

const KAFKA_PARTITIONS: i32 = 4;
const SHUFFLE_PARTITIONS: usize = 3;
const QUERY: &str = "SELECT customer, count(*) AS sales, sum(revenue) AS revenue, max(revenue) AS biggest \
                     FROM sales GROUP BY customer";

fn record(i: u64) -> String {
    serde_json::json!({"customer": format!("c{}", (i * 7) % 11), "revenue": (i % 50) as f64 + 0.5})
        .to_string()
}

#[tokio::test]
async fn a_group_by_runs_as_two_stages_through_a_workspace_shuffle() {
    let broker = DevBroker::start().unwrap();
    let counts = produce_lines(
        &broker,
        "sales",
        KAFKA_PARTITIONS as usize,
        (0..400).map(record),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let env = PlanEnv::new(ws.clone(), broker.bootstrap_servers().to_string());
    let ctx = session_with_partitions(&env, SHUFFLE_PARTITIONS);
    ctx.sql("CREATE EXTERNAL TABLE sales (customer VARCHAR, revenue DOUBLE) STORED AS KAFKA LOCATION 'sales'")
        .await
        .unwrap();
    let plan = ctx
        .sql(QUERY)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let stages = split_into_stages(plan, CutMerges::No).unwrap();
    assert_eq!(stages.len(), 2, "{stages:#?}");
    assert_eq!(stages[0].plan.name(), "ShuffleWriterExec");
    assert_eq!(stages[1].reads, vec![1]);
    assert_eq!(stages[1].tasks, SHUFFLE_PARTITIONS);

    // Plans travel as bytes, as they would to workers.
    let stage_bytes: Vec<Vec<u8>> = stages
        .iter()
        .map(|s| SpateCodec::default().encode_plan(s.plan.clone()).unwrap())
        .collect();
    let scope = |task_index: u32, reads: Vec<(u32, Vec<String>)>, partition: u32| ShuffleScope {
        workspace: ws.clone(),
        dir: "_spate/shuffle/test/0".into(),
        task_index,
        attempt_id: format!("a{task_index}"),
        reads,
        partition,
    };
    let task_ctx = SessionContext::new().task_ctx();

    let mut shuffled_rows = 0u64;
    for (p, count) in counts.iter().enumerate() {
        let range = OffsetRange {
            topic: "sales".into(),
            partition: p as i32,
            start: 0,
            end: *count,
        };
        let codec = SpateCodec::for_task(vec![range]).with_shuffle(scope(p as u32, vec![], 0));
        let stage1 = codec.decode_plan(&stage_bytes[0], &task_ctx).unwrap();
        let report = collect(stage1, task_ctx.clone()).await.unwrap();
        let rows = report[0]
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            .unwrap();
        assert_eq!(rows.len(), SHUFFLE_PARTITIONS);
        shuffled_rows += rows.values().iter().sum::<u64>();
    }
    assert!(
        shuffled_rows >= 11,
        "partial aggregates, at least one per customer"
    );

    let writers: Vec<String> = (0..KAFKA_PARTITIONS as u32)
        .map(|t| file_stem(t, &format!("a{t}")))
        .collect();
    let mut results = Vec::new();
    for p in 0..SHUFFLE_PARTITIONS as u32 {
        let codec =
            SpateCodec::for_task(vec![]).with_shuffle(scope(p, vec![(1, writers.clone())], p));
        let stage2 = codec.decode_plan(&stage_bytes[1], &task_ctx).unwrap();
        results.extend(collect(stage2, task_ctx.clone()).await.unwrap());
    }
    let distributed = SessionContext::new();
    distributed
        .register_batch(
            "result",
            datafusion::arrow::compute::concat_batches(&results[0].schema(), &results).unwrap(),
        )
        .unwrap();
    let got = distributed
        .sql("SELECT * FROM result ORDER BY customer")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    let file = dir.path().join("sales.json");
    std::fs::write(&file, (0..400).map(record).collect::<Vec<_>>().join("\n")).unwrap();
    let single = SessionContext::new();
    single
        .sql(&format!("CREATE EXTERNAL TABLE sales (customer VARCHAR, revenue DOUBLE) STORED AS JSON LOCATION '{}'", file.display()))
        .await
        .unwrap();
    let want = single
        .sql(&format!("{QUERY} ORDER BY customer"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        pretty_format_batches(&got).unwrap().to_string(),
        pretty_format_batches(&want).unwrap().to_string()
    );
}
