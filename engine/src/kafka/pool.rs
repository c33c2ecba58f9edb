//! Kafka clients kept between tasks of one process: consumers for reading
//! ranges (where `partitions` cannot lend a partition), producers for sinks.
//!
//! Consumers kept between tasks of one process. A new librdkafka consumer
//! starts threads, connects, and learns partition leaders before its first
//! fetch, which costs ~100 ms: more than a small batch's whole work. A task
//! takes a consumer for its cluster and options, assigns its ranges, and
//! gives it back unassigned when it read them cleanly; one that failed is
//! dropped, so a broken connection is never reused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};

use super::client::client_config;

/// Idle consumers kept per cluster and options; more are dropped.
const IDLE_PER_KEY: usize = 8;

static IDLE: LazyLock<Mutex<HashMap<String, Vec<StreamConsumer>>>> = LazyLock::new(Mutex::default);

/// A consumer lent to one task; back to the pool with `give_back`.
pub struct PooledConsumer {
    key: String,
    consumer: StreamConsumer,
}

pub(super) fn key(bootstrap: &str, options: &BTreeMap<String, String>) -> String {
    let mut key = bootstrap.to_string();
    for (k, v) in options {
        key.push_str(&format!("\u{1}{k}={v}"));
    }
    key
}

/// A consumer for reading exact ranges with `assign`: no group offsets, and
/// offsets that retention removed are an error, never a silent reset.
pub fn take(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
) -> Result<PooledConsumer, KafkaError> {
    let key = key(bootstrap, options);
    let idle = IDLE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(&key)
        .and_then(Vec::pop);
    let consumer = match idle {
        Some(consumer) => consumer,
        None => reader_config(bootstrap, options).create()?,
    };
    Ok(PooledConsumer { key, consumer })
}

/// How a consumer that reads exact ranges is configured.
pub(super) fn reader_config(bootstrap: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        // Ranges are bounded and already written: a long poll only delays
        // a newly assigned partition's first fetch behind the outstanding
        // one.
        .set("fetch.wait.max.ms", "5")
        // Partitions stay assigned between tasks (see `partitions`), each
        // prefetching into a queue of its own: librdkafka's default of
        // 64 MiB per partition held most of a backlog in memory at once,
        // and the first run of a process cost more CPU (B1, 32 partitions:
        // 6.5-7.7 CPU-s against 4.0-4.8 at 4 MiB). 4 MiB keeps several
        // fetches ahead of a task; 1 MiB starved it (twice the wall time).
        .set("queued.max.messages.kbytes", "4096");
    for (k, v) in options {
        config.set(k, v);
    }
    config
        .set("group.id", "spate-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        // The end of a partition says when a range's last offsets are
        // transaction markers, which no consumer is ever given.
        .set("enable.partition.eof", "true");
    config
}

impl PooledConsumer {
    pub fn get(&self) -> &StreamConsumer {
        &self.consumer
    }

    /// The task read its ranges cleanly: the consumer stops fetching and
    /// waits for the next task. Dropped instead, it closes.
    pub fn give_back(self) {
        if self.consumer.unassign().is_err() {
            return;
        }
        let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.entry(self.key).or_default();
        if kept.len() < IDLE_PER_KEY {
            kept.push(self.consumer);
        }
    }
}

/// One plain producer per cluster and options, shared by every task of the
/// process: a producer is thread-safe, and a new one costs threads,
/// connections and metadata before its first record (~0.5 s a batch).
static PRODUCERS: LazyLock<Mutex<HashMap<String, FutureProducer>>> = LazyLock::new(Mutex::default);

pub fn producer(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
) -> Result<FutureProducer, KafkaError> {
    let key = key(bootstrap, options);
    let mut producers = PRODUCERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(producer) = producers.get(&key) {
        return Ok(producer.clone());
    }
    let producer: FutureProducer = client_config(bootstrap, options)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    producers.insert(key, producer.clone());
    Ok(producer)
}

/// Transactional producers by `transactional.id`, each lent to one task at
/// a time: a transaction belongs to its producer.
static TRANSACTIONAL: LazyLock<Mutex<HashMap<String, FutureProducer>>> =
    LazyLock::new(Mutex::default);

/// A transactional producer for `id`, ready for `begin_transaction`. A new
/// one registers with the broker (`init_transactions`), which fences any
/// other producer of the same id: a zombie of an earlier attempt can no
/// longer commit.
pub async fn take_transactional(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
    id: &str,
) -> Result<FutureProducer, KafkaError> {
    let idle = TRANSACTIONAL
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&transactional_key(bootstrap, options, id));
    if let Some(producer) = idle {
        return Ok(producer);
    }
    let producer: FutureProducer = client_config(bootstrap, options)
        .set("transactional.id", id)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let initializing = producer.clone();
    tokio::task::spawn_blocking(move || initializing.init_transactions(TRANSACTION_TIMEOUT))
        .await
        .map_err(|_| KafkaError::Canceled)??;
    Ok(producer)
}

/// Keeps a producer whose transaction ended cleanly for the next task of
/// its id; one that failed is dropped instead.
pub fn give_back_transactional(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
    id: &str,
    producer: FutureProducer,
) {
    TRANSACTIONAL
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(transactional_key(bootstrap, options, id), producer);
}

fn transactional_key(bootstrap: &str, options: &BTreeMap<String, String>, id: &str) -> String {
    format!("{}\u{2}{id}", key(bootstrap, options))
}

/// How long one transactional call (init, commit, offsets) may take.
pub const TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Consumers by consumer group, kept per process, for reading and
/// committing an exactly-once sink's progress (the group's offsets).
static GROUPS: LazyLock<Mutex<HashMap<String, Arc<BaseConsumer>>>> = LazyLock::new(Mutex::default);

/// Consumers kept at the most; the oldest go first.
const GROUPS_KEPT: usize = 256;

pub fn group_consumer(
    bootstrap: &str,
    options: &BTreeMap<String, String>,
    group: &str,
) -> Result<Arc<BaseConsumer>, KafkaError> {
    let key = format!("{}\u{3}{group}", key(bootstrap, options));
    let mut groups = GROUPS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(consumer) = groups.get(&key) {
        return Ok(Arc::clone(consumer));
    }
    if groups.len() >= GROUPS_KEPT
        && let Some(any) = groups.keys().next().cloned()
    {
        groups.remove(&any);
    }
    let consumer: Arc<BaseConsumer> = Arc::new(
        client_config(bootstrap, options)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()?,
    );
    groups.insert(key, Arc::clone(&consumer));
    Ok(consumer)
}
