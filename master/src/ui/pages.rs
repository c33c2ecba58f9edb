//! The HTML pages: overview, worker, job.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::charts::{Series, lines, stacked_bars};
use super::worker_detail;
use crate::Master;
use crate::cluster::{WorkerState, WorkerView};
use crate::jobs::JobView;
use crate::progress::BatchProgress;

pub(super) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem 2rem;color:#222}
header{display:flex;gap:1.5rem;align-items:baseline;border-bottom:2px solid #e36209;margin-bottom:1rem}
header a.brand{font-weight:700;font-size:1.3rem;color:#e36209;text-decoration:none}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.8rem}
table{border-collapse:collapse;margin:.4rem 0}th,td{padding:.3rem .7rem;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ALIVE,.RUNNING,.FINISHED,.SUCCEEDED{color:#1a7f37;font-weight:600}.DEAD,.FAILED,.LOST{color:#cf222e;font-weight:600}
.WAITING,.STOPPED,.STOPPING,.SUBMITTING,.CANCELLED{color:#9a6700;font-weight:600}.muted{color:#777}
.summary{display:flex;gap:2rem;flex-wrap:wrap}.summary div{min-width:8rem}.summary b{display:block;font-size:1.2rem}
.charts{display:flex;flex-wrap:wrap;gap:1rem}figure.chart{margin:0;padding:.5rem;border:1px solid #e4e4e4;border-radius:4px}
figcaption{font-weight:600;font-size:.9rem;margin-bottom:.3rem}.legend{font-size:.8rem;display:flex;gap:1rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;font-size:.85rem}
form.kill{display:inline}form.kill button{color:#fff;background:#cf222e;border:0;border-radius:3px;padding:.2rem .7rem;cursor:pointer}
form.kill input{width:8rem}";

fn layout(master: &Master, title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="2"; }
                title { (title) " · Spate" }
                style { (STYLE) }
            }
            body {
                header {
                    a.brand href="/" { "Spate" }
                    span.muted { "master " (master.config.grpc_addr) }
                    a href="/api/v1/jobs" { "API" }
                    a href="/metrics" { "metrics" }
                }
                (body)
            }
        }
    }
}

pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn format_duration(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        _ if s < 60 => format!("{:.1} s", ms as f64 / 1000.0),
        _ if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

fn format_rate(rows_per_second: f64) -> String {
    if rows_per_second >= 10_000.0 {
        format!("{:.0}k", rows_per_second / 1000.0)
    } else {
        format!("{rows_per_second:.0}")
    }
}

fn format_memory(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The kill button; asks for confirmation (the secret, when the cluster
/// has one, came with the login).
fn kill_button(job: &str) -> Markup {
    let confirm = format!(
        "return confirm('Kill job {job}? Its running batch is cancelled; submitting the job again re-runs it from the checkpoint.')"
    );
    html! {
        form.kill method="post" action=(format!("/jobs/{job}/kill")) onsubmit=(confirm) {
            button type="submit" data-kill=(job) { "Kill" }
        }
    }
}

fn workers_table(workers: &[WorkerView]) -> Markup {
    html! {
        table id="workers" {
            tr {
                th { "Worker" } th { "Address" } th { "State" } th { "Slots used / total" } th { "Running tasks" }
                th { "Memory" } th { "Last heartbeat" } th { "Tasks done" } th { "Tasks failed" }
            }
            @for w in workers {
                tr {
                    td { a href=(format!("/workers/{}", w.id)) { (w.id) } }
                    td { (w.host) }
                    td class=(w.state.name()) { (w.state.name()) }
                    td.num { (w.slots_used) " / " (w.slots) }
                    td.num { (w.slots_used) }
                    td.num { (format_memory(w.memory_bytes)) }
                    td { (format_time(w.last_heartbeat_ms)) }
                    td.num { (w.tasks_succeeded) }
                    td.num { (w.tasks_failed) }
                }
            }
        }
    }
}

fn jobs_table(id: &str, jobs: &[&JobView]) -> Markup {
    html! {
        table id=(id) {
            tr {
                th { "Job" } th { "State" } th { "Submitted" } th { "Duration" } th { "Batches" }
                th { "Avg input rows/s" } th { "Avg processed rows/s" } th { "Latest batch" } th { "Last error" } th {}
            }
            @for j in jobs {
                tr {
                    td { a href=(format!("/jobs/{}", j.id)) { (j.id) } }
                    td class=(j.state.name()) { (j.state.name()) }
                    td { (format_time(j.submitted_ms)) }
                    td.num { (format_duration(j.duration_ms)) }
                    td.num { (j.batches) }
                    td.num { (format_rate(j.avg_input_rows_per_second)) }
                    td.num { (format_rate(j.avg_processed_rows_per_second)) }
                    td.num { (j.latest_batch.map(|b| b.to_string()).unwrap_or_default()) }
                    td.muted { (j.error) }
                    td { @if j.state.is_active() { (kill_button(&j.id)) } }
                }
            }
        }
    }
}

pub async fn overview(State(master): State<Arc<Master>>) -> Markup {
    let workers = master.cluster.workers();
    let jobs = master.jobs.views();
    let alive: Vec<&WorkerView> = workers
        .iter()
        .filter(|w| w.state == WorkerState::Alive)
        .collect();
    let (running, finished): (Vec<&JobView>, Vec<&JobView>) =
        jobs.iter().partition(|j| j.state.is_active());
    let uptime = spate_engine::now_ms() - master.started_ms;
    layout(
        &master,
        "Overview",
        true,
        html! {
            div.summary {
                div { "Master" b { "spate://" (master.config.grpc_addr) } }
                div { "Workers" b { (alive.len()) " alive, " (workers.len() - alive.len()) " dead" } }
                div { "Slots" b { (alive.iter().map(|w| w.slots_used).sum::<u32>()) " used / " (alive.iter().map(|w| w.slots).sum::<u32>()) } }
                div { "Memory" b { (format_memory(alive.iter().map(|w| w.memory_bytes).sum())) } }
                div { "Jobs" b { (running.len()) " running, " (finished.len()) " finished" } }
                div { "Uptime" b { (format_duration(uptime)) } }
            }
            h2 { "Workers (" (workers.len()) ")" }
            (workers_table(&workers))
            h2 { "Running jobs (" (running.len()) ")" }
            (jobs_table("running-jobs", &running))
            h2 { "Finished jobs (" (finished.len()) ")" }
            (jobs_table("finished-jobs", &finished))
        },
    )
}

pub async fn worker(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let Some(detail) = worker_detail(&master, &id) else {
        return (StatusCode::NOT_FOUND, format!("worker {id} not found")).into_response();
    };
    layout(&master, &id, true, html! {
        h1 { "Worker " (id) }
        (workers_table(std::slice::from_ref(&detail.worker)))
        h2 { "Running tasks (" (detail.running_tasks.len()) ")" }
        ul { @for t in &detail.running_tasks { li { code { (t) } } } }
        h2 { "Recent tasks" }
        table id="tasks" {
            tr { th { "Task" } th { "Job" } th { "Batch" } th { "Started" } th { "Duration" } th { "State" } th { "Records read" } th { "Error" } }
            @for t in &detail.recent_tasks {
                tr {
                    td { code { (t.task_id) } }
                    td { a href=(format!("/jobs/{}", t.job_id)) { (t.job_id) } }
                    td.num { (t.batch) }
                    td { (format_time(t.started_ms)) }
                    td.num { (format_duration(t.duration_ms)) }
                    td class=(t.state) { (t.state) }
                    td.num { (t.input_rows) }
                    td.muted { (t.error) }
                }
            }
        }
    })
    .into_response()
}

fn offsets_summary(p: &BatchProgress) -> String {
    let mut parts = Vec::new();
    for source in &p.sources {
        for (topic, partitions) in &source.start_offset {
            for (partition, start) in partitions {
                let end = source
                    .end_offset
                    .get(topic)
                    .and_then(|e| e.get(partition))
                    .copied()
                    .unwrap_or(*start);
                if end > *start {
                    parts.push(format!("{partition}: {start}–{end}"));
                }
            }
        }
    }
    parts.join(", ")
}

fn charts(batches: &[BatchProgress]) -> Markup {
    let ids: Vec<u64> = batches.iter().map(|p| p.batch_id).collect();
    let values = |f: &dyn Fn(&BatchProgress) -> f64| batches.iter().map(f).collect::<Vec<f64>>();
    let watermark_gap = values(&|p| {
        p.event_time
            .get("watermark")
            .and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok())
            .map_or(0.0, |w| {
                (p.timestamp_ms - w.timestamp_millis()) as f64 / 1000.0
            })
    });
    html! {
        div.charts {
            (lines("rates", "Input rate vs processing rate", "rows/s", &ids, &[
                Series { name: "input rows/s", color: "#1f77b4", values: values(&|p| p.input_rows_per_second) },
                Series { name: "processed rows/s", color: "#2ca02c", values: values(&|p| p.processed_rows_per_second) },
            ], Some("no batch yet")))
            (stacked_bars("duration", "Batch duration", "ms", &ids, &[
                Series { name: "offsets", color: "#9467bd", values: values(&|p| (p.duration_ms.latest_offset + p.duration_ms.wal_commit) as f64) },
                Series { name: "planning", color: "#8c564b", values: values(&|p| p.duration_ms.query_planning as f64) },
                Series { name: "tasks", color: "#2ca02c", values: values(&|p| p.duration_ms.add_batch as f64) },
                Series { name: "commit", color: "#d62728", values: values(&|p| p.duration_ms.commit_offsets as f64) },
            ]))
            (lines("scheduling-delay", "Scheduling delay", "ms", &ids, &[
                Series { name: "longest wait of a task for a slot", color: "#ff7f0e", values: values(&|p| p.scheduling_delay_ms as f64) },
            ], None))
            (lines("watermark-gap", "Watermark gap", "s", &ids, &[
                Series { name: "batch time minus watermark", color: "#17becf", values: watermark_gap },
            ], Some("no watermark: this job declares none")))
            (lines("state-rows", "State rows", "rows", &ids, &[
                Series { name: "rows in state", color: "#7f7f7f", values: values(&|p| p.state_rows() as f64) },
            ], Some("no state: this job has no stateful operator")))
        }
    }
}

pub async fn job(State(master): State<Arc<Master>>, Path(id): Path<String>) -> Response {
    let Some(detail) = master.jobs.detail(&id) else {
        return (StatusCode::NOT_FOUND, format!("job {id} not found")).into_response();
    };
    let j = &detail.view;
    let batches = &detail.batches_progress;
    let last_tasks = batches.last().map_or(0, |p| p.num_tasks);
    let active = j.state.is_active();
    layout(&master, &id, active, html! {
        h1 { "Job " (id) " " span class=(j.state.name()) { (j.state.name()) } " " @if active { (kill_button(&id)) } }
        @if !j.error.is_empty() { p.FAILED { (j.error) } }
        div.summary {
            div { "Submitted" b { (format_time(j.submitted_ms)) } }
            div { "Duration" b { (format_duration(j.duration_ms)) } }
            div { "Batches" b { (j.batches) } }
            div { "Rows in / out" b { (j.input_rows) " / " (j.output_rows) } }
            div { "Avg input rows/s" b { (format_rate(j.avg_input_rows_per_second)) } }
            div { "Avg processed rows/s" b { (format_rate(j.avg_processed_rows_per_second)) } }
            div { "Lag (records)" b { (batches.last().map_or(0, |p| p.offsets_behind_latest())) } }
        }
        h2 { "Charts (last " (batches.len()) " batches)" }
        (charts(batches))
        h2 { "Stages" }
        p.muted {
            "Output mode " b { (detail.output_mode) }
            @if let Some(n) = detail.shuffle_partitions { "; " (n) " shuffle partitions" }
            "; " (last_tasks) " tasks in the latest batch."
        }
        ol id="stages" {
            @for stage in &detail.stages {
                li {
                    @if stage.reads.is_empty() {
                        "Stage " (stage.id) ": read " (j.source)
                        span.muted { " — one task per Kafka partition with new records" }
                    } @else {
                        "Stage " (stage.id) ": read the shuffle of stage "
                        (stage.reads.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
                        span.muted { " — " (stage.tasks) " tasks, one per shuffle partition" }
                    }
                    @if stage.id as usize == detail.stages.len() { ", write " (j.sink) }
                    pre.stage { (stage.plan) }
                }
            }
        }
        details open {
            summary { "The whole plan" }
            pre id="plan" { (detail.plan) }
        }
        h2 { "Batches" }
        table id="batches" {
            tr {
                th { "Batch" } th { "Started" } th { "Offsets (partition: from–to)" } th { "Input rows" } th { "Output rows" }
                th { "Duration" } th { "Scheduling delay" } th { "State rows" } th { "Late rows dropped" } th { "Malformed records" }
            }
            @for p in batches.iter().rev().take(50) {
                tr {
                    td.num { (p.batch_id) }
                    td { (format_time(p.timestamp_ms)) }
                    td { (offsets_summary(p)) }
                    td.num { (p.num_input_rows) }
                    td.num { (p.num_output_rows) }
                    td.num { (format_duration(p.duration_ms.trigger_execution as i64)) }
                    td.num { (format_duration(p.scheduling_delay_ms as i64)) }
                    td.num { (p.state_rows()) }
                    td.num { (p.late_rows_dropped) }
                    td.num { (p.malformed_rows) }
                }
            }
        }
        h2 { "SQL" }
        pre id="sql" { (j.sql) }
    })
    .into_response()
}
