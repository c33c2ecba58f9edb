//! B1 and B2: events per second through a query, Spate on a cluster in
//! this process vs the tight pipeline one would write by hand in one thread
//! (rdkafka assign and consume, arrow-json decode, the same query in
//! DataFusion, the result written as Parquet), over the same topic, runs
//! interleaved after a warm-up run of each (printed, not counted: a
//! process's first run faults in its threads' first memory), medians
//! reported. Spate's figure is per CPU-second of its
//! own threads: the broker runs in another process and its CPU is counted
//! apart. Both answers are checked to agree on their row counts. B6 and B7
//! (Spark, Flink) reuse Spate's runs over the same events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::config::TableParquetOptions;
use datafusion::common::file_options::parquet_writer::ParquetWriterOptions;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use spate_engine::Workspace;
use spate_engine::job::PlanEnv;

use crate::events::{BrokerProcess, own_cpu, write_json};
use crate::{BenchCluster, Error, Figure, ThroughputArgs, flink, median, spark};

/// JSON files the events are written to for Spark and Flink.
const JSON_FILES: u64 = 8;

/// Spate per CPU-second of its threads against the tight pipeline's.
const TARGET_OF_TIGHT_PIPELINE: f64 = 0.8;

/// Rows of the tight pipeline's decoded batches: its JSON decoder's batch
/// size, and when its input hands a batch on.
const RAW_BATCH_ROWS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// B1: a filter and projection.
    Stateless,
    /// B2: a 10-second tumbling window per customer.
    Tumbling,
    /// B2: a 30-second window every 10 seconds per customer.
    Sliding,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Stateless, Workload::Tumbling, Workload::Sliding];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Stateless => "B1 stateless filter/projection",
            Workload::Tumbling => "B2 10 s tumbling window per customer",
            Workload::Sliding => "B2 30 s / 10 s sliding window per customer",
        }
    }

    /// The query's name in `bench/flink/queries.py`.
    pub fn key(self) -> &'static str {
        match self {
            Workload::Stateless => "stateless",
            Workload::Tumbling => "tumbling",
            Workload::Sliding => "sliding",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Workload::Stateless => {
                "SELECT ts, upper(customer) AS customer, CAST(amount * 100 AS BIGINT) AS cents FROM events WHERE amount > 10"
            }
            Workload::Tumbling => {
                "SELECT window.start AS window_start, customer, sum(amount) AS revenue, count(*) AS events FROM events GROUP BY window(ts, '10 seconds'), customer"
            }
            Workload::Sliding => {
                "SELECT window.start AS window_start, customer, sum(amount) AS revenue, count(*) AS events FROM events GROUP BY window(ts, '30 seconds', '10 seconds'), customer"
            }
        }
    }

    fn sink_columns(self) -> &'static str {
        match self {
            Workload::Stateless => "ts TIMESTAMP, customer VARCHAR, cents BIGINT",
            _ => "window_start TIMESTAMP, customer VARCHAR, revenue DOUBLE, events BIGINT",
        }
    }

    /// Rows the raw pipeline has that Spate does not emit: the windows the
    /// closing event keeps open (its watermark closes every other one).
    fn open_windows(self) -> u64 {
        match self {
            Workload::Stateless => 0,
            Workload::Tumbling => 1,
            Workload::Sliding => 3,
        }
    }
}

/// One run of a pipeline: its wall time and the CPU time this process spent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub wall: Duration,
    pub cpu: Duration,
}

/// The medians of a workload's runs.
pub struct Measured {
    pub workload: Workload,
    pub raw: Sample,
    pub spate: Sample,
    /// The broker process's CPU while Spate's job ran.
    pub broker_cpu: Duration,
}

impl Measured {
    /// Spate's events per second, all workers together.
    pub fn spate_rate(&self, args: &ThroughputArgs) -> f64 {
        (args.events + 1) as f64 / self.spate.wall.as_secs_f64()
    }
}

