//! Running one batch's stages on the cluster, shared by streaming jobs
//! (batch after batch) and interactive queries (one batch): which tasks a
//! stage has, and running each until it succeeds. Dropping a stage's
//! future cancels its tasks on the workers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use spate_engine::OffsetRange;
use spate_engine::job::{PlannedStage, SinkSpec};
use spate_engine::shuffle::file_stem;
use spate_engine::sink::SinkPart;
use spate_engine::task::{TaskOutcome, TaskSpec};

use crate::cluster::{TaskEnd, TaskRunner};

/// One batch of a job (or a query) as its stages run.
pub struct BatchStages<'a> {
    pub tasks: &'a dyn TaskRunner,
    pub job_id: &'a str,
    pub batch: u64,
    pub watermark_ms: Option<i64>,
    pub sink: &'a SinkSpec,
    /// Failures of one task, by its own error, before the batch fails.
    pub max_task_failures: u32,
    /// Kafka ranges of the batch, which the source stage's tasks share
    /// (see [`source_places`]).
    pub ranges: &'a [OffsetRange],
    /// How many tasks share them: the slots when the batch was logged;
    /// None for a batch logged before that was: a task per range.
    pub source_tasks: Option<usize>,
}

/// A task that ended well: what it did, and how long it spent outside its
/// worker's execution (waiting for a slot and travelling).
pub struct TaskDone {
    pub outcome: TaskOutcome,
    pub delay_ms: u64,
}

/// A stage that ran: its tasks in task order, and what else it left.
pub struct StageDone {
    pub tasks: Vec<TaskDone>,
    /// The counted attempts' shuffle file stems, in task order.
    pub stems: Vec<String>,
    /// Attempts that ran and did not count (failed, lost): what they
    /// wrote is left for the sink's clean-up.
    pub abandoned: u32,
    /// Time spent preparing the tasks.
    pub placing_ms: u64,
}

impl StageDone {
    /// What the stage's tasks wrote to the sink, in task order.
    pub fn sink_parts(&self) -> Vec<SinkPart> {
        self.tasks
            .iter()
            .filter_map(|t| t.outcome.sink_part.clone())
            .collect()
    }
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

/// A source stage's tasks: at most `tasks` (the slots when the batch was
/// logged), each reading its share of the topic's partitions (partition
/// `i` of the batch's ranges, in topic and partition order, goes to task
/// `i % tasks`); a task whose partitions have nothing new does not run.
///
/// One task per partition would make a stage-1 partial aggregation see a
/// partition's records alone, and a group's events spread over partitions
/// would each leave as a row of their own: the shuffle carried nearly a
/// row per event where a task reading many partitions merges them, as
/// each Flink source subtask reads several. The share is fixed by the
/// partition's place, not by its records, so that a partition goes back to
/// the same task, and the task to the worker that holds the partition's
/// Kafka consumer and what it fetched ahead.
fn source_places(ranges: &[OffsetRange], topic: Option<&str>, tasks: usize) -> Vec<TaskPlace> {
    let mut ranges: Vec<&OffsetRange> = ranges
        .iter()
        .filter(|r| topic.is_none_or(|t| r.topic == t))
        .collect();
    ranges.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let tasks = tasks.clamp(1, ranges.len().max(1));
    let mut places: Vec<TaskPlace> = (0..tasks as u32)
        .map(|index| TaskPlace {
            index,
            ranges: Vec::new(),
            partition: 0,
            inputs: Vec::new(),
        })
        .collect();
    for (i, range) in ranges.into_iter().enumerate() {
        places[i % tasks].ranges.push(range.clone());
    }
    // A task keeps its empty ranges (its scan skips them), so its first
    // range, by which the scheduler sends it back to the same worker, is
    // the same every batch.
    places.retain(|p| p.ranges.iter().any(|r| !r.is_empty()));
    places
}

/// A task per non-empty range, numbered in the batch's order: how batches
/// logged without `source_tasks` ran, and so run again.
fn task_per_range(ranges: &[OffsetRange], topic: Option<&str>) -> Vec<TaskPlace> {
    ranges
        .iter()
        .filter(|r| !r.is_empty())
        .filter(|r| topic.is_none_or(|t| r.topic == t))
        .enumerate()
        .map(|(index, range)| TaskPlace {
            index: index as u32,
            ranges: vec![range.clone()],
            partition: 0,
            inputs: Vec::new(),
        })
        .collect()
}

/// A task that ran to its end: success, and the attempts before it.
struct Ran {
    done: TaskDone,
    stem: String,
    abandoned: u32,
}

impl BatchStages<'_> {
    /// Runs a stage's tasks at once. `committed` holds, per stage run
    /// before, the attempts whose shuffle files count. The error says which
    /// task failed and why; the other tasks are cancelled then.
    pub async fn run_stage(
        &self,
        stage: &PlannedStage,
        committed: &BTreeMap<u32, Vec<String>>,
    ) -> Result<StageDone, String> {
        let placing = Instant::now();
        let places = self.places(stage, committed);
        let placing_ms = millis(placing.elapsed());
        let ran = try_join_all(places.into_iter().map(|place| self.run_task(stage, place))).await?;
        let mut done = StageDone {
            tasks: Vec::with_capacity(ran.len()),
            stems: Vec::with_capacity(ran.len()),
            abandoned: 0,
            placing_ms,
        };
        for task in ran {
            done.abandoned += task.abandoned;
            done.stems.push(task.stem);
            done.tasks.push(task.done);
        }
        Ok(done)
    }

