//! The Nexmark queries of `workspace/jobs/nexmark/` as jobs on two worker
//! processes, over Kafka topics filled by `driver produce --nexmark` with
//! out-of-order events, a worker SIGKILLed while they run. Each sink must
//! equal DataFusion's answer over the same events as one batch (for
//! windows, those the final watermark closed). Every query of the folder
//! runs; `engine/tests/streaming.rs` checks what Spate refuses.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use spate_engine::nexmark::{NexmarkConfig, NexmarkGenerator, NexmarkTable};
use spate_proto::JobState;

use common::*;

const EVENTS: u64 = 20_000;
const EVENTS_PER_SECOND: u64 = 200;
const OUT_OF_ORDER: u64 = 100;
const SEED: u64 = 7;
/// Ten seconds before midnight, so the day of Q17 closes during the run.
const START: &str = "2026-12-01T23:59:50Z";
/// The job files' watermark delay.
const DELAY_MS: i64 = 4000;

/// Queries that run, and for windowed ones the reference as DataFusion
/// alone computes it (`{watermark}` is where the final watermark stands);
/// a stateless query's reference is its own SELECT.
const RUNS: &[(&str, Option<&str>)] = &[
    ("q3", None),
    ("joins/early_bids", None),
    (
        "joins/quiet_auctions",
        Some(
            "SELECT A.id AS auction, A.category, A.\"dateTime\" AS opened, B.bidder, B.price
            FROM auction AS A LEFT JOIN bid AS B
              ON A.id = B.auction
             AND B.\"dateTime\" BETWEEN A.\"dateTime\" AND A.\"dateTime\" + INTERVAL '2' SECOND
            WHERE B.auction IS NOT NULL OR A.\"dateTime\" + INTERVAL '2 seconds' < {watermark}",
        ),
    ),
    (
        "joins/same_window_bids",
        Some(
            "SELECT A.id AS auction, A.\"dateTime\" AS opened, B.bidder, B.price, B.\"dateTime\" AS bid_at
            FROM auction AS A LEFT JOIN bid AS B
              ON A.id = B.auction
             AND date_bin(INTERVAL '10 seconds', A.\"dateTime\") = date_bin(INTERVAL '10 seconds', B.\"dateTime\")
            WHERE B.auction IS NOT NULL
               OR date_bin(INTERVAL '10 seconds', A.\"dateTime\") + INTERVAL '10 seconds' <= {watermark}",
        ),
    ),
    (
        "joins/new_sellers",
        Some(
            "SELECT P.id AS person, P.name, P.\"dateTime\" AS joined, A.id AS auction, A.seller, A.\"dateTime\" AS opened
            FROM person AS P FULL OUTER JOIN auction AS A
              ON P.id = A.seller
             AND A.\"dateTime\" BETWEEN P.\"dateTime\" AND P.\"dateTime\" + INTERVAL '10' SECOND
            WHERE (P.id IS NOT NULL AND A.id IS NOT NULL)
               OR (A.id IS NULL AND P.\"dateTime\" + INTERVAL '10 seconds' < {watermark})
               OR (P.id IS NULL AND A.\"dateTime\" < {watermark})",
        ),
    ),
    (
        "chained/busiest_auction",
        Some(
            "SELECT starttime, endtime, MAX(num) AS most_bids, COUNT(*) AS auctions
            FROM (SELECT auction, date_bin(INTERVAL '10 seconds', \"dateTime\") AS starttime,
                         date_bin(INTERVAL '10 seconds', \"dateTime\") + INTERVAL '10 seconds' AS endtime,
                         COUNT(*) AS num
                  FROM bid GROUP BY 1, 2, 3)
            WHERE endtime <= {watermark}
            GROUP BY starttime, endtime",
        ),
    ),
    ("chained/early_bids_per_seller", None),
    (
        "chained/early_bids_per_window",
        Some(
            "SELECT date_bin(INTERVAL '10 seconds', B.\"dateTime\") AS starttime,
                    date_bin(INTERVAL '10 seconds', B.\"dateTime\") + INTERVAL '10 seconds' AS endtime,
                    COUNT(*) AS early_bids, MAX(B.price) AS best_price
            FROM auction AS A JOIN bid AS B
              ON A.id = B.auction
             AND B.\"dateTime\" BETWEEN A.\"dateTime\" AND A.\"dateTime\" + INTERVAL '2' SECOND
            WHERE date_bin(INTERVAL '10 seconds', B.\"dateTime\") + INTERVAL '10 seconds' <= {watermark}
            GROUP BY 1, 2",
        ),
    ),
    // A row's number is final, and written, once the watermark passes it.
    (
        "dedup/first_bids",
        Some(
            "SELECT auction, bidder, price, \"dateTime\", bid_number
            FROM (SELECT auction, bidder, price, \"dateTime\",
                         ROW_NUMBER() OVER (PARTITION BY auction ORDER BY \"dateTime\") AS bid_number
                  FROM bid)
            WHERE bid_number <= 3 AND \"dateTime\" < {watermark}",
        ),
    ),
    (
        "dedup/first_bid_per_bidder",
        Some(
            "SELECT bidder, auction, price, \"dateTime\"
            FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY \"dateTime\") AS rn
                  FROM bid)
            WHERE rn = 1 AND \"dateTime\" < {watermark}",
        ),
    ),
    (
        "q7",
        Some(
            "SELECT B.auction, B.price, B.bidder, B.\"dateTime\", B.extra
            FROM bid B
            JOIN (SELECT MAX(price) AS maxprice,
                         date_bin(INTERVAL '10 seconds', \"dateTime\") + INTERVAL '10 seconds' AS \"dateTime\"
                  FROM bid GROUP BY date_bin(INTERVAL '10 seconds', \"dateTime\")) B1
              ON B.price = B1.maxprice
            WHERE B.\"dateTime\" BETWEEN B1.\"dateTime\" - INTERVAL '10' SECOND AND B1.\"dateTime\"
              AND B1.\"dateTime\" <= {watermark}",
        ),
    ),
    // Each side of q8 writes a group when first seen, so a match is
    // written once both are, before its window closes: every match counts.
    (
        "q8",
        Some(
            "SELECT P.id, P.name, P.starttime
            FROM (SELECT id, name, date_bin(INTERVAL '10 seconds', \"dateTime\") AS starttime
                  FROM person GROUP BY 1, 2, 3) P
            JOIN (SELECT seller, date_bin(INTERVAL '10 seconds', \"dateTime\") AS starttime
                  FROM auction GROUP BY 1, 2) A
              ON P.id = A.seller AND P.starttime = A.starttime",
        ),
    ),
    // An auction's maximum is final, and averaged, once the watermark
    // passes its end.
    (
        "q4",
        Some(
            "SELECT Q.category, AVG(Q.final) AS avg_final
            FROM (
                SELECT MAX(B.price) AS final, A.category
                FROM auction A, bid B
                WHERE A.id = B.auction AND B.\"dateTime\" BETWEEN A.\"dateTime\" AND A.expires
                  AND A.expires < {watermark}
                GROUP BY A.id, A.category
            ) Q
            GROUP BY Q.category",
        ),
    ),
    // An auction's winning bid is final once the watermark passes its end.
    (
        "q9",
        Some(
            "SELECT id, \"itemName\", description, \"initialBid\", reserve, \"dateTime\", expires, seller,
                    category, extra, auction, bidder, price, bid_datetime, bid_extra
            FROM (
                SELECT A.*, B.auction, B.bidder, B.price, B.\"dateTime\" AS bid_datetime, B.extra AS bid_extra,
                       ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.\"dateTime\" ASC) AS rownum
                FROM auction A, bid B
                WHERE A.id = B.auction AND B.\"dateTime\" BETWEEN A.\"dateTime\" AND A.expires
            )
            WHERE rownum <= 1 AND expires < {watermark}",
        ),
    ),
    ("q0", None),
    ("q1", None),
    ("q2", None),
    ("q14", None),
    ("q21", None),
    ("q22", None),
    (
        "q11",
        Some(
            "WITH marked AS (
                SELECT bidder, \"dateTime\" AS t,
                    CASE WHEN \"dateTime\" < lag(\"dateTime\") OVER w + INTERVAL '10 seconds'
                         THEN 0 ELSE 1 END AS starts
                FROM bid WINDOW w AS (PARTITION BY bidder ORDER BY \"dateTime\")),
             numbered AS (
                SELECT bidder, t, sum(starts) OVER (PARTITION BY bidder ORDER BY t
                    ROWS UNBOUNDED PRECEDING) AS session
                FROM marked)
            SELECT bidder, count(*) AS bid_count, min(t) AS starttime,
                   max(t) + INTERVAL '10 seconds' AS endtime
            FROM numbered GROUP BY bidder, session
            HAVING max(t) + INTERVAL '10 seconds' <= {watermark}",
        ),
    ),
    (
        "q5",
        Some(
            "WITH hopped AS (
                SELECT auction,
                       date_bin(INTERVAL '2 seconds', \"dateTime\") - back AS starttime
                FROM bid CROSS JOIN (SELECT unnest([INTERVAL '0 seconds', INTERVAL '2 seconds',
                    INTERVAL '4 seconds', INTERVAL '6 seconds', INTERVAL '8 seconds']) AS back)),
             counts AS (SELECT auction, starttime, count(*) AS num FROM hopped GROUP BY 1, 2),
             maxes AS (SELECT starttime, max(num) AS maxn FROM counts GROUP BY 1)
            SELECT c.auction, c.num
            FROM counts c JOIN maxes m ON c.starttime = m.starttime AND c.num >= m.maxn
            WHERE c.starttime + INTERVAL '10 seconds' <= {watermark}",
        ),
    ),
    (
        "q17",
        Some(
            "SELECT auction, date_bin(INTERVAL '1 day', \"dateTime\") AS day,
                count(*) AS total_bids,
                count(*) FILTER (WHERE price < 10000) AS rank1_bids,
                count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
                count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
                min(price) AS min_price, max(price) AS max_price,
                avg(price) AS avg_price, sum(price) AS sum_price
            FROM bid
            WHERE date_bin(INTERVAL '1 day', \"dateTime\") + INTERVAL '1 day' <= {watermark}
            GROUP BY 1, 2",
        ),
    ),
];

/// `q3` is a Nexmark query, `joins/early_bids` a job of workspace/jobs.
fn job_file(name: &str) -> String {
    let folder = if name.contains('/') { "" } else { "nexmark/" };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../workspace/jobs")
        .join(format!("{folder}{name}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where a run's events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Kafka topics filled by `driver produce --nexmark`.
    Kafka,
    /// The tables themselves, `STORED AS NEXMARK`: each task generates its
    /// share of the same events.
    Generated,
}

/// A job file made to run many small batches and to finish when it has
/// read what its tables held at its start. From Kafka, persons and
/// auctions come in batches of 100, bids of 1,500; generated, the caps
/// count events of all three streams (a table skips the others'). Either
/// way a join's sides arrive over many batches, at different paces in
/// event time.
fn test_job(name: &str, feed: Feed) -> String {
    let mut sql = job_file(name);
    let caps = match feed {
        Feed::Kafka => [("person", 100), ("auction", 100), ("bid", 1500)],
        Feed::Generated => [("person", 2500), ("auction", 800), ("bid", 1500)],
    };
    for (topic, cap) in caps {
        let (from, to) = match feed {
            Feed::Kafka => (
                format!("LOCATION '{topic}'\nOPTIONS ('watermark'"),
                format!(
                    "LOCATION '{topic}'\nOPTIONS ('max_offsets_per_trigger' '{cap}', 'watermark'"
                ),
            ),
            Feed::Generated => (
                format!("STORED AS KAFKA\nLOCATION '{topic}'\nOPTIONS ('watermark'"),
                format!(
                    "STORED AS NEXMARK\nLOCATION '{topic}'\nOPTIONS ({}, \
                     'max_offsets_per_trigger' '{cap}', 'watermark'",
                    generated_options()
                ),
            ),
        };
        sql = sql.replace(&from, &to);
    }
    if feed == Feed::Generated {
        assert!(
            !sql.contains("STORED AS KAFKA"),
            "{name} still reads Kafka:\n{sql}"
        );
    }
    sql + "\nSET spate.trigger.interval = '50ms';\nSET spate.trigger.available_now = true;\n"
}

/// A NEXMARK table's options that make the test's events.
fn generated_options() -> String {
    format!(
        "'events' '{EVENTS}', 'events_per_second' '{EVENTS_PER_SECOND}', \
         'out_of_order_group' '{OUT_OF_ORDER}', 'seed' '{SEED}', 'base_time' '{START}', \
         'partitions' '4'"
    )
}

/// The job's name: the file's.
fn job_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The Nexmark tables a job file declares (and reads).
fn tables_of(sql: &str) -> Vec<NexmarkTable> {
    NexmarkTable::ALL
        .into_iter()
        .filter(|t| sql.contains(&format!("CREATE EXTERNAL TABLE {} (", t.name())))
        .collect()
}

/// How many times a job file's query reads a table: after FROM or JOIN,
/// or second in a FROM list (`FROM auction A, bid B`).
fn scans_of(sql: &str, table: NexmarkTable) -> usize {
    let words: Vec<&str> = select_of(sql).split_whitespace().collect();
    let joined = words
        .windows(2)
        .filter(|w| matches!(w[0], "FROM" | "JOIN") && w[1] == table.name())
        .count();
    let listed = words
        .windows(4)
        .filter(|w| w[0] == "FROM" && w[2].ends_with(',') && w[3] == table.name())
        .count();
    joined + listed
}

/// Where a job file's sink is: its last `LOCATION 'output/...'`.
fn sink_location(sql: &str) -> &str {
    let at = sql.rfind("LOCATION 'output/").expect("a sink in output/") + "LOCATION '".len();
    &sql[at..at + sql[at..].find('\'').unwrap()]
}

/// The SELECT a job file inserts.
fn select_of(sql: &str) -> &str {
    let insert = sql.find("INSERT INTO").expect("the job inserts");
    let select = insert + sql[insert..].find("SELECT").expect("INSERT ... SELECT");
    sql[select..].trim().trim_end_matches(';')
}

/// A result's rows, one line each and sorted, under its header.
fn canonical(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).unwrap().to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.len() < 4 {
        return lines;
    }
    lines.pop();
    let mut rows = lines.split_off(3);
    rows.sort();
    lines.extend(rows);
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_queries_equal_datafusion_through_a_killed_worker() {
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    for table in NexmarkTable::ALL {
        kafka.create_topic(table.name(), 4, 1).unwrap();
    }
    let bootstrap = kafka.bootstrap_servers();
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &["--kafka-bootstrap", &bootstrap]);
    produce(&bootstrap);
    queries_equal_datafusion_through_a_killed_worker(&master, ws.path(), Feed::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_tables_generated_in_the_tasks_equal_datafusion_through_a_killed_worker() {
    let ws = tempfile::tempdir().unwrap();
    let master = start_master(ws.path(), "127.0.0.1:0", &[]);
    queries_equal_datafusion_through_a_killed_worker(&master, ws.path(), Feed::Generated).await;
}

/// Fills the Kafka topics with the test's events.
fn produce(bootstrap: &str) {
    let produced = std::process::Command::new(bin("driver"))
        .args([
            "produce",
            "--nexmark",
            "--rate",
            "0",
            "--bootstrap",
            bootstrap,
        ])
        .args(["--count", &EVENTS.to_string()])
        .args(["--event-rate", &EVENTS_PER_SECOND.to_string()])
        .args(["--out-of-order", &OUT_OF_ORDER.to_string()])
        .args(["--seed", &SEED.to_string(), "--start", START])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&produced.stdout);
    assert!(
        produced.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert!(
        printed.contains("produced 20000 Nexmark events"),
        "{printed}"
    );
}

/// Runs every query that runs, and every refused one, on two workers, one
/// of them killed mid-run, and compares each sink with DataFusion's
/// answer over the same events.
async fn queries_equal_datafusion_through_a_killed_worker(
    master: &MasterProc,
    ws: &Path,
    feed: Feed,
) {
    let url = master.url();
    let mut workers = start_workers(&url, ws, &["w1", "w2"]);

    // The same events, made in this process, as DataFusion's tables.
    let generator = NexmarkGenerator::new(NexmarkConfig {
        base_time_ms: chrono::DateTime::parse_from_rfc3339(START)
            .unwrap()
            .timestamp_millis(),
        events_per_second: EVENTS_PER_SECOND,
        out_of_order_group: OUT_OF_ORDER,
        seed: SEED,
        ..NexmarkConfig::default()
    });
    let events: Vec<_> = (0..EVENTS).map(|n| generator.event(n)).collect();
    let files = tempfile::tempdir().unwrap();
    let reference = SessionContext::new();
    for table in NexmarkTable::ALL {
        let mut lines = Vec::new();
        for event in events.iter().filter(|e| e.table() == table) {
            event.write_json(&mut lines);
            lines.push(b'\n');
        }
        let file = files.path().join(format!("{}.json", table.name()));
        std::fs::write(&file, lines).unwrap();
        reference
            .sql(&format!(
                "CREATE EXTERNAL TABLE {} ({}) STORED AS JSON LOCATION '{}'",
                table.name(),
                table.columns(),
                file.display()
            ))
            .await
            .unwrap();
    }
    // Where the final watermark stands: the least, over the tables a job
    // reads, of the last event time minus the delay.
    let watermark = |tables: &[NexmarkTable]| {
        let least = tables
            .iter()
            .map(|t| {
                events
                    .iter()
                    .filter(|e| e.table() == *t)
                    .map(|e| e.date_time())
                    .max()
                    .unwrap()
            })
            .min()
            .unwrap();
        let watermark = chrono::DateTime::from_timestamp_millis(least - DELAY_MS).unwrap();
        format!("TIMESTAMP '{}'", watermark.format("%Y-%m-%d %H:%M:%S%.3f"))
    };

    if feed == Feed::Generated {
        // A query in the REPL reads a NEXMARK table as a job does.
        let query = "SELECT channel, count(*) AS bids, max(price) AS top FROM bid \
                     GROUP BY channel ORDER BY bids DESC, channel LIMIT 5";
        let local = tempfile::tempdir().unwrap();
        let script = local.path().join("bids.sql");
        std::fs::write(
            &script,
            format!(
                "CREATE EXTERNAL TABLE bid STORED AS NEXMARK LOCATION 'bid' OPTIONS ({});\n{query};\n",
                generated_options()
            ),
        )
        .unwrap();
        let ran = std::process::Command::new(bin("driver"))
            .args(["repl", "--master", &url, "--format", "csv", "-f"])
            .arg(&script)
            .arg("--history")
            .arg(local.path().join("history"))
            .current_dir(local.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&ran.stdout);
        assert!(
            ran.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let want = reference.sql(query).await.unwrap().collect().await.unwrap();
        assert_eq!(cell_output(&stdout, 2), csv(&want), "{stdout}");
    }

    for (name, _) in RUNS {
        submit(&url, job_name(name), &test_job(name, feed))
            .await
            .unwrap_or_else(|e| panic!("{name}: {}", e.message()));
    }
    // A worker dies while the jobs run; another joins.
    wait_until(
        "a job past its third batch",
        Duration::from_secs(120),
        || async { job(&url, "q0").await.is_some_and(|j| j.batches >= 3) },
    )
    .await;
    workers.remove(0).kill();
    workers.push(start_worker(&url, ws, "w3"));

    for (name, windowed) in RUNS {
        let sql = job_file(name);
        let tables = tables_of(&sql);
        // A table read twice (a self-join) is read in two scans.
        let read = events
            .iter()
            .map(|e| scans_of(&sql, e.table()))
            .sum::<usize>() as u64;
        let name = &job_name(name);
        wait_until(
            &format!("{name} to finish"),
            Duration::from_secs(300),
            || async {
                let state = job(&url, name).await.map(|j| (j.state(), j.error.clone()));
                if let Some((JobState::Failed, error)) = &state {
                    panic!("{name} failed: {error}");
                }
                state.is_some_and(|(s, _)| s == JobState::Finished)
            },
        )
        .await;
        let finished = job(&url, name).await.unwrap();
        assert_eq!(finished.input_rows, read, "{name} read each event once");

        let want_sql = match windowed {
            Some(reference) => reference.replace("{watermark}", &watermark(&tables)),
            None => select_of(&sql).to_string(),
        };
        let want = reference
            .sql(&want_sql)
            .await
            .unwrap_or_else(|e| panic!("{name}'s reference: {e}"))
            .collect()
            .await
            .unwrap();
        let sink =
            spate_engine::job::session(&spate_engine::job::PlanEnv::new(ws.open(), String::new()));
        sink.sql(&format!(
            "CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION '{}'",
            sink_location(&sql)
        ))
        .await
        .unwrap();
        let got = sink
            .sql("SELECT * FROM out")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let (got, want) = (canonical(&got), canonical(&want));
        eprintln!(
            "{name}: {} rows equal DataFusion's",
            want.len().saturating_sub(4)
        );
        assert!(want.len() > 4, "{name}: the reference has no rows");
        if got != want {
            let (have, wanted): (HashSet<&String>, HashSet<&String>) =
                (got.iter().collect(), want.iter().collect());
            let missing: Vec<_> = wanted.difference(&have).take(5).collect();
            let extra: Vec<_> = have.difference(&wanted).take(5).collect();
            panic!(
                "{name}: the sink ({} lines) differs from DataFusion ({} lines)\nmissing: {missing:#?}\nextra: {extra:#?}",
                got.len(),
                want.len()
            );
        }
    }
}

/// The job files declare the tables with the columns the generator writes
/// (and maybe a primary key after them).
#[test]
fn job_files_declare_the_generators_columns() {
    let squeeze = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    for (name, _) in RUNS {
        let sql = squeeze(&job_file(name));
        for table in NexmarkTable::ALL {
            let declared = format!("CREATE EXTERNAL TABLE {} (", table.name());
            if sql.contains(&declared) {
                let columns = format!("{declared} {}", squeeze(&table.columns()));
                assert!(
                    sql.contains(&format!("{columns} )"))
                        || sql.contains(&format!("{columns}, PRIMARY KEY")),
                    "{name} declares {} with other columns than the generator's",
                    table.name()
                );
            }
        }
    }
}
