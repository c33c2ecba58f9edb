//! `driver`: Spate's command line.

mod broker;
mod demo;
mod local;
mod produce;
mod repl;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use spate_config::settings;
use spate_engine::kafka::KafkaAdmin;
use spate_engine::nexmark::{NexmarkConfig, NexmarkTable};
use spate_proto::dial::{self, Client};
use spate_proto::{
    JobInfo, JobState, ListJobsRequest, ListWorkersRequest, StopJobRequest, SubmitJobRequest,
};

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the master at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("{0}")]
    Master(String),
    #[error("{0}")]
    Kafka(String),
    #[error(transparent)]
    Engine(#[from] spate_engine::EngineError),
    #[error(transparent)]
    MasterStart(#[from] spate_master::MasterError),
}

impl From<tonic::Status> for DriverError {
    fn from(status: tonic::Status) -> Self {
        if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
            return DriverError::Master(format!(
                "the request is larger than the master takes (its master.max_request_mb): {}",
                status.message()
            ));
        }
        DriverError::Master(status.message().to_string())
    }
}

/// Spate: streaming SQL on a cluster. Submit jobs, watch them, feed Kafka.
#[derive(Parser, Debug)]
#[command(name = "driver", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct MasterArgs {
    /// The master's gRPC URL (https:// when it serves TLS).
    #[arg(long, env = "SPATE_MASTER", default_value_t = settings().client.master.clone())]
    master: String,
    /// Shared secret, when the master has one.
    #[arg(long, env = "SPATE_SECRET", hide_env_values = true, hide_default_value = true,
          default_value_t = settings().secret.clone())]
    secret: String,
    #[command(flatten)]
    tls: TlsArgs,
}

/// How a client trusts a master that serves TLS.
#[derive(clap::Args, Debug, Clone)]
pub struct TlsArgs {
    /// The CA certificate (PEM) that signed the master's, for https:// masters.
    #[arg(long = "tls-ca", env = "SPATE_CLIENT_TLS_CA")]
    pub ca: Option<PathBuf>,
}

impl MasterArgs {
    async fn connect(&self) -> Result<Client, DriverError> {
        connect(&self.master, self.tls.ca.as_deref(), &self.secret).await
    }
}

#[derive(clap::Args, Debug, Clone)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        global = true,
        env = "SPATE_KAFKA_BOOTSTRAP",
        default_value = "localhost:9092"
    )]
    bootstrap: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a streaming job from a SQL file (resumes it if its checkpoint exists).
    Submit {
        /// The job file: CREATE EXTERNAL TABLE ..., SET spate.* ..., INSERT INTO ... SELECT ...
        file: PathBuf,
        /// The job's name (default: the file's name without .sql).
        #[arg(long)]
        name: Option<String>,
        /// Print the job's progress until it ends (Ctrl-C stops following, not the job).
        #[arg(long)]
        follow: bool,
        /// Start afresh: forget the job's checkpoint and delete what its sink
        /// committed, instead of resuming from the checkpoint.
        #[arg(long)]
        fresh: bool,
        #[command(flatten)]
        master: MasterArgs,
    },
    /// List jobs.
    Jobs {
        #[command(flatten)]
        master: MasterArgs,
    },
    /// Stop a job after its running batch commits; submit it again to resume.
    Stop {
        job: String,
        /// Stop now, abandoning the running batch (it re-runs on resume).
        #[arg(long)]
        kill: bool,
        #[command(flatten)]
        master: MasterArgs,
    },
    /// List workers.
    Workers {
        #[command(flatten)]
        master: MasterArgs,
    },
    /// Write records to a Kafka topic: generated sales records, or a JSON-lines file.
    Produce {
        /// The topic to write.
        #[arg(long, default_value = "sales")]
        topic: String,
        /// Records per second (0: as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Stop after this many records (default: run until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Create the topic with this many partitions when it does not exist.
        #[arg(long)]
        partitions: Option<i32>,
        /// Produce each line of this JSON-lines file instead of generated sales.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Seed for reproducible generated records.
        #[arg(long)]
        seed: Option<u64>,
        #[command(flatten)]
        nexmark: NexmarkArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// List or create Kafka topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Run the in-memory development Kafka broker (librdkafka's mock cluster).
    ///
    /// For tests, the demo and trying Spate without Kafka. It keeps data in
    /// memory with a small retention (5 MiB per partition) and loses it on
    /// exit: it is no production broker.
    Broker {
        /// Where clients connect.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// The address the broker announces to clients (default: the listen address).
        #[arg(long)]
        advertise: Option<String>,
        /// Topics to create at start, as NAME or NAME:PARTITIONS (default 4 partitions).
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// One process with Kafka, master, two workers, a sales generator and a sample job.
    Demo(demo::DemoArgs),
    /// Interactive SQL on the cluster, cell by cell; saves sessions as Jupyter notebooks.
    ///
    /// Queries run on the workers; INSERT INTO ... SELECT starts a streaming
    /// job. Without --master it runs its own cluster in this process.
    Repl(repl::ReplArgs),
    /// Spate SQL in Jupyter: the kernel JupyterLab starts, and `kernel install`.
    ///
    /// A notebook's cells are the REPL's cells; rows come back as tables,
    /// the interrupt button cancels a running query on the workers.
    Kernel(repl::kernel::KernelArgs),
}

/// `driver produce --nexmark`: the benchmark's events instead of sales.
#[derive(clap::Args, Debug)]
struct NexmarkArgs {
    /// Produce the Nexmark benchmark's events (persons, auctions, bids as
    /// JSON) into the topics person, auction and bid; --count and --rate
    /// count events.
    #[arg(long, conflicts_with_all = ["file", "topic"])]
    nexmark: bool,
    /// Nexmark: events per second of event time (default: --rate, or
    /// 10,000,000 with --rate 0, the suite's own default).
    #[arg(long, requires = "nexmark")]
    event_rate: Option<u64>,
    /// Nexmark: shuffle event time within groups of this many events.
    #[arg(long, default_value_t = 1, requires = "nexmark")]
    out_of_order: u64,
    /// Nexmark: event time of the first event, as RFC 3339 (default: now).
    #[arg(long, requires = "nexmark")]
    start: Option<String>,
}

impl NexmarkArgs {
    fn config(&self, rate: u64, seed: Option<u64>) -> Result<NexmarkConfig, DriverError> {
        let base_time_ms = match &self.start {
            None => spate_engine::now_ms(),
            Some(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    DriverError::Usage(format!(
                        "--start '{text}' is not a time in RFC 3339, such as 2026-12-01T09:00:00Z"
                    ))
                })?
                .timestamp_millis(),
        };
        let default_rate = NexmarkConfig::default().events_per_second;
        Ok(NexmarkConfig {
            base_time_ms,
            events_per_second: self
                .event_rate
                .unwrap_or(if rate == 0 { default_rate } else { rate })
                .max(1),
            out_of_order_group: self.out_of_order.max(1),
            seed: seed.unwrap_or_default(),
            ..NexmarkConfig::default()
        })
    }
}

