//! The job registry: every job's planned form and the state its controller
//! reports, kept in the workspace under `_spate/jobs/<job>/job.json` so a
//! restarted master resumes what was running. Only a job's controller
//! changes its state (`controller/states.rs`); the registry records it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize};
use spate_engine::EngineError;
use spate_engine::job::PlannedJob;
use spate_engine::sink::SinkSpec;
use spate_engine::workspace::SPATE_DIR;
use spate_engine::{Workspace, now_ms};
use tokio::sync::watch;

use crate::error::{MasterError, Result};
use crate::progress::{self, BatchProgress};

/// A job's lifecycle as the UI, the API and clients see it. The
/// controller's states (`controller/states.rs`) say more; this is what
/// they report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobState {
    /// Checked and reserved, not yet running batches.
    Submitting,
    Running,
    /// Running, but blocked on something outside (Kafka unreachable).
    Waiting,
    /// Asked to stop: its tasks are being cancelled.
    Stopping,
    Stopped,
    /// Read everything it was asked to (available_now).
    Finished,
    Failed,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Submitting => "SUBMITTING",
            JobState::Running => "RUNNING",
            JobState::Waiting => "WAITING",
            JobState::Stopping => "STOPPING",
            JobState::Stopped => "STOPPED",
            JobState::Finished => "FINISHED",
            JobState::Failed => "FAILED",
        }
    }

    /// Whether the job has a controller.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            JobState::Submitting | JobState::Running | JobState::Waiting | JobState::Stopping
        )
    }

    pub fn wire(self) -> spate_proto::JobState {
        match self {
            JobState::Submitting => spate_proto::JobState::Submitting,
            JobState::Running => spate_proto::JobState::Running,
            JobState::Waiting => spate_proto::JobState::Waiting,
            JobState::Stopping => spate_proto::JobState::Stopping,
            JobState::Stopped => spate_proto::JobState::Stopped,
            JobState::Finished => spate_proto::JobState::Finished,
            JobState::Failed => spate_proto::JobState::Failed,
        }
    }
}

/// What a controller reports of its job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub state: JobState,
    /// Why the job waits or failed; empty otherwise.
    pub error: String,
    /// What it does right now, e.g. "batch 7: stage 2 of 2".
    pub activity: String,
}

/// What is persisted of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub planned: PlannedJob,
    #[serde(deserialize_with = "stored_state")]
    pub state: JobState,
    /// Why it failed, for a failed job.
    #[serde(default)]
    pub error: String,
    pub submitted_ms: i64,
    /// When the job stopped, finished or failed.
    #[serde(default)]
    pub ended_ms: Option<i64>,
}

/// A record's state, as written now ("RUNNING") or by the first milestone
/// (`{"state": "FAILED", "reason": "..."}`, whose reason is dropped).
fn stored_state<'de, D: Deserializer<'de>>(deserializer: D) -> Result<JobState, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Plain(JobState),
        Tagged { state: JobState },
    }
    Ok(match Stored::deserialize(deserializer)? {
        Stored::Plain(state) | Stored::Tagged { state } => state,
    })
}

/// A job's progress, for the UI, the API and `driver jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub state: JobState,
    pub error: String,
    pub activity: String,
    pub submitted_ms: i64,
    pub ended_ms: Option<i64>,
    /// Since submission, until now or the job's end.
    pub duration_ms: i64,
    pub batches: u64,
    pub input_rows: u64,
    pub output_rows: u64,
    /// Over the batches the master keeps (the last 300).
    pub avg_input_rows_per_second: f64,
    pub avg_processed_rows_per_second: f64,
    pub latest_batch: Option<u64>,
    pub source: String,
    pub sink: String,
    pub sql: String,
}

/// Everything the job page shows.
#[derive(Debug, Clone, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub view: JobView,
    /// The job's whole physical plan, indented.
    pub plan: String,
    /// The stages each batch runs, in order.
    pub stages: Vec<StageView>,
    /// `append`, `update` or `complete`.
    pub output_mode: String,
    /// Partitions of the shuffle and state; none for a stateless job.
    pub shuffle_partitions: Option<usize>,
    /// The batches the master keeps, oldest first.
    pub batches_progress: Vec<BatchProgress>,
}

/// One stage of a job, for the job page.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    pub id: u32,
    /// Stages whose shuffle output it reads; none for the Kafka stage.
    pub reads: Vec<u32>,
    /// Tasks per batch of a shuffle-reading stage.
    pub tasks: usize,
    pub plan: String,
}

/// What a running job's controller is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopRequest {
    Run,
    /// Stop once the running batch commits.
    AfterBatch,
    /// Stop now: cancel the running batch's tasks; the batch re-runs from
    /// the checkpoint when the job is submitted again.
    Now,
}

