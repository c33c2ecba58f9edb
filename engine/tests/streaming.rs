//! Stateful streaming in the engine, batch after batch, without a cluster:
//! each batch runs the job's stages in order through plan bytes, as the
//! controller and workers do, with the watermark advancing between
//! batches. The sink must equal DataFusion's answer over the same records
//! in one batch with the late ones removed, and a re-run of a batch must
//! write byte-identical state.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use spate_engine::job::{PlanEnv, PlannedJob, plan_job, session};
use spate_engine::kafka::DevBroker;
use spate_engine::shuffle::file_stem;
use spate_engine::state::{StateCache, partition_dir};
use spate_engine::task::{TaskOutcome, TaskSpec, run_task};
use spate_engine::{OffsetRange, Workspace};

mod common;
use common::{append_lines, produce_lines, test_writer};
use spate_engine::sink::Committing;

const PARTITIONS: usize = 2;
/// 2023-11-14T22:13:20Z, a multiple of every window size used here.
const T0: i64 = 1_700_000_000_000;
const DELAY_MS: i64 = 5_000;

const TABLES: &str = "
CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
  STORED AS KAFKA LOCATION 'events'
  OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
CREATE EXTERNAL TABLE out (window_start TIMESTAMP, window_end TIMESTAMP, customer VARCHAR, revenue DOUBLE, n BIGINT, mean DOUBLE, top DOUBLE)
  STORED AS PARQUET LOCATION 'out/';
SET spate.shuffle.partitions = 3;
";

// avg keeps two state columns (count, sum), which the merge must carry.
const SLIDING: &str = "SELECT window.start, window.end, customer, sum(amount) AS revenue, count(*) AS n, \
avg(amount) AS mean, max(amount) AS top FROM events GROUP BY window(ts, '30 seconds', '10 seconds'), customer";

fn event(ts_ms: i64, i: i64) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap();
    // Quarters add up exactly in any order, so sums compare as text.
    serde_json::json!({"ts": ts.to_rfc3339(), "customer": format!("c{}", i % 5), "amount": (i % 7) as f64 * 0.25})
        .to_string()
}

/// Runs a job's batches as the controller would, in one process.
struct LocalJob {
    ws: Workspace,
    planned: PlannedJob,
    cache: Arc<StateCache>,
    batch: u64,
    read_to: Vec<i64>,
    max_event_time_ms: Option<i64>,
    watermark_ms: Option<i64>,
}

impl LocalJob {
    /// The job before its first batch, with an empty state cache.
    fn new(ws: &Workspace, planned: PlannedJob) -> Self {
        LocalJob {
            ws: ws.clone(),
            planned,
            cache: Arc::default(),
            batch: 0,
            read_to: vec![0; PARTITIONS],
            max_event_time_ms: None,
            watermark_ms: None,
        }
    }

    fn task(
        &self,
        stage: usize,
        index: u32,
        ranges: Vec<OffsetRange>,
        inputs: Vec<(u32, Vec<String>)>,
    ) -> TaskSpec {
        let stage = &self.planned.stages[stage];
        TaskSpec {
            job_id: self.planned.name.clone(),
            batch_id: self.batch,
            attempt_id: format!("b{}s{}t{index}", self.batch, stage.id),
            stage_id: stage.id,
            task_index: index,
            plan: stage.plan.clone(),
            ranges,
            partition: index,
            shuffle_inputs: inputs,
            watermark_ms: self.watermark_ms,
            sink: self.planned.sink.clone(),
        }
    }

