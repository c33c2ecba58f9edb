//! B3, the micro-batch floor: with a trigger of 0 and a trickle of records,
//! every batch holds a few rows, so its wall time is the fixed cost of a
//! batch: the offsets log entry, scheduling and running the tasks (a Kafka
//! read each), the sink's files and manifest, and the commit entry.
//! Measured from each batch's progress record (`walCommit + addBatch +
//! commitOffsets`), over a stateless filter job into Parquet.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::kafka::{DevBroker, enqueue};

use crate::{BenchCluster, Error, event, percentile};

pub async fn run(seconds: u64, rate: u64, partitions: i32, workers: u32) -> Result<(), Error> {
    let broker = DevBroker::start()?;
    broker.create_topic("events", partitions)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let cluster = BenchCluster::start(&bootstrap, workers, 2).await?;
    let sql = "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
           STORED AS KAFKA LOCATION 'events';
         CREATE EXTERNAL TABLE out (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
           STORED AS PARQUET LOCATION 'output/floor/';
         SET spate.trigger.interval = '0';
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
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_FULL)
        .set_header(vec!["B3 micro-batch floor", "value"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    row("batches", walls.len().to_string());
    row("rows per batch (p50)", percentile(&rows, 50.0).to_string());
    row(
        "wall time p50 (offsets log to commit)",
        format!("{} ms", percentile(&walls, 50.0)),
    );
    row("wall time p99", format!("{} ms", percentile(&walls, 99.0)));
    for (name, sum) in [
        "walCommit",
        "queryPlanning",
        "addBatch (tasks)",
        "commitOffsets",
    ]
    .iter()
    .zip(parts)
    {
        row(
            &format!("mean {name}"),
            format!("{:.1} ms", sum as f64 / batches),
        );
    }
    println!("{table}");
    Ok(())
}
