//! The spine end to end: master and workers as real processes on loopback,
//! Kafka as librdkafka's mock cluster, sinks checked row for row against
//! DataFusion over the same records.

mod common;

use spate_proto::{JobState, WorkerState};
use std::process::Command;
use std::time::Duration;

use common::*;

const SALES_COLUMNS: &str =
    "id BIGINT, customer VARCHAR, revenue DOUBLE, country VARCHAR, \"timestamp\" TIMESTAMP";
const OUT_COLUMNS: &str = "id BIGINT, customer VARCHAR, revenue_cents BIGINT, country VARCHAR, ts TIMESTAMP, p INT, o BIGINT";

fn filter_job(bootstrap: &str) -> String {
    format!(
        "-- big sales outside France, with where each record came from
        CREATE EXTERNAL TABLE sales ({SALES_COLUMNS})
        STORED AS KAFKA LOCATION 'sales'
        OPTIONS ('bootstrap.servers' '{bootstrap}', 'format' 'json', 'max_offsets_per_trigger' '300');
        CREATE EXTERNAL TABLE out ({OUT_COLUMNS}) STORED AS PARQUET LOCATION 'output/filtered/';
        SET spate.trigger.interval = '100ms';
        INSERT INTO out
        SELECT id, upper(customer), CAST(revenue * 100 AS BIGINT), country, \"timestamp\", _partition, _offset
        FROM sales WHERE revenue > 100 AND country <> 'FR';"
    )
}

const REFERENCE_QUERY: &str = "SELECT id, upper(customer) AS customer, CAST(revenue * 100 AS BIGINT) AS revenue_cents, \
     country, \"timestamp\" AS ts FROM sales WHERE revenue > 100 AND country <> 'FR' ORDER BY id";
const SINK_QUERY: &str = "SELECT id, customer, revenue_cents, country, ts FROM out ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_job_is_exactly_once_on_worker_processes_across_a_master_restart() {
    let ws = tempfile::tempdir().unwrap();
    spine(ws.path()).await;
}

/// The same on a real S3-protocol server: no shared folder, no rename,
/// the logs' exclusive creates as conditional PUTs; the sink read back
/// through the S3 API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_job_is_exactly_once_on_an_s3_workspace() {
    let ws = S3Workspace::start();
    spine(&ws).await;
    let listed = ws.open().list_names("output/filtered").await.unwrap();
    assert!(
        listed.iter().any(|name| name.ends_with(".parquet")),
        "{listed:?}"
    );
}

