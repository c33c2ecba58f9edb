//! The master's gRPC services: the workers' stream and the clients' calls.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use spate_engine::task::TaskOutcome;
use spate_engine::wire;

use crate::jobs::StopRequest;
use spate_proto::client_service_server::ClientService;
use spate_proto::worker_service_server::WorkerService;
use spate_proto::{
    JobInfo, ListJobsRequest, ListJobsResponse, ListWorkersRequest, ListWorkersResponse,
    MasterMessage, Registered, RunStatementRequest, StatementReply, StopJobRequest,
    StopJobResponse, SubmitJobRequest, SubmitJobResponse, TailJobRequest, TaskState, WorkerInfo,
    WorkerMessage, master_message, worker_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Master;
use crate::cluster::{TaskEnd, TaskFailure};

/// How long a new session may stay silent before its registration.
const REGISTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Messages a worker's stream may hold before the master stops pushing.
const WORKER_QUEUE: usize = 1024;

pub struct WorkerApi(pub Arc<Master>);
pub struct ClientApi(pub Arc<Master>);

type MasterStream = Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send>>;
type ReplyStream = Pin<Box<dyn Stream<Item = Result<StatementReply, Status>> + Send>>;

/// Replies a statement may queue before the master waits for the client.
const REPLY_QUEUE: usize = 16;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type SessionStream = MasterStream;

    async fn session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "a worker must register within {} s of opening its session",
                    REGISTER_TIMEOUT.as_secs()
                ))
            })??
            .ok_or_else(|| Status::invalid_argument("the stream closed before registering"))?;
        let Some(worker_message::Kind::Register(register)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message must register the worker",
            ));
        };
        if register.protocol_version != spate_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "worker speaks protocol {}, this master {}; run the same Spate version on both",
                register.protocol_version,
                spate_proto::PROTOCOL_VERSION
            )));
        }
        let (sender, outbound) = mpsc::channel(WORKER_QUEUE);
        sender
            .send(Ok(MasterMessage {
                kind: Some(master_message::Kind::Registered(Registered {
                    heartbeat_interval_ms: self.0.config.heartbeat_interval.as_millis() as u64,
                })),
            }))
            .await
            .map_err(|_| Status::internal("worker stream closed"))?;
        let worker_id = register.worker_id.clone();
        let cluster = Arc::clone(&self.0.cluster);
        let connection = cluster.register(
            &worker_id,
            &register.host,
            register.slots.max(1),
            register.memory_bytes,
            sender,
        );
        tracing::info!(
            worker = worker_id,
            host = register.host,
            slots = register.slots,
            "worker registered"
        );
        tokio::spawn(async move {
            let why = loop {
                match inbound.next().await {
                    None => break "its stream closed".to_string(),
                    Some(Err(e)) => break format!("its stream failed: {}", e.message()),
                    Some(Ok(message)) => match message.kind {
                        Some(worker_message::Kind::Heartbeat(beat)) => {
                            cluster.heartbeat(&worker_id, &beat.running_task_ids);
                        }
                        Some(worker_message::Kind::TaskUpdate(update)) => {
                            cluster.heartbeat_seen(&worker_id);
                            if let Some(end) = task_end(update.state, update.result, update.failure)
                            {
                                cluster.task_ended(&worker_id, &update.task_id, end);
                            }
                        }
                        _ => cluster.heartbeat_seen(&worker_id),
                    },
                }
            };
            cluster.worker_lost(&worker_id, Some(connection), &why);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }
}

/// How a task ended, from its update; none for an update that ends nothing.
fn task_end(
    state: i32,
    result: Option<spate_proto::TaskResult>,
    failure: Option<spate_proto::Failure>,
) -> Option<TaskEnd> {
    Some(match TaskState::try_from(state).ok()? {
        TaskState::Succeeded => TaskEnd::Succeeded(TaskOutcome::from(result.unwrap_or_default())),
        TaskState::Failed => {
            let failure = failure.unwrap_or_default();
            TaskEnd::Failed(TaskFailure {
                kind: wire::error_kind(failure.kind),
                message: failure.message,
                retryable: failure.retryable,
                count_to_failures: failure.count_to_failures,
            })
        }
        TaskState::Cancelled => TaskEnd::Cancelled,
        TaskState::Running | TaskState::Unspecified => return None,
    })
}

impl ClientApi {
    /// A stream of replies that `produce` sends from a task of its own: a
    /// client hanging up mid-query must not leave the query's shuffle and
    /// result files behind.
    fn replies<F, Fut>(&self, produce: F) -> Response<ReplyStream>
    where
        F: FnOnce(Arc<Master>, crate::query::ReplySender) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (replies, stream) = mpsc::channel(REPLY_QUEUE);
        tokio::spawn(produce(Arc::clone(&self.0), replies));
        Response::new(Box::pin(ReceiverStream::new(stream)))
    }
}

#[tonic::async_trait]
impl ClientService for ClientApi {
    type RunStatementStream = ReplyStream;
    type TailJobStream = ReplyStream;

    async fn run_statement(
        &self,
        request: Request<RunStatementRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let request = request.into_inner();
        self.0
            .config
            .limits
            .check_sql("statement", &request.statement)?;
        let permit = Arc::clone(&self.0.queries)
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "{} interactive queries already run on this cluster, its limit \
                     (master.max_queries); try again when one ends",
                    self.0.config.limits.max_queries
                ))
            })?;
        Ok(self.replies(|master, replies| async move {
            crate::query::run_statement(&master, request, replies).await;
            drop(permit);
        }))
    }

    async fn tail_job(
        &self,
        request: Request<TailJobRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let request = request.into_inner();
        Ok(self.replies(|master, replies| async move {
            crate::query::tail_job(&master, request, replies).await
        }))
    }

    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let request = request.into_inner();
        self.0.config.limits.check_sql("job's SQL", &request.sql)?;
        let (job_id, resumed) = self
            .0
            .submit(&request.sql, &request.name, request.fresh)
            .await?;
        Ok(Response::new(SubmitJobResponse { job_id, resumed }))
    }

    async fn list_jobs(
        &self,
        _request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let jobs = self
            .0
            .jobs
            .views()
            .into_iter()
            .map(|j| JobInfo {
                job_id: j.id,
                name: j.name,
                state: j.state.wire() as i32,
                activity: j.activity,
                sink: j.sink,
                batches: j.batches,
                input_rows: j.input_rows,
                output_rows: j.output_rows,
                error: j.error,
                submitted_at_ms: j.submitted_ms,
                sql: j.sql,
            })
            .collect();
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    async fn stop_job(
        &self,
        request: Request<StopJobRequest>,
    ) -> Result<Response<StopJobResponse>, Status> {
        let request = request.into_inner();
        let how = if request.kill {
            StopRequest::Now
        } else {
            StopRequest::AfterBatch
        };
        if !self.0.jobs.request_stop(&request.job_id, how) {
            return Err(Status::not_found(format!(
                "no job '{}' (driver jobs lists them)",
                request.job_id
            )));
        }
        Ok(Response::new(StopJobResponse {}))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        let workers = self
            .0
            .cluster
            .workers()
            .into_iter()
            .map(|w| WorkerInfo {
                worker_id: w.id,
                host: w.host,
                state: w.state.wire() as i32,
                slots: w.slots,
                slots_used: w.slots_used,
                memory_bytes: w.memory_bytes,
                last_heartbeat_ms: w.last_heartbeat_ms,
                tasks_succeeded: w.tasks_succeeded,
                tasks_failed: w.tasks_failed,
            })
            .collect();
        Ok(Response::new(ListWorkersResponse { workers }))
    }
}
