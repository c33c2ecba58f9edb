//! The controller's protocol without a cluster: Kafka's offsets and the
//! tasks' ends are scripted, while the workspace, the checkpoint, the job
//! registry and the file sink are the real ones. Each test names the states
//! a job goes through and checks what the logs and the sink hold after.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use spate_engine::checkpoint::{Checkpoint, CommitEntry, OffsetsEntry};
use spate_engine::job::{PlanEnv, plan_job};
use spate_engine::kafka::PartitionOffsets;
use spate_engine::sink::Attempt;
use spate_engine::task::{TaskOutcome, TaskSpec};
use spate_engine::{EngineError, ErrorKind, OffsetRange, Workspace};
use tokio::sync::oneshot;

use super::states::Submitting;
use super::{JobContext, OffsetSource, TopicLatest, run};
use crate::cluster::{TaskEnd, TaskFailure, TaskHandle, TaskRunner};
use crate::jobs::{JobState, Jobs, StopRequest};

/// How a scripted task ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Script {
    /// Writes its ids (the offsets of its range) to the sink and succeeds.
    Succeed,
    Fail {
        retryable: bool,
    },
    Lose,
    /// Runs until cancelled.
    Hang,
}

type Decide = dyn Fn(&TaskSpec, usize) -> Script + Send + Sync;

/// Tasks whose ends a test decides: by the task and how many were launched before.
struct ScriptedTasks {
    ws: Workspace,
    decide: Box<Decide>,
    launched: Mutex<Vec<TaskSpec>>,
    cancelled: Arc<Mutex<Vec<String>>>,
    hanging: Arc<AtomicUsize>,
    /// Replies of hanging tasks, kept so that they stay pending.
    held: Mutex<Vec<oneshot::Sender<TaskEnd>>>,
}

impl ScriptedTasks {
    fn new(
        ws: &Workspace,
        decide: impl Fn(&TaskSpec, usize) -> Script + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(ScriptedTasks {
            ws: ws.clone(),
            decide: Box::new(decide),
            launched: Mutex::default(),
            cancelled: Arc::default(),
            hanging: Arc::default(),
            held: Mutex::default(),
        })
    }

    fn launched(&self) -> Vec<TaskSpec> {
        self.launched.lock().unwrap().clone()
    }

    fn cancelled(&self) -> Vec<String> {
        self.cancelled.lock().unwrap().clone()
    }
}

/// The ids a task of `ranges` writes: each offset once.
fn ids(ranges: &[OffsetRange]) -> RecordBatch {
    let ids: Int64Array = ranges.iter().flat_map(|r| r.start..r.end).collect();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(ids)]).unwrap()
}

impl TaskRunner for Arc<ScriptedTasks> {
    fn launch(&self, spec: TaskSpec) -> TaskHandle {
        let before = {
            let mut launched = self.launched.lock().unwrap();
            launched.push(spec.clone());
            launched.len() - 1
        };
        let id = format!("{}-{}-{}", spec.batch_id, spec.task_index, spec.attempt_id);
        let (reply, ended) = oneshot::channel();
        let script = (self.decide)(&spec, before);
        let cancelled = Arc::clone(&self.cancelled);
        let hanging = Arc::clone(&self.hanging);
        let cancel_id = id.clone();
        let handle = TaskHandle::new(
            ended,
            Box::new(move || {
                cancelled.lock().unwrap().push(cancel_id);
                if script == Script::Hang {
                    hanging.fetch_sub(1, Ordering::SeqCst);
                }
            }),
        );
        match script {
            Script::Succeed => {
                let ws = self.ws.clone();
                tokio::spawn(async move {
                    let batch = ids(&spec.ranges);
                    let attempt = Attempt {
                        batch: spec.batch_id,
                        task_index: spec.task_index,
                        attempt_id: spec.attempt_id.clone(),
                    };
                    let part = spec
                        .sink
                        .open(&ws, &spec.job_id)
                        .write(&attempt, batch.schema(), &[batch])
                        .await
                        .unwrap();
                    let rows: u64 = spec.ranges.iter().map(OffsetRange::len).sum();
                    let _ = reply.send(TaskEnd::Succeeded(TaskOutcome {
                        input_rows: rows,
                        output_rows: part.rows,
                        sink_part: Some(part),
                        ..TaskOutcome::default()
                    }));
                });
            }
            Script::Fail { retryable } => {
                let _ = reply.send(TaskEnd::Failed(TaskFailure {
                    kind: if retryable {
                        ErrorKind::Execution
                    } else {
                        ErrorKind::Plan
                    },
                    message: "boom".to_string(),
                    retryable,
                    count_to_failures: true,
                }));
            }
            Script::Lose => {
                let _ = reply.send(TaskEnd::Lost("its worker vanished".to_string()));
            }
            Script::Hang => {
                self.hanging.fetch_add(1, Ordering::SeqCst);
                self.held.lock().unwrap().push(reply);
            }
        }
        handle
    }