    /// Runs the next batch over everything produced so far.
    async fn run_batch(&mut self, produced: &[i64]) -> Vec<TaskOutcome> {
        let mut outcomes = Vec::new();
        let mut stems = Vec::new();
        for (p, end) in produced.iter().enumerate() {
            let range = OffsetRange {
                topic: "events".into(),
                partition: p as i32,
                start: self.read_to[p],
                end: *end,
            };
            if range.is_empty() {
                continue;
            }
            let task = self.task(0, stems.len() as u32, vec![range], Vec::new());
            stems.push(file_stem(task.task_index, &task.attempt_id));
            let outcome = run_task(&self.ws, &task, &self.cache).await.unwrap();
            self.max_event_time_ms = self.max_event_time_ms.max(outcome.max_event_time_ms);
            outcomes.push(outcome);
        }
        let mut parts = Vec::new();
        for p in 0..self.planned.stages[1].tasks as u32 {
            let task = self.task(1, p, Vec::new(), vec![(1, stems.clone())]);
            let outcome = run_task(&self.ws, &task, &self.cache).await.unwrap();
            parts.extend(outcome.sink_part.clone());
            outcomes.push(outcome);
        }
        self.planned
            .sink
            .open(&self.ws, "events")
            .commit(
                &Committing {
                    batch: self.batch,
                    mode: self.planned.options.output_mode,
                    writer: &test_writer(),
                },
                parts,
            )
            .await
            .unwrap();
        self.read_to = produced.to_vec();
        self.batch += 1;
        self.watermark_ms = self
            .watermark_ms
            .max(self.max_event_time_ms.map(|m| m - DELAY_MS));
        outcomes
    }
}

