//! The job registry: every job's planned form and state, kept in the
//! workspace under `_spate/jobs/<job>/job.json` so a restarted master
//! resumes what was running.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use spate_engine::job::PlannedJob;
use spate_engine::workspace::SPATE_DIR;
use spate_engine::{Workspace, now_ms};
use tokio::sync::watch;

use crate::error::Result;
use crate::progress::{self, BatchProgress};

/// A job's lifecycle. Running and Waiting have a coordinator; the others are
/// final until the job is submitted again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "UPPERCASE")]
pub enum JobState {
    Running,
    /// Running, but blocked on something outside (Kafka unreachable); the reason says what.
    Waiting(String),
    Stopped,
    Finished,
    Failed(String),
}

impl JobState {
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Running => "RUNNING",
            JobState::Waiting(_) => "WAITING",
            JobState::Stopped => "STOPPED",
            JobState::Finished => "FINISHED",
            JobState::Failed(_) => "FAILED",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            JobState::Waiting(r) | JobState::Failed(r) => r,
            _ => "",
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self, JobState::Running | JobState::Waiting(_))
    }
}

/// What is persisted of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub planned: PlannedJob,
    pub state: JobState,
    pub submitted_ms: i64,
    /// When the job stopped, finished or failed.
    #[serde(default)]
    pub ended_ms: Option<i64>,
}

/// A job's progress, for the UI, the API and `driver jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub error: String,
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

/// What a running job's coordinator is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopRequest {
    Run,
    /// Stop once the running batch commits.
    AfterBatch,
    /// Stop now, abandoning the running batch; it re-runs from the
    /// checkpoint when the job is submitted again.
    Now,
}

struct JobEntry {
    record: JobRecord,
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
            state: record.state.name(),
            error: record.state.reason().to_string(),
            submitted_ms: record.submitted_ms,
            ended_ms: record.ended_ms,
            duration_ms: end - record.submitted_ms,
            batches: self.batches,
            input_rows: self.input_rows,
            output_rows: self.output_rows,
            avg_input_rows_per_second: rate(input_seconds),
            avg_processed_rows_per_second: rate(processing_seconds),
            latest_batch: self.progress.back().map(|p| p.batch_id),
            source: format!("kafka topic {}", record.planned.source.topic),
            sink: describe_sink(&record.planned.sink),
            sql: record.planned.sql.clone(),
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

    pub fn state_of(&self, id: &str) -> Option<JobState> {
        self.lock().get(id).map(|j| j.record.state.clone())
    }

    /// Records a job as running with the given totals; returns its stop signal.
    pub async fn insert(
        &self,
        record: JobRecord,
        totals: (u64, u64, u64),
    ) -> Result<watch::Receiver<StopRequest>> {
        self.ws.put_json(&record_path(&record.id), &record).await?;
        let history = progress::load_recent(&self.ws, &record.id).await?;
        let (stop, stopped) = watch::channel(StopRequest::Run);
        self.put_entry(record, totals, Some(stop), history);
        Ok(stopped)
    }

    /// Records a job that is not running (a finished one found at start-up).
    pub async fn insert_inactive(&self, record: JobRecord, totals: (u64, u64, u64)) -> Result<()> {
        let history = progress::load_recent(&self.ws, &record.id).await?;
        self.put_entry(record, totals, None, history);
        Ok(())
    }

    fn put_entry(
        &self,
        record: JobRecord,
        totals: (u64, u64, u64),
        stop: Option<watch::Sender<StopRequest>>,
        progress: Vec<BatchProgress>,
    ) {
        let (batches, input_rows, output_rows) = totals;
        self.lock().insert(
            record.id.clone(),
            JobEntry {
                record,
                batches,
                input_rows,
                output_rows,
                stop,
                progress: progress.into(),
            },
        );
    }

    pub async fn set_state(&self, id: &str, state: JobState) {
        let record = {
            let mut jobs = self.lock();
            let Some(job) = jobs.get_mut(id) else { return };
            if job.record.state == state {
                return;
            }
            job.record.ended_ms = (!state.is_active()).then(now_ms);
            job.record.state = state;
            job.record.clone()
        };
        // Waiting is transient: it is not worth a write, and a restart retries anyway.
        if !matches!(record.state, JobState::Waiting(_))
            && let Err(e) = self.ws.put_json(&record_path(id), &record).await
        {
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

    /// Where a job writes, and whether it still runs.
    pub fn sink_of(&self, id: &str) -> Option<(spate_engine::job::SinkSpec, JobState)> {
        let jobs = self.lock();
        let job = jobs.get(id)?;
        Some((job.record.planned.sink.clone(), job.record.state.clone()))
    }

    pub fn detail(&self, id: &str) -> Option<JobDetail> {
        let jobs = self.lock();
        let job = jobs.get(id)?;
        Some(JobDetail {
            view: job.view(),
            plan: job.record.planned.explain.clone(),
            stages: job
                .record
                .planned
                .stages
                .iter()
                .map(|s| StageView {
                    id: s.id,
                    reads: s.reads.clone(),
                    tasks: s.tasks,
                    plan: s.explain.clone(),
                })
                .collect(),
            output_mode: job.record.planned.options.output_mode.name().to_string(),
            shuffle_partitions: job
                .record
                .planned
                .is_stateful()
                .then_some(job.record.planned.options.shuffle_partitions)
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

    /// Asks a job's coordinator to stop, after the batch it is running or now.
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

    pub fn new_record(id: &str, planned: PlannedJob) -> JobRecord {
        JobRecord {
            id: id.to_string(),
            planned,
            state: JobState::Running,
            submitted_ms: now_ms(),
            ended_ms: None,
        }
    }
}

pub(crate) fn describe_sink(sink: &spate_engine::job::SinkSpec) -> String {
    match sink {
        spate_engine::job::SinkSpec::Files { dir, format, .. } => {
            format!("{format:?} files in {dir}/").to_lowercase()
        }
        spate_engine::job::SinkSpec::Kafka(k) => format!("kafka topic {}", k.topic),
        spate_engine::job::SinkSpec::Results { .. } => "the client".to_string(),
    }
}
