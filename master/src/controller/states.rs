//! A job's lifecycle: one type per state, and every transition declared
//! below with `transitions!`. A state moves on only through
//! `Transition::to`, which compiles only for declared pairs, so this file
//! is every place where a job changes state.
//!
//! ```text
//!  Submitting ──► Idle ─────► OffsetsLogged ──► RunningStage(k) ──► SinkCommitted
//!      │          ▲ │ (wait)        │               │  ▲ (k+1)          │
//!      │          └─┘               └───────────────┼──┴────────────────┤
//!      │           ▲                  (sink already holds the batch)    │
//!      │           └────────────────────────────────────────────────────┘
//!      ├─► Refused (a client's submission, never a job)
//!      └─► Failed ◄── Idle, OffsetsLogged, RunningStage, SinkCommitted
//!  Idle, OffsetsLogged, RunningStage ──► Stopping ──► Stopped
//!  Idle ──► Finished (available_now read all it was given)
//! ```
//!
//! A state's fields are its batch's progress; a state's `next` does its
//! work and names the state that follows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use spate_engine::checkpoint::{CommitEntry, OffsetsEntry, totals_after};
use spate_engine::sink::Committing;
use spate_engine::{EngineError, ErrorKind, OffsetRange, now_ms};

use super::batch::{self, BatchInFlight, BatchRun, EventTimes};
use super::{Admission, JobContext, killed};
use crate::jobs::{JobState, JobStatus, StopRequest};
use crate::progress::Durations;
use crate::stages::{BatchStages, millis};

#[async_trait]
pub trait State: Send + 'static {
    fn name(&self) -> &'static str;

    /// What the job reports in this state; none for a submission refused.
    fn status(&self, ctx: &JobContext) -> Option<JobStatus>;

    /// Whether reaching this state is written to the job's record.
    fn persists(&self) -> bool {
        false
    }

    fn is_final(&self) -> bool {
        false
    }

    /// Does the state's work and names the state that follows.
    async fn next(self: Box<Self>, ctx: &mut JobContext) -> Transition;
}

/// A move from one state to another; `Transition::to` makes only the
/// declared ones.
pub struct Transition(Box<dyn State>);

/// `A: TransitionTo<B>`: a job in state A may move to state B.
pub trait TransitionTo<S: State> {}

impl Transition {
    /// Leaves `_from` (taking it, so the state left is gone) for `to`.
    #[allow(clippy::boxed_local)]
    pub fn to<From, To>(_from: Box<From>, to: To) -> Transition
    where
        From: State + TransitionTo<To>,
        To: State,
    {
        Transition(Box::new(to))
    }

    pub(super) fn into_state(self) -> Box<dyn State> {
        self.0
    }
}

macro_rules! transitions {
    ($from:ty => $($to:ty),+ $(,)?) => { $(impl TransitionTo<$to> for $from {})+ };
}

transitions!(Submitting => Idle, Refused, Failed);
transitions!(Idle => Idle, OffsetsLogged, Stopping, Finished, Failed);
transitions!(OffsetsLogged => RunningStage, SinkCommitted, Stopping, Failed);
transitions!(RunningStage => RunningStage, SinkCommitted, Stopping, Failed);
transitions!(SinkCommitted => Idle, Failed);
transitions!(Stopping => Stopped);

fn running(activity: String) -> Option<JobStatus> {
    Some(JobStatus {
        state: JobState::Running,
        error: String::new(),
        activity,
    })
}

/// A write another controller made first: this one must stop, leaving the
/// job's record to the writer that holds it.
fn lost_the_job(e: &EngineError) -> bool {
    e.kind() == ErrorKind::AlreadyExists
}

/// Failed, by an error of the job's own or by another writer.
fn failed(e: EngineError) -> Failed {
    let persist = !lost_the_job(&e);
    Failed {
        why: e.to_string(),
        persist,
    }
}

// ------------------------------------------------------------- submitting --

/// The job is checked against its checkpoint and Kafka before it runs.
pub struct Submitting {
    /// Forget the checkpoint and the sink's output first.
    pub fresh: bool,
    /// A client waiting to hear whether the job started; none when the
    /// master resumes the job by itself.
    pub admission: Option<Admission>,
}

