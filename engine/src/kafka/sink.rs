//! A Kafka topic as a streaming sink, each row a JSON record; a `_key`
//! column becomes the record key.
//!
//! Exactly once (the default, `'delivery_guarantee' 'exactly_once'`): each
//! task writes in a Kafka transaction of its own, with `transactional.id`
//! derived from the job, the topic and the task's partition, so that a new
//! attempt fences any earlier one of the same partition. In the same
//! transaction the task commits its batch number as the offset of a
//! consumer group of its own (`spate.<job>.<topic>.<partition>`, on the
//! topic's partition 0): the transaction makes records and progress visible
//! together, and a task finding its batch already committed writes nothing.
//! The ids carry the checkpoint's run, so a job started afresh begins with
//! no progress.
//! `read_committed` readers (librdkafka's and Kafka's default) then see
//! every row once. A batch becomes visible partition by partition, as its
//! tasks commit.
//!
//! At least once (`'delivery_guarantee' 'at_least_once'`, for brokers or
//! ACLs without transactions): tasks produce with the process's shared
//! idempotent producer; a batch run again produces its rows again.

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::pool::{self, TRANSACTION_TIMEOUT};
use super::{
    KEY_COLUMN, KafkaSinkSpec, OFFSET_COLUMN, PARTITION_COLUMN, TIMESTAMP_COLUMN, enqueue,
};
use crate::error::{EngineError, Result};
use crate::sink::{Attempt, Sink, SinkPart};

#[derive(Debug)]
pub struct KafkaSink {
    pub spec: KafkaSinkSpec,
    pub job: String,
}

/// Rows as Kafka records: the JSON values, one line each, and their keys.
struct Records {
    values: Vec<u8>,
    /// Per record: where its value ends in `values`, and its key.
    records: Vec<(usize, Option<String>)>,
}

impl Records {
    fn of(batches: &[RecordBatch]) -> Result<Records> {
        let mut values = Vec::new();
        let mut records = Vec::new();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let (keys, rows) = split_key(batch)?;
            let start = values.len();
            {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut values);
                writer.write(&rows)?;
                writer.finish()?;
            }
            let mut row = 0;
            for (at, byte) in values[start..].iter().enumerate() {
                if *byte == b'\n' {
                    let key = keys
                        .as_ref()
                        .and_then(|k| (!k.is_null(row)).then(|| k.value(row).to_string()));
                    records.push((start + at, key));
                    row += 1;
                }
            }
        }
        Ok(Records { values, records })
    }

    /// Each record's key and value.
    fn iter(&self) -> impl Iterator<Item = (Option<&str>, &[u8])> {
        let mut from = 0;
        self.records.iter().map(move |(end, key)| {
            let value = &self.values[from..*end];
            from = end + 1;
            (key.as_deref(), value)
        })
    }

    fn len(&self) -> u64 {
        self.records.len() as u64
    }
}

/// Splits the record key off a batch and drops the other metadata columns,
/// which Kafka sets itself.
fn split_key(batch: &RecordBatch) -> Result<(Option<StringArray>, RecordBatch)> {
    let schema = batch.schema();
    let keys = match schema.index_of(KEY_COLUMN) {
        Ok(index) => {
            let keys = cast(batch.column(index), &DataType::Utf8)?;
            Some(
                keys.as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8 gives a StringArray")
                    .clone(),
            )
        }
        Err(_) => None,
    };
    let value_columns: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            ![
                KEY_COLUMN,
                PARTITION_COLUMN,
                OFFSET_COLUMN,
                TIMESTAMP_COLUMN,
            ]
            .contains(&f.name().as_str())
        })
        .map(|(i, _)| i)
        .collect();
    Ok((keys, batch.project(&value_columns)?))
}

impl KafkaSink {
    fn error(&self, e: KafkaError) -> EngineError {
        EngineError::Kafka {
            bootstrap: self.spec.bootstrap_servers.clone(),
            message: format!("cannot write to topic '{}': {e}", self.spec.topic),
        }
    }

    /// Hands every record to `producer`; the deliveries say when Kafka has them.
    async fn produce(
        &self,
        producer: &FutureProducer,
        records: &Records,
    ) -> Result<Vec<DeliveryFuture>> {
        let mut deliveries = Vec::with_capacity(records.records.len());
        for (key, value) in records.iter() {
            let mut record = FutureRecord::<str, [u8]>::to(&self.spec.topic).payload(value);
            if let Some(key) = key {
                record = record.key(key);
            }
            deliveries.push(enqueue(producer, record).await.map_err(|e| self.error(e))?);
        }
        Ok(deliveries)
    }

