//! Spate's master: membership, the scheduler, one coordinator per job, the
//! job registry and the web UI. A library with a thin `main.rs`, so the
//! driver can embed it.

mod cluster;
mod coordinator;
pub mod error;
mod grpc;
mod jobs;
pub mod progress;
mod query;
mod stages;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use spate_engine::checkpoint::Checkpoint;
use spate_engine::job::{PlanEnv, plan_job};
use spate_engine::kafka::KafkaAdmin;
use spate_engine::{EngineError, Workspace};
use spate_proto::client_service_server::ClientServiceServer;
use spate_proto::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

pub use cluster::{WorkerState, WorkerView};
pub use error::{MasterError, Result};
pub use jobs::{JobDetail, JobState, JobView};

use cluster::Cluster;
use coordinator::Coordinator;
use jobs::{JobRecord, Jobs};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC for workers and clients (Spark's 7077).
    pub grpc_addr: SocketAddr,
    /// Web UI and REST API.
    pub http_addr: SocketAddr,
    pub workspace: PathBuf,
    /// A worker silent this long is DEAD.
    pub heartbeat_timeout: Duration,
    /// What workers are told to use between heartbeats.
    pub heartbeat_interval: Duration,
    /// For Kafka tables that name no `bootstrap.servers`.
    pub default_bootstrap_servers: String,
    /// When set, workers and mutating clients must present it.
    pub secret: Option<String>,
}

impl MasterConfig {
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        MasterConfig {
            grpc_addr: ([0, 0, 0, 0], 7077).into(),
            http_addr: ([0, 0, 0, 0], 8080).into(),
            workspace: workspace.into(),
            heartbeat_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            default_bootstrap_servers: "localhost:9092".to_string(),
            secret: None,
        }
    }
}

/// The master's shared state.
pub struct Master {
    config: MasterConfig,
    ws: Workspace,
    cluster: Arc<Cluster>,
    jobs: Arc<Jobs>,
    started_ms: i64,
    /// One task per running job, aborted at shutdown.
    coordinators: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// A running master; dropping it does not stop it, `shutdown` does.
pub struct MasterHandle {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    master: Arc<Master>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long shutdown waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl MasterHandle {
    /// Stops serving. Running jobs stay RUNNING in the registry, so the next
    /// master resumes them from their checkpoints, as after a crash.
    pub async fn shutdown(self) {
        for coordinator in self
            .master
            .coordinators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            coordinator.abort();
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
        ws,
        config,
        started_ms: spate_engine::now_ms(),
        coordinators: Default::default(),
    });
    master.resume_jobs().await?;
    let (shutdown, mut stopped) = watch::channel(false);
    let mut tasks = Vec::new();

    let grpc = tonic::transport::Server::builder()
        .add_service(WorkerServiceServer::new(grpc::WorkerApi(Arc::clone(
            &master,
        ))))
        .add_service(ClientServiceServer::new(grpc::ClientApi(Arc::clone(
            &master,
        ))));
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
    let mut http_stop = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = spate_engine::stop_signalled(&mut http_stop).await;
        };
        if let Err(e) = axum::serve(http_listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("web UI stopped: {e}");
        }
    }));

    let reaper = Arc::clone(&master);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => reaper.cluster.expire_silent_workers(),
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
    fn check_secret(&self, given: &str) -> std::result::Result<(), tonic::Status> {
        match &self.config.secret {
            Some(secret) if secret != given => Err(tonic::Status::unauthenticated(
                "wrong or missing cluster secret (set SPATE_SECRET to the master's)",
            )),
            _ => Ok(()),
        }
    }

    fn plan_env(&self) -> PlanEnv {
        PlanEnv {
            workspace: self.ws.clone(),
            default_bootstrap_servers: self.config.default_bootstrap_servers.clone(),
            // Spark's default is 200; the cluster's slots are what run at once here.
            shuffle_partitions: self
                .cluster
                .workers()
                .iter()
                .filter(|w| w.state == WorkerState::Alive)
                .map(|w| w.slots as usize)
                .sum::<usize>()
                .max(2),
        }
    }

    /// Plans a job and starts it; a job whose checkpoint exists resumes.
    async fn submit(&self, sql: &str, name: &str) -> Result<(String, bool)> {
        let default_name = if name.is_empty() { "job" } else { name };
        let mut planned = plan_job(&self.plan_env(), sql, default_name).await?;
        let id = planned.name.clone();
        // A job resuming from its checkpoint keeps the checkpoint's shuffle
        // partitions (its state is split by them) and must keep its state's shape.
        let checkpoint = Checkpoint::new(&self.ws, &id);
        let metadata = checkpoint.metadata().await?;
        if let Some(old) = &metadata {
            if let Some(partitions) = old.shuffle_partitions
                && planned.options.shuffle_partitions != Some(partitions)
            {
                let mut env = self.plan_env();
                env.shuffle_partitions = partitions;
                planned = plan_job(&env, sql, default_name).await?;
            }
            if let Some(why) = planned.checkpoint_metadata().incompatible_with(old, &id) {
                return Err(EngineError::plan(why).into());
            }
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || id.is_empty()
        {
            return Err(EngineError::plan(format!(
                "job name '{id}': use letters, digits, '_' and '-' (SET spate.job.name = 'my_job')"
            ))
            .into());
        }
        if self.jobs.state_of(&id).is_some_and(|s| s.is_active()) {
            return Err(EngineError::plan(format!(
                "job '{id}' is already running; stop it first (driver stop {id})"
            ))
            .into());
        }
        // A missing topic is a mistake in the job: refuse it. An unreachable
        // Kafka is weather: accept the job, which waits and says why.
        let source = &planned.source;
        let admin = KafkaAdmin::new(&source.bootstrap_servers, &source.client_options);
        match admin.partition_offsets(&source.topic).await {
            Err(e @ EngineError::UnknownTopic { .. }) => return Err(e.into()),
            Err(e) => tracing::warn!(job = id, "{e}; the job waits for Kafka"),
            Ok(_) => {}
        }
        let resumed = checkpoint.latest_offsets().await?.is_some();
        if metadata.is_none() {
            checkpoint
                .write_metadata(&planned.checkpoint_metadata())
                .await?;
        }
        let record = Jobs::new_record(&id, planned);
        self.start_job(record).await?;
        tracing::info!(job = id, resumed, "job submitted");
        Ok((id, resumed))
    }

    async fn start_job(&self, record: JobRecord) -> Result<()> {
        let totals = Checkpoint::new(&self.ws, &record.id).totals().await?;
        let id = record.id.clone();
        let planned = record.planned.clone();
        let stop = self.jobs.insert(record, totals).await?;
        let coordinator = Coordinator {
            job_id: id,
            planned,
            ws: self.ws.clone(),
            cluster: Arc::clone(&self.cluster),
            jobs: Arc::clone(&self.jobs),
            stop,
        };
        let handle = tokio::spawn(coordinator.run());
        let mut coordinators = self.coordinators.lock().unwrap_or_else(|p| p.into_inner());
        coordinators.retain(|c| !c.is_finished());
        coordinators.push(handle);
        Ok(())
    }

    async fn resume_jobs(&self) -> Result<()> {
        for mut record in self.jobs.load().await? {
            if record.state.is_active() {
                tracing::info!(job = record.id, "resuming job from its checkpoint");
                record.state = JobState::Running;
                self.start_job(record).await?;
            } else {
                let totals = Checkpoint::new(&self.ws, &record.id).totals().await?;
                self.jobs.insert_inactive(record, totals).await?;
            }
        }
        Ok(())
    }
}