impl Submitting {
    /// The checks of a submission; true where the job resumes a checkpoint.
    async fn admit(&self, ctx: &mut JobContext) -> Result<bool, EngineError> {
        let id = ctx.job_id.clone();
        if self.fresh {
            ctx.checkpoint.delete().await?;
            ctx.sink.reset().await?;
            spate_engine::shuffle::remove_job(&ctx.ws, &id).await?;
            ctx.ws
                .delete_dir(&crate::progress::progress_dir(&id))
                .await?;
            tracing::info!(
                job = id,
                "starting afresh: checkpoint and sink output removed"
            );
        }
        // A job resuming from its checkpoint keeps the checkpoint's shuffle
        // partitions (its state is split by them) and its state's shape.
        let metadata = ctx.checkpoint.metadata().await?;
        if let Some(old) = &metadata {
            if let Some(partitions) = old.shuffle_partitions
                && ctx.planned.options.shuffle_partitions != Some(partitions)
            {
                let mut env = ctx.env.clone();
                env.shuffle_partitions = partitions;
                ctx.planned =
                    spate_engine::job::plan_job(&env, &ctx.planned.sql, &ctx.planned.name).await?;
            }
            if let Some(why) = ctx
                .planned
                .checkpoint_metadata()
                .incompatible_with(old, &id)
            {
                return Err(EngineError::plan(why));
            }
        }
        // A missing topic is a mistake in the job: refuse it. An unreachable
        // Kafka is weather: accept the job, which waits and says why.
        match ctx.source.latest().await {
            Err(e @ EngineError::UnknownTopic { .. }) => return Err(e),
            Err(e) => tracing::warn!(job = id, "{e}; the job waits for Kafka"),
            Ok(_) => {}
        }
        let last_commit = ctx.checkpoint.latest_commit().await?;
        let resumed = ctx.checkpoint.latest_offsets().await?.is_some();
        let run = match &metadata {
            Some(old) => old.run.clone(),
            None => {
                let mut new = ctx.planned.checkpoint_metadata();
                new.run = crate::stages::attempt_id();
                ctx.checkpoint.write_metadata(&new).await?;
                // Another submission may have made it first: its run counts.
                ctx.checkpoint
                    .metadata()
                    .await?
                    .map(|m| m.run)
                    .unwrap_or(new.run)
            }
        };
        // Sinks that keep progress outside the workspace name it by run.
        if let spate_engine::sink::SinkSpec::Kafka(kafka) = &mut ctx.planned.sink {
            kafka.run = run;
            ctx.sink = ctx.planned.sink.open(&ctx.ws, &id);
        }
        let (next_batch, input_rows, output_rows) = totals_after(last_commit.as_ref());
        ctx.totals = (input_rows, output_rows);
        ctx.event_times = match last_commit {
            // A commit of a Spate before joins knows one time, its topic's.
            Some(c) if c.event_times.is_empty() => c
                .max_event_time_ms
                .map(|t| EventTimes::from([(ctx.planned.source().topic.clone(), t)]))
                .unwrap_or_default(),
            Some(c) => c.event_times,
            None => EventTimes::new(),
        };
        ctx.last_watermark_ms = match next_batch.checked_sub(1) {
            Some(b) => ctx
                .checkpoint
                .offsets(b)
                .await?
                .and_then(|e| e.watermark_ms),
            None => None,
        };
        // Shuffle folders of committed batches that a crash left behind.
        spate_engine::shuffle::remove_batches_before(&ctx.ws, &id, next_batch).await;
        let reservation = ctx
            .reservation
            .take()
            .ok_or_else(|| EngineError::internal(format!("job '{id}' was submitted twice")))?;
        let totals = (next_batch, input_rows, output_rows);
        ctx.stop = ctx
            .jobs
            .start(reservation, ctx.planned.clone(), totals)
            .await
            .map_err(|e| EngineError::internal(e.to_string()))?;
        tracing::info!(job = id, resumed, writer = %ctx.writer, "job started");
        ctx.first_batch = next_batch;
        Ok(resumed)
    }
}

#[async_trait]
impl State for Submitting {
    fn name(&self) -> &'static str {
        "submitting"
    }

    fn status(&self, _ctx: &JobContext) -> Option<JobStatus> {
        Some(JobStatus {
            state: JobState::Submitting,
            error: String::new(),
            activity: "checking the job against its checkpoint and Kafka".to_string(),
        })
    }

    async fn next(mut self: Box<Self>, ctx: &mut JobContext) -> Transition {
        let admitted = self.admit(ctx).await;
        let admission = self.admission.take();
        match (admitted, admission) {
            (Ok(resumed), admission) => {
                if let Some(client) = admission {
                    let _ = client.send(Ok(resumed));
                }
                let batch = ctx.first_batch;
                Transition::to(self, Idle::at(batch))
            }
            (Err(e), Some(client)) => {
                let _ = client.send(Err(e));
                Transition::to(self, Refused)
            }
            (Err(e), None) => {
                tracing::error!(job = ctx.job_id, "cannot resume the job: {e}");
                Transition::to(self, failed(e))
            }
        }
    }
}

