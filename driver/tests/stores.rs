//! Running totals into the stores Spate's users write to, real Redis and
//! PostgreSQL servers: an update-mode job over Kafka with a worker SIGKILLed
//! mid-stream and the master killed and restarted, after which the store
//! holds DataFusion's answer over the same records, each key once.

mod common;

use std::time::Duration;

use common::*;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use spate_testkit::{PostgresServer, RedisServer};

const RECORDS: u64 = 3000;
const SALES_COLUMNS: &str =
    "id BIGINT, customer VARCHAR, revenue DOUBLE, country VARCHAR, \"timestamp\" TIMESTAMP";
const TOTALS: &str = "SELECT customer, country, sum(revenue) AS total, count(*) AS sales \
     FROM sales GROUP BY customer, country";

fn totals_job(bootstrap: &str, sink: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE sales ({SALES_COLUMNS}) STORED AS KAFKA LOCATION 'sales'
           OPTIONS ('bootstrap.servers' '{bootstrap}', 'max_offsets_per_trigger' '250');
         {sink}
         SET spate.output_mode = 'update';
         SET spate.trigger.interval = '100ms';
         INSERT INTO totals {TOTALS};"
    )
}

/// (customer, country) -> (total, sales), as DataFusion computes it alone.
async fn reference() -> Vec<(String, String, f64, i64)> {
    let query = format!("{TOTALS} ORDER BY customer, country");
    let batches = reference_batches(0..RECORDS, SALES_COLUMNS, &query).await;
    let mut rows = Vec::new();
    for batch in batches {
        let text = |c: usize| {
            datafusion::arrow::compute::cast(
                batch.column(c),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap()
        };
        let (customer, country) = (text(0), text(1));
        let (customer, country) = (customer.as_string::<i32>(), country.as_string::<i32>());
        let total = batch.column(2).as_primitive::<Float64Type>();
        let sales = batch.column(3).as_primitive::<Int64Type>();
        for r in 0..batch.num_rows() {
            assert!(total.is_valid(r));
            rows.push((
                customer.value(r).to_string(),
                country.value(r).to_string(),
                total.value(r),
                sales.value(r),
            ));
        }
    }
    rows
}

/// Runs a job (`job` makes its SQL for a bootstrap) on two workers over all
/// records, SIGKILLing a worker and killing and restarting the master while
/// batches commit.
async fn run_with_faults(name: &str, job_sql: impl Fn(&str) -> String) {
    let (_kafka, bootstrap) = sales_kafka();
    let ws = tempfile::tempdir().unwrap();
    let mut master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let mut workers = start_workers(&master.url(), ws.path(), &["w1", "w2"]);
    produce_sales(&bootstrap, "sales", 0..RECORDS, 4).await;
    let id = submit(&master.url(), name, &job_sql(&bootstrap))
        .await
        .unwrap();
    for (batches, fault) in [(2u64, "worker"), (4, "master")] {
        let url = master.url();
        wait_until(
            &format!("{batches} committed batches"),
            Duration::from_secs(120),
            || async { job(&url, &id).await.is_some_and(|j| j.batches >= batches) },
        )
        .await;
        if fault == "worker" {
            workers.remove(0).kill();
            workers.push(start_worker(&url, ws.path(), "w3"));
        } else {
            master.proc.kill();
            master = start_master(ws.path(), &master.grpc, &[]);
        }
    }
    wait_for_input_rows(&master.url(), &id, RECORDS).await;
    let done = job(&master.url(), &id).await.unwrap();
    assert_eq!(done.input_rows, RECORDS, "no record read twice: {done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_totals_into_redis_are_exactly_once_through_faults() {
    let redis = RedisServer::start();
    let sink = format!(
        "CREATE EXTERNAL TABLE totals STORED AS REDIS LOCATION '{}'
           OPTIONS ('key' 'customer,country', 'key_prefix' 'revenue:');",
        redis.url()
    );
    run_with_faults("redis_totals", |b| totals_job(b, &sink)).await;
    let want = reference().await;
    let mut connection = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("revenue:*")
        .query(&mut connection)
        .unwrap();
    assert_eq!(keys.len(), want.len(), "each key once: {keys:?}");
    for (customer, country, total, sales) in want {
        let key = format!("revenue:{customer}:{country}");
        let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query(&mut connection)
            .unwrap();
        assert_eq!(hash.get("customer"), Some(&customer), "{key}: {hash:?}");
        assert_eq!(hash.get("country"), Some(&country), "{key}: {hash:?}");
        assert_eq!(
            hash["total"].parse::<f64>().unwrap(),
            total,
            "{key}: {hash:?}"
        );
        assert_eq!(
            hash["sales"].parse::<i64>().unwrap(),
            sales,
            "{key}: {hash:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_totals_into_postgres_are_exactly_once_through_faults() {
    let postgres = PostgresServer::start();
    let sink = format!(
        "CREATE EXTERNAL TABLE totals STORED AS POSTGRES LOCATION '{}'
           OPTIONS ('table' 'revenue_totals', 'primary_key' 'customer,country');",
        postgres.url()
    );
    run_with_faults("postgres_totals", |b| totals_job(b, &sink)).await;
    let want: Vec<String> = reference()
        .await
        .into_iter()
        .map(|(customer, country, total, sales)| format!("{customer}|{country}|{total}|{sales}"))
        .collect();
    let got = postgres
        .query(
            "SELECT customer, country, total, sales FROM revenue_totals ORDER BY customer, country",
        )
        .await;
    assert_eq!(got, want);
    // The table was made from the query's columns, with its primary key.
    let columns = postgres
        .query(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'revenue_totals' ORDER BY ordinal_position",
        )
        .await;
    assert_eq!(
        columns,
        [
            "customer|text",
            "country|text",
            "total|double precision",
            "sales|bigint"
        ]
    );
    let progress = postgres
        .query("SELECT count(*) FROM spate_progress WHERE job = 'postgres_totals'")
        .await;
    assert_ne!(
        progress,
        ["0"],
        "the job's partitions recorded their batches"
    );
}

/// A task that runs again for a batch its partition applied (a re-run after
/// a failure, or a zombie) changes nothing: the store keeps the first
/// write, and the next batch applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_a_partition_applied_is_skipped_when_written_again() {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use spate_engine::sink::{Attempt, SinkSpec};
    use std::sync::Arc;

    let redis = RedisServer::start();
    let postgres = PostgresServer::start();
    let ws = spate_engine::Workspace::open(tempfile::tempdir().unwrap().path()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("total", DataType::Int64, true),
    ]));
    let rows = |total: i64| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![Some(total), None])),
            ],
        )
        .unwrap()
    };
    let attempt = |batch: u64, attempt: &str| Attempt {
        batch,
        task_index: 0,
        attempt_id: attempt.to_string(),
    };
    let sinks = [
        SinkSpec::Redis(spate_engine::redis::RedisSinkSpec {
            url: redis.url(),
            table: "t".into(),
            key_columns: vec!["id".into()],
            key_prefix: "t:".into(),
        }),
        SinkSpec::Postgres(spate_engine::postgres::PostgresSinkSpec {
            url: postgres.url(),
            sink: "t".into(),
            table: "t".into(),
            primary_key: vec!["id".into()],
        }),
    ];
    for spec in &sinks {
        let sink = spec.open(&ws, "j");
        sink.write(&attempt(5, "first"), Arc::clone(&schema), &[rows(1)])
            .await
            .unwrap();
        sink.write(&attempt(5, "again"), Arc::clone(&schema), &[rows(2)])
            .await
            .unwrap();
    }
    let mut connection = redis.connection();
    let total = |c: &mut redis::Connection| -> Option<String> {
        redis::cmd("HGET").arg("t:a").arg("total").query(c).unwrap()
    };
    assert_eq!(total(&mut connection).as_deref(), Some("1"));
    let b: Vec<String> = redis::cmd("HKEYS")
        .arg("t:b")
        .query(&mut connection)
        .unwrap();
    assert_eq!(b, ["id"], "a NULL leaves its field out");
    assert_eq!(
        postgres.query("SELECT id, total FROM t ORDER BY id").await,
        ["a|1", "b|NULL"]
    );
    for spec in &sinks {
        spec.open(&ws, "j")
            .write(&attempt(6, "next"), Arc::clone(&schema), &[rows(3)])
            .await
            .unwrap();
    }
    assert_eq!(total(&mut connection).as_deref(), Some("3"));
    assert_eq!(
        postgres.query("SELECT id, total FROM t ORDER BY id").await,
        ["a|3", "b|NULL"]
    );
}

