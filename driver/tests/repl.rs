//! `driver repl`: driven through a pseudo-terminal as a person would use it
//! (multi-line statements, Tab completion, queries over a topic and over a
//! sink, `\jobs`, `\tail` left with Ctrl-C, `\save`), and as a script with
//! `-f`, whose distributed results must equal DataFusion's in one process.

mod common;

use std::process::Command;

use common::*;
use rdkafka::mocking::MockCluster;
use rexpect::session::{Options, PtySession, spawn_with_options};

const SALES_COLUMNS: &str =
    "id BIGINT, customer VARCHAR, revenue DOUBLE, country VARCHAR, \"timestamp\" TIMESTAMP";
const RECORDS: u64 = 300;

/// A REPL with its own cluster, reading Kafka at `bootstrap`.
fn repl_command(workspace: &std::path::Path, bootstrap: &str) -> Command {
    repl_command_on(workspace, workspace, bootstrap)
}

/// As `repl_command`, on `workspace`, its history and notebooks in `local`.
fn repl_command_on(
    workspace: &(impl TestWorkspace + ?Sized),
    local: &std::path::Path,
    bootstrap: &str,
) -> Command {
    let mut command = Command::new(bin("driver"));
    command
        .args(["repl", "--bind", "127.0.0.1:0", "--ui-bind", "127.0.0.1:0"])
        .args(["--bootstrap", bootstrap])
        .arg("--workspace")
        .arg(workspace.arg())
        .envs(workspace.env())
        .current_dir(local)
        .arg("--history")
        .arg(local.join("history"))
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env("RUST_LOG", "error");
    command
}

fn enter(repl: &mut PtySession, text: &str) {
    repl.send(text).unwrap();
    repl.send("\r").unwrap();
    repl.flush().unwrap();
}

