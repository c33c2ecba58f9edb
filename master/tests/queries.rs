//! An interactive query's tasks end with it: a client that hangs up (the
//! REPL's Ctrl-C, a closed notebook) cancels them on the workers, and the
//! query's files are removed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_proto::RunStatementRequest;
use spate_proto::client_service_client::ClientServiceClient;

async fn slots_used(cluster: &Cluster) -> u64 {
    let workers = get_json(&format!("{}/api/v1/workers", cluster.ui())).await;
    workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["slots_used"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_its_query_on_the_workers() {
    let ws = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws.path(), 2).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap_servers())
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..40_000u64 {
        let payload = format!(r#"{{"id": {i}, "customer": "c{}"}}"#, i % 7);
        let record = FutureRecord::<(), String>::to("sales")
            .payload(&payload)
            .partition((i % 4) as i32);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }

    let mut client = ClientServiceClient::connect(format!("http://{}", cluster.master.grpc_addr))
        .await
        .unwrap();
    let request = RunStatementRequest {
        session: vec![format!(
            "CREATE EXTERNAL TABLE sales (id BIGINT, customer VARCHAR) STORED AS KAFKA LOCATION 'sales'
               OPTIONS ('bootstrap.servers' '{}')",
            cluster.broker.bootstrap_servers()
        )],
        statement: "SELECT count(*) FROM sales WHERE digest(repeat(customer, 4000), 'sha256') IS NOT NULL"
            .to_string(),
        ..Default::default()
    };
    let replies = client.run_statement(request).await.unwrap().into_inner();
    wait_until("the query's tasks to run", || async {
        slots_used(&cluster).await == 4
    })
    .await;
    drop(replies);
    let hung_up = Instant::now();
    wait_until("the query's slots to be free", || async {
        slots_used(&cluster).await == 0
    })
    .await;
    assert!(
        hung_up.elapsed() < Duration::from_secs(2),
        "{:?}",
        hung_up.elapsed()
    );
    let workers = get_json(&format!("{}/api/v1/workers/w1", cluster.ui())).await;
    let recent = workers["recent_tasks"].as_array().unwrap();
    assert!(
        recent.iter().any(|t| t["state"] == "CANCELLED"),
        "{recent:?}"
    );
    wait_until("the query's files to go", || async {
        std::fs::read_dir(ws.path().join("_spate/queries")).map_or(true, |d| d.count() == 0)
    })
    .await;
    cluster.stop().await;
}
