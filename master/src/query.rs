//! The interactive side of the master (the REPL's calls): one statement of
//! a session, planned with the session's earlier statements and run as one
//! batch on the workers, its rows streamed back as Arrow IPC; and a job's
//! committed sink rows, followed as batches commit.

use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use futures::StreamExt;
use spate_engine::job::{SinkSpec, plan_job, starting_offset};
use spate_engine::kafka::{KafkaAdmin, StartingOffsets};
use spate_engine::query::{PlannedQuery, Statement, plan_statement};
use spate_engine::sink::ResultsSink;
use spate_engine::workspace::SPATE_DIR;
use spate_engine::{EngineError, OffsetRange};
use spate_proto::{
    ResultEnd, RunStatementRequest, StatementReply, TailJobRequest, statement_reply,
};
use tokio::sync::mpsc;
use tonic::Status;

use crate::Master;
use crate::error::Result;
use crate::stages::{BatchStages, attempt_id};

pub type ReplySender = mpsc::Sender<Result<StatementReply, Status>>;

/// How often a tail looks for newly committed batches.
const TAIL_POLL: Duration = Duration::from_millis(250);

/// The client hung up: nothing more to send.
struct Gone;

/// Writes one result as Arrow IPC stream chunks, one per batch.
struct ResultWriter<'a> {
    replies: &'a ReplySender,
    writer: StreamWriter<Vec<u8>>,
    rows: u64,
}

impl<'a> ResultWriter<'a> {
    fn new(replies: &'a ReplySender, schema: &SchemaRef) -> Result<Self> {
        Ok(ResultWriter {
            replies,
            writer: StreamWriter::try_new(Vec::new(), schema).map_err(EngineError::from)?,
            rows: 0,
        })
    }

    async fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let batch = spate_engine::ipc::compacted(batch)?;
        self.writer.write(&batch).map_err(EngineError::from)?;
        self.rows += batch.num_rows() as u64;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), WriteError> {
        let chunk = std::mem::take(self.writer.get_mut());
        if !chunk.is_empty() {
            send(self.replies, statement_reply::Kind::Arrow(chunk)).await?;
        }
        Ok(())
    }

    /// Ends the IPC stream and the result.
    async fn finish(mut self, mut end: ResultEnd) -> Result<(), WriteError> {
        self.writer.finish().map_err(EngineError::from)?;
        self.flush().await?;
        end.rows = self.rows;
        Ok(send(self.replies, statement_reply::Kind::End(end)).await?)
    }
}

enum WriteError {
    Gone,
    Failed(crate::error::MasterError),
}

impl From<Gone> for WriteError {
    fn from(_: Gone) -> Self {
        WriteError::Gone
    }
}

impl From<EngineError> for WriteError {
    fn from(e: EngineError) -> Self {
        WriteError::Failed(e.into())
    }
}

impl From<crate::error::MasterError> for WriteError {
    fn from(e: crate::error::MasterError) -> Self {
        WriteError::Failed(e)
    }
}

async fn send(replies: &ReplySender, kind: statement_reply::Kind) -> Result<(), Gone> {
    replies
        .send(Ok(StatementReply { kind: Some(kind) }))
        .await
        .map_err(|_| Gone)
}

/// Runs one statement and sends its replies; an error goes to the client
/// as the stream's status. A client that hangs up (or presses Ctrl-C)
/// stops the statement: its tasks are cancelled on the workers.
pub async fn run_statement(master: &Master, request: RunStatementRequest, replies: ReplySender) {
    let ran = tokio::select! {
        ran = statement(master, &request, &replies) => ran,
        _ = replies.closed() => Err(WriteError::Gone),
    };
    match ran {
        Ok(()) => {}
        Err(WriteError::Gone) => tracing::info!("a client went away; its statement stopped"),
        Err(WriteError::Failed(e)) => {
            let _ = replies.send(Err(e.into())).await;
        }
    }
}