/// Without a primary key, a PostgreSQL sink appends (with COPY): through a
/// SIGKILLed worker and a restarted master every row is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_rows_into_postgres_are_exactly_once_through_faults() {
    let postgres = PostgresServer::start();
    let sink = format!(
        "CREATE EXTERNAL TABLE totals STORED AS POSTGRES LOCATION '{}' OPTIONS ('table' 'big_sales');",
        postgres.url()
    );
    run_with_faults("appended", |bootstrap| {
        format!(
            "CREATE EXTERNAL TABLE sales ({SALES_COLUMNS}) STORED AS KAFKA LOCATION 'sales'
               OPTIONS ('bootstrap.servers' '{bootstrap}', 'max_offsets_per_trigger' '250');
             {sink}
             SET spate.trigger.interval = '100ms';
             INSERT INTO totals SELECT id, customer, revenue FROM sales WHERE revenue > 100;"
        )
    })
    .await;
    let want: Vec<String> = (0..RECORDS)
        .map(sale)
        .filter(|s| s["revenue"].as_f64().unwrap() > 100.0)
        .map(|s| {
            format!(
                "{}|{}|{}",
                s["id"],
                s["customer"].as_str().unwrap(),
                s["revenue"]
            )
        })
        .collect();
    let got = postgres
        .query("SELECT id, customer, revenue FROM big_sales ORDER BY id")
        .await;
    assert_eq!(got.len(), want.len(), "every row once");
    assert_eq!(got, want);
}

