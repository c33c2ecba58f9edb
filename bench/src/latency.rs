//! B4, end-to-end latency: a generator writes events stamped with the wall
//! clock at a fixed rate; a 1-second tumbling-window count (watermark
//! `ts - INTERVAL 200 MILLISECONDS`) runs with a trigger of 0. A window
//! [s, s+1 s) can close once event time passes s + 1 s + 200 ms; its
//! latency is from that moment to the commit of the batch that wrote its
//! row (the commit log entry's time). Reported as p50/p99 over the
//! windows that closed while the generator ran, after its first two seconds.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::Workspace;
use spate_engine::checkpoint::{CommitEntry, job_dir};
use spate_engine::files::{
    FileFormatKind, FileFormatSpec, committed_batches, read_committed_batch,
};
use spate_engine::kafka::{DevBroker, enqueue};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::TimestampMicrosecondType;

use crate::{BenchCluster, Error, Figure, percentile};

const DELAY_MS: i64 = 200;

#[derive(clap::Args, Clone, Copy)]
pub struct LatencyArgs {
    /// Events per second the generator writes.
    #[arg(long, default_value_t = 20_000)]
    latency_rate: u64,
    /// How long the generator runs.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
}

pub async fn run(args: LatencyArgs) -> Result<Figure, Error> {
    let broker = DevBroker::start()?;
    broker.create_topic("clicks", 4)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let cluster = BenchCluster::start(&bootstrap, 2, 1).await?;
    let sql = format!(
        "CREATE EXTERNAL TABLE clicks (ts TIMESTAMP, customer VARCHAR)
           STORED AS KAFKA LOCATION 'clicks'
           OPTIONS ('watermark' 'ts - INTERVAL {DELAY_MS} MILLISECONDS');
         CREATE EXTERNAL TABLE out (window_start TIMESTAMP, clicks BIGINT)
           STORED AS PARQUET LOCATION 'output/latency/';
         SET spate.trigger.interval = '0';
         INSERT INTO out SELECT window.start AS window_start, count(*) AS clicks
         FROM clicks GROUP BY window(ts, '1 second');"
    );
    let job = cluster.submit("latency", sql).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()?;
    // Events go out in ticks of 10 ms, each stamped with its send time.
    let per_tick = (args.latency_rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let end = tokio::time::Instant::now() + Duration::from_secs(args.latency_seconds);
    let mut sent = 0u64;
    // Windows closing in the first seconds measure the job's start, not its pace.
    let warm_ms = chrono::Utc::now().timestamp_millis() + 2_000;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for _ in 0..per_tick {
            let line = format!(r#"{{"ts":"{ts}","customer":"c{}"}}"#, sent % 50);
            let record = FutureRecord::<(), [u8]>::to("clicks")
                .payload(line.as_bytes())
                .partition((sent % 4) as i32);
            drop(enqueue(&producer, record).await?);
            sent += 1;
        }
    }
    // Windows the generator's last events did not close wait for the
    // stream to go on: not the pace being measured.
    let generated_ms = chrono::Utc::now().timestamp_millis();
    // The last windows close as the clock runs on: one more event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let line = format!(r#"{{"ts":"{ts}","customer":"last"}}"#);
    drop(
        enqueue(
            &producer,
            FutureRecord::<(), [u8]>::to("clicks")
                .payload(line.as_bytes())
                .partition(0),
        )
        .await?,
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let ws = Workspace::open(cluster.workspace.path())?;
    let mut latencies = Vec::new();
    for batch in committed_batches(&ws, "output/latency").await? {
        let Some(commit) = ws
            .get_json::<CommitEntry>(&format!("{}/commits/{batch}", job_dir(&job)))
            .await?
        else {
            continue;
        };
        let Some((_, rows)) = read_committed_batch(
            &ws,
            "output/latency",
            &FileFormatSpec::plain(FileFormatKind::Parquet),
            batch,
        )
        .await?
        else {
            continue;
        };
        for part in rows {
            let starts = datafusion::arrow::compute::cast(
                part.column(0),
                &datafusion::arrow::datatypes::DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    None,
                ),
            )?;
            let starts = starts.as_primitive::<TimestampMicrosecondType>();
            for i in 0..starts.len() {
                let closes_ms = starts.value(i) / 1000 + 1000 + DELAY_MS;
                if closes_ms < warm_ms || closes_ms > generated_ms {
                    continue;
                }
                latencies.push((commit.committed_ms - closes_ms).max(0) as u64);
            }
        }
    }
    cluster.shutdown().await;
    if latencies.is_empty() {
        return Err("B4: no window was committed".into());
    }
    latencies.sort_unstable();
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    let achieved = sent as f64 / args.latency_seconds as f64;
    Ok(Figure {
        bench: format!(
            "B4 end-to-end latency: 1 s tumbling window, {achieved:.0} events/s for {} s ({} windows)",
            args.latency_seconds,
            latencies.len()
        ),
        spate: format!("p50 {p50} ms, p99 {p99} ms after a window closes"),
        baseline: String::new(),
        ratio: String::new(),
        target: "p99 <= 1500 ms".to_string(),
        met: Some(p99 <= 1500),
    })
}
