//! The master's view of the cluster: workers (membership and liveness) and
//! the task scheduler. Tasks wait in one queue and go to the alive worker
//! with the most free slots, pushed down that worker's stream; a task goes
//! back to the worker that last ran its job's stage and partition when that
//! worker has a slot free, so that state it keeps in memory is used again.
//!
//! Every launched task ends, whatever happens to it: its worker reports
//! it; or the worker dies or disconnects (lost); or the worker's
//! heartbeats stop listing it for longer than the timeout (lost); or the
//! handle its caller holds is dropped, which cancels it on the worker.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use spate_engine::task::{TaskOutcome, TaskSpec};
use spate_engine::{ErrorKind, now_ms, wire};
use spate_proto::{CancelTask, MasterMessage, master_message};
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

pub type WorkerSender = mpsc::Sender<Result<MasterMessage, Status>>;

/// Why a task attempt failed, as its worker said.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    pub kind: ErrorKind,
    pub message: String,
    /// Whether running it again may succeed.
    pub retryable: bool,
    /// Whether it counts toward the job's failure limit.
    pub count_to_failures: bool,
}

/// How a task attempt ended.
#[derive(Debug)]
pub enum TaskEnd {
    Succeeded(TaskOutcome),
    /// The task's own error.
    Failed(TaskFailure),
    /// Its worker died, disconnected or forgot it; the task runs again
    /// elsewhere and this does not count as a failure.
    Lost(String),
    /// Stopped by a cancel.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WorkerState {
    Alive,
    Dead,
}

impl WorkerState {
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Alive => "ALIVE",
            WorkerState::Dead => "DEAD",
        }
    }

    pub fn wire(self) -> spate_proto::WorkerState {
        match self {
            WorkerState::Alive => spate_proto::WorkerState::Alive,
            WorkerState::Dead => spate_proto::WorkerState::Dead,
        }
    }
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
    /// SUCCEEDED, FAILED, LOST or CANCELLED.
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
    /// Tasks launched there and not yet ended.
    running: HashSet<String>,
    /// Tasks its last heartbeat listed that the master does not know; one
    /// listed again by the next heartbeat is cancelled.
    unknown: HashSet<String>,
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
    /// Gone once the caller cancelled the task.
    reply: Option<oneshot::Sender<TaskEnd>>,
    /// Since when the worker's heartbeats do not list it.
    missing_since_ms: Option<i64>,
}

#[derive(Default)]
struct State {
    workers: BTreeMap<String, WorkerEntry>,
    pending: VecDeque<PendingTask>,
    running: HashMap<String, RunningTask>,
    next_connection: u64,
    /// Where each job's stage and partition ran last, and when (a count
    /// of launches): bounded to the most recent `PLACEMENTS_KEPT`.
    last_ran: HashMap<Placement, (String, u64)>,
    launches: u64,
}

/// Waiting tasks looked at for one whose last worker is free.
const LOCALITY_LOOKAHEAD: usize = 256;

/// Placements remembered: a running job's come back every batch, so only
/// those of jobs that ended (and one-off queries) are forgotten.
const PLACEMENTS_KEPT: usize = 10_000;

/// What a task does, as far as where it runs is concerned: the same
/// stage and partition of a job, batch after batch. A task reading Kafka
/// is placed by the Kafka partition it reads, whose queue its worker keeps
/// assigned and prefetching between batches; its index shifts when other
/// partitions have nothing new.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Placement {
    job_id: String,
    stage_id: u32,
    task_index: u32,
    partition: u32,
    kafka_partition: Option<(String, i32)>,
}

impl Placement {
    fn of(spec: &TaskSpec) -> Self {
        let kafka_partition = spec.ranges.first().map(|r| (r.topic.clone(), r.partition));
        Placement {
            job_id: spec.job_id.clone(),
            stage_id: spec.stage_id,
            task_index: if kafka_partition.is_some() {
                0
            } else {
                spec.task_index
            },
            partition: spec.partition,
            kafka_partition,
        }
    }
}

/// Workers and the scheduler.
pub struct Cluster {
    state: Mutex<State>,
    heartbeat_timeout: Duration,
}

/// Where a batch's tasks run: the cluster's workers (or, in the
/// controller's unit tests, this process).
pub trait TaskRunner: Send + Sync {
    /// Queues a task. The handle resolves to how it ended; dropping it
    /// before then cancels the task.
    fn launch(&self, spec: TaskSpec) -> TaskHandle;

    /// Tasks of `job` still on a worker, including cancelled ones that
    /// have not left it yet.
    fn tasks_in_flight(&self, job: &str) -> usize;