struct JobEntry {
    record: JobRecord,
    activity: String,
    batches: u64,
    input_rows: u64,
    output_rows: u64,
    stop: Option<watch::Sender<StopRequest>>,
    progress: VecDeque<BatchProgress>,
}

impl JobEntry {
    fn view(&self) -> JobView {
        let record = &self.record;
        let end = record.ended_ms.unwrap_or_else(now_ms);
        let rows: u64 = self.progress.iter().map(|p| p.num_input_rows).sum();
        let rate = |seconds: f64| {
            if seconds > 0.0 {
                rows as f64 / seconds
            } else {
                0.0
            }
        };
        let input_seconds: f64 = self
            .progress
            .iter()
            .map(|p| p.num_input_rows as f64 / p.input_rows_per_second.max(f64::MIN_POSITIVE))
            .filter(|s| s.is_finite())
            .sum();
        let processing_seconds: f64 = self
            .progress
            .iter()
            .map(|p| p.duration_ms.trigger_execution as f64 / 1000.0)
            .sum();
        JobView {
            id: record.id.clone(),
            name: record.planned.name.clone(),
            state: record.state,
            error: record.error.clone(),
            activity: self.activity.clone(),
            submitted_ms: record.submitted_ms,
            ended_ms: record.ended_ms,
            duration_ms: end - record.submitted_ms,
            batches: self.batches,
            input_rows: self.input_rows,
            output_rows: self.output_rows,
            avg_input_rows_per_second: rate(input_seconds),
            avg_processed_rows_per_second: rate(processing_seconds),
            latest_batch: self.progress.back().map(|p| p.batch_id),
            source: format!("kafka topic {}", record.planned.describe_topics()),
            sink: record.planned.sink.describe(),
            // Shown on pages, in the API and CLIs: credentials stay out.
            sql: spate_engine::redact::sql(&record.planned.sql),
        }
    }
}

pub struct Jobs {
    ws: Workspace,
    jobs: Mutex<BTreeMap<String, JobEntry>>,
}

fn record_path(id: &str) -> String {
    format!("{SPATE_DIR}/jobs/{id}/job.json")
}

/// A job name held for a submission in progress. Dropped before the job
/// started, it gives the name back (and the earlier run's entry, if any).
pub struct Reservation {
    jobs: Arc<Jobs>,
    id: String,
    previous: Option<JobEntry>,
    started: bool,
}

impl Reservation {
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.started {
            return;
        }
        let mut jobs = self.jobs.lock();
        match self.previous.take() {
            Some(previous) => {
                jobs.insert(self.id.clone(), previous);
            }
            None => {
                jobs.remove(&self.id);
            }
        }
    }
}

