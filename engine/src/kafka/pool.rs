//! Consumers kept between tasks of one process. A new librdkafka consumer
//! starts threads, connects, and learns partition leaders before its first
//! fetch, which costs ~100 ms: more than a small batch's whole work. A task
//! takes a consumer for its cluster and options, assigns its ranges, and
//! gives it back unassigned when it read them cleanly; one that failed is
//! dropped, so a broken connection is never reused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;

use super::client::client_config;

/// Idle consumers kept per cluster and options; more are dropped.
const IDLE_PER_KEY: usize = 8;

static IDLE: LazyLock<Mutex<HashMap<String, Vec<StreamConsumer>>>> = LazyLock::new(Mutex::default);

/// A consumer lent to one task; back to the pool with `give_back`.
pub struct PooledConsumer {
    key: String,
    consumer: StreamConsumer,
}

fn key(bootstrap: &str, options: &BTreeMap<String, String>) -> String {
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
        None => client_config(bootstrap, options)
            .set("group.id", "spate-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            // Ranges are bounded and already written: a long poll only
            // delays a re-assigned consumer's first fetch behind the
            // previous assignment's outstanding one.
            .set("fetch.wait.max.ms", "5")
            .create()?,
    };
    Ok(PooledConsumer { key, consumer })
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