    /// Tasks that can run at once: a batch's source stage has no more.
    fn slots(&self) -> usize;
}

/// A launched task: a future of how it ended that cancels the task when
/// dropped first.
pub struct TaskHandle {
    ended: oneshot::Receiver<TaskEnd>,
    cancel: Option<Box<dyn FnOnce() + Send>>,
}

impl TaskHandle {
    pub fn new(ended: oneshot::Receiver<TaskEnd>, cancel: Box<dyn FnOnce() + Send>) -> Self {
        TaskHandle {
            ended,
            cancel: Some(cancel),
        }
    }
}

impl Future for TaskHandle {
    type Output = TaskEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TaskEnd> {
        let ended = match Pin::new(&mut self.ended).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(end)) => end,
            Poll::Ready(Err(_)) => TaskEnd::Lost("the scheduler dropped the task".to_string()),
        };
        // It ended: nothing is left to cancel.
        self.cancel = None;
        Poll::Ready(ended)
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

impl TaskRunner for Arc<Cluster> {
    fn launch(&self, spec: TaskSpec) -> TaskHandle {
        let task_id = format!(
            "{}-{}-{}-{}-{}",
            spec.job_id, spec.batch_id, spec.stage_id, spec.task_index, spec.attempt_id
        );
        let ended = self.submit(task_id.clone(), spec);
        let cluster = Arc::clone(self);
        TaskHandle::new(ended, Box::new(move || cluster.cancel(&task_id)))
    }

    fn tasks_in_flight(&self, job: &str) -> usize {
        let state = self.lock();
        state.running.values().filter(|t| t.job_id == job).count()
            + state
                .pending
                .iter()
                .filter(|t| t.spec.job_id == job)
                .count()
    }