/// Sales with revenue over `limit` among the test records.
fn sales_over(limit: f64) -> usize {
    (0..RECORDS)
        .filter(|i| sale(*i)["revenue"].as_f64().unwrap() > limit)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_through_a_terminal() {
    let kafka = MockCluster::new(1).unwrap();
    kafka.create_topic("sales", 2, 1).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    produce_sales(&bootstrap, "sales", 0..RECORDS, 2).await;
    let ws = tempfile::tempdir().unwrap();
    let big = sales_over(400.0);

    let command = repl_command(ws.path(), &bootstrap);
    let driven = tokio::task::spawn_blocking(move || {
        let options = Options {
            timeout_ms: Some(60_000),
            strip_ansi_escape_codes: true,
        };
        let mut repl = spawn_with_options(command, options).unwrap();
        repl.exp_string("[1]> ").unwrap();

        // A statement over three lines runs when its ';' comes.
        enter(
            &mut repl,
            &format!("CREATE EXTERNAL TABLE sales ({SALES_COLUMNS})"),
        );
        enter(&mut repl, "STORED AS KAFKA LOCATION 'sales'");
        enter(&mut repl, "OPTIONS ('format' 'json');");
        repl.exp_string("table sales created").unwrap();
        repl.exp_string("[2]> ").unwrap();

        // Tab completes the table's name: the query only runs if it did.
        repl.send("SELECT count(*) AS n FROM sal").unwrap();
        repl.send("\t").unwrap();
        enter(&mut repl, " WHERE revenue > 400;");
        repl.exp_string("Out[2]:").unwrap();
        repl.exp_string(&format!(" {big} ")).unwrap();
        repl.exp_string("task").unwrap();
        repl.exp_string("[3]> ").unwrap();

        // A mistake costs one clear line, and the session goes on.
        enter(&mut repl, "SELECT * FROM nope;");
        repl.exp_string("error: ").unwrap();
        repl.exp_string("nope").unwrap();
        repl.exp_string("[4]> ").unwrap();

        // A stream into a sink, followed live, then queried.
        enter(
            &mut repl,
            "CREATE EXTERNAL TABLE big (id BIGINT, customer VARCHAR, revenue DOUBLE) STORED AS PARQUET LOCATION 'output/big';",
        );
        repl.exp_string("table big created").unwrap();
        enter(
            &mut repl,
            "INSERT INTO big SELECT id, customer, revenue FROM sales WHERE revenue > 400;",
        );
        repl.exp_string("streaming job big started").unwrap();
        repl.exp_string("[6]> ").unwrap();
        enter(&mut repl, "\\jobs");
        repl.exp_string("big").unwrap();
        repl.exp_string("RUNNING").unwrap();
        repl.exp_string("[7]> ").unwrap();
        enter(&mut repl, "\\tail big");
        repl.exp_string("following job big").unwrap();
        repl.exp_string(&format!("batch 0: {big} rows")).unwrap();
        repl.send_control('c').unwrap();
        repl.exp_string("stopped following big").unwrap();
        repl.exp_string("[7]> ").unwrap();
        enter(&mut repl, "SELECT count(*) AS rows_in_sink FROM big;");
        repl.exp_string("rows_in_sink").unwrap();
        repl.exp_string(&format!(" {big} ")).unwrap();
        repl.exp_string("[8]> ").unwrap();

        enter(&mut repl, "\\save session");
        repl.exp_string("saved").unwrap();
        repl.exp_string("[8]> ").unwrap();
        enter(&mut repl, "\\quit");
        repl.exp_eof().unwrap();
    });
    driven.await.unwrap();

    // The notebook is nbformat 4 as Jupyter reads it, with the results in it.
    let notebook = ws.path().join("notebooks/session.ipynb");
    let validated = Command::new("python3")
        .args([
            "-c",
            "import sys, nbformat; nbformat.validate(nbformat.read(sys.argv[1], as_version=4))",
        ])
        .arg(&notebook)
        .output()
        .expect("python3 with nbformat is needed (bash .ci/run installs it)");
    assert!(
        validated.status.success(),
        "nbformat rejects the notebook: {}",
        String::from_utf8_lossy(&validated.stderr)
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&notebook).unwrap()).unwrap();
    let cells = saved["cells"].as_array().unwrap();
    let sources: Vec<String> = cells
        .iter()
        .map(|c| {
            c["source"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect()
        })
        .collect();
    assert!(
        sources[0].starts_with("CREATE EXTERNAL TABLE sales"),
        "{sources:?}"
    );
    assert!(
        sources[0].contains('\n'),
        "a multi-line cell keeps its lines: {sources:?}"
    );
    let count = &cells[1]["outputs"][0];
    assert_eq!(count["output_type"], "execute_result");
    let html: String = count["data"]["text/html"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(html.contains(&format!("<td>{big}</td>")), "{html}");
    assert_eq!(cells[2]["outputs"][0]["output_type"], "error");
}

/// A script's queries: over a topic, a CSV file, Parquet files and a join.
const SCRIPT_QUERIES: [&str; 6] = [
    "SELECT country, count(*) AS n, sum(revenue) AS revenue FROM sales GROUP BY country ORDER BY country",
    "SELECT id, customer, revenue FROM sales WHERE revenue > 450 ORDER BY revenue DESC, id LIMIT 7",
    "SELECT count(*) AS n, min(\"timestamp\") AS first, max(id) AS last FROM sales",
    "SELECT c.name, count(*) AS n FROM sales s JOIN countries c ON s.country = c.code GROUP BY c.name ORDER BY n DESC, c.name",
    "SELECT customer, count(*) AS n, sum(revenue) AS revenue FROM sales_parquet GROUP BY customer ORDER BY customer",
    "SELECT count(*) AS n, sum(id) AS ids FROM sales_parquet",
];

/// Writes the script's files below `dir`: data/countries.csv and
/// data/sales_parquet/, and the script itself as script.sql.
fn write_script(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/countries.csv"),
        "code,name\nUS,United States\nDE,Germany\nFR,France\nGB,United Kingdom\n",
    )
    .unwrap();
    write_parquet_sales(&dir.join("data/sales_parquet"));
    let script = format!(
        "-- a script: DDL, commands and queries\n\
         CREATE EXTERNAL TABLE sales ({SALES_COLUMNS})\n  STORED AS KAFKA LOCATION 'sales' OPTIONS ('format' 'json');\n\
         CREATE EXTERNAL TABLE countries STORED AS CSV LOCATION 'data/countries.csv';\n\
         CREATE EXTERNAL TABLE sales_parquet STORED AS PARQUET LOCATION 'data/sales_parquet/';\n\
         \\d sales\n\
         {};\n",
        SCRIPT_QUERIES.join(";\n")
    );
    let file = dir.join("script.sql");
    std::fs::write(&file, script).unwrap();
    file
}

/// Checks what the script in `dir` printed against DataFusion over the same data.
async fn check_script_output(ran: &std::process::Output, dir: &std::path::Path) {
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        cell_output(&stdout, 4).contains("revenue,Float64"),
        "{stdout}"
    );
    for (index, query) in SCRIPT_QUERIES.iter().enumerate() {
        let reference = reference_csv(query, &dir.join("data/countries.csv")).await;
        assert_eq!(
            cell_output(&stdout, index + 5),
            reference,
            "query {query}\n{stdout}"
        );
    }
}