    async fn delivered(&self, deliveries: Vec<DeliveryFuture>) -> Result<()> {
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.error(e)),
                Err(_) => return Err(self.error(KafkaError::Canceled)),
            }
        }
        Ok(())
    }

    /// The consumer group, and transactional id, of one partition's tasks
    /// in this run of the job's checkpoint.
    fn partition_id(&self, task_index: u32) -> String {
        let run = if self.spec.run.is_empty() {
            String::new()
        } else {
            format!(".{}", self.spec.run)
        };
        format!("spate.{}{run}.{}.{task_index}", self.job, self.spec.topic)
    }

    /// Where a partition's progress is kept: its group's offset on the
    /// topic's partition 0, the last batch committed plus one.
    fn progress_partition(&self, offset: Offset) -> Result<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.spec.topic, 0, offset)
            .map_err(|e| self.error(e))?;
        Ok(list)
    }

    async fn write_in_transaction(&self, attempt: &Attempt, records: &Records) -> Result<()> {
        let (bootstrap, options) = (&self.spec.bootstrap_servers, &self.spec.client_options);
        let id = self.partition_id(attempt.task_index);
        let group = pool::group_consumer(bootstrap, options, &id).map_err(|e| self.error(e))?;
        let asked = self.progress_partition(Offset::Invalid)?;
        let reading = std::sync::Arc::clone(&group);
        let committed = tokio::task::spawn_blocking(move || {
            reading.committed_offsets(asked, TRANSACTION_TIMEOUT)
        })
        .await
        .map_err(|_| self.error(KafkaError::Canceled))?
        .map_err(|e| self.error(e))?;
        let applied =
            committed
                .find_partition(&self.spec.topic, 0)
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
        let next = attempt.batch as i64 + 1;
        if applied.is_some_and(|o| o >= next) {
            // An earlier attempt of this batch committed this partition.
            return Ok(());
        }
        let producer = pool::take_transactional(bootstrap, options, &id)
            .await
            .map_err(|e| self.error(e))?;
        let metadata = group
            .group_metadata()
            .ok_or_else(|| EngineError::internal(format!("consumer group {id} has no metadata")))?;
        let progress = self.progress_partition(Offset::Offset(next))?;
        let written = async {
            producer.begin_transaction().map_err(|e| self.error(e))?;
            let deliveries = self.produce(&producer, records).await?;
            self.delivered(deliveries).await?;
            let committing = producer.clone();
            let group = std::sync::Arc::clone(&group);
            tokio::task::spawn_blocking(move || {
                committing.send_offsets_to_transaction(
                    &progress,
                    &metadata,
                    TRANSACTION_TIMEOUT,
                )?;
                committing.commit_transaction(TRANSACTION_TIMEOUT)?;
                // The same progress once more, outside the transaction, for
                // brokers that do not keep transactional offsets (librdkafka's
                // mock cluster, the development broker). Kafka has it already.
                group.commit(&progress, rdkafka::consumer::CommitMode::Sync)
            })
            .await
            .map_err(|_| self.error(KafkaError::Canceled))?
            .map_err(|e| self.error(e))
        }
        .await;
        match written {
            Ok(()) => {
                pool::give_back_transactional(bootstrap, options, &id, producer);
                Ok(())
            }
            Err(e) => {
                // Dropped, the producer's open transaction is aborted by the
                // broker; the next attempt's producer fences it first anyway.
                let aborting = producer;
                let _ = tokio::task::spawn_blocking(move || {
                    aborting.abort_transaction(TRANSACTION_TIMEOUT)
                })
                .await;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(
        &self,
        attempt: &Attempt,
        _schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart> {
        let records = Records::of(batches)?;
        if self.spec.exactly_once {
            self.write_in_transaction(attempt, &records).await?;
        } else if records.len() > 0 {
            let producer = pool::producer(&self.spec.bootstrap_servers, &self.spec.client_options)
                .map_err(|e| self.error(e))?;
            let deliveries = self.produce(&producer, &records).await?;
            self.delivered(deliveries).await?;
        }
        Ok(SinkPart {
            files: Vec::new(),
            rows: records.len(),
        })
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.spec.topic)
    }
}