async fn query(ws: &Workspace, setup: &str, sql: &str) -> String {
    let ctx = session(&PlanEnv::new(ws.clone(), ""));
    for statement in setup.split(';').filter(|s| !s.trim().is_empty()) {
        ctx.sql(statement).await.unwrap().collect().await.unwrap();
    }
    let batches = spate_engine::job::sql(&ctx, sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

#[tokio::test]
async fn sliding_windows_close_with_the_watermark_and_equal_one_batch() {
    sliding_windows_against_one_batch(StateCache::default(), false).await;
}

/// The same job on a worker whose state cache is smaller than any of its
/// partitions: each is spilled to a local file after every batch, and the
/// next batch looks its groups up there.
#[tokio::test]
async fn sliding_windows_equal_one_batch_with_every_partition_spilled() {
    sliding_windows_against_one_batch(StateCache::with_limit(256), true).await;
}

async fn sliding_windows_against_one_batch(cache: StateCache, spilled: bool) {
    let broker = DevBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let env = PlanEnv::new(ws.clone(), broker.bootstrap_servers());
    let planned = plan_job(
        &env,
        &format!("{TABLES} INSERT INTO out {SLIDING}"),
        "sliding",
    )
    .await
    .unwrap();
    assert_eq!(planned.stages.len(), 2, "{}", planned.explain);
    let mut job = LocalJob::new(&ws, planned);
    job.cache = Arc::new(cache);
    let mut on_time = Vec::new();

    // Batch 0: a minute of events, in order.
    let a: Vec<String> = (0..300).map(|i| event(T0 + i * 200, i)).collect();
    on_time.extend(a.clone());
    let mut produced = produce_lines(&broker, "events", PARTITIONS, &a).await;
    let first = job.run_batch(&produced).await;
    assert_eq!(first.iter().map(|o| o.input_rows).sum::<u64>(), 300);
    assert_eq!(
        first.iter().map(|o| o.output_rows).sum::<u64>(),
        0,
        "no window closed yet"
    );
    assert_eq!(job.watermark_ms, Some(T0 + 59_800 - DELAY_MS));

    // Batch 1: half late (older than the watermark), half on time; none
    // moves the watermark.
    let late: Vec<String> = (0..50).map(|i| event(T0 + i * 1000, 1000 + i)).collect();
    let in_time: Vec<String> = (0..50)
        .map(|i| event(T0 + 55_000 + i * 90, 2000 + i))
        .collect();
    on_time.extend(in_time.clone());
    let mixed: Vec<String> = late
        .iter()
        .zip(&in_time)
        .flat_map(|(l, o)| [l.clone(), o.clone()])
        .collect();
    add(
        &mut produced,
        append_lines(&broker, "events", PARTITIONS, &mixed).await,
    );
    let second = job.run_batch(&produced).await;
    assert_eq!(second.iter().map(|o| o.late_rows).sum::<u64>(), 50);
    // Windows ending by the watermark (T0+54.8s) closed: [..T0+30s], [..T0+40s], [..T0+50s].
    assert!(second.iter().map(|o| o.output_rows).sum::<u64>() > 0);

    // Batch 2: one event far ahead closes everything before it.
    let ahead = vec![event(T0 + 200_000, 3000)];
    on_time.extend(ahead.clone());
    add(
        &mut produced,
        append_lines(&broker, "events", PARTITIONS, &ahead).await,
    );
    job.run_batch(&produced).await;
    // Batch 0 wrote a snapshot, the batches after it deltas.
    let state_file = |p: u32, batch: u64| {
        let kind = if batch == 0 { "" } else { ".delta" };
        dir.path()
            .join(partition_dir("sliding", 1, p))
            .join(format!("{batch:020}{kind}.arrow"))
    };
    // Batch 3 has no data: the watermark moved, so closed windows come out.
    let before_rerun: BTreeMap<u32, Vec<u8>> = (0..3).map(|p| (p, Vec::new())).collect();
    let last = job.run_batch(&produced).await;
    assert_eq!(last.iter().map(|o| o.input_rows).sum::<u64>(), 0);
    let state_rows: u64 = last.iter().map(|o| o.state.rows).sum();
    assert_eq!(
        state_rows, 3,
        "only the far event's three windows stay open"
    );

    let spills = job.cache.usage().spills;
    if spilled {
        assert!(spills >= 6, "each partition with state spilled: {spills}");
    } else {
        assert_eq!(spills, 0);
    }

    // Re-running the last batch from the same checkpoint, on a worker with
    // no cached state, writes the same state: the same bytes, or, where
    // the first run's state was spilled (its file sorted by key hash), the
    // same rows in another order.
    let version_rows = |p: u32| -> Vec<String> {
        let file = std::fs::File::open(state_file(p, 3)).unwrap();
        let batches: Vec<_> = datafusion::arrow::ipc::reader::FileReader::try_new(file, None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut rows: Vec<String> = pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(str::to_string)
            .collect();
        rows.sort();
        rows
    };
    let mut saved = before_rerun;
    let mut saved_rows = BTreeMap::new();
    for (p, bytes) in saved.iter_mut() {
        *bytes = std::fs::read(state_file(*p, 3)).unwrap();
        saved_rows.insert(*p, version_rows(*p));
    }
    job.batch = 3;
    // A cache too small for any partition: every load reads the workspace.
    job.cache = Arc::new(StateCache::with_limit(1));
    job.watermark_ms = Some(T0 + 200_000 - DELAY_MS);
    job.run_batch(&produced).await;
    for (p, bytes) in &saved {
        if spilled {
            assert_eq!(version_rows(*p), saved_rows[p], "partition {p}");
        } else {
            assert_eq!(
                &std::fs::read(state_file(*p, 3)).unwrap(),
                bytes,
                "partition {p}"
            );
        }
    }
    assert!(
        state_file(0, 0).exists() && state_file(0, 1).exists(),
        "the snapshot and the deltas after it stay until the next snapshot"
    );
    assert_eq!(job.cache.usage().partitions, 0);
    assert!(job.cache.usage().evicted >= 3, "{:?}", job.cache.usage());

    // The reference: DataFusion over the on-time records as one batch,
    // keeping the windows the final watermark closed.
    std::fs::create_dir_all(dir.path().join("ref")).unwrap();
    std::fs::write(dir.path().join("ref/events.json"), on_time.join("\n")).unwrap();
    let watermark = chrono::DateTime::from_timestamp_millis(T0 + 200_000 - DELAY_MS)
        .unwrap()
        .naive_utc();
    let want = query(
        &ws,
        "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE) STORED AS JSON LOCATION 'ref/'",
        &format!("SELECT * FROM ({SLIDING}) WHERE \"end\" <= TIMESTAMP '{watermark}' ORDER BY start, customer"),
    )
    .await;
    let got = query(
        &ws,
        "CREATE EXTERNAL TABLE out STORED AS PARQUET LOCATION 'out/'",
        "SELECT * FROM out ORDER BY window_start, customer",
    )
    .await;
    assert_eq!(got.lines().count(), want.lines().count(), "{got}\n{want}");
    assert_eq!(
        got.lines().skip(3).collect::<Vec<_>>(),
        want.lines().skip(3).collect::<Vec<_>>()
    );
}

/// SELECT DISTINCT over a stream with its event time among the keys:
/// each row is written once, in the batch that first sees it, duplicates
/// in the same batch, in later batches and on other partitions are not,
/// and the state forgets a row once the watermark passes its time.
#[tokio::test]
async fn distinct_rows_are_written_when_first_seen_and_forgotten_after_the_watermark() {
    const DISTINCT: &str = "SELECT DISTINCT ts, customer, amount FROM events";
    let broker = DevBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let env = PlanEnv::new(ws.clone(), broker.bootstrap_servers());
    let tables = "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE)
          STORED AS KAFKA LOCATION 'events'
          OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
        CREATE EXTERNAL TABLE seen STORED AS PARQUET LOCATION 'seen/';
        SET spate.shuffle.partitions = 3;";
    let planned = plan_job(
        &env,
        &format!("{tables} INSERT INTO seen {DISTINCT}"),
        "dedup",
    )
    .await
    .unwrap();
    let mut job = LocalJob::new(&ws, planned);
    let written = |outcomes: &[TaskOutcome]| outcomes.iter().map(|o| o.output_rows).sum::<u64>();
    let twice = |events: &[String]| -> Vec<String> {
        events.iter().flat_map(|e| [e.clone(), e.clone()]).collect()
    };
    let events: Vec<String> = (0..260).map(|i| event(T0 + i * 200, i)).collect();

    // Batch 0: every event twice, on both partitions; each is written at
    // once, without waiting for the watermark.
    let mut produced = produce_lines(&broker, "events", PARTITIONS, twice(&events[..200])).await;
    assert_eq!(written(&job.run_batch(&produced).await), 200);
    assert_eq!(job.watermark_ms, Some(T0 + 39_800 - DELAY_MS));

    // Batch 1: events 150..200 again (those before the watermark are late,
    // the rest seen already) and 60 new ones: only the new are written.
    let again: Vec<String> = events[150..].to_vec();
    add(
        &mut produced,
        append_lines(&broker, "events", PARTITIONS, &again).await,
    );
    let second = job.run_batch(&produced).await;
    assert_eq!(second.iter().map(|o| o.late_rows).sum::<u64>(), 24);
    assert_eq!(written(&second), 60);

    // An event far ahead moves the watermark past the others: the state
    // forgets them, and nothing more is written.
    let ahead = vec![event(T0 + 200_000, 7)];
    add(
        &mut produced,
        append_lines(&broker, "events", PARTITIONS, &ahead).await,
    );
    assert_eq!(written(&job.run_batch(&produced).await), 1);
    let last = job.run_batch(&produced).await;
    assert_eq!(written(&last), 0);
    assert_eq!(last.iter().map(|o| o.state.rows).sum::<u64>(), 1);

    let mut reference = events;
    reference.extend(ahead);
    std::fs::create_dir_all(dir.path().join("ref")).unwrap();
    std::fs::write(dir.path().join("ref/events.json"), reference.join("\n")).unwrap();
    let want = query(
        &ws,
        "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE) STORED AS JSON LOCATION 'ref/'",
        &format!("{DISTINCT} ORDER BY ts, customer"),
    )
    .await;
    let got = query(
        &ws,
        "CREATE EXTERNAL TABLE seen STORED AS PARQUET LOCATION 'seen/'",
        "SELECT * FROM seen ORDER BY ts, customer",
    )
    .await;
    assert_eq!(got.lines().count(), 261 + 4, "{got}");
    assert_eq!(got, want);
}

fn add(produced: &mut [i64], more: Vec<i64>) {
    for (p, n) in produced.iter_mut().zip(more) {
        *p += n;
    }
}

/// Auctions (whose id is their key) joined with their bids and with
/// their sellers' sign-ups: each auction's best bid is final once the
/// watermark passes its end, but not where the auction side is itself a
/// join of two streams, which may write a pair after that.
#[tokio::test]
async fn a_top_n_per_primary_key_of_a_join_side_closes_with_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let env = PlanEnv::new(Workspace::open(dir.path()).unwrap(), "localhost:9092");
    let tables = "
        CREATE EXTERNAL TABLE auctions (id BIGINT, ts TIMESTAMP, ends TIMESTAMP, seller BIGINT,
            PRIMARY KEY (id) NOT ENFORCED)
            STORED AS KAFKA LOCATION 'auctions' OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
        CREATE EXTERNAL TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP)
            STORED AS KAFKA LOCATION 'bids' OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
        CREATE EXTERNAL TABLE sellers (id BIGINT, ts TIMESTAMP)
            STORED AS KAFKA LOCATION 'sellers' OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
        CREATE EXTERNAL TABLE out (id BIGINT, price BIGINT) STORED AS PARQUET LOCATION 'out/';";
    let best = |from: &str| {
        format!(
            "{tables} INSERT INTO out SELECT id, price FROM (SELECT a.id, a.ends, b.price,
                row_number() OVER (PARTITION BY a.id ORDER BY b.price DESC) AS r
             FROM {from} JOIN bids b ON a.id = b.auction AND b.ts BETWEEN a.ts AND a.ends)
             WHERE r = 1"
        )
    };
    let job = plan_job(&env, &best("auctions a"), "best").await.unwrap();
    assert!(
        job.explain.contains(
            "first 1 per [id] by [price DESC], each once the watermark reaches ends + 1 ms"
        ),
        "{}",
        job.explain
    );
    let nested = best(
        "auctions a JOIN sellers s ON a.seller = s.id AND s.ts BETWEEN a.ts AND a.ts + INTERVAL '1' MINUTE",
    );
    let error = plan_job(&env, &nested, "best")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("a key's rows are final only once the key can get no more rows"),
        "{error}"
    );
}