/// A submission the checks refused: the client heard why, and the job's
/// name is free again. No job ever was.
pub struct Refused;

#[async_trait]
impl State for Refused {
    fn name(&self) -> &'static str {
        "refused"
    }

    fn status(&self, _ctx: &JobContext) -> Option<JobStatus> {
        None
    }

    fn is_final(&self) -> bool {
        true
    }

    async fn next(self: Box<Self>, _ctx: &mut JobContext) -> Transition {
        unreachable!("a final state has no next")
    }
}

// ------------------------------------------------------------------ idle --

/// Between batches: waits for the trigger and new records, then logs the
/// next batch's offsets.
pub struct Idle {
    /// The batch to run next.
    batch: u64,
    /// Why the job waits (Kafka unreachable), when it does.
    waiting: Option<String>,
}

impl Idle {
    pub fn at(batch: u64) -> Self {
        Idle {
            batch,
            waiting: None,
        }
    }
}

#[async_trait]
impl State for Idle {
    fn name(&self) -> &'static str {
        "idle"
    }

    fn status(&self, _ctx: &JobContext) -> Option<JobStatus> {
        match &self.waiting {
            Some(why) => Some(JobStatus {
                state: JobState::Waiting,
                error: why.clone(),
                activity: format!("waiting to plan batch {}", self.batch),
            }),
            None => running(format!("waiting for records for batch {}", self.batch)),
        }
    }

    async fn next(self: Box<Self>, ctx: &mut JobContext) -> Transition {
        match ctx.stop_request() {
            StopRequest::Run => {}
            how => {
                return Transition::to(
                    self,
                    Stopping {
                        killed: how == StopRequest::Now,
                    },
                );
            }
        }
        // A batch logged without a commit re-runs with exactly its ranges.
        match ctx.checkpoint.offsets(self.batch).await {
            Err(e) => return Transition::to(self, failed(e)),
            Ok(Some(entry)) => {
                if let Err(e) = ctx.checkpoint.check_not_committed(self.batch).await {
                    return Transition::to(self, failed(e));
                }
                tracing::info!(
                    job = ctx.job_id,
                    batch = self.batch,
                    "re-running a batch from the offsets log"
                );
                return Transition::to(
                    self,
                    OffsetsLogged {
                        batch: BatchInFlight::new(entry, None, Durations::default(), true),
                    },
                );
            }
            Ok(None) => {}
        }
        let started = Instant::now();
        let started_ms = now_ms();
        let latest = match ctx.source.latest().await {
            Ok(latest) => {
                ctx.kafka_backoff = ctx.timings.kafka_retry_min;
                latest
            }
            Err(e) => {
                let wait = ctx.kafka_backoff;
                let why = format!("{e}; retrying in {:.1}s", wait.as_secs_f32());
                tracing::warn!(job = ctx.job_id, "{why}");
                ctx.kafka_backoff = (wait * 2).min(ctx.timings.kafka_retry_max);
                ctx.sleep(wait).await;
                let batch = self.batch;
                return Transition::to(
                    self,
                    Idle {
                        batch,
                        waiting: Some(why),
                    },
                );
            }
        };
        let mut durations = Durations {
            latest_offset: millis(started.elapsed()),
            ..Durations::default()
        };
        let previous = match self.batch.checked_sub(1) {
            Some(b) => match ctx.checkpoint.offsets(b).await {
                Ok(previous) => previous,
                Err(e) => return Transition::to(self, failed(e)),
            },
            None => None,
        };
        if ctx.planned.options.available_now && ctx.end_of_input.is_none() {
            ctx.end_of_input = Some(batch::ends(&latest));
        }
        if previous.is_none() && ctx.starting.is_none() {
            ctx.starting = Some(batch::starting_offsets(&ctx.planned, &latest));
        }
        let resumed = BTreeMap::new();
        let (ranges, lost) = batch::next_ranges(
            &ctx.planned,
            &latest,
            previous.as_ref(),
            ctx.starting.as_ref().unwrap_or(&resumed),
            ctx.end_of_input.as_ref(),
        );
        let skipped_records = match batch::data_loss(&ctx.planned, &lost) {
            Ok(skipped) => skipped,
            Err(why) => {
                return Transition::to(self, Failed { why, persist: true });
            }
        };
        let watermark_ms =
            batch::watermark_after(&ctx.planned, &ctx.event_times, ctx.last_watermark_ms);
        // A stateful job runs a batch without data when the watermark
        // moved, so the windows it closed are emitted.
        let watermark_moved = ctx.planned.is_stateful() && watermark_ms > ctx.last_watermark_ms;
        if ranges.iter().all(OffsetRange::is_empty) && !watermark_moved && skipped_records == 0 {
            if ctx.planned.options.available_now {
                return Transition::to(self, Finished);
            }
            let interval = ctx.trigger_interval();
            ctx.sleep(interval).await;
            let batch = self.batch;
            return Transition::to(self, Idle::at(batch));
        }
        let entry = OffsetsEntry {
            batch: self.batch,
            ranges,
            created_ms: now_ms(),
            watermark_ms,
            skipped_records,
            source_tasks: Some(ctx.tasks.slots().max(1) as u32),
            writer: Some(ctx.writer.clone()),
        };
        let logging = Instant::now();
        if let Err(e) = ctx.checkpoint.write_offsets(&entry).await {
            return Transition::to(self, failed(e));
        }
        durations.wal_commit = millis(logging.elapsed());
        let mut batch = BatchInFlight::new(entry, Some(latest), durations, false);
        batch.started = started;
        batch.started_ms = started_ms;
        Transition::to(self, OffsetsLogged { batch })
    }
}

