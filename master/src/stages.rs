//! Running one batch's stages on the cluster, shared by streaming jobs
//! (batch after batch) and interactive queries (one batch): which tasks a
//! stage has, and running each until it succeeds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use spate_engine::OffsetRange;
use spate_engine::job::{PlannedStage, SinkSpec};
use spate_engine::shuffle::file_stem;
use spate_engine::task::{TaskOutcome, TaskSpec};

use crate::cluster::{Cluster, TaskEnd};

/// One batch of a job (or a query) as it runs on the cluster.
pub struct BatchStages<'a> {
    pub cluster: &'a Cluster,
    pub job_id: &'a str,
    pub batch: u64,
    pub watermark_ms: Option<i64>,
    pub sink: &'a SinkSpec,
    /// Failures of one task, by its own error, before the batch fails.
    pub max_task_failures: u32,
    /// Kafka ranges of the batch; the source stage runs one task per
    /// non-empty range.
    pub ranges: &'a [OffsetRange],
    /// Per stage run so far, the attempts whose shuffle files count.
    pub committed: BTreeMap<u32, Vec<String>>,
    /// Time spent preparing tasks, for progress's query planning.
    pub placing_ms: u64,
}

/// A task that ended well: what it did, and how long it spent outside its
/// worker's execution (waiting for a slot and travelling).
pub struct TaskDone {
    pub outcome: TaskOutcome,
    pub delay_ms: u64,
}

/// Where one task of a stage sits: its index, and what it reads.
struct TaskPlace {
    index: u32,
    ranges: Vec<OffsetRange>,
    /// The shuffle partition it reads and keeps state for, or the
    /// partition of a file scan it runs.
    partition: u32,
    inputs: Vec<(u32, Vec<String>)>,
}

impl BatchStages<'_> {
    /// Runs a stage's tasks at once, in task order; the error says which
    /// task failed too often, and why.
    pub async fn run_stage(&mut self, stage: &PlannedStage) -> Result<Vec<TaskDone>, String> {
        let placing = Instant::now();
        let places = self.places(stage);
        self.placing_ms += millis(placing.elapsed());
        let ended = join_all(places.into_iter().map(|place| self.run_task(stage, place))).await;
        let stems = self.committed.entry(stage.id).or_default();
        let mut done = Vec::with_capacity(ended.len());
        for end in ended {
            let (task, stem) = end?;
            stems.push(stem);
            done.push(task);
        }
        Ok(done)
    }

    fn places(&self, stage: &PlannedStage) -> Vec<TaskPlace> {
        if stage.reads.is_empty() && !stage.reads_files {
            return self
                .ranges
                .iter()
                .filter(|r| !r.is_empty())
                .enumerate()
                .map(|(index, range)| TaskPlace {
                    index: index as u32,
                    ranges: vec![range.clone()],
                    partition: 0,
                    inputs: Vec::new(),
                })
                .collect();
        }
        // One task per partition: of the shuffle it reads, or of its file scans.
        let inputs: Vec<(u32, Vec<String>)> = stage
            .reads
            .iter()
            .map(|s| (*s, self.committed.get(s).cloned().unwrap_or_default()))
            .collect();
        (0..stage.tasks as u32)
            .map(|p| TaskPlace {
                index: p,
                ranges: Vec::new(),
                partition: p,
                inputs: inputs.clone(),
            })
            .collect()
    }

    /// Runs one task until it succeeds, re-running it where its worker was
    /// lost and retrying its own failures up to the limit. Returns what it
    /// did and the file stem of its committed attempt.
    async fn run_task(
        &self,
        stage: &PlannedStage,
        place: TaskPlace,
    ) -> Result<(TaskDone, String), String> {
        let (job, batch, task_index) = (self.job_id, self.batch, place.index);
        let mut failures = 0;
        loop {
            let spec = TaskSpec {
                job_id: job.to_string(),
                batch_id: batch,
                attempt_id: attempt_id(),
                stage_id: stage.id,
                task_index,
                plan: stage.plan.clone(),
                ranges: place.ranges.clone(),
                partition: place.partition,
                shuffle_inputs: place.inputs.clone(),
                watermark_ms: self.watermark_ms,
                sink: self.sink.clone(),
            };
            let stem = file_stem(task_index, &spec.attempt_id);
            let submitted = Instant::now();
            match self.cluster.submit(spec).await {
                Ok(TaskEnd::Succeeded(outcome)) => {
                    let delay_ms = millis(submitted.elapsed()).saturating_sub(outcome.duration_ms);
                    return Ok((TaskDone { outcome, delay_ms }, stem));
                }
                Ok(TaskEnd::WorkerLost(why)) => {
                    tracing::warn!(
                        job,
                        batch,
                        stage = stage.id,
                        task_index,
                        "re-running task: {why}"
                    );
                }
                Ok(TaskEnd::Failed(why)) => {
                    failures += 1;
                    tracing::warn!(
                        job,
                        batch,
                        stage = stage.id,
                        task_index,
                        failures,
                        "task failed: {why}"
                    );
                    if failures >= self.max_task_failures {
                        let what = match place.ranges.first() {
                            Some(range) => format!(
                                "topic '{}' partition {} offsets {}..{}",
                                range.topic, range.partition, range.start, range.end
                            ),
                            None => format!("partition {}", place.partition),
                        };
                        return Err(format!(
                            "task {task_index} of stage {} of batch {batch} ({what}) failed {failures} times: {why}",
                            stage.id
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200 * failures as u64)).await;
                }
                Err(_) => return Err("the scheduler dropped the task".to_string()),
            }
        }
    }
}

pub fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Unique across master restarts, so attempts never share output file names.
pub fn attempt_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}
