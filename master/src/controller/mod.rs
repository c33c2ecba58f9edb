//! One controller per job: the loop that moves a job through the states of
//! `states.rs`, batch after batch, and everything those states share (the
//! job's checkpoint, sink, Kafka offsets, the cluster's tasks and the job
//! registry they report to).
//!
//! Each trigger: read Kafka's latest offsets, cap them, write `offsets/N`
//! (the write-ahead log) before any task runs, run the batch's stages,
//! commit the sink, then write `commits/N`. A batch found in `offsets/`
//! without a commit is re-run with exactly the same ranges, so recovery
//! neither skips nor repeats a row. Both logs are written with exclusive
//! creates that name their writer: one controller per job, whichever
//! master it runs in.

pub mod batch;
mod states;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spate_engine::checkpoint::{Checkpoint, Writer};
use spate_engine::job::{PlanEnv, PlannedJob};
use spate_engine::kafka::KafkaAdmin;
use spate_engine::sink::Sink;
use spate_engine::{EngineError, Workspace};
use tokio::sync::{oneshot, watch};

pub use batch::{EventTimes, TopicLatest, TopicPartition};
pub use states::{State, Submitting};

use crate::cluster::TaskRunner;
use crate::jobs::{Jobs, Reservation, StopRequest};

/// Where a controller learns the latest offsets of its job's topic.
#[async_trait]
pub trait OffsetSource: Send + Sync {
    /// The offsets of each topic the job reads.
    async fn latest(&self) -> Result<Vec<TopicLatest>, EngineError>;
}

/// Kafka itself: a client per topic, each on its table's cluster.
pub struct KafkaOffsets {
    pub topics: Vec<(KafkaAdmin, String)>,
}

#[async_trait]
impl OffsetSource for KafkaOffsets {
    async fn latest(&self) -> Result<Vec<TopicLatest>, EngineError> {
        let mut latest = Vec::with_capacity(self.topics.len());
        for (admin, topic) in &self.topics {
            latest.push(TopicLatest {
                topic: topic.clone(),
                partitions: admin.partition_offsets(topic).await?,
            });
        }
        Ok(latest)
    }
}

/// The times a controller keeps (defaults.toml's `[job]`).
#[derive(Debug, Clone)]
pub struct Timings {
    pub kafka_retry_min: Duration,
    pub kafka_retry_max: Duration,
    /// How long a killed job waits for its cancelled tasks to leave.
    pub cancel_grace: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        let job = &spate_config::settings().job;
        Timings {
            kafka_retry_min: job.kafka_retry_min,
            kafka_retry_max: job.kafka_retry_max.max(job.kafka_retry_min),
            cancel_grace: job.cancel_grace,
        }
    }
}

/// States this many transitions back are forgotten (the tests read them).
const STATES_KEPT: usize = 64;

/// What a job's states share, and what one batch hands the next.
pub struct JobContext {
    pub job_id: String,
    pub planned: PlannedJob,
    /// For planning the job again at admission (a checkpoint's partitions).
    pub env: PlanEnv,
    pub ws: Workspace,
    pub checkpoint: Checkpoint,
    pub sink: Arc<dyn Sink>,
    pub source: Arc<dyn OffsetSource>,
    pub tasks: Arc<dyn TaskRunner>,
    pub jobs: Arc<Jobs>,
    /// This controller, as the checkpoint's entries name it.
    pub writer: Writer,
    /// The job's name, held until the job starts; dropped unstarted (a
    /// refused submission), it gives the name back.
    pub reservation: Option<Reservation>,
    pub stop: watch::Receiver<StopRequest>,
    pub timings: Timings,
    /// The batch the job starts at: the one after the checkpoint's last commit.
    pub first_batch: u64,
    /// Input and output rows over every committed batch.
    pub totals: (u64, u64),
    /// The largest event time read from each topic so far.
    pub event_times: EventTimes,
    pub last_watermark_ms: Option<i64>,
    /// available_now: the offsets at the first look are where the job ends.
    pub end_of_input: Option<BTreeMap<TopicPartition, i64>>,
    /// Where the job starts reading, resolved at its first look at Kafka
    /// while no batch is logged.
    pub starting: Option<BTreeMap<TopicPartition, i64>>,
    pub kafka_backoff: Duration,
    /// The states the job went through, newest last.
    pub visited: VecDeque<&'static str>,
}

impl JobContext {
    /// A context for `planned` in `ws`, reporting to `jobs`, whose stop
    /// signal is connected when the job starts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        planned: PlannedJob,
        env: PlanEnv,
        sink: Arc<dyn Sink>,
        source: Arc<dyn OffsetSource>,
        tasks: Arc<dyn TaskRunner>,
        jobs: Arc<Jobs>,
        reservation: Reservation,
        master: &str,
    ) -> Self {
        let job_id = reservation.id().to_string();
        let ws = env.workspace.clone();
        let timings = Timings::default();
        JobContext {
            checkpoint: Checkpoint::new(&ws, &job_id),
            writer: Writer {
                master: master.to_string(),
                controller: crate::stages::attempt_id(),
            },
            kafka_backoff: timings.kafka_retry_min,
            job_id,
            planned,
            env,
            ws,
            sink,
            source,
            tasks,
            jobs,
            reservation: Some(reservation),
            stop: watch::channel(StopRequest::Run).1,
            timings,
            first_batch: 0,
            totals: (0, 0),
            event_times: EventTimes::new(),
            last_watermark_ms: None,
            end_of_input: None,
            starting: None,
            visited: VecDeque::new(),
        }
    }

    pub fn stop_request(&self) -> StopRequest {
        *self.stop.borrow()
    }

    /// Sleeps, waking early when a stop is requested.
    pub async fn sleep(&mut self, duration: Duration) {
        let stop = self.stop.wait_for(|s| *s != StopRequest::Run);
        let _ = tokio::time::timeout(duration, stop).await;
    }

    pub fn trigger_interval(&self) -> Duration {
        Duration::from_millis(self.planned.options.trigger_interval_ms)
    }
}

/// Resolves when the job is killed (stop now); never when its stop signal
/// is gone with its registry entry.
pub async fn killed(mut stop: watch::Receiver<StopRequest>) {
    if stop.wait_for(|s| *s == StopRequest::Now).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What a client submitting a job hears once its checks ran: whether the
/// job resumes a checkpoint, or why it was refused.
pub type Admission = oneshot::Sender<Result<bool, EngineError>>;

/// Moves a job from `state` to a final state, reporting each state to the
/// registry. Returns the context, which remembers the states visited.
pub async fn run(mut ctx: JobContext, mut state: Box<dyn State>) -> JobContext {
    loop {
        if ctx.visited.len() == STATES_KEPT {
            ctx.visited.pop_front();
        }
        ctx.visited.push_back(state.name());
        tracing::debug!(job = ctx.job_id, state = state.name(), "job state");
        if let Some(status) = state.status(&ctx) {
            ctx.jobs
                .publish(&ctx.job_id, status, state.persists())
                .await;
        }
        if state.is_final() {
            return ctx;
        }
        state = state.next(&mut ctx).await.into_state();
    }
}
