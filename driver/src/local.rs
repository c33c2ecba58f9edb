//! Spark's `local[*]` for Spate: a master and workers in this process,
//! sharing one workspace, with the development Kafka broker when asked.
//! The demo and the REPL's default both run on it.

use std::net::SocketAddr;

use spate_engine::WorkspaceLocation;
use spate_engine::kafka::DevBroker;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::DriverError;

pub struct LocalCluster {
    pub master: spate_master::MasterHandle,
    pub master_url: String,
    /// The development broker, when this cluster runs its own Kafka.
    broker: Option<DevBroker>,
    pub bootstrap: String,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    /// Tasks beside the cluster (the sales generator), stopped first.
    helpers: Vec<JoinHandle<()>>,
}

/// What to start.
pub struct LocalOptions<'a> {
    pub workspace: &'a WorkspaceLocation,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub workers: u32,
    pub kafka: LocalKafka,
}

pub enum LocalKafka {
    /// A running Kafka's bootstrap servers.
    External(String),
    /// This development broker, which the cluster owns from now on.
    Dev(DevBroker),
}

impl LocalKafka {
    /// A new development broker with a 4-partition `sales` topic, as the demo uses.
    pub fn dev_with_sales() -> Result<Self, DriverError> {
        let broker = DevBroker::start()?;
        broker.create_topic("sales", 4)?;
        Ok(LocalKafka::Dev(broker))
    }

    pub fn bootstrap(&self) -> String {
        match self {
            LocalKafka::External(b) => b.clone(),
            LocalKafka::Dev(broker) => broker.bootstrap_servers().to_string(),
        }
    }
}

impl LocalCluster {
    pub async fn start(options: LocalOptions<'_>) -> Result<Self, DriverError> {
        let bootstrap = options.kafka.bootstrap();
        let broker = match options.kafka {
            LocalKafka::Dev(broker) => Some(broker),
            LocalKafka::External(_) => None,
        };
        let mut config = spate_master::MasterConfig::new(options.workspace);
        config.grpc_addr = options.grpc;
        config.http_addr = options.http;
        config.default_bootstrap_servers = bootstrap.clone();
        // On loopback, in one process: plain gRPC, whatever the settings
        // say of TLS (the secret, when set, still guards the UI).
        config.tls = None;
        let master = spate_master::start(config).await?;
        let master_url = format!("http://{}", master.grpc_addr);
        let (stop, stopped) = watch::channel(false);
        let workers = (1..=options.workers)
            .map(|i| {
                let mut config = spate_worker::WorkerConfig::new(&master_url, options.workspace);
                config.worker_id = format!("worker-{i}");
                config.slots = 2;
                config.tls_ca = None;
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    if let Err(e) = spate_worker::run(config, stopped).await {
                        eprintln!("worker-{i}: {e}");
                    }
                })
            })
            .collect();
        Ok(LocalCluster {
            master,
            master_url,
            broker,
            bootstrap,
            stop,
            workers,
            helpers: Vec::new(),
        })
    }

    /// Runs the sales generator into the cluster's Kafka until the cluster stops.
    pub fn generate_sales(&mut self, topic: &str, rate: u64) {
        let (bootstrap, topic, stopped) = (
            self.bootstrap.clone(),
            topic.to_string(),
            self.stop.subscribe(),
        );
        self.helpers.push(tokio::spawn(async move {
            if let Err(e) =
                crate::produce::produce_sales(&bootstrap, &topic, rate, None, None, true, stopped)
                    .await
            {
                eprintln!("sales generator: {e}");
            }
        }));
    }

    /// Stops the helpers (while Kafka still runs), the workers, the master
    /// and the development broker, in that order.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for helper in self.helpers {
            let _ = helper.await;
        }
        for worker in self.workers {
            let _ = worker.await;
        }
        self.master.shutdown().await;
        drop(self.broker);
    }
}
