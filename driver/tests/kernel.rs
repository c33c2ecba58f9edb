//! `driver kernel`: Spate SQL in Jupyter, driven by Jupyter's own client
//! libraries (jupyter_client and nbclient, from PyPI) against a cluster of
//! real processes. The kernel is started from the kernelspec `driver kernel
//! install` writes, as JupyterLab starts it; its distributed results must
//! equal DataFusion's in one process, an interrupt must cancel the query's
//! tasks on the workers, and a notebook the REPL saved must run on it again
//! with the same rows.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const SALES_COLUMNS: &str =
    "id BIGINT, customer VARCHAR, revenue DOUBLE, country VARCHAR, \"timestamp\" TIMESTAMP";
const RECORDS: u64 = 300;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/jupyter")
        .join(name)
}

/// Installs the kernelspec under `prefix` for the master at `url`; returns
/// the JUPYTER_PATH that finds it.
fn install_kernel(prefix: &Path, url: &str, workspace: &Path) -> PathBuf {
    let installed = Command::new(bin("driver"))
        .args(["kernel", "install", "--master", url])
        .arg("--prefix")
        .arg(prefix)
        .arg("--workspace")
        .arg(workspace)
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let data = prefix.join("share/jupyter");
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("kernels/spate/kernel.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["display_name"], "Spate SQL");
    assert_eq!(spec["language"], "sql");
    data
}

/// Runs a Python script of tests/jupyter with Jupyter looking in `jupyter_path`.
fn python(name: &str, args: &[&Path], env: &[(&str, &str)], jupyter: &Path) -> serde_json::Value {
    let runtime = tempfile::tempdir().unwrap();
    let ran = Command::new("python3")
        .arg(script(name))
        .args(args)
        .envs(env.iter().copied())
        .env("JUPYTER_PATH", jupyter)
        .env("JUPYTER_RUNTIME_DIR", runtime.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("python3 is needed, with jupyter_client and nbclient (./test.sh installs them)");
    assert!(
        ran.status.success(),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{name} printed no JSON ({e}): {stdout}"))
}

/// A master and two workers on `workspace`, once both workers are in.
async fn cluster(workspace: &Path) -> (MasterProc, Vec<Proc>) {
    let master = start_master(workspace, "127.0.0.1:0", &[]);
    let workers = start_workers(&master.url(), workspace, &["w1", "w2"]);
    let url = master.url();
    wait_until(
        "two workers",
        std::time::Duration::from_secs(30),
        || async { common::workers(&url).await.len() == 2 },
    )
    .await;
    (master, workers)
}

fn create_tables(bootstrap: &str) -> String {
    ["sales", "big"]
        .iter()
        .map(|topic| {
            format!(
                "CREATE EXTERNAL TABLE {topic} ({SALES_COLUMNS})\n\
                 STORED AS KAFKA LOCATION '{topic}'\n\
                 OPTIONS ('format' 'json', 'bootstrap.servers' '{bootstrap}');"
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn errors(seen: &serde_json::Value) -> Vec<String> {
    seen["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "error")
        .map(|o| o["evalue"].as_str().unwrap().to_string())
        .collect()
}

fn results(seen: &serde_json::Value, mime: &str) -> Vec<String> {
    seen["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "execute_result")
        .map(|o| o["data"][mime].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn recent_task_states(http: &str, worker: &str) -> Vec<String> {
    let answer: serde_json::Value = reqwest::get(format!("{http}/api/v1/workers/{worker}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["recent_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_client_drives_the_kernel_on_the_cluster() {
    let (kafka, bootstrap) = sales_kafka();
    kafka.create_topic("big", 4, 1).unwrap();
    produce_sales(&bootstrap, "sales", 0..RECORDS, 4).await;
    produce_sales(&bootstrap, "big", 0..40_000, 4).await;
    let ws = tempfile::tempdir().unwrap();
    let (master, _workers) = cluster(ws.path()).await;
    let prefix = tempfile::tempdir().unwrap();
    let jupyter = install_kernel(prefix.path(), &master.url(), ws.path());

    let query = "SELECT customer, count(*) AS n, sum(revenue) AS revenue \
                 FROM sales GROUP BY customer ORDER BY customer;";
    let long = "SELECT count(*) AS n FROM big \
                WHERE digest(repeat(customer, 20000), 'sha256') IS NOT NULL;";
    let create = create_tables(&bootstrap);
    let seen = python(
        "drive_kernel.py",
        &[],
        &[
            ("SPATE_TEST_CREATE", &create),
            ("SPATE_TEST_QUERY", query),
            ("SPATE_TEST_LONG_QUERY", long),
            ("SPATE_TEST_UI", &master.http),
        ],
        &jupyter,
    );

    assert_eq!(seen["kernel_info"]["language_info"]["name"], "sql");
    assert_eq!(
        seen["create"]["reply"]["status"], "ok",
        "{}",
        seen["create"]
    );

    // The distributed answer is DataFusion's over the same records.
    assert_eq!(seen["query"]["reply"]["status"], "ok", "{}", seen["query"]);
    let expected = csv(&reference_batches(0..RECORDS, SALES_COLUMNS, query).await);
    assert_eq!(results(&seen["query"], "text/plain"), vec![expected]);
    assert!(results(&seen["query"], "text/html")[0].contains("<table"));

    // A bad statement is one error message, in a sentence.
    assert_eq!(seen["bad"]["reply"]["status"], "error");
    let bad = errors(&seen["bad"]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("SELEC"), "{bad:?}");
    assert_eq!(seen["bad"]["reply"]["evalue"], bad[0].as_str());

    assert_eq!(seen["is_complete"]["SELECT 1"], "incomplete");
    assert_eq!(seen["is_complete"]["SELECT 1;"], "complete");
    assert_eq!(seen["is_complete"]["\\jobs"], "complete");
    let complete = &seen["complete"];
    assert!(
        complete["matches"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("sales")),
        "{complete}"
    );
    assert_eq!(complete["cursor_start"], 14);
    let inspect = &seen["inspect"];
    assert_eq!(inspect["found"], true, "{inspect}");
    let columns = inspect["data"]["text/plain"].as_str().unwrap();
    assert!(
        columns.contains("customer") && columns.contains("revenue"),
        "{columns}"
    );

    // The interrupt ends the cell at once and frees the workers' slots.
    let interrupt = &seen["interrupt"];
    assert_eq!(interrupt["reply"]["status"], "error", "{interrupt}");
    assert_eq!(errors(interrupt), vec!["cancelled"]);
    assert!(interrupt["seconds"].as_f64().unwrap() < 5.0, "{interrupt}");
    assert!(
        interrupt["free_after"].as_f64().unwrap() < 10.0,
        "{interrupt}"
    );
    let mut states = recent_task_states(&master.http, "w1").await;
    states.extend(recent_task_states(&master.http, "w2").await);
    assert!(states.iter().any(|s| s == "CANCELLED"), "{states:?}");

    assert_eq!(seen["after"]["reply"]["status"], "ok");
    assert!(results(&seen["after"], "text/plain")[0].contains("42"));

    // A streaming job from a cell, followed into the cell's output.
    assert_eq!(
        seen["insert"]["reply"]["status"], "ok",
        "{}",
        seen["insert"]
    );
    let started = results(&seen["insert"], "text/plain");
    assert!(
        started[1].contains("streaming job picked started"),
        "{started:?}"
    );
    let tail = &seen["tail"];
    assert_eq!(tail["reply"]["status"], "ok", "{tail}");
    let picked = (0..RECORDS)
        .filter(|i| sale(*i)["revenue"].as_f64().unwrap() > 400.0)
        .count();
    let shown: Vec<&str> = tail["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["data"]["text/plain"].as_str().or(o["text"].as_str()))
        .collect();
    assert!(
        shown[0].contains("following job picked")
            && shown[1].starts_with(&format!("batch 0: {picked} rows")),
        "{shown:?}"
    );
    assert!(
        shown.last().unwrap().contains("stopped following picked"),
        "{shown:?}"
    );
    assert_eq!(seen["stop"]["reply"]["status"], "ok", "{}", seen["stop"]);
    assert_eq!(seen["alive_after_shutdown"], false);
}

/// Lines of a result without its footer ("7 rows in 0.052 s (...)"), which
/// holds the time it took.
fn rows_only(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            let counted = words.next().is_some_and(|w| w.parse::<u64>().is_ok())
                && words.next().is_some_and(|w| w.starts_with("row"));
            !counted
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_the_repl_saved_runs_on_the_kernel_with_the_same_rows() {
    let (_kafka, bootstrap) = sales_kafka();
    produce_sales(&bootstrap, "sales", 0..RECORDS, 4).await;
    let ws = tempfile::tempdir().unwrap();
    let (master, _workers) = cluster(ws.path()).await;

    let notebook = ws.path().join("notebooks/sales.ipynb");
    let session = ws.path().join("session.sql");
    std::fs::write(
        &session,
        format!(
            "CREATE EXTERNAL TABLE sales ({SALES_COLUMNS}) STORED AS KAFKA LOCATION 'sales'\n\
             OPTIONS ('format' 'json', 'bootstrap.servers' '{bootstrap}');\n\
             SELECT customer, count(*) AS n FROM sales GROUP BY customer ORDER BY customer;\n\
             SELECT country, max(revenue) AS top FROM sales GROUP BY country ORDER BY country;\n\
             \\save {}\n",
            notebook.display()
        ),
    )
    .unwrap();
    let saved = Command::new(bin("driver"))
        .args(["repl", "--master", &master.url(), "-f"])
        .arg(&session)
        .arg("--workspace")
        .arg(ws.path())
        .output()
        .unwrap();
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stdout)
    );

    let prefix = tempfile::tempdir().unwrap();
    let jupyter = install_kernel(prefix.path(), &master.url(), ws.path());
    let executed = ws.path().join("notebooks/sales.out.ipynb");
    let ran = python("run_notebook.py", &[&notebook, &executed], &[], &jupyter);

    assert_eq!(ran["kernel"], "spate");
    let cells = ran["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 3, "{ran}");
    for cell in cells {
        let saved: Vec<_> = cell["saved"].as_array().unwrap().iter().collect();
        let again: Vec<_> = cell["ran"].as_array().unwrap().iter().collect();
        assert_eq!(saved.len(), 1, "{cell}");
        assert_eq!(again.len(), 1, "{cell}");
        let (saved, again) = (saved[0].as_str().unwrap(), again[0].as_str().unwrap());
        assert_eq!(rows_only(saved), rows_only(again), "{cell}");
    }
    // The per-customer counts are rows, not only a message.
    let counts = cells[1]["ran"][0].as_str().unwrap();
    assert!(
        counts.contains("alice") && counts.contains("7 rows"),
        "{counts}"
    );
}