// ---------------------------------------------------------- offsets logged --

/// The batch's ranges are in the offsets log; no task has run yet.
pub struct OffsetsLogged {
    batch: BatchInFlight,
}

#[async_trait]
impl State for OffsetsLogged {
    fn name(&self) -> &'static str {
        "offsets logged"
    }

    fn status(&self, _ctx: &JobContext) -> Option<JobStatus> {
        running(format!("batch {}: offsets logged", self.batch.entry.batch))
    }

    async fn next(mut self: Box<Self>, ctx: &mut JobContext) -> Transition {
        if ctx.stop_request() == StopRequest::Now {
            return Transition::to(self, Stopping { killed: true });
        }
        let number = self.batch.entry.batch;
        // A controller that stopped after the sink's commit and before the
        // checkpoint's: the sink holds the batch, so its tasks do not run again.
        match ctx.sink.committed(number).await {
            Err(e) => return Transition::to(self, failed(e)),
            Ok(Some(rows)) => {
                tracing::info!(
                    job = ctx.job_id,
                    batch = number,
                    "the sink already holds this batch; committing the checkpoint only"
                );
                self.batch.run = BatchRun {
                    input_rows: self.batch.entry.ranges.iter().map(OffsetRange::len).sum(),
                    output_rows: rows,
                    ..BatchRun::default()
                };
                let batch = self.batch.clone();
                return Transition::to(self, SinkCommitted { batch });
            }
            Ok(None) => {}
        }
        let batch = self.batch.clone();
        Transition::to(self, RunningStage { batch, stage: 0 })
    }
}

// ---------------------------------------------------------- running stage --

/// Stage `stage` of the batch runs on the workers.
pub struct RunningStage {
    batch: BatchInFlight,
    /// Index into the job's stages.
    stage: usize,
}

