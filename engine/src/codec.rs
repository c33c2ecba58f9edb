//! Spate's `PhysicalExtensionCodec`: how its own operators travel inside
//! datafusion-proto plan bytes. A decoded `KafkaScanExec` receives the
//! offset ranges of the task that decodes it, so one planned stage serves
//! every task of every batch.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use crate::OffsetRange;
use crate::error::Result;
use crate::kafka::{KafkaScanExec, KafkaSourceSpec};
use crate::shuffle::{ShuffleReaderExec, ShuffleReaderSpec, ShuffleScope, ShuffleWriterExec};
use crate::state::{PartitionState, StateCache, partition_dir};
use crate::stateful::{StateScope, StatefulAggregateExec, StatefulSpec};
use crate::workspace::Workspace;

#[derive(Debug, Default)]
pub struct SpateCodec {
    /// Decoding for a task (not re-reading a planned job).
    in_task: bool,
    /// The ranges given to every `KafkaScanExec` this codec decodes.
    ranges: Vec<OffsetRange>,
    /// Where this task's shuffle files are written and read.
    shuffle: Option<ShuffleScope>,
    /// The batch's watermark, given to every `KafkaScanExec`.
    watermark_ms: Option<i64>,
    /// Where this task's stateful operators keep their state.
    state: Option<TaskState>,
}

/// What a task's stateful operators need to find their state.
#[derive(Debug, Clone)]
pub struct TaskState {
    pub workspace: Workspace,
    pub job: String,
    pub batch: u64,
    /// The shuffle partition the task runs.
    pub partition: u32,
    pub cache: Arc<StateCache>,
}

#[derive(Serialize, Deserialize)]
enum SpateNode {
    KafkaScan {
        source: Box<KafkaSourceSpec>,
        projection: Vec<usize>,
        #[serde(default)]
        planned_partitions: Option<usize>,
    },
    /// Its child, the RepartitionExec, travels as a normal plan node.
    ShuffleWriter {
        stage: u32,
    },
    ShuffleReader(ShuffleReaderSpec),
    /// Its child, the final AggregateExec, travels as a normal plan node.
    StatefulAggregate(StatefulSpec),
}

impl SpateCodec {
    pub fn for_task(ranges: Vec<OffsetRange>) -> Self {
        SpateCodec {
            in_task: true,
            ranges,
            ..SpateCodec::default()
        }
    }

    pub fn with_shuffle(mut self, scope: ShuffleScope) -> Self {
        self.shuffle = Some(scope);
        self
    }

    pub fn with_watermark(mut self, watermark_ms: Option<i64>) -> Self {
        self.watermark_ms = watermark_ms;
        self
    }

    pub fn with_state(mut self, state: TaskState) -> Self {
        self.state = Some(state);
        self
    }

    pub fn encode_plan(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
        let bytes =
            datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, self)?;
        Ok(bytes.to_vec())
    }

    pub fn decode_plan(&self, bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(
            datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(
                bytes, ctx, self,
            )?,
        )
    }
}

impl PhysicalExtensionCodec for SpateCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node: SpateNode = serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Internal(format!("undecodable Spate plan node: {e}")))?;
        match node {
            SpateNode::KafkaScan {
                source,
                projection,
                planned_partitions,
            } => {
                let partitions = if self.in_task {
                    1
                } else {
                    planned_partitions.unwrap_or(1)
                };
                Ok(Arc::new(
                    KafkaScanExec::new(
                        Arc::new(*source),
                        Some(projection),
                        self.ranges.clone(),
                        partitions,
                    )?
                    .with_watermark(self.watermark_ms),
                ))
            }
            SpateNode::ShuffleWriter { stage } => {
                let [repartition] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a shuffle writer has one input".into(),
                    ));
                };
                Ok(Arc::new(ShuffleWriterExec::new(
                    stage,
                    Arc::clone(repartition),
                    self.shuffle.clone(),
                )?))
            }
            SpateNode::ShuffleReader(spec) => {
                Ok(Arc::new(ShuffleReaderExec::new(spec, self.shuffle.clone())))
            }
            SpateNode::StatefulAggregate(spec) => {
                let [aggregate] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a stateful aggregate has one input".into(),
                    ));
                };
                let scope = self.state.as_ref().map(|task| StateScope {
                    state: PartitionState {
                        workspace: task.workspace.clone(),
                        dir: partition_dir(&task.job, spec.operator, task.partition),
                        cache: Arc::clone(&task.cache),
                    },
                    batch: task.batch,
                    watermark_ms: self.watermark_ms,
                });
                Ok(Arc::new(StatefulAggregateExec::new(
                    spec,
                    Arc::clone(aggregate),
                    scope,
                )?))
            }
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let spate_node = if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            SpateNode::KafkaScan {
                source: Box::new(scan.source().as_ref().clone()),
                projection: scan.projection().to_vec(),
                planned_partitions: Some(scan.planned_partitions()),
            }
        } else if let Some(writer) = node.downcast_ref::<ShuffleWriterExec>() {
            SpateNode::ShuffleWriter {
                stage: writer.stage(),
            }
        } else if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            SpateNode::ShuffleReader(reader.spec())
        } else if let Some(stateful) = node.downcast_ref::<StatefulAggregateExec>() {
            SpateNode::StatefulAggregate(stateful.spec().clone())
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "Spate cannot ship operator {} to workers",
                node.name()
            )));
        };
        serde_json::to_writer(buf, &spate_node)
            .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        Ok(())
    }
}
