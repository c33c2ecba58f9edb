//! `KafkaScanExec`: reads exact offset ranges of a topic and decodes them to
//! Arrow. The ranges are not part of the planned job; they are given to each
//! task when the worker decodes the plan (see `codec`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::aggregate::max;
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
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, DefaultConsumerContext, MessageStream, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::KafkaSourceSpec;
use super::client::enqueue;
use super::decode::{BadRecord, RecordDecoder, RecordPosition};
use super::{partitions, pool};
use crate::OffsetRange;
use crate::error::{EngineError, Result};
use crate::nexmark::{EventBatches, NexmarkSource};
use crate::windows::epoch_millis;

/// How long a read may see no record before it gives up on the broker.
const READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct KafkaScanExec {
    source: Arc<KafkaSourceSpec>,
    projection: Vec<usize>,
    schema: SchemaRef,
    ranges: Vec<OffsetRange>,
    /// The batch's watermark (Unix ms): rows with an older event time are
    /// late and dropped here, before any window sees them.
    watermark_ms: Option<i64>,
    scan_stats: Arc<ScanStats>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What a task's scan saw: event time (for the controller's next
/// watermark), late rows and malformed records.
#[derive(Debug)]
pub struct ScanStats {
    /// Unix ms; `i64::MIN` until a row with an event time is read.
    max_ms: AtomicI64,
    late_rows: AtomicU64,
    malformed: AtomicU64,
}

impl Default for ScanStats {
    fn default() -> Self {
        ScanStats {
            max_ms: AtomicI64::new(i64::MIN),
            late_rows: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }
}

impl ScanStats {
    /// Records whose value did not decode, dropped or kept per `on_error`.
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    pub fn max_ms(&self) -> Option<i64> {
        Some(self.max_ms.load(Ordering::Relaxed)).filter(|m| *m != i64::MIN)
    }

    pub fn late_rows(&self) -> u64 {
        self.late_rows.load(Ordering::Relaxed)
    }
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
            watermark_ms: None,
            scan_stats: Arc::default(),
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn with_watermark(mut self, watermark_ms: Option<i64>) -> Self {
        self.watermark_ms = watermark_ms;
        self
    }

    pub fn scan_stats(&self) -> &ScanStats {
        &self.scan_stats
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
        match &self.source.generator {
            Some(generator) => write!(
                f,
                "KafkaScanExec: generated Nexmark stream={}, events={}, columns=[{}]",
                generator.stream.name(),
                generator.events,
                columns.join(", "),
            )?,
            None => write!(
                f,
                "KafkaScanExec: topic={}, format={:?}, columns=[{}]",
                self.source.topic,
                self.source.format,
                columns.join(", "),
            )?,
        }
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
        let late_rows = MetricBuilder::new(&self.metrics).counter("late_rows", partition);
        let (tx, rx) = mpsc::channel(2);
        let mut projection = self.projection.clone();
        let mut schema = Arc::clone(&self.schema);
        // The event time is read even where the query does not select it.
        let event_time = match &self.source.watermark {
            Some(w) => {
                let index = self.source.schema.index_of(&w.column)?;
                let column = match projection.iter().position(|p| *p == index) {
                    Some(column) => column,
                    None => {
                        projection.push(index);
                        schema = Arc::new(self.source.schema.project(&projection)?);
                        projection.len() - 1
                    }
                };
                Some(EventTimeFilter {
                    column,
                    keep_columns: self.schema.fields().len(),
                    watermark_ms: self.watermark_ms,
                    seen: Arc::clone(&self.scan_stats),
                    late_rows,
                })
            }
            None => None,
        };
        let reader = RangeReader {
            stats: Arc::clone(&self.scan_stats),
            source: Arc::clone(&self.source),
            projection,
            schema,
            ranges: self.ranges.clone(),
            batch_size,
            records_read,
            event_time,
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
    stats: Arc<ScanStats>,
    source: Arc<KafkaSourceSpec>,
    projection: Vec<usize>,
    schema: SchemaRef,
    ranges: Vec<OffsetRange>,
    batch_size: usize,
    records_read: Count,
    event_time: Option<EventTimeFilter>,
}

/// Tracks the largest event time and drops rows older than the watermark.
struct EventTimeFilter {
    /// The event time's column in decoded batches.
    column: usize,
    /// Columns the scan outputs; an event time read only for this filter
    /// sits after them and is dropped.
    keep_columns: usize,
    watermark_ms: Option<i64>,
    seen: Arc<ScanStats>,
    late_rows: Count,
}

impl EventTimeFilter {
    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let times = epoch_millis(batch.column(self.column))?;
        if let Some(max) = max(&times) {
            self.seen.max_ms.fetch_max(max, Ordering::Relaxed);
        }
        let batch = match self.watermark_ms {
            Some(watermark) => {
                let on_time: BooleanArray = times
                    .iter()
                    .map(|t| Some(t.is_none_or(|t| t >= watermark)))
                    .collect();
                let late = batch.num_rows() - on_time.true_count();
                if late > 0 {
                    self.late_rows.add(late);
                    self.seen
                        .late_rows
                        .fetch_add(late as u64, Ordering::Relaxed);
                    filter_record_batch(&batch, &on_time)?
                } else {
                    batch
                }
            }
            None => batch,
        };
        if batch.num_columns() > self.keep_columns {
            let keep: Vec<usize> = (0..self.keep_columns).collect();
            return Ok(batch.project(&keep)?);
        }
        Ok(batch)
    }
}

/// Copies bad records, key and value as they came, to the dead-letter topic.
async fn dead_letters(source: &KafkaSourceSpec, topic: &str, bad: &[BadRecord]) -> Result<()> {
    let error = |e: KafkaError| EngineError::Kafka {
        bootstrap: source.bootstrap_servers.clone(),
        message: format!("cannot write to dead-letter topic '{topic}': {e}"),
    };
    let producer =
        pool::producer(&source.bootstrap_servers, &source.client_options).map_err(error)?;
    let mut deliveries = Vec::with_capacity(bad.len());
    for record in bad {
        let mut message = FutureRecord::<[u8], [u8]>::to(topic)
            .payload(record.value.as_deref().unwrap_or_default());
        if let Some(key) = record.key.as_deref() {
            message = message.key(key);
        }
        deliveries.push(enqueue(&producer, message).await.map_err(error)?);
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(error(e)),
            Err(_) => return Err(error(KafkaError::Canceled)),
        }
    }
    Ok(())
}

/// Whether the consumer's position in the range's partition is at or past
/// its end.
fn read_past(consumer: &impl Consumer, range: &OffsetRange) -> bool {
    consumer.position().ok().is_some_and(|positions| {
        positions
            .find_partition(&range.topic, range.partition)
            .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o >= range.end))
    })
}

