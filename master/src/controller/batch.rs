//! What a batch is made of, apart from running it: its ranges (from where
//! the last batch ended to Kafka's latest offsets, capped), records Kafka
//! lost, its watermark, and its progress record.

use std::collections::BTreeMap;
use std::time::Instant;

use spate_engine::OffsetRange;
use spate_engine::checkpoint::OffsetsEntry;
use spate_engine::job::{PlannedJob, starting_offset};
use spate_engine::kafka::PartitionOffsets;
use spate_engine::task::StateMetrics;

use crate::progress::{
    BatchProgress, Durations, SinkProgress, SourceProgress, StateOperatorProgress, TopicOffsets,
    event_time,
};
use crate::stages::TaskDone;

/// A batch between its offsets log entry and its commit.
#[derive(Debug, Clone)]
pub struct BatchInFlight {
    pub entry: OffsetsEntry,
    /// Kafka's latest offsets when the batch was planned; none for a batch
    /// re-run from the log.
    pub latest: Option<Vec<TopicLatest>>,
    pub started: Instant,
    pub started_ms: i64,
    pub durations: Durations,
    pub run: BatchRun,
    /// Per stage run so far, the attempts whose shuffle files count.
    pub stems: BTreeMap<u32, Vec<String>>,
    /// Attempts that ran and did not count; their leftovers are cleaned.
    pub abandoned: u32,
    /// Re-run from the offsets log: an earlier controller may have left
    /// parts in the sink.
    pub re_run: bool,
}

impl BatchInFlight {
    /// A batch whose ranges are logged, starting now.
    pub fn new(
        entry: OffsetsEntry,
        latest: Option<Vec<TopicLatest>>,
        durations: Durations,
        re_run: bool,
    ) -> Self {
        BatchInFlight {
            entry,
            latest,
            started: Instant::now(),
            started_ms: spate_engine::now_ms(),
            durations,
            run: BatchRun::default(),
            stems: BTreeMap::new(),
            abandoned: 0,
            re_run,
        }
    }
}

/// Kafka's offsets of one topic a job reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLatest {
    pub topic: String,
    pub partitions: Vec<PartitionOffsets>,
}

/// A partition of a topic, as offsets maps key it.
pub type TopicPartition = (String, i32);

/// The largest event time read from each topic (Unix ms).
pub type EventTimes = BTreeMap<String, i64>;

/// What a batch's tasks did.
#[derive(Debug, Clone, Default)]
pub struct BatchRun {
    pub input_rows: u64,
    /// Of `input_rows`, those of each topic.
    pub input_rows_by_topic: BTreeMap<String, u64>,
    pub output_rows: u64,
    pub max_event_time_ms: Option<i64>,
    pub event_times: EventTimes,
    pub late_rows: u64,
    pub malformed_rows: u64,
    pub state: StateMetrics,
    pub num_tasks: u32,
    pub scheduling_delay_ms: u64,
}

impl BatchRun {
    /// Adds a stage's tasks; only the last stage's rows are output rows.
    /// `topic` is the topic a source stage reads.
    pub fn add(&mut self, tasks: &[TaskDone], last: bool, topic: Option<&str>) {
        self.num_tasks += tasks.len() as u32;
        for TaskDone { outcome, delay_ms } in tasks {
            self.input_rows += outcome.input_rows;
            if let Some(topic) = topic {
                *self
                    .input_rows_by_topic
                    .entry(topic.to_string())
                    .or_default() += outcome.input_rows;
                if let Some(time) = outcome.max_event_time_ms {
                    let max = self.event_times.entry(topic.to_string()).or_insert(time);
                    *max = (*max).max(time);
                }
            }
            self.late_rows += outcome.late_rows;
            self.malformed_rows += outcome.malformed_rows;
            self.max_event_time_ms = self.max_event_time_ms.max(outcome.max_event_time_ms);
            self.scheduling_delay_ms = self.scheduling_delay_ms.max(*delay_ms);
            self.state.rows += outcome.state.rows;
            self.state.bytes += outcome.state.bytes;
            self.state.rows_updated += outcome.state.rows_updated;
            self.state.rows_removed += outcome.state.rows_removed;
            self.state.bytes_written += outcome.state.bytes_written;
            if last {
                self.output_rows += outcome.output_rows;
            }
        }
    }
}