impl Jobs {
    pub fn new(ws: Workspace) -> Self {
        Jobs {
            ws,
            jobs: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobEntry>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every job recorded in the workspace.
    pub async fn load(&self) -> Result<Vec<JobRecord>> {
        let mut records = Vec::new();
        for id in self.ws.list_names(&format!("{SPATE_DIR}/jobs")).await? {
            match self.ws.get_json::<JobRecord>(&record_path(&id)).await {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(e) => tracing::error!(job = id, "cannot read job record: {e}"),
            }
        }
        Ok(records)
    }

    /// Holds a job's name for a submission, refusing it while a controller
    /// runs the job. Made under the registry's lock with no await, so two
    /// submissions of one job cannot both pass.
    pub fn reserve(
        self: &Arc<Self>,
        id: &str,
        planned: &PlannedJob,
        max_active: Option<usize>,
    ) -> Result<Reservation> {
        let mut jobs = self.lock();
        if let Some(existing) = jobs.get(id)
            && existing.record.state.is_active()
        {
            return Err(EngineError::AlreadyExists(format!(
                "job '{id}' is already {}; stop it first (driver stop {id})",
                existing.record.state.name().to_lowercase()
            ))
            .into());
        }
        if let Some(max) = max_active {
            let active = jobs.values().filter(|j| j.record.state.is_active()).count();
            if active >= max {
                return Err(MasterError::Limit(format!(
                    "{active} jobs already run on this cluster, its limit (master.max_jobs); \
                     stop one first (driver stop JOB)"
                )));
            }
        }
        let entry = JobEntry {
            record: JobRecord {
                id: id.to_string(),
                planned: planned.clone(),
                state: JobState::Submitting,
                error: String::new(),
                submitted_ms: now_ms(),
                ended_ms: None,
            },
            activity: "submitting".to_string(),
            batches: 0,
            input_rows: 0,
            output_rows: 0,
            stop: None,
            progress: VecDeque::new(),
        };
        let previous = jobs.insert(id.to_string(), entry);
        Ok(Reservation {
            jobs: Arc::clone(self),
            id: id.to_string(),
            previous,
            started: false,
        })
    }

    /// The reserved job starts running: its record is persisted with the
    /// planned job as admitted, its totals and history loaded. Returns its
    /// stop signal.
    pub async fn start(
        &self,
        mut reservation: Reservation,
        planned: PlannedJob,
        totals: (u64, u64, u64),
    ) -> Result<watch::Receiver<StopRequest>> {
        let id = reservation.id.clone();
        let history = progress::load_recent(&self.ws, &id).await?;
        let (stop, stopped) = watch::channel(StopRequest::Run);
        let record = {
            let mut jobs = self.lock();
            let entry = jobs
                .get_mut(&id)
                .expect("a reserved job stays in the registry");
            entry.record.planned = planned;
            entry.record.state = JobState::Running;
            (entry.batches, entry.input_rows, entry.output_rows) = totals;
            entry.stop = Some(stop);
            entry.progress = history.into();
            entry.record.clone()
        };
        reservation.started = true;
        self.ws.put_json(&record_path(&id), &record).await?;
        Ok(stopped)
    }

    /// Records a job found at start-up that is not running.
    pub async fn insert_inactive(&self, record: JobRecord, totals: (u64, u64, u64)) -> Result<()> {
        let history = progress::load_recent(&self.ws, &record.id).await?;
        let (batches, input_rows, output_rows) = totals;
        self.lock().insert(
            record.id.clone(),
            JobEntry {
                record,
                activity: String::new(),
                batches,
                input_rows,
                output_rows,
                stop: None,
                progress: history.into(),
            },
        );
        Ok(())
    }

    /// A controller's report of its job. `persist` writes the record, so
    /// that a restarted master knows whether to resume the job.
    pub async fn publish(&self, id: &str, status: JobStatus, persist: bool) {
        let record = {
            let mut jobs = self.lock();
            let Some(job) = jobs.get_mut(id) else { return };
            job.activity = status.activity;
            if job.record.state == status.state && job.record.error == status.error {
                return;
            }
            job.record.ended_ms = (!status.state.is_active()).then(now_ms);
            job.record.state = status.state;
            job.record.error = status.error;
            if !status.state.is_active() {
                job.stop = None;
            }
            job.record.clone()
        };
        if persist && let Err(e) = self.ws.put_json(&record_path(id), &record).await {
            tracing::error!(job = id, "cannot persist job state: {e}");
        }
    }

    /// Counts a committed batch and keeps its progress record.
    pub async fn add_batch(&self, progress: BatchProgress) {
        if let Err(e) = progress::save(&self.ws, &progress).await {
            tracing::warn!(job = progress.id, "cannot keep the progress record: {e}");
        }
        if let Some(job) = self.lock().get_mut(&progress.id) {
            job.batches += 1;
            job.input_rows += progress.num_input_rows;
            job.output_rows += progress.num_output_rows;
            if job.progress.len() == progress::KEPT_PER_JOB {
                job.progress.pop_front();
            }
            job.progress.push_back(progress);
        }
    }

    /// The previous batch's trigger start, for input rates.
    pub fn last_trigger_ms(&self, id: &str) -> Option<i64> {
        self.lock().get(id)?.progress.back().map(|p| p.timestamp_ms)
    }

    /// Where a job writes, and its state.
    pub fn sink_of(&self, id: &str) -> Option<(SinkSpec, JobState)> {
        let jobs = self.lock();
        let job = jobs.get(id)?;
        Some((job.record.planned.sink.clone(), job.record.state))
    }

    pub fn detail(&self, id: &str) -> Option<JobDetail> {
        let jobs = self.lock();
        let job = jobs.get(id)?;
        let planned = &job.record.planned;
        Some(JobDetail {
            view: job.view(),
            plan: planned.explain.clone(),
            stages: planned
                .stages
                .iter()
                .map(|s| StageView {
                    id: s.id,
                    reads: s.reads.clone(),
                    tasks: s.tasks,
                    plan: s.explain.clone(),
                })
                .collect(),
            output_mode: planned.options.output_mode.name().to_string(),
            shuffle_partitions: planned
                .is_stateful()
                .then_some(planned.options.shuffle_partitions)
                .flatten(),
            batches_progress: job.progress.iter().cloned().collect(),
        })
    }

    /// The latest progress record of each job.
    pub fn latest_progress(&self) -> Vec<BatchProgress> {
        self.lock()
            .values()
            .filter_map(|j| j.progress.back().cloned())
            .collect()
    }

    /// Asks a job's controller to stop, after the batch it is running or
    /// now. False where no such job is known.
    pub fn request_stop(&self, id: &str, request: StopRequest) -> bool {
        match self.lock().get(id) {
            Some(job) => {
                if let Some(stop) = &job.stop {
                    stop.send_modify(|current| *current = (*current).max(request));
                }
                true
            }
            None => false,
        }
    }

    pub fn views(&self) -> Vec<JobView> {
        let jobs = self.lock();
        let mut views: Vec<JobView> = jobs.values().map(JobEntry::view).collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.submitted_ms));
        views
    }
}
