//! Faults an in-process cluster can stage: records Kafka deletes before a
//! job reads them (the job fails naming topic, partition and offsets, unless
//! the table sets 'fail_on_data_loss' 'false', when the batch skips and
//! counts them), and a job killed mid-batch that resumes with every row once.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::kafka::KafkaAdmin;

async fn produce(cluster: &Cluster, ids: std::ops::Range<u64>, padding: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap_servers())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let pad = "x".repeat(padding);
    for id in ids {
        let payload = serde_json::json!({"id": id, "pad": pad}).to_string();
        producer
            .send(
                FutureRecord::<(), String>::to("lossy")
                    .payload(&payload)
                    .partition(0),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn job(fail_on_data_loss: bool) -> String {
    format!(
        "CREATE EXTERNAL TABLE lossy (id BIGINT) STORED AS KAFKA LOCATION 'lossy'
           OPTIONS ('fail_on_data_loss' '{fail_on_data_loss}');
         CREATE EXTERNAL TABLE out (id BIGINT) STORED AS PARQUET LOCATION 'output/lossy/';
         SET spate.trigger.interval = '100ms';
         INSERT INTO out SELECT id FROM lossy;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_before_they_were_read_fail_the_job_or_are_skipped_and_counted() {
    let ws = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws.path(), 1).await;
    cluster.broker.create_topic("lossy", 1).unwrap();
    produce(&cluster, 0..5, 10).await;
    let id = cluster.submit_sql("lossy", job(true)).await;
    wait_until("five rows read", || async {
        cluster.job(&id).await["input_rows"] == 5
    })
    .await;
    cluster.stop_job(&id).await;

    // While the job is stopped, more than the development broker keeps
    // (5 MiB a partition) arrives: the oldest unread records are deleted.
    produce(&cluster, 5..75, 100_000).await;
    let admin = KafkaAdmin::new(cluster.broker.bootstrap_servers(), &Default::default());
    let low = admin.partition_offsets("lossy").await.unwrap()[0].low;
    assert!(low > 5, "retention deleted nothing (low watermark {low})");

    assert_eq!(cluster.submit_sql("lossy", job(true)).await, id);
    let failed = cluster.wait_for_state(&id, "FAILED").await;
    let error = failed["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&format!(
            "records of topic 'lossy' were deleted by Kafka (retention) before the job read them: partition 0 offsets 5..{low}"
        )) && error.contains("set 'fail_on_data_loss' 'false' on table 'lossy'"),
        "{error}"
    );

    // Allowed to lose them, the same job resumes past the gap and counts it.
    assert_eq!(cluster.submit_sql("lossy", job(false)).await, id);
    wait_until("the rest read", || async {
        cluster.job(&id).await["input_rows"] == serde_json::json!(5 + 75 - low)
    })
    .await;
    let batches = get_json(&format!("{}/api/v1/jobs/{id}/batches", cluster.ui())).await;
    let lost: u64 = batches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["recordsLostToRetention"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(lost, low as u64 - 5);
    cluster.stop().await;
}

/// `driver stop --kill` abandons the running batch; the job resumes from its
/// checkpoint when submitted again, and the sink has every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_resumes_from_its_checkpoint_with_every_row_once() {
    let ws = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws.path(), 2).await;
    cluster.produce(0..2000).await;
    let id = cluster.submit("killed").await;
    wait_until("two batches", || async {
        cluster.job(&id).await["batches"].as_u64() >= Some(2)
    })
    .await;
    let mut client = spate_proto::client_service_client::ClientServiceClient::connect(format!(
        "http://{}",
        cluster.master.grpc_addr
    ))
    .await
    .unwrap();
    client
        .stop_job(spate_proto::StopJobRequest {
            job_id: id.clone(),
            kill: true,
        })
        .await
        .unwrap();
    let killed = cluster.wait_for_state(&id, "STOPPED").await;
    let when_killed = killed["input_rows"].as_u64().unwrap();
    assert!(when_killed < 2000, "the job was killed mid-stream");

    assert_eq!(cluster.submit("killed").await, id);
    wait_until("every record read", || async {
        cluster.job(&id).await["input_rows"] == 2000
    })
    .await;
    let ctx = spate_engine::job::session(&spate_engine::job::PlanEnv::new(
        spate_engine::Workspace::open(ws.path()).unwrap(),
        "",
    ));
    ctx.sql("CREATE EXTERNAL TABLE out (id BIGINT, customer VARCHAR) STORED AS PARQUET LOCATION 'output/killed/'")
        .await
        .unwrap();
    let counts = ctx
        .sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM out")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let expected = (0..2000u64).filter(|i| (i % 300) > 50).count() as i64;
    let column = |i: usize| {
        counts[0]
            .column(i)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!((column(0), column(1)), (expected, expected));
    cluster.stop().await;
}

/// Record i of the messy topic: every tenth does not decode, alternately
/// not JSON at all and JSON with a value of the wrong type.
fn messy(i: u64) -> String {
    match (i % 10, i % 20) {
        (9, 9) => format!("not json {i}"),
        (9, _) => format!("{{\"id\": \"id-{i}\", \"amount\": 1.5}}"),
        _ => format!("{{\"id\": {i}, \"amount\": {}.25}}", i % 7),
    }
}

async fn sink_rows(ws: &std::path::Path, columns: &str, dir: &str, query: &str) -> Vec<String> {
    let ctx = spate_engine::job::session(&spate_engine::job::PlanEnv::new(
        spate_engine::Workspace::open(ws).unwrap(),
        "",
    ));
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE out ({columns}) STORED AS PARQUET LOCATION '{dir}'"
    ))
    .await
    .unwrap();
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
        .lines()
        .skip(3)
        .filter(|l| !l.starts_with('+'))
        .map(str::to_string)
        .collect()
}

