//! B10, Nexmark: the suite's queries that Spate runs, from
//! `workspace/jobs/nexmark/`, as available-now jobs over the development
//! broker's `person`, `auction` and `bid` topics filled by the reference
//! generator, beside the per-core figures published for Flink (Nexmark's
//! own results, Flink 1.13) and Feldera. A query Spate refuses is listed
//! with the reason.
//!
//! Per core counts the events a query read (the bids, for the bid-only
//! queries) over the seconds from submit to finish, divided by the worker
//! slots. The published figures count every generated event over the
//! cores of a source that generates in process; Spate's events come
//! through Kafka, decoded from JSON, and its sink is Parquet, not a
//! blackhole: the comparison is, if anything, against Spate.

use std::time::Instant;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use spate_engine::kafka::{DevBroker, enqueue};
use spate_engine::nexmark::{NexmarkConfig, NexmarkGenerator, NexmarkTable};

use crate::{BenchCluster, Error, Figure};

#[derive(clap::Args, Clone, Copy)]
pub struct NexmarkArgs {
    /// Events to generate (persons, auctions and bids; the development
    /// broker keeps about 5 MiB per partition).
    #[arg(long, default_value_t = 400_000)]
    pub nexmark_events: u64,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 16)]
    pub nexmark_partitions: i32,
    /// In-process workers, one slot each.
    #[arg(long, default_value_t = 2)]
    pub nexmark_workers: u32,
    /// Largest batch, in records.
    #[arg(long, default_value_t = 100_000)]
    pub nexmark_batch: u64,
}

/// The queries, their job files, and the published per-core figures
/// (events/s) of Flink 1.13 (Nexmark's results) and Feldera (16 cores).
const QUERIES: &[(&str, &str, Option<u64>, Option<u64>)] = &[
    (
        "q0",
        include_str!("../../workspace/jobs/nexmark/q0.sql"),
        Some(155_000),
        Some(436_000),
    ),
    (
        "q1",
        include_str!("../../workspace/jobs/nexmark/q1.sql"),
        Some(158_000),
        None,
    ),
    (
        "q2",
        include_str!("../../workspace/jobs/nexmark/q2.sql"),
        Some(175_000),
        None,
    ),
    (
        "q5",
        include_str!("../../workspace/jobs/nexmark/q5.sql"),
        Some(22_000),
        Some(412_000),
    ),
    (
        "q7",
        include_str!("../../workspace/jobs/nexmark/q7.sql"),
        Some(12_000),
        Some(196_000),
    ),
    (
        "q8",
        include_str!("../../workspace/jobs/nexmark/q8.sql"),
        Some(146_000),
        None,
    ),
    (
        "q11",
        include_str!("../../workspace/jobs/nexmark/q11.sql"),
        None,
        None,
    ),
    (
        "q14",
        include_str!("../../workspace/jobs/nexmark/q14.sql"),
        None,
        None,
    ),
    (
        "q17",
        include_str!("../../workspace/jobs/nexmark/q17.sql"),
        None,
        None,
    ),
    (
        "q21",
        include_str!("../../workspace/jobs/nexmark/q21.sql"),
        None,
        None,
    ),
    (
        "q22",
        include_str!("../../workspace/jobs/nexmark/q22.sql"),
        None,
        None,
    ),
];

/// Spate's target: three times Flink per core.
const TARGET_X_FLINK: f64 = 3.0;

async fn produce(bootstrap: &str, args: &NexmarkArgs) -> Result<[u64; 3], Error> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()?;
    // The suite's default rate: 10,000,000 events a second of event time.
    let generator = NexmarkGenerator::new(NexmarkConfig {
        base_time_ms: crate::T0_MS,
        ..NexmarkConfig::default()
    });
    let mut counts = [0u64; 3];
    let mut deliveries = Vec::new();
    let mut json = Vec::with_capacity(512);
    for n in 0..args.nexmark_events {
        let event = generator.event(n);
        json.clear();
        event.write_json(&mut json);
        counts[event.table() as usize] += 1;
        let record = FutureRecord::<(), [u8]>::to(event.table().name())
            .payload(&json)
            .partition((n % args.nexmark_partitions as u64) as i32);
        deliveries.push(enqueue(&producer, record).await?);
    }
    producer.flush(std::time::Duration::from_secs(30))?;
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(counts)
}