/// The sample jobs `workspace/jobs/running_revenue_{redis,postgres}.sql`,
/// pointed at this test's servers, give DataFusion's running totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_store_jobs_keep_running_totals_per_id() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let redis = RedisServer::start();
    let postgres = PostgresServer::start();
    let (_kafka, bootstrap) = sales_kafka();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &["--kafka-bootstrap", &bootstrap]);
    let _workers = start_workers(&master.url(), ws.path(), &["w1"]);
    let record = |i: u64| {
        serde_json::json!({"id": i % 40, "customer": format!("c{}", i % 40), "revenue": (i % 9) as f64 * 0.5})
            .to_string()
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for i in 0..800u64 {
        let payload = record(i);
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
    let sample = |name: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../workspace/jobs/{name}.sql")),
        )
        .unwrap()
        .replace("redis://redis:6379/0", &redis.url())
        .replace(
            "postgresql://spate:spate@postgres:5432/spate",
            &postgres.url(),
        ) + "\nSET spate.trigger.interval = '100ms';\n"
    };
    for name in ["running_revenue_redis", "running_revenue_postgres"] {
        let id = submit(&master.url(), name, &sample(name)).await.unwrap();
        wait_for_input_rows(&master.url(), &id, 800).await;
    }
    let mut want = std::collections::BTreeMap::new();
    for i in 0..800u64 {
        let entry = want.entry(i % 40).or_insert((0.0f64, 0i64));
        entry.0 += (i % 9) as f64 * 0.5;
        entry.1 += 1;
    }
    let mut connection = redis.connection();
    for (id, (total, sales)) in &want {
        let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("revenue:{id}"))
            .query(&mut connection)
            .unwrap();
        assert_eq!(
            hash["total_revenue"].parse::<f64>().unwrap(),
            *total,
            "{id}: {hash:?}"
        );
        assert_eq!(hash["sales"], sales.to_string(), "{id}: {hash:?}");
        assert_eq!(hash["customer"], format!("c{id}"));
    }
    let rows = postgres
        .query("SELECT id, customer, total_revenue, sales FROM revenue_by_id ORDER BY id")
        .await;
    let expected: Vec<String> = want
        .iter()
        .map(|(id, (total, sales))| format!("{id}|c{id}|{total}|{sales}"))
        .collect();
    assert_eq!(rows, expected);
}
