//! One coordinator per running job: the micro-batch loop.
//!
//! Each trigger: read Kafka's latest offsets, cap them, write `offsets/N`
//! (the write-ahead log) before any task runs, run one task per partition
//! with new records, commit the sink (a manifest naming the batch's files),
//! then write `commits/N`. A batch found in `offsets/` without a commit is
//! re-run with exactly the same ranges, so recovery neither skips nor
//! repeats a row.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use spate_engine::checkpoint::{Checkpoint, CommitEntry, OffsetsEntry};
use spate_engine::files::{SinkManifest, commit_batch, manifest_path};
use spate_engine::job::{PlannedJob, SinkSpec, starting_offset};
use spate_engine::kafka::{KafkaAdmin, PartitionOffsets};
use spate_engine::task::{TaskOutcome, TaskSpec};
use spate_engine::{EngineError, OffsetRange, Workspace, now_ms};
use tokio::sync::watch;

use crate::cluster::{Cluster, TaskEnd};
use crate::jobs::{JobState, Jobs};

/// Backoff while Kafka is unreachable: doubles up to the cap.
const KAFKA_RETRY_MIN: Duration = Duration::from_millis(500);
const KAFKA_RETRY_MAX: Duration = Duration::from_secs(10);

pub struct Coordinator {
    pub job_id: String,
    pub planned: PlannedJob,
    pub ws: Workspace,
    pub cluster: Arc<Cluster>,
    pub jobs: Arc<Jobs>,
    pub stop: watch::Receiver<bool>,
}

/// How a batch ended.
enum BatchEnd {
    Committed {
        input_rows: u64,
        output_rows: u64,
    },
    /// A task failed by its own error as often as the job allows; says which and why.
    Failed(String),
}

impl Coordinator {
    pub async fn run(mut self) {
        let state = match self.run_batches().await {
            Ok(state) => state,
            Err(e) => JobState::Failed(e.to_string()),
        };
        if let JobState::Failed(why) = &state {
            tracing::error!(job = self.job_id, "job failed: {why}");
        } else {
            tracing::info!(job = self.job_id, "job {}", state.name().to_lowercase());
        }
        self.jobs.set_state(&self.job_id, state).await;
    }

