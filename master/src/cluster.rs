//! The master's view of the cluster: workers (membership and liveness) and
//! the task scheduler. Tasks wait in one queue and go to the alive worker
//! with the most free slots, pushed down that worker's stream.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use spate_engine::now_ms;
use spate_engine::task::{TaskOutcome, TaskSpec};
use spate_proto::{
    LaunchTask, MasterMessage, OffsetRange as WireRange, ShuffleInput, master_message,
};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

pub type WorkerSender = mpsc::Sender<Result<MasterMessage, Status>>;

/// How a task attempt ended.
#[derive(Debug)]
pub enum TaskEnd {
    Succeeded(TaskOutcome),
    /// The task's own error; counts toward the job's failure limit.
    Failed(String),
    /// The worker died or disconnected; the task is re-run elsewhere and
    /// this does not count as a failure.
    WorkerLost(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WorkerState {
    Alive,
    Dead,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub host: String,
    pub state: WorkerState,
    pub slots: u32,
    pub slots_used: u32,
    pub memory_bytes: u64,
    pub last_heartbeat_ms: i64,
    pub tasks_succeeded: u64,
    pub tasks_failed: u64,
}

/// A task a worker ran, for the worker page.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub job_id: String,
    pub batch: u64,
    pub started_ms: i64,
    /// Until it ended, as the master saw it.
    pub duration_ms: i64,
    /// SUCCEEDED, FAILED or LOST.
    pub state: &'static str,
    pub input_rows: u64,
    pub error: String,
}

/// How many finished tasks the master remembers per worker.
const RECENT_TASKS: usize = 50;

struct WorkerEntry {
    view: WorkerView,
    recent: VecDeque<TaskRecord>,
    /// Distinguishes this connection from a later one of the same worker.
    connection_id: u64,
    sender: Option<WorkerSender>,
    running: HashSet<String>,
}

struct PendingTask {
    task_id: String,
    spec: TaskSpec,
    reply: oneshot::Sender<TaskEnd>,
}

struct RunningTask {
    worker_id: String,
    job_id: String,
    batch: u64,
    started_ms: i64,
    reply: oneshot::Sender<TaskEnd>,
}

#[derive(Default)]
struct State {
    workers: BTreeMap<String, WorkerEntry>,
    pending: VecDeque<PendingTask>,
    running: HashMap<String, RunningTask>,
    next_connection: u64,
}

/// Workers and the scheduler.
pub struct Cluster {
    state: Mutex<State>,
    heartbeat_timeout: Duration,
}

impl Cluster {
    pub fn new(heartbeat_timeout: Duration) -> Self {
        Cluster {
            state: Mutex::new(State::default()),
            heartbeat_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a worker, or revives a known one; returns its connection id.
    pub fn register(
        &self,
        id: &str,
        host: &str,
        slots: u32,
        memory_bytes: u64,
        sender: WorkerSender,
    ) -> u64 {
        let (connection_id, lost) = {
            let mut state = self.lock();
            state.next_connection += 1;
            let connection_id = state.next_connection;
            let previous = state.workers.remove(id);
            let (succeeded, failed, lost, recent) = match previous {
                Some(p) => (
                    p.view.tasks_succeeded,
                    p.view.tasks_failed,
                    p.running,
                    p.recent,
                ),
                None => (0, 0, HashSet::new(), VecDeque::new()),
            };
            state.workers.insert(
                id.to_string(),
                WorkerEntry {
                    view: WorkerView {
                        id: id.to_string(),
                        host: host.to_string(),
                        state: WorkerState::Alive,
                        slots,
                        slots_used: 0,
                        memory_bytes,
                        last_heartbeat_ms: now_ms(),
                        tasks_succeeded: succeeded,
                        tasks_failed: failed,
                    },
                    connection_id,
                    sender: Some(sender),
                    running: HashSet::new(),
                    recent,
                },
            );
            let lost: Vec<RunningTask> = lost
                .iter()
                .filter_map(|t| state.running.remove(t))
                .collect();
            (connection_id, lost)
        };
        for task in lost {
            let _ = task
                .reply
                .send(TaskEnd::WorkerLost(format!("worker {id} reconnected")));
        }
        self.schedule();
        connection_id
    }

    pub fn heartbeat(&self, id: &str) {
        if let Some(w) = self.lock().workers.get_mut(id) {
            w.view.last_heartbeat_ms = now_ms();
        }
    }

    /// The worker's stream closed or it timed out: it is DEAD and its tasks
    /// are handed back to their coordinators for a re-run.
    pub fn worker_lost(&self, id: &str, connection_id: Option<u64>, why: &str) {
        let lost: Vec<RunningTask> = {
            let mut state = self.lock();
            let Some(worker) = state.workers.get_mut(id) else {
                return;
            };
            if connection_id.is_some_and(|c| c != worker.connection_id)
                || worker.view.state == WorkerState::Dead
            {
                return;
            }
            tracing::warn!(worker = id, "worker lost: {why}");
            worker.view.state = WorkerState::Dead;
            worker.view.slots_used = 0;
            worker.sender = None;
            let tasks: Vec<String> = worker.running.drain().collect();
            let lost: Vec<(String, RunningTask)> = tasks
                .into_iter()
                .filter_map(|t| state.running.remove(&t).map(|r| (t, r)))
                .collect();
            let worker = state.workers.get_mut(id).expect("worker exists");
            let end = TaskEnd::WorkerLost(why.to_string());
            for (task_id, running) in &lost {
                remember(worker, task_id, running, &end);
            }
            lost.into_iter().map(|(_, r)| r).collect()
        };
        for task in lost {
            let _ = task
                .reply
                .send(TaskEnd::WorkerLost(format!("worker {id} lost: {why}")));
        }
        self.schedule();
    }

    /// Marks workers silent for longer than the timeout as DEAD.
    pub fn expire_silent_workers(&self) {
        let deadline = now_ms() - self.heartbeat_timeout.as_millis() as i64;
        let silent: Vec<String> = self
            .lock()
            .workers
            .values()
            .filter(|w| w.view.state == WorkerState::Alive && w.view.last_heartbeat_ms < deadline)
            .map(|w| w.view.id.clone())
            .collect();
        for id in silent {
            let why = format!(
                "no heartbeat for {} s",
                self.heartbeat_timeout.as_secs_f32()
            );
            self.worker_lost(&id, None, &why);
        }
    }

    /// Queues a task; the receiver learns how it ended.
    pub fn submit(&self, spec: TaskSpec) -> oneshot::Receiver<TaskEnd> {
        let (reply, ended) = oneshot::channel();
        let task_id = format!(
            "{}-{}-{}-{}",
            spec.job_id, spec.batch_id, spec.task_index, spec.attempt_id
        );
        self.lock().pending.push_back(PendingTask {
            task_id,
            spec,
            reply,
        });
        self.schedule();
        ended
    }

    /// A worker reported the end of a task.
    pub fn task_ended(&self, worker_id: &str, task_id: &str, end: TaskEnd) {
        let running = {
            let mut state = self.lock();
            let Some(running) = state.running.remove(task_id) else {
                return;
            };
            if let Some(w) = state.workers.get_mut(&running.worker_id) {
                w.running.remove(task_id);
                w.view.slots_used = w.running.len() as u32;
                match end {
                    TaskEnd::Succeeded(_) => w.view.tasks_succeeded += 1,
                    _ => w.view.tasks_failed += 1,
                }
                remember(w, task_id, &running, &end);
            }
            if running.worker_id != worker_id {
                tracing::warn!(
                    task_id,
                    worker_id,
                    "task update from a worker that does not run it"
                );
            }
            running
        };
        let _ = running.reply.send(end);
        self.schedule();
    }

    /// Hands queued tasks to workers with free slots.
    pub fn schedule(&self) {
        let mut state = self.lock();
        while let Some(front) = state.pending.front() {
            if front.reply.is_closed() {
                state.pending.pop_front();
                continue;
            }
            let target = state
                .workers
                .values()
                .filter(|w| w.view.state == WorkerState::Alive && w.sender.is_some())
                .filter(|w| w.view.slots_used < w.view.slots)
                .max_by_key(|w| {
                    (
                        w.view.slots - w.view.slots_used,
                        std::cmp::Reverse(w.view.id.clone()),
                    )
                })
                .map(|w| w.view.id.clone());
            let Some(worker_id) = target else { break };
            let task = state.pending.pop_front().expect("front exists");
            let worker = state.workers.get_mut(&worker_id).expect("worker exists");
            let message = launch_message(&task.task_id, &task.spec);
            let sent = worker
                .sender
                .as_ref()
                .is_some_and(|s| s.try_send(Ok(message)).is_ok());
            if !sent {
                // The stream is gone or full; the worker will be reaped, retry elsewhere.
                worker.sender = None;
                state.pending.push_front(task);
                continue;
            }
            worker.running.insert(task.task_id.clone());
            worker.view.slots_used = worker.running.len() as u32;
            state.running.insert(
                task.task_id,
                RunningTask {
                    worker_id,
                    job_id: task.spec.job_id,
                    batch: task.spec.batch_id,
                    started_ms: now_ms(),
                    reply: task.reply,
                },
            );
        }
    }

    /// A worker with the tasks it runs and the ones it ran lately, newest first.
    pub fn worker(&self, id: &str) -> Option<(WorkerView, Vec<String>, Vec<TaskRecord>)> {
        let state = self.lock();
        let w = state.workers.get(id)?;
        let mut running: Vec<String> = w.running.iter().cloned().collect();
        running.sort();
        Some((
            w.view.clone(),
            running,
            w.recent.iter().rev().cloned().collect(),
        ))
    }

    /// Ends every worker's stream (the master is shutting down); workers
    /// reconnect to whichever master comes next.
    pub fn disconnect_all(&self) {
        for worker in self.lock().workers.values_mut() {
            worker.sender = None;
        }
    }

    pub fn workers(&self) -> Vec<WorkerView> {
        self.lock()
            .workers
            .values()
            .map(|w| w.view.clone())
            .collect()
    }
}

fn launch_message(task_id: &str, spec: &TaskSpec) -> MasterMessage {
    MasterMessage {
        kind: Some(master_message::Kind::LaunchTask(LaunchTask {
            task_id: task_id.to_string(),
            job_id: spec.job_id.clone(),
            batch_id: spec.batch_id,
            attempt_id: spec.attempt_id.clone(),
            plan: spec.plan.clone(),
            ranges: spec
                .ranges
                .iter()
                .map(|r| WireRange {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    start_offset: r.start,
                    end_offset: r.end,
                })
                .collect(),
            sink: serde_json::to_string(&spec.sink).expect("sink spec serializes"),
            task_index: spec.task_index,
            stage_id: spec.stage_id,
            partition: spec.partition,
            shuffle_inputs: spec
                .shuffle_inputs
                .iter()
                .map(|(stage, stems)| ShuffleInput {
                    stage: *stage,
                    stems: stems.clone(),
                })
                .collect(),
            watermark_ms: spec.watermark_ms,
        })),
    }
}

fn remember(worker: &mut WorkerEntry, task_id: &str, running: &RunningTask, end: &TaskEnd) {
    let (state, input_rows, error) = match end {
        TaskEnd::Succeeded(o) => ("SUCCEEDED", o.input_rows, String::new()),
        TaskEnd::Failed(e) => ("FAILED", 0, e.clone()),
        TaskEnd::WorkerLost(e) => ("LOST", 0, e.clone()),
    };
    if worker.recent.len() == RECENT_TASKS {
        worker.recent.pop_front();
    }
    worker.recent.push_back(TaskRecord {
        task_id: task_id.to_string(),
        job_id: running.job_id.clone(),
        batch: running.batch,
        started_ms: running.started_ms,
        duration_ms: now_ms() - running.started_ms,
        state,
        input_rows,
        error,
    });
}
