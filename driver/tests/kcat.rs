//! Interoperability with a third-party Kafka client: kcat (Debian's package)
//! writes into `driver broker`, a job reads it and writes a Kafka sink, and
//! kcat reads the sink back.

mod common;

use spate_proto::JobState;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn kcat(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is needed for this test: apt-get install kcat (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kcat {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_feeds_a_job_and_reads_its_kafka_sink() {
    let mut broker = std::process::Command::new(bin("driver"))
        .args([
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--topic",
            "events:2",
            "--topic",
            "enriched:2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(broker.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _broker = Proc {
        child: broker,
        name: "broker".into(),
    };
    // "development Kafka broker on 127.0.0.1:PORT (...)"
    let address = line
        .split(" on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    kcat(
        &["-P", "-b", &address, "-t", "events", "-K", ":"],
        Some(
            "u1:{\"user\":\"u1\",\"amount\":5}\nu2:{\"user\":\"u2\",\"amount\":1}\nu3:{\"user\":\"u3\",\"amount\":7}\n",
        ),
    );

    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    let _worker = start_worker(&master.url(), ws.path(), "w1");
    let sql = format!(
        "CREATE EXTERNAL TABLE events (user VARCHAR, amount BIGINT)
           STORED AS KAFKA LOCATION 'events' OPTIONS ('bootstrap.servers' '{address}');
         CREATE EXTERNAL TABLE enriched (user VARCHAR, doubled BIGINT)
           STORED AS KAFKA LOCATION 'enriched' OPTIONS ('bootstrap.servers' '{address}');
         SET spate.trigger.available_now = true;
         INSERT INTO enriched (user, doubled, _key)
         SELECT user, amount * 2, _key FROM events WHERE amount > 1;"
    );
    let id = submit(&master.url(), "enrich", &sql).await.unwrap();
    wait_until("the job to finish", Duration::from_secs(60), || async {
        match job(&master.url(), &id).await {
            Some(j) if j.state() == JobState::Failed => panic!("job failed: {}", j.error),
            Some(j) => j.state() == JobState::Finished,
            None => false,
        }
    })
    .await;
    let finished = job(&master.url(), &id).await.unwrap();
    assert_eq!((finished.input_rows, finished.output_rows), (3, 2));

    let read = kcat(
        &[
            "-C",
            "-b",
            &address,
            "-t",
            "enriched",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k %s\\n",
        ],
        None,
    );
    let mut lines: Vec<&str> = read.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            r#"u1 {"user":"u1","doubled":10}"#,
            r#"u3 {"user":"u3","doubled":14}"#
        ]
    );
}
