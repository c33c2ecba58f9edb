//! Spate's engine: SQL to tasks and running them. Kafka tables, file tables
//! and sinks, the plan codec, the checkpoint log. It does no networking of
//! its own beyond talking to Kafka and the workspace; master and worker
//! carry its types over the wire.

pub mod checkpoint;
pub mod codec;
pub mod error;
pub mod files;
pub mod first_rows;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod insert;
pub mod ipc;
pub mod job;
pub mod join;
pub mod kafka;
pub mod keyed;
pub mod nexmark;
pub mod postgres;
pub mod query;
pub mod redact;
pub mod redis;
pub mod shuffle;
pub mod sink;
mod spilled;
pub mod stages;
pub mod state;
pub mod stateful;
pub mod task;
pub mod windows;
pub mod wire;
pub mod workspace;

use serde::{Deserialize, Serialize};

pub use error::{EngineError, ErrorKind, Result};
pub use workspace::{Workspace, WorkspaceLocation};

/// An exact range of one Kafka partition: offsets `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

impl OffsetRange {
    pub fn len(&self) -> u64 {
        (self.end - self.start).max(0) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A caught panic's message, as `std` prints it.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// This machine's name, as containers and hosts set it, for humans.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".to_string())
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Resolves once a stop signal turns true (or its sender is gone). The
/// watch guard is dropped inside, so callers' futures stay `Send`.
pub async fn stop_signalled(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
