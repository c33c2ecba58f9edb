//! A task that panics on its worker ends all the same: the worker catches
//! the panic and reports it, the task is retried as a failure of its own,
//! and after `spate.task.max_failures` the job fails with the panic's
//! message. Alone in its test binary, because failpoints are per process.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_panics_fails_its_job_with_the_panic_message_after_its_retries() {
    let ws = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws.path(), 2).await;
    cluster.produce(0..20).await;
    fail::cfg("spate-task-start", "panic(a decoder blew up)").unwrap();
    let sql = format!(
        "CREATE EXTERNAL TABLE sales (id BIGINT, customer VARCHAR, revenue DOUBLE)
           STORED AS KAFKA LOCATION 'sales' OPTIONS ('bootstrap.servers' '{}');
         CREATE EXTERNAL TABLE out (id BIGINT) STORED AS PARQUET LOCATION 'output/panics/';
         SET spate.trigger.interval = '100ms';
         SET spate.task.max_failures = 2;
         INSERT INTO out SELECT id FROM sales;",
        cluster.broker.bootstrap_servers()
    );
    let id = cluster.submit_sql("panics", sql).await;
    let failed = cluster.wait_for_state(&id, "FAILED").await;
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("failed 2 times: the task panicked: a decoder blew up"),
        "{error}"
    );
    assert_eq!(failed["batches"], 0);
    // The workers are whole and their slots free: the failed tasks ended.
    let workers = get_json(&format!("{}/api/v1/workers", cluster.ui())).await;
    for worker in workers.as_array().unwrap() {
        assert_eq!(worker["state"], "ALIVE", "{worker}");
        assert_eq!(worker["slots_used"], 0, "{worker}");
    }
    assert!(
        workers
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["tasks_failed"].as_u64().unwrap())
            .sum::<u64>()
            >= 2
    );
    fail::remove("spate-task-start");
    cluster.stop().await;
}
