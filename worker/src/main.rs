//! `worker`: a Spate worker process.

use std::path::PathBuf;

use clap::Parser;

/// Spate worker: connects to the master and runs its tasks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The master's gRPC URL.
    #[arg(long, env = "SPATE_MASTER", default_value = "http://localhost:7077")]
    master: String,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long, env = "SPATE_WORKER_SLOTS")]
    slots: Option<u32>,
    /// Memory the worker may use, in MiB.
    #[arg(long, env = "SPATE_WORKER_MEMORY_MB", default_value_t = 2048)]
    memory_mb: u64,
    /// The shared workspace, mounted at the same place as the master's.
    #[arg(long, env = "SPATE_WORKSPACE", default_value = "workspace")]
    workspace: PathBuf,
    /// This worker's id (default: a random one).
    #[arg(long, env = "SPATE_WORKER_ID")]
    id: Option<String>,
    /// Shared secret, when the master has one.
    #[arg(long, env = "SPATE_SECRET", hide_env_values = true, default_value = "")]
    secret: String,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,datafusion=warn".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = spate_worker::WorkerConfig::new(args.master, args.workspace);
    if let Some(slots) = args.slots {
        config.slots = slots.max(1);
    }
    if let Some(id) = args.id {
        config.worker_id = id;
    }
    config.memory_bytes = args.memory_mb << 20;
    config.secret = args.secret;
    println!(
        "spate worker {}: connecting to {}",
        config.worker_id, config.master_url
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    if let Err(e) = spate_worker::run(config, stopped).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
