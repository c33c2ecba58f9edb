//! Test harness: Spate's binaries as real processes on loopback ports, Kafka
//! as librdkafka's mock cluster, and the reference answer computed by
//! DataFusion in this process over the same records.

#![allow(dead_code)]

use spate_proto::JobState;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use spate_proto::client_service_client::ClientServiceClient;
use spate_proto::{JobInfo, ListJobsRequest, ListWorkersRequest, SubmitJobRequest, WorkerInfo};

/// librdkafka's mock cluster with a 4-partition topic `sales`, and its
/// bootstrap servers.
pub fn sales_kafka() -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let kafka = rdkafka::mocking::MockCluster::new(1).unwrap();
    kafka.create_topic("sales", 4, 1).unwrap();
    let bootstrap = kafka.bootstrap_servers();
    (kafka, bootstrap)
}

/// Where a test's cluster keeps its workspace: a local folder, or a prefix
/// of a bucket on a real S3-protocol server.
pub trait TestWorkspace {
    /// `--workspace` of Spate's processes.
    fn arg(&self) -> String;
    /// What else those processes need to reach it.
    fn env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// The workspace, opened in the test (an S3 one through the S3 API).
    fn open(&self) -> spate_engine::Workspace;
}

impl TestWorkspace for Path {
    fn arg(&self) -> String {
        self.display().to_string()
    }

    fn open(&self) -> spate_engine::Workspace {
        spate_engine::Workspace::open(self).unwrap()
    }
}

/// A workspace below `prefix` in the bucket of a moto S3 server.
pub struct S3Workspace {
    pub server: spate_testkit::S3Server,
    pub prefix: String,
}

impl S3Workspace {
    pub fn start() -> Self {
        S3Workspace {
            server: spate_testkit::S3Server::start(),
            prefix: "team/workspace".to_string(),
        }
    }
}

impl TestWorkspace for S3Workspace {
    fn arg(&self) -> String {
        format!("s3://{}/{}", self.server.bucket, self.prefix)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.server.env()
    }

    fn open(&self) -> spate_engine::Workspace {
        spate_engine::Workspace::open_s3(
            self.server.client(),
            self.server.bucket.clone(),
            self.prefix.clone(),
        )
        .unwrap()
    }
}

/// A binary of this workspace, built by `cargo test --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds every binary",
        path.display()
    );
    path
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a binary and returns it with the first stdout line that contains `ready`.
fn spawn_until(name: &str, args: &[String], ready: &str) -> (Proc, String) {
    spawn_logged(name, args, &[], ready, None)
}

/// As `spawn_until`; with `log`, everything the process prints (stdout and
/// stderr, at RUST_LOG=info) goes to that file too.
fn spawn_logged(
    name: &str,
    args: &[String],
    env: &[(&'static str, String)],
    ready: &str,
    log: Option<&Path>,
) -> (Proc, String) {
    let mut command = Command::new(bin(name));
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn,spate_master=info,spate_worker=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut tee = None;
    if let Some(log) = log {
        let file = std::fs::File::create(log).unwrap();
        command
            .env("RUST_LOG", "info")
            .stderr(file.try_clone().unwrap());
        tee = Some(file);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut keep = move |line: &str| {
        if let Some(file) = &mut tee {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
    };
    let line = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(ready) => break line,
            Some(Ok(line)) => keep(&line),
            _ => panic!("{name} exited before printing '{ready}'"),
        }
    };
    keep(&line);
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            keep(&line);
        }
    });
    (
        Proc {
            child,
            name: name.to_string(),
        },
        line,
    )
}

pub struct MasterProc {
    pub proc: Proc,
    /// host:port of its gRPC.
    pub grpc: String,
    /// The web UI's URL, http(s)://...
    pub http: String,
    /// http or https.
    pub scheme: String,
}

impl MasterProc {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc)
    }
}

/// Starts `master` on `grpc` (use "127.0.0.1:0" for any port).
pub fn start_master(
    workspace: &(impl TestWorkspace + ?Sized),
    grpc: &str,
    extra: &[&str],
) -> MasterProc {
    start_master_logged(workspace, grpc, extra, None)
}

