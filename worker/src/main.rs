//! `worker`: a Spate worker process.

use std::path::PathBuf;

use clap::Parser;
use spate_config::settings;

/// Spate worker: connects to the master and runs its tasks.
///
/// Defaults come from Spate's settings (defaults.toml, SPATE_CONFIG and
/// SPATE_* variables); a flag overrides them.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The master's gRPC URL.
    #[arg(long, env = "SPATE_MASTER", default_value_t = settings().client.master.clone())]
    master: String,
    /// Tasks run at once; 0 means one per core.
    #[arg(long, env = "SPATE_WORKER_SLOTS", default_value_t = settings().worker.slots)]
    slots: u32,
    /// Memory the worker may use, in MiB.
    #[arg(long, env = "SPATE_WORKER_MEMORY_MB", default_value_t = settings().worker.memory_mb)]
    memory_mb: u64,
    /// Memory for operators' state between batches, in MiB; past it the
    /// least recently used partitions are read back from the workspace.
    #[arg(long, env = "SPATE_WORKER_STATE_MEMORY_MB", default_value_t = settings().worker.state_memory_mb)]
    state_memory_mb: u64,
    /// The shared workspace: the master's folder, mounted at the same
    /// place, or its s3://bucket/prefix (with the AWS_* variables).
    #[arg(long, env = "SPATE_WORKSPACE", default_value = settings().workspace.as_str())]
    workspace: spate_engine::WorkspaceLocation,
    /// This worker's id (default: a random one).
    #[arg(long, env = "SPATE_WORKER_ID")]
    id: Option<String>,
    /// Shared secret, when the master has one.
    #[arg(long, env = "SPATE_SECRET", hide_env_values = true, hide_default_value = true,
          default_value_t = settings().secret.clone())]
    secret: String,
    /// The CA certificate (PEM) that signed the master's, for https:// masters.
    #[arg(long, env = "SPATE_CLIENT_TLS_CA", default_value_t = settings().client.tls_ca.clone())]
    tls_ca: String,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,datafusion=warn,object_store=warn".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = spate_worker::WorkerConfig::new(args.master, args.workspace);
    if args.slots > 0 {
        config.slots = args.slots;
    }
    if let Some(id) = args.id {
        config.worker_id = id;
    }
    config.memory_bytes = args.memory_mb << 20;
    config.state_memory_bytes = args.state_memory_mb << 20;
    config.secret = args.secret;
    config.tls_ca = Some(PathBuf::from(args.tls_ca)).filter(|p| !p.as_os_str().is_empty());
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
