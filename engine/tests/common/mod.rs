//! Shared by the engine's integration tests.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::kafka::DevBroker;

/// Creates `topic` with `partitions` partitions and produces `lines` to it,
/// line i to partition i % partitions with key `k<i>`; returns the record
/// count per partition.
#[allow(dead_code)]
pub async fn produce_lines<S: AsRef<str>>(
    broker: &DevBroker,
    topic: &str,
    partitions: usize,
    lines: impl IntoIterator<Item = S>,
) -> Vec<i64> {
    broker.create_topic(topic, partitions as i32).unwrap();
    append_lines(broker, topic, partitions, lines).await
}

/// Produces `lines` to an existing topic as `produce_lines` does.
pub async fn append_lines<S: AsRef<str>>(
    broker: &DevBroker,
    topic: &str,
    partitions: usize,
    lines: impl IntoIterator<Item = S>,
) -> Vec<i64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    let mut counts = vec![0i64; partitions];
    for (i, line) in lines.into_iter().enumerate() {
        let partition = i % partitions;
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(topic)
                    .payload(line.as_ref())
                    .key(&key)
                    .partition(partition as i32),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        counts[partition] += 1;
    }
    counts
}

/// The writer a test's commits name.
#[allow(dead_code)]
pub fn test_writer() -> spate_engine::checkpoint::Writer {
    spate_engine::checkpoint::Writer {
        master: "test".into(),
        controller: "test".into(),
    }
}

/// Plans the single-stage job `sql` (`{bootstrap}` stands for the broker)
/// and runs its batch 0 over `[0, count)` of each partition of `topic`, one
/// task per partition through the plan codec as workers do, then commits
/// the batch. Returns the job's sink.
#[allow(dead_code)]
pub async fn run_batch(
    ws: &spate_engine::Workspace,
    broker: &DevBroker,
    topic: &str,
    sql: &str,
    counts: Vec<i64>,
) -> spate_engine::Result<spate_engine::sink::SinkSpec> {
    use spate_engine::job::{PlanEnv, plan_job};
    use spate_engine::task::{TaskSpec, run_task};
    let env = PlanEnv::new(ws.clone(), broker.bootstrap_servers().to_string());
    let sql = sql.replace("{bootstrap}", broker.bootstrap_servers());
    let planned = plan_job(&env, &sql, "fixture").await?;
    let [stage] = planned.stages.as_slice() else {
        panic!("a single-stage job is expected");
    };
    let state = Default::default();
    let mut parts = Vec::new();
    for (partition, count) in counts.iter().enumerate() {
        let task = TaskSpec {
            job_id: "fixture".into(),
            batch_id: 0,
            attempt_id: "a1".into(),
            stage_id: stage.id,
            task_index: partition as u32,
            plan: stage.plan.clone(),
            partition: 0,
            shuffle_inputs: Vec::new(),
            watermark_ms: None,
            ranges: vec![spate_engine::OffsetRange {
                topic: topic.to_string(),
                partition: partition as i32,
                start: 0,
                end: *count,
            }],
            sink: planned.sink.clone(),
        };
        let outcome = run_task(ws, &task, &state).await?;
        assert_eq!(
            outcome.input_rows, *count as u64,
            "every record of the range is read once"
        );
        parts.extend(outcome.sink_part);
    }
    planned
        .sink
        .open(ws, "fixture")
        .commit(
            &spate_engine::sink::Committing {
                batch: 0,
                mode: planned.options.output_mode,
                writer: &test_writer(),
            },
            parts,
        )
        .await?;
    Ok(planned.sink)
}
