//! The web UI on :8080, server-rendered with maud, and its JSON twins under
//! `/api/v1`. No JavaScript build step; the page refreshes itself.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use maud::{DOCTYPE, Markup, html};

use crate::Master;
use crate::cluster::{WorkerState, WorkerView};
use crate::jobs::JobView;

pub fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/api/v1/workers", get(workers_json))
        .route("/api/v1/jobs", get(jobs_json))
        .with_state(master)
}

async fn workers_json(State(master): State<Arc<Master>>) -> Json<Vec<WorkerView>> {
    Json(master.cluster.workers())
}

async fn jobs_json(State(master): State<Arc<Master>>) -> Json<Vec<JobView>> {
    Json(master.jobs.views())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;min-width:40rem}th,td{padding:.35rem .8rem;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ALIVE,.RUNNING,.FINISHED{color:#1a7f37}.DEAD,.FAILED{color:#cf222e}.WAITING,.STOPPED{color:#9a6700}
.muted{color:#777}";

fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn format_bytes(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

async fn overview(State(master): State<Arc<Master>>) -> Markup {
    let workers = master.cluster.workers();
    let jobs = master.jobs.views();
    let alive: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.state == WorkerState::Alive)
        .collect();
    let slots: u32 = alive.iter().map(|w| w.slots).sum();
    let used: u32 = alive.iter().map(|w| w.slots_used).sum();
    let uptime_s = (spate_engine::now_ms() - master.started_ms) / 1000;
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="2";
                title { "Spate master" }
                style { (STYLE) }
            }
            body {
                h1 { "Spate master at " (master.config.grpc_addr) }
                p.muted {
                    "Workers: " (alive.len()) " alive, " (workers.len() - alive.len()) " dead · "
                    "Slots: " (used) " used / " (slots) " · "
                    "Jobs: " (jobs.iter().filter(|j| j.state == "RUNNING" || j.state == "WAITING").count()) " running, "
                    (jobs.len()) " in all · Uptime: " (uptime_s / 3600) "h " (uptime_s / 60 % 60) "m " (uptime_s % 60) "s"
                }
                h2 { "Workers" }
                table {
                    tr { th { "Worker" } th { "Address" } th { "State" } th { "Slots used / total" } th { "Memory" } th { "Last heartbeat" } th { "Tasks done" } th { "Tasks failed" } }
                    @for w in &workers {
                        tr {
                            td { (w.id) } td { (w.host) }
                            td class=(format!("{:?}", w.state).to_uppercase()) { (format!("{:?}", w.state).to_uppercase()) }
                            td.num { (w.slots_used) " / " (w.slots) }
                            td.num { (format_bytes(w.memory_bytes)) }
                            td { (format_time(w.last_heartbeat_ms)) }
                            td.num { (w.tasks_succeeded) } td.num { (w.tasks_failed) }
                        }
                    }
                }
                h2 { "Jobs" }
                table {
                    tr { th { "Job" } th { "State" } th { "Submitted" } th { "Batches" } th { "Rows in" } th { "Rows out" } th { "Sink" } th { "Error" } }
                    @for j in &jobs {
                        tr {
                            td { (j.id) }
                            td class=(j.state) { (j.state) }
                            td { (format_time(j.submitted_ms)) }
                            td.num { (j.batches) } td.num { (j.input_rows) } td.num { (j.output_rows) }
                            td { (j.sink) }
                            td.muted { (j.error) }
                        }
                    }
                }
                p.muted { "JSON: " a href="/api/v1/workers" { "/api/v1/workers" } " · " a href="/api/v1/jobs" { "/api/v1/jobs" } }
            }
        }
    }
}