/// The watermark of the next batch: for each source with a watermark, the
/// largest event time read from it minus its delay; the least of those
/// (Spark's global watermark), never moving back. It waits until every
/// such source has been read from: a join must not drop the rows of the
/// side that has not come yet.
pub fn watermark_after(
    planned: &PlannedJob,
    event_times: &EventTimes,
    previous: Option<i64>,
) -> Option<i64> {
    let mut least = None;
    for source in &planned.sources {
        let Some(watermark) = &source.watermark else {
            continue;
        };
        let Some(time) = event_times.get(&source.topic) else {
            return previous;
        };
        let own = time - watermark.delay_ms;
        least = Some(least.map_or(own, |l: i64| l.min(own)));
    }
    previous.max(least)
}

/// Where a job without a logged batch starts reading, per partition: the
/// table's starting offsets, resolved once, at the job's first look at
/// Kafka (Spark's `latest` is the latest offsets when the query starts,
/// not at each trigger, which would never leave an empty first batch).
pub fn starting_offsets(
    planned: &PlannedJob,
    latest: &[TopicLatest],
) -> BTreeMap<TopicPartition, i64> {
    let mut starting = BTreeMap::new();
    for topic in latest {
        let Some(source) = planned.source_of(&topic.topic) else {
            continue;
        };
        for p in &topic.partitions {
            let start = starting_offset(source, p.partition, p.low, p.high);
            starting.insert((topic.topic.clone(), p.partition), start);
        }
    }
    starting
}

/// Where each partition ends now: an available-now job reads to there.
pub fn ends(latest: &[TopicLatest]) -> BTreeMap<TopicPartition, i64> {
    latest
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| ((t.topic.clone(), p.partition), p.high))
        })
        .collect()
}

/// The ranges of the next batch: from where the previous batch ended
/// (or the job's starting offsets) to the latest offsets, capped per
/// source; and the ranges Kafka deleted before they were read, which the
/// batch skips.
pub fn next_ranges(
    planned: &PlannedJob,
    latest: &[TopicLatest],
    previous: Option<&OffsetsEntry>,
    starting: &BTreeMap<TopicPartition, i64>,
    end_of_input: Option<&BTreeMap<TopicPartition, i64>>,
) -> (Vec<OffsetRange>, Vec<OffsetRange>) {
    let mut lost = Vec::new();
    let mut all = Vec::new();
    for TopicLatest { topic, partitions } in latest {
        let mut ranges: Vec<OffsetRange> = partitions
            .iter()
            .map(|p| {
                let key = (topic.clone(), p.partition);
                let resume_at = previous
                    .and_then(|e| {
                        e.ranges
                            .iter()
                            .find(|r| r.partition == p.partition && &r.topic == topic)
                    })
                    .map(|r| r.end)
                    .unwrap_or_else(|| match (previous, starting.get(&key)) {
                        (None, Some(start)) => *start,
                        // A partition (or a topic) added while the job runs
                        // is read from its start.
                        _ => p.low,
                    });
                let start = resume_at.max(p.low);
                if resume_at < p.low {
                    lost.push(OffsetRange {
                        topic: topic.clone(),
                        partition: p.partition,
                        start: resume_at,
                        end: p.low,
                    });
                }
                let end = end_of_input
                    .and_then(|e| e.get(&key).copied())
                    .unwrap_or(p.high)
                    .max(start);
                OffsetRange {
                    topic: topic.clone(),
                    partition: p.partition,
                    start,
                    end,
                }
            })
            .collect();
        if let Some(limit) = planned
            .source_of(topic)
            .and_then(|s| s.max_offsets_per_trigger)
        {
            cap_ranges(&mut ranges, limit);
        }
        all.extend(ranges);
    }
    (all, lost)
}

/// Records Kafka deleted before the job read them: a failed job naming
/// them, or with `fail_on_data_loss` false, how many are skipped.
pub fn data_loss(planned: &PlannedJob, lost: &[OffsetRange]) -> Result<u64, String> {
    let Some(first) = lost.first() else {
        return Ok(0);
    };
    let skipped: u64 = lost.iter().map(OffsetRange::len).sum();
    let ranges: Vec<String> = lost
        .iter()
        .map(|r| format!("partition {} offsets {}..{}", r.partition, r.start, r.end))
        .collect();
    let source = planned.source_of(&first.topic).unwrap_or(planned.source());
    if source.fail_on_data_loss {
        return Err(format!(
            "records of topic '{}' were deleted by Kafka (retention) before the job read them: {}; nothing after them was read. To skip lost records and go on, set 'fail_on_data_loss' 'false' on table '{}'",
            first.topic,
            ranges.join(", "),
            source.table
        ));
    }
    tracing::warn!(
        job = planned.name,
        skipped,
        "skipping records Kafka deleted before the job read them: {}",
        ranges.join(", ")
    );
    Ok(skipped)
}

