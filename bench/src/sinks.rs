//! B8, sinks: running totals per id (update output mode) into Kafka (a
//! transaction per task), Redis and PostgreSQL, beside the same aggregation
//! into Parquet (complete output mode: files take no updates), in one run.
//!
//! - Throughput: `events` events over `ids` ids, available-now, batches of
//!   `max_offsets_per_trigger`; events/s and output rows/s, job start
//!   included.
//! - The per-batch floor: trigger 0 and a trickle of events, so every batch
//!   holds a few rows; p50/p99 of `walCommit + addBatch + commitOffsets`
//!   from the progress records, as B3 measures.
//!
//! Redis and PostgreSQL are real servers started here (Debian's packages);
//! a sink whose server is missing is skipped with a message.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::kafka::{DevBroker, enqueue};
use spate_testkit::{PostgresServer, RedisServer};

use crate::{BenchCluster, Error, Figure, percentile};

#[derive(clap::Args, Clone, Copy)]
pub struct SinkArgs {
    /// Events of the throughput run.
    #[arg(long, default_value_t = 400_000)]
    pub sink_events: u64,
    /// Distinct ids they carry.
    #[arg(long, default_value_t = 10_000)]
    pub sink_ids: u64,
    /// Largest batch of the throughput run, in records.
    #[arg(long, default_value_t = 50_000)]
    pub sink_batch: u64,
    /// How long each sink's floor job runs.
    #[arg(long, default_value_t = 10)]
    pub sink_floor_seconds: u64,
}

const PARTITIONS: i32 = 4;

fn record(i: u64, ids: u64) -> String {
    format!(
        r#"{{"id":{},"amount":{}}}"#,
        (i * 7919) % ids,
        (i % 400) as f64 * 0.25
    )
}

/// What each sink's DDL is, given where its server listens.
struct Store {
    name: &'static str,
    ddl: String,
    mode: &'static str,
}

fn stores(redis: Option<&RedisServer>, postgres: Option<&PostgresServer>, run: &str) -> Vec<Store> {
    let mut stores = vec![
        Store {
            name: "parquet",
            ddl: format!(
                "CREATE EXTERNAL TABLE totals STORED AS PARQUET LOCATION 'output/{run}/';"
            ),
            mode: "complete",
        },
        Store {
            name: "kafka",
            ddl: format!("CREATE EXTERNAL TABLE totals STORED AS KAFKA LOCATION 'totals_{run}';"),
            mode: "update",
        },
    ];
    if let Some(redis) = redis {
        stores.push(Store {
            name: "redis",
            ddl: format!(
                "CREATE EXTERNAL TABLE totals STORED AS REDIS LOCATION '{}' OPTIONS ('key' 'id', 'key_prefix' '{run}:');",
                redis.url()
            ),
            mode: "update",
        });
    }
    if let Some(postgres) = postgres {
        stores.push(Store {
            name: "postgres",
            ddl: format!(
                "CREATE EXTERNAL TABLE totals STORED AS POSTGRES LOCATION '{}' OPTIONS ('table' 'totals_{run}', 'primary_key' 'id');",
                postgres.url()
            ),
            mode: "update",
        });
    }
    stores
}

fn job(store: &Store, trigger: &str, extra: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE events (id BIGINT, amount DOUBLE) STORED AS KAFKA LOCATION 'events' {extra};
         {}
         SET spate.output_mode = '{}';
         SET spate.trigger.interval = '{trigger}';
         SET spate.checkpoint.retained_batches = 1000000;
         INSERT INTO totals SELECT id, sum(amount) AS total, count(*) AS events FROM events GROUP BY id;",
        store.ddl, store.mode
    )
}

