//! The job controller against real processes: a worker that stops
//! answering without closing its stream (SIGSTOP), a job killed in the
//! middle of a long batch, and two masters on one workspace. Each sink is
//! compared row for row with DataFusion's answer over the same records.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use spate_proto::{JobState, WorkerState};

const SALES_COLUMNS: &str =
    "id BIGINT, customer VARCHAR, revenue DOUBLE, country VARCHAR, \"timestamp\" TIMESTAMP";

fn filter_job(bootstrap: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE sales ({SALES_COLUMNS})
        STORED AS KAFKA LOCATION 'sales'
        OPTIONS ('bootstrap.servers' '{bootstrap}', 'max_offsets_per_trigger' '300');
        CREATE EXTERNAL TABLE out (id BIGINT, customer VARCHAR, revenue DOUBLE) STORED AS PARQUET LOCATION 'output/filtered/';
        SET spate.trigger.interval = '100ms';
        INSERT INTO out SELECT id, customer, revenue FROM sales WHERE revenue > 100;"
    )
}

const FILTER_REFERENCE: &str =
    "SELECT id, customer, revenue FROM sales WHERE revenue > 100 ORDER BY id";
const FILTER_SINK: &str = "SELECT id, customer, revenue FROM out ORDER BY id";
const FILTER_OUT: &str = "id BIGINT, customer VARCHAR, revenue DOUBLE";

fn signal(proc: &Proc, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} failed");
}

async fn worker_state(url: &str, id: &str) -> Option<WorkerState> {
    workers(url)
        .await
        .into_iter()
        .find(|w| w.worker_id == id)
        .map(|w| w.state())
}

async fn assert_sink_equals_reference(
    ws: &(impl TestWorkspace + ?Sized),
    records: std::ops::Range<u64>,
) {
    let got = query_sink(ws, "output/filtered/", FILTER_OUT, "PARQUET", FILTER_SINK).await;
    let want = reference(records, SALES_COLUMNS, FILTER_REFERENCE).await;
    assert_same_rows(&got, &want);
}