    fn tasks_in_flight(&self, _job: &str) -> usize {
        self.hanging.load(Ordering::SeqCst)
    }

    /// Two, so that a source task reads several partitions.
    fn slots(&self) -> usize {
        2
    }
}

/// Kafka's answers in turn; the last one repeats.
struct ScriptedOffsets(Mutex<VecDeque<Result<Vec<TopicLatest>, String>>>);

/// Topic `sales` with one partition holding `[0, high)`.
fn sales(high: i64) -> Vec<TopicLatest> {
    vec![TopicLatest {
        topic: "sales".into(),
        partitions: vec![PartitionOffsets {
            partition: 0,
            low: 0,
            high,
        }],
    }]
}

impl ScriptedOffsets {
    fn new(answers: Vec<Result<i64, &str>>) -> Arc<Self> {
        Arc::new(ScriptedOffsets(Mutex::new(
            answers
                .into_iter()
                .map(|a| a.map(sales).map_err(str::to_string))
                .collect(),
        )))
    }

    /// From now on Kafka answers `high`.
    fn set(&self, high: i64) {
        let mut answers = self.0.lock().unwrap();
        answers.clear();
        answers.push_back(Ok(sales(high)));
    }
}

#[async_trait::async_trait]
impl OffsetSource for ScriptedOffsets {
    async fn latest(&self) -> Result<Vec<TopicLatest>, EngineError> {
        let mut answers = self.0.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers.front().cloned().unwrap()
        };
        answer.map_err(|message| EngineError::Kafka {
            bootstrap: "scripted:9092".into(),
            message,
        })
    }
}

fn job_sql(options: &str) -> String {
    format!(
        "CREATE EXTERNAL TABLE sales (id BIGINT) STORED AS KAFKA LOCATION 'sales'
           OPTIONS ('bootstrap.servers' 'scripted:9092');
         CREATE EXTERNAL TABLE out (id BIGINT) STORED AS PARQUET LOCATION 'out/';
         SET spate.trigger.interval = '10ms';
         {options}
         INSERT INTO out SELECT id FROM sales;"
    )
}

/// A controller for job "j" of `master`, not yet started.
struct Harness {
    ws: Workspace,
    jobs: Arc<Jobs>,
    tasks: Arc<ScriptedTasks>,
}

impl Harness {
    fn new(ws: &Workspace, tasks: Arc<ScriptedTasks>) -> Self {
        Harness {
            ws: ws.clone(),
            jobs: Arc::new(Jobs::new(ws.clone())),
            tasks,
        }
    }

    /// Submits the job as a client would; the answer is what the client
    /// hears, the join handle gives the controller's context at its end.
    async fn submit(
        &self,
        sql: &str,
        offsets: Arc<ScriptedOffsets>,
        master: &str,
    ) -> (
        Result<bool, EngineError>,
        tokio::task::JoinHandle<JobContext>,
    ) {
        let env = PlanEnv::new(self.ws.clone(), "scripted:9092");
        let planned = plan_job(&env, sql, "j").await.unwrap();
        let reservation = self.jobs.reserve("j", &planned, None).unwrap();
        let sink = planned.sink.open(&self.ws, "j");
        let tasks: Arc<dyn TaskRunner> = Arc::new(Arc::clone(&self.tasks));
        let ctx = JobContext::new(
            planned,
            env,
            sink,
            offsets,
            tasks,
            Arc::clone(&self.jobs),
            reservation,
            master,
        );
        let (admission, admitted) = oneshot::channel();
        let first = Submitting {
            fresh: false,
            admission: Some(admission),
        };
        let handle = tokio::spawn(run(ctx, Box::new(first)));
        let answer = admitted.await.unwrap();
        (answer, handle)
    }