#[async_trait]
impl State for RunningStage {
    fn name(&self) -> &'static str {
        "running stage"
    }

    fn status(&self, ctx: &JobContext) -> Option<JobStatus> {
        running(format!(
            "batch {}: stage {} of {}",
            self.batch.entry.batch,
            self.stage + 1,
            ctx.planned.stages.len()
        ))
    }

    async fn next(mut self: Box<Self>, ctx: &mut JobContext) -> Transition {
        let planned = &ctx.planned;
        let stage = &planned.stages[self.stage];
        let last = self.stage + 1 == planned.stages.len();
        let stages = BatchStages {
            tasks: ctx.tasks.as_ref(),
            job_id: &ctx.job_id,
            batch: self.batch.entry.batch,
            watermark_ms: self.batch.entry.watermark_ms,
            sink: &planned.sink,
            max_task_failures: planned.options.max_task_failures,
            ranges: &self.batch.entry.ranges,
            source_tasks: self.batch.entry.source_tasks.map(|n| n as usize),
        };
        let running = Instant::now();
        // Killed mid-stage, the stage's future is dropped, and with it the
        // handles of its tasks, which cancels them on the workers.
        let ran = tokio::select! {
            ran = stages.run_stage(stage, &self.batch.stems) => Some(ran),
            _ = killed(ctx.stop.clone()) => None,
        };
        let done = match ran {
            Some(Ok(done)) => done,
            Some(Err(why)) => {
                // Tasks fail, too, when another controller of the job
                // committed the batch and removed what they read.
                let number = self.batch.entry.batch;
                if let Err(lost) = ctx.checkpoint.check_not_committed(number).await {
                    return Transition::to(self, failed(lost));
                }
                return Transition::to(self, Failed { why, persist: true });
            }
            None => return Transition::to(self, Stopping { killed: true }),
        };
        let batch = &mut self.batch;
        batch.durations.add_batch += millis(running.elapsed());
        batch.durations.query_planning += done.placing_ms;
        batch.run.add(&done.tasks, last, stage.topic.as_deref());
        batch.abandoned += done.abandoned;
        batch.stems.insert(stage.id, done.stems.clone());
        if !last {
            let (batch, stage) = (self.batch.clone(), self.stage + 1);
            return Transition::to(self, RunningStage { batch, stage });
        }
        let committing = Instant::now();
        let parts = done.sink_parts();
        let number = batch.entry.batch;
        let commit = Committing {
            batch: number,
            mode: planned.options.output_mode,
            writer: &ctx.writer,
        };
        if let Err(e) = ctx.sink.commit(&commit, parts.clone()).await {
            return Transition::to(self, failed(e));
        }
        // The commit is final, so parts of this batch that it does not
        // name (failed attempts, a crashed controller's) can go.
        if (batch.abandoned > 0 || batch.re_run)
            && let Err(e) = ctx.sink.clean_up(number, &parts).await
        {
            tracing::warn!(
                job = ctx.job_id,
                batch = number,
                "cannot clean the sink: {e}"
            );
        }
        batch.durations.commit_offsets = millis(committing.elapsed());
        let batch = self.batch.clone();
        Transition::to(self, SinkCommitted { batch })
    }
}

// ---------------------------------------------------------- sink committed --

/// The sink holds the batch; the checkpoint's commit follows.
pub struct SinkCommitted {
    batch: BatchInFlight,
}

#[async_trait]
impl State for SinkCommitted {
    fn name(&self) -> &'static str {
        "sink committed"
    }

    fn status(&self, _ctx: &JobContext) -> Option<JobStatus> {
        running(format!("batch {}: sink committed", self.batch.entry.batch))
    }

    async fn next(mut self: Box<Self>, ctx: &mut JobContext) -> Transition {
        let committing = Instant::now();
        let batch = &mut self.batch;
        let (input_rows, output_rows) = (batch.run.input_rows, batch.run.output_rows);
        ctx.totals.0 += input_rows;
        ctx.totals.1 += output_rows;
        for (topic, time) in &batch.run.event_times {
            let max = ctx.event_times.entry(topic.clone()).or_insert(*time);
            *max = (*max).max(*time);
        }
        ctx.last_watermark_ms = batch.entry.watermark_ms;
        let max_event_time_ms = ctx.event_times.values().max().copied();
        let commit = CommitEntry {
            batch: batch.entry.batch,
            committed_ms: now_ms(),
            input_rows,
            output_rows,
            total_input_rows: ctx.totals.0,
            total_output_rows: ctx.totals.1,
            max_event_time_ms,
            event_times: ctx.event_times.clone(),
            writer: Some(ctx.writer.clone()),
        };
        if let Err(e) = ctx.checkpoint.write_commit(&commit).await {
            return Transition::to(self, failed(e));
        }
        let number = batch.entry.batch;
        if ctx.planned.is_stateful()
            && let Err(e) = spate_engine::shuffle::remove_batch(&ctx.ws, &ctx.job_id, number).await
        {
            tracing::warn!(
                job = ctx.job_id,
                batch = number,
                "cannot remove the batch's shuffle: {e}"
            );
        }
        batch.durations.commit_offsets += millis(committing.elapsed());
        batch.durations.trigger_execution = millis(batch.started.elapsed());
        let previous_trigger_ms = ctx.jobs.last_trigger_ms(&ctx.job_id);
        let progress = batch::progress(
            &ctx.planned,
            &ctx.job_id,
            batch,
            max_event_time_ms,
            previous_trigger_ms,
        );
        ctx.jobs.add_batch(progress).await;
        prune(ctx, number).await;
        let (sink, job) = (Arc::clone(&ctx.sink), ctx.job_id.clone());
        tokio::spawn(async move {
            if let Err(e) = sink.compact(number).await {
                tracing::warn!(job, batch = number, "cannot compact the sink's log: {e}");
            }
        });
        tracing::info!(
            job = ctx.job_id,
            batch = number,
            input_rows,
            output_rows,
            "batch committed"
        );
        if let Some(rest) = ctx.trigger_interval().checked_sub(batch.started.elapsed()) {
            ctx.sleep(rest).await;
        }
        Transition::to(self, Idle::at(number + 1))
    }
}

