//! Sinks as a Spark, Arroyo or datafusion-cli user declares them: without
//! columns (the query gives them), with DataFusion's own table options, and
//! with declared columns that must fit the query's, or fail at submit with
//! the column named. Each sink is read back and compared with DataFusion's
//! answer over the same records.

use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use spate_engine::Workspace;
use spate_engine::job::{PlanEnv, plan_job, session};
use spate_engine::kafka::DevBroker;

mod common;
use common::{produce_lines, run_batch};

fn orders() -> Vec<String> {
    (0..40)
        .map(|i| {
            format!(
                r#"{{"id": {i}, "customer": "{}", "amount": {}}}"#,
                ["ann", "bob", "cy"][i % 3],
                (i * 7 % 11) as f64 / 2.0
            )
        })
        .collect()
}

const ORDERS: &str = "CREATE EXTERNAL TABLE orders (id BIGINT, customer VARCHAR, amount DOUBLE)
    STORED AS KAFKA LOCATION 'orders' OPTIONS ('bootstrap.servers' '{bootstrap}');";

/// DataFusion alone: `query` over the orders as one JSON file.
async fn reference(query: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.json");
    std::fs::write(&file, orders().join("\n")).unwrap();
    let ctx = SessionContext::new();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE orders (id BIGINT, customer VARCHAR, amount DOUBLE) STORED AS JSON LOCATION '{}'",
        file.display()
    ))
    .await
    .unwrap();
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// `query` over a file sink read back as a table declared by `ddl`.
async fn read_back(ws: &Workspace, ddl: &str, query: &str) -> String {
    let ctx = session(&PlanEnv::new(ws.clone(), String::new()));
    ctx.sql(ddl).await.unwrap();
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

const QUERY: &str =
    "SELECT id, upper(customer) AS who, amount * 2 AS doubled FROM orders WHERE amount > 1";

#[tokio::test]
async fn file_sinks_declared_without_columns_take_the_querys() {
    let broker = DevBroker::start().unwrap();
    let counts = produce_lines(&broker, "orders", 2, orders()).await;
    let want = reference(&format!("{QUERY} ORDER BY id")).await;
    for format in ["PARQUET", "JSON", "CSV"] {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let sql = format!(
            "{ORDERS}
             CREATE EXTERNAL TABLE out STORED AS {format} LOCATION 'out/';
             INSERT INTO out {QUERY};"
        );
        run_batch(&ws, &broker, "orders", &sql, counts.clone())
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        // Read as datafusion-cli would: the columns come from the files.
        let got = read_back(
            &ws,
            &format!("CREATE EXTERNAL TABLE out STORED AS {format} LOCATION 'out/'"),
            "SELECT id, who, doubled FROM out ORDER BY id",
        )
        .await;
        assert_eq!(got, want, "{format}");
    }
}

#[tokio::test]
async fn a_kafka_sink_declared_without_columns_takes_the_querys() {
    let broker = DevBroker::start().unwrap();
    let counts = produce_lines(&broker, "orders", 2, orders()).await;
    broker.create_topic("enriched", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let sql = format!(
        "{ORDERS}
         CREATE EXTERNAL TABLE enriched STORED AS KAFKA LOCATION 'enriched'
           OPTIONS ('bootstrap.servers' '{{bootstrap}}');
         INSERT INTO enriched SELECT CAST(id AS VARCHAR) AS _key, id, upper(customer) AS who FROM orders;"
    );
    run_batch(&ws, &broker, "orders", &sql, counts)
        .await
        .unwrap();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset("enriched", 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut records = Vec::new();
    while records.len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} records came",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let key = String::from_utf8_lossy(message.key().unwrap()).to_string();
        let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        records.push((key, value));
    }
    records.sort_by_key(|(k, _)| k.parse::<i64>().unwrap());
    for (i, (key, value)) in records.iter().enumerate() {
        assert_eq!(key, &i.to_string());
        let who = ["ANN", "BOB", "CY"][i % 3];
        assert_eq!(value, &serde_json::json!({"id": i, "who": who}), "{key}");
    }
}

#[tokio::test]
async fn declared_columns_that_do_not_fit_the_query_are_one_error_naming_the_column() {
    let broker = DevBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let env = PlanEnv::new(ws.clone(), broker.bootstrap_servers().to_string());
    let refused = |ddl: &str, insert: &str| {
        let sql =
            format!("{ORDERS} {ddl} {insert}").replace("{bootstrap}", broker.bootstrap_servers());
        let env = env.clone();
        async move { plan_job(&env, &sql, "j").await.unwrap_err().to_string() }
    };
    let wrong_type = refused(
        "CREATE EXTERNAL TABLE out (id BIGINT, who BIGINT) STORED AS PARQUET LOCATION 'out/';",
        "INSERT INTO out SELECT id, customer FROM orders;",
    )
    .await;
    assert!(
        wrong_type.contains("statement 3 of 3")
            && wrong_type.contains(
                "column 'who' is declared BIGINT and the query gives 'customer' as VARCHAR"
            ),
        "{wrong_type}"
    );
    let wrong_count = refused(
        "CREATE EXTERNAL TABLE out (id BIGINT) STORED AS PARQUET LOCATION 'out/';",
        "INSERT INTO out SELECT id, customer FROM orders;",
    )
    .await;
    assert!(
        wrong_count
            .contains("the table declares 1 columns (id) and the query gives 2 (id, customer)"),
        "{wrong_count}"
    );
    let unknown = refused(
        "CREATE EXTERNAL TABLE out (id BIGINT) STORED AS PARQUET LOCATION 'out/';",
        "INSERT INTO out (ident) SELECT id FROM orders;",
    )
    .await;
    assert!(
        unknown.contains("the table has no column 'ident'; it has id"),
        "{unknown}"
    );
    // A narrower declared type than the query's is refused too: it would
    // cast, and fail on the first value that does not fit.
    let narrower = refused(
        "CREATE EXTERNAL TABLE out (id INT) STORED AS PARQUET LOCATION 'out/';",
        "INSERT INTO out SELECT id FROM orders;",
    )
    .await;
    assert!(
        narrower.contains("column 'id' is declared INT and the query gives 'id' as BIGINT"),
        "{narrower}"
    );
}

#[tokio::test]
async fn file_tables_take_datafusions_options() {
    let broker = DevBroker::start().unwrap();
    let counts = produce_lines(&broker, "orders", 2, orders()).await;
    let want = reference(&format!("{QUERY} ORDER BY id")).await;
    let cases = [
        (
            "CSV",
            "'format.has_header' 'false', 'format.delimiter' ';'",
            "csv",
        ),
        ("CSV", "'format.compression' 'gzip'", "csv.gz"),
        ("JSON", "'format.compression' 'zstd'", "json.zst"),
        // DataFusion refuses 'format.compression' for Parquet tables (as
        // datafusion-cli does); a column's codec is its own option.
        (
            "PARQUET",
            "'format.compression::who' 'zstd(3)', 'format.max_row_group_size' '8'",
            "parquet",
        ),
    ];
    for (format, options, extension) in cases {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let ddl = format!(
            "CREATE EXTERNAL TABLE out (id BIGINT, who VARCHAR, doubled DOUBLE) STORED AS {format} LOCATION 'out/' OPTIONS ({options});"
        );
        let sql = format!("{ORDERS} {ddl} INSERT INTO out {QUERY};");
        run_batch(&ws, &broker, "orders", &sql, counts.clone())
            .await
            .unwrap_or_else(|e| panic!("{options}: {e}"));
        let files: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("part-"))
            .collect();
        assert!(
            !files.is_empty() && files.iter().all(|f| f.ends_with(&format!(".{extension}"))),
            "{options}: {files:?}"
        );
        let got = read_back(&ws, &ddl, "SELECT id, who, doubled FROM out ORDER BY id").await;
        assert_eq!(got, want, "{options}");
        if options.contains("delimiter") {
            let text = std::fs::read_to_string(dir.path().join("out").join(&files[0])).unwrap();
            assert!(!text.contains("who"), "no header: {text}");
            assert!(text.lines().all(|l| l.split(';').count() == 3), "{text}");
        }
        if format == "PARQUET" {
            let bytes = std::fs::read(dir.path().join("out").join(&files[0])).unwrap();
            let reader = datafusion::parquet::file::reader::SerializedFileReader::new(
                bytes::Bytes::from(bytes),
            )
            .unwrap();
            use datafusion::parquet::file::reader::FileReader;
            let metadata = reader.metadata();
            assert!(
                metadata.num_row_groups() > 1,
                "row groups of 8 rows at most"
            );
            let codec = metadata.row_group(0).column(1).compression();
            assert!(format!("{codec:?}").starts_with("ZSTD"), "{codec:?}");
        }
    }
}

