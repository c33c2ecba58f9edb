//! The engine's one error type. Messages are written for the person who
//! typed the SQL: they say what was wrong and where.

use datafusion::error::DataFusionError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job's SQL or options are wrong; the message names the statement or option.
    #[error("{0}")]
    Plan(String),
    /// A path from SQL or the command line that would leave the workspace.
    #[error("path '{path}' is outside the workspace: {why}")]
    PathEscape { path: String, why: String },
    /// Kafka could not be reached or refused a request.
    #[error("kafka ({bootstrap}): {message}")]
    Kafka { bootstrap: String, message: String },
    /// The topic is not on the cluster (as opposed to the cluster being unreachable).
    #[error("kafka ({bootstrap}): topic '{topic}' does not exist")]
    UnknownTopic { bootstrap: String, topic: String },
    /// A record that does not decode in the table's format.
    #[error(
        "malformed record in topic '{topic}' partition {partition} at offset {offset}: {reason}"
    )]
    MalformedRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error("workspace storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl EngineError {
    pub fn plan(message: impl Into<String>) -> Self {
        EngineError::Plan(message.into())
    }

    /// Turns an error that crossed DataFusion (which wraps ours as `External`)
    /// back into the engine error, so users read the original message.
    pub fn unwrap_datafusion(self) -> Self {
        match self {
            EngineError::DataFusion(e) => match e.find_root() {
                DataFusionError::External(inner) => match inner.downcast_ref::<EngineError>() {
                    Some(engine) => EngineError::plan(engine.to_string()),
                    None => EngineError::plan(inner.to_string()),
                },
                DataFusionError::Plan(m) | DataFusionError::Configuration(m) => {
                    EngineError::plan(m.clone())
                }
                DataFusionError::SQL(e, _) => EngineError::plan(e.to_string()),
                _ => EngineError::DataFusion(e),
            },
            other => other,
        }
    }
}

impl From<EngineError> for DataFusionError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