async fn malformed_counted(cluster: &Cluster, id: &str) -> u64 {
    let batches = get_json(&format!("{}/api/v1/jobs/{id}/batches", cluster.ui())).await;
    batches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["malformedRows"].as_u64().unwrap_or(0))
        .sum()
}

/// 10% malformed records under each `on_error` mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_fail_the_job_or_are_dropped_or_kept_as_corrupt_rows() {
    let ws = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws.path(), 2).await;
    cluster.broker.create_topic("messy", 2).unwrap();
    cluster.broker.create_topic("bad_records", 1).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap_servers())
        .create()
        .unwrap();
    for i in 0..200u64 {
        producer
            .send(
                FutureRecord::<String, String>::to("messy")
                    .payload(&messy(i))
                    .key(&format!("k{i}"))
                    .partition((i % 2) as i32),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let job = |name: &str, options: &str, columns: &str, select: &str| {
        format!(
            "CREATE EXTERNAL TABLE messy (id BIGINT, amount DOUBLE) STORED AS KAFKA LOCATION 'messy' OPTIONS ({options});
             CREATE EXTERNAL TABLE out ({columns}) STORED AS PARQUET LOCATION 'output/{name}/';
             SET spate.trigger.interval = '100ms';
             SET spate.task.max_failures = 1;
             INSERT INTO out SELECT {select} FROM messy;"
        )
    };
    let good: Vec<String> = (0..200u64)
        .filter(|i| i % 10 != 9)
        .map(|i| format!("| {i}  "))
        .collect();

    // fail: the job stops at the first bad record, naming where it is.
    let failing = cluster
        .submit_sql(
            "strict",
            job("strict", "'on_error' 'fail'", "id BIGINT", "id"),
        )
        .await;
    let failed = cluster.wait_for_state(&failing, "FAILED").await;
    let error = failed["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("malformed record in topic 'messy' partition 1 at offset 4"),
        "{error}"
    );

    // drop: the good rows only, the bad ones counted and copied as they came.
    let dropping = cluster
        .submit_sql(
            "dropping",
            job(
                "dropping",
                "'on_error' 'drop', 'dead_letter_topic' 'bad_records'",
                "id BIGINT",
                "id",
            ),
        )
        .await;
    // permissive: every row; bad ones NULL with their raw value in _corrupt.
    let keeping = cluster
        .submit_sql(
            "keeping",
            job(
                "keeping",
                "'on_error' 'permissive'",
                "id BIGINT, raw VARCHAR",
                "id, _corrupt",
            ),
        )
        .await;
    for id in [&dropping, &keeping] {
        wait_until("every record read", || async {
            cluster.job(id).await["input_rows"] == 200
        })
        .await;
        assert_eq!(malformed_counted(&cluster, id).await, 20, "{id}");
    }
    let dropped = sink_rows(
        ws.path(),
        "id BIGINT",
        "output/dropping/",
        "SELECT id FROM out ORDER BY id",
    )
    .await;
    assert_eq!(dropped.len(), 180);
    assert!(
        dropped
            .iter()
            .zip(&good)
            .all(|(row, want)| row.starts_with(want.trim_end())),
        "{dropped:?}"
    );
    let kept = sink_rows(
        ws.path(),
        "id BIGINT, raw VARCHAR",
        "output/keeping/",
        "SELECT raw FROM out WHERE id IS NULL ORDER BY raw",
    )
    .await;
    let mut bad: Vec<String> = (0..200u64).filter(|i| i % 10 == 9).map(messy).collect();
    bad.sort();
    assert_eq!(kept.len(), 20, "{kept:?}");
    for (row, raw) in kept.iter().zip(&bad) {
        assert!(row.contains(raw.as_str()), "{row} lacks {raw}");
    }

    // The dead-letter topic holds the 20 bad records.
    let admin = KafkaAdmin::new(cluster.broker.bootstrap_servers(), &Default::default());
    let dead = admin.partition_offsets("bad_records").await.unwrap();
    assert_eq!(dead.iter().map(|p| p.high - p.low).sum::<i64>(), 20);
    cluster.stop().await;
}
