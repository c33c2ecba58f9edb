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

#[derive(Debug, Default)]
pub struct SpateCodec {
    /// The ranges given to every `KafkaScanExec` this codec decodes.
    ranges: Vec<OffsetRange>,
}

#[derive(Serialize, Deserialize)]
enum SpateNode {
    KafkaScan {
        source: KafkaSourceSpec,
        projection: Vec<usize>,
    },
}

impl SpateCodec {
    pub fn for_task(ranges: Vec<OffsetRange>) -> Self {
        SpateCodec { ranges }
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
        _inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node: SpateNode = serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Internal(format!("undecodable Spate plan node: {e}")))?;
        match node {
            SpateNode::KafkaScan { source, projection } => Ok(Arc::new(KafkaScanExec::new(
                Arc::new(source),
                Some(projection),
                self.ranges.clone(),
            )?)),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(scan) = node.downcast_ref::<KafkaScanExec>() {
            let node = SpateNode::KafkaScan {
                source: scan.source().as_ref().clone(),
                projection: scan.projection().to_vec(),
            };
            serde_json::to_writer(buf, &node)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
            return Ok(());
        }
        Err(DataFusionError::NotImplemented(format!(
            "Spate cannot ship operator {} to workers",
            node.name()
        )))
    }
}