async fn statement(
    master: &Master,
    request: &RunStatementRequest,
    replies: &ReplySender,
) -> Result<(), WriteError> {
    let env = master.plan_env();
    let end = |message: String| ResultEnd {
        message,
        ..ResultEnd::default()
    };
    match plan_statement(&env, &request.session, &request.statement).await? {
        Statement::Session { message } => {
            let end = ResultEnd {
                session_statement: true,
                ..end(message)
            };
            send(replies, statement_reply::Kind::End(end)).await?;
        }
        Statement::Job { sql, default_name } if request.explain => {
            let planned = plan_job(&env, &sql, &default_name).await?;
            let stages: String = planned
                .stages
                .iter()
                .map(|s| format!("Stage {} (reads {:?}):\n{}\n", s.id, s.reads, s.explain))
                .collect();
            let message = format!(
                "streaming job {} ({} output mode)\n{stages}",
                planned.name,
                planned.options.output_mode.name()
            );
            send(replies, statement_reply::Kind::End(end(message))).await?;
        }
        Statement::Job { sql, default_name } => {
            let (job_id, resumed) = master.submit(&sql, &default_name, false).await?;
            let how = if resumed {
                "resumed from its checkpoint"
            } else {
                "started"
            };
            let end = ResultEnd {
                job_id: job_id.clone(),
                ..end(format!(
                    "streaming job {job_id} {how}; \\tail {job_id} follows its output, \\stop {job_id} stops it"
                ))
            };
            send(replies, statement_reply::Kind::End(end)).await?;
        }
        Statement::Local(frame) if request.explain => {
            let plan = frame.logical_plan().display_indent().to_string();
            let message =
                format!("answered by the master's planner (reads no table data):\n{plan}");
            send(replies, statement_reply::Kind::End(end(message))).await?;
        }
        Statement::Local(frame) => {
            let schema = frame.schema().inner().clone();
            let mut rows = frame.execute_stream().await.map_err(EngineError::from)?;
            let mut result = ResultWriter::new(replies, &schema)?;
            while let Some(batch) = rows.next().await {
                result.write(&batch.map_err(EngineError::from)?).await?;
            }
            result.finish(ResultEnd::default()).await?;
        }
        Statement::Distributed(query) if request.explain => {
            send(replies, statement_reply::Kind::End(end(query.explain))).await?;
        }
        Statement::Distributed(query) => {
            let id = format!("query-{}", attempt_id());
            let sink = SinkSpec::Results {
                dir: results_dir(&id),
            };
            // Shuffle and result files go, however the query ends, even
            // when the client hanging up drops this future.
            let _cleanup = QueryFiles {
                ws: master.ws.clone(),
                id: id.clone(),
                sink: sink.clone(),
            };
            run_query(master, &id, &query, &sink, replies).await?;
        }
    }
    Ok(())
}

fn results_dir(query_id: &str) -> String {
    format!("{SPATE_DIR}/queries/{query_id}")
}

/// Removes a query's files when dropped.
struct QueryFiles {
    ws: spate_engine::Workspace,
    id: String,
    sink: SinkSpec,
}

impl Drop for QueryFiles {
    fn drop(&mut self) {
        let (ws, id, sink) = (self.ws.clone(), self.id.clone(), self.sink.clone());
        tokio::spawn(async move {
            let _ = sink.open(&ws, &id).reset().await;
            let _ = spate_engine::shuffle::remove_job(&ws, &id).await;
        });
    }
}

