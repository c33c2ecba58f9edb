//! Faults with windowed state: worker processes killed with SIGKILL several
//! times in one run and the master killed and restarted, while a tumbling
//! window job keeps state across batches. The sink must equal DataFusion's
//! answer over the same records, row for row: nothing lost, nothing twice.

mod common;

use spate_proto::JobState;
use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const RECORDS: u64 = 3000;
const SALES_COLUMNS: &str =
    "id BIGINT, customer VARCHAR, revenue DOUBLE, country VARCHAR, \"timestamp\" TIMESTAMP";
const OUT_COLUMNS: &str = "minute TIMESTAMP, country VARCHAR, sales BIGINT, revenue DOUBLE";
const QUERY: &str = "SELECT date_bin(INTERVAL '1 minute', \"timestamp\") AS minute, country, \
     count(*) AS sales, sum(revenue) AS revenue FROM sales GROUP BY 1, 2";

fn windowed_job(bootstrap: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE sales ({SALES_COLUMNS})
        STORED AS KAFKA LOCATION 'sales'
        OPTIONS ('bootstrap.servers' '{bootstrap}', 'max_offsets_per_trigger' '200',
                 'watermark' 'timestamp - INTERVAL 1 MINUTE');
        CREATE EXTERNAL TABLE out ({OUT_COLUMNS}) STORED AS PARQUET LOCATION 'output/windowed/';
        SET spate.trigger.interval = '100ms';
        INSERT INTO out {QUERY};"
    )
}

/// One sale long after the others: the watermark passes every window of
/// the test's records, so all of them are written.
async fn produce_closing_sale(bootstrap: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let closing = serde_json::json!({"id": 999_999, "customer": "zed", "revenue": 0.25,
        "country": "US", "timestamp": "2026-11-21T13:00:00.000Z"})
    .to_string();
    producer
        .send(
            FutureRecord::<(), String>::to("sales")
                .payload(&closing)
                .partition(0),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_state_survives_killed_workers_and_a_killed_master() {
    let ws = tempfile::tempdir().unwrap();
    windowed_state_through_kills(ws.path()).await;
}

/// The same with the workspace on a real S3-protocol server, where a
/// killed process leaves no half-renamed file, only whole objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_state_on_s3_survives_killed_workers_and_a_killed_master() {
    let ws = S3Workspace::start();
    windowed_state_through_kills(&ws).await;
}

async fn windowed_state_through_kills(ws: &(impl TestWorkspace + ?Sized)) {
    let (_kafka, bootstrap) = sales_kafka();
    let mut master = start_master(ws, "127.0.0.1:0", &[]);
    let mut url = master.url();
    let mut workers: Vec<Proc> = (1..=3)
        .map(|i| start_worker(&url, ws, &format!("w{i}")))
        .collect();
    produce_sales(&bootstrap, "sales", 0..RECORDS, 4).await;
    let id = submit(&url, "windowed", &windowed_job(&bootstrap))
        .await
        .unwrap();

    // Kill two workers, then the master, then another worker, each while
    // batches run; a replacement worker joins after each worker's kill.
    let mut next_worker = 4;
    for (step, batches) in [(0, 2u64), (1, 4), (2, 6), (3, 9)] {
        let url_now = url.clone();
        wait_until(
            &format!("{batches} committed batches"),
            Duration::from_secs(120),
            || async {
                job(&url_now, &id)
                    .await
                    .is_some_and(|j| j.batches >= batches)
            },
        )
        .await;
        if step == 2 {
            master.proc.kill();
            master = start_master(ws, &master.grpc, &[]);
            url = master.url();
        } else {
            workers.remove(0).kill();
            workers.push(start_worker(&url, ws, &format!("w{next_worker}")));
            next_worker += 1;
        }
    }

    // Only once every record is in: earlier, it would make the rest late.
    wait_for_input_rows(&url, &id, RECORDS).await;
    produce_closing_sale(&bootstrap).await;
    let want = reference(0..RECORDS, SALES_COLUMNS, &format!("{QUERY} ORDER BY 1, 2")).await;
    let rows = want.lines().count() as u64 - 4;
    let url_now = url.clone();
    wait_until("every window written", Duration::from_secs(180), || async {
        job(&url_now, &id)
            .await
            .is_some_and(|j| j.output_rows >= rows)
    })
    .await;
    let resumed = job(&url, &id).await.unwrap();
    assert_eq!(resumed.state(), JobState::Running, "{resumed:?}");
    assert_eq!(
        resumed.input_rows,
        RECORDS + 1,
        "no record read twice: {resumed:?}"
    );
    let got = query_sink(
        ws,
        "output/windowed/",
        OUT_COLUMNS,
        "PARQUET",
        "SELECT * FROM out ORDER BY 1, 2",
    )
    .await;
    let missing: Vec<&str> = want.lines().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&str> = got.lines().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && got == want,
        "the sink differs from the reference\nmissing: {missing:#?}\nextra: {extra:#?}"
    );
}