    fn places(
        &self,
        stage: &PlannedStage,
        committed: &BTreeMap<u32, Vec<String>>,
    ) -> Vec<TaskPlace> {
        if stage.reads.is_empty() && !stage.reads_files {
            let topic = stage.topic.as_deref();
            return match self.source_tasks {
                Some(tasks) => source_places(self.ranges, topic, tasks),
                None => task_per_range(self.ranges, topic),
            };
        }
        // One task per partition: of the shuffle it reads, or of its file scans.
        let inputs: Vec<(u32, Vec<String>)> = stage
            .reads
            .iter()
            .map(|s| (*s, committed.get(s).cloned().unwrap_or_default()))
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

    /// Runs one task until it succeeds: again where it was lost, and
    /// again after its own retryable failures up to the limit.
    async fn run_task(&self, stage: &PlannedStage, place: TaskPlace) -> Result<Ran, String> {
        let (job, batch, task_index) = (self.job_id, self.batch, place.index);
        let mut failures = 0;
        let mut abandoned = 0;
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
            let why = match self.tasks.launch(spec).await {
                TaskEnd::Succeeded(outcome) => {
                    let delay_ms = millis(submitted.elapsed()).saturating_sub(outcome.duration_ms);
                    return Ok(Ran {
                        done: TaskDone { outcome, delay_ms },
                        stem,
                        abandoned,
                    });
                }
                TaskEnd::Lost(why) => {
                    tracing::warn!(
                        job,
                        batch,
                        stage = stage.id,
                        task_index,
                        "re-running task: {why}"
                    );
                    abandoned += 1;
                    continue;
                }
                TaskEnd::Cancelled => {
                    // Cancelled by someone else than this batch (a worker
                    // shutting down): like a loss, it runs again.
                    abandoned += 1;
                    continue;
                }
                TaskEnd::Failed(failure) => {
                    abandoned += 1;
                    if failure.count_to_failures {
                        failures += 1;
                    }
                    tracing::warn!(
                        job,
                        batch,
                        stage = stage.id,
                        task_index,
                        failures,
                        "task failed: {}",
                        failure.message
                    );
                    if failure.retryable && failures < self.max_task_failures {
                        tokio::time::sleep(Duration::from_millis(200 * failures as u64)).await;
                        continue;
                    }
                    let times = if failure.retryable {
                        format!("failed {failures} times")
                    } else {
                        "failed, and running it again would fail the same way".to_string()
                    };
                    format!("{times}: {}", failure.message)
                }
            };
            let read: Vec<String> = place
                .ranges
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| {
                    format!(
                        "topic '{}' partition {} offsets {}..{}",
                        r.topic, r.partition, r.start, r.end
                    )
                })
                .collect();
            let what = if read.is_empty() {
                format!("partition {}", place.partition)
            } else {
                read.join(", ")
            };
            return Err(format!(
                "task {task_index} of stage {} of batch {batch} ({what}) {why}",
                stage.id
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(topic: &str, partition: i32, records: i64) -> OffsetRange {
        OffsetRange {
            topic: topic.into(),
            partition,
            start: 10,
            end: 10 + records,
        }
    }

    /// Each task's `(topic, partition)`s, by task index.
    fn shares(places: &[TaskPlace]) -> Vec<(u32, Vec<i32>)> {
        places
            .iter()
            .map(|p| (p.index, p.ranges.iter().map(|r| r.partition).collect()))
            .collect()
    }

    #[test]
    fn a_source_stage_has_a_task_per_slot_reading_a_fixed_share_of_partitions() {
        // Out of order, one with nothing new, and another topic's.
        let ranges = [
            range("a", 4, 7),
            range("a", 1, 3),
            range("b", 0, 9),
            range("a", 0, 5),
            range("a", 3, 0),
            range("a", 2, 1),
        ];
        assert_eq!(
            shares(&source_places(&ranges, Some("a"), 2)),
            [(0, vec![0, 2, 4]), (1, vec![1, 3])]
        );
        // A partition keeps its task when others have nothing new, and a
        // task its first partition.
        let quiet = [
            range("a", 0, 0),
            range("a", 1, 2),
            range("a", 2, 0),
            range("a", 3, 4),
        ];
        assert_eq!(shares(&source_places(&quiet, None, 2)), [(1, vec![1, 3])]);
        let first_quiet = [range("a", 0, 0), range("a", 1, 0), range("a", 2, 6)];
        assert_eq!(
            shares(&source_places(&first_quiet, None, 2)),
            [(0, vec![0, 2])]
        );
        // More slots than partitions: one task each; no slots: one task.
        assert_eq!(
            shares(&source_places(&ranges[..2], None, 8)),
            [(0, vec![1]), (1, vec![4])]
        );
        assert_eq!(
            shares(&source_places(&ranges[..2], None, 0)),
            [(0, vec![1, 4])]
        );
        assert!(source_places(&[], None, 2).is_empty());
    }
}