/// B1/B2 for `workloads`, then B6 (Spark, over the tumbling window's runs)
/// and B7 (Flink, over every workload's) where asked.
pub async fn run_with_peers(
    workloads: &[Workload],
    args: ThroughputArgs,
    with_spark: bool,
    with_flink: bool,
) -> Result<Vec<Figure>, Error> {
    let broker = BrokerProcess::start(args.events, args.partitions)?;
    let measured = measure(workloads, args, &broker).await?;
    drop(broker);
    let mut figures: Vec<Figure> = measured.iter().map(|m| figure(m, &args)).collect();
    if with_spark || with_flink {
        // Not a hidden name: Flink's file source skips paths that start with a dot.
        let files = tempfile::Builder::new()
            .prefix("spate-bench-events-")
            .tempdir()?;
        write_json(files.path(), args.events, JSON_FILES)?;
        if with_spark && let Some(tumbling) = find(&measured, Workload::Tumbling) {
            figures.push(spark::run(files.path(), tumbling, &args)?);
        }
        if with_flink {
            figures.extend(flink::run(files.path(), &measured, &args)?);
        }
    }
    Ok(figures)
}

fn find(measured: &[Measured], workload: Workload) -> Option<&Measured> {
    measured.iter().find(|m| m.workload == workload)
}

/// Runs the raw pipeline and Spate's job on each workload, interleaved,
/// `args.runs` times; their medians.
async fn measure(
    workloads: &[Workload],
    args: ThroughputArgs,
    broker: &BrokerProcess,
) -> Result<Vec<Measured>, Error> {
    let mut runs: Vec<Vec<(Sample, Sample, Duration)>> = vec![Vec::new(); workloads.len()];
    for run in 1..=args.warmup_runs + args.runs {
        // The measured run's number; None for a warm-up run.
        let measured = run.checked_sub(args.warmup_runs).filter(|m| *m > 0);
        let label = match measured {
            Some(measured) => format!("run {measured}"),
            None => format!("warm-up {run}"),
        };
        for (index, workload) in workloads.iter().enumerate() {
            let (raw, raw_rows) =
                raw_pipeline(broker.bootstrap_servers(), args.partitions, *workload).await?;
            let broker_before = broker.cpu();
            let (spate, spate_rows) =
                spate_job(broker.bootstrap_servers(), *workload, args).await?;
            let broker_cpu = broker.cpu().saturating_sub(broker_before);
            eprintln!(
                "{label}: {}: raw {:.2}s ({:.2} CPU-s), spate {:.2}s ({:.2} CPU-s; the broker {:.2} CPU-s)",
                workload.name(),
                raw.wall.as_secs_f64(),
                raw.cpu.as_secs_f64(),
                spate.wall.as_secs_f64(),
                spate.cpu.as_secs_f64(),
                broker_cpu.as_secs_f64(),
            );
            if spate_rows + workload.open_windows() != raw_rows {
                return Err(format!(
                    "{}: the answers differ: raw pipeline {raw_rows} rows, Spate {spate_rows} (+{} open windows)",
                    workload.name(),
                    workload.open_windows()
                )
                .into());
            }
            if measured.is_some() {
                runs[index].push((raw, spate, broker_cpu));
            }
        }
    }
    Ok(workloads
        .iter()
        .zip(runs)
        .map(|(workload, runs)| {
            let pick = |f: fn(&(Sample, Sample, Duration)) -> Duration| {
                median(runs.iter().map(f).collect())
            };
            Measured {
                workload: *workload,
                raw: Sample {
                    wall: pick(|r| r.0.wall),
                    cpu: pick(|r| r.0.cpu),
                },
                spate: Sample {
                    wall: pick(|r| r.1.wall),
                    cpu: pick(|r| r.1.cpu),
                },
                broker_cpu: pick(|r| r.2),
            }
        })
        .collect())
}