type BatchSender = mpsc::Sender<DfResult<datafusion::arrow::record_batch::RecordBatch>>;

/// What a range is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueKind {
    /// The partition's own queue: its records only.
    Partition,
    /// A consumer's queue, which may still hold records of an earlier
    /// assignment.
    Consumer,
}

/// How reading one range ended.
enum RangeEnd {
    /// Every record of the range was read. The consumer's next record is at
    /// `next`; `None` where it handed out one past the range's end (the
    /// range ended in transaction markers).
    Read { next: Option<i64> },
    /// Nobody reads the scan any more (cancelled, or a LIMIT met); the
    /// records before `next` were read.
    Stopped { next: i64 },
}

impl RangeReader {
    async fn run(self, tx: &BatchSender) -> Result<()> {
        let ranges: Vec<&OffsetRange> = self.ranges.iter().filter(|r| r.end > r.start).collect();
        if ranges.is_empty() {
            return Ok(());
        }
        if let Some(generator) = &self.source.generator {
            return self.generate(generator, &ranges, tx).await;
        }
        let (bootstrap, options) = (&self.source.bootstrap_servers, &self.source.client_options);
        let mut decoder = RecordDecoder::new(
            &self.source,
            &self.projection,
            Arc::clone(&self.schema),
            self.batch_size,
        )?;
        for range in ranges {
            let lease = partitions::lease(bootstrap, options, range)
                .await
                .map_err(|e| self.kafka_error(e))?;
            let end = match lease {
                Some(lease) => {
                    let end = {
                        let mut stream = lease.stream();
                        let queue = (&mut stream, QueueKind::Partition);
                        self.read_range(range, queue, lease.consumer(), &mut decoder, tx)
                            .await?
                    };
                    lease.release_at(match end {
                        RangeEnd::Read { next } => next,
                        RangeEnd::Stopped { next } => Some(next),
                    });
                    end
                }
                // Another task holds the partition: read it with a
                // consumer of this task's own.
                None => {
                    let pooled = pool::take(bootstrap, options).map_err(|e| self.kafka_error(e))?;
                    let consumer = pooled.get();
                    let mut assignment = TopicPartitionList::new();
                    assignment
                        .add_partition_offset(
                            &range.topic,
                            range.partition,
                            Offset::Offset(range.start),
                        )
                        .and_then(|()| consumer.assign(&assignment))
                        .map_err(|e| self.kafka_error(e))?;
                    let end = {
                        let mut stream = consumer.stream();
                        let queue = (&mut stream, QueueKind::Consumer);
                        self.read_range(range, queue, consumer, &mut decoder, tx)
                            .await?
                    };
                    pooled.give_back();
                    end
                }
            };
            if let RangeEnd::Stopped { .. } = end {
                return Ok(());
            }
        }
        self.send(&mut decoder, tx).await.map(|_| ())
    }

