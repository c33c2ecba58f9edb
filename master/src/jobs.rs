//! The job registry: every job's planned form and state, kept in the
//! workspace under `_spate/jobs/<job>/job.json` so a restarted master
//! resumes what was running.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use spate_engine::job::PlannedJob;
use spate_engine::workspace::SPATE_DIR;
use spate_engine::{Workspace, now_ms};
use tokio::sync::watch;

use crate::error::Result;

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
}

/// A job's progress, for the UI, the API and `driver jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub error: String,
    pub submitted_ms: i64,
    pub batches: u64,
    pub input_rows: u64,
    pub output_rows: u64,
    pub sink: String,
    pub sql: String,
}

struct JobEntry {
    record: JobRecord,
    batches: u64,
    input_rows: u64,
    output_rows: u64,
    stop: Option<watch::Sender<bool>>,
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
    ) -> Result<watch::Receiver<bool>> {
        self.ws.put_json(&record_path(&record.id), &record).await?;
        let (stop, stopped) = watch::channel(false);
        self.put_entry(record, totals, Some(stop));
        Ok(stopped)
    }

    /// Records a job that is not running (a finished one found at start-up).
    pub fn insert_inactive(&self, record: JobRecord, totals: (u64, u64, u64)) {
        self.put_entry(record, totals, None);
    }

    fn put_entry(
        &self,
        record: JobRecord,
        totals: (u64, u64, u64),
        stop: Option<watch::Sender<bool>>,
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

    pub fn add_batch(&self, id: &str, input_rows: u64, output_rows: u64) {
        if let Some(job) = self.lock().get_mut(id) {
            job.batches += 1;
            job.input_rows += input_rows;
            job.output_rows += output_rows;
        }
    }

    /// Asks a job's coordinator to stop after the batch it is running.
    pub fn request_stop(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(job) => {
                if let Some(stop) = &job.stop {
                    let _ = stop.send(true);
                }
                true
            }
            None => false,
        }
    }

    pub fn views(&self) -> Vec<JobView> {
        let jobs = self.lock();
        let mut views: Vec<JobView> = jobs
            .values()
            .map(|j| JobView {
                id: j.record.id.clone(),
                name: j.record.planned.name.clone(),
                state: j.record.state.name(),
                error: j.record.state.reason().to_string(),
                submitted_ms: j.record.submitted_ms,
                batches: j.batches,
                input_rows: j.input_rows,
                output_rows: j.output_rows,
                sink: describe_sink(&j.record.planned.sink),
                sql: j.record.planned.sql.clone(),
            })
            .collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.submitted_ms));
        views
    }

    pub fn new_record(id: &str, planned: PlannedJob) -> JobRecord {
        JobRecord {
            id: id.to_string(),
            planned,
            state: JobState::Running,
            submitted_ms: now_ms(),
        }
    }
}

fn describe_sink(sink: &spate_engine::job::SinkSpec) -> String {
    match sink {
        spate_engine::job::SinkSpec::Files { dir, format, .. } => {
            format!("{format:?} files in {dir}/").to_lowercase()
        }
        spate_engine::job::SinkSpec::Kafka(k) => format!("kafka topic {}", k.topic),
    }
}
