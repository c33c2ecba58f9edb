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

use spate_engine::checkpoint::{Checkpoint, CommitEntry, OffsetsEntry, totals_after};
use spate_engine::files::{SinkManifest, commit_batch, manifest_path};
use spate_engine::job::{PlannedJob, SinkSpec, starting_offset};
use spate_engine::kafka::{KafkaAdmin, PartitionOffsets};
use spate_engine::shuffle::batch_dir;
use spate_engine::stateful::OutputMode;
use spate_engine::task::StateMetrics;
use spate_engine::{EngineError, OffsetRange, Workspace, now_ms};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::jobs::{JobState, Jobs, StopRequest, describe_sink};
use crate::progress::{
    BatchProgress, Durations, SinkProgress, SourceProgress, StateOperatorProgress, TopicOffsets,
    event_time,
};
use crate::stages::{BatchStages, TaskDone, millis};

/// Backoff while Kafka is unreachable: doubles up to the cap.
const KAFKA_RETRY_MIN: Duration = Duration::from_millis(500);
const KAFKA_RETRY_MAX: Duration = Duration::from_secs(10);

pub struct Coordinator {
    pub job_id: String,
    pub planned: PlannedJob,
    pub ws: Workspace,
    pub cluster: Arc<Cluster>,
    pub jobs: Arc<Jobs>,
    pub stop: watch::Receiver<StopRequest>,
}

/// What a committed batch did.
#[derive(Default)]
struct BatchRun {
    input_rows: u64,
    output_rows: u64,
    max_event_time_ms: Option<i64>,
    late_rows: u64,
    malformed_rows: u64,
    state: StateMetrics,
    num_tasks: u32,
    scheduling_delay_ms: u64,
    planning_ms: u64,
    tasks_ms: u64,
    sink_commit_ms: u64,
}

/// How a batch ended.
enum BatchEnd {
    Committed(BatchRun),
    /// A task failed by its own error as often as the job allows; says which and why.
    Failed(String),
}

impl Coordinator {
    pub async fn run(mut self) {
        let mut kill = self.stop.clone();
        let killed = async move {
            let _ = kill.wait_for(|s| *s == StopRequest::Now).await;
        };
        let state = tokio::select! {
            ended = self.run_batches() => match ended {
                Ok(state) => state,
                Err(e) => JobState::Failed(e.to_string()),
            },
            _ = killed => {
                tracing::warn!(job = self.job_id, "killed: the running batch is abandoned and re-runs from the checkpoint on resume");
                JobState::Stopped
            }
        };
        if let JobState::Failed(why) = &state {
            tracing::error!(job = self.job_id, "job failed: {why}");
        } else {
            tracing::info!(job = self.job_id, "job {}", state.name().to_lowercase());
        }
        self.jobs.set_state(&self.job_id, state).await;
    }

    fn stop_requested(&self) -> bool {
        *self.stop.borrow() != StopRequest::Run
    }