    fn kafka_error(&self, e: KafkaError) -> EngineError {
        EngineError::Kafka {
            bootstrap: self.source.bootstrap_servers.clone(),
            message: e.to_string(),
        }
    }

    /// Reads one range from `stream`, a consumer's or a partition's queue
    /// positioned at its start, sending a batch each `batch_size` rows.
    async fn read_range(
        &self,
        range: &OffsetRange,
        (stream, queue): (&mut MessageStream<'_, DefaultConsumerContext>, QueueKind),
        consumer: &StreamConsumer,
        decoder: &mut RecordDecoder,
        tx: &BatchSender,
    ) -> Result<RangeEnd> {
        let wants = decoder.wants();
        let mut next = range.start;
        while next < range.end {
            // A record already fetched is taken without arming a timer:
            // a timeout per record put tokio's timer and clock reads in
            // every record's path.
            let ready = match stream.next().now_or_never() {
                Some(ready) => Ok(ready),
                None => tokio::time::timeout(READ_STALL_TIMEOUT, stream.next()).await,
            };
            let message = match ready {
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
                Ok(None) => return Ok(RangeEnd::Read { next: None }),
                // What is left of the range is transaction markers or
                // aborted records, which a read_committed consumer skips:
                // the range is read.
                Ok(Some(Err(KafkaError::PartitionEOF(p))))
                    if p == range.partition && read_past(consumer, range) =>
                {
                    return Ok(RangeEnd::Read {
                        next: Some(range.end),
                    });
                }
                Ok(Some(Err(KafkaError::PartitionEOF(_)))) => continue,
                Ok(Some(Err(e))) => return Err(self.kafka_error(e)),
                Ok(Some(Ok(m))) => m,
            };
            let offset = message.offset();
            // A pooled consumer may still hand out what it fetched for an
            // earlier assignment; a partition's own queue holds only its
            // records (its topic's name, read through FFI and checked as
            // UTF-8, was 3% of a task's time).
            if offset < next
                || (queue == QueueKind::Consumer
                    && (message.partition() != range.partition || message.topic() != range.topic))
            {
                continue;
            }
            if offset >= range.end {
                return Ok(RangeEnd::Read { next: None });
            }
            decoder.push(
                RecordPosition {
                    partition: range.partition,
                    offset,
                },
                message.key().filter(|_| wants.key),
                message.payload(),
                wants
                    .timestamp
                    .then(|| message.timestamp().to_millis())
                    .flatten(),
            )?;
            self.records_read.add(1);
            next = offset + 1;
            if decoder.rows() >= self.batch_size && !self.send(decoder, tx).await? {
                return Ok(RangeEnd::Stopped { next });
            }
        }
        Ok(RangeEnd::Read { next: Some(next) })
    }

    /// A NEXMARK table's ranges: their events are made here, each from its
    /// number, instead of fetched.
    async fn generate(
        &self,
        generator: &NexmarkSource,
        ranges: &[&OffsetRange],
        tx: &BatchSender,
    ) -> Result<()> {
        let mut events = EventBatches::new(
            generator,
            &self.source.schema,
            &self.projection,
            Arc::clone(&self.schema),
        )?;
        for range in ranges {
            for offset in range.start..range.end {
                if !events.push(range.partition, offset) {
                    continue;
                }
                self.records_read.add(1);
                if events.rows() >= self.batch_size && !self.emit(events.flush()?, tx).await? {
                    return Ok(());
                }
            }
        }
        self.emit(events.flush()?, tx).await.map(|_| ())
    }

    /// Sends what the decoder holds; false where nobody reads any more.
    async fn send(&self, decoder: &mut RecordDecoder, tx: &BatchSender) -> Result<bool> {
        let flushed = decoder.flush()?;
        let bad = decoder.take_bad();
        if !bad.is_empty() {
            self.stats
                .malformed
                .fetch_add(bad.len() as u64, Ordering::Relaxed);
            if let Some(topic) = &self.source.dead_letter_topic {
                dead_letters(&self.source, topic, &bad).await?;
            }
        }
        self.emit(flushed, tx).await
    }

    /// Sends a batch through the event-time filter; false where nobody
    /// reads any more.
    async fn emit(&self, batch: Option<RecordBatch>, tx: &BatchSender) -> Result<bool> {
        if let Some(batch) = batch {
            let batch = match &self.event_time {
                Some(filter) => filter.apply(batch)?,
                None => batch,
            };
            return Ok(tx.send(Ok(batch)).await.is_ok());
        }
        Ok(!tx.is_closed())
    }
}