/// As `start_master`, its output kept in `log`.
pub fn start_master_logged(
    workspace: &(impl TestWorkspace + ?Sized),
    grpc: &str,
    extra: &[&str],
    log: Option<&Path>,
) -> MasterProc {
    let mut args = vec![
        "--bind".to_string(),
        grpc.to_string(),
        "--ui-bind".to_string(),
        "127.0.0.1:0".to_string(),
        "--workspace".to_string(),
        workspace.arg(),
        "--worker-timeout".to_string(),
        "3".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (proc, line) = spawn_logged("master", &args, &workspace.env(), "spate master:", log);
    // "spate master: gRPC on http://127.0.0.1:PORT, web UI on http://127.0.0.1:PORT"
    let url = line
        .split("gRPC on ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let (scheme, grpc) = url.split_once("://").unwrap();
    let http = line.split("web UI on ").nth(1).unwrap().trim().to_string();
    MasterProc {
        proc,
        grpc: grpc.to_string(),
        http,
        scheme: scheme.to_string(),
    }
}

pub fn start_worker(master_url: &str, workspace: &(impl TestWorkspace + ?Sized), id: &str) -> Proc {
    start_worker_logged(master_url, workspace, id, &[], None)
}

/// A worker with `extra` flags, its output kept in `log`.
pub fn start_worker_logged(
    master_url: &str,
    workspace: &(impl TestWorkspace + ?Sized),
    id: &str,
    extra: &[&str],
    log: Option<&Path>,
) -> Proc {
    let mut args: Vec<String> = [
        "--master",
        master_url,
        "--workspace",
        &workspace.arg(),
        "--id",
        id,
        "--slots",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_logged("worker", &args, &workspace.env(), "connecting to", log).0
}

/// Workers with these ids, for the master at `url`.
pub fn start_workers(
    url: &str,
    workspace: &(impl TestWorkspace + ?Sized),
    ids: &[&str],
) -> Vec<Proc> {
    ids.iter()
        .map(|id| start_worker(url, workspace, id))
        .collect()
}

pub async fn client(url: &str) -> ClientServiceClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientServiceClient::connect(url.to_string()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot reach master {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub async fn submit(url: &str, name: &str, sql: &str) -> Result<String, tonic::Status> {
    let mut c = client(url).await;
    let r = c
        .submit_job(SubmitJobRequest {
            sql: sql.to_string(),
            name: name.to_string(),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().job_id)
}

pub async fn job(url: &str, id: &str) -> Option<JobInfo> {
    let mut c = client(url).await;
    let jobs = c
        .list_jobs(ListJobsRequest {})
        .await
        .ok()?
        .into_inner()
        .jobs;
    jobs.into_iter().find(|j| j.job_id == id)
}

pub async fn workers(url: &str) -> Vec<WorkerInfo> {
    let mut c = client(url).await;
    c.list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
}

/// Polls until `check` holds; a deadline guards against a hang, it measures nothing.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the job has read `rows` input rows, failing fast if it fails.
pub async fn wait_for_input_rows(url: &str, id: &str, rows: u64) {
    wait_until(
        &format!("job {id} to read {rows} rows"),
        Duration::from_secs(180),
        || async {
            match job(url, id).await {
                Some(j) if j.state() == JobState::Failed => panic!("job {id} failed: {}", j.error),
                Some(j) => j.input_rows >= rows,
                None => false,
            }
        },
    )
    .await;
}

/// The sales record of test index `i`: known content, partition `i % partitions`.
pub fn sale(i: u64) -> serde_json::Value {
    const CUSTOMERS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    const COUNTRIES: &[&str] = &["US", "DE", "FR", "GB", "IN"];
    serde_json::json!({
        "id": i,
        "customer": CUSTOMERS[(i % 7) as usize],
        "revenue": ((i * 37) % 500) as f64 + 0.25,
        "country": COUNTRIES[(i % 5) as usize],
        "timestamp": format!("2026-11-21T10:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
    })
}

/// Produces records `range` of `sale`, record i to partition i % partitions, in order.
pub async fn produce_sales(
    bootstrap: &str,
    topic: &str,
    range: std::ops::Range<u64>,
    partitions: u64,
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for i in range {
        let payload = sale(i).to_string();
        let key = format!("k{}", i % 10);
        let record = FutureRecord::to(topic)
            .payload(&payload)
            .key(&key)
            .partition((i % partitions) as i32);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// The query's answer computed by DataFusion alone over the same records,
/// written as JSON lines; `columns` is the table's DDL column list.
pub async fn reference(records: std::ops::Range<u64>, columns: &str, query: &str) -> String {
    let batches = reference_batches(records, columns, query).await;
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The query's answer computed by DataFusion alone, as Arrow batches.
pub async fn reference_batches(
    records: std::ops::Range<u64>,
    columns: &str,
    query: &str,
) -> Vec<datafusion::arrow::array::RecordBatch> {
    let (_records, ctx) = reference_session(records, columns).await;
    ctx.sql(query).await.unwrap().collect().await.unwrap()
}

/// DataFusion alone with `records` of `sale` as the table `sales` (`columns`
/// its DDL column list), and the folder that holds them, which must live
/// as long as the session reads them.
pub async fn reference_session(
    records: std::ops::Range<u64>,
    columns: &str,
) -> (tempfile::TempDir, SessionContext) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sales.json");
    let lines: Vec<String> = records.map(|i| sale(i).to_string()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let ctx = SessionContext::new();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE sales ({columns}) STORED AS JSON LOCATION '{}'",
        file.display()
    ))
    .await
    .unwrap();
    (dir, ctx)
}

/// A result in the REPL's CSV format (arrow's CSV writer with a header).
pub fn csv(batches: &[datafusion::arrow::array::RecordBatch]) -> String {
    let mut out = Vec::new();
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(&mut out);
    for batch in batches {
        writer.write(batch).unwrap();
    }
    drop(writer);
    String::from_utf8(out).unwrap().trim_end().to_string()
}

/// Runs `query` over a Spate file sink's committed output, registered as `out`.
pub async fn query_sink(
    workspace: &(impl TestWorkspace + ?Sized),
    dir: &str,
    columns: &str,
    format: &str,
    query: &str,
) -> String {
    let ctx = spate_engine::job::session(&spate_engine::job::PlanEnv::new(
        workspace.open(),
        String::new(),
    ));
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE out ({columns}) STORED AS {format} LOCATION '{dir}'"
    ))
    .await
    .unwrap();
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The rows of cell `n` in `-f` output printed as CSV.
pub fn cell_output(stdout: &str, n: usize) -> String {
    let header = format!("Out[{n}]:");
    let mut lines = stdout.lines().skip_while(|l| *l != header).skip(1);
    let mut out = Vec::new();
    for line in lines.by_ref() {
        let next_cell = line.starts_with('[')
            && line[1..]
                .split_once("]> ")
                .is_some_and(|(d, _)| d.chars().all(|c| c.is_ascii_digit()));
        if next_cell {
            break;
        }
        out.push(line);
    }
    out.join("\n")
}