/// The batch's progress record, Spark's StreamingQueryProgress in shape.
/// `previous_trigger_ms` is when the batch before started, for the input rate.
pub fn progress(
    planned: &PlannedJob,
    job_id: &str,
    batch: &BatchInFlight,
    max_event_time_ms: Option<i64>,
    previous_trigger_ms: Option<i64>,
) -> BatchProgress {
    let (entry, run, durations) = (&batch.entry, &batch.run, batch.durations.clone());
    let trigger_started_ms = batch.started_ms;
    let since_previous = previous_trigger_ms
        .map(|previous| (trigger_started_ms - previous) as f64 / 1000.0)
        .filter(|s| *s > 0.0)
        .unwrap_or(durations.trigger_execution as f64 / 1000.0);
    let rate = |rows: u64, seconds: f64| {
        if seconds > 0.0 {
            rows as f64 / seconds
        } else {
            0.0
        }
    };
    let trigger_seconds = durations.trigger_execution as f64 / 1000.0;
    let input_rate = rate(run.input_rows, since_previous);
    let processed_rate = rate(run.input_rows, trigger_seconds);
    let sources = planned
        .sources
        .iter()
        .map(|source| {
            let topic = &source.topic;
            let ranges: Vec<&OffsetRange> =
                entry.ranges.iter().filter(|r| &r.topic == topic).collect();
            let by_partition = |offsets: &mut dyn Iterator<Item = (i32, i64)>| -> TopicOffsets {
                let partitions = offsets.map(|(p, o)| (p.to_string(), o)).collect();
                TopicOffsets::from([(topic.clone(), partitions)])
            };
            let start = by_partition(&mut ranges.iter().map(|r| (r.partition, r.start)));
            let end = by_partition(&mut ranges.iter().map(|r| (r.partition, r.end)));
            let latest = batch
                .latest
                .as_deref()
                .and_then(|latest| latest.iter().find(|t| &t.topic == topic));
            // A batch re-run from the log has no fresh look at Kafka: its end is all it knows.
            let (latest, behind) = match latest {
                Some(latest) => {
                    let behind = latest
                        .partitions
                        .iter()
                        .map(|p| {
                            let read_to = ranges.iter().find(|r| r.partition == p.partition);
                            (p.high - read_to.map_or(p.low, |r| r.end)).max(0)
                        })
                        .sum();
                    let high = &mut latest.partitions.iter().map(|p| (p.partition, p.high));
                    (by_partition(high), behind)
                }
                None => (end.clone(), 0),
            };
            let rows = if planned.sources.len() == 1 {
                run.input_rows
            } else {
                run.input_rows_by_topic.get(topic).copied().unwrap_or(0)
            };
            SourceProgress {
                description: format!("KafkaSource[{topic}]"),
                start_offset: start,
                end_offset: end,
                latest_offset: latest,
                num_input_rows: rows,
                input_rows_per_second: rate(rows, since_previous),
                processed_rows_per_second: rate(rows, trigger_seconds),
                offsets_behind_latest: behind,
            }
        })
        .collect();
    BatchProgress {
        id: job_id.to_string(),
        name: planned.name.clone(),
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
        state_operators: if planned.is_stateful() {
            vec![StateOperatorProgress {
                operator_name: if planned.joins_streams() {
                    "stream join".to_string()
                } else {
                    "stateful aggregate".to_string()
                },
                num_rows_total: run.state.rows,
                num_rows_updated: run.state.rows_updated,
                num_rows_removed: run.state.rows_removed,
                memory_used_bytes: run.state.bytes,
                state_bytes_written: run.state.bytes_written,
                num_rows_dropped_by_watermark: run.late_rows,
            }]
        } else {
            Vec::new()
        },
        late_rows_dropped: run.late_rows,
        records_lost_to_retention: entry.skipped_records,
        malformed_rows: run.malformed_rows,
        sources,
        sink: SinkProgress {
            description: planned.sink.describe(),
            num_output_rows: run.output_rows,
        },
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
