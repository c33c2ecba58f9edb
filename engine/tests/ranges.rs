//! Kafka ranges read task after task. A partition stays assigned between
//! tasks and each task leases its queue (`kafka/partitions.rs`), so a range
//! may start where the last one ended (records already prefetched), before
//! it (a replay), or past it; two tasks may want one partition at once; a
//! task may stop mid-range. Each must read exactly its records.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use spate_engine::job::{PlanEnv, session};
use spate_engine::kafka::{DevBroker, KafkaScanExec, KafkaSourceSpec, KafkaTable};
use spate_engine::{OffsetRange, Workspace};

mod common;
use common::produce_lines;

/// Few: the test producer waits for each record's delivery.
const RECORDS: i64 = 600;

/// A one-partition topic of `{"n": 0}` to `{"n": RECORDS - 1}`, and the
/// source a `CREATE EXTERNAL TABLE` of it plans.
async fn source(broker: &DevBroker, topic: &str) -> Arc<KafkaSourceSpec> {
    produce_lines(
        broker,
        topic,
        1,
        (0..RECORDS).map(|n| format!(r#"{{"n": {n}}}"#)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = PlanEnv::new(
        Workspace::open(dir.path()).unwrap(),
        broker.bootstrap_servers().to_string(),
    );
    let ctx = session(&env);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE t (n BIGINT) STORED AS KAFKA LOCATION '{topic}'"
    ))
    .await
    .unwrap();
    let table = ctx.table_provider("t").await.unwrap();
    let kafka = table.downcast_ref::<KafkaTable>().unwrap();
    Arc::new(kafka.spec.clone())
}

fn scan(source: &Arc<KafkaSourceSpec>, start: i64, end: i64) -> Arc<dyn ExecutionPlan> {
    let range = OffsetRange {
        topic: source.topic.clone(),
        partition: 0,
        start,
        end,
    };
    Arc::new(KafkaScanExec::new(Arc::clone(source), Some(vec![0]), vec![range], 1).unwrap())
}

fn numbers(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

async fn read(
    ctx: &SessionContext,
    source: &Arc<KafkaSourceSpec>,
    start: i64,
    end: i64,
) -> Vec<i64> {
    numbers(
        &collect(scan(source, start, end), ctx.task_ctx())
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn each_range_reads_exactly_its_records_wherever_the_last_one_stopped() {
    let broker = DevBroker::start().unwrap();
    let source = source(&broker, "ranges").await;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(100));

    // Each range starts where the last ended: read from what was prefetched.
    assert_eq!(
        read(&ctx, &source, 0, 200).await,
        (0..200).collect::<Vec<_>>()
    );
    assert_eq!(
        read(&ctx, &source, 200, 300).await,
        (200..300).collect::<Vec<_>>()
    );
    // A replay starts before, a later batch past it.
    assert_eq!(
        read(&ctx, &source, 40, 140).await,
        (40..140).collect::<Vec<_>>()
    );
    assert_eq!(
        read(&ctx, &source, 500, RECORDS).await,
        (500..RECORDS).collect::<Vec<_>>()
    );

    // Two tasks on one partition at once: the second reads with a consumer
    // of its own.
    let (a, b) = tokio::join!(
        read(&ctx, &source, 0, RECORDS),
        read(&ctx, &source, 20, 400)
    );
    assert_eq!(a, (0..RECORDS).collect::<Vec<_>>());
    assert_eq!(b, (20..400).collect::<Vec<_>>());

    // A task that stops reading mid-range (a LIMIT met) gives the
    // partition back where it stopped; the next range still gets its own.
    let mut stream = scan(&source, 0, RECORDS)
        .execute(0, ctx.task_ctx())
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(numbers(&[first]), (0..100).collect::<Vec<_>>());
    drop(stream);
    assert_eq!(
        read(&ctx, &source, 0, RECORDS).await,
        (0..RECORDS).collect::<Vec<_>>()
    );
    assert_eq!(
        read(&ctx, &source, 60, 80).await,
        (60..80).collect::<Vec<_>>()
    );
}