/// Keeps the metadata of the last `spate.checkpoint.retained_batches`
/// batches up to `committed`; a failure to remove is only worth a warning.
async fn prune(ctx: &JobContext, committed: u64) {
    let retained = ctx.planned.options.retained_batches.max(1);
    let pruned = match ctx.checkpoint.prune(committed, retained).await {
        Ok(_) => {
            crate::progress::prune(
                &ctx.ws,
                &ctx.job_id,
                (committed + 1).saturating_sub(retained),
            )
            .await
        }
        Err(e) => Err(e.into()),
    };
    if let Err(e) = pruned {
        tracing::warn!(
            job = ctx.job_id,
            "cannot remove old checkpoint entries: {e}"
        );
    }
}

// ---------------------------------------------------------------- stopping --

/// Asked to stop: a killed job waits for its cancelled tasks to leave
/// their workers, so their slots are free when it reports STOPPED.
pub struct Stopping {
    killed: bool,
}

#[async_trait]
impl State for Stopping {
    fn name(&self) -> &'static str {
        "stopping"
    }

    fn status(&self, _ctx: &JobContext) -> Option<JobStatus> {
        Some(JobStatus {
            state: JobState::Stopping,
            error: String::new(),
            activity: if self.killed {
                "cancelling the running batch's tasks".to_string()
            } else {
                "stopping after its last batch".to_string()
            },
        })
    }

    async fn next(self: Box<Self>, ctx: &mut JobContext) -> Transition {
        if self.killed {
            tracing::warn!(
                job = ctx.job_id,
                "killed: the running batch's tasks are cancelled; it re-runs from the checkpoint on resume"
            );
            let deadline = Instant::now() + ctx.timings.cancel_grace;
            while ctx.tasks.tasks_in_flight(&ctx.job_id) > 0 && Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Transition::to(self, Stopped)
    }
}

// ------------------------------------------------------------------- final --

/// A final state without fields, reported as `$state` and persisted, so a
/// restarted master leaves the job as it ended.
macro_rules! final_state {
    ($(#[$doc:meta])* $name:ident, $text:literal, $state:expr) => {
        $(#[$doc])*
        pub struct $name;

        #[async_trait]
        impl State for $name {
            fn name(&self) -> &'static str {
                $text
            }

            fn status(&self, _ctx: &JobContext) -> Option<JobStatus> {
                Some(JobStatus {
                    state: $state,
                    error: String::new(),
                    activity: String::new(),
                })
            }

            fn persists(&self) -> bool {
                true
            }

            fn is_final(&self) -> bool {
                true
            }

            async fn next(self: Box<Self>, _ctx: &mut JobContext) -> Transition {
                unreachable!("a final state has no next")
            }
        }
    };
}

final_state!(
    /// Stopped by a request; submitting the job again resumes it.
    Stopped,
    "stopped",
    JobState::Stopped
);
final_state!(
    /// available_now: everything that was in Kafka at the start is committed.
    Finished,
    "finished",
    JobState::Finished
);

/// The job failed, or lost its logs to another controller: then `persist`
/// is false and the job's record stays the other writer's.
pub struct Failed {
    why: String,
    persist: bool,
}

#[async_trait]
impl State for Failed {
    fn name(&self) -> &'static str {
        "failed"
    }

    fn status(&self, ctx: &JobContext) -> Option<JobStatus> {
        tracing::error!(job = ctx.job_id, "job failed: {}", self.why);
        Some(JobStatus {
            state: JobState::Failed,
            error: self.why.clone(),
            activity: String::new(),
        })
    }

    fn persists(&self) -> bool {
        self.persist
    }

    fn is_final(&self) -> bool {
        true
    }

    async fn next(self: Box<Self>, _ctx: &mut JobContext) -> Transition {
        unreachable!("a final state has no next")
    }
}
