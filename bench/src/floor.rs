//! B3, the micro-batch floor: with a trigger of 0 and a trickle of records,
//! every batch holds a few rows, so its wall time is the fixed cost of a
//! batch: the offsets log entry, scheduling and running the tasks (a Kafka
//! read each), the sink's files and manifest, and the commit entry.
//! Measured from each batch's progress record (`walCommit + addBatch +
//! commitOffsets`), over a stateless filter job into Parquet; the job keeps
//! every batch's progress record (the checkpoint keeps the last 100 by
//! default).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::kafka::{DevBroker, enqueue};

use crate::events::event;
use crate::{BenchCluster, Error, Figure, FloorArgs, percentile};

pub async fn run(args: FloorArgs) -> Result<Figure, Error> {
    let (seconds, rate, partitions, workers) = (args.floor_seconds, args.floor_rate, 4, 2);
    let broker = DevBroker::start()?;
    broker.create_topic("events", partitions)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let cluster = BenchCluster::start(&bootstrap, workers, 2).await?;
    let sql = "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
           STORED AS KAFKA LOCATION 'events';
         CREATE EXTERNAL TABLE out (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
           STORED AS PARQUET LOCATION 'output/floor/';
         SET spate.trigger.interval = '0';
         SET spate.checkpoint.retained_batches = 1000000;
         INSERT INTO out SELECT ts, customer, amount FROM events WHERE amount >= 0;"
        .to_string();
    let job = cluster.submit("floor", sql).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "0")
        .create()?;
    let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut i = 0u64;
    while tokio::time::Instant::now() < deadline {
        let line = event(i);
        let record = FutureRecord::<(), [u8]>::to("events")
            .payload(line.as_bytes())
            .partition((i % partitions as u64) as i32);
        // Not awaited: the trickle keeps its pace.
        drop(enqueue(&producer, record).await?);
        i += 1;
        tokio::time::sleep(gap).await;
    }
    // Give the last batch time to commit, then read every batch's record.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let progress_dir = cluster
        .workspace
        .path()
        .join(format!("_spate/jobs/{job}/progress"));
    let mut walls = Vec::new();
    let mut parts = [0u64; 4];
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(&progress_dir)? {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(entry?.path())?)?;
        let d = &record["durationMs"];
        let ms = |k: &str| d[k].as_u64().unwrap_or(0);
        let part = [
            ms("walCommit"),
            ms("queryPlanning"),
            ms("addBatch"),
            ms("commitOffsets"),
        ];
        walls.push(part[0] + part[2] + part[3]);
        for (sum, p) in parts.iter_mut().zip(part) {
            *sum += p;
        }
        rows.push(record["numInputRows"].as_u64().unwrap_or(0));
    }
    cluster.shutdown().await;
    if walls.is_empty() {
        return Err("no batch committed".into());
    }
    let batches = walls.len() as f64;
    walls.sort_unstable();
    rows.sort_unstable();
    let (p50, p99) = (percentile(&walls, 50.0), percentile(&walls, 99.0));
    let mean = |sum: u64| sum as f64 / batches;
    eprintln!(
        "B3: {} batches, {} rows each (p50); mean ms: offsets log {:.1}, task preparation {:.1}, tasks {:.1}, manifest and commit {:.1}",
        walls.len(),
        percentile(&rows, 50.0),
        mean(parts[0]),
        mean(parts[1]),
        mean(parts[2]),
        mean(parts[3])
    );
    Ok(Figure {
        bench: format!(
            "B3 micro-batch floor ({} batches of ~{} rows, trigger 0, {workers} workers)",
            walls.len(),
            percentile(&rows, 50.0)
        ),
        spate: format!("p50 {p50} ms, p99 {p99} ms"),
        baseline: String::new(),
        ratio: String::new(),
        target: "p50 <= 5 ms, p99 <= 20 ms".to_string(),
        met: Some(p50 <= 5 && p99 <= 20),
    })
}