/// How many times a query that reads one table reads it (2 for a
/// self-join); 1 for a query over several tables.
fn self_join_scans(sql: &str) -> u64 {
    let select = &sql[sql.find("INSERT INTO").unwrap_or(0)..];
    let words: Vec<&str> = select.split_whitespace().collect();
    let scanned: Vec<&str> = words
        .windows(2)
        .filter(|w| matches!(w[0], "FROM" | "JOIN"))
        .map(|w| w[1])
        .filter(|t| NexmarkTable::ALL.iter().any(|n| n.name() == *t))
        .collect();
    match scanned.first() {
        Some(first) if scanned.iter().all(|t| t == first) => scanned.len() as u64,
        _ => 1,
    }
}

/// A job file as the benchmark runs it: batches of `batch` records, no
/// trigger wait, finished once it has read what the topics hold.
fn bench_job(sql: &str, name: &str, run: &str, batch: u64) -> String {
    sql.replace(
        "'watermark'",
        &format!("'max_offsets_per_trigger' '{batch}', 'watermark'"),
    )
    .replace(
        &format!("LOCATION 'output/nexmark/{name}/'"),
        &format!("LOCATION 'output/{run}/{name}/'"),
    )
    .replace(
        "SET spate.trigger.interval = '1s';",
        "SET spate.trigger.interval = '0'; SET spate.trigger.available_now = true;",
    )
}

pub async fn run(args: NexmarkArgs) -> Result<Vec<Figure>, Error> {
    let broker = DevBroker::start()?;
    for table in NexmarkTable::ALL {
        broker.create_topic(table.name(), args.nexmark_partitions)?;
    }
    let started = Instant::now();
    let counts = produce(broker.bootstrap_servers(), &args).await?;
    eprintln!(
        "B10: produced {} Nexmark events ({} persons, {} auctions, {} bids) in {:.1}s",
        args.nexmark_events,
        counts[0],
        counts[1],
        counts[2],
        started.elapsed().as_secs_f64()
    );
    let cores = args.nexmark_workers as f64;
    let cluster = BenchCluster::start(broker.bootstrap_servers(), args.nexmark_workers, 1).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut figures = Vec::new();
    for (name, sql, flink, feldera) in QUERIES {
        // A table read twice (q7's self-join) counts its events once.
        let scans = self_join_scans(sql);
        let sql = bench_job(sql, name, &run, args.nexmark_batch);
        let began = Instant::now();
        let submitted = cluster.submit(&format!("b10_{name}"), sql).await;
        let (spate, ratio, met) = match submitted {
            Err(refused) => {
                let why = refused
                    .downcast_ref::<tonic::Status>()
                    .map_or_else(|| refused.to_string(), |s| s.message().to_string());
                // "statement 5 of 5 (INSERT INTO ...): the reason"
                let why = why.split_once("): ").map_or(why.as_str(), |(_, w)| w);
                (
                    format!("refused: {why}"),
                    String::new(),
                    flink.map(|_| false),
                )
            }
            Ok(id) => {
                let rows = cluster.wait_finished(&id).await?;
                let seconds = began.elapsed().as_secs_f64();
                let scanned = cluster.input_rows(&id).await?;
                let read = scanned / scans;
                let per_core = read as f64 / seconds / cores;
                eprintln!(
                    "B10 {name}: {read} events ({scanned} records scanned) in {seconds:.2}s, {rows} rows written, {per_core:.0} events/s per core"
                );
                let ratio = flink.map(|f| per_core / f as f64);
                (
                    format!("{:.0}k events/s per core", per_core / 1000.0),
                    ratio.map_or_else(String::new, |r| format!("{r:.2}x Flink")),
                    ratio.map(|r| r >= TARGET_X_FLINK),
                )
            }
        };
        let mut baseline = Vec::new();
        if let Some(f) = flink {
            baseline.push(format!("Flink {}k", f / 1000));
        }
        if let Some(f) = feldera {
            baseline.push(format!("Feldera {}k", f / 1000));
        }
        figures.push(Figure {
            bench: format!(
                "B10 Nexmark {name}, {} events, {} workers x 1 slot",
                args.nexmark_events, args.nexmark_workers
            ),
            spate,
            baseline: baseline.join(", "),
            ratio,
            target: flink.map_or_else(String::new, |_| format!(">= {TARGET_X_FLINK}x Flink")),
            met,
        });
    }
    cluster.shutdown().await;
    Ok(figures)
}
