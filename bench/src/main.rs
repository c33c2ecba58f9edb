//! `spate-bench windowed`: how many events per second Spate aggregates in
//! event-time windows, beside the raw single-process pipeline that does the
//! same work with no cluster at all (rdkafka consume, arrow-json decode,
//! DataFusion aggregation, in one loop), over the same records in one run.
//!
//! Both read the same topic of the development broker (librdkafka's mock
//! cluster, a real Kafka-protocol server on loopback). Spate runs a master
//! and workers in this process, as `driver demo` does, and the job is a
//! 10-second tumbling window per customer in append mode, processing what
//! the topic holds and then finishing (`spate.trigger.available_now`).
//! Both answers are checked to agree on the number of groups.
//!
//! Build with `cargo build --release -p spate-bench`; results go in
//! BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use spate_engine::kafka::{DevBroker, enqueue};
use spate_proto::client_service_client::ClientServiceClient;
use spate_proto::{ListJobsRequest, SubmitJobRequest};
use tokio::sync::watch;

mod floor;

#[derive(Parser)]
#[command(
    name = "spate-bench",
    about = "Spate's benchmarks; record results in BENCHMARKS.md"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Tumbling-window aggregation: Spate on a cluster vs the raw pipeline.
    Windowed {
        /// Events to produce (the mock broker keeps about 5 MiB per partition).
        #[arg(long, default_value_t = 400_000)]
        events: u64,
        /// Partitions of the input topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// In-process workers.
        #[arg(long, default_value_t = 2)]
        workers: u32,
        /// Task slots per worker.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        /// Largest batch, in records (Spark's maxOffsetsPerTrigger).
        #[arg(long, default_value_t = 100_000)]
        max_offsets_per_trigger: u64,
        /// Runs of each pipeline; the best is reported.
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
    /// B3, the micro-batch floor: a trigger of 0 and a few records per
    /// batch; p50/p99 of a batch's wall time from its offsets log entry to
    /// its commit, and where that time goes.
    Floor {
        /// How long the job runs.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Records produced per second, spread over the partitions.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Partitions of the input topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// In-process workers (2 slots each).
        #[arg(long, default_value_t = 2)]
        workers: u32,
    },
}

/// 2023-11-14T22:13:20Z.
const T0_MS: i64 = 1_700_000_000_000;
const CUSTOMERS: u64 = 50;
const QUERY: &str = "SELECT date_bin(INTERVAL '10 seconds', ts) AS window_start, customer, sum(amount) AS revenue, count(*) AS events FROM events GROUP BY 1, 2";

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Cli::parse().bench {
        Bench::Windowed {
            events,
            partitions,
            workers,
            slots,
            max_offsets_per_trigger,
            runs,
        } => {
            windowed(
                events,
                partitions,
                workers,
                slots,
                max_offsets_per_trigger,
                runs,
            )
            .await
        }
        Bench::Floor {
            seconds,
            rate,
            partitions,
            workers,
        } => floor::run(seconds, rate, partitions, workers).await,
    }
}

async fn windowed(
    events: u64,
    partitions: i32,
    workers: u32,
    slots: u32,
    max_offsets_per_trigger: u64,
    runs: u32,
) -> Result<(), Error> {
    let broker = DevBroker::start()?;
    broker.create_topic("events", partitions)?;
    let started = Instant::now();
    produce(broker.bootstrap_servers(), events, partitions).await?;
    eprintln!(
        "produced {events} events to {partitions} partitions in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let mut raw = Vec::new();
    let mut spate = Vec::new();
    let mut groups = (0, 0);
    for run in 1..=runs {
        let (elapsed, raw_groups) = raw_pipeline(broker.bootstrap_servers(), partitions).await?;
        eprintln!("run {run}: raw pipeline {:.2}s", elapsed.as_secs_f64());
        raw.push(elapsed);
        let (elapsed, spate_groups) = spate_cluster(
            broker.bootstrap_servers(),
            workers,
            slots,
            max_offsets_per_trigger,
        )
        .await?;
        eprintln!("run {run}: spate {:.2}s", elapsed.as_secs_f64());
        spate.push(elapsed);
        groups = (raw_groups, spate_groups);
    }
    // Spate emits a window once the watermark passes it: all but the
    // closing event's own, which the raw pipeline also counts.
    if groups.1 + 1 != groups.0 {
        return Err(format!(
            "the answers differ: raw pipeline {} groups, Spate {} closed windows (+1 open)",
            groups.0, groups.1
        )
        .into());
    }
    let best = |times: &[Duration]| times.iter().min().copied().unwrap_or_default();
    let (raw_best, spate_best) = (best(&raw), best(&spate));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spate_cores = ((workers * slots) as usize).min(cores);
    let events = events + 1;
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL).set_header(vec![
        "pipeline",
        "events",
        "best of runs",
        "events/s",
        "cores used",
        "events/s per core",
        "vs raw",
    ]);
    table.add_row(vec![
        "raw: rdkafka + arrow-json + DataFusion, one process".to_string(),
        events.to_string(),
        format!("{:.2}s", raw_best.as_secs_f64()),
        format!("{:.0}", rate(raw_best)),
        "1".to_string(),
        format!("{:.0}", rate(raw_best)),
        "1.00".to_string(),
    ]);
    table.add_row(vec![
        format!("spate: {workers} workers x {slots} slots, tumbling window job"),
        events.to_string(),
        format!("{:.2}s", spate_best.as_secs_f64()),
        format!("{:.0}", rate(spate_best)),
        spate_cores.to_string(),
        format!("{:.0}", rate(spate_best) / spate_cores as f64),
        format!("{:.2}", raw_best.as_secs_f64() / spate_best.as_secs_f64()),
    ]);
    println!("{table}");
    println!(
        "{} groups; {runs} runs each; machine: {cores} cores",
        groups.0
    );
    Ok(())
}