/// B1/B2's line: Spate per CPU-second of its threads (the nominal per
/// worker core beside it) against the tight pipeline per CPU-second.
fn figure(measured: &Measured, args: &ThroughputArgs) -> Figure {
    let events = (args.events + 1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spate_cores = ((args.workers * args.slots) as usize).min(cores) as f64;
    let raw_rate = events / measured.raw.wall.as_secs_f64();
    // The raw pipeline's thread has librdkafka's beside it (fetching,
    // decompressing), as Spate's tasks do: CPU-seconds on both sides.
    let raw_per_cpu_second = events / measured.raw.cpu.as_secs_f64();
    let per_cpu_second = events / measured.spate.cpu.as_secs_f64();
    let per_worker_core = measured.spate_rate(args) / spate_cores;
    let ratio = per_cpu_second / raw_per_cpu_second;
    Figure {
        bench: format!(
            "{} ({} events, {} workers x {} slot, medians of {} after {} warm-up)",
            measured.workload.name(),
            args.events + 1,
            args.workers,
            args.slots,
            args.runs,
            args.warmup_runs
        ),
        spate: format!(
            "{per_cpu_second:.0} events per CPU-second ({:.2} CPU-s; {per_worker_core:.0}/s per worker core; the broker {:.2} CPU-s apart)",
            measured.spate.cpu.as_secs_f64(),
            measured.broker_cpu.as_secs_f64()
        ),
        baseline: format!(
            "{raw_per_cpu_second:.0} events per CPU-second ({:.2} CPU-s; {raw_rate:.0}/s on its one thread and librdkafka's)",
            measured.raw.cpu.as_secs_f64()
        ),
        ratio: format!("{ratio:.2}"),
        target: format!(">= {TARGET_OF_TIGHT_PIPELINE:.2}"),
        met: Some(ratio >= TARGET_OF_TIGHT_PIPELINE),
    }
}

/// The tight pipeline one thread would run by hand: the consumer created
/// and assigned and the session built before the clock starts, fetches
/// that do not wait, every record decoded into Arrow as it comes, then the
/// query in DataFusion and one Parquet file.
async fn raw_pipeline(
    bootstrap: &str,
    partitions: i32,
    workload: Workload,
) -> Result<(Sample, u64), Error> {
    // No long poll, as Spate's readers; and a prefetch of 4 MiB (on the
    // consumer's one queue) refilled as soon as it drains. With
    // librdkafka's 64 MiB runs took 3.0-4.6 CPU-s and 3.6-4.2 s, most of
    // the extra in the kernel, faulting in and clearing fresh memory; with
    // 4 MiB and the default 1 s back-off of a full queue the fetcher
    // starved (40 s a run); this way a run takes 2.7 CPU-s and 2.1 s.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "raw-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("queued.min.messages", "1000000")
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.queue.backoff.ms", "1")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks("events", p, Duration::from_secs(5))?;
        remaining += high - low;
        assignment.add_partition_offset("events", p, Offset::Offset(low))?;
    }
    // The columns as DataFusion plans `ts TIMESTAMP, customer VARCHAR,
    // amount DOUBLE`, which is what Spate's table decodes into.
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("customer", DataType::Utf8View, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let decoder = ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(RAW_BATCH_ROWS)
        .build_decoder()?;
    let scratch = tempfile::tempdir()?;
    let ctx = spate_engine::job::session(&PlanEnv::new(Workspace::open(scratch.path())?, ""));
    consumer.assign(&assignment)?;
    let (started, cpu_before) = (Instant::now(), own_cpu());
    // The query reads the records as they are polled and decoded, batch by
    // batch, and its results are written as they come: no more of the
    // input or the output is held than the query itself needs.
    let input = PolledRecords {
        schema: Arc::clone(&schema),
        polled: Mutex::new(Some((consumer, decoder, remaining))),
    };
    ctx.register_table(
        "events",
        Arc::new(StreamingTable::try_new(schema, vec![Arc::new(input)])?),
    )?;
    let frame = spate_engine::job::sql(&ctx, workload.query()).await?;
    let result_schema = Arc::new(frame.schema().as_arrow().clone());
    let mut results = frame.execute_stream().await?;
    let file = std::fs::File::create(scratch.path().join("out.parquet"))?;
    // The same writer settings as Spate's Parquet sink: DataFusion's defaults.
    // (ArrowWriter embeds the Arrow schema itself, as DataFusion's sink has it do.)
    let mut options = TableParquetOptions::default();
    options.global.skip_arrow_metadata = true;
    let properties = ParquetWriterOptions::try_from(&options)?;
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        file,
        result_schema,
        Some(properties.writer_options().clone()),
    )?;
    let mut rows = 0u64;
    while let Some(batch) = results.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.close()?;
    let sample = Sample {
        wall: started.elapsed(),
        cpu: own_cpu().saturating_sub(cpu_before),
    };
    Ok((sample, rows))
}

