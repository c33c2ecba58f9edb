//! Stateful streaming jobs on a cluster of two workers, one per SQL fixture
//! in `tests/streaming/`. Each feeds the same events in three phases: a
//! minute in order (before the job starts), then late rows mixed with
//! on-time ones, then one row far ahead that closes every earlier window.
//! The sink must equal the reference: the fixture's INSERT run by DataFusion
//! in one process over the records as one batch, without the late rows,
//! filtered by the fixture's `-- reference:` predicate (which windows the
//! final watermark closed), or by its `-- reference query:` where the
//! fixture's own query would use what it tests. Kafka sinks are read as a compacted topic would
//! keep them: the latest row per key.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use spate_engine::Workspace;
use spate_engine::job::{self, PlanEnv, SinkSpec};
use spate_engine::stateful::OutputMode;

const TOPIC_PARTITIONS: i32 = 4;
/// 2023-11-14T22:13:20Z, a multiple of every window size used here.
const T0: i64 = 1_700_000_000_000;
const FAR_AHEAD_MS: i64 = 200_000;

const CUSTOMERS_CSV: &str = "customer,segment\nc0,retail\nc1,retail\nc2,business\nc3,enterprise\n";

/// The topic a job reads, every column its records may have, and how the
/// test makes record `i` at a given event time.
struct Source {
    topic: &'static str,
    columns: &'static str,
    record: fn(i64, i64) -> String,
}

/// What the fixtures read.
const EVENTS: Source = Source {
    topic: "events",
    columns: "(ts TIMESTAMP, customer VARCHAR, country VARCHAR, user_id BIGINT, gender VARCHAR, amount DOUBLE)",
    record: event,
};

/// What `driver produce` writes and the sample jobs in workspace/jobs read.
const SALES: Source = Source {
    topic: "sales",
    columns: "(id BIGINT, customer VARCHAR, revenue DOUBLE, revenue_counter DOUBLE, \"timestamp\" TIMESTAMP, country VARCHAR, gender VARCHAR, ip VARCHAR)",
    record: sale,
};

macro_rules! fixture_tests {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/streaming/{}.sql", stringify!($name)));
            run_job(stringify!($name), std::fs::read_to_string(path).unwrap(), &EVENTS).await;
        }
    )*};
}

fixture_tests!(
    tumbling,
    sliding,
    session_windows,
    date_bin,
    complete,
    update,
    join
);

macro_rules! sample_job_tests {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../workspace/jobs/{}.sql", stringify!($name)));
            // Triggers come faster than the job's own, so the test is quick.
            let sql = std::fs::read_to_string(path).unwrap()
                + "\nSET spate.trigger.interval = '200ms';\n";
            run_job(stringify!($name), sql, &SALES).await;
        }
    )*};
}

sample_job_tests!(sliding_revenue, window_metrics, running_revenue);

fn sale(ts_ms: i64, i: i64) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap();
    let id = i % 7 + 1;
    let customer = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace"][(id - 1) as usize];
    let country = ["US", "DE", "FR", "GB", "IN"][(i % 5) as usize];
    let gender = ["M", "F"][(id % 2) as usize];
    serde_json::json!({
        "id": id,
        "customer": customer,
        "revenue": (i % 13) as f64 * 1.25,
        "revenue_counter": 0.0,
        "timestamp": ts.to_rfc3339(),
        "country": country,
        "gender": gender,
        "ip": format!("10.0.0.{id}"),
    })
    .to_string()
}

fn event(ts_ms: i64, i: i64) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap();
    let country = ["NL", "DE", "FR", "US", "BR", "JP"][(i % 6) as usize];
    let gender = ["M", "F", "M", "F", "X"][(i % 5) as usize];
    serde_json::json!({
        "ts": ts.to_rfc3339(),
        "customer": format!("c{}", i % 5),
        "country": country,
        "user_id": (i * 7) % 37,
        "gender": gender,
        // Quarters add up exactly in any order, so sums compare as text.
        "amount": (i % 9) as f64 * 0.25,
    })
    .to_string()
}

struct Phases {
    in_order: Vec<String>,
    late: Vec<String>,
    on_time: Vec<String>,
    far_ahead: Vec<String>,
}