#[tokio::test]
async fn queries_a_stream_cannot_run_are_refused_with_the_reason() {
    let broker = DevBroker::start().unwrap();
    broker.create_topic("events", 2).unwrap();
    broker.create_topic("clicks", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = PlanEnv::new(
        Workspace::open(dir.path()).unwrap(),
        broker.bootstrap_servers(),
    );
    let events = "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE) STORED AS KAFKA LOCATION 'events'";
    let watermarked = "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR, amount DOUBLE) STORED AS KAFKA LOCATION 'events' OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS')";
    let files =
        "CREATE EXTERNAL TABLE out (s TIMESTAMP, n BIGINT) STORED AS PARQUET LOCATION 'out/'";
    let cases = [
        (
            format!("{events}; CREATE EXTERNAL TABLE out (c VARCHAR, n BIGINT) STORED AS PARQUET LOCATION 'out/'; INSERT INTO out SELECT customer, count(*) FROM events GROUP BY customer"),
            "append output mode emits each group once",
        ),
        (
            format!("{events}; CREATE EXTERNAL TABLE out (c VARCHAR) STORED AS PARQUET LOCATION 'out/'; SET spate.output_mode = 'complete'; INSERT INTO out SELECT customer FROM events"),
            "complete output mode re-emits every group",
        ),
        (
            format!("{events}; CREATE EXTERNAL TABLE out (c VARCHAR, n BIGINT) STORED AS PARQUET LOCATION 'out/'; SET spate.output_mode = 'update'; INSERT INTO out SELECT customer, count(*) FROM events GROUP BY customer"),
            "update output mode rewrites groups as they change, which a file sink cannot",
        ),
        (
            format!("{events}; CREATE EXTERNAL TABLE out (c VARCHAR) STORED AS PARQUET LOCATION 'out/'; INSERT INTO out SELECT customer FROM events ORDER BY customer"),
            "ORDER BY",
        ),
        (
            format!("{watermarked}; CREATE EXTERNAL TABLE out (s TIMESTAMP, n BIGINT) STORED AS PARQUET LOCATION 'out/'; INSERT INTO out SELECT session_window.start, count(*) FROM events GROUP BY session_window(ts, '1 minute')"),
            "needs a key to group by besides the session",
        ),
        (
            "CREATE EXTERNAL TABLE events (ts TIMESTAMP, customer VARCHAR) STORED AS KAFKA LOCATION 'events' OPTIONS ('watermark' 'event_time - INTERVAL 5 SECONDS')".to_string(),
            "option 'watermark' is 'event_time - INTERVAL 5 SECONDS': the table has no column 'event_time'",
        ),
        (
            "CREATE EXTERNAL TABLE events (ts VARCHAR) STORED AS KAFKA LOCATION 'events' OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS')".to_string(),
            "option 'watermark' is 'ts - INTERVAL 5 SECONDS': column 'ts' is",
        ),
        (
            format!("{watermarked}; {files}; INSERT INTO out SELECT window.start, count(*) FROM events GROUP BY window(ts, 'soon')"),
            "window(): the window size 'soon' is not a positive duration",
        ),
        (
            format!("{events}; CREATE EXTERNAL TABLE clicks (customer VARCHAR) STORED AS KAFKA LOCATION 'clicks'; CREATE EXTERNAL TABLE out (c VARCHAR) STORED AS PARQUET LOCATION 'out/'; INSERT INTO out SELECT e.customer FROM events e LEFT JOIN clicks c ON e.customer = c.customer"),
            "so the join condition must bound the right side's event time by the left side's",
        ),
        (
            format!("{events}; CREATE EXTERNAL TABLE clicks (customer VARCHAR) STORED AS KAFKA LOCATION 'clicks'; CREATE EXTERNAL TABLE out (c VARCHAR) STORED AS PARQUET LOCATION 'out/'; INSERT INTO out SELECT e.customer FROM events e WHERE e.customer IN (SELECT customer FROM clicks)"),
            "which is not supported: join two streams with an inner, left, right or full outer join",
        ),
        (
            format!("{watermarked}; CREATE EXTERNAL TABLE clicks (customer VARCHAR, ts TIMESTAMP) STORED AS KAFKA LOCATION 'clicks' OPTIONS ('watermark' 'ts'); {files}; INSERT INTO out SELECT window.start, count(*) FROM events e JOIN clicks c ON e.customer = c.customer GROUP BY window(e.ts, '10 seconds')"),
            "this query aggregates the join of two streams by an event-time window",
        ),
        (
            format!("{watermarked}; CREATE EXTERNAL TABLE clicks (customer VARCHAR, ts TIMESTAMP) STORED AS KAFKA LOCATION 'clicks' OPTIONS ('watermark' 'ts'); {files}; INSERT INTO out SELECT window.start, count(*) FROM events e JOIN clicks c ON e.customer = c.customer AND c.ts BETWEEN e.ts AND e.ts + INTERVAL '1' MINUTE GROUP BY window(e.ts, '10 seconds')"),
            "whose time the join may write older than the watermark",
        ),
        (
            format!("{watermarked}; {files}; INSERT INTO out SELECT s, n FROM (SELECT s, n, row_number() OVER (PARTITION BY c ORDER BY n DESC) AS r FROM (SELECT window.start AS s, customer AS c, count(*) AS n FROM events GROUP BY window(ts, '1 minute'), customer)) WHERE r <= 3"),
            "so it must PARTITION BY the window",
        ),
        (
            format!("{watermarked}; {files}; INSERT INTO out SELECT s, n FROM (SELECT s, n, row_number() OVER (PARTITION BY s ORDER BY n DESC) AS r FROM (SELECT session_window.start AS s, customer AS c, count(*) AS n FROM events GROUP BY session_window(ts, '1 minute'), customer)) WHERE r <= 3"),
            "sessions close one key at a time",
        ),
        (
            format!("{watermarked}; {files}; INSERT INTO out SELECT window.start, count(*) AS n FROM events GROUP BY window(ts, '1 minute') ORDER BY n"),
            "needs ORDER BY",
        ),
        (
            format!("{watermarked}; {files}; INSERT INTO out SELECT ts, count FROM (SELECT ts, CAST(amount AS BIGINT) AS count, row_number() OVER (PARTITION BY customer ORDER BY ts DESC) AS r FROM events) WHERE r <= 3"),
            "would keep the latest rows, which are never final",
        ),
        (
            format!("{watermarked}; {files}; INSERT INTO out SELECT ts, count FROM (SELECT ts, CAST(amount AS BIGINT) AS count, row_number() OVER (PARTITION BY customer ORDER BY amount DESC) AS r FROM events) WHERE r = 1"),
            "a key's rows are final only once the key can get no more rows",
        ),
        // A key of one side that is not its table's primary key: its rows
        // come from many rows of that table, which end at different times.
        (
            format!("{watermarked}; CREATE EXTERNAL TABLE clicks (customer VARCHAR, ts TIMESTAMP) STORED AS KAFKA LOCATION 'clicks' OPTIONS ('watermark' 'ts'); {files}; INSERT INTO out SELECT s, n FROM (SELECT e.ts AS s, CAST(e.amount AS BIGINT) AS n, row_number() OVER (PARTITION BY e.customer ORDER BY e.amount DESC) AS r FROM events e JOIN clicks c ON e.customer = c.customer AND c.ts BETWEEN e.ts AND e.ts + INTERVAL '1' MINUTE) WHERE r = 1"),
            "that holds the PRIMARY KEY of that side's table",
        ),
        (
            format!("{watermarked}; CREATE EXTERNAL TABLE clicks (customer VARCHAR, ts TIMESTAMP) STORED AS KAFKA LOCATION 'clicks' OPTIONS ('watermark' 'ts'); CREATE EXTERNAL TABLE out (c VARCHAR, n BIGINT) STORED AS PARQUET LOCATION 'out/'; SET spate.output_mode = 'complete'; INSERT INTO out SELECT customer, max(n) FROM (SELECT e.customer, count(*) AS n FROM events e JOIN clicks c ON e.customer = c.customer AND c.ts BETWEEN e.ts AND e.ts + INTERVAL '1' MINUTE GROUP BY e.customer) GROUP BY customer"),
            "or the PRIMARY KEY of the table on one side of a join of two streams",
        ),
        // Keys of both sides of a join: no one side's row closes them.
        (
            format!("{watermarked}; CREATE EXTERNAL TABLE clicks (customer VARCHAR, ts TIMESTAMP) STORED AS KAFKA LOCATION 'clicks' OPTIONS ('watermark' 'ts'); {files}; INSERT INTO out SELECT s, n FROM (SELECT e.ts AS s, CAST(e.amount AS BIGINT) AS n, row_number() OVER (PARTITION BY e.customer, c.ts ORDER BY e.amount DESC) AS r FROM events e JOIN clicks c ON e.customer = c.customer AND c.ts BETWEEN e.ts AND e.ts + INTERVAL '1' MINUTE) WHERE r = 1"),
            "for a key of one side of a join of two streams",
        ),
        (
            format!("{events}; {files}; INSERT INTO out SELECT ts, count FROM (SELECT ts, CAST(amount AS BIGINT) AS count, row_number() OVER (PARTITION BY customer ORDER BY ts) AS r FROM events) WHERE r = 1"),
            "ordered by anything but a Kafka table's event-time column (one with a 'watermark'), ascending",
        ),
        (
            format!("{watermarked}; CREATE EXTERNAL TABLE out (c VARCHAR, n BIGINT) STORED AS PARQUET LOCATION 'out/'; SET spate.output_mode = 'complete'; INSERT INTO out SELECT customer, count(*) FROM (SELECT customer, row_number() OVER (PARTITION BY customer ORDER BY ts) AS r FROM events) WHERE r <= 2 GROUP BY customer"),
            "so it cannot feed an aggregation or a join of two streams yet",
        ),
    ];
    for (sql, expected) in cases {
        let error = plan_job(&env, &sql, "bad").await.unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "{sql}\n  gave: {error}\n  expected it to say: {expected}"
        );
    }
}