async fn sales_topic() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let kafka = MockCluster::new(1).unwrap();
    kafka.create_topic("sales", 3, 1).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    produce_sales(&bootstrap, "sales", 0..RECORDS, 3).await;
    (kafka, bootstrap)
}

/// The script's tables on an S3-protocol server: the REPL's own cluster
/// reads the CSV and Parquet files through the S3 API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_over_an_s3_workspace_matches_datafusion() {
    let (_kafka, bootstrap) = sales_topic().await;
    let local = tempfile::tempdir().unwrap();
    let file = write_script(local.path());
    let s3 = S3Workspace::start();
    let ws = s3.open();
    for name in ["countries.csv", "sales_parquet"] {
        let path = local.path().join("data").join(name);
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        } else {
            vec![path]
        };
        for f in files {
            let relative = f.strip_prefix(local.path()).unwrap().to_str().unwrap();
            ws.put(relative, std::fs::read(&f).unwrap()).await.unwrap();
        }
    }
    let ran = repl_command_on(&s3, local.path(), &bootstrap)
        .args(["--format", "csv", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    check_script_output(&ran, local.path()).await;
    // The session's cluster keeps its own files in the bucket too.
    assert!(!ws.list_names("_spate").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_runs_on_the_workers_and_matches_datafusion() {
    let (_kafka, bootstrap) = sales_topic().await;
    let ws = tempfile::tempdir().unwrap();
    let file = write_script(ws.path());
    let ran = repl_command(ws.path(), &bootstrap)
        .args(["--format", "csv", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    check_script_output(&ran, ws.path()).await;

    // A saved notebook runs again, cell by cell.
    std::fs::write(
        &file,
        "SELECT 41 + 1 AS answer;\n\\save answers\n\\load answers\n\\run answers\n",
    )
    .unwrap();
    let ran = repl_command(ws.path(), &bootstrap)
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{stdout}");
    assert!(stdout.contains("Out[2] (saved):"), "{stdout}");
    assert_eq!(stdout.matches("│ 42 ").count(), 3, "{stdout}");
    assert!(ws.path().join("notebooks/answers.ipynb").exists());

    // A failing statement stops the script with its line, and says why.
    std::fs::write(&file, "SELECT 1;\nSELECT * FROM missing;\nSELECT 2;\n").unwrap();
    let ran = repl_command(ws.path(), &bootstrap)
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(!ran.status.success());
    assert!(stdout.contains("missing"), "{stdout}");
    assert!(!stdout.contains("Out[3]"), "{stdout}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

/// The query's answer from DataFusion alone over the same records (and
/// the same countries file), as CSV.
async fn reference_csv(query: &str, countries: &std::path::Path) -> String {
    let (_records, ctx) = reference_session(0..RECORDS, SALES_COLUMNS).await;
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE countries STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true')",
        countries.display()
    ))
    .await
    .unwrap();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE sales_parquet STORED AS PARQUET LOCATION '{}/'",
        countries.parent().unwrap().join("sales_parquet").display()
    ))
    .await
    .unwrap();
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    csv(&batches)
}

/// The test's sales (id, customer, revenue) as four Parquet files, a
/// quarter of the records each.
fn write_parquet_sales(dir: &std::path::Path) {
    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    std::fs::create_dir_all(dir).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer", DataType::Utf8, false),
        Field::new("revenue", DataType::Float64, false),
    ]));
    for part in 0..4u64 {
        let ids: Vec<u64> = (0..RECORDS).filter(|i| i * 4 / RECORDS == part).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| *i as i64))),
                Arc::new(StringArray::from_iter_values(
                    ids.iter()
                        .map(|i| sale(*i)["customer"].as_str().unwrap().to_string()),
                )),
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| sale(*i)["revenue"].as_f64().unwrap()),
                )),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(dir.join(format!("part-{part}.parquet"))).unwrap();
        let mut writer =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
}