/// Runs a query's stages as one batch and streams the last stage's rows,
/// in task order.
async fn run_query(
    master: &Master,
    id: &str,
    query: &PlannedQuery,
    sink: &SinkSpec,
    replies: &ReplySender,
) -> Result<(), WriteError> {
    let ranges = match &query.source {
        Some(source) => snapshot(source).await?,
        None => Vec::new(),
    };
    let tasks: std::sync::Arc<dyn crate::cluster::TaskRunner> =
        std::sync::Arc::new(std::sync::Arc::clone(&master.cluster));
    let stages = BatchStages {
        tasks: tasks.as_ref(),
        job_id: id,
        batch: 0,
        watermark_ms: None,
        sink,
        max_task_failures: spate_config::settings().query.max_task_failures.max(1),
        ranges: &ranges,
        source_tasks: Some(master.cluster.alive_slots()),
    };
    let mut committed = std::collections::BTreeMap::new();
    let mut parts = Vec::new();
    let mut tasks_run = 0;
    for stage in &query.stages {
        let done = stages
            .run_stage(stage, &committed)
            .await
            .map_err(|why| EngineError::execution(format!("the query failed: {why}")))?;
        tasks_run += done.tasks.len() as u32;
        parts = done.sink_parts();
        committed.insert(stage.id, done.stems);
    }
    let results = ResultsSink::new(master.ws.clone(), results_dir(id));
    let mut result = ResultWriter::new(replies, &query.schema)?;
    for batch in results.rows(&parts).await? {
        result.write(&batch).await?;
    }
    let end = ResultEnd {
        stages: query.stages.len() as u32,
        tasks: tasks_run,
        ..ResultEnd::default()
    };
    result.finish(end).await
}

/// A Kafka table as a query reads it: from the table's start (earliest,
/// unless it names offsets) to the partitions' ends now.
async fn snapshot(source: &spate_engine::kafka::KafkaSourceSpec) -> Result<Vec<OffsetRange>> {
    let admin = KafkaAdmin::for_source(source);
    let mut spec = source.clone();
    if spec.starting_offsets == StartingOffsets::Latest {
        // A stream's 'latest' start means "from now on"; a query asks about
        // what is there.
        spec.starting_offsets = StartingOffsets::Earliest;
    }
    Ok(admin
        .partition_offsets(&source.topic)
        .await?
        .into_iter()
        .map(|p| OffsetRange {
            topic: source.topic.clone(),
            partition: p.partition,
            start: starting_offset(&spec, p.partition, p.low, p.high).max(p.low),
            end: p.high,
        })
        .collect())
}

/// Follows a file-sink job's committed batches, one result each.
pub async fn tail_job(master: &Master, request: TailJobRequest, replies: ReplySender) {
    if let Err(WriteError::Failed(e)) = tail(master, &request, &replies).await {
        let _ = replies.send(Err(e.into())).await;
    }
}

async fn tail(
    master: &Master,
    request: &TailJobRequest,
    replies: &ReplySender,
) -> Result<(), WriteError> {
    let job = &request.job_id;
    let Some((spec, _)) = master.jobs.sink_of(job) else {
        return Err(EngineError::NotFound(format!("no job '{job}' (\\jobs lists them)")).into());
    };
    let sink = spec.open(&master.ws, job);
    let mut next = match u64::try_from(request.from_batch) {
        Ok(batch) => batch,
        Err(_) => sink.latest_committed().await?.unwrap_or(0),
    };
    loop {
        let state = master.jobs.sink_of(job).map(|(_, state)| state);
        for (batch, rows) in sink.read_committed(next).await? {
            next = batch + 1;
            let Some(first) = rows.first() else {
                continue;
            };
            let mut result = ResultWriter::new(replies, &first.schema())?;
            for part in &rows {
                result.write(part).await?;
            }
            let end = ResultEnd {
                title: format!("batch {batch}"),
                ..ResultEnd::default()
            };
            result.finish(end).await?;
        }
        if let Some(state) = state.filter(|s| !s.is_active()) {
            let end = ResultEnd {
                message: format!("job {job} is {}", state.name()),
                ..ResultEnd::default()
            };
            send(replies, statement_reply::Kind::End(end)).await?;
            return Ok(());
        }
        if replies.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(TAIL_POLL).await;
    }
}