    async fn run_batches(&mut self) -> Result<JobState, EngineError> {
        let checkpoint = Checkpoint::new(&self.ws, &self.job_id);
        let source = self.planned.source.clone();
        let admin = KafkaAdmin::new(&source.bootstrap_servers, &source.client_options);
        let last_commit = checkpoint.latest_commit().await?;
        let (mut next_batch, input_rows, output_rows) = totals_after(last_commit.as_ref());
        let mut totals = (input_rows, output_rows);
        let mut max_event_time_ms = last_commit.and_then(|c| c.max_event_time_ms);
        let mut last_watermark_ms = match next_batch.checked_sub(1) {
            Some(b) => checkpoint.offsets(b).await?.and_then(|e| e.watermark_ms),
            None => None,
        };
        self.remove_shuffles_before(next_batch).await;
        // availableNow: the offsets at the first look are where the job ends.
        let mut end_of_input: Option<BTreeMap<i32, i64>> = None;
        let mut kafka_backoff = KAFKA_RETRY_MIN;
        loop {
            if self.stop_requested() {
                return Ok(JobState::Stopped);
            }
            let trigger_started = Instant::now();
            let trigger_started_ms = now_ms();
            let mut durations = Durations::default();
            let mut latest_offsets = None;
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
                    let asked = Instant::now();
                    let latest = match admin.partition_offsets(&source.topic).await {
                        Ok(latest) => {
                            durations.latest_offset = millis(asked.elapsed());
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
                    let (ranges, lost) =
                        self.next_ranges(&latest, previous.as_ref(), end_of_input.as_ref());
                    let skipped_records = match self.data_loss(&lost) {
                        Ok(skipped) => skipped,
                        Err(why) => return Ok(JobState::Failed(why)),
                    };
                    let watermark_ms = self.watermark_after(max_event_time_ms, last_watermark_ms);
                    // A stateful job runs a batch without data when the
                    // watermark moved, so the windows it closed are emitted.
                    let watermark_moved =
                        self.planned.is_stateful() && watermark_ms > last_watermark_ms;
                    if ranges.iter().all(OffsetRange::is_empty)
                        && !watermark_moved
                        && skipped_records == 0
                    {
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
                        watermark_ms,
                        skipped_records,
                    };
                    let logging = Instant::now();
                    checkpoint.write_offsets(&entry).await?;
                    durations.wal_commit = millis(logging.elapsed());
                    latest_offsets = Some(latest);
                    entry
                }
            };
            let ran = match self.run_batch(&entry).await? {
                BatchEnd::Committed(ran) => ran,
                BatchEnd::Failed(why) => return Ok(JobState::Failed(why)),
            };
            let (input_rows, output_rows) = (ran.input_rows, ran.output_rows);
            let committing = Instant::now();
            totals.0 += input_rows;
            totals.1 += output_rows;
            max_event_time_ms = max_event_time_ms.max(ran.max_event_time_ms);
            last_watermark_ms = entry.watermark_ms;
            checkpoint
                .write_commit(&CommitEntry {
                    batch: entry.batch,
                    committed_ms: now_ms(),
                    input_rows,
                    output_rows,
                    total_input_rows: totals.0,
                    total_output_rows: totals.1,
                    max_event_time_ms,
                })
                .await?;
            if self.planned.is_stateful() {
                let shuffle = batch_dir(&self.job_id, entry.batch);
                if let Err(e) = self.ws.delete_dir(&shuffle).await {
                    tracing::warn!(job = self.job_id, "could not remove {shuffle}: {e}");
                }
            }
            durations.query_planning = ran.planning_ms;
            durations.add_batch = ran.tasks_ms;
            durations.commit_offsets = ran.sink_commit_ms + millis(committing.elapsed());
            durations.trigger_execution = millis(trigger_started.elapsed());
            let progress = self.progress(
                &entry,
                &ran,
                max_event_time_ms,
                latest_offsets.as_deref(),
                trigger_started_ms,
                durations,
            );
            self.jobs.add_batch(progress).await;
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

    /// The batch's progress record, Spark's StreamingQueryProgress in shape.
    fn progress(
        &self,
        entry: &OffsetsEntry,
        run: &BatchRun,
        max_event_time_ms: Option<i64>,
        latest: Option<&[PartitionOffsets]>,
        trigger_started_ms: i64,
        durations: Durations,
    ) -> BatchProgress {
        let topic = &self.planned.source.topic;
        let by_partition = |offsets: &mut dyn Iterator<Item = (i32, i64)>| -> TopicOffsets {
            let partitions = offsets.map(|(p, o)| (p.to_string(), o)).collect();
            TopicOffsets::from([(topic.clone(), partitions)])
        };
        let start = by_partition(&mut entry.ranges.iter().map(|r| (r.partition, r.start)));
        let end = by_partition(&mut entry.ranges.iter().map(|r| (r.partition, r.end)));
        // A batch re-run from the log has no fresh look at Kafka: its end is all it knows.
        let (latest, behind) = match latest {
            Some(latest) => {
                let behind = latest
                    .iter()
                    .map(|p| {
                        let read_to = entry.ranges.iter().find(|r| r.partition == p.partition);
                        (p.high - read_to.map_or(p.low, |r| r.end)).max(0)
                    })
                    .sum();
                (
                    by_partition(&mut latest.iter().map(|p| (p.partition, p.high))),
                    behind,
                )
            }
            None => (end.clone(), 0),
        };
        let since_previous = self
            .jobs
            .last_trigger_ms(&self.job_id)
            .map(|previous| (trigger_started_ms - previous) as f64 / 1000.0)
            .filter(|s| *s > 0.0)
            .unwrap_or(durations.trigger_execution as f64 / 1000.0);
        let rate = |seconds: f64| {
            if seconds > 0.0 {
                run.input_rows as f64 / seconds
            } else {
                0.0
            }
        };
        let input_rate = rate(since_previous);
        let processed_rate = rate(durations.trigger_execution as f64 / 1000.0);
        BatchProgress {
            id: self.job_id.clone(),
            name: self.planned.name.clone(),
            timestamp: chrono::DateTime::from_timestamp_millis(trigger_started_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            timestamp_ms: trigger_started_ms,
            batch_id: entry.batch,
            num_input_rows: run.input_rows,
            num_output_rows: run.output_rows,
            input_rows_per_second: input_rate,
            processed_rows_per_second: processed_rate,
            duration_ms: durations,
            scheduling_delay_ms: run.scheduling_delay_ms,
            num_tasks: run.num_tasks,
            event_time: event_time(entry.watermark_ms, max_event_time_ms),
            state_operators: if self.planned.is_stateful() {
                vec![StateOperatorProgress {
                    operator_name: "stateful aggregate".to_string(),
                    num_rows_total: run.state.rows,
                    num_rows_updated: run.state.rows_updated,
                    num_rows_removed: run.state.rows_removed,
                    memory_used_bytes: run.state.bytes,
                    num_rows_dropped_by_watermark: run.late_rows,
                }]
            } else {
                Vec::new()
            },
            late_rows_dropped: run.late_rows,
            records_lost_to_retention: entry.skipped_records,
            malformed_rows: run.malformed_rows,
            sources: vec![SourceProgress {
                description: format!("KafkaSource[{topic}]"),
                start_offset: start,
                end_offset: end,
                latest_offset: latest,
                num_input_rows: run.input_rows,
                input_rows_per_second: input_rate,
                processed_rows_per_second: processed_rate,
                offsets_behind_latest: behind,
            }],
            sink: SinkProgress {
                description: describe_sink(&self.planned.sink),
                num_output_rows: run.output_rows,
            },
        }
    }

    fn trigger_interval(&self) -> Duration {
        Duration::from_millis(self.planned.options.trigger_interval_ms)
    }

    /// Sleeps, waking early when a stop is requested.
    async fn sleep(&mut self, duration: Duration) {
        let stop = self.stop.wait_for(|s| *s != StopRequest::Run);
        let _ = tokio::time::timeout(duration, stop).await;
    }

    /// Records Kafka deleted before the job read them: a failed job naming
    /// them, or with `fail_on_data_loss` false, how many are skipped.
    fn data_loss(&self, lost: &[OffsetRange]) -> Result<u64, String> {
        let Some(first) = lost.first() else {
            return Ok(0);
        };
        let skipped: u64 = lost.iter().map(OffsetRange::len).sum();
        let ranges: Vec<String> = lost
            .iter()
            .map(|r| format!("partition {} offsets {}..{}", r.partition, r.start, r.end))
            .collect();
        if self.planned.source.fail_on_data_loss {
            return Err(format!(
                "records of topic '{}' were deleted by Kafka (retention) before the job read them: {}; nothing after them was read. To skip lost records and go on, set 'fail_on_data_loss' 'false' on table '{}'",
                first.topic,
                ranges.join(", "),
                self.planned.source.table
            ));
        }
        tracing::warn!(
            job = self.job_id,
            skipped,
            "skipping records Kafka deleted before the job read them: {}",
            ranges.join(", ")
        );
        Ok(skipped)
    }

    /// The ranges of the next batch: from where the previous batch ended
    /// (or the table's starting offsets) to the latest offsets, capped; and
    /// the ranges Kafka deleted before they were read, which the batch skips.
    fn next_ranges(
        &self,
        latest: &[PartitionOffsets],
        previous: Option<&OffsetsEntry>,
        end_of_input: Option<&BTreeMap<i32, i64>>,
    ) -> (Vec<OffsetRange>, Vec<OffsetRange>) {
        let source = &self.planned.source;
        let mut lost = Vec::new();
        let mut ranges: Vec<OffsetRange> = latest
            .iter()
            .map(|p| {
                let resume_at = previous
                    .and_then(|e| e.ranges.iter().find(|r| r.partition == p.partition))
                    .map(|r| r.end)
                    .unwrap_or_else(|| match previous {
                        // A partition added while the job runs is read from its start.
                        Some(_) => p.low,
                        None => starting_offset(source, p.partition, p.low, p.high),
                    });
                let start = resume_at.max(p.low);
                if resume_at < p.low {
                    lost.push(OffsetRange {
                        topic: source.topic.clone(),
                        partition: p.partition,
                        start: resume_at,
                        end: p.low,
                    });
                }
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
        (ranges, lost)
    }

    /// Runs a batch's stages in order and commits its sink. A file sink
    /// that already holds this batch's manifest committed it before a
    /// crash: its tasks are not run again.
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
            return Ok(BatchEnd::Committed(BatchRun {
                input_rows: input,
                output_rows: manifest.rows,
                ..BatchRun::default()
            }));
        }
        let mut run = BatchRun::default();
        let running = Instant::now();
        let mut files = Vec::new();
        let mut stages = BatchStages {
            cluster: &self.cluster,
            job_id: &self.job_id,
            batch: entry.batch,
            watermark_ms: entry.watermark_ms,
            sink: &self.planned.sink,
            max_task_failures: self.planned.options.max_task_failures,
            ranges: &entry.ranges,
            committed: BTreeMap::new(),
            placing_ms: 0,
        };
        for (position, stage) in self.planned.stages.iter().enumerate() {
            let last = position + 1 == self.planned.stages.len();
            let done = match stages.run_stage(stage).await {
                Ok(done) => done,
                Err(why) => return Ok(BatchEnd::Failed(why)),
            };
            run.num_tasks += done.len() as u32;
            for TaskDone { outcome, delay_ms } in done {
                run.input_rows += outcome.input_rows;
                run.late_rows += outcome.late_rows;
                run.malformed_rows += outcome.malformed_rows;
                run.max_event_time_ms = run.max_event_time_ms.max(outcome.max_event_time_ms);
                run.scheduling_delay_ms = run.scheduling_delay_ms.max(delay_ms);
                run.state.rows += outcome.state.rows;
                run.state.bytes += outcome.state.bytes;
                run.state.rows_updated += outcome.state.rows_updated;
                run.state.rows_removed += outcome.state.rows_removed;
                if last {
                    run.output_rows += outcome.output_rows;
                    files.extend(outcome.output_files);
                }
            }
        }
        run.tasks_ms = millis(running.elapsed());
        run.planning_ms = stages.placing_ms;
        let committing = Instant::now();
        if let SinkSpec::Files { dir, .. } = &self.planned.sink {
            let replaces = self.planned.options.output_mode == OutputMode::Complete;
            commit_batch(&self.ws, dir, entry.batch, files, run.output_rows, replaces).await?;
        }
        run.sink_commit_ms = millis(committing.elapsed());
        Ok(BatchEnd::Committed(run))
    }

    /// The watermark of the next batch: the largest event time seen so far
    /// minus the source's delay, never moving back.
    fn watermark_after(
        &self,
        max_event_time_ms: Option<i64>,
        previous: Option<i64>,
    ) -> Option<i64> {
        let delay = self.planned.source.watermark.as_ref()?.delay_ms;
        previous.max(max_event_time_ms.map(|m| m - delay))
    }

    /// Shuffle folders of committed batches that a crash left behind.
    async fn remove_shuffles_before(&self, next_batch: u64) {
        let root = spate_engine::shuffle::job_dir(&self.job_id);
        let Ok(names) = self.ws.list_names(&root).await else {
            return;
        };
        for batch in names.iter().filter_map(|n| n.parse::<u64>().ok()) {
            if batch < next_batch {
                let _ = self.ws.delete_dir(&batch_dir(&self.job_id, batch)).await;
            }
        }
    }
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
