//! `driver demo`: Spark's `local[*]` for Spate. One process runs the
//! development Kafka broker, a master with its UI, two workers, the sales
//! generator and a sample job, and prints the job's committed rows as they land.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use spate_engine::Workspace;
use spate_engine::checkpoint::Checkpoint;
use spate_engine::files::{FileFormatKind, committed_batches, read_committed_batch};
use spate_engine::job::{PlanEnv, PlannedJob, SinkSpec, plan_job};
use spate_engine::workspace::SPATE_DIR;
use spate_proto::SubmitJobRequest;
use spate_proto::client_service_client::ClientServiceClient;

use crate::DriverError;
use crate::local::{LocalCluster, LocalKafka, LocalOptions};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// The workspace the cluster shares.
    #[arg(long, env = "SPATE_WORKSPACE", default_value = "workspace")]
    workspace: PathBuf,
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

pub async fn run(args: DemoArgs) -> Result<(), DriverError> {
    let sql = std::fs::read_to_string(&args.job)
        .map_err(|e| DriverError::Usage(format!("cannot read {}: {e}", args.job.display())))?;
    let name = args
        .job
        .file_stem()
        .map_or_else(|| "demo".to_string(), |s| s.to_string_lossy().into_owned());
    let kafka = LocalKafka::dev_with_sales()?;
    let bootstrap = kafka.bootstrap();
    let ws = Workspace::open(&args.workspace)?;
    let env = PlanEnv::new(ws.clone(), bootstrap.clone());
    let planned = plan_job(&env, &sql, &name)
        .await
        .map_err(|e| DriverError::Usage(format!("{}: {e}", args.job.display())))?;
    // Before the master starts, or it would resume the old run.
    forget_previous_run(&ws, &planned).await?;
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

    let mut client = ClientServiceClient::connect(master_url.clone())
        .await
        .map_err(|e| DriverError::Connect {
            url: master_url.clone(),
            message: e.to_string(),
        })?;
    let submitted = client
        .submit_job(SubmitJobRequest {
            sql,
            name,
            origin: args.job.display().to_string(),
            secret: String::new(),
        })
        .await?
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
        "  job                         {} ({})",
        submitted.job_id,
        args.job.display()
    );
    println!("Committed rows appear below as batches commit. Ctrl-C stops the demo.\n");

    let printer = async {
        let mut shown = HashSet::new();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let SinkSpec::Files { dir, format, .. } = &planned.sink
                && let Err(e) = print_new_batches(&ws, dir, *format, &mut shown).await
            {
                eprintln!("cannot read the sink: {e}");
            }
        }
    };
    tokio::select! {
        _ = printer => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("\nstopping the demo");
    cluster.shutdown().await;
    Ok(())
}

/// The demo's Kafka is new on every run, so offsets in an earlier run's
/// checkpoint mean nothing to it: the job, its checkpoint and its output
/// start afresh rather than resume against the wrong offsets.
async fn forget_previous_run(ws: &Workspace, planned: &PlannedJob) -> Result<(), DriverError> {
    let job = &planned.name;
    let checkpoint = Checkpoint::new(ws, job);
    if checkpoint.latest_offsets().await?.is_none() {
        return Ok(());
    }
    checkpoint.delete().await?;
    ws.delete_dir(&format!("{SPATE_DIR}/jobs/{job}")).await?;
    ws.delete_dir(&spate_engine::shuffle::job_dir(job)).await?;
    if let SinkSpec::Files { dir, .. } = &planned.sink {
        ws.delete_dir(dir).await?;
    }
    println!(
        "(a new demo Kafka starts empty: cleared the previous demo run of job {job} and its output)"
    );
    Ok(())
}

async fn print_new_batches(
    ws: &Workspace,
    dir: &str,
    format: FileFormatKind,
    shown: &mut HashSet<u64>,
) -> Result<(), DriverError> {
    for batch in committed_batches(ws, dir).await? {
        if !shown.insert(batch) {
            continue;
        }
        let Some((manifest, rows)) = read_committed_batch(ws, dir, format, batch).await? else {
            continue;
        };
        if manifest.rows == 0 {
            continue;
        }
        println!("batch {batch}: {} rows committed to {dir}/", manifest.rows);
        let sample: Vec<_> = rows
            .first()
            .map(|b| b.slice(0, b.num_rows().min(5)))
            .into_iter()
            .collect();
        if let Ok(table) = pretty_format_batches(&sample) {
            println!("{table}");
        }
        if manifest.rows > 5 {
            println!("... and {} more", manifest.rows - 5);
        }
    }
    Ok(())
}
