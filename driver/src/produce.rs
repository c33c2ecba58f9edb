//! The sales generator of the classic Spark + Kafka demos, the Nexmark
//! benchmark's events, and loading JSON lines from a file, into Kafka.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;
use spate_engine::kafka::enqueue;
use spate_engine::nexmark::{NexmarkConfig, NexmarkGenerator, NexmarkTable};

use crate::DriverError;

const CUSTOMERS: &[&str] = &[
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
    "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Wendy",
];
const COUNTRIES: &[&str] = &["US", "DE", "FR", "GB", "IN", "BR", "JP", "NG", "ES", "CA"];

/// One sales record. `revenue_counter` is the customer's running revenue.
#[derive(Debug, Clone, Serialize)]
pub struct Sale {
    pub id: u32,
    pub customer: &'static str,
    pub revenue: f64,
    pub revenue_counter: f64,
    pub timestamp: String,
    pub country: &'static str,
    pub gender: &'static str,
    pub ip: String,
}

/// Makes sales records; deterministic for a given seed.
pub struct SalesGenerator {
    rng: StdRng,
    totals: HashMap<u32, f64>,
}

impl SalesGenerator {
    pub fn new(seed: Option<u64>) -> Self {
        SalesGenerator {
            rng: seed.map_or_else(StdRng::from_os_rng, StdRng::seed_from_u64),
            totals: HashMap::new(),
        }
    }

    pub fn next_sale(&mut self) -> Sale {
        let id = self.rng.random_range(1..=CUSTOMERS.len() as u32);
        let revenue = (self.rng.random_range(100..=50_000) as f64) / 100.0;
        let total = self.totals.entry(id).or_default();
        *total = ((*total + revenue) * 100.0).round() / 100.0;
        // A customer keeps one country, gender and address across sales.
        let c = id as usize;
        Sale {
            id,
            customer: CUSTOMERS[c - 1],
            revenue,
            revenue_counter: *total,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            country: COUNTRIES[c % COUNTRIES.len()],
            gender: if c.is_multiple_of(2) { "F" } else { "M" },
            ip: format!(
                "{}.{}.{}.{}",
                10 + c % 200,
                (c * 7) % 256,
                (c * 13) % 256,
                (c * 31) % 256
            ),
        }
    }
}

pub fn producer(bootstrap: &str) -> Result<FutureProducer, DriverError> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| DriverError::Kafka(format!("cannot create a producer for {bootstrap}: {e}")))
}

/// Sends one record, waiting for room when librdkafka's queue is full.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    partition: Option<i32>,
    payload: &[u8],
) -> Result<(), DriverError> {
    let mut record = FutureRecord::<str, [u8]>::to(topic).payload(payload);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    // Delivery is checked at flush; failures there are reported.
    enqueue(producer, record)
        .await
        .map(drop)
        .map_err(|e| DriverError::Kafka(format!("cannot write to topic '{topic}': {e}")))
}

async fn flush(producer: &FutureProducer, topic: &str) -> Result<(), DriverError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(30)))
        .await
        .map_err(|e| DriverError::Kafka(e.to_string()))?
        .map_err(|e| {
            DriverError::Kafka(format!(
                "records for topic '{topic}' were not delivered: {e}"
            ))
        })
}

fn progress(count: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    match count {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} records  {per_sec}  eta {eta}")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {pos} records  {per_sec}  (Ctrl-C stops)")
                .expect("valid template"),
        ),
    }
}

/// Produces generated sales at `rate` records per second (0: as fast as
/// possible), `count` of them or until stopped.
pub async fn produce_sales(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    count: Option<u64>,
    seed: Option<u64>,
    quiet: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<u64, DriverError> {
    let producer = producer(bootstrap)?;
    let mut generator = SalesGenerator::new(seed);
    let bar = progress(count, quiet);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut buffer = Vec::with_capacity(256);
    while count.is_none_or(|n| sent < n) && !*stop.borrow() {
        if !wait_turn(rate, sent, started, &mut stop).await {
            break;
        }
        let sale = generator.next_sale();
        buffer.clear();
        serde_json::to_writer(&mut buffer, &sale).expect("a sale serializes");
        send(&producer, topic, Some(&sale.id.to_string()), None, &buffer).await?;
        sent += 1;
        if sent.is_multiple_of(64) {
            bar.set_position(sent);
        }
    }
    flush(&producer, topic).await?;
    bar.set_position(sent);
    bar.finish();
    Ok(sent)
}

/// Waits until record `sent` is due at `rate` records per second (0: at
/// once); false when stopped first.
async fn wait_turn(
    rate: u64,
    sent: u64,
    started: Instant,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if rate == 0 {
        return true;
    }
    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
    let Some(wait) = due.checked_sub(started.elapsed()) else {
        return true;
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = spate_engine::stop_signalled(stop) => false,
    }
}

/// Where `produce_nexmark` writes: the three topics and their partitions.
pub struct NexmarkTopics {
    /// Partitions of the person, auction and bid topics, in that order.
    pub partitions: [i32; 3],
}

/// Produces the Nexmark stream into the topics `person`, `auction` and
/// `bid` (JSON with the suite's field names) at `rate` events per second
/// (0: as fast as possible), `count` events or until stopped. Event `n`
/// goes to partition `n` modulo the topic's partitions, so partitions
/// fill evenly in event order, as a partitioned source would read it.
pub async fn produce_nexmark(
    bootstrap: &str,
    topics: &NexmarkTopics,
    config: NexmarkConfig,
    rate: u64,
    count: Option<u64>,
    quiet: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<[u64; 3], DriverError> {
    let producer = producer(bootstrap)?;
    let generator = NexmarkGenerator::new(config);
    let bar = progress(count, quiet);
    let started = Instant::now();
    let mut sent = [0u64; 3];
    let mut events = 0u64;
    let mut buffer = Vec::with_capacity(512);
    while count.is_none_or(|n| events < n) && !*stop.borrow() {
        if !wait_turn(rate, events, started, &mut stop).await {
            break;
        }
        let event = generator.event(events);
        let table = event.table();
        buffer.clear();
        event.write_json(&mut buffer);
        let partition = (events % topics.partitions[table as usize].max(1) as u64) as i32;
        send(&producer, table.name(), None, Some(partition), &buffer).await?;
        sent[table as usize] += 1;
        events += 1;
        if events.is_multiple_of(64) {
            bar.set_position(events);
        }
    }
    for table in NexmarkTable::ALL {
        flush(&producer, table.name()).await?;
    }
    bar.set_position(events);
    bar.finish();
    Ok(sent)
}

/// Produces each line of a JSON-lines file as one record.
pub async fn produce_file(
    bootstrap: &str,
    topic: &str,
    path: &Path,
    quiet: bool,
) -> Result<u64, DriverError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DriverError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    for (n, line) in &lines {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(line) {
            return Err(DriverError::Usage(format!(
                "{} line {}: not JSON ({e}); nothing was produced",
                path.display(),
                n + 1
            )));
        }
    }
    let producer = producer(bootstrap)?;
    let bar = progress(Some(lines.len() as u64), quiet);
    for (i, (_, line)) in lines.iter().enumerate() {
        send(&producer, topic, None, None, line.as_bytes()).await?;
        if i % 64 == 0 {
            bar.set_position(i as u64);
        }
    }
    flush(&producer, topic).await?;
    bar.set_position(lines.len() as u64);
    bar.finish();
    Ok(lines.len() as u64)
}