async fn spine(ws: &(impl TestWorkspace + ?Sized)) {
    let (_kafka, bootstrap) = sales_kafka();
    let mut master = start_master(ws, "127.0.0.1:0", &[]);
    let url = master.url();
    let _w1 = start_worker(&url, ws, "w1");
    let _w2 = start_worker(&url, ws, "w2");

    produce_sales(&bootstrap, "sales", 0..4000, 4).await;
    let id = submit(&url, "filtered", &filter_job(&bootstrap))
        .await
        .unwrap();
    assert_eq!(id, "filtered");
    wait_until(
        "three committed batches",
        Duration::from_secs(120),
        || async { job(&url, &id).await.is_some_and(|j| j.batches >= 3) },
    )
    .await;

    // Tasks run on the workers, and on both of them.
    let seen = workers(&url).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    for w in &seen {
        assert!(
            w.tasks_succeeded > 0,
            "worker {} ran no task: {seen:?}",
            w.worker_id
        );
        assert_eq!(w.state(), WorkerState::Alive);
    }

    // The web UI and its JSON twins show the same cluster.
    let http = master.http.clone();
    let api: serde_json::Value = reqwest::get(format!("{http}/api/v1/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["w1", "w2"]);
    assert!(
        api.as_array()
            .unwrap()
            .iter()
            .all(|w| w["state"] == "ALIVE" && w["slots"] == 2)
    );
    let jobs: serde_json::Value = reqwest::get(format!("{http}/api/v1/jobs"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs[0]["id"], "filtered");
    assert_eq!(jobs[0]["state"], "RUNNING");
    assert!(jobs[0]["batches"].as_u64().unwrap() >= 3);
    let page = reqwest::get(&http).await.unwrap().text().await.unwrap();
    for expected in [
        "Workers", "w1", "w2", "ALIVE", "Jobs", "filtered", "RUNNING",
    ] {
        assert!(page.contains(expected), "the UI page lacks {expected}");
    }

    // Kill the master mid-stream; more records arrive while it is down.
    master.proc.kill();
    produce_sales(&bootstrap, "sales", 4000..8000, 4).await;
    let master = start_master(ws, &master.grpc, &[]);
    let url = master.url();
    wait_for_input_rows(&url, &id, 8000).await;
    let resumed = job(&url, &id).await.unwrap();
    assert_eq!(resumed.state(), JobState::Running);
    assert_eq!(
        resumed.input_rows, 8000,
        "no record is read twice: {resumed:?}"
    );

    let got = query_sink(ws, "output/filtered/", OUT_COLUMNS, "PARQUET", SINK_QUERY).await;
    let want = reference(0..8000, SALES_COLUMNS, REFERENCE_QUERY).await;
    assert_eq!(got, want);
    // Every row sits where its record was produced: record i is offset i/4 of partition i%4.
    let misplaced = query_sink(
        ws,
        "output/filtered/",
        OUT_COLUMNS,
        "PARQUET",
        "SELECT count(*) AS n FROM out WHERE p <> id % 4 OR o <> id / 4",
    )
    .await;
    assert!(misplaced.contains("| 0 |"), "{misplaced}");

    // The workers came back to the new master by themselves.
    wait_until(
        "both workers to reconnect",
        Duration::from_secs(30),
        || async {
            workers(&url)
                .await
                .iter()
                .filter(|w| w.state() == WorkerState::Alive)
                .count()
                == 2
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_refused_with_one_clear_error_and_nothing_submitted() {
    let (_kafka, bootstrap) = sales_kafka();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let url = master.url();
    let good = filter_job(&bootstrap);
    let cases = [
        (
            "syntax",
            good.replace("SELECT id", "SELEC id"),
            "syntax error",
        ),
        (
            "option",
            good.replace("'format' 'json'", "'fromat' 'json'"),
            "unknown option 'fromat'",
        ),
        (
            "stored",
            good.replace("STORED AS PARQUET", "STORED AS AVRO"),
            "STORED AS AVRO is not supported",
        ),
        (
            "topic",
            good.replace("LOCATION 'sales'", "LOCATION 'no_such_topic'"),
            "topic 'no_such_topic' does not exist",
        ),
        (
            "escape",
            good.replace("'output/filtered/'", "'../outside/'"),
            "outside the workspace",
        ),
        (
            "column",
            good.replace("upper(customer)", "upper(custmer)"),
            "custmer",
        ),
    ];
    for (name, sql, expected) in cases {
        let file = ws.path().join(format!("{name}.sql"));
        std::fs::write(&file, sql).unwrap();
        let out = Command::new(bin("driver"))
            .args(["submit", file.to_str().unwrap(), "--master", &url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(
            stderr.contains(expected),
            "{name}: expected '{expected}' in: {stderr}"
        );
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{name}: {stderr}"
        );
    }
    let mut c = client(&url).await;
    let jobs = c
        .list_jobs(spate_proto::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "refused jobs were registered: {jobs:?}");
    assert!(!ws.path().join("_spate/checkpoints").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_kafka_makes_the_job_wait_and_lose_nothing() {
    let (kafka, bootstrap) = sales_kafka();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let url = master.url();
    let _worker = start_worker(&url, ws.path(), "w1");

    // Submitted while Kafka is down: accepted, and it says what it waits for.
    kafka.broker_down(1).unwrap();
    let id = submit(&url, "filtered", &filter_job(&bootstrap))
        .await
        .unwrap();
    wait_until(
        "the new job to wait for Kafka",
        Duration::from_secs(60),
        || async {
            job(&url, &id)
                .await
                .is_some_and(|j| j.state() == JobState::Waiting && j.error.contains("kafka"))
        },
    )
    .await;
    kafka.broker_up(1).unwrap();
    produce_sales(&bootstrap, "sales", 0..1000, 4).await;
    wait_for_input_rows(&url, &id, 1000).await;

    // Down while it runs.

    kafka.broker_down(1).unwrap();
    wait_until(
        "the job to say it waits for Kafka",
        Duration::from_secs(60),
        || async {
            job(&url, &id)
                .await
                .is_some_and(|j| j.state() == JobState::Waiting && j.error.contains("kafka"))
        },
    )
    .await;
    kafka.broker_up(1).unwrap();
    produce_sales(&bootstrap, "sales", 1000..2000, 4).await;
    wait_for_input_rows(&url, &id, 2000).await;
    let recovered = job(&url, &id).await.unwrap();
    assert_eq!(
        (recovered.state(), recovered.input_rows),
        (JobState::Running, 2000)
    );

    let got = query_sink(
        ws.path(),
        "output/filtered/",
        OUT_COLUMNS,
        "PARQUET",
        SINK_QUERY,
    )
    .await;
    assert_eq!(
        got,
        reference(0..2000, SALES_COLUMNS, REFERENCE_QUERY).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_fails_the_job_at_once_with_its_error() {
    let (_kafka, bootstrap) = sales_kafka();
    produce_sales(&bootstrap, "sales", 0..40, 4).await;
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), str>::to("sales")
                .payload("not json")
                .partition(2),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let url = master.url();
    let _worker = start_worker(&url, ws.path(), "w1");
    let sql = filter_job(&bootstrap).replace(
        "SET spate.trigger.interval = '100ms';",
        "SET spate.trigger.interval = '100ms'; SET spate.task.max_failures = 2;",
    );
    let id = submit(&url, "filtered", &sql).await.unwrap();
    wait_until("the job to fail", Duration::from_secs(60), || async {
        job(&url, &id)
            .await
            .is_some_and(|j| j.state() == JobState::Failed)
    })
    .await;
    let failed = job(&url, &id).await.unwrap();
    assert!(
        failed
            .error
            .contains("malformed record in topic 'sales' partition 2 at offset 10"),
        "{}",
        failed.error
    );
    // A record that does not decode fails the same way every time: the
    // task is not run again (its error's kind is a plan error).
    assert!(
        failed
            .error
            .contains("running it again would fail the same way"),
        "{}",
        failed.error
    );
    assert_eq!(failed.batches, 0, "the failed batch is not committed");
    let out = Command::new(bin("driver"))
        .args(["jobs", "--master", &url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("FAILED") && table.contains("malformed record"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_has_its_tasks_rerun_and_nothing_lost() {
    let (_kafka, bootstrap) = sales_kafka();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let url = master.url();
    let mut doomed = start_worker(&url, ws.path(), "w1");
    let _survivor = start_worker(&url, ws.path(), "w2");
    produce_sales(&bootstrap, "sales", 0..6000, 4).await;
    let id = submit(&url, "filtered", &filter_job(&bootstrap))
        .await
        .unwrap();
    wait_until(
        "two committed batches",
        Duration::from_secs(120),
        || async { job(&url, &id).await.is_some_and(|j| j.batches >= 2) },
    )
    .await;
    doomed.kill();
    wait_for_input_rows(&url, &id, 6000).await;
    let states: Vec<(String, WorkerState)> = workers(&url)
        .await
        .into_iter()
        .map(|w| (w.worker_id.clone(), w.state()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("w1".into(), WorkerState::Dead),
            ("w2".into(), WorkerState::Alive)
        ]
    );
    assert_eq!(job(&url, &id).await.unwrap().input_rows, 6000);
    let got = query_sink(
        ws.path(),
        "output/filtered/",
        OUT_COLUMNS,
        "PARQUET",
        SINK_QUERY,
    )
    .await;
    assert_eq!(
        got,
        reference(0..6000, SALES_COLUMNS, REFERENCE_QUERY).await
    );
}
