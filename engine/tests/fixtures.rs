//! SQL fixtures with golden outputs. Each `fixtures/<name>.sql` is a job
//! whose Kafka input is the file named in its first line; the test produces
//! that file to a 2-partition topic of the development broker, plans the
//! job, runs one task per partition through the plan codec as workers do,
//! commits the batch and compares the sink with `<name>.golden`.
//! `SPATE_UPDATE_GOLDEN=1 cargo test -p spate-engine` rewrites the goldens.

use std::path::{Path, PathBuf};

use datafusion::arrow::util::pretty::pretty_format_batches;
use spate_engine::Workspace;
use spate_engine::job::{PlanEnv, SinkSpec, session};
use spate_engine::kafka::DevBroker;

mod common;
use common::{produce_lines, run_batch};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The committed sink, every column sorted, as a table.
async fn read_sink(ws: &Workspace, sink: &SinkSpec) -> String {
    let SinkSpec::Files { dir, format, .. } = sink else {
        panic!("fixtures write files")
    };
    let ctx = session(&PlanEnv::new(ws.clone(), String::new()));
    let stored_as = format.kind.name().to_uppercase();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE result STORED AS {stored_as} LOCATION '{dir}'"
    ))
    .await
    .unwrap();
    // Inferred from several files, the column order is not stable across
    // runs; name order is.
    let mut columns: Vec<String> = ctx
        .table("result")
        .await
        .unwrap()
        .schema()
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name()))
        .collect();
    columns.sort();
    let order: Vec<String> = (1..=columns.len()).map(|i| i.to_string()).collect();
    let batches = ctx
        .sql(&format!(
            "SELECT {} FROM result ORDER BY {}",
            columns.join(", "),
            order.join(", ")
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn sql_fixtures_match_their_golden_outputs() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "fixtures are missing");
    let broker = DevBroker::start().unwrap();
    for sql_path in names {
        let sql = std::fs::read_to_string(&sql_path).unwrap();
        let input_name = sql
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-- input: "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be '-- input: FILE (format)'",
                    sql_path.display()
                )
            });
        let input = std::fs::read_to_string(fixtures().join(input_name)).unwrap();
        let topic = Path::new(input_name).file_stem().unwrap().to_str().unwrap();
        let counts = produce_lines(&broker, topic, 2, input.lines()).await;
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let sink = run_batch(&ws, &broker, topic, &sql, counts)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", sql_path.display()));
        let got = read_sink(&ws, &sink).await;
        let golden = sql_path.with_extension("golden");
        if std::env::var_os("SPATE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, format!("{got}\n")).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "{} is missing; SPATE_UPDATE_GOLDEN=1 writes it",
                golden.display()
            )
        });
        assert_eq!(got.trim_end(), want.trim_end(), "{}", sql_path.display());
    }
}

/// Runs a one-column-pair job over `input` and returns its error and workspace.
async fn failing_batch(topic: &str, input: &str) -> (String, Workspace, tempfile::TempDir) {
    let broker = DevBroker::start().unwrap();
    let counts = produce_lines(&broker, topic, 2, input.lines()).await;
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let sql = format!(
        "CREATE EXTERNAL TABLE {topic} (id BIGINT, name VARCHAR) STORED AS KAFKA LOCATION '{topic}'
         OPTIONS ('bootstrap.servers' '{{bootstrap}}');
         CREATE EXTERNAL TABLE out (id BIGINT) STORED AS JSON LOCATION 'out/';
         INSERT INTO out SELECT id FROM {topic};"
    );
    let err = run_batch(&ws, &broker, topic, &sql, counts)
        .await
        .unwrap_err()
        .unwrap_datafusion()
        .to_string();
    (err, ws, dir)
}

#[tokio::test]
async fn a_malformed_record_is_an_error_naming_topic_partition_and_offset() {
    let input = "{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n{\"id\": 3, \"name\": \nnot json at all\n";
    let (err, ws, _dir) = failing_batch("broken", input).await;
    // Line 3 (`{"id": 3, "name": `) is record 1 of partition 0.
    assert!(
        err.contains("malformed record in topic 'broken' partition 0 at offset 1"),
        "{err}"
    );
    assert!(
        spate_engine::files::committed_files(&ws, "out")
            .await
            .unwrap()
            .is_none(),
        "nothing committed"
    );
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_an_error_naming_its_range() {
    let (err, _ws, _dir) =
        failing_batch("typed", "{\"id\": 1}\n{\"id\": 2}\n{\"id\": \"three\"}\n").await;
    assert!(err.contains("topic 'typed' partition 0"), "{err}");
    assert!(err.contains("three"), "{err}");
}
