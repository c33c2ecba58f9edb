//! A Kafka topic as a streaming sink. Each task produces its rows and
//! waits for the broker's acknowledgement, so a committed batch is in
//! Kafka; a batch re-run after a failure produces its rows again (at least
//! once). An update-mode job keyed by `_key` into a compacted topic still
//! ends with each key's latest row.

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::{KafkaSinkSpec, produce_batches};
use crate::error::Result;
use crate::sink::{Attempt, Committing, Sink, SinkPart};

#[derive(Debug)]
pub struct KafkaSink {
    pub spec: KafkaSinkSpec,
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(
        &self,
        _attempt: &Attempt,
        _schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<SinkPart> {
        let rows = produce_batches(&self.spec, batches).await?;
        Ok(SinkPart {
            files: Vec::new(),
            rows,
        })
    }

    /// Each task's records are in Kafka once it succeeded.
    async fn commit(&self, _batch: &Committing<'_>, _parts: Vec<SinkPart>) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.spec.topic)
    }
}
