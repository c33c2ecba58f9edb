//! Spate's master: membership, the scheduler, one controller per job, the
//! job registry and the web UI. A library with a thin `main.rs`, so the
//! driver can embed it.

mod cluster;
mod controller;
pub mod error;
mod grpc;
mod jobs;
pub mod progress;
mod query;
mod stages;
mod tls;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use spate_engine::job::{PlanEnv, PlannedJob, plan_job};
use spate_engine::kafka::KafkaAdmin;
use spate_engine::{EngineError, Workspace, WorkspaceLocation};
use spate_proto::auth::RequireSecret;
use spate_proto::client_service_server::ClientServiceServer;
use spate_proto::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

pub use cluster::{WorkerState, WorkerView};
pub use error::{MasterError, Result};
pub use jobs::{JobDetail, JobState, JobView};

use cluster::{Cluster, TaskRunner};
use controller::{JobContext, KafkaOffsets, State, Submitting};
use jobs::{Jobs, Reservation};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC for workers and clients (Spark's 7077).
    pub grpc_addr: SocketAddr,
    /// Web UI and REST API.
    pub http_addr: SocketAddr,
    pub workspace: WorkspaceLocation,
    /// A worker silent this long is DEAD.
    pub heartbeat_timeout: Duration,
    /// What workers are told to use between heartbeats.
    pub heartbeat_interval: Duration,
    /// For Kafka tables that name no `bootstrap.servers`.
    pub default_bootstrap_servers: String,
    /// When set, every gRPC call and UI page but `/healthz` needs it.
    pub secret: Option<String>,
    /// TLS for gRPC and the UI; none: plain text.
    pub tls: Option<TlsFiles>,
    /// When set, `/metrics` needs it (`Authorization: Bearer`).
    pub metrics_token: Option<String>,
    /// What one client may ask of the cluster.
    pub limits: Limits,
}

/// A PEM certificate (chain) and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Bounds against hostile or mistaken clients, each refused with a
/// sentence that names the setting.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest gRPC message the master decodes.
    pub max_request_bytes: usize,
    /// The largest job or statement text.
    pub max_sql_bytes: usize,
    /// Interactive queries running at once.
    pub max_queries: usize,
    /// Jobs with a controller at once.
    pub max_jobs: usize,
}

impl Limits {
    /// Refuses a job or statement text over `max_sql_bytes`.
    pub fn check_sql(&self, what: &str, sql: &str) -> std::result::Result<(), tonic::Status> {
        if sql.len() > self.max_sql_bytes {
            return Err(tonic::Status::invalid_argument(format!(
                "the {what} is {} KiB, over this cluster's limit of {} KiB (master.max_sql_kb)",
                sql.len().div_ceil(1024),
                self.max_sql_bytes / 1024
            )));
        }
        Ok(())
    }
}

impl MasterConfig {
    /// The settings of defaults.toml (and the environment) for a master
    /// of `workspace`.
    pub fn new(workspace: impl Into<WorkspaceLocation>) -> Self {
        let settings = spate_config::settings();
        let addr = |text: &str, fallback: SocketAddr| text.parse().unwrap_or(fallback);
        MasterConfig {
            grpc_addr: addr(&settings.master.bind, ([0, 0, 0, 0], 7077).into()),
            http_addr: addr(&settings.ui.bind, ([0, 0, 0, 0], 8080).into()),
            workspace: workspace.into(),
            heartbeat_timeout: settings.worker.timeout,
            heartbeat_interval: settings.worker.heartbeat_interval,
            default_bootstrap_servers: settings.kafka.bootstrap.clone(),
            secret: Some(settings.secret.clone()).filter(|s| !s.is_empty()),
            tls: TlsFiles::from_settings(&settings.master.tls_cert, &settings.master.tls_key),
            metrics_token: Some(settings.ui.metrics_token.clone()).filter(|s| !s.is_empty()),
            limits: Limits {
                max_request_bytes: settings.master.max_request_mb.max(1) << 20,
                max_sql_bytes: settings.master.max_sql_kb.max(1) << 10,
                max_queries: settings.master.max_queries.max(1),
                max_jobs: settings.master.max_jobs.max(1),
            },
        }
    }
}