    fn state(&self) -> (JobState, String) {
        let view = self.jobs.views().into_iter().find(|v| v.id == "j").unwrap();
        (view.state, view.error)
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
        for _ in 0..1000 {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("gave up waiting for {what}");
    }
}

/// The ids the sink's committed files hold, sorted.
async fn committed_ids(ws: &Workspace) -> Vec<i64> {
    let ctx = datafusion::prelude::SessionContext::new();
    let Some(files) = spate_engine::files::committed_files(ws, "out")
        .await
        .unwrap()
    else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for file in files {
        let path = ws.local_root().unwrap().join(&file).display().to_string();
        let batches = ctx
            .read_parquet(path, Default::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for batch in batches {
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            ids.extend(column.values().iter().copied());
        }
    }
    ids.sort_unstable();
    ids
}

fn states(ctx: &JobContext) -> Vec<&'static str> {
    ctx.visited.iter().copied().collect()
}

#[tokio::test]
async fn a_batch_goes_through_each_state_and_is_logged_once_by_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let harness = Harness::new(&ws, ScriptedTasks::new(&ws, |_, _| Script::Succeed));
    let sql = job_sql("SET spate.trigger.available_now = true;");
    let (admitted, controller) = harness
        .submit(&sql, ScriptedOffsets::new(vec![Ok(10)]), "m1")
        .await;
    assert!(!admitted.unwrap(), "a new job resumes nothing");
    let ctx = controller.await.unwrap();
    assert_eq!(
        states(&ctx),
        [
            "submitting",
            "idle",
            "offsets logged",
            "running stage",
            "sink committed",
            "idle",
            "finished"
        ]
    );
    let checkpoint = Checkpoint::new(&ws, "j");
    let logged: OffsetsEntry = checkpoint.offsets(0).await.unwrap().unwrap();
    assert_eq!(logged.ranges[0].end, 10);
    assert_eq!(logged.writer.as_ref(), Some(&ctx.writer));
    let commit: CommitEntry = ws
        .get_json("_spate/checkpoints/j/commits/0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((commit.input_rows, commit.output_rows), (10, 10));
    assert_eq!(commit.writer.as_ref(), Some(&ctx.writer));
    assert_eq!(committed_ids(&ws).await, (0..10).collect::<Vec<_>>());
    assert_eq!(harness.state().0, JobState::Finished);
    // The record says FINISHED, so a restarted master leaves the job be.
    let records = harness.jobs.load().await.unwrap();
    assert_eq!(records[0].state, JobState::Finished);
}

#[tokio::test]
async fn a_logged_batch_runs_again_with_exactly_its_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    // A controller before this one logged batch 0 and stopped (crashed)
    // before committing it; Kafka has more records now.
    let checkpoint = Checkpoint::new(&ws, "j");
    checkpoint
        .write_offsets(&OffsetsEntry {
            batch: 0,
            ranges: vec![OffsetRange {
                topic: "sales".into(),
                partition: 0,
                start: 0,
                end: 4,
            }],
            created_ms: 0,
            watermark_ms: None,
            source_tasks: None,
            skipped_records: 0,
            writer: None,
        })
        .await
        .unwrap();
    let tasks = ScriptedTasks::new(&ws, |_, _| Script::Succeed);
    let harness = Harness::new(&ws, Arc::clone(&tasks));
    let sql = job_sql("SET spate.trigger.available_now = true;");
    let (admitted, controller) = harness
        .submit(&sql, ScriptedOffsets::new(vec![Ok(10)]), "m1")
        .await;
    assert!(admitted.unwrap(), "the job resumes its checkpoint");
    controller.await.unwrap();
    let ranges: Vec<(u64, i64, i64)> = tasks
        .launched()
        .iter()
        .map(|t| (t.batch_id, t.ranges[0].start, t.ranges[0].end))
        .collect();
    assert_eq!(ranges, [(0, 0, 4), (1, 4, 10)]);
    assert_eq!(committed_ids(&ws).await, (0..10).collect::<Vec<_>>());
    // Batch 0 was logged without how many tasks share its ranges (a task
    // per range); batch 1 with the slots then, which a re-run keeps.
    assert_eq!(
        checkpoint.offsets(0).await.unwrap().unwrap().source_tasks,
        None
    );
    assert_eq!(
        checkpoint.offsets(1).await.unwrap().unwrap().source_tasks,
        Some(2)
    );
}