#[tokio::test]
async fn an_unknown_file_table_option_names_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let ctx = session(&PlanEnv::new(ws, String::new()));
    let error = spate_engine::job::sql(
        &ctx,
        "CREATE EXTERNAL TABLE t (a INT) STORED AS CSV LOCATION 't/' OPTIONS ('format.delimeter' ';')",
    )
    .await
    .err()
    .map(|e| e.unwrap_datafusion().to_string())
    .unwrap_or_default();
    assert!(
        error.contains("table 't'")
            && error.contains("delimeter")
            && error.contains("STORED AS CSV takes")
            && error.contains("format.delimiter")
            && error.contains("format.has_header"),
        "{error}"
    );
}

/// Records of `topic` partition 0, as a read_committed consumer sees them.
fn topic_values(broker: &DevBroker, topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "check")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut values = Vec::new();
    loop {
        assert!(std::time::Instant::now() < deadline, "no end of partition");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                values.push(String::from_utf8_lossy(message.payload().unwrap()).to_string())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return values,
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
}

#[tokio::test]
async fn a_kafka_sink_writes_each_partitions_batch_once_in_a_transaction() {
    use datafusion::arrow::array::{RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use spate_engine::kafka::KafkaSinkSpec;
    use spate_engine::sink::{Attempt, SinkSpec};
    use std::sync::Arc;

    let broker = DevBroker::start().unwrap();
    broker.create_topic("once", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, false)]));
    let rows = |values: &[&str]| {
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(values.to_vec()))],
        )
        .unwrap()
    };
    let spec = |run: &str| {
        SinkSpec::Kafka(KafkaSinkSpec {
            topic: "once".into(),
            bootstrap_servers: broker.bootstrap_servers().to_string(),
            client_options: Default::default(),
            exactly_once: true,
            run: run.into(),
        })
    };
    let write = |run: &str, batch: u64, attempt: &str, values: &[&str]| {
        let sink = spec(run).open(&ws, "j");
        let attempt = Attempt {
            batch,
            task_index: 0,
            attempt_id: attempt.into(),
        };
        let rows = rows(values);
        let schema = Arc::clone(&schema);
        async move { sink.write(&attempt, schema, &[rows]).await.unwrap() }
    };
    write("r1", 0, "first", &["a", "b"]).await;
    // Batch 0 again (a re-run after a failure): its partition committed it.
    write("r1", 0, "again", &["x", "y", "z"]).await;
    write("r1", 1, "next", &["c"]).await;
    // Another run of the checkpoint (a job started afresh) has no progress.
    write("r2", 0, "fresh", &["d"]).await;
    let values = topic_values(&broker, "once");
    assert_eq!(
        values,
        [
            r#"{"v":"a"}"#,
            r#"{"v":"b"}"#,
            r#"{"v":"c"}"#,
            r#"{"v":"d"}"#
        ]
    );

    // A job reading the topic (a pipeline's next stage) reads its range to
    // the end. (On Kafka, transaction markers take offsets no consumer is
    // given; librdkafka's mock cluster writes none, so here the range holds
    // the records alone.)
    let admin =
        spate_engine::kafka::KafkaAdmin::new(broker.bootstrap_servers(), &Default::default());
    let high = admin.partition_offsets("once").await.unwrap()[0].high;
    let sql = "CREATE EXTERNAL TABLE once (v VARCHAR) STORED AS KAFKA LOCATION 'once'
                 OPTIONS ('bootstrap.servers' '{bootstrap}');
               CREATE EXTERNAL TABLE copied STORED AS JSON LOCATION 'copied/';
               INSERT INTO copied SELECT v FROM once;"
        .replace("{bootstrap}", broker.bootstrap_servers());
    let planned = plan_job(
        &PlanEnv::new(ws.clone(), broker.bootstrap_servers()),
        &sql,
        "next",
    )
    .await
    .unwrap();
    let task = spate_engine::task::TaskSpec {
        job_id: "next".into(),
        batch_id: 0,
        attempt_id: "a".into(),
        stage_id: planned.stages[0].id,
        task_index: 0,
        plan: planned.stages[0].plan.clone(),
        ranges: vec![spate_engine::OffsetRange {
            topic: "once".into(),
            partition: 0,
            start: 0,
            end: high,
        }],
        partition: 0,
        shuffle_inputs: Vec::new(),
        watermark_ms: None,
        sink: planned.sink.clone(),
    };
    let started = std::time::Instant::now();
    let outcome = spate_engine::task::run_task(&ws, &task, &Default::default())
        .await
        .unwrap();
    assert_eq!(outcome.input_rows, 4);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
