//! `driver demo`, the newcomer's first command: one process with Kafka, a
//! master, two workers, the generator and the sample job. It must print
//! committed rows and stop cleanly on Ctrl-C.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;

#[test]
fn demo_prints_committed_rows_and_stops_on_ctrl_c() {
    let ws = tempfile::tempdir().unwrap();
    let job = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../workspace/jobs/sales_filter.sql"
    );
    let demo = Command::new(bin("driver"))
        .args([
            "demo",
            "--bind",
            "127.0.0.1:0",
            "--ui-bind",
            "127.0.0.1:0",
            "--rate",
            "500",
            "--job",
            job,
        ])
        .arg("--workspace")
        .arg(ws.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed if the test fails before Ctrl-C stops it.
    let mut demo = common::Proc {
        child: demo,
        name: "demo".into(),
    };
    let stdout = demo.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    let committed = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "no committed batch printed; output so far:\n{}",
                    seen.join("\n")
                )
            });
        seen.push(line.clone());
        if line.starts_with("batch ")
            && line.contains("rows committed to")
            && line.contains("output/sales_filter/")
        {
            break line;
        }
    };
    let rows: u64 = committed
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(rows > 0, "{committed}");
    assert!(seen.iter().any(|l| l.contains("web UI")), "{seen:?}");
    // The printed table holds the job's columns.
    let table = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if line.starts_with("| id") {
            break line;
        }
    };
    for column in ["customer", "country", "revenue", "sold_at"] {
        assert!(table.contains(column), "{table}");
    }

    let status = Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            assert!(status.success(), "demo exited with {status}");
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "demo did not stop on Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