#[tokio::test]
async fn a_task_failing_by_its_own_error_is_retried_up_to_the_limit_then_fails_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let tasks = ScriptedTasks::new(&ws, |_, _| Script::Fail { retryable: true });
    let harness = Harness::new(&ws, Arc::clone(&tasks));
    let sql = job_sql("SET spate.task.max_failures = 3;");
    let (_, controller) = harness
        .submit(&sql, ScriptedOffsets::new(vec![Ok(5)]), "m1")
        .await;
    let ctx = controller.await.unwrap();
    assert_eq!(states(&ctx).last(), Some(&"failed"));
    assert_eq!(tasks.launched().len(), 3);
    let (state, error) = harness.state();
    assert_eq!(state, JobState::Failed);
    assert!(
        error.contains("task 0 of stage 1 of batch 0 (topic 'sales' partition 0 offsets 0..5) failed 3 times: boom"),
        "{error}"
    );
    assert!(
        Checkpoint::new(&ws, "j")
            .latest_commit()
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_failure_that_would_repeat_fails_the_job_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let tasks = ScriptedTasks::new(&ws, |_, _| Script::Fail { retryable: false });
    let harness = Harness::new(&ws, Arc::clone(&tasks));
    let (_, controller) = harness
        .submit(&job_sql(""), ScriptedOffsets::new(vec![Ok(5)]), "m1")
        .await;
    controller.await.unwrap();
    assert_eq!(tasks.launched().len(), 1);
    let (state, error) = harness.state();
    assert_eq!(state, JobState::Failed);
    assert!(
        error.contains("running it again would fail the same way: boom"),
        "{error}"
    );
}

#[tokio::test]
async fn a_lost_task_runs_again_without_counting_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let tasks = ScriptedTasks::new(&ws, |_, before| {
        if before < 2 {
            Script::Lose
        } else {
            Script::Succeed
        }
    });
    let harness = Harness::new(&ws, Arc::clone(&tasks));
    let sql = job_sql("SET spate.task.max_failures = 1; SET spate.trigger.available_now = true;");
    let (_, controller) = harness
        .submit(&sql, ScriptedOffsets::new(vec![Ok(6)]), "m1")
        .await;
    controller.await.unwrap();
    assert_eq!(harness.state().0, JobState::Finished);
    assert_eq!(tasks.launched().len(), 3);
    assert_eq!(committed_ids(&ws).await, (0..6).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_kill_cancels_the_running_tasks_and_keeps_the_batch_logged() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let tasks = ScriptedTasks::new(&ws, |_, _| Script::Hang);
    let harness = Harness::new(&ws, Arc::clone(&tasks));
    let (_, controller) = harness
        .submit(&job_sql(""), ScriptedOffsets::new(vec![Ok(5)]), "m1")
        .await;
    harness
        .wait_for("the batch's task to run", |h| {
            h.tasks.hanging.load(Ordering::SeqCst) == 1
        })
        .await;
    assert!(harness.jobs.request_stop("j", StopRequest::Now));
    let ctx = controller.await.unwrap();
    assert_eq!(&states(&ctx)[3..], ["running stage", "stopping", "stopped"]);
    assert_eq!(tasks.cancelled().len(), 1, "the running task is cancelled");
    assert_eq!(harness.state().0, JobState::Stopped);
    let checkpoint = Checkpoint::new(&ws, "j");
    assert!(
        checkpoint.offsets(0).await.unwrap().is_some(),
        "batch 0 stays logged, to re-run"
    );
    assert!(checkpoint.latest_commit().await.unwrap().is_none());
}