async fn produce(
    producer: &FutureProducer,
    range: std::ops::Range<u64>,
    ids: u64,
) -> Result<(), Error> {
    let mut deliveries = Vec::new();
    for i in range {
        let line = record(i, ids);
        let record = FutureRecord::<(), [u8]>::to("events")
            .payload(line.as_bytes())
            .partition((i % PARTITIONS as u64) as i32);
        deliveries.push(enqueue(producer, record).await?);
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// The batch walls (walCommit + addBatch + commitOffsets) of a job, sorted.
fn batch_walls(cluster: &BenchCluster, job: &str) -> Result<Vec<u64>, Error> {
    let dir = cluster
        .workspace
        .path()
        .join(format!("_spate/jobs/{job}/progress"));
    let mut walls = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(entry?.path())?)?;
        if record["numInputRows"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let d = &record["durationMs"];
        let ms = |k: &str| d[k].as_u64().unwrap_or(0);
        walls.push(ms("walCommit") + ms("addBatch") + ms("commitOffsets"));
    }
    walls.sort_unstable();
    Ok(walls)
}

pub async fn run(args: SinkArgs) -> Result<Vec<Figure>, Error> {
    let (redis, postgres) = if spate_testkit::available() {
        (Some(RedisServer::start()), Some(PostgresServer::start()))
    } else {
        eprintln!(
            "B8: redis-server or PostgreSQL is not installed; their sinks are skipped (./test.sh installs them)"
        );
        (None, None)
    };
    let broker = DevBroker::start()?;
    broker.create_topic("events", PARTITIONS)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let started = Instant::now();
    produce(&producer, 0..args.sink_events, args.sink_ids).await?;
    eprintln!(
        "B8: produced {} events over {} ids in {:.1}s",
        args.sink_events,
        args.sink_ids,
        started.elapsed().as_secs_f64()
    );

    let mut figures = Vec::new();
    let mut parquet_rate = None;
    // Throughput: every sink over the same events, one after the other.
    for store in stores(redis.as_ref(), postgres.as_ref(), "bulk") {
        let cluster = BenchCluster::start(&bootstrap, 2, 2).await?;
        let sql = job(
            &store,
            "0",
            &format!("OPTIONS ('max_offsets_per_trigger' '{}')", args.sink_batch),
        ) + "SET spate.trigger.available_now = true;";
        let began = Instant::now();
        let id = cluster.submit(&format!("b8_{}", store.name), sql).await?;
        let rows = cluster.wait_finished(&id).await?;
        let seconds = began.elapsed().as_secs_f64();
        cluster.shutdown().await;
        let rate = args.sink_events as f64 / seconds;
        eprintln!(
            "B8 {}: {} events in {seconds:.2}s, {rows} rows written ({:.0} rows/s)",
            store.name,
            args.sink_events,
            rows as f64 / seconds
        );
        let parquet = *parquet_rate.get_or_insert(rate);
        figures.push(Figure {
            bench: format!(
                "B8 running totals into {} ({} mode, {} events, {} ids)",
                store.name, store.mode, args.sink_events, args.sink_ids
            ),
            spate: format!(
                "{:.0}k events/s, {:.0}k rows/s",
                rate / 1000.0,
                rows as f64 / seconds / 1000.0
            ),
            baseline: if store.name == "parquet" {
                String::new()
            } else {
                format!("parquet {:.0}k events/s", parquet / 1000.0)
            },
            ratio: if store.name == "parquet" {
                String::new()
            } else {
                format!("{:.2}", rate / parquet)
            },
            target: String::new(),
            met: None,
        });
    }

    // The floor: a trickle into each sink, trigger 0.
    for store in stores(redis.as_ref(), postgres.as_ref(), "floor") {
        let cluster = BenchCluster::start(&bootstrap, 2, 2).await?;
        let id = cluster
            .submit(
                &format!("b8_floor_{}", store.name),
                job(&store, "0", "OPTIONS ('starting_offsets' 'latest')"),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let deadline = Instant::now() + Duration::from_secs(args.sink_floor_seconds);
        let mut i = args.sink_events;
        while Instant::now() < deadline {
            produce(&producer, i..i + 4, args.sink_ids).await?;
            i += 4;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let walls = batch_walls(&cluster, &id).unwrap_or_default();
        if walls.is_empty() {
            let state = cluster.job_state(&id).await?;
            cluster.shutdown().await;
            return Err(
                format!("B8 floor into {}: no batch committed ({state})", store.name).into(),
            );
        }
        cluster.shutdown().await;
        let (p50, p99) = (percentile(&walls, 50.0), percentile(&walls, 99.0));
        let target = (store.name == "kafka").then_some(20);
        figures.push(Figure {
            bench: format!(
                "B8 per-batch floor into {} ({} batches of a few rows, trigger 0)",
                store.name,
                walls.len()
            ),
            spate: format!("p50 {p50} ms, p99 {p99} ms"),
            baseline: String::new(),
            ratio: String::new(),
            target: target.map_or_else(String::new, |t| format!("p50 < {t} ms")),
            met: target.map(|t| p50 < t),
        });
    }
    Ok(figures)
}
