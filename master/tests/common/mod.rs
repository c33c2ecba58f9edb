//! An in-process cluster for the master's tests: the development broker,
//! a master on ephemeral ports and workers as tasks of this process.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::kafka::DevBroker;
use spate_master::{MasterConfig, MasterHandle};
use spate_proto::SubmitJobRequest;
use spate_proto::client_service_client::ClientServiceClient;
use tokio::sync::watch;

pub struct Cluster {
    pub broker: DevBroker,
    pub master: MasterHandle,
    stop_workers: watch::Sender<bool>,
}

impl Cluster {
    pub async fn start(workspace: &Path, workers: u32) -> Cluster {
        let broker = DevBroker::start().unwrap();
        broker.create_topic("sales", 4).unwrap();
        let master = start_master(workspace, broker.bootstrap_servers()).await;
        let (stop_workers, stopped) = watch::channel(false);
        for i in 1..=workers {
            let mut config =
                spate_worker::WorkerConfig::new(format!("http://{}", master.grpc_addr), workspace);
            config.worker_id = format!("w{i}");
            config.slots = 2;
            tokio::spawn(spate_worker::run(config, stopped.clone()));
        }
        Cluster {
            broker,
            master,
            stop_workers,
        }
    }

    pub fn ui(&self) -> String {
        format!("http://{}", self.master.http_addr)
    }

    pub async fn stop(self) {
        let _ = self.stop_workers.send(true);
        self.master.shutdown().await;
    }

    pub async fn produce(&self, records: std::ops::Range<u64>) {
        produce_sales(self.broker.bootstrap_servers(), records).await
    }

    pub async fn submit(&self, name: &str) -> String {
        let sql = format!(
            "CREATE EXTERNAL TABLE sales (id BIGINT, customer VARCHAR, revenue DOUBLE)
               STORED AS KAFKA LOCATION 'sales' OPTIONS ('bootstrap.servers' '{}', 'max_offsets_per_trigger' '100');
             CREATE EXTERNAL TABLE out (id BIGINT, customer VARCHAR) STORED AS PARQUET LOCATION 'output/{name}/';
             SET spate.trigger.interval = '200ms';
             INSERT INTO out SELECT id, customer FROM sales WHERE revenue > 50;",
            self.broker.bootstrap_servers()
        );
        self.submit_sql(name, sql).await
    }

    /// The job's summary from the JSON API (`/api/v1/jobs/<id>`).
    pub async fn job(&self, id: &str) -> serde_json::Value {
        get_json(&format!("{}/api/v1/jobs/{id}", self.ui())).await["job"].take()
    }

    /// Waits until the job is in `state`; returns its summary then.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> serde_json::Value {
        wait_until(&format!("job {id} to be {state}"), || async {
            self.job(id).await["state"] == state
        })
        .await;
        self.job(id).await
    }

    /// Stops a job through the API and waits until it has stopped.
    pub async fn stop_job(&self, id: &str) {
        let stopped = reqwest::Client::new()
            .post(format!("{}/api/v1/jobs/{id}/stop", self.ui()))
            .send()
            .await
            .unwrap();
        assert!(stopped.status().is_success());
        self.wait_for_state(id, "STOPPED").await;
    }

    /// Submits a job file's text as `<name>.sql`; returns the job's id.
    pub async fn submit_sql(&self, name: &str, sql: String) -> String {
        let mut client = ClientServiceClient::connect(format!("http://{}", self.master.grpc_addr))
            .await
            .unwrap();
        client
            .submit_job(SubmitJobRequest {
                sql,
                name: name.to_string(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{name} was refused: {}", e.message()))
            .into_inner()
            .job_id
    }
}

/// Sales records `records` into the 4-partition topic 'sales'.
pub async fn produce_sales(bootstrap: &str, records: std::ops::Range<u64>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for i in records {
        let payload = serde_json::json!({"id": i, "customer": format!("c{}", i % 5), "revenue": (i % 300) as f64}).to_string();
        producer
            .send(
                FutureRecord::<(), String>::to("sales")
                    .payload(&payload)
                    .partition((i % 4) as i32),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

pub async fn start_master(workspace: &Path, bootstrap: &str) -> MasterHandle {
    start_master_with(workspace, bootstrap, |_| {}).await
}

/// A master on ephemeral loopback ports, with the settings `adjust` makes.
pub async fn start_master_with(
    workspace: &Path,
    bootstrap: &str,
    adjust: impl FnOnce(&mut MasterConfig),
) -> MasterHandle {
    let mut config = MasterConfig::new(workspace);
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.default_bootstrap_servers = bootstrap.to_string();
    adjust(&mut config);
    spate_master::start(config).await.unwrap()
}

pub async fn get_json(url: &str) -> serde_json::Value {
    let response = reqwest::get(url).await.unwrap();
    assert!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Polls until `check` holds; the deadline guards against a hang, it measures nothing.
pub async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        wait_until_or_timeout(check).await,
        "gave up waiting for {what}"
    );
}

/// Polls until `check` holds, for at most 90 s; says whether it did.
pub async fn wait_until_or_timeout<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    while !check().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}