#[tokio::test]
async fn an_unreachable_kafka_makes_the_job_wait_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let harness = Harness::new(&ws, ScriptedTasks::new(&ws, |_, _| Script::Succeed));
    let offsets = ScriptedOffsets::new(vec![Ok(3), Err("broker down"), Err("broker down")]);
    let (admitted, controller) = harness
        .submit(&job_sql(""), Arc::clone(&offsets), "m1")
        .await;
    admitted.unwrap();
    harness
        .wait_for("the job to wait for Kafka", |h| {
            h.state().0 == JobState::Waiting
        })
        .await;
    assert!(
        harness.state().1.contains("broker down; retrying in"),
        "{:?}",
        harness.state()
    );
    offsets.set(8);
    harness
        .wait_for("the job to run again", |h| h.state().0 == JobState::Running)
        .await;
    let checkpoint = Checkpoint::new(&ws, "j");
    for _ in 0..500 {
        if checkpoint
            .latest_commit()
            .await
            .unwrap()
            .is_some_and(|c| c.total_input_rows == 8)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    harness.jobs.request_stop("j", StopRequest::AfterBatch);
    let ctx = controller.await.unwrap();
    assert!(states(&ctx).contains(&"idle"));
    assert_eq!(committed_ids(&ws).await, (0..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_submission_for_a_missing_topic_is_refused_and_leaves_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let harness = Harness::new(&ws, ScriptedTasks::new(&ws, |_, _| Script::Succeed));
    struct NoTopic;
    #[async_trait::async_trait]
    impl OffsetSource for NoTopic {
        async fn latest(&self) -> Result<Vec<TopicLatest>, EngineError> {
            Err(EngineError::UnknownTopic {
                bootstrap: "scripted:9092".into(),
                topic: "sales".into(),
            })
        }
    }
    let env = PlanEnv::new(ws.clone(), "scripted:9092");
    let planned = plan_job(&env, &job_sql(""), "j").await.unwrap();
    let reservation = harness.jobs.reserve("j", &planned, None).unwrap();
    // While the submission is checked, a second one of the same job is refused.
    let again = harness.jobs.reserve("j", &planned, None).err().unwrap();
    assert!(
        again.to_string().contains("job 'j' is already submitting"),
        "{again}"
    );
    // Past the cluster's limit of jobs, another is refused, and says which setting.
    let over = harness.jobs.reserve("k", &planned, Some(1)).err().unwrap();
    assert!(matches!(over, crate::MasterError::Limit(_)), "{over}");
    assert!(over.to_string().contains("master.max_jobs"), "{over}");
    assert_eq!(
        tonic::Status::from(over).code(),
        tonic::Code::ResourceExhausted
    );
    let tasks: Arc<dyn TaskRunner> = Arc::new(Arc::clone(&harness.tasks));
    let ctx = JobContext::new(
        planned.clone(),
        env,
        planned.sink.open(&ws, "j"),
        Arc::new(NoTopic),
        tasks,
        Arc::clone(&harness.jobs),
        reservation,
        "m1",
    );
    let (admission, admitted) = oneshot::channel();
    let ctx = run(
        ctx,
        Box::new(Submitting {
            fresh: false,
            admission: Some(admission),
        }),
    )
    .await;
    let refusal = admitted.await.unwrap().unwrap_err();
    assert!(
        refusal.to_string().contains("topic 'sales' does not exist"),
        "{refusal}"
    );
    assert_eq!(states(&ctx), ["submitting", "refused"]);
    drop(ctx);
    assert!(
        harness.jobs.views().is_empty(),
        "a refused job leaves nothing"
    );
}

#[tokio::test]
async fn a_second_controller_of_a_job_stops_at_its_first_write_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    // Master 1 commits batches while Kafka answers, then loses Kafka.
    let first = Harness::new(&ws, ScriptedTasks::new(&ws, |_, _| Script::Succeed));
    let first_offsets = ScriptedOffsets::new(vec![Ok(4)]);
    let (_, first_controller) = first
        .submit(&job_sql(""), Arc::clone(&first_offsets), "m1")
        .await;
    let checkpoint = Checkpoint::new(&ws, "j");
    for _ in 0..500 {
        if checkpoint.latest_commit().await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first_offsets.0.lock().unwrap().clear();
    first_offsets
        .0
        .lock()
        .unwrap()
        .push_back(Err("partitioned away".into()));
    first
        .wait_for("master 1 to wait", |h| h.state().0 == JobState::Waiting)
        .await;

    // Master 2, on the same workspace, runs the same job and commits batch 1.
    let second = Harness::new(&ws, ScriptedTasks::new(&ws, |_, _| Script::Succeed));
    let (admitted, second_controller) = second
        .submit(&job_sql(""), ScriptedOffsets::new(vec![Ok(9)]), "m2")
        .await;
    assert!(admitted.unwrap());
    for _ in 0..500 {
        if checkpoint
            .latest_commit()
            .await
            .unwrap()
            .is_some_and(|c| c.batch >= 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Master 1's Kafka is back: batch 1, which it meant to log, is
    // committed by master 2, so master 1 stops before writing anything.
    first_offsets.set(9);
    let ctx = first_controller.await.unwrap();
    assert_eq!(states(&ctx).last(), Some(&"failed"));
    let (state, error) = first.state();
    assert_eq!(state, JobState::Failed);
    assert!(
        error.contains("commits/1 of _spate/checkpoints/j was written by controller")
            && error.contains("of master m2: another controller runs this job"),
        "{error}"
    );
    // Master 1 leaves the job's record to master 2.
    assert_eq!(
        second.jobs.load().await.unwrap()[0].state,
        JobState::Running
    );
    assert_eq!(second.state().0, JobState::Running);
    second.jobs.request_stop("j", StopRequest::AfterBatch);
    second_controller.await.unwrap();
    assert_eq!(committed_ids(&ws).await, (0..9).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_job_starting_at_the_latest_offsets_reads_what_comes_after_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let tasks = ScriptedTasks::new(&ws, |_, _| Script::Succeed);
    let harness = Harness::new(&ws, Arc::clone(&tasks));
    let sql = job_sql("").replace(
        "OPTIONS ('bootstrap.servers' 'scripted:9092')",
        "OPTIONS ('bootstrap.servers' 'scripted:9092', 'starting_offsets' 'latest')",
    );
    // Five records before the job starts, eight a moment later.
    let offsets = ScriptedOffsets::new(vec![Ok(5), Ok(5), Ok(5), Ok(8)]);
    let (_, controller) = harness.submit(&sql, offsets, "m1").await;
    let checkpoint = Checkpoint::new(&ws, "j");
    for _ in 0..500 {
        if checkpoint.latest_commit().await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    harness.jobs.request_stop("j", StopRequest::AfterBatch);
    controller.await.unwrap();
    let ranges: Vec<(i64, i64)> = tasks
        .launched()
        .iter()
        .map(|t| (t.ranges[0].start, t.ranges[0].end))
        .collect();
    assert_eq!(ranges, [(5, 8)]);
    assert_eq!(committed_ids(&ws).await, (5..8).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_long_running_job_keeps_the_metadata_of_its_last_batches_only() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Workspace::open(dir.path()).unwrap();
    let harness = Harness::new(&ws, ScriptedTasks::new(&ws, |_, _| Script::Succeed));
    // A batch each time Kafka's end moves: eight batches of one record.
    let offsets = ScriptedOffsets::new((1..=8).map(Ok).collect());
    let sql = job_sql("SET spate.checkpoint.retained_batches = 3;");
    let (_, controller) = harness.submit(&sql, Arc::clone(&offsets), "m1").await;
    let checkpoint = Checkpoint::new(&ws, "j");
    let mut last = None;
    for _ in 0..1000 {
        last = checkpoint.latest_commit().await.unwrap();
        if last.as_ref().is_some_and(|c| c.total_input_rows == 8) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    harness.jobs.request_stop("j", StopRequest::AfterBatch);
    controller.await.unwrap();
    // Kafka may move twice between two looks: at least five batches ran.
    let n = last.expect("a commit").batch;
    assert!(n >= 4, "{n} batches");
    let kept =
        |suffix: &str| -> Vec<String> { (n - 2..=n).map(|b| format!("{b}{suffix}")).collect() };

    let names = |folder: &str| {
        let mut names: Vec<String> = std::fs::read_dir(ws.local_root().unwrap().join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("_spate/checkpoints/j/offsets"), kept(""));
    assert_eq!(names("_spate/checkpoints/j/commits"), kept(""));
    assert_eq!(names("_spate/jobs/j/progress"), kept(".json"));
    assert_eq!(committed_ids(&ws).await, (0..8).collect::<Vec<_>>());

    // A controller behind the retained batches cannot write one again.
    let stale = OffsetsEntry {
        batch: 2,
        ..checkpoint.offsets(n).await.unwrap().unwrap()
    };
    let refused = checkpoint.write_offsets(&stale).await.unwrap_err();
    assert!(
        refused.to_string().contains(&format!(
            "offsets/{n} of _spate/checkpoints/j is past batch 2"
        )),
        "{refused}"
    );

    // Resubmitted, the job goes on at the next batch with its totals.
    let again = Harness::new(&ws, ScriptedTasks::new(&ws, |_, _| Script::Succeed));
    let (_, controller) = again
        .submit(&sql, ScriptedOffsets::new(vec![Ok(10)]), "m1")
        .await;
    for _ in 0..500 {
        if checkpoint
            .latest_commit()
            .await
            .unwrap()
            .is_some_and(|c| c.batch == n + 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    again.jobs.request_stop("j", StopRequest::AfterBatch);
    controller.await.unwrap();
    let last = checkpoint.latest_commit().await.unwrap().unwrap();
    assert_eq!((last.batch, last.total_input_rows), (n + 1, 10));
    let kept: Vec<String> = (n - 1..=n + 1).map(|b| b.to_string()).collect();
    assert_eq!(names("_spate/checkpoints/j/commits"), kept);
    assert_eq!(committed_ids(&ws).await, (0..10).collect::<Vec<_>>());
}