impl TlsFiles {
    /// Both paths set: TLS; otherwise none (the master refuses to start
    /// with only one of them, see `start`).
    pub fn from_settings(cert: &str, key: &str) -> Option<TlsFiles> {
        (!cert.is_empty() || !key.is_empty()).then(|| TlsFiles {
            cert: cert.into(),
            key: key.into(),
        })
    }
}

/// The master's shared state.
pub struct Master {
    config: MasterConfig,
    ws: Workspace,
    cluster: Arc<Cluster>,
    jobs: Arc<Jobs>,
    started_ms: i64,
    /// This master process, as the checkpoints it writes name it.
    id: String,
    /// Permits for interactive queries (`master.max_queries`).
    queries: Arc<tokio::sync::Semaphore>,
    /// One task per job with a controller, aborted at shutdown.
    controllers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// A running master; dropping it does not stop it, `shutdown` does.
pub struct MasterHandle {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    master: Arc<Master>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How often the master pings a quiet gRPC peer, and how long it waits
/// for the answer before dropping the connection.
const IDLE_PROBE: Duration = Duration::from_secs(20);

/// How long shutdown waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl MasterHandle {
    /// Stops serving. Running jobs stay RUNNING in the registry, so the next
    /// master resumes them from their checkpoints, as after a crash.
    pub async fn shutdown(self) {
        for controller in self
            .master
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            controller.abort();
        }
        self.master.cluster.disconnect_all();
        let _ = self.shutdown.send(true);
        for mut task in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MasterError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Starts the master: binds both ports, resumes the jobs the workspace
/// records as running, and serves until shut down.
pub async fn start(mut config: MasterConfig) -> Result<MasterHandle> {
    let ws = Workspace::open(&config.workspace)?;
    ws.probe().await?;
    let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
    let grpc_listener = bind(config.grpc_addr).await?;
    let http_listener = bind(config.http_addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    // Port 0 means "any": from here on the config says which one it got.
    config.grpc_addr = grpc_addr;
    config.http_addr = http_addr;
    let master = Arc::new(Master {
        cluster: Arc::new(Cluster::new(config.heartbeat_timeout)),
        jobs: Arc::new(Jobs::new(ws.clone())),
        queries: Arc::new(tokio::sync::Semaphore::new(config.limits.max_queries)),
        ws,
        config,
        started_ms: spate_engine::now_ms(),
        id: master_id(),
        controllers: Default::default(),
    });
    master.resume_jobs().await?;
    let (shutdown, mut stopped) = watch::channel(false);
    let mut tasks = Vec::new();

    let guard = RequireSecret::new(master.config.secret.as_deref());
    let max_request = master.config.limits.max_request_bytes;
    let workers = WorkerServiceServer::new(grpc::WorkerApi(Arc::clone(&master)))
        .max_decoding_message_size(max_request);
    let clients = ClientServiceServer::new(grpc::ClientApi(Arc::clone(&master)))
        .max_decoding_message_size(max_request);
    let mut builder = tonic::transport::Server::builder()
        // A peer that stops answering pings is gone: its streams end.
        .http2_keepalive_interval(Some(IDLE_PROBE))
        .http2_keepalive_timeout(Some(IDLE_PROBE));
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.grpc())?;
    }
    let grpc = builder
        .add_service(InterceptedService::new(workers, guard.clone()))
        .add_service(InterceptedService::new(clients, guard));
    let mut grpc_stop = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let incoming = TcpListenerStream::new(grpc_listener);
        let stop = async move {
            let _ = spate_engine::stop_signalled(&mut grpc_stop).await;
        };
        if let Err(e) = grpc.serve_with_incoming_shutdown(incoming, stop).await {
            tracing::error!("gRPC server stopped: {e}");
        }
    }));

    let app = ui::router(Arc::clone(&master));
    let acceptor = tls.map(|t| t.ui());
    tasks.push(tokio::spawn(ui::serve(
        http_listener,
        app,
        acceptor,
        stopped.clone(),
    )));

    let reaper = Arc::clone(&master);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => reaper.cluster.expire_silent(),
                _ = spate_engine::stop_signalled(&mut stopped) => break,
            }
        }
    }));
    Ok(MasterHandle {
        grpc_addr,
        http_addr,
        master,
        shutdown,
        tasks,
    })
}