/// A minute in order; then 60 rows older than the watermark that minute
/// sets (for delays up to 20 s) and 60 newer ones (neither moves it); then
/// one row far ahead.
fn phases(source: &Source) -> Phases {
    let record = source.record;
    Phases {
        in_order: (0..300).map(|i| record(T0 + i * 200, i)).collect(),
        late: (0..60).map(|i| record(T0 + i * 600, 1000 + i)).collect(),
        on_time: (0..60)
            .map(|i| record(T0 + 55_000 + i * 80, 2000 + i))
            .collect(),
        far_ahead: vec![record(T0 + FAR_AHEAD_MS, 3000)],
    }
}

async fn produce(cluster: &Cluster, topic: &str, lines: &[String]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap_servers())
        .create()
        .unwrap();
    for (i, line) in lines.iter().enumerate() {
        producer
            .send(
                FutureRecord::<(), String>::to(topic)
                    .payload(line)
                    .partition(i as i32 % TOPIC_PARTITIONS),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

async fn wait_for_input(cluster: &Cluster, id: &str, rows: u64) {
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let reached = wait_until_or_timeout(|| async {
        let job = cluster.job(id).await;
        assert_ne!(job["state"], "FAILED", "{job}");
        let done = job["input_rows"].as_u64() == Some(rows);
        *last.lock().unwrap() = job;
        done
    })
    .await;
    assert!(
        reached,
        "gave up waiting for {rows} input rows: {}",
        last.lock().unwrap()
    );
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn run_job(name: &str, sql: String, source: &Source) {
    let ws_dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(ws_dir.path()).unwrap();
    std::fs::create_dir_all(ws_dir.path().join("data")).unwrap();
    std::fs::write(ws_dir.path().join("data/customers.csv"), CUSTOMERS_CSV).unwrap();
    let cluster = Cluster::start(ws_dir.path(), 2).await;
    // The cluster comes with a 4-partition `sales` topic.
    if source.topic != "sales" {
        cluster
            .broker
            .create_topic(source.topic, TOPIC_PARTITIONS)
            .unwrap();
    }
    // The job as the master plans it: its watermark delay, sink and mode.
    let planned = job::plan_job(
        &PlanEnv::new(ws.clone(), cluster.broker.bootstrap_servers()),
        &sql,
        name,
    )
    .await
    .unwrap();
    if let SinkSpec::Kafka(sink) = &planned.sink {
        cluster.broker.create_topic(&sink.topic, 2).unwrap();
    }
    let delay_ms = planned.source().watermark.as_ref().map(|w| w.delay_ms);
    let watermarked = delay_ms.is_some();
    // Which rows to compare: the fixture says; a windowed job in append
    // mode shows the windows the final watermark closed; others all rows.
    let predicate = match sql.lines().find_map(|l| l.strip_prefix("-- reference:")) {
        Some(p) => p.trim().to_string(),
        None if planned.options.output_mode == OutputMode::Append => {
            "window_end <= {watermark}".to_string()
        }
        None => "true".to_string(),
    };

    let phases = phases(source);
    produce(&cluster, source.topic, &phases.in_order).await;
    let id = cluster.submit_sql(name, sql.clone()).await;
    wait_for_input(&cluster, &id, 300).await;
    let mixed: Vec<String> = phases
        .late
        .iter()
        .zip(&phases.on_time)
        .flat_map(|(l, o)| [l.clone(), o.clone()])
        .collect();
    produce(&cluster, source.topic, &mixed).await;
    wait_for_input(&cluster, &id, 420).await;
    produce(&cluster, source.topic, &phases.far_ahead).await;
    wait_for_input(&cluster, &id, 421).await;
    let final_watermark = T0 + FAR_AHEAD_MS - delay_ms.unwrap_or(0);
    if watermarked {
        // The batch after the far row runs on the watermark it set, without data.
        wait_until("the final watermark's batch", || async {
            let progress = get_json(&format!("{}/api/v1/jobs/{id}/batches", cluster.ui())).await;
            progress.as_array().unwrap().iter().any(|p| {
                p["eventTime"]["watermark"].as_str() == Some(iso(final_watermark).as_str())
            })
        })
        .await;
        let job = cluster.job(&id).await;
        let progress = get_json(&format!("{}/api/v1/jobs/{id}/batches", cluster.ui())).await;
        let late: u64 = progress
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["lateRowsDropped"].as_u64().unwrap())
            .sum();
        assert_eq!(late, phases.late.len() as u64, "late rows counted: {job}");
    }

    let mut counted = phases.in_order.clone();
    counted.extend(phases.on_time.clone());
    if !watermarked {
        counted.extend(phases.late.clone());
    }
    counted.extend(phases.far_ahead.clone());
    let want = reference(&ws, &sql, source, &counted, &predicate, final_watermark).await;
    let got = sink_rows(&cluster, &ws, &sql, &planned.sink).await;
    cluster.stop().await;
    assert!(
        !want.is_empty(),
        "{name}: the reference is empty, so the test would prove nothing"
    );
    assert_eq!(got, want, "{name}: the sink differs from the reference");
}

/// Statements of a job file, comments removed.
fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn sink_name(sql: &str) -> String {
    let insert = statements(sql)
        .into_iter()
        .find(|s| s.to_uppercase().starts_with("INSERT INTO"))
        .unwrap();
    insert.split_whitespace().nth(2).unwrap().to_string()
}

/// The job's tables in a Spate session, as the master planned them.
async fn job_session(ws: &Workspace, sql: &str) -> SessionContext {
    let ctx = job::session(&PlanEnv::new(ws.clone(), "127.0.0.1:1"));
    for statement in statements(sql) {
        if statement.to_uppercase().starts_with("CREATE") {
            ctx.sql(&statement).await.unwrap().collect().await.unwrap();
        }
    }
    ctx
}

/// The fixture's INSERT run by DataFusion over `records` in one batch, into
/// an in-memory copy of its sink, filtered by `predicate`.
async fn reference(
    ws: &Workspace,
    sql: &str,
    source: &Source,
    records: &[String],
    predicate: &str,
    watermark_ms: i64,
) -> Vec<String> {
    let ctx = job::session(&PlanEnv::new(ws.clone(), ""));
    std::fs::create_dir_all(ws.local_root().unwrap().join("reference")).unwrap();
    std::fs::write(
        ws.local_root().unwrap().join("reference/records.json"),
        records.join("\n"),
    )
    .unwrap();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE {} {} STORED AS JSON LOCATION 'reference/'",
        source.topic, source.columns
    ))
    .await
    .unwrap();
    let sink = sink_name(sql);
    let sink_schema = sink_schema(ws, sql).await;
    ctx.register_table(
        sink.as_str(),
        Arc::new(MemTable::try_new(Arc::clone(&sink_schema), vec![vec![]]).unwrap()),
    )
    .unwrap();
    for statement in statements(sql) {
        let upper = statement.to_uppercase();
        let is_sink = upper.starts_with(&format!("CREATE EXTERNAL TABLE {}", sink.to_uppercase()));
        if upper.starts_with("INSERT")
            || (upper.starts_with("CREATE") && !upper.contains("STORED AS KAFKA") && !is_sink)
        {
            // A fixture may say the same in other words where Spate's own
            // functions would check themselves (session windows).
            let statement = match (upper.starts_with("INSERT"), reference_query(sql)) {
                (true, Some(query)) => format!("INSERT INTO {sink} {query}"),
                _ => statement,
            };
            job::sql(&ctx, &statement)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
        }
    }
    let watermark = format!(
        "TIMESTAMP '{}'",
        chrono::DateTime::from_timestamp_millis(watermark_ms)
            .unwrap()
            .naive_utc()
    );
    let predicate = predicate.replace("{watermark}", &watermark);
    let batches = ctx
        .sql(&format!("SELECT * FROM {sink} WHERE {predicate}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows = rows_of(&batches);
    if sink_is_kafka(sql) {
        latest_per_key(rows)
    } else {
        sorted(rows)
    }
}

fn reference_query(sql: &str) -> Option<String> {
    sql.lines()
        .find_map(|l| l.strip_prefix("-- reference query:"))
        .map(|q| q.trim().to_string())
}

async fn sink_schema(ws: &Workspace, sql: &str) -> SchemaRef {
    let ctx = job_session(ws, sql).await;
    ctx.table_provider(sink_name(sql).as_str())
        .await
        .unwrap()
        .schema()
}

fn sink_is_kafka(sql: &str) -> bool {
    let sink = sink_name(sql).to_uppercase();
    statements(sql).iter().any(|s| {
        let upper = s.to_uppercase();
        upper.starts_with(&format!("CREATE EXTERNAL TABLE {sink} "))
            && upper.contains("STORED AS KAFKA")
    })
}

/// What the job committed: the file sink's manifests, or the Kafka topic
/// with the latest row per key.
async fn sink_rows(cluster: &Cluster, ws: &Workspace, sql: &str, spec: &SinkSpec) -> Vec<String> {
    let sink = sink_name(sql);
    let schema = sink_schema(ws, sql).await;
    if !sink_is_kafka(sql) {
        let ctx = job_session(ws, sql).await;
        let batches = ctx
            .sql(&format!("SELECT * FROM {sink}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        return sorted(rows_of(&batches));
    }
    // Every record of the sink topic, decoded with the sink's columns.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.broker.bootstrap_servers())
        .set("group.id", "streaming-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let SinkSpec::Kafka(spec) = spec else {
        unreachable!("a file sink was read above");
    };
    let topic = spec.topic.as_str();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut expected = 0;
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(5))
            .unwrap();
        expected += high - low;
        assignment
            .add_partition_offset(topic, partition.id(), rdkafka::Offset::Offset(low))
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    // Per partition, in offset order: a compacted topic keeps the last per key.
    let mut by_partition: BTreeMap<i32, Vec<(String, String)>> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut received = 0;
    while received < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "read {received} of {expected} sink records"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        by_partition.entry(message.partition()).or_default().push((
            String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
            String::from_utf8(message.payload().unwrap().to_vec()).unwrap(),
        ));
        received += 1;
    }
    let (keys, lines): (Vec<String>, Vec<String>) = by_partition.into_values().flatten().unzip();
    let declared: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !schema.field(*i).name().starts_with('_'))
        .collect();
    let value_schema = Arc::new(schema.project(&declared).unwrap());
    let mut decoder = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&value_schema))
        .build_decoder()
        .unwrap();
    decoder.decode(lines.join("\n").as_bytes()).unwrap();
    let values = decoder.flush().unwrap().unwrap();
    // The same layout as the reference: the sink's columns, `_key` filled.
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "_key" => Arc::new(StringArray::from(keys.clone())) as ArrayRef,
            name => match value_schema.index_of(name) {
                Ok(i) => Arc::clone(values.column(i)),
                Err(_) => datafusion::arrow::array::new_null_array(f.data_type(), keys.len()),
            },
        })
        .collect();
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    latest_per_key(rows_of(&[batch]))
}

