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
