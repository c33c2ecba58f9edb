//! B10, Nexmark: the suite's queries that Spate runs, from
//! `workspace/jobs/nexmark/`, as available-now jobs over the suite's
//! `person`, `auction` and `bid` streams, beside the per-core figures
//! published for Flink (Nexmark's own results, Flink 1.13) and Feldera. A
//! query Spate refuses is listed with the reason.
//!
//! By default the tables are `STORED AS NEXMARK`: each task generates its
//! partition's events, as the suite's own source does in Flink, so the
//! figures are the engine's, with no broker on the same cores. Per core
//! counts the suite's events a query's tables cover (all three streams, as
//! Flink's figures count every generated event) over the seconds from
//! submit to finish, divided by the worker slots; per CPU-second divides
//! them by this process's CPU time over the same seconds. `--nexmark-feed
//! kafka` reads the same events from the development broker as JSON
//! instead (a few hundred thousand at most: it keeps about 5 MiB per
//! partition).

use std::time::Instant;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use spate_engine::kafka::{DevBroker, enqueue};
use spate_engine::nexmark::{NexmarkConfig, NexmarkGenerator, NexmarkTable};

use crate::events::own_cpu;
use crate::{BenchCluster, Error, Figure};

/// Where B10's events come from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// `STORED AS NEXMARK`: generated inside the tasks.
    Generated,
    /// The development broker's topics, filled by the reference generator
    /// as JSON before the clock starts.
    Kafka,
}

#[derive(clap::Args, Clone, Copy)]
pub struct NexmarkArgs {
    /// Events to generate (persons, auctions and bids together).
    #[arg(long, default_value_t = 4_000_000)]
    pub nexmark_events: u64,
    /// Events per second of event time. With the default events, 40
    /// seconds of event time, so that 10-second windows close (the suite's
    /// rate, 10 million a second, would span 0.4 seconds).
    #[arg(long, default_value_t = 100_000)]
    pub nexmark_event_rate: u64,
    /// Partitions of each table (or topic).
    #[arg(long, default_value_t = 8)]
    pub nexmark_partitions: i32,
    /// In-process workers, one slot each.
    #[arg(long, default_value_t = 2)]
    pub nexmark_workers: u32,
    /// Largest batch, in events (`max_offsets_per_trigger`).
    #[arg(long, default_value_t = 500_000)]
    pub nexmark_batch: u64,
    /// Where the events come from.
    #[arg(long, value_enum, default_value_t = Feed::Generated)]
    pub nexmark_feed: Feed,
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
        "q4",
        include_str!("../../workspace/jobs/nexmark/q4.sql"),
        None,
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
        "q9",
        include_str!("../../workspace/jobs/nexmark/q9.sql"),
        None,
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

fn config(args: &NexmarkArgs) -> NexmarkConfig {
    NexmarkConfig {
        base_time_ms: crate::T0_MS,
        events_per_second: args.nexmark_event_rate,
        ..NexmarkConfig::default()
    }
}

async fn produce(bootstrap: &str, args: &NexmarkArgs) -> Result<[u64; 3], Error> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()?;
    let generator = NexmarkGenerator::new(config(args));
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

/// A job file as the benchmark runs it: batches of at most `batch`
/// events, no trigger wait, finished once it has read what its tables
/// hold; generated tables where the feed says so.
fn bench_job(sql: &str, name: &str, run: &str, args: &NexmarkArgs) -> String {
    let mut sql = sql
        .replace(
            "'watermark'",
            &format!(
                "'max_offsets_per_trigger' '{}', 'watermark'",
                args.nexmark_batch
            ),
        )
        .replace(
            &format!("LOCATION 'output/nexmark/{name}/'"),
            &format!("LOCATION 'output/{run}/{name}/'"),
        )
        .replace(
            "SET spate.trigger.interval = '1s';",
            "SET spate.trigger.interval = '0'; SET spate.trigger.available_now = true;",
        );
    if args.nexmark_feed == Feed::Generated {
        // Flink's source makes every event and its queries filter; a
        // generated table makes its own stream's only. Where a query reads
        // no bids (q8), its tables make and drop the others' events too, so
        // that it pays for them at least as Flink does (each table does,
        // so twice).
        let make_others = !sql.contains("CREATE EXTERNAL TABLE bid");
        for table in NexmarkTable::ALL {
            sql = sql.replace(
                &format!("STORED AS KAFKA\nLOCATION '{}'\nOPTIONS (", table.name()),
                &format!(
                    "STORED AS NEXMARK\nLOCATION '{}'\nOPTIONS ('events' '{}', 'events_per_second' '{}', \
                     'partitions' '{}', 'base_time' '{}', 'make_other_streams' '{make_others}', ",
                    table.name(),
                    args.nexmark_events,
                    args.nexmark_event_rate,
                    args.nexmark_partitions,
                    crate::T0_MS
                ),
            );
        }
    }
    sql
}

pub async fn run(args: NexmarkArgs) -> Result<Vec<Figure>, Error> {
    // The broker only where the events come through it.
    let broker = match args.nexmark_feed {
        Feed::Generated => None,
        Feed::Kafka => {
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
            Some(broker)
        }
    };
    let bootstrap = broker.as_ref().map_or("", |b| b.bootstrap_servers());
    let cores = args.nexmark_workers as f64;
    let cluster = BenchCluster::start(bootstrap, args.nexmark_workers, 1).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut figures = Vec::new();
    for (name, sql, flink, feldera) in QUERIES {
        // A table read twice (q7's self-join) counts its events once.
        let scans = self_join_scans(sql);
        let sql = bench_job(sql, name, &run, &args);
        let began = Instant::now();
        let cpu_before = own_cpu();
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
                let cpu = (own_cpu() - cpu_before).as_secs_f64();
                let scanned = cluster.input_rows(&id).await?;
                // Generated, each table walks every event number and makes
                // its own stream's: the query covers all the events.
                let events = match args.nexmark_feed {
                    Feed::Generated => args.nexmark_events,
                    Feed::Kafka => scanned / scans,
                };
                let per_core = events as f64 / seconds / cores;
                let per_cpu = events as f64 / cpu;
                eprintln!(
                    "B10 {name}: {events} events ({scanned} rows scanned) in {seconds:.2}s, {cpu:.2} CPU-s, {rows} rows written, {per_core:.0} events/s per core, {per_cpu:.0} per CPU-second"
                );
                let ratio = flink.map(|f| per_core / f as f64);
                let spate = format!(
                    "{:.0}k events/s per core ({:.0}k per CPU-s)",
                    per_core / 1000.0,
                    per_cpu / 1000.0
                );
                (
                    spate,
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
        let feed = match args.nexmark_feed {
            Feed::Generated => "NEXMARK source",
            Feed::Kafka => "Kafka",
        };
        figures.push(Figure {
            bench: format!(
                "B10 Nexmark {name}, {} events ({feed}), {} workers x 1 slot",
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
