//! Spate's `PhysicalExtensionCodec`: how its own operators travel inside
//! datafusion-proto plan bytes. A decoded `KafkaScanExec` receives the
//! offset ranges of the task that decodes it, so one planned stage serves
//! every task of every batch.

use std::sync::Arc;

use datafusion::common::JoinSide;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use spate_proto::plan_node::Node;
use spate_proto::{KafkaScan, PlanNode, ShuffleWriter};

use crate::OffsetRange;
use crate::error::{EngineError, Result};
use crate::first_rows::{self, FirstRowsExec, FirstRowsScope, FirstRowsSpec};
use crate::join::{JoinScope, StreamJoinExec, StreamJoinSpec, side_dir};
use crate::kafka::KafkaScanExec;
use crate::shuffle::{ShuffleReaderExec, ShuffleScope, ShuffleWriterExec};
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
        // datafusion-proto and arrow-ipc panic on some malformed plans
        // instead of erring (found by fuzz/decode_plan: a grouping set of
        // no expressions, an Int of bit width 255): plan bytes from the
        // wire get an error either way.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(bytes, ctx, self)
        }));
        match decoded {
            Ok(plan) => Ok(plan?),
            Err(panic) => Err(EngineError::Internal(format!(
                "the task's plan does not decode: {}",
                crate::panic_message(panic.as_ref())
            ))),
        }
    }
}

/// A plan node this codec cannot read: the peer runs another version.
fn undecodable(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!(
        "undecodable Spate plan node ({e}); are master and worker the same Spate version?"
    ))
}

impl PhysicalExtensionCodec for SpateCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = PlanNode::decode(buf)
            .map_err(undecodable)?
            .node
            .ok_or_else(|| undecodable("empty node"))?;
        match node {
            Node::KafkaScan(scan) => {
                let source = scan
                    .source
                    .ok_or_else(|| undecodable("scan without a source"))?;
                let partitions = if self.in_task {
                    1
                } else {
                    (scan.planned_partitions as usize).max(1)
                };
                Ok(Arc::new(
                    KafkaScanExec::new(
                        Arc::new(source.try_into()?),
                        Some(scan.projection.iter().map(|c| *c as usize).collect()),
                        self.ranges.clone(),
                        partitions,
                    )?
                    .with_watermark(self.watermark_ms),
                ))
            }
            Node::ShuffleWriter(writer) => {
                let [repartition] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a shuffle writer has one input".into(),
                    ));
                };
                Ok(Arc::new(ShuffleWriterExec::new(
                    writer.stage,
                    Arc::clone(repartition),
                    self.shuffle.clone(),
                )?))
            }
            Node::ShuffleReader(reader) => Ok(Arc::new(ShuffleReaderExec::new(
                reader.try_into()?,
                self.shuffle.clone(),
            ))),
            Node::StatefulAggregate(stateful) => {
                let spec: StatefulSpec = stateful.try_into()?;
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
            Node::FirstRows(first) => {
                let spec = FirstRowsSpec::from(first);
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a first-rows operator has one input".into(),
                    ));
                };
                let scope = self.state.as_ref().map(|task| {
                    let [pending, written] =
                        first_rows::state_dirs(&task.job, spec.operator, task.partition);
                    let state = |dir| PartitionState {
                        workspace: task.workspace.clone(),
                        dir,
                        cache: Arc::clone(&task.cache),
                    };
                    FirstRowsScope {
                        pending: state(pending),
                        written: state(written),
                        batch: task.batch,
                        watermark_ms: self.watermark_ms,
                    }
                });
                Ok(Arc::new(FirstRowsExec::new(spec, Arc::clone(input), scope)))
            }
            Node::StreamJoin(join) => {
                let spec = StreamJoinSpec::from(join);
                let [join] = inputs else {
                    return Err(DataFusionError::Internal(
                        "a stream join has one input".into(),
                    ));
                };
                let scope = self.state.as_ref().map(|task| {
                    let side = |side| PartitionState {
                        workspace: task.workspace.clone(),
                        dir: side_dir(&task.job, spec.operator, side, task.partition),
                        cache: Arc::clone(&task.cache),
                    };
                    JoinScope {
                        left: side(JoinSide::Left),
                        right: side(JoinSide::Right),
                        batch: task.batch,
                        watermark_ms: self.watermark_ms,
                    }
                });
                Ok(Arc::new(StreamJoinExec::new(
                    spec,
                    Arc::clone(join),
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
        let node = if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            Node::KafkaScan(KafkaScan {
                source: Some(scan.source().as_ref().try_into()?),
                projection: scan.projection().iter().map(|c| *c as u32).collect(),
                planned_partitions: scan.planned_partitions() as u32,
            })
        } else if let Some(writer) = node.downcast_ref::<ShuffleWriterExec>() {
            Node::ShuffleWriter(ShuffleWriter {
                stage: writer.stage(),
            })
        } else if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            Node::ShuffleReader((&reader.spec()).try_into()?)
        } else if let Some(stateful) = node.downcast_ref::<StatefulAggregateExec>() {
            Node::StatefulAggregate(stateful.spec().into())
        } else if let Some(join) = node.downcast_ref::<StreamJoinExec>() {
            Node::StreamJoin(join.spec().into())
        } else if let Some(first) = node.downcast_ref::<FirstRowsExec>() {
            Node::FirstRows(first.spec().into())
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "Spate cannot ship operator {} to workers",
                node.name()
            )));
        };
        PlanNode { node: Some(node) }
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(e.to_string()))
    }
}
