//! `driver demo`: Spark's `local[*]` for Spate. One process runs the
//! development Kafka broker, a master with its UI, two workers, the sales
//! generator and a sample job, and prints the job's committed rows as they land.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use spate_engine::Workspace;
use spate_engine::checkpoint::Checkpoint;
use spate_engine::files::{FileFormatKind, SinkManifest, committed_batches, manifest_path};
use spate_engine::job::{PlanEnv, PlannedJob, SinkSpec, plan_job};
use spate_engine::kafka::DevBroker;
use spate_engine::workspace::SPATE_DIR;
use spate_proto::SubmitJobRequest;
use spate_proto::client_service_client::ClientServiceClient;

use crate::DriverError;

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
    let broker = DevBroker::start()?;
    broker.create_topic("sales", 4)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let ws = Workspace::open(&args.workspace)?;
    let env = PlanEnv::new(ws.clone(), bootstrap.clone());
    let planned = plan_job(&env, &sql, &name)
        .await
        .map_err(|e| DriverError::Usage(format!("{}: {e}", args.job.display())))?;
    forget_previous_run(&ws, &planned).await?;

    let mut config = spate_master::MasterConfig::new(&args.workspace);
    config.grpc_addr = args.bind;
    config.http_addr = args.ui_bind;
    config.default_bootstrap_servers = bootstrap.clone();
    let master = spate_master::start(config).await?;
    let master_url = format!("http://{}", master.grpc_addr);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 1..=args.workers {
        let mut config = spate_worker::WorkerConfig::new(&master_url, &args.workspace);
        config.worker_id = format!("worker-{i}");
        config.slots = 2;
        let stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            if let Err(e) = spate_worker::run(config, stopped).await {
                eprintln!("worker-{i}: {e}");
            }
        }));
    }
    let generator = {
        let (bootstrap, stopped, rate) = (bootstrap.clone(), stopped.clone(), args.rate);
        tokio::spawn(async move {
            if let Err(e) =
                crate::produce::produce_sales(&bootstrap, "sales", rate, None, None, true, stopped)
                    .await
            {
                eprintln!("sales generator: {e}");
            }
        })
    };

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
    println!("  web UI                      http://{}", master.http_addr);
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
    let _ = stop.send(true);
    let _ = generator.await;
    for w in workers {
        let _ = w.await;
    }
    master.shutdown().await;
    drop(broker);
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
        let Some(manifest) = ws
            .get_json::<SinkManifest>(&manifest_path(dir, batch))
            .await?
        else {
            continue;
        };
        if manifest.files.is_empty() {
            continue;
        }
        let paths: Vec<String> = manifest
            .files
            .iter()
            .map(|f| ws.absolute(f).to_string_lossy().into_owned())
            .collect();
        let ctx = SessionContext::new();
        let frame = match format {
            FileFormatKind::Parquet => ctx.read_parquet(paths, ParquetReadOptions::default()).await,
            FileFormatKind::Json => ctx.read_json(paths, JsonReadOptions::default()).await,
            FileFormatKind::Csv => ctx.read_csv(paths, CsvReadOptions::default()).await,
        }
        .map_err(|e| DriverError::Usage(e.to_string()))?;
        let rows = frame
            .clone()
            .count()
            .await
            .map_err(|e| DriverError::Usage(e.to_string()))?;
        let sample = frame
            .limit(0, Some(5))
            .map_err(|e| DriverError::Usage(e.to_string()))?
            .collect()
            .await
            .map_err(|e| DriverError::Usage(e.to_string()))?;
        println!("batch {batch}: {rows} rows committed to {dir}/");
        if let Ok(table) = pretty_format_batches(&sample) {
            println!("{table}");
        }
        if rows > 5 {
            println!("... and {} more", rows - 5);
        }
    }
    Ok(())
}