    fn stop_requested(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run_batches(&mut self) -> Result<JobState, EngineError> {
        let checkpoint = Checkpoint::new(&self.ws, &self.job_id);
        let source = self.planned.source.clone();
        let admin = KafkaAdmin::new(&source.bootstrap_servers, &source.client_options);
        let mut next_batch = checkpoint.latest_commit().await?.map_or(0, |c| c.batch + 1);
        let mut totals = checkpoint
            .latest_commit()
            .await?
            .map_or((0, 0), |c| (c.total_input_rows, c.total_output_rows));
        // availableNow: the offsets at the first look are where the job ends.
        let mut end_of_input: Option<BTreeMap<i32, i64>> = None;
        let mut kafka_backoff = KAFKA_RETRY_MIN;
        loop {
            if self.stop_requested() {
                return Ok(JobState::Stopped);
            }
            let trigger_started = Instant::now();
            let entry = match checkpoint.offsets(next_batch).await? {
                Some(logged) => {
                    tracing::info!(
                        job = self.job_id,
                        batch = next_batch,
                        "re-running a batch from the offsets log"
                    );
                    logged
                }
                None => {
                    let latest = match admin.partition_offsets(&source.topic).await {
                        Ok(latest) => {
                            kafka_backoff = KAFKA_RETRY_MIN;
                            self.jobs.set_state(&self.job_id, JobState::Running).await;
                            latest
                        }
                        Err(e) => {
                            let why =
                                format!("{e}; retrying in {:.1}s", kafka_backoff.as_secs_f32());
                            tracing::warn!(job = self.job_id, "{why}");
                            self.jobs
                                .set_state(&self.job_id, JobState::Waiting(why))
                                .await;
                            self.sleep(kafka_backoff).await;
                            kafka_backoff = (kafka_backoff * 2).min(KAFKA_RETRY_MAX);
                            continue;
                        }
                    };
                    let previous = match next_batch.checked_sub(1) {
                        Some(b) => checkpoint.offsets(b).await?,
                        None => None,
                    };
                    if self.planned.options.available_now && end_of_input.is_none() {
                        end_of_input = Some(latest.iter().map(|p| (p.partition, p.high)).collect());
                    }
                    let ranges =
                        self.next_ranges(&latest, previous.as_ref(), end_of_input.as_ref());
                    if ranges.iter().all(OffsetRange::is_empty) {
                        if self.planned.options.available_now {
                            return Ok(JobState::Finished);
                        }
                        self.sleep(self.trigger_interval()).await;
                        continue;
                    }
                    let entry = OffsetsEntry {
                        batch: next_batch,
                        ranges,
                        created_ms: now_ms(),
                    };
                    checkpoint.write_offsets(&entry).await?;
                    entry
                }
            };
            let (input_rows, output_rows) = match self.run_batch(&entry).await? {
                BatchEnd::Committed {
                    input_rows,
                    output_rows,
                } => (input_rows, output_rows),
                BatchEnd::Failed(why) => return Ok(JobState::Failed(why)),
            };
            totals.0 += input_rows;
            totals.1 += output_rows;
            checkpoint
                .write_commit(&CommitEntry {
                    batch: entry.batch,
                    committed_ms: now_ms(),
                    input_rows,
                    output_rows,
                    total_input_rows: totals.0,
                    total_output_rows: totals.1,
                })
                .await?;
            self.jobs.add_batch(&self.job_id, input_rows, output_rows);
            tracing::info!(
                job = self.job_id,
                batch = entry.batch,
                input_rows,
                output_rows,
                "batch committed"
            );
            next_batch = entry.batch + 1;
            let elapsed = trigger_started.elapsed();
            if let Some(rest) = self.trigger_interval().checked_sub(elapsed) {
                self.sleep(rest).await;
            }
        }
    }

    fn trigger_interval(&self) -> Duration {
        Duration::from_millis(self.planned.options.trigger_interval_ms)
    }

    /// Sleeps, waking early when a stop is requested.
    async fn sleep(&mut self, duration: Duration) {
        let _ = tokio::time::timeout(duration, spate_engine::stop_signalled(&mut self.stop)).await;
    }

    /// The ranges of the next batch: from where the previous batch ended
    /// (or the table's starting offsets) to the latest offsets, capped.
    fn next_ranges(
        &self,
        latest: &[PartitionOffsets],
        previous: Option<&OffsetsEntry>,
        end_of_input: Option<&BTreeMap<i32, i64>>,
    ) -> Vec<OffsetRange> {
        let source = &self.planned.source;
        let mut ranges: Vec<OffsetRange> = latest
            .iter()
            .map(|p| {
                let start = previous
                    .and_then(|e| e.ranges.iter().find(|r| r.partition == p.partition))
                    .map(|r| r.end)
                    .unwrap_or_else(|| match previous {
                        // A partition added while the job runs is read from its start.
                        Some(_) => p.low,
                        None => starting_offset(source, p.partition, p.low, p.high),
                    });
                let end = end_of_input
                    .and_then(|e| e.get(&p.partition).copied())
                    .unwrap_or(p.high)
                    .max(start);
                OffsetRange {
                    topic: source.topic.clone(),
                    partition: p.partition,
                    start,
                    end,
                }
            })
            .collect();
        if let Some(limit) = source.max_offsets_per_trigger {
            cap_ranges(&mut ranges, limit);
        }
        ranges
    }

    /// Runs a batch's tasks and commits its sink. A file sink that already
    /// holds this batch's manifest committed it before a crash: its tasks
    /// are not run again.
    async fn run_batch(&self, entry: &OffsetsEntry) -> Result<BatchEnd, EngineError> {
        if let SinkSpec::Files { dir, .. } = &self.planned.sink
            && let Some(manifest) = self
                .ws
                .get_json::<SinkManifest>(&manifest_path(dir, entry.batch))
                .await?
        {
            let input: u64 = entry.ranges.iter().map(OffsetRange::len).sum();
            tracing::info!(
                job = self.job_id,
                batch = entry.batch,
                "sink already holds this batch; committing the checkpoint only"
            );
            return Ok(BatchEnd::Committed {
                input_rows: input,
                output_rows: manifest.rows,
            });
        }
        let tasks = entry
            .ranges
            .iter()
            .filter(|r| !r.is_empty())
            .enumerate()
            .map(|(index, range)| self.run_task(entry.batch, index as u32, range.clone()));
        let mut input_rows = 0;
        let mut output_rows = 0;
        let mut files = Vec::new();
        for end in join_all(tasks).await {
            let outcome = match end {
                Ok(outcome) => outcome,
                Err(why) => return Ok(BatchEnd::Failed(why)),
            };
            input_rows += outcome.input_rows;
            output_rows += outcome.output_rows;
            files.extend(outcome.output_files);
        }
        if let SinkSpec::Files { dir, .. } = &self.planned.sink {
            commit_batch(&self.ws, dir, entry.batch, files, output_rows).await?;
        }
        Ok(BatchEnd::Committed {
            input_rows,
            output_rows,
        })
    }

    /// Runs one task until it succeeds, re-running it where its worker was
    /// lost and retrying its own failures up to the job's limit.
    async fn run_task(
        &self,
        batch: u64,
        task_index: u32,
        range: OffsetRange,
    ) -> Result<TaskOutcome, String> {
        let mut failures = 0;
        loop {
            let spec = TaskSpec {
                job_id: self.job_id.clone(),
                batch_id: batch,
                attempt_id: attempt_id(),
                task_index,
                plan: self.planned.plan.clone(),
                ranges: vec![range.clone()],
                sink: self.planned.sink.clone(),
            };
            let ended = self.cluster.submit(spec).await;
            match ended {
                Ok(TaskEnd::Succeeded(outcome)) => return Ok(outcome),
                Ok(TaskEnd::WorkerLost(why)) => {
                    tracing::warn!(
                        job = self.job_id,
                        batch,
                        task_index,
                        "re-running task: {why}"
                    );
                }
                Ok(TaskEnd::Failed(why)) => {
                    failures += 1;
                    tracing::warn!(
                        job = self.job_id,
                        batch,
                        task_index,
                        failures,
                        "task failed: {why}"
                    );
                    if failures >= self.planned.options.max_task_failures {
                        return Err(format!(
                            "task {task_index} of batch {batch} (topic '{}' partition {} offsets {}..{}) failed {failures} times: {why}",
                            range.topic, range.partition, range.start, range.end
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200 * failures as u64)).await;
                }
                Err(_) => return Err("the scheduler dropped the task".to_string()),
            }
        }
    }
}

/// Unique across master restarts, so attempts never share output file names.
fn attempt_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Caps the sum of the ranges' lengths at `limit`, sharing it among
/// partitions in proportion to their backlog (Spark's maxOffsetsPerTrigger).
fn cap_ranges(ranges: &mut [OffsetRange], limit: u64) {
    let total: u64 = ranges.iter().map(OffsetRange::len).sum();
    if total <= limit {
        return;
    }
    let backlog: Vec<u64> = ranges.iter().map(OffsetRange::len).collect();
    let mut left = limit;
    for range in ranges.iter_mut() {
        let share = ((range.len() as u128 * limit as u128) / total as u128) as u64;
        range.end = range.start + share as i64;
        left -= share;
    }
    // Rounding leftovers go, one by one, to partitions that still have
    // records, so even a tiny limit always makes progress.
    while left > 0 {
        let mut gave = false;
        for (range, backlog) in ranges.iter_mut().zip(&backlog) {
            if left > 0 && range.len() < *backlog {
                range.end += 1;
                left -= 1;
                gave = true;
            }
        }
        if !gave {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(partition: i32, start: i64, end: i64) -> OffsetRange {
        OffsetRange {
            topic: "t".into(),
            partition,
            start,
            end,
        }
    }

    #[test]
    fn caps_share_the_limit_by_backlog() {
        let mut ranges = vec![range(0, 0, 300), range(1, 10, 110), range(2, 5, 5)];
        cap_ranges(&mut ranges, 100);
        assert_eq!(
            ranges.iter().map(OffsetRange::len).collect::<Vec<_>>(),
            vec![75, 25, 0]
        );
        let mut tiny = vec![range(0, 0, 5), range(1, 0, 5)];
        cap_ranges(&mut tiny, 1);
        assert_eq!(tiny.iter().map(OffsetRange::len).sum::<u64>(), 1);
        let mut small = vec![range(0, 0, 3)];
        cap_ranges(&mut small, 100);
        assert_eq!(small[0].end, 3);
    }
}