/// A join of two streams keeps each side's rows while the join condition
/// lets a future row of the other side match them: the bound is read off
/// the condition, whichever way it is written, and only a side's
/// watermark column bounds the other side.
#[tokio::test]
async fn a_stream_join_keeps_each_side_while_its_condition_lets_it_match() {
    let dir = tempfile::tempdir().unwrap();
    let env = PlanEnv::new(Workspace::open(dir.path()).unwrap(), "localhost:9092");
    let tables = "
        CREATE EXTERNAL TABLE imps (ts TIMESTAMP, ad BIGINT, shown TIMESTAMP) STORED AS KAFKA LOCATION 'imps'
            OPTIONS ('watermark' 'ts - INTERVAL 5 SECONDS');
        CREATE EXTERNAL TABLE clicks (at TIMESTAMP, ad BIGINT) STORED AS KAFKA LOCATION 'clicks'
            OPTIONS ('watermark' 'at - INTERVAL 5 SECONDS');
        CREATE EXTERNAL TABLE out (ad BIGINT) STORED AS PARQUET LOCATION 'out/';
        INSERT INTO out SELECT i.ad FROM imps i";
    let cases = [
        // c.at BETWEEN i.ts AND i.ts + 1 hour: an impression waits an hour
        // (and a millisecond) past its time, a click until its own time.
        (
            "LEFT JOIN clicks c ON i.ad = c.ad AND c.at BETWEEN i.ts AND i.ts + INTERVAL '1' HOUR",
            "left kept until watermark >= ts + 3600001 ms, right kept until watermark >= at + 1 ms",
        ),
        // Strict and written the other way round: a click comes less than
        // ten seconds after its impression, and after it.
        (
            "JOIN clicks c ON i.ad = c.ad AND i.ts > c.at - INTERVAL '10' SECOND AND i.ts < c.at",
            "left kept until watermark >= ts + 10000 ms, right kept until watermark >= at + 0 ms",
        ),
        // `shown` is no watermark column: it bounds nothing of the clicks.
        (
            "JOIN clicks c ON i.ad = c.ad AND c.at <= i.shown + INTERVAL '1' MINUTE AND i.shown <= c.at",
            "left kept until watermark >= shown + 60001 ms, right kept until none",
        ),
        // Equal 10-second bins (DataFusion computes them below the join):
        // each side until the watermark passes its bin's end.
        (
            "LEFT JOIN clicks c ON i.ad = c.ad AND date_bin(INTERVAL '10 seconds', i.ts) = date_bin(INTERVAL '10 seconds', c.at)",
            "i.ts) + 10000 ms, right kept until watermark >= date_bin(",
        ),
        // A regular join keeps both sides.
        (
            "JOIN clicks c ON i.ad = c.ad",
            "left kept until none, right kept until none",
        ),
    ];
    for (join, expected) in cases {
        let sql = format!("{tables} {join}");
        let planned = plan_job(&env, &sql, "joins")
            .await
            .unwrap_or_else(|e| panic!("{join}: {e}"));
        assert_eq!(planned.stages.len(), 3, "{join}: two shuffles and the join");
        assert!(planned.joins_streams());
        assert!(
            planned.explain.contains(expected),
            "{join}: expected '{expected}' in\n{}",
            planned.explain
        );
        assert_eq!(
            planned.checkpoint_metadata().topics,
            vec!["imps".to_string(), "clicks".to_string()]
        );
    }
}
