//! The REST API's JSON and Prometheus text, on an in-process cluster.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answers_with_the_cluster_and_its_jobs() {
    let ws = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws.path(), 2).await;
    cluster.produce(0..1000).await;
    let id = cluster.submit("filtered").await;
    let ui = cluster.ui();
    wait_until("three batches", || async {
        get_json(&format!("{ui}/api/v1/jobs")).await[0]["batches"].as_u64() >= Some(3)
    })
    .await;

    let workers = get_json(&format!("{ui}/api/v1/workers")).await;
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        for field in [
            "id",
            "host",
            "state",
            "slots",
            "slots_used",
            "memory_bytes",
            "last_heartbeat_ms",
            "tasks_succeeded",
            "tasks_failed",
        ] {
            assert!(w.get(field).is_some(), "worker lacks {field}: {w}");
        }
        assert_eq!(w["state"], "ALIVE");
    }
    let worker = get_json(&format!("{ui}/api/v1/workers/w1")).await;
    assert_eq!(worker["id"], "w1");
    let recent = worker["recent_tasks"].as_array().unwrap();
    assert!(!recent.is_empty(), "{worker}");
    assert_eq!(recent[0]["job_id"], "filtered");
    assert_eq!(recent[0]["state"], "SUCCEEDED");
    assert!(worker["running_tasks"].is_array());

    let jobs = get_json(&format!("{ui}/api/v1/jobs")).await;
    let job = &jobs[0];
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["state"], "RUNNING");
    for field in [
        "submitted_ms",
        "duration_ms",
        "batches",
        "input_rows",
        "output_rows",
        "avg_input_rows_per_second",
        "avg_processed_rows_per_second",
        "latest_batch",
        "error",
        "sql",
        "source",
        "sink",
    ] {
        assert!(job.get(field).is_some(), "job lacks {field}: {job}");
    }
    let detail = get_json(&format!("{ui}/api/v1/jobs/{id}")).await;
    assert!(
        detail["plan"].as_str().unwrap().contains("KafkaScanExec"),
        "{detail}"
    );

    // Batches and progress are Spark's StreamingQueryProgress in shape.
    let batches = get_json(&format!("{ui}/api/v1/jobs/{id}/batches")).await;
    let batches = batches.as_array().unwrap();
    assert!(batches.len() >= 3);
    let first = &batches[0];
    assert_eq!(first["batchId"], 0);
    for field in [
        "id",
        "timestamp",
        "numInputRows",
        "inputRowsPerSecond",
        "processedRowsPerSecond",
        "durationMs",
        "eventTime",
        "stateOperators",
        "sources",
        "sink",
        "schedulingDelayMs",
    ] {
        assert!(
            first.get(field).is_some(),
            "progress lacks {field}: {first}"
        );
    }
    assert_eq!(
        first["numInputRows"], 100,
        "max_offsets_per_trigger caps a batch"
    );
    let source = &first["sources"][0];
    let read: i64 = ["0", "1", "2", "3"]
        .iter()
        .map(|p| {
            source["endOffset"]["sales"][p].as_i64().unwrap()
                - source["startOffset"]["sales"][p].as_i64().unwrap()
        })
        .sum();
    assert_eq!(read, 100, "{source}");
    assert!(
        first["durationMs"]["triggerExecution"].as_u64().unwrap()
            >= first["durationMs"]["addBatch"].as_u64().unwrap()
    );
    let latest = get_json(&format!("{ui}/api/v1/jobs/{id}/progress")).await;
    assert!(latest["batchId"].as_u64().unwrap() >= 2);
    let all = get_json(&format!("{ui}/api/v1/progress")).await;
    assert_eq!(all[0]["id"], id.as_str());

    let metrics = reqwest::get(format!("{ui}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "spate_workers{state=\"alive\"} 2",
        "spate_slots{kind=\"total\"} 4",
        "spate_job_running{job=\"filtered\"} 1",
        "# TYPE spate_job_input_rows_total counter",
        "spate_job_batch_duration_seconds{job=\"filtered\"}",
        "spate_job_offsets_behind_latest{job=\"filtered\"}",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }

    // Unknown names are 404s, not empty answers.
    assert_eq!(
        reqwest::get(format!("{ui}/api/v1/jobs/nope"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        reqwest::get(format!("{ui}/api/v1/workers/nope"))
            .await
            .unwrap()
            .status(),
        404
    );

    // Stop through the API; the job stops after its running batch.
    let stopped = reqwest::Client::new()
        .post(format!("{ui}/api/v1/jobs/{id}/stop"))
        .send()
        .await
        .unwrap();
    assert!(stopped.status().is_success());
    wait_until("the job to stop", || async {
        get_json(&format!("{ui}/api/v1/jobs")).await[0]["state"] == "STOPPED"
    })
    .await;
    let batches_before = get_json(&format!("{ui}/api/v1/jobs/{id}/batches"))
        .await
        .as_array()
        .unwrap()
        .len();

    // A new master on the same workspace shows the same history.
    let bootstrap = cluster.broker.bootstrap_servers().to_string();
    cluster.master.shutdown().await;
    let master = start_master(ws.path(), &bootstrap).await;
    let ui = format!("http://{}", master.http_addr);
    let jobs = get_json(&format!("{ui}/api/v1/jobs")).await;
    assert_eq!(jobs[0]["state"], "STOPPED");
    let batches = get_json(&format!("{ui}/api/v1/jobs/{id}/batches")).await;
    assert_eq!(batches.as_array().unwrap().len(), batches_before);
    master.shutdown().await;
}