    fn slots(&self) -> usize {
        self.alive_slots()
    }
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
                    unknown: HashSet::new(),
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
            reply(task, TaskEnd::Lost(format!("worker {id} reconnected")));
        }
        self.schedule();
        connection_id
    }

    /// Any message of a worker's is a sign of life.
    pub fn heartbeat_seen(&self, id: &str) {
        if let Some(w) = self.lock().workers.get_mut(id) {
            w.view.last_heartbeat_ms = now_ms();
        }
    }

    /// A worker's heartbeat: it lives, and it runs `running`. Tasks the
    /// master launched there and the list lacks start their timeout;
    /// tasks the list has and the master does not know are cancelled when
    /// two heartbeats in a row list them (the first may cross an update).
    pub fn heartbeat(&self, id: &str, running: &[String]) {
        let now = now_ms();
        let mut state = self.lock();
        let State {
            workers,
            running: tasks,
            ..
        } = &mut *state;
        let Some(worker) = workers.get_mut(id) else {
            return;
        };
        worker.view.last_heartbeat_ms = now;
        let listed: HashSet<&String> = running.iter().collect();
        for task_id in &worker.running {
            if let Some(task) = tasks.get_mut(task_id) {
                if listed.contains(task_id) {
                    task.missing_since_ms = None;
                } else {
                    task.missing_since_ms.get_or_insert(now);
                }
            }
        }
        let unknown: HashSet<String> = running
            .iter()
            .filter(|t| !worker.running.contains(*t))
            .cloned()
            .collect();
        let stale: Vec<String> = unknown.intersection(&worker.unknown).cloned().collect();
        worker.unknown = unknown;
        for task_id in stale {
            tracing::info!(
                worker = id,
                task = task_id,
                "cancelling a task this master did not launch"
            );
            send_cancel(worker, &task_id);
        }
    }

    /// The worker's stream closed or it timed out: it is DEAD and its tasks
    /// are handed back to their callers for a re-run.
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
            for (task_id, running) in &lost {
                remember(worker, task_id, running, "LOST", 0, why);
            }
            lost.into_iter().map(|(_, r)| r).collect()
        };
        for task in lost {
            reply(task, TaskEnd::Lost(format!("worker {id} lost: {why}")));
        }
        self.schedule();
    }

    /// Marks workers silent for longer than the timeout as DEAD, and
    /// takes back tasks their workers stopped listing that long ago.
    pub fn expire_silent(&self) {
        let timeout_ms = self.heartbeat_timeout.as_millis() as i64;
        let deadline = now_ms() - timeout_ms;
        let silent: Vec<String> = self
            .lock()
            .workers
            .values()
            .filter(|w| w.view.state == WorkerState::Alive && w.view.last_heartbeat_ms < deadline)
            .map(|w| w.view.id.clone())
            .collect();
        let seconds = self.heartbeat_timeout.as_secs_f32();
        for id in silent {
            self.worker_lost(&id, None, &format!("no heartbeat for {seconds} s"));
        }
        let forgotten: Vec<String> = self
            .lock()
            .running
            .iter()
            .filter(|(_, t)| t.missing_since_ms.is_some_and(|since| since < deadline))
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in forgotten {
            let why = format!("its worker has not listed it in heartbeats for {seconds} s");
            self.end(&task_id, TaskEnd::Lost(why.clone()), "LOST", &why);
        }
    }

    /// Queues a task; the receiver learns how it ended.
    fn submit(&self, task_id: String, spec: TaskSpec) -> oneshot::Receiver<TaskEnd> {
        let (reply, ended) = oneshot::channel();
        self.lock().pending.push_back(PendingTask {
            task_id,
            spec,
            reply,
        });
        self.schedule();
        ended
    }

    /// Cancels a task: a queued one never starts; a running one is
    /// stopped on its worker, whose answer frees the slot.
    pub fn cancel(&self, task_id: &str) {
        let mut state = self.lock();
        state.pending.retain(|t| t.task_id != task_id);
        let State {
            workers, running, ..
        } = &mut *state;
        let Some(task) = running.get_mut(task_id) else {
            return;
        };
        task.reply = None;
        if let Some(worker) = workers.get_mut(&task.worker_id) {
            send_cancel(worker, task_id);
        }
    }

    /// A worker reported the end of a task.
    pub fn task_ended(&self, worker_id: &str, task_id: &str, end: TaskEnd) {
        let known = self
            .lock()
            .running
            .get(task_id)
            .is_some_and(|t| t.worker_id == worker_id);
        if !known {
            // Taken back already (its worker was thought lost), or another worker's.
            return;
        }
        let (state, error) = match &end {
            TaskEnd::Succeeded(_) => ("SUCCEEDED", String::new()),
            TaskEnd::Failed(f) => ("FAILED", f.message.clone()),
            TaskEnd::Lost(why) => ("LOST", why.clone()),
            TaskEnd::Cancelled => ("CANCELLED", String::new()),
        };
        self.end(task_id, end, state, &error);
    }

    /// Ends a running task: frees its slot, remembers it, tells its caller.
    fn end(&self, task_id: &str, end: TaskEnd, state_name: &'static str, error: &str) {
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
                    TaskEnd::Failed(_) => w.view.tasks_failed += 1,
                    TaskEnd::Lost(_) | TaskEnd::Cancelled => {}
                }
                let input_rows = match &end {
                    TaskEnd::Succeeded(o) => o.input_rows,
                    _ => 0,
                };
                remember(w, task_id, &running, state_name, input_rows, error);
            }
            running
        };
        reply(running, end);
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
            let free = |w: &&WorkerEntry| {
                w.view.state == WorkerState::Alive
                    && w.sender.is_some()
                    && w.view.slots_used < w.view.slots
            };
            // A waiting task whose last worker has a slot free goes first,
            // so that state and Kafka queues are used where they are kept;
            // otherwise the oldest task goes to the freest worker.
            let local = state
                .pending
                .iter()
                .take(LOCALITY_LOOKAHEAD)
                .enumerate()
                .filter(|(_, t)| !t.reply.is_closed())
                .find_map(|(i, t)| {
                    state
                        .last_ran
                        .get(&Placement::of(&t.spec))
                        .and_then(|(id, _)| state.workers.get(id))
                        .filter(free)
                        .map(|w| (i, w.view.id.clone()))
                });
            let (index, worker_id) = match local {
                Some(local) => local,
                None => {
                    let freest = state.workers.values().filter(free).max_by_key(|w| {
                        (
                            w.view.slots - w.view.slots_used,
                            std::cmp::Reverse(w.view.id.clone()),
                        )
                    });
                    let Some(worker) = freest else { break };
                    (0, worker.view.id.clone())
                }
            };
            let task = state.pending.remove(index).expect("index is in the queue");
            let placement = Placement::of(&task.spec);
            let worker = state.workers.get_mut(&worker_id).expect("worker exists");
            let message = MasterMessage {
                kind: Some(master_message::Kind::LaunchTask(wire::launch_task(
                    &task.task_id,
                    &task.spec,
                ))),
            };
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
            state.launches += 1;
            let launch = state.launches;
            state
                .last_ran
                .insert(placement, (worker_id.clone(), launch));
            if state.last_ran.len() > PLACEMENTS_KEPT {
                let oldest_kept = launch - (PLACEMENTS_KEPT / 2) as u64;
                state.last_ran.retain(|_, (_, at)| *at > oldest_kept);
            }
            state.running.insert(
                task.task_id,
                RunningTask {
                    worker_id,
                    job_id: task.spec.job_id,
                    batch: task.spec.batch_id,
                    started_ms: now_ms(),
                    reply: Some(task.reply),
                    missing_since_ms: None,
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

    /// Slots of the alive workers.
    pub fn alive_slots(&self) -> usize {
        self.lock()
            .workers
            .values()
            .filter(|w| w.view.state == WorkerState::Alive)
            .map(|w| w.view.slots as usize)
            .sum()
    }
}

fn send_cancel(worker: &WorkerEntry, task_id: &str) {
    let message = MasterMessage {
        kind: Some(master_message::Kind::CancelTask(CancelTask {
            task_id: task_id.to_string(),
        })),
    };
    if let Some(sender) = &worker.sender {
        // A full stream means a worker about to be reaped, which ends the task anyway.
        let _ = sender.try_send(Ok(message));
    }
}

fn reply(task: RunningTask, end: TaskEnd) {
    if let Some(reply) = task.reply {
        let _ = reply.send(end);
    }
}

fn remember(
    worker: &mut WorkerEntry,
    task_id: &str,
    running: &RunningTask,
    state: &'static str,
    input_rows: u64,
    error: &str,
) {
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
        error: error.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use spate_engine::sink::SinkSpec;

    use super::*;

    fn spec(task_index: u32) -> TaskSpec {
        TaskSpec {
            job_id: "j".into(),
            batch_id: 0,
            attempt_id: format!("a{task_index}"),
            stage_id: 1,
            task_index,
            plan: Vec::new(),
            ranges: Vec::new(),
            partition: 0,
            shuffle_inputs: Vec::new(),
            watermark_ms: None,
            sink: SinkSpec::Results { dir: "r".into() },
        }
    }

    /// The next message the master pushed down the worker's stream.
    async fn pushed(
        stream: &mut mpsc::Receiver<Result<MasterMessage, Status>>,
    ) -> master_message::Kind {
        stream.recv().await.unwrap().unwrap().kind.unwrap()
    }

    type WorkerStream = mpsc::Receiver<Result<MasterMessage, Status>>;

    /// A cluster of workers a and b with `slots` each, and their streams.
    fn two_workers(slots: u32) -> (Arc<Cluster>, WorkerStream, WorkerStream) {
        let cluster = Arc::new(Cluster::new(Duration::from_secs(10)));
        let (a, to_a) = mpsc::channel(16);
        let (b, to_b) = mpsc::channel(16);
        cluster.register("a", "host", slots, 0, a);
        cluster.register("b", "host", slots, 0, b);
        (cluster, to_a, to_b)
    }

    #[tokio::test]
    async fn a_partition_goes_back_to_the_worker_that_ran_it_when_it_has_a_slot() {
        let (cluster, mut to_a, mut to_b) = two_workers(2);
        let run = |cluster: &Arc<Cluster>, partition: u32| {
            let mut task = spec(partition);
            task.partition = partition;
            cluster.launch(task)
        };
        // Batch 1: partition 0 to a (most free slots, first by id), 1 to b.
        let _p0 = run(&cluster, 0);
        let _p1 = run(&cluster, 1);
        let (master_message::Kind::LaunchTask(t0), master_message::Kind::LaunchTask(t1)) =
            (pushed(&mut to_a).await, pushed(&mut to_b).await)
        else {
            panic!("expected launches");
        };
        let done = || TaskEnd::Succeeded(TaskOutcome::default());
        cluster.task_ended("a", &t0.task_id, done());
        cluster.task_ended("b", &t1.task_id, done());
        // Batch 2, submitted the other way round: each partition goes back
        // to its worker, though a has as many free slots as b.
        let _p1 = run(&cluster, 1);
        let _p0 = run(&cluster, 0);
        let (master_message::Kind::LaunchTask(again0), master_message::Kind::LaunchTask(again1)) =
            (pushed(&mut to_a).await, pushed(&mut to_b).await)
        else {
            panic!("expected launches");
        };
        assert_eq!((again0.task_index, again1.task_index), (0, 1));
        // Its worker full, a partition runs elsewhere rather than wait.
        cluster.task_ended("b", &again1.task_id, done());
        let _extra = [run(&cluster, 7), run(&cluster, 8)];
        let index = |kind| match kind {
            master_message::Kind::LaunchTask(launch) => launch.task_index,
            other => panic!("expected a launch, got {other:?}"),
        };
        assert_eq!(index(pushed(&mut to_b).await), 7);
        assert_eq!(index(pushed(&mut to_a).await), 8);
        let _p0 = run(&cluster, 0);
        assert_eq!(index(pushed(&mut to_b).await), 0);
    }

    #[tokio::test]
    async fn a_kafka_partition_waits_for_its_worker_while_another_task_can_go() {
        let (cluster, mut to_a, mut to_b) = two_workers(1);
        // A source task's index is its place among the partitions with new
        // records, which shifts from batch to batch.
        let read = |cluster: &Arc<Cluster>, task_index: u32, kafka_partition: i32| {
            let mut task = spec(task_index);
            task.ranges = vec![spate_engine::OffsetRange {
                topic: "events".into(),
                partition: kafka_partition,
                start: 0,
                end: 10,
            }];
            cluster.launch(task)
        };
        let launched = |kind| match kind {
            master_message::Kind::LaunchTask(launch) => launch,
            other => panic!("expected a launch, got {other:?}"),
        };
        let done = || TaskEnd::Succeeded(TaskOutcome::default());
        let _p0 = read(&cluster, 0, 0);
        let _p1 = read(&cluster, 1, 1);
        let (on_a, on_b) = (
            launched(pushed(&mut to_a).await),
            launched(pushed(&mut to_b).await),
        );
        cluster.task_ended("a", &on_a.task_id, done());
        cluster.task_ended("b", &on_b.task_id, done());
        // Both busy, the next batch's tasks wait. When b frees a slot,
        // partition 1, behind partition 0 in the queue, takes it; partition
        // 0 waits for a.
        let _busy_a = cluster.launch(spec(9));
        let busy_a = launched(pushed(&mut to_a).await);
        let _busy_b = cluster.launch(spec(10));
        let busy_b = launched(pushed(&mut to_b).await);
        let _p0 = read(&cluster, 1, 0);
        let _p1 = read(&cluster, 0, 1);
        cluster.task_ended("b", &busy_b.task_id, done());
        assert_eq!(launched(pushed(&mut to_b).await).ranges[0].partition, 1);
        assert!(to_a.try_recv().is_err(), "a has no slot free");
        cluster.task_ended("a", &busy_a.task_id, done());
        assert_eq!(launched(pushed(&mut to_a).await).ranges[0].partition, 0);
    }

    #[tokio::test]
    async fn heartbeats_reconcile_tasks_and_a_dropped_handle_cancels() {
        let timeout = Duration::from_millis(100);
        let cluster = Arc::new(Cluster::new(timeout));
        let (sender, mut stream) = mpsc::channel(16);
        cluster.register("w", "host", 2, 0, sender);

        // A task the worker stops listing is lost once the timeout passes.
        let forgotten = cluster.launch(spec(0));
        let master_message::Kind::LaunchTask(launch) = pushed(&mut stream).await else {
            panic!("expected a launch");
        };
        cluster.heartbeat("w", std::slice::from_ref(&launch.task_id));
        cluster.heartbeat("w", &[]);
        tokio::time::sleep(timeout + Duration::from_millis(50)).await;
        cluster.heartbeat("w", &[]);
        cluster.expire_silent();
        match forgotten.await {
            TaskEnd::Lost(why) => assert!(why.contains("not listed it in heartbeats"), "{why}"),
            other => panic!("expected a lost task, got {other:?}"),
        }
        assert_eq!(cluster.workers()[0].slots_used, 0);
        assert_eq!(cluster.workers()[0].state, WorkerState::Alive);

        // A task the master does not know is cancelled at its second listing.
        let ghost = vec!["ghost".to_string()];
        cluster.heartbeat("w", &ghost);
        assert!(
            stream.try_recv().is_err(),
            "one listing may cross an update"
        );
        cluster.heartbeat("w", &ghost);
        let master_message::Kind::CancelTask(cancel) = pushed(&mut stream).await else {
            panic!("expected a cancel");
        };
        assert_eq!(cancel.task_id, "ghost");

        // Dropping a handle cancels its task; the slot frees once the worker says so.
        let dropped = cluster.launch(spec(1));
        let master_message::Kind::LaunchTask(launch) = pushed(&mut stream).await else {
            panic!("expected a launch");
        };
        drop(dropped);
        let master_message::Kind::CancelTask(cancel) = pushed(&mut stream).await else {
            panic!("expected a cancel");
        };
        assert_eq!(cancel.task_id, launch.task_id);
        assert_eq!(cluster.tasks_in_flight("j"), 1);
        cluster.task_ended("w", &launch.task_id, TaskEnd::Cancelled);
        assert_eq!(cluster.tasks_in_flight("j"), 0);
        assert_eq!(cluster.workers()[0].slots_used, 0);
    }
}
