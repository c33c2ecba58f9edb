//! Kafka client work outside the scan: offsets for the controller, topic
//! administration for the driver, and the Kafka sink's producer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaSourceSpec;
use crate::error::{EngineError, Result};
use crate::nexmark::NexmarkSource;

/// How long one metadata or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn client_config(bootstrap: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in options {
        config.set(k, v);
    }
    config
}

/// The offsets of one partition: records live in `[low, high)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// Metadata and offsets requests against one cluster. One client serves
/// every request, so a controller asking each trigger keeps its connection.
pub struct KafkaAdmin {
    bootstrap: String,
    options: BTreeMap<String, String>,
    consumer: Mutex<Option<Arc<BaseConsumer>>>,
    /// A NEXMARK table's offsets, known without asking anyone.
    generated: Option<NexmarkSource>,
}

impl KafkaAdmin {
    pub fn new(bootstrap: &str, options: &BTreeMap<String, String>) -> Self {
        KafkaAdmin {
            bootstrap: bootstrap.to_string(),
            options: options.clone(),
            consumer: Mutex::new(None),
            generated: None,
        }
    }

    /// The offsets of a table the job reads: its topic's on its cluster,
    /// or a generated table's own.
    pub fn for_source(source: &KafkaSourceSpec) -> Self {
        KafkaAdmin {
            generated: source.generator.clone(),
            ..KafkaAdmin::new(&source.bootstrap_servers, &source.client_options)
        }
    }

    fn error(&self, message: impl Into<String>) -> EngineError {
        EngineError::Kafka {
            bootstrap: self.bootstrap.clone(),
            message: message.into(),
        }
    }

    fn consumer(&self) -> Result<Arc<BaseConsumer>> {
        let mut cached = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(consumer) = cached.as_ref() {
            return Ok(Arc::clone(consumer));
        }
        let consumer: Arc<BaseConsumer> = Arc::new(
            client_config(&self.bootstrap, &self.options)
                .create()
                .map_err(|e| self.error(e.to_string()))?,
        );
        *cached = Some(Arc::clone(&consumer));
        Ok(consumer)
    }

    /// Partitions of `topic` with their low and high watermarks. A missing
    /// topic is an error that names it.
    pub async fn partition_offsets(&self, topic: &str) -> Result<Vec<PartitionOffsets>> {
        if let Some(generated) = &self.generated {
            return Ok(generated.partition_offsets());
        }
        let consumer = self.consumer()?;
        let topic = topic.to_string();
        let bootstrap = self.bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            let error = |message: String| EngineError::Kafka {
                bootstrap: bootstrap.clone(),
                message,
            };
            let metadata = consumer
                .fetch_metadata(Some(&topic), REQUEST_TIMEOUT)
                .map_err(|e| error(format!("cannot read metadata of topic '{topic}': {e}")))?;
            let unknown = || EngineError::UnknownTopic {
                bootstrap: bootstrap.clone(),
                topic: topic.clone(),
            };
            let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(unknown());
            };
            if let Some(e) = found.error() {
                return Err(match RDKafkaErrorCode::from(e) {
                    RDKafkaErrorCode::UnknownTopicOrPartition => unknown(),
                    other => error(format!("topic '{topic}': {other}")),
                });
            }
            if found.partitions().is_empty() {
                return Err(unknown());
            }
            let mut offsets = Vec::with_capacity(found.partitions().len());
            for p in found.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p.id(), REQUEST_TIMEOUT)
                    .map_err(|e| {
                        error(format!(
                            "cannot read offsets of topic '{topic}' partition {}: {e}",
                            p.id()
                        ))
                    })?;
                offsets.push(PartitionOffsets {
                    partition: p.id(),
                    low,
                    high,
                });
            }
            offsets.sort_by_key(|o| o.partition);
            Ok(offsets)
        })
        .await
        .map_err(|e| self.error(e.to_string()))?
    }

    /// Every topic with its partition count, internal topics left out.
    pub async fn list_topics(&self) -> Result<Vec<(String, usize)>> {
        let consumer = self.consumer()?;
        let bootstrap = self.bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(None, REQUEST_TIMEOUT)
                .map_err(|e| EngineError::Kafka {
                    bootstrap: bootstrap.clone(),
                    message: format!("cannot list topics: {e}"),
                })?;
            let mut topics: Vec<(String, usize)> = metadata
                .topics()
                .iter()
                .filter(|t| !t.name().starts_with("__"))
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect();
            topics.sort();
            Ok(topics)
        })
        .await
        .map_err(|e| self.error(e.to_string()))?
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            client_config(&self.bootstrap, &self.options)
                .create()
                .map_err(|e| self.error(e.to_string()))?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| self.error(format!("cannot create topic '{topic}': {e}")))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(self.error(match code {
                    RDKafkaErrorCode::TopicAlreadyExists => {
                        format!("topic '{name}' already exists")
                    }
                    other => format!("cannot create topic '{name}': {other}"),
                }));
            }
        }
        Ok(())
    }
}

/// Hands one record to librdkafka, waiting for room while its queue is full
/// (100k records by default), and returns the future of its delivery.
pub async fn enqueue<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, [u8]>,
) -> std::result::Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(10));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