impl Master {
    fn plan_env(&self) -> PlanEnv {
        PlanEnv {
            workspace: self.ws.clone(),
            default_bootstrap_servers: self.config.default_bootstrap_servers.clone(),
            // Spark's default is 200; the cluster's slots are what run at once here.
            shuffle_partitions: self.cluster.alive_slots().max(2),
        }
    }

    /// Plans a job and starts it once its controller admitted it; a job
    /// whose checkpoint exists resumes, unless `fresh` asks to forget it.
    async fn submit(&self, sql: &str, name: &str, fresh: bool) -> Result<(String, bool)> {
        let default_name = if name.is_empty() { "job" } else { name };
        let env = self.plan_env();
        let planned = plan_job(&env, sql, default_name).await?;
        let id = planned.name.clone();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(EngineError::plan(format!(
                "job name '{id}': use letters, digits, '_' and '-' (SET spate.job.name = 'my_job')"
            ))
            .into());
        }
        let reservation = self
            .jobs
            .reserve(&id, &planned, Some(self.config.limits.max_jobs))?;
        let (admission, admitted) = oneshot::channel();
        let submitting = Submitting {
            fresh,
            admission: Some(admission),
        };
        self.run_controller(planned, env, reservation, submitting);
        let resumed = admitted.await.map_err(|_| {
            EngineError::internal(format!(
                "job '{id}': its controller ended before it started"
            ))
        })??;
        tracing::info!(job = id, resumed, "job submitted");
        Ok((id, resumed))
    }

    /// Starts a controller for a reserved job, in state `first`.
    fn run_controller(
        &self,
        planned: PlannedJob,
        env: PlanEnv,
        reservation: Reservation,
        first: impl State,
    ) {
        let offsets = KafkaOffsets {
            topics: planned
                .sources
                .iter()
                .map(|s| {
                    let admin = KafkaAdmin::for_source(s);
                    (admin, s.topic.clone())
                })
                .collect(),
        };
        let tasks: Arc<dyn TaskRunner> = Arc::new(Arc::clone(&self.cluster));
        let sink = planned.sink.open(&self.ws, reservation.id());
        let ctx = JobContext::new(
            planned,
            env,
            sink,
            Arc::new(offsets),
            tasks,
            Arc::clone(&self.jobs),
            reservation,
            &self.id,
        );
        let handle = tokio::spawn(async move {
            controller::run(ctx, Box::new(first)).await;
        });
        let mut controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        controllers.retain(|c| !c.is_finished());
        controllers.push(handle);
    }

    /// Jobs the workspace records as running get a controller again; the
    /// others are listed as they ended.
    async fn resume_jobs(&self) -> Result<()> {
        for record in self.jobs.load().await? {
            if record.state.is_active() {
                tracing::info!(job = record.id, "resuming job from its checkpoint");
                // Jobs that ran before a restart resume whatever the limit.
                let reservation = self.jobs.reserve(&record.id, &record.planned, None)?;
                let submitting = Submitting {
                    fresh: false,
                    admission: None,
                };
                self.run_controller(record.planned, self.plan_env(), reservation, submitting);
            } else {
                let totals = spate_engine::checkpoint::Checkpoint::new(&self.ws, &record.id)
                    .totals()
                    .await?;
                self.jobs.insert_inactive(record, totals).await?;
            }
        }
        Ok(())
    }
}

/// This master process: where it runs, its pid, and a random part, so that
/// two masters on one host are told apart.
fn master_id() -> String {
    format!(
        "{}/pid {}/{}",
        spate_engine::host_name(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}
