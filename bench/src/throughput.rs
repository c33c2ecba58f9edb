//! B1 and B2: events per second through a query, Spate on a cluster in
//! this process vs the raw pipeline one would write by hand in one process
//! (rdkafka assign and consume, arrow-json decode, the same query in
//! DataFusion, the result written as Parquet), over the same topic, runs
//! interleaved. Both answers are checked to agree on their row counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use spate_engine::Workspace;
use spate_engine::job::PlanEnv;

use crate::{BenchCluster, Error, Figure, ThroughputArgs, broker_with_events};

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
    fn name(self) -> &'static str {
        match self {
            Workload::Stateless => "B1 stateless filter/projection",
            Workload::Tumbling => "B2 10 s tumbling window per customer",
            Workload::Sliding => "B2 30 s / 10 s sliding window per customer",
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

    fn target(self) -> f64 {
        match self {
            Workload::Stateless => 0.6,
            _ => 0.5,
        }
    }
}

pub async fn run(workloads: &[Workload], args: ThroughputArgs) -> Result<Vec<Figure>, Error> {
    let broker = broker_with_events(args.events, args.partitions).await?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let mut best: Vec<(Duration, Duration)> = vec![(Duration::MAX, Duration::MAX); workloads.len()];
    for run in 1..=args.runs {
        for (index, workload) in workloads.iter().enumerate() {
            let (raw, raw_rows) = raw_pipeline(&bootstrap, args.partitions, *workload).await?;
            let (spate, spate_rows) = spate_job(&bootstrap, *workload, args).await?;
            eprintln!(
                "run {run}: {}: raw {:.2}s, spate {:.2}s",
                workload.name(),
                raw.as_secs_f64(),
                spate.as_secs_f64()
            );
            if spate_rows + workload.open_windows() != raw_rows {
                return Err(format!(
                    "{}: the answers differ: raw pipeline {raw_rows} rows, Spate {spate_rows} (+{} open windows)",
                    workload.name(),
                    workload.open_windows()
                )
                .into());
            }
            best[index].0 = best[index].0.min(raw);
            best[index].1 = best[index].1.min(spate);
        }
    }
    let events = (args.events + 1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spate_cores = ((args.workers * args.slots) as usize).min(cores) as f64;
    Ok(workloads
        .iter()
        .zip(best)
        .map(|(workload, (raw, spate))| {
            let raw_rate = events / raw.as_secs_f64();
            let spate_per_core = events / spate.as_secs_f64() / spate_cores;
            let ratio = spate_per_core / raw_rate;
            Figure {
                bench: format!(
                    "{} ({} events, {} workers x {} slot)",
                    workload.name(),
                    args.events + 1,
                    args.workers,
                    args.slots
                ),
                spate: format!("{spate_per_core:.0} events/s per worker core"),
                baseline: format!("{raw_rate:.0} events/s (raw, 1 core)"),
                ratio: format!("{ratio:.2}"),
                target: format!(">= {:.2}", workload.target()),
                met: Some(ratio >= workload.target()),
            }
        })
        .collect())
}

/// Consumes the whole topic, decodes each record into Arrow as it comes,
/// runs the query with DataFusion (and Spate's window functions) and writes
/// the result as one Parquet file: what one process would do by hand.
async fn raw_pipeline(
    bootstrap: &str,
    partitions: i32,
    workload: Workload,
) -> Result<(Duration, u64), Error> {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "raw-bench")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0i64;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks("events", p, Duration::from_secs(5))?;
        remaining += high - low;
        assignment.add_partition_offset("events", p, Offset::Offset(low))?;
    }
    consumer.assign(&assignment)?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("customer", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let mut decoder = ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(8192)
        .build_decoder()?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    while remaining > 0 {
        let Some(message) = consumer.poll(Duration::from_secs(5)) else {
            return Err("the raw pipeline stalled".into());
        };
        let message = message?;
        if let Some(payload) = message.payload() {
            decoder.decode(payload)?;
        }
        remaining -= 1;
        if decoder.len() >= 8192 {
            batches.extend(decoder.flush()?);
        }
    }
    batches.extend(decoder.flush()?);
    let scratch = tempfile::tempdir()?;
    let ctx = spate_engine::job::session(&PlanEnv::new(Workspace::open(scratch.path())?, ""));
    ctx.register_table(
        "events",
        Arc::new(MemTable::try_new(Arc::clone(&schema), vec![batches])?),
    )?;
    let frame = spate_engine::job::sql(&ctx, workload.query()).await?;
    let result_schema = Arc::new(frame.schema().as_arrow().clone());
    let result = frame.collect().await?;
    let file = std::fs::File::create(scratch.path().join("out.parquet"))?;
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, result_schema, None)?;
    for batch in &result {
        writer.write(batch)?;
    }
    writer.close()?;
    let rows = result.iter().map(|b| b.num_rows() as u64).sum();
    Ok((started.elapsed(), rows))
}

/// The query as a streaming job on a master and workers in this process,
/// available-now into Parquet; the wall time from submit to finished.
pub async fn spate_job(
    bootstrap: &str,
    workload: Workload,
    args: ThroughputArgs,
) -> Result<(Duration, u64), Error> {
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
    let started = Instant::now();
    let job = cluster.submit("bench", sql).await?;
    let rows = cluster.wait_finished(&job).await?;
    let elapsed = started.elapsed();
    cluster.shutdown().await;
    Ok((elapsed, rows))
}
