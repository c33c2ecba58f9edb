//! Spate's benchmarks, each beside its baseline over the same input in the
//! same run, so ratios hold even on a noisy machine. `spate-bench all` runs
//! them interleaved and prints one table of figures, ratios and targets:
//!
//! - B1 stateless throughput: a filter/projection job into Parquet, per
//!   CPU-second of Spate's threads, vs the tight single-thread pipeline
//!   (rdkafka assign+consume set up before the clock, arrow-json decode,
//!   the same DataFusion plan, a Parquet write), 4,000,000 events, medians
//!   of 3 interleaved runs, the broker in its own process;
//! - B2 windowed throughput: a 10 s tumbling and a 30 s / 10 s sliding
//!   aggregation per customer, the same way;
//! - B3 the micro-batch floor: a trigger of 0 and a few records per batch;
//! - B4 end-to-end latency: from a 1-second window's close to its commit;
//! - B5 distribution overhead: an aggregation over Parquet in the workspace
//!   through the REPL's path (RunStatement, stages on the workers) vs
//!   DataFusion alone in one process over the same files;
//! - B6 Spark: B2's tumbling window in PySpark local[2] over the same events
//!   as JSON files (Spark's file source, available-now);
//! - B7 Flink: B1's and B2's queries in PyFlink (local, streaming mode,
//!   parallelism equal to Spate's slots) over the same JSON files;
//! - B8 sinks: running totals per id into Kafka, Redis and PostgreSQL beside
//!   Parquet, and each sink's per-batch floor;
//! - B9 state that scales: a running total's batch time and bytes written
//!   at 10,000,000 ids beside 100,000;
//! - B10 Nexmark: the suite's queries Spate runs, over `STORED AS NEXMARK`
//!   tables that generate the events in the tasks, events/s per core
//!   beside the published figures of Flink and Feldera.
//!
//! Kafka is the development broker (librdkafka's mock cluster, the Kafka
//! protocol on loopback); Spate runs a master and workers in this process.
//! Build with `cargo build --release -p spate-bench`; results go in
//! BENCHMARKS.md.

mod distribution;
mod events;
mod flink;
mod floor;
mod latency;
mod nexmark;
mod python;
mod sinks;
mod spark;
mod state;
mod throughput;

use std::time::Duration;

use clap::{Parser, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use spate_proto::SubmitJobRequest;
use tokio::sync::watch;

use throughput::Workload;

#[derive(Parser)]
#[command(
    name = "spate-bench",
    about = "Spate's benchmarks, each beside its baseline in the same run; record results in BENCHMARKS.md"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(clap::Args, Clone, Copy)]
struct ThroughputArgs {
    /// Events to produce (LZ4-compressed, the development broker keeps about 5 MiB of them per partition).
    #[arg(long, default_value_t = 4_000_000)]
    events: u64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 32)]
    partitions: i32,
    /// In-process workers.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Task slots per worker.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Largest batch, in records (Spark's maxOffsetsPerTrigger).
    #[arg(long, default_value_t = 500_000)]
    max_offsets_per_trigger: u64,
    /// Runs of each pipeline, interleaved; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// B1/B2: runs of each pipeline before the measured ones, printed but
    /// left out of the medians. A process's first run pays for its
    /// threads' first memory (librdkafka's fetch buffers fault in about
    /// 1 GB), which a long-running worker pays once.
    #[arg(long, default_value_t = 1)]
    warmup_runs: u32,
}

#[derive(clap::Args, Clone, Copy)]
struct FloorArgs {
    /// How long the floor's job runs.
    #[arg(long, default_value_t = 20)]
    floor_seconds: u64,
    /// Records produced per second while it runs, spread over 4 partitions.
    #[arg(long, default_value_t = 200)]
    floor_rate: u64,
}

#[derive(clap::Args, Clone, Copy)]
struct DistributionArgs {
    /// Rows of the Parquet table B5 aggregates.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
}