/// The value at percentile `p` (0..=100) of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn event(i: u64) -> String {
    event_at(i, 0)
}

/// Event `i`: ten per second of event time, in order, `ahead_ms` later.
fn event_at(i: u64, ahead_ms: i64) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(T0_MS + i as i64 * 100 + ahead_ms)
        .unwrap_or_default();
    format!(
        r#"{{"ts":"{}","customer":"c{}","amount":{}}}"#,
        ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        (i * 7919) % CUSTOMERS,
        (i % 400) as f64 * 0.25
    )
}

async fn produce(bootstrap: &str, events: u64, partitions: i32) -> Result<(), Error> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()?;
    let mut deliveries = Vec::new();
    for i in 0..events {
        let line = event(i);
        let record = FutureRecord::<(), [u8]>::to("events")
            .payload(line.as_bytes())
            .partition((i % partitions as u64) as i32);
        deliveries.push(enqueue(&producer, record).await?);
    }
    // One event far ahead moves the watermark past every other window, so
    // Spate emits them all; its own window stays open.
    let closing = event_at(events, 3_600_000);
    deliveries.push(
        enqueue(
            &producer,
            FutureRecord::<(), [u8]>::to("events")
                .payload(closing.as_bytes())
                .partition(0),
        )
        .await?,
    );
    producer.flush(Duration::from_secs(30))?;
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Consumes the whole topic, decodes each record into Arrow as it comes,
/// then aggregates with DataFusion: what one process would do by hand.
async fn raw_pipeline(bootstrap: &str, partitions: i32) -> Result<(Duration, usize), Error> {
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
    let ctx = SessionContext::new();
    ctx.register_table(
        "events",
        Arc::new(MemTable::try_new(schema, vec![batches])?),
    )?;
    let result = ctx.sql(QUERY).await?.collect().await?;
    let groups = result.iter().map(RecordBatch::num_rows).sum();
    Ok((started.elapsed(), groups))
}

/// A master and workers in this process run the windowed job over the
/// topic and finish; returns the wall time from submit to finished.
async fn spate_cluster(
    bootstrap: &str,
    workers: u32,
    slots: u32,
    max_offsets_per_trigger: u64,
) -> Result<(Duration, usize), Error> {
    let cluster = BenchCluster::start(bootstrap, workers, slots).await?;
    let mut client = cluster.client.clone();
    let sql = format!(
        "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
           STORED AS KAFKA LOCATION 'events'
           OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS', 'max_offsets_per_trigger' '{max_offsets_per_trigger}');
         CREATE EXTERNAL TABLE out (window_start TIMESTAMP, customer VARCHAR, revenue DOUBLE, events BIGINT)
           STORED AS PARQUET LOCATION 'output/windowed/';
         SET spate.trigger.interval = '0';
         SET spate.trigger.available_now = true;
         INSERT INTO out {QUERY};"
    );
    let started = Instant::now();
    let job_id = cluster.submit("windowed", sql).await?;
    let output_rows = loop {
        let jobs = client
            .list_jobs(ListJobsRequest {})
            .await?
            .into_inner()
            .jobs;
        let job = jobs
            .iter()
            .find(|j| j.job_id == job_id)
            .ok_or("the job vanished")?;
        match job.state.as_str() {
            "FINISHED" => break job.output_rows,
            "FAILED" | "STOPPED" => {
                return Err(format!("the job ended {}: {}", job.state, job.error).into());
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let elapsed = started.elapsed();
    cluster.shutdown().await;
    Ok((elapsed, output_rows as usize))
}

/// A master and workers in this process, on a fresh workspace.
struct BenchCluster {
    workspace: tempfile::TempDir,
    master: spate_master::MasterHandle,
    client: ClientServiceClient<tonic::transport::Channel>,
    stop_workers: watch::Sender<bool>,
}

impl BenchCluster {
    async fn start(bootstrap: &str, workers: u32, slots: u32) -> Result<Self, Error> {
        let workspace = tempfile::tempdir()?;
        let mut config = spate_master::MasterConfig::new(workspace.path());
        config.grpc_addr = "127.0.0.1:0".parse()?;
        config.http_addr = "127.0.0.1:0".parse()?;
        config.default_bootstrap_servers = bootstrap.to_string();
        let master = spate_master::start(config).await?;
        let (stop_workers, stopped) = watch::channel(false);
        for i in 1..=workers {
            let mut config = spate_worker::WorkerConfig::new(
                format!("http://{}", master.grpc_addr),
                workspace.path(),
            );
            config.worker_id = format!("bench-{i}");
            config.slots = slots;
            tokio::spawn(spate_worker::run(config, stopped.clone()));
        }
        let mut client =
            ClientServiceClient::connect(format!("http://{}", master.grpc_addr)).await?;
        // Workers register within a heartbeat; shuffle partitions follow their slots.
        while client
            .list_workers(spate_proto::ListWorkersRequest {})
            .await?
            .into_inner()
            .workers
            .len()
            < workers as usize
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(BenchCluster {
            workspace,
            master,
            client,
            stop_workers,
        })
    }

    async fn submit(&self, name: &str, sql: String) -> Result<String, Error> {
        Ok(self
            .client
            .clone()
            .submit_job(SubmitJobRequest {
                sql,
                name: name.into(),
                origin: "bench".into(),
                secret: String::new(),
            })
            .await?
            .into_inner()
            .job_id)
    }

    async fn shutdown(self) {
        let _ = self.stop_workers.send(true);
        self.master.shutdown().await;
    }
}