/// The tight pipeline's input: the assigned consumer polled record by
/// record on the query's own thread (with the records it has yet to
/// give), each record's value fed to the JSON decoder, a batch handed on
/// every `RAW_BATCH_ROWS` records.
struct PolledRecords {
    schema: SchemaRef,
    polled: Mutex<Option<(BaseConsumer, Decoder, i64)>>,
}

impl std::fmt::Debug for PolledRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolledRecords")
    }
}

impl PartitionStream for PolledRecords {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner()).take();
        let batches = std::iter::from_fn(move || {
            let (consumer, decoder, remaining) = polled.as_mut()?;
            next_batch(consumer, decoder, remaining).transpose()
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(batches),
        ))
    }
}

/// The next batch of up to `RAW_BATCH_ROWS` records; `None` once all
/// were read. The decoder takes no row past its batch size, so a record
/// is fed to it only while it has room.
fn next_batch(
    consumer: &BaseConsumer,
    decoder: &mut Decoder,
    remaining: &mut i64,
) -> DfResult<Option<RecordBatch>> {
    while *remaining > 0 && decoder.len() < RAW_BATCH_ROWS {
        // A record already fetched is taken without a timeout to keep, as
        // Spate's scan takes it.
        let Some(message) = consumer
            .poll(Duration::ZERO)
            .or_else(|| consumer.poll(Duration::from_secs(5)))
        else {
            return Err(DataFusionError::Execution(
                "the raw pipeline stalled".into(),
            ));
        };
        let message = message.map_err(|e| DataFusionError::External(e.into()))?;
        if let Some(payload) = message.payload() {
            decoder.decode(payload)?;
        }
        *remaining -= 1;
    }
    Ok(decoder.flush()?)
}

/// The query as a streaming job on a master and workers in this process,
/// available-now into Parquet; the wall time from submit to finished.
async fn spate_job(
    bootstrap: &str,
    workload: Workload,
    args: ThroughputArgs,
) -> Result<(Sample, u64), Error> {
    let cluster = BenchCluster::start(bootstrap, args.workers, args.slots).await?;
    let watermark = match workload {
        Workload::Stateless => String::new(),
        _ => "'watermark' 'ts - INTERVAL 5 SECONDS', ".to_string(),
    };
    let sql = format!(
        "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
           STORED AS KAFKA LOCATION 'events'
           OPTIONS ({watermark}'max_offsets_per_trigger' '{}');
         CREATE EXTERNAL TABLE out ({}) STORED AS PARQUET LOCATION 'output/bench/';
         SET spate.trigger.interval = '0';
         SET spate.trigger.available_now = true;
         INSERT INTO out {};",
        args.max_offsets_per_trigger,
        workload.sink_columns(),
        workload.query()
    );
    let (started, cpu_before) = (Instant::now(), own_cpu());
    let job = cluster.submit("bench", sql).await?;
    let rows = cluster.wait_finished(&job).await?;
    let sample = Sample {
        wall: started.elapsed(),
        cpu: own_cpu().saturating_sub(cpu_before),
    };
    cluster.shutdown().await;
    Ok((sample, rows))
}
