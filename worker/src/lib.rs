//! Spate's worker: dials the master, registers, heartbeats, and runs the
//! tasks pushed down its stream, a slot each. A worker whose master goes
//! away reconnects with jittered backoff. A library with a thin `main.rs`,
//! so the driver can embed workers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use spate_engine::state::StateCache;
use spate_engine::task::{TaskSpec, run_task};
use spate_engine::{OffsetRange, Workspace};
use spate_proto::worker_service_client::WorkerServiceClient;
use spate_proto::{
    Heartbeat, LaunchTask, RegisterWorker, StateStats, TaskResult, TaskState, TaskUpdate,
    WorkerMessage, master_message, worker_message,
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
    #[error("the connection to the master ended: {0}")]
    Disconnected(String),
    #[error(transparent)]
    Engine(#[from] spate_engine::EngineError),
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
    pub workspace: PathBuf,
    pub secret: String,
}

impl WorkerConfig {
    pub fn new(master_url: impl Into<String>, workspace: impl Into<PathBuf>) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "localhost".to_string());
        WorkerConfig {
            master_url: master_url.into(),
            worker_id: format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            host,
            slots: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            memory_bytes: 2 << 30,
            workspace: workspace.into(),
            secret: String::new(),
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
    let env = TaskEnv {
        ws: Workspace::open(&config.workspace)?,
        state: Arc::default(),
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut connected = false;
        let result = session(&config, &env, &mut shutdown, &mut connected).await;
        if *shutdown.borrow() {
            return Ok(());
        }
        match result {
            Err(e @ WorkerError::Refused(_)) => return Err(e),
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
            _ = spate_engine::stop_signalled(&mut shutdown) => return Ok(()),
        }
    }
}

/// What every task on this worker shares; it outlives connections, so the
/// state cache survives a master restart.
#[derive(Clone)]
struct TaskEnv {
    ws: Workspace,
    state: Arc<StateCache>,
}

/// One connection to the master, from registration until it ends.
async fn session(
    config: &WorkerConfig,
    env: &TaskEnv,
    shutdown: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Result<(), WorkerError> {
    let mut client = WorkerServiceClient::connect(config.master_url.clone())
        .await
        .map_err(|e| WorkerError::Connect {
            url: config.master_url.clone(),
            message: e.to_string(),
        })?;
    let (outbound, outbound_rx) = mpsc::channel::<WorkerMessage>(256);
    outbound
        .send(WorkerMessage {
            kind: Some(worker_message::Kind::Register(RegisterWorker {
                worker_id: config.worker_id.clone(),
                host: config.host.clone(),
                slots: config.slots,
                memory_bytes: config.memory_bytes,
                protocol_version: spate_proto::PROTOCOL_VERSION,
                secret: config.secret.clone(),
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
                        let handle = tokio::spawn(execute(env.clone(), launch, outbound.clone()));
                        running.insert(task_id, handle);
                    }
                    Some(master_message::Kind::CancelTask(cancel)) => {
                        if let Some(handle) = running.remove(&cancel.task_id) {
                            handle.abort();
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

async fn execute(env: TaskEnv, launch: LaunchTask, outbound: mpsc::Sender<WorkerMessage>) {
    let task_id = launch.task_id.clone();
    let update = match decode_task(launch) {
        Ok(spec) => match run_task(&env.ws, &spec, &env.state).await {
            Ok(outcome) => TaskUpdate {
                task_id,
                state: TaskState::Succeeded as i32,
                error: String::new(),
                result: Some(TaskResult {
                    input_rows: outcome.input_rows,
                    output_rows: outcome.output_rows,
                    output_files: outcome.output_files,
                    duration_ms: outcome.duration_ms,
                    max_event_time_ms: outcome.max_event_time_ms,
                    late_rows: outcome.late_rows,
                    malformed_rows: outcome.malformed_rows,
                    state: Some(StateStats {
                        rows: outcome.state.rows,
                        bytes: outcome.state.bytes,
                        rows_updated: outcome.state.rows_updated,
                        rows_removed: outcome.state.rows_removed,
                    }),
                }),
            },
            Err(e) => failed(task_id, e.unwrap_datafusion().to_string()),
        },
        Err(e) => failed(task_id, e),
    };
    let _ = outbound
        .send(WorkerMessage {
            kind: Some(worker_message::Kind::TaskUpdate(update)),
        })
        .await;
}

fn failed(task_id: String, error: String) -> TaskUpdate {
    TaskUpdate {
        task_id,
        state: TaskState::Failed as i32,
        error,
        result: None,
    }
}

fn decode_task(launch: LaunchTask) -> Result<TaskSpec, String> {
    let sink = serde_json::from_str(&launch.sink).map_err(|e| format!("undecodable sink: {e}"))?;
    Ok(TaskSpec {
        job_id: launch.job_id,
        batch_id: launch.batch_id,
        attempt_id: launch.attempt_id,
        task_index: launch.task_index,
        stage_id: launch.stage_id,
        partition: launch.partition,
        shuffle_inputs: launch
            .shuffle_inputs
            .into_iter()
            .map(|input| (input.stage, input.stems))
            .collect(),
        watermark_ms: launch.watermark_ms,
        plan: launch.plan,
        ranges: launch
            .ranges
            .into_iter()
            .map(|r| OffsetRange {
                topic: r.topic,
                partition: r.partition,
                start: r.start_offset,
                end: r.end_offset,
            })
            .collect(),
        sink,
    })
}
