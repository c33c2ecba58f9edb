//! The web UI on :8080, server-rendered with maud, and its JSON twins under
//! `/api/v1`; Prometheus text at `/metrics`. No JavaScript build step: pages
//! refresh themselves, and the only script is the kill button's confirm().

mod auth;
mod charts;
mod pages;
mod serve;

pub use serve::serve;

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::Master;
use crate::cluster::{TaskRecord, WorkerState, WorkerView};
use crate::jobs::StopRequest;
use crate::jobs::{JobDetail, JobView};
use crate::progress::BatchProgress;

pub fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/workers/{id}", get(pages::worker))
        .route("/jobs/{id}", get(pages::job))
        .route("/jobs/{id}/kill", post(kill_from_page))
        .route("/api/v1/workers", get(workers_json))
        .route("/api/v1/workers/{id}", get(worker_json))
        .route("/api/v1/jobs", get(jobs_json))
        .route("/api/v1/jobs/{id}", get(job_json))
        .route("/api/v1/jobs/{id}/batches", get(batches_json))
        .route("/api/v1/jobs/{id}/progress", get(progress_json))
        .route("/api/v1/jobs/{id}/stop", post(stop_json))
        .route("/api/v1/progress", get(all_progress_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(auth::healthz))
        .route("/login", get(auth::login_form).post(auth::login))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&master),
            auth::require,
        ))
        .with_state(master)
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("{what} not found\n")).into_response()
}

async fn workers_json(State(master): State<Arc<Master>>) -> Json<Vec<WorkerView>> {
    Json(master.cluster.workers())
}

/// A worker with its running and recent tasks.
#[derive(Serialize)]
pub struct WorkerDetail {
    #[serde(flatten)]
    pub worker: WorkerView,
    pub running_tasks: Vec<String>,
    pub recent_tasks: Vec<TaskRecord>,
}

fn worker_detail(master: &Master, id: &str) -> Option<WorkerDetail> {
    let (worker, running_tasks, recent_tasks) = master.cluster.worker(id)?;
    Some(WorkerDetail {
        worker,
        running_tasks,
        recent_tasks,
    })
}

async fn worker_json(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    match worker_detail(&master, &id) {
        Some(detail) => Json(detail).into_response(),
        None => not_found(&format!("worker {id}")),
    }
}

async fn jobs_json(State(master): State<Arc<Master>>) -> Json<Vec<JobView>> {
    Json(master.jobs.views())
}

async fn job_json(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    match master.jobs.detail(&id) {
        Some(JobDetail { view, plan, .. }) => {
            Json(serde_json::json!({"job": view, "plan": plan})).into_response()
        }
        None => not_found(&format!("job {id}")),
    }
}

async fn batches_json(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    match master.jobs.detail(&id) {
        Some(detail) => Json(detail.batches_progress).into_response(),
        None => not_found(&format!("job {id}")),
    }
}

/// The latest progress record of a job; `null` before its first batch.
async fn progress_json(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    match master.jobs.detail(&id) {
        Some(detail) => Json(detail.batches_progress.last().cloned()).into_response(),
        None => not_found(&format!("job {id}")),
    }
}

async fn all_progress_json(State(master): State<Arc<Master>>) -> Json<Vec<BatchProgress>> {
    Json(master.jobs.latest_progress())
}

/// The kill button: stops the job now, cancelling its running batch.
async fn kill_from_page(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    if !master.jobs.request_stop(&id, StopRequest::Now) {
        return not_found(&format!("job {id}"));
    }
    Redirect::to(&format!("/jobs/{id}")).into_response()
}

#[derive(Deserialize)]
struct StopQuery {
    /// Cancel the running batch instead of letting it commit.
    #[serde(default)]
    kill: bool,
}

/// `POST /api/v1/jobs/{id}/stop[?kill=true]`.
async fn stop_json(
    State(master): State<Arc<Master>>,
    Path(id): Path<String>,
    Query(query): Query<StopQuery>,
) -> Response {
    let how = if query.kill {
        StopRequest::Now
    } else {
        StopRequest::AfterBatch
    };
    if !master.jobs.request_stop(&id, how) {
        return not_found(&format!("job {id}"));
    }
    Json(serde_json::json!({"job": id, "stopping": true, "kill": query.kill})).into_response()
}

/// Prometheus text exposition.
async fn metrics(State(master): State<Arc<Master>>) -> Response {
    let workers = master.cluster.workers();
    let alive: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.state == WorkerState::Alive)
        .collect();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "spate_workers",
        "Workers known to the master, by state.",
        "gauge",
        vec![
            ("{state=\"alive\"}".into(), alive.len() as f64),
            (
                "{state=\"dead\"}".into(),
                (workers.len() - alive.len()) as f64,
            ),
        ],
    );
    gauge(
        "spate_slots",
        "Task slots of alive workers.",
        "gauge",
        vec![
            (
                "{kind=\"total\"}".into(),
                alive.iter().map(|w| w.slots as f64).sum(),
            ),
            (
                "{kind=\"used\"}".into(),
                alive.iter().map(|w| w.slots_used as f64).sum(),
            ),
        ],
    );
    let jobs = master.jobs.views();
    let latest = master.jobs.latest_progress();
    let per_job = |f: &dyn Fn(&JobView) -> f64| -> Vec<(String, f64)> {
        jobs.iter()
            .map(|j| (format!("{{job=\"{}\"}}", j.id), f(j)))
            .collect()
    };
    let per_batch = |f: &dyn Fn(&BatchProgress) -> f64| -> Vec<(String, f64)> {
        latest
            .iter()
            .map(|p| (format!("{{job=\"{}\"}}", p.id), f(p)))
            .collect()
    };
    gauge(
        "spate_job_running",
        "1 while the job runs or waits, else 0.",
        "gauge",
        per_job(&|j| f64::from(u8::from(j.state.is_active()))),
    );
    gauge(
        "spate_job_batches_total",
        "Committed batches.",
        "counter",
        per_job(&|j| j.batches as f64),
    );
    gauge(
        "spate_job_input_rows_total",
        "Records read from Kafka and committed.",
        "counter",
        per_job(&|j| j.input_rows as f64),
    );
    gauge(
        "spate_job_output_rows_total",
        "Rows committed to the sink.",
        "counter",
        per_job(&|j| j.output_rows as f64),
    );
    gauge(
        "spate_job_input_rows_per_second",
        "Input rate of the latest batch.",
        "gauge",
        per_batch(&|p| p.input_rows_per_second),
    );
    gauge(
        "spate_job_processed_rows_per_second",
        "Processing rate of the latest batch.",
        "gauge",
        per_batch(&|p| p.processed_rows_per_second),
    );
    gauge(
        "spate_job_batch_duration_seconds",
        "Wall time of the latest batch.",
        "gauge",
        per_batch(&|p| p.duration_ms.trigger_execution as f64 / 1000.0),
    );
    gauge(
        "spate_job_offsets_behind_latest",
        "Records in Kafka not yet read, after the latest batch.",
        "gauge",
        per_batch(&|p| p.offsets_behind_latest() as f64),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