#[derive(Subcommand, Debug)]
enum TopicsAction {
    /// List topics with their partition counts.
    List,
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "warn,datafusion=warn".into()),
    );
    // The REPL's own cluster logs to a file: warnings between the cells
    // of a session would bury them.
    match repl_log(&cli.command) {
        Some(file) => logs.with_ansi(false).with_writer(file).init(),
        None => logs.with_writer(std::io::stderr).init(),
    }
    if let Err(e) = run(cli.command).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn repl_log(command: &Command) -> Option<std::sync::Mutex<std::fs::File>> {
    let path = match command {
        Command::Repl(args) => args.cluster.log_file()?,
        // Jupyter shows a kernel's stderr in its server log: a cluster's
        // warnings belong in their own file there too.
        Command::Kernel(args) => args.log_file()?,
        _ => return None,
    };
    std::fs::create_dir_all(path.parent()?).ok()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()?;
    Some(std::sync::Mutex::new(file))
}

async fn run(command: Command) -> Result<(), DriverError> {
    match command {
        Command::Submit {
            file,
            name,
            follow,
            fresh,
            master,
        } => submit(&file, name, follow, fresh, &master).await,
        Command::Jobs { master } => {
            let jobs = master
                .connect()
                .await?
                .list_jobs(ListJobsRequest {})
                .await?
                .into_inner()
                .jobs;
            println!("{}", jobs_table(&jobs));
            Ok(())
        }
        Command::Stop { job, kill, master } => {
            master
                .connect()
                .await?
                .stop_job(StopJobRequest {
                    job_id: job.clone(),
                    kill,
                })
                .await?;
            if kill {
                println!(
                    "killed job {job}: its running batch's tasks are cancelled; submit the job again to re-run the batch from its checkpoint"
                );
            } else {
                println!(
                    "stopping job {job}: the running batch commits first; submit it again to resume"
                );
            }
            Ok(())
        }
        Command::Workers { master } => {
            let workers = master
                .connect()
                .await?
                .list_workers(ListWorkersRequest {})
                .await?
                .into_inner()
                .workers;
            println!("{}", workers_table(&workers));
            Ok(())
        }
        Command::Produce {
            topic,
            rate,
            count,
            partitions,
            file,
            seed,
            nexmark,
            kafka,
        } => {
            if nexmark.nexmark {
                return produce_nexmark(&kafka.bootstrap, &nexmark, rate, count, partitions, seed)
                    .await;
            }
            if let Some(partitions) = partitions {
                ensure_topic(&kafka.bootstrap, &topic, partitions).await?;
            }
            let sent = match file {
                Some(path) => produce::produce_file(&kafka.bootstrap, &topic, &path, false).await?,
                None => {
                    produce::produce_sales(
                        &kafka.bootstrap,
                        &topic,
                        rate,
                        count,
                        seed,
                        false,
                        stop_on_ctrl_c(),
                    )
                    .await?
                }
            };
            println!(
                "produced {sent} records to topic '{topic}' at {}",
                kafka.bootstrap
            );
            Ok(())
        }
        Command::Topics { action, kafka } => {
            let admin = KafkaAdmin::new(&kafka.bootstrap, &Default::default());
            match action {
                TopicsAction::List => {
                    let mut table = table(&["Topic", "Partitions"]);
                    for (name, partitions) in admin.list_topics().await? {
                        table.add_row(vec![Cell::new(name), num(partitions)]);
                    }
                    println!("{table}");
                }
                TopicsAction::Create { name, partitions } => {
                    create_topic(&admin, &name, partitions).await?;
                    println!("created topic '{name}' with {partitions} partitions");
                }
            }
            Ok(())
        }
        Command::Broker {
            listen,
            advertise,
            topics,
        } => {
            let served = broker::serve(listen, advertise.as_deref()).await?;
            for spec in &topics {
                let (name, partitions) = broker::parse_topic(spec)?;
                served.broker.create_topic(&name, partitions)?;
            }
            println!(
                "development Kafka broker on {} (in memory, small retention, not for production); Ctrl-C stops it",
                served.listen
            );
            let _ = tokio::signal::ctrl_c().await;
            Ok(())
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Repl(args) => repl::run(args).await,
        Command::Kernel(args) => repl::kernel::run(args).await,
    }
}

async fn produce_nexmark(
    bootstrap: &str,
    args: &NexmarkArgs,
    rate: u64,
    count: Option<u64>,
    partitions: Option<i32>,
    seed: Option<u64>,
) -> Result<(), DriverError> {
    let config = args.config(rate, seed)?;
    let mut topics = produce::NexmarkTopics { partitions: [0; 3] };
    for (table, slot) in NexmarkTable::ALL.iter().zip(&mut topics.partitions) {
        let wanted = partitions.unwrap_or(AUTO_CREATED_PARTITIONS);
        *slot = ensure_topic(bootstrap, table.name(), wanted).await?;
    }
    let sent = produce::produce_nexmark(
        bootstrap,
        &topics,
        config,
        rate,
        count,
        false,
        stop_on_ctrl_c(),
    )
    .await?;
    let mut table = table(&["Topic", "Partitions", "Events"]);
    for ((name, partitions), events) in NexmarkTable::ALL
        .iter()
        .map(|t| t.name())
        .zip(topics.partitions)
        .zip(sent)
    {
        table.add_row(vec![Cell::new(name), num(partitions), num(events)]);
    }
    println!("{table}");
    println!(
        "produced {} Nexmark events at {bootstrap}",
        sent.iter().sum::<u64>()
    );
    Ok(())
}

async fn create_topic(admin: &KafkaAdmin, name: &str, partitions: i32) -> Result<(), DriverError> {
    admin.create_topic(name, partitions).await.map_err(|e| {
        let text = e.to_string();
        // The development broker answers CreateTopics with silence, not an error.
        if text.contains("nsupported") || text.contains("Timed out") {
            DriverError::Kafka(format!(
                "{text}\nthis broker does not create topics over the protocol; Spate's development broker makes them with `driver broker --topic {name}:{partitions}`, or auto-creates them with 4 partitions on first write"
            ))
        } else {
            DriverError::Kafka(text)
        }
    })
}

/// Partitions a broker gives a topic it creates on first write (the
/// development broker does).
const AUTO_CREATED_PARTITIONS: i32 = 4;

/// Makes sure `topic` exists, creating it with `partitions` when it does
/// not; returns the partitions it has (or will have when the broker
/// creates it on first write).
async fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<i32, DriverError> {
    let admin = KafkaAdmin::new(bootstrap, &Default::default());
    match admin.partition_offsets(topic).await {
        Ok(existing) => {
            let existing = existing.len().max(1) as i32;
            if existing != partitions {
                eprintln!("note: topic '{topic}' exists with {existing} partitions");
            }
            Ok(existing)
        }
        Err(_) => match create_topic(&admin, topic, partitions).await {
            Ok(()) => Ok(partitions),
            Err(e) => {
                // Brokers that auto-create topics still take the records.
                eprintln!(
                    "note: {e}
producing anyway; the broker may create the topic on first write"
                );
                Ok(AUTO_CREATED_PARTITIONS)
            }
        },
    }
}

/// Turns true at Ctrl-C.
fn stop_on_ctrl_c() -> tokio::sync::watch::Receiver<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    stopped
}

