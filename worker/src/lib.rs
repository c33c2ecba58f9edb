//! Spate's worker: dials the master, registers, heartbeats, and runs the
//! tasks pushed down its stream, a slot each. A worker whose master goes
//! away reconnects with jittered backoff. A library with a thin `main.rs`,
//! so the driver can embed workers.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rand::Rng;
use spate_engine::state::StateCache;
use spate_engine::task::run_task;
use spate_engine::{EngineError, Workspace, WorkspaceLocation, wire};
use spate_proto::auth::WithSecret;
use spate_proto::dial;
use spate_proto::worker_service_client::WorkerServiceClient;
use spate_proto::{
    Heartbeat, LaunchTask, RegisterWorker, TaskResult, TaskState, TaskUpdate, WorkerMessage,
    master_message, worker_message,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the master at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the master refused this worker: {0}")]
    Refused(String),
    /// A master URL, CA file or secret this worker cannot use.
    #[error("{0}")]
    Config(String),
    #[error("the connection to the master ended: {0}")]
    Disconnected(String),
    #[error(transparent)]
    Engine(#[from] spate_engine::EngineError),
    #[error("cannot start the task threads: {0}")]
    Threads(#[from] std::io::Error),
}

impl From<dial::DialError> for WorkerError {
    fn from(e: dial::DialError) -> Self {
        match e {
            dial::DialError::Config(message) => WorkerError::Config(message),
            dial::DialError::Unreachable { url, cause } => WorkerError::Connect {
                url,
                message: cause,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// e.g. http://master:7077
    pub master_url: String,
    pub worker_id: String,
    /// How this worker is named in the UI.
    pub host: String,
    pub slots: u32,
    pub memory_bytes: u64,
    /// The state cache's limit.
    pub state_memory_bytes: u64,
    pub workspace: WorkspaceLocation,
    pub secret: String,
    /// The CA that signed the master's certificate, for https:// masters.
    pub tls_ca: Option<PathBuf>,
}

impl WorkerConfig {
    pub fn new(master_url: impl Into<String>, workspace: impl Into<WorkspaceLocation>) -> Self {
        let settings = spate_config::settings();
        WorkerConfig {
            master_url: master_url.into(),
            worker_id: format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            host: spate_engine::host_name(),
            slots: settings.worker.slots_or_cores(),
            memory_bytes: settings.worker.memory_mb << 20,
            state_memory_bytes: settings.worker.state_memory_mb << 20,
            workspace: workspace.into(),
            secret: settings.secret.clone(),
            tls_ca: Some(PathBuf::from(&settings.client.tls_ca))
                .filter(|p| !p.as_os_str().is_empty()),
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs the worker until `shutdown` turns true. Connection trouble is
/// retried forever; only a refusal by the master (wrong version or secret) ends it.
pub async fn run(
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    // Tasks compute on threads of their own, so that heartbeats and
    // cancels never wait behind a batch's work.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.slots.max(1) as usize)
        .thread_name("spate-task")
        .enable_all()
        .build()?;
    let ws = Workspace::open(&config.workspace)?;
    ws.probe().await?;
    let env = TaskEnv {
        ws,
        state: Arc::new(StateCache::with_limit(config.state_memory_bytes as usize)),
        runtime: runtime.handle().clone(),
    };
    let ended = serve(&config, &env, &mut shutdown).await;
    runtime.shutdown_background();
    spate_engine::kafka::release_partitions();
    ended
}

/// Sessions with the master, one after the other, until shut down.
async fn serve(
    config: &WorkerConfig,
    env: &TaskEnv,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut connected = false;
        let result = session(config, env, shutdown, &mut connected).await;
        if *shutdown.borrow() {
            return Ok(());
        }
        match result {
            Err(e @ (WorkerError::Refused(_) | WorkerError::Config(_))) => return Err(e),
            Err(e) => tracing::warn!(worker = config.worker_id, "{e}"),
            Ok(()) => {}
        }
        if connected {
            backoff = BACKOFF_MIN;
        }
        // Jitter spreads the reconnects of many workers after a master restart.
        let jitter = rand::rng().random_range(0.5..1.5);
        let wait = backoff.mul_f64(jitter);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = spate_engine::stop_signalled(shutdown) => return Ok(()),
        }
    }
}

/// What every task on this worker shares; it outlives connections, so the
/// state cache survives a master restart.
#[derive(Clone)]
struct TaskEnv {
    ws: Workspace,
    state: Arc<StateCache>,
    /// Where tasks run: apart from the connection's runtime.
    runtime: tokio::runtime::Handle,
}

/// One connection to the master, from registration until it ends.
async fn session(
    config: &WorkerConfig,
    env: &TaskEnv,
    shutdown: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), WorkerError> {
    // A URL, CA file or secret that cannot work will not start to work.
    let endpoint = dial::endpoint(&config.master_url, config.tls_ca.as_deref())?;
    let secret = WithSecret::new(&config.secret).map_err(WorkerError::Config)?;
    let channel = dial::connect(&endpoint).await?;
    let mut client = WorkerServiceClient::with_interceptor(channel, secret);
    let (outbound, outbound_rx) = mpsc::channel::<WorkerMessage>(256);
    outbound
        .send(WorkerMessage {
            kind: Some(worker_message::Kind::Register(RegisterWorker {
                worker_id: config.worker_id.clone(),
                host: config.host.clone(),
                slots: config.slots,
                memory_bytes: config.memory_bytes,
                protocol_version: spate_proto::PROTOCOL_VERSION,
            })),
        })
        .await
        .expect("receiver is alive");
    let mut inbound = match client.session(ReceiverStream::new(outbound_rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Err(match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::FailedPrecondition => {
                    WorkerError::Refused(status.message().to_string())
                }
                _ => WorkerError::Connect {
                    url: config.master_url.clone(),
                    message: status.message().to_string(),
                },
            });
        }
    };
    let mut heartbeat_every = Duration::from_secs(1);
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(heartbeat_every);
    let ended = loop {
        tokio::select! {
            _ = tick.tick() => {
                running.retain(|_, handle| !handle.is_finished());
                let beat = WorkerMessage {
                    kind: Some(worker_message::Kind::Heartbeat(Heartbeat {
                        running_task_ids: running.keys().cloned().collect(),
                    })),
                };
                if outbound.send(beat).await.is_err() {
                    break Err(WorkerError::Disconnected("outbound stream closed".into()));
                }
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => match message.kind {
                    Some(master_message::Kind::Registered(r)) => {
                        *connected = true;
                        tracing::info!(worker = config.worker_id, master = config.master_url, "registered with the master");
                        heartbeat_every = Duration::from_millis(r.heartbeat_interval_ms.max(50));
                        tick = tokio::time::interval(heartbeat_every);
                    }
                    Some(master_message::Kind::LaunchTask(launch)) => {
                        let task_id = launch.task_id.clone();
                        let handle = env.runtime.spawn(execute(env.clone(), launch, outbound.clone()));
                        running.insert(task_id, handle);
                    }
                    Some(master_message::Kind::CancelTask(cancel)) => {
                        // A task that ended already has said so.
                        if let Some(handle) = running.remove(&cancel.task_id).filter(|h| !h.is_finished()) {
                            handle.abort();
                            tracing::info!(worker = config.worker_id, task = cancel.task_id, "task cancelled");
                            let update = TaskUpdate {
                                task_id: cancel.task_id,
                                state: TaskState::Cancelled as i32,
                                result: None,
                                failure: None,
                            };
                            if outbound.send(WorkerMessage { kind: Some(worker_message::Kind::TaskUpdate(update)) }).await.is_err() {
                                break Err(WorkerError::Disconnected("outbound stream closed".into()));
                            }
                        }
                    }
                    None => {}
                },
                Ok(None) => break Err(WorkerError::Disconnected("the master closed the stream".into())),
                Err(status) => break Err(WorkerError::Disconnected(status.message().to_string())),
            },
            _ = spate_engine::stop_signalled(shutdown) => break Ok(()),
        }
    };
    // The master re-runs whatever this worker had when the stream ended.
    for (_, handle) in running {
        handle.abort();
    }
    ended
}

/// Runs one task and reports how it ended, whatever happens: an error is
/// reported with its kind, and a panic (DataFusion or a decoder can panic)
/// is caught and reported as a failure with its message.
async fn execute(env: TaskEnv, launch: LaunchTask, outbound: mpsc::Sender<WorkerMessage>) {
    let task_id = launch.task_id.clone();
    let ran = match wire::task_spec(launch) {
        Ok(spec) => AssertUnwindSafe(run_task(&env.ws, &spec, &env.state))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(EngineError::execution(panicked(&panic)))),
        Err(e) => Err(e),
    };
    let update = match ran {
        Ok(outcome) => TaskUpdate {
            task_id,
            state: TaskState::Succeeded as i32,
            result: Some(TaskResult::from(&outcome)),
            failure: None,
        },
        Err(e) => {
            let e = e.unwrap_datafusion();
            TaskUpdate {
                task_id,
                state: TaskState::Failed as i32,
                result: None,
                failure: Some(wire::failure(e.kind(), e.to_string())),
            }
        }
    };
    let _ = outbound
        .send(WorkerMessage {
            kind: Some(worker_message::Kind::TaskUpdate(update)),
        })
        .await;
}

/// A panic's message, as `std` prints it.
fn panicked(payload: &Box<dyn std::any::Any + Send>) -> String {
    format!(
        "the task panicked: {}",
        spate_engine::panic_message(payload.as_ref())
    )
}
