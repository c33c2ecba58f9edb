//! Partitions kept assigned between tasks. One consumer per process and
//! cluster holds every partition this process's tasks read, each split off
//! to its own queue. A task leases its partition's queue and gives it back
//! at the offset it stopped at; when the next batch's range starts there,
//! the records librdkafka fetched past the last range's end are read, not
//! dropped and fetched again. (A consumer per task, assigned to its range
//! and unassigned after it, fetched a third of all records twice, and
//! waited for a first fetch every task.) A range that starts elsewhere, a
//! replay after a failure, seeks.
//!
//! A partition another task holds (a retried attempt still running, two
//! jobs on one topic) is not shared: the scan reads it with a consumer of
//! its own from `pool`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{Consumer, DefaultConsumerContext, MessageStream, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::pool::{key, reader_config};
use crate::OffsetRange;

/// A partition no task read for this long is unassigned: it stops
/// fetching, and what it prefetched is freed.
const IDLE_PARTITION: Duration = Duration::from_secs(60);

/// How long a seek may take before the range fails.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

type Queue = StreamPartitionQueue<DefaultConsumerContext>;

static SHARED: LazyLock<Mutex<HashMap<String, Arc<SharedConsumer>>>> =
    LazyLock::new(Mutex::default);

/// The consumer of one cluster and options, and its partitions.
struct SharedConsumer {
    consumer: Arc<StreamConsumer>,
    partitions: Mutex<HashMap<(String, i32), Slot>>,
}

struct Slot {
    /// The partition's queue; `None` while a task holds it.
    queue: Option<Queue>,
    /// The offset the queue's next record is at (or past it, over
    /// transaction markers); `None` where it is not known.
    next: Option<i64>,
    last_used: Instant,
}

/// A partition's queue lent to one task. Given back with `release_at`, it
/// waits at that offset for the next range; dropped without it (an error
/// mid-range), the partition is unassigned, so no one reads from a
/// position that is not known.
pub struct PartitionLease {
    owner: Arc<SharedConsumer>,
    partition: (String, i32),
    queue: Option<Queue>,
    /// `Some` once given back: at the offset the queue's next record is at.
    released: Option<Option<i64>>,
}

impl PartitionLease {
    pub fn stream(&self) -> MessageStream<'_, DefaultConsumerContext> {
        self.queue.as_ref().expect("held until dropped").stream()
    }

    pub fn consumer(&self) -> &StreamConsumer {
        &self.owner.consumer
    }

    /// The task stopped with every record before `next` read and none
    /// after it; `None` where the queue's position is not known, so the
    /// next range seeks.
    pub fn release_at(mut self, next: Option<i64>) {
        self.released = Some(next);
    }
}

impl Drop for PartitionLease {
    fn drop(&mut self) {
        let mut partitions = self.owner.lock();
        match self.released {
            Some(next) => {
                if let Some(slot) = partitions.get_mut(&self.partition) {
                    slot.queue = self.queue.take();
                    slot.next = next;
                    slot.last_used = Instant::now();
                }
            }
            None => {
                partitions.remove(&self.partition);
                // Under the lock: a lease of the partition that comes next
                // assigns it after this, never before.
                self.owner.unassign(std::slice::from_ref(&self.partition));
            }
        }
    }
}

/// The shared queue of the range's partition, positioned at its start;
/// `None` where another task holds it.
pub async fn lease(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
    range: &OffsetRange,
) -> Result<Option<PartitionLease>, KafkaError> {
    let owner = shared(bootstrap, options)?;
    let partition = (range.topic.clone(), range.partition);
    let taken = {
        let mut partitions = owner.lock();
        match partitions.get_mut(&partition) {
            Some(slot) => slot.queue.take().map(|queue| (Some(queue), slot.next)),
            None => {
                partitions.insert(
                    partition.clone(),
                    Slot {
                        queue: None,
                        next: None,
                        last_used: Instant::now(),
                    },
                );
                Some((None, None))
            }
        }
    };
    let Some((queue, next)) = taken else {
        return Ok(None);
    };
    // From here on a failure drops the lease, which unassigns the partition.
    let mut lease = PartitionLease {
        owner: Arc::clone(&owner),
        partition,
        queue,
        released: None,
    };
    if lease.queue.is_none() {
        // Split before assigning: the partition's records then never pass
        // through the consumer's main queue.
        lease.queue = owner
            .consumer
            .split_partition_queue(&range.topic, range.partition);
        if lease.queue.is_none() {
            return Err(KafkaError::Subscription(format!(
                "no queue for topic '{}' partition {}",
                range.topic, range.partition
            )));
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(
            &range.topic,
            range.partition,
            Offset::Offset(range.start),
        )?;
        owner.consumer.incremental_assign(&assignment)?;
    } else if next != Some(range.start) {
        let consumer = Arc::clone(&owner.consumer);
        let (topic, partition, start) = (range.topic.clone(), range.partition, range.start);
        tokio::task::spawn_blocking(move || {
            consumer.seek(&topic, partition, Offset::Offset(start), SEEK_TIMEOUT)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
    }
    Ok(Some(lease))
}

/// Unassigns every partition no task holds now: a worker that stops
/// leaves no fetching behind it in the process.
pub fn release_partitions() {
    let owners: Vec<Arc<SharedConsumer>> = SHARED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    for owner in owners {
        owner.unassign_idle(Duration::ZERO);
    }
}

fn shared(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
) -> Result<Arc<SharedConsumer>, KafkaError> {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    let key = key(bootstrap, options);
    if let Some(owner) = shared.get(&key) {
        return Ok(Arc::clone(owner));
    }
    let owner = Arc::new(SharedConsumer {
        consumer: Arc::new(reader_config(bootstrap, options).create()?),
        partitions: Mutex::default(),
    });
    shared.insert(key, Arc::clone(&owner));
    let tended = Arc::downgrade(&owner);
    let _ = std::thread::Builder::new()
        .name("kafka-partitions".to_string())
        .spawn(move || {
            while let Some(owner) = tended.upgrade() {
                owner.unassign_idle(IDLE_PARTITION);
                owner.drain_events();
                drop(owner);
                std::thread::sleep(IDLE_PARTITION / 4);
            }
        });
    Ok(owner)
}

impl SharedConsumer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Slot>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unassigns the partitions no task read for `idle`: a job that
    /// ended, or ranges that went to other workers.
    fn unassign_idle(&self, idle: Duration) {
        let now = Instant::now();
        let mut partitions = self.lock();
        let idle: Vec<(String, i32)> = partitions
            .iter()
            .filter(|(_, slot)| slot.queue.is_some() && now.duration_since(slot.last_used) >= idle)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &idle {
            partitions.remove(p);
        }
        // Under the lock, as in `PartitionLease::drop`.
        self.unassign(&idle);
    }

    fn unassign(&self, partitions: &[(String, i32)]) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        if let Err(e) = self.consumer.incremental_unassign(&list) {
            tracing::debug!("unassigning idle partitions: {e}");
        }
    }

    /// Every partition has its own queue, so the consumer's main queue
    /// holds only client events (a broker that went away); they are read
    /// so that they do not pile up.
    fn drain_events(&self) {
        while let Some(event) = self.consumer.recv().now_or_never() {
            match event {
                Err(e) => tracing::debug!("Kafka reader: {e}"),
                Ok(m) => tracing::debug!(
                    "Kafka reader: a record of topic '{}' on the main queue",
                    rdkafka::Message::topic(&m)
                ),
            }
        }
    }
}