/// Equal tables, or the rows one has and the other lacks.
fn assert_same_rows(got: &str, want: &str) {
    if got == want {
        return;
    }
    let missing: Vec<&str> = want.lines().filter(|l| !got.contains(l)).take(20).collect();
    let extra: Vec<&str> = got.lines().filter(|l| !want.contains(l)).take(20).collect();
    panic!(
        "the sink differs from DataFusion's answer ({} lines against {}); missing: {missing:#?}, extra: {extra:#?}",
        got.lines().count(),
        want.lines().count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_answering_has_its_tasks_run_elsewhere() {
    let (_kafka, bootstrap) = sales_kafka();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let url = master.url();
    let frozen = start_worker(&url, ws.path(), "w1");
    let _w2 = start_worker(&url, ws.path(), "w2");
    produce_sales(&bootstrap, "sales", 0..2000, 4).await;
    let id = submit(&url, "filtered", &filter_job(&bootstrap))
        .await
        .unwrap();
    wait_until("two committed batches", Duration::from_secs(60), || async {
        job(&url, &id).await.is_some_and(|j| j.batches >= 2)
    })
    .await;

    // Stopped, w1 keeps its connection open and says nothing more: only
    // the heartbeat timeout (3 s here) tells the master it is gone.
    signal(&frozen, "-STOP");
    produce_sales(&bootstrap, "sales", 2000..4000, 4).await;
    wait_until("w1 to be DEAD", Duration::from_secs(30), || async {
        worker_state(&url, "w1").await == Some(WorkerState::Dead)
    })
    .await;
    wait_for_input_rows(&url, &id, 4000).await;
    assert_eq!(job(&url, &id).await.unwrap().input_rows, 4000);

    // Woken, w1 finds its stream ended, reconnects, and what it was
    // running when frozen changes nothing committed.
    signal(&frozen, "-CONT");
    wait_until("w1 to be back", Duration::from_secs(30), || async {
        worker_state(&url, "w1").await == Some(WorkerState::Alive)
    })
    .await;
    assert_sink_equals_reference(ws.path(), 0..4000).await;
}

/// Records per partition: each task decodes and hashes several 8192-row
/// batches, so the batch runs for seconds and a cancel lands mid-task.
const HEAVY_PER_PARTITION: u64 = 12_000;
const HEAVY_QUERY: &str =
    "SELECT id, encode(digest(repeat(customer, 1200), 'sha256'), 'hex') AS h FROM sales";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_long_batch_frees_the_slots_and_a_resubmit_resumes_with_every_row_once() {
    let (_kafka, bootstrap) = sales_kafka();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let url = master.url();
    let _workers = start_workers(&url, ws.path(), &["w1", "w2"]);
    let records = 4 * HEAVY_PER_PARTITION;
    produce_sales(&bootstrap, "sales", 0..records, 4).await;
    let sql = format!(
        "CREATE EXTERNAL TABLE sales ({SALES_COLUMNS}) STORED AS KAFKA LOCATION 'sales'
           OPTIONS ('bootstrap.servers' '{bootstrap}');
         CREATE EXTERNAL TABLE out (id BIGINT, h VARCHAR) STORED AS PARQUET LOCATION 'output/heavy/';
         INSERT INTO out {HEAVY_QUERY};"
    );
    let id = submit(&url, "heavy", &sql).await.unwrap();
    let slots_used = || async {
        workers(&url)
            .await
            .iter()
            .map(|w| w.slots_used)
            .sum::<u32>()
    };
    wait_until(
        "the batch's four tasks to run",
        Duration::from_secs(60),
        || async { slots_used().await == 4 },
    )
    .await;

    let killed = Command::new(bin("driver"))
        .args(["stop", &id, "--kill", "--master", &url])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    let kill_sent = Instant::now();
    wait_until("the slots to be free", Duration::from_secs(10), || async {
        slots_used().await == 0
    })
    .await;
    let freed_in = kill_sent.elapsed();
    eprintln!("the kill freed the slots in {freed_in:?}");
    // The heartbeat is 1 s; the cancel travels at once.
    assert!(freed_in < Duration::from_millis(2500), "{freed_in:?}");
    wait_until("the job to stop", Duration::from_secs(20), || async {
        job(&url, &id)
            .await
            .is_some_and(|j| j.state() == JobState::Stopped)
    })
    .await;
    assert_eq!(job(&url, &id).await.unwrap().batches, 0);

    // Submitted again, the job re-runs the killed batch from its log.
    assert_eq!(submit(&url, "heavy", &sql).await.unwrap(), id);
    wait_for_input_rows(&url, &id, records).await;
    let done = job(&url, &id).await.unwrap();
    assert_eq!(
        (done.input_rows, done.output_rows),
        (records, records),
        "{done:?}"
    );
    let got = query_sink(
        ws.path(),
        "output/heavy/",
        "id BIGINT, h VARCHAR",
        "PARQUET",
        "SELECT id, h FROM out ORDER BY id",
    )
    .await;
    let want = reference(
        0..records,
        SALES_COLUMNS,
        &format!("{HEAVY_QUERY} ORDER BY id"),
    )
    .await;
    assert_same_rows(&got, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_on_one_workspace_leave_one_controller_and_every_row_once() {
    let ws = tempfile::tempdir().unwrap();
    two_masters(ws.path()).await;
}

/// The same on S3, where one writer per log entry is a conditional PUT
/// (`If-None-Match: *`) that the server refuses to the second master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_on_one_s3_workspace_leave_one_controller_and_every_row_once() {
    let ws = S3Workspace::start();
    two_masters(&ws).await;
}

async fn two_masters(ws: &(impl TestWorkspace + ?Sized)) {
    let (_kafka, bootstrap) = sales_kafka();
    let first = start_master(ws, "127.0.0.1:0", &[]);
    let _workers = start_workers(&first.url(), ws, &["w1", "w2"]);
    produce_sales(&bootstrap, "sales", 0..2000, 4).await;
    let id = submit(&first.url(), "filtered", &filter_job(&bootstrap))
        .await
        .unwrap();
    wait_until("two committed batches", Duration::from_secs(60), || async {
        job(&first.url(), &id).await.is_some_and(|j| j.batches >= 2)
    })
    .await;

    // A second master on the same workspace resumes the job it finds
    // recorded as running, with a worker of its own.
    let second = start_master(ws, "127.0.0.1:0", &[]);
    let _w3 = start_worker(&second.url(), ws, "w3");
    produce_sales(&bootstrap, "sales", 2000..4000, 4).await;
    let masters = [first.url(), second.url()];
    let deadline = Instant::now() + Duration::from_secs(60);
    let winner = loop {
        let mut jobs = Vec::new();
        for url in &masters {
            jobs.push(job(url, &id).await.unwrap());
        }
        let failed: Vec<_> = jobs
            .iter()
            .filter(|j| j.state() == JobState::Failed)
            .collect();
        let running = jobs.iter().position(|j| j.state() == JobState::Running);
        if let ([loser], Some(running)) = (failed.as_slice(), running) {
            assert!(
                loser.error.contains("another controller runs this job")
                    && loser.error.contains("by controller")
                    && loser.error.contains("of master"),
                "{}",
                loser.error
            );
            break masters[running].clone();
        }
        assert!(Instant::now() < deadline, "no controller stopped: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_for_input_rows(&winner, &id, 4000).await;
    assert_eq!(job(&winner, &id).await.unwrap().state(), JobState::Running);
    assert_sink_equals_reference(ws, 0..4000).await;
}