#[derive(Subcommand)]
enum Bench {
    /// Every benchmark below, interleaved, with one table of results.
    All {
        #[command(flatten)]
        throughput: ThroughputArgs,
        #[command(flatten)]
        floor: FloorArgs,
        #[command(flatten)]
        distribution: DistributionArgs,
        #[command(flatten)]
        latency: latency::LatencyArgs,
        #[command(flatten)]
        sinks: sinks::SinkArgs,
        #[command(flatten)]
        state: state::StateArgs,
        #[command(flatten)]
        nexmark: nexmark::NexmarkArgs,
    },
    /// B10: the Nexmark queries Spate runs, per core, beside Flink's and Feldera's published figures.
    Nexmark {
        #[command(flatten)]
        args: nexmark::NexmarkArgs,
    },
    /// B9: a running total's batch time and bytes written at 10,000,000 ids beside 100,000.
    State {
        #[command(flatten)]
        args: state::StateArgs,
    },
    /// B8: running totals into Kafka, Redis and PostgreSQL beside Parquet, and their floors.
    Sinks {
        #[command(flatten)]
        args: sinks::SinkArgs,
    },
    /// B4: end-to-end latency of a 1-second tumbling window.
    Latency {
        #[command(flatten)]
        args: latency::LatencyArgs,
    },
    /// B1/B2: one workload, Spate vs the raw pipeline.
    Throughput {
        #[arg(long, value_enum, default_value_t = Workload::Tumbling)]
        workload: Workload,
        #[command(flatten)]
        args: ThroughputArgs,
    },
    /// B3: the micro-batch floor.
    Floor {
        #[command(flatten)]
        args: FloorArgs,
    },
    /// B6: B2's tumbling window, Spate vs PySpark local[2] over the same events as JSON files.
    Spark {
        #[command(flatten)]
        args: ThroughputArgs,
    },
    /// B7: B1's and B2's queries, Spate vs Apache Flink (PyFlink, local) over the same events as JSON files.
    Flink {
        #[command(flatten)]
        args: ThroughputArgs,
    },
    /// The development broker filled with B1's events, in its own process (used by B1, B2, B6 and B7).
    #[command(hide = true)]
    ServeBroker {
        #[arg(long)]
        events: u64,
        #[arg(long)]
        partitions: i32,
    },
    /// B5: an aggregation over Parquet on the cluster vs DataFusion alone.
    Distribution {
        #[command(flatten)]
        args: DistributionArgs,
        /// Runs of each, interleaved; the best is reported.
        #[arg(long, default_value_t = 3)]
        runs: u32,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One line of the results table.
pub struct Figure {
    pub bench: String,
    pub spate: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub met: Option<bool>,
}

fn main() -> Result<(), Error> {
    let bench = Cli::parse().bench;
    if let Bench::ServeBroker { events, partitions } = bench {
        return events::serve_broker(events, partitions);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let figures = runtime.block_on(run(bench))?;
    print_table(figures);
    Ok(())
}

async fn run(bench: Bench) -> Result<Vec<Figure>, Error> {
    let mut figures = Vec::new();
    match bench {
        Bench::All {
            throughput,
            floor,
            distribution,
            latency,
            sinks,
            state,
            nexmark,
        } => {
            figures
                .extend(throughput::run_with_peers(&Workload::ALL, throughput, true, true).await?);
            figures.push(floor::run(floor).await?);
            figures.push(latency::run(latency).await?);
            figures.push(distribution::run(distribution, throughput.runs).await?);
            figures.extend(sinks::run(sinks).await?);
            figures.extend(state::run(state).await?);
            figures.extend(nexmark::run(nexmark).await?);
        }
        Bench::Nexmark { args } => figures.extend(nexmark::run(args).await?),
        Bench::Sinks { args } => figures.extend(sinks::run(args).await?),
        Bench::State { args } => figures.extend(state::run(args).await?),
        Bench::Throughput { workload, args } => {
            figures.extend(throughput::run_with_peers(&[workload], args, false, false).await?)
        }
        Bench::Spark { args } => figures
            .extend(throughput::run_with_peers(&[Workload::Tumbling], args, true, false).await?),
        Bench::Flink { args } => {
            figures.extend(throughput::run_with_peers(&Workload::ALL, args, false, true).await?)
        }
        Bench::Floor { args } => figures.push(floor::run(args).await?),
        Bench::Latency { args } => figures.push(latency::run(args).await?),
        Bench::Distribution { args, runs } => figures.push(distribution::run(args, runs).await?),
        Bench::ServeBroker { .. } => return Err("the broker is served outside the runtime".into()),
    }
    Ok(figures)
}

fn print_table(figures: Vec<Figure>) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "benchmark",
        "Spate",
        "baseline",
        "ratio",
        "target",
        "met",
    ]);
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        table.add_row(vec![
            f.bench,
            f.spate,
            f.baseline,
            f.ratio,
            f.target,
            met.to_string(),
        ]);
    }
    println!("{table}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores");
}

/// 2023-11-14T22:13:20Z.
const T0_MS: i64 = 1_700_000_000_000;
const CUSTOMERS: u64 = 50;

/// The median of a few measurements.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// The value at percentile `p` (0..=100) of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A master and workers in this process, on a fresh workspace.
struct BenchCluster {
    workspace: tempfile::TempDir,
    master: spate_master::MasterHandle,
    client: spate_proto::dial::Client,
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
        let mut client = spate_proto::dial::client(
            &format!("http://{}", master.grpc_addr),
            None,
            &spate_config::settings().secret,
        )
        .await?;
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
                ..Default::default()
            })
            .await?
            .into_inner()
            .job_id)
    }

    /// Waits for an available-now job to finish; returns its output rows.
    async fn wait_finished(&self, job_id: &str) -> Result<u64, Error> {
        loop {
            let job = self.job(job_id).await?;
            use spate_proto::JobState;
            match job.state() {
                JobState::Finished => return Ok(job.output_rows),
                state @ (JobState::Failed | JobState::Stopped) => {
                    let state = state.as_str_name();
                    return Err(format!("the job ended {state}: {}", job.error).into());
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// A job as the master lists it.
    async fn job(&self, job_id: &str) -> Result<spate_proto::JobInfo, Error> {
        let jobs = self
            .client
            .clone()
            .list_jobs(spate_proto::ListJobsRequest {})
            .await?
            .into_inner()
            .jobs;
        Ok(jobs
            .into_iter()
            .find(|j| j.job_id == job_id)
            .ok_or("the job vanished")?)
    }

    /// A job's state and error, as the master lists it.
    async fn job_state(&self, job_id: &str) -> Result<String, Error> {
        let job = self.job(job_id).await?;
        Ok(format!("{} {}", job.state().as_str_name(), job.error))
    }

    /// The records a job has read.
    async fn input_rows(&self, job_id: &str) -> Result<u64, Error> {
        Ok(self.job(job_id).await?.input_rows)
    }

    async fn shutdown(self) {
        let _ = self.stop_workers.send(true);
        self.master.shutdown().await;
        // The workers stop on their own time; the next pipeline measured
        // in this process must not pay for their Kafka fetches.
        spate_engine::kafka::release_partitions();
    }
}
