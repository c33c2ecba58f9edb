//! `KafkaScanExec`: reads exact offset ranges of a topic and decodes them to
//! Arrow. The ranges are not part of the planned job; they are given to each
//! task when the worker decodes the plan (see `codec`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::KafkaSourceSpec;
use super::client::client_config;
use super::decode::{RecordDecoder, RecordPosition};
use crate::OffsetRange;
use crate::error::{EngineError, Result};

/// How long a read may see no record before it gives up on the broker.
const READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct KafkaScanExec {
    source: Arc<KafkaSourceSpec>,
    projection: Vec<usize>,
    schema: SchemaRef,
    ranges: Vec<OffsetRange>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl KafkaScanExec {
    /// `partitions` is what the scan claims when planned (the session's
    /// target partitions, so DataFusion plans the shuffles a distributed
    /// query needs); a scan decoded for a task claims one, its ranges.
    pub fn new(
        source: Arc<KafkaSourceSpec>,
        projection: Option<Vec<usize>>,
        ranges: Vec<OffsetRange>,
        partitions: usize,
    ) -> Result<Self> {
        let projection = projection.unwrap_or_else(|| (0..source.schema.fields().len()).collect());
        let schema = Arc::new(source.schema.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(KafkaScanExec {
            source,
            projection,
            schema,
            ranges,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn source(&self) -> &Arc<KafkaSourceSpec> {
        &self.source
    }

    pub fn projection(&self) -> &[usize] {
        &self.projection
    }

    pub fn planned_partitions(&self) -> usize {
        self.properties.partitioning.partition_count()
    }

    pub fn ranges(&self) -> &[OffsetRange] {
        &self.ranges
    }
}

impl DisplayAs for KafkaScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "KafkaScanExec: topic={}, format={:?}, columns=[{}]",
            self.source.topic,
            self.source.format,
            columns.join(", "),
        )?;
        // A planned stage has no ranges yet; each task is given its own.
        match self.ranges.as_slice() {
            [] => write!(f, ", ranges=per task"),
            ranges => {
                let shown: Vec<String> = ranges
                    .iter()
                    .map(|r| format!("{}:{}..{}", r.partition, r.start, r.end))
                    .collect();
                write!(f, ", ranges=[{}]", shown.join(", "))
            }
        }
    }
}

impl ExecutionPlan for KafkaScanExec {
    fn name(&self) -> &'static str {
        "KafkaScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "a Kafka scan runs inside a task, as partition 0; asked for {partition}"
            )));
        }
        let batch_size = context.session_config().batch_size();
        let records_read = MetricBuilder::new(&self.metrics).counter("records_read", partition);
        let (tx, rx) = mpsc::channel(2);
        let reader = RangeReader {
            source: Arc::clone(&self.source),
            projection: self.projection.clone(),
            schema: Arc::clone(&self.schema),
            ranges: self.ranges.clone(),
            batch_size,
            records_read,
        };
        tokio::spawn(async move {
            if let Err(e) = reader.run(&tx).await {
                let _ = tx.send(Err(DataFusionError::from(e))).await;
            }
        });
        let stream = tokio_stream_from(rx);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<DfResult<datafusion::arrow::record_batch::RecordBatch>>,
) -> impl futures::Stream<Item = DfResult<datafusion::arrow::record_batch::RecordBatch>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Reads the task's ranges one after the other with one consumer.
struct RangeReader {
    source: Arc<KafkaSourceSpec>,
    projection: Vec<usize>,
    schema: SchemaRef,
    ranges: Vec<OffsetRange>,
    batch_size: usize,
    records_read: Count,
}

type BatchSender = mpsc::Sender<DfResult<datafusion::arrow::record_batch::RecordBatch>>;

impl RangeReader {
    async fn run(self, tx: &BatchSender) -> Result<()> {
        let ranges: Vec<&OffsetRange> = self.ranges.iter().filter(|r| r.end > r.start).collect();
        if ranges.is_empty() {
            return Ok(());
        }
        let kafka_error = |e: KafkaError| EngineError::Kafka {
            bootstrap: self.source.bootstrap_servers.clone(),
            message: e.to_string(),
        };
        let consumer: StreamConsumer =
            client_config(&self.source.bootstrap_servers, &self.source.client_options)
                .set("group.id", "spate-reader")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // Offsets that retention removed are an error, never a silent reset.
                .set("auto.offset.reset", "error")
                .create()
                .map_err(kafka_error)?;
        let mut decoder = RecordDecoder::new(
            &self.source,
            &self.projection,
            Arc::clone(&self.schema),
            self.batch_size,
        )?;
        for range in ranges {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&range.topic, range.partition, Offset::Offset(range.start))
                .map_err(kafka_error)?;
            consumer.assign(&assignment).map_err(kafka_error)?;
            let mut stream = consumer.stream();
            let mut next = range.start;
            while next < range.end {
                let message = match tokio::time::timeout(READ_STALL_TIMEOUT, stream.next()).await {
                    Err(_) => {
                        return Err(EngineError::Kafka {
                            bootstrap: self.source.bootstrap_servers.clone(),
                            message: format!(
                                "no record from topic '{}' partition {} at offset {next} within {}s (broker unreachable, or the records were deleted)",
                                range.topic,
                                range.partition,
                                READ_STALL_TIMEOUT.as_secs()
                            ),
                        });
                    }
                    Ok(None) => break,
                    Ok(Some(Err(KafkaError::PartitionEOF(_)))) => continue,
                    Ok(Some(Err(e))) => return Err(kafka_error(e)),
                    Ok(Some(Ok(m))) => m,
                };
                let offset = message.offset();
                if offset >= range.end {
                    break;
                }
                decoder.push(
                    RecordPosition {
                        partition: range.partition,
                        offset,
                    },
                    message.key(),
                    message.payload(),
                    message.timestamp().to_millis(),
                )?;
                self.records_read.add(1);
                next = offset + 1;
                if decoder.rows() >= self.batch_size {
                    self.send(&mut decoder, tx).await?;
                }
            }
            drop(stream);
        }
        self.send(&mut decoder, tx).await
    }

    async fn send(&self, decoder: &mut RecordDecoder, tx: &BatchSender) -> Result<()> {
        if let Some(batch) = decoder.flush()? {
            // A closed receiver means the query stopped early (a LIMIT, a cancel).
            let _ = tx.send(Ok(batch)).await;
        }
        Ok(())
    }
}