/// Rows as text, `|`-separated; the first column is a Kafka sink's `_key`
/// when the sink has one.
fn rows_of(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let key = batch.schema().index_of("_key").ok();
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let mut cells: Vec<String> = Vec::new();
            if let Some(k) = key {
                cells.push(formatters[k].value(row).to_string());
            }
            for (i, f) in formatters.iter().enumerate() {
                let name = batch.schema().field(i).name().clone();
                if !name.starts_with('_') {
                    cells.push(f.value(row).to_string());
                }
            }
            rows.push(cells.join(" | "));
        }
    }
    rows
}

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
}

/// A compacted topic's view: for each key (the first cell), its last row.
fn latest_per_key(rows: Vec<String>) -> Vec<String> {
    let mut latest = BTreeMap::new();
    for row in rows {
        let key = row.split(" | ").next().unwrap().to_string();
        latest.insert(key, row);
    }
    latest.into_values().collect()
}

/// A stopped job resumes from its checkpoint when submitted again, unless
/// the new query would keep different state: that is refused, saying what
/// changed and how to start afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_aggregation_cannot_resume_from_the_old_state() {
    let ws_dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(ws_dir.path(), 2).await;
    cluster
        .broker
        .create_topic("events", TOPIC_PARTITIONS)
        .unwrap();
    let sql = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/streaming/tumbling.sql"),
    )
    .unwrap();
    produce(&cluster, "events", &phases(&EVENTS).in_order).await;
    let id = cluster.submit_sql("tumbling", sql.clone()).await;
    wait_for_input(&cluster, &id, 300).await;
    cluster.stop_job(&id).await;

    let changed = sql.replace("count(DISTINCT customer)", "CAST(max(amount) AS BIGINT)");
    let mut client = spate_proto::client_service_client::ClientServiceClient::connect(format!(
        "http://{}",
        cluster.master.grpc_addr
    ))
    .await
    .unwrap();
    let refused = client
        .submit_job(spate_proto::SubmitJobRequest {
            sql: changed,
            name: "tumbling".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let message = refused.message();
    assert!(
        message.contains("job 'tumbling' has a checkpoint whose state holds")
            && message.contains("driver submit --fresh` to start it afresh"),
        "{message}"
    );

    // The same query resumes where it stopped.
    assert_eq!(cluster.submit_sql("tumbling", sql).await, id);
    cluster.wait_for_state(&id, "RUNNING").await;
    assert_eq!(cluster.job(&id).await["input_rows"], 300);
    cluster.stop().await;
}