/// A client of the master at `url`, with `secret` on every call.
pub(crate) async fn connect(
    url: &str,
    ca: Option<&Path>,
    secret: &str,
) -> Result<Client, DriverError> {
    dial::client(url, ca, secret).await.map_err(|e| match e {
        dial::DialError::Config(message) => DriverError::Usage(message),
        dial::DialError::Unreachable { url, cause } => DriverError::Connect {
            url,
            message: cause,
        },
    })
}

async fn submit(
    file: &Path,
    name: Option<String>,
    follow: bool,
    fresh: bool,
    master: &MasterArgs,
) -> Result<(), DriverError> {
    let sql = std::fs::read_to_string(file)
        .map_err(|e| DriverError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let name = name.unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".to_string())
    });
    let mut client = master.connect().await?;
    let response = client
        .submit_job(SubmitJobRequest { sql, name, fresh })
        .await
        .map_err(|s| DriverError::Master(format!("{}: {}", file.display(), s.message())))?
        .into_inner();
    println!(
        "submitted job {}{}",
        response.job_id,
        if response.resumed {
            " (resuming from its checkpoint)"
        } else {
            ""
        }
    );
    if follow {
        follow_job(&mut client, &response.job_id).await?;
    }
    Ok(())
}

async fn follow_job(client: &mut Client, job: &str) -> Result<(), DriverError> {
    let mut last = None;
    loop {
        let jobs = client
            .list_jobs(ListJobsRequest {})
            .await?
            .into_inner()
            .jobs;
        let Some(info) = jobs.into_iter().find(|j| j.job_id == job) else {
            return Err(DriverError::Master(format!("job {job} disappeared")));
        };
        let line = format!(
            "{}  batches {}  rows in {}  rows out {}{}",
            job_state(&info),
            info.batches,
            info.input_rows,
            info.output_rows,
            if info.error.is_empty() {
                String::new()
            } else {
                format!("  ({})", info.error)
            }
        );
        if last.as_ref() != Some(&line) {
            println!("{line}");
            last = Some(line);
        }
        let state = info.state();
        if matches!(
            state,
            JobState::Stopped | JobState::Finished | JobState::Failed
        ) {
            return if state == JobState::Failed {
                Err(DriverError::Master(format!(
                    "job {job} failed: {}",
                    info.error
                )))
            } else {
                Ok(())
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    // A terminal reporting no size (a bare pseudo-terminal) would get one
    // character per column; lines that run long read better.
    if table.width().is_none_or(|w| w < 40) {
        table.set_content_arrangement(ContentArrangement::Disabled);
    }
    table
}

fn num(n: impl std::fmt::Display) -> Cell {
    Cell::new(n).set_alignment(CellAlignment::Right)
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A job's state as the UI writes it: RUNNING, STOPPED, ...
pub fn job_state(job: &JobInfo) -> &'static str {
    job.state().as_str_name().trim_start_matches("JOB_STATE_")
}

pub fn jobs_table(jobs: &[JobInfo]) -> Table {
    let mut t = table(&[
        "Job",
        "State",
        "Submitted",
        "Batches",
        "Rows in",
        "Rows out",
        "Error",
    ]);
    for j in jobs {
        t.add_row(vec![
            Cell::new(&j.job_id),
            Cell::new(job_state(j)),
            Cell::new(format_ms(j.submitted_at_ms)),
            num(j.batches),
            num(j.input_rows),
            num(j.output_rows),
            Cell::new(&j.error),
        ]);
    }
    t
}

pub(crate) fn workers_table(workers: &[spate_proto::WorkerInfo]) -> Table {
    let mut t = table(&[
        "Worker",
        "Host",
        "State",
        "Slots used/total",
        "Memory",
        "Last heartbeat",
        "Tasks done",
        "Failed",
    ]);
    for w in workers {
        t.add_row(vec![
            Cell::new(&w.worker_id),
            Cell::new(&w.host),
            Cell::new(w.state().as_str_name().trim_start_matches("WORKER_STATE_")),
            num(format!("{}/{}", w.slots_used, w.slots)),
            num(format!("{} MiB", w.memory_bytes >> 20)),
            Cell::new(format_ms(w.last_heartbeat_ms)),
            num(w.tasks_succeeded),
            num(w.tasks_failed),
        ]);
    }
    t
}
