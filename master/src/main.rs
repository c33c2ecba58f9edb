//! `master`: the Spate master process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Spate master: schedules streaming SQL jobs onto workers; web UI on :8080.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// gRPC address for workers and clients.
    #[arg(long, env = "SPATE_MASTER_BIND", default_value = "0.0.0.0:7077")]
    bind: SocketAddr,
    /// Web UI and REST API address.
    #[arg(long, env = "SPATE_UI_BIND", default_value = "0.0.0.0:8080")]
    ui_bind: SocketAddr,
    /// The shared workspace every worker also uses: a folder all mount at
    /// the same path, or s3://bucket/prefix (with the AWS_* variables).
    #[arg(long, env = "SPATE_WORKSPACE", default_value = "workspace")]
    workspace: spate_engine::WorkspaceLocation,
    /// Seconds without a heartbeat after which a worker is DEAD.
    #[arg(long, env = "SPATE_WORKER_TIMEOUT", default_value_t = 10.0)]
    worker_timeout: f64,
    /// Kafka for tables that name no bootstrap.servers.
    #[arg(long, env = "SPATE_KAFKA_BOOTSTRAP", default_value = "localhost:9092")]
    kafka_bootstrap: String,
    /// Shared secret every worker, client and UI visitor must present
    /// (all but /healthz and /metrics).
    #[arg(long, env = "SPATE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// TLS certificate (PEM, chain first) for gRPC and the UI.
    #[arg(long, env = "SPATE_MASTER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "SPATE_MASTER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Token /metrics asks for (Authorization: Bearer); none: open.
    #[arg(long, env = "SPATE_UI_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
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
    let mut config = spate_master::MasterConfig::new(args.workspace);
    config.grpc_addr = args.bind;
    config.http_addr = args.ui_bind;
    config.heartbeat_timeout = Duration::from_secs_f64(args.worker_timeout.max(0.5));
    config.default_bootstrap_servers = args.kafka_bootstrap;
    config.secret = args.secret.filter(|s| !s.is_empty());
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(spate_master::TlsFiles { cert, key });
    }
    if let Some(token) = args.metrics_token {
        config.metrics_token = Some(token).filter(|t| !t.is_empty());
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let master = match spate_master::start(config).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "spate master: gRPC on {scheme}://{}, web UI on {scheme}://{}",
        master.grpc_addr, master.http_addr
    );
    let _ = tokio::signal::ctrl_c().await;
    master.shutdown().await;
}
