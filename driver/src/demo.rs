//! `driver demo`: Spark's `local[*]` for Spate. One process runs the
//! development Kafka broker, a master with its UI, two workers, the sales
//! generator and a sample job, and prints the job's committed rows as they
//! land (followed through the master's `TailJob`, as `\tail` follows a job).

use std::net::SocketAddr;
use std::path::PathBuf;

use datafusion::arrow::util::pretty::pretty_format_batches;
use spate_proto::{SubmitJobRequest, TailJobRequest};

use crate::DriverError;
use crate::local::{LocalCluster, LocalKafka, LocalOptions};
use crate::repl::{Reply, collect_replies};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The workspace the cluster shares: a folder or s3://bucket/prefix.
    #[arg(long, env = "SPATE_WORKSPACE", default_value = "workspace")]
    workspace: spate_engine::WorkspaceLocation,
    /// The job to run.
    #[arg(long, default_value = "workspace/jobs/sales_filter.sql")]
    job: PathBuf,
    /// The master's gRPC address.
    #[arg(long, default_value = "127.0.0.1:7077")]
    bind: SocketAddr,
    /// The web UI's address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    ui_bind: SocketAddr,
    /// Generated sales records per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    workers: u32,
}

/// Rows of each batch the demo prints; the rest are counted.
const SHOWN_ROWS: usize = 5;

pub async fn run(args: DemoArgs) -> Result<(), DriverError> {
    let sql = std::fs::read_to_string(&args.job)
        .map_err(|e| DriverError::Usage(format!("cannot read {}: {e}", args.job.display())))?;
    let name = args
        .job
        .file_stem()
        .map_or_else(|| "demo".to_string(), |s| s.to_string_lossy().into_owned());
    let kafka = LocalKafka::dev_with_sales()?;
    let bootstrap = kafka.bootstrap();
    let mut cluster = LocalCluster::start(LocalOptions {
        workspace: &args.workspace,
        grpc: args.bind,
        http: args.ui_bind,
        workers: args.workers,
        kafka,
    })
    .await?;
    let master_url = cluster.master_url.clone();
    cluster.generate_sales("sales", args.rate);

    let mut client = crate::connect(&master_url, None, &spate_config::settings().secret).await?;
    // The demo's Kafka is new on every run, so offsets in an earlier run's
    // checkpoint mean nothing to it: the job starts afresh.
    let submitted = client
        .submit_job(SubmitJobRequest {
            sql,
            name,
            fresh: true,
        })
        .await
        .map_err(|s| DriverError::Master(format!("{}: {}", args.job.display(), s.message())))?
        .into_inner();
    println!("Spate demo");
    println!(
        "  Kafka (development broker)  {bootstrap}, topic 'sales' with 4 partitions, {} records/s",
        args.rate
    );
    println!("  master                      {master_url}");
    println!(
        "  web UI                      http://{}",
        cluster.master.http_addr
    );
    println!("  workers                     {}", args.workers);
    println!(
        "  job                         {} ({}), started afresh",
        submitted.job_id,
        args.job.display()
    );
    println!("Committed rows appear below as batches commit. Ctrl-C stops the demo.\n");

    let mut stream = client
        .tail_job(TailJobRequest {
            job_id: submitted.job_id.clone(),
            from_batch: 0,
        })
        .await?
        .into_inner();
    let sink = client
        .list_jobs(spate_proto::ListJobsRequest {})
        .await?
        .into_inner()
        .jobs
        .into_iter()
        .find(|j| j.job_id == submitted.job_id)
        .map_or_else(|| "the sink".to_string(), |j| j.sink);
    let follow = collect_replies(&mut stream, |reply| print_batch(reply, &sink));
    tokio::select! {
        followed = follow => if let Err(e) = followed {
            eprintln!("cannot follow the job: {}", e.message());
        },
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("\nstopping the demo");
    cluster.shutdown().await;
    Ok(())
}

/// One committed batch: its row count and its first rows.
fn print_batch(reply: &Reply, sink: &str) {
    let Some((_, batches)) = &reply.rows else {
        if !reply.end.message.is_empty() {
            println!("{}", reply.end.message);
        }
        return;
    };
    let rows = reply.end.rows;
    println!("{}: {rows} rows committed to {sink}", reply.end.title);
    let sample: Vec<_> = batches
        .first()
        .map(|b| b.slice(0, b.num_rows().min(SHOWN_ROWS)))
        .into_iter()
        .collect();
    if let Ok(table) = pretty_format_batches(&sample) {
        println!("{table}");
    }
    if rows > SHOWN_ROWS as u64 {
        println!("... and {} more", rows - SHOWN_ROWS as u64);
    }
}
