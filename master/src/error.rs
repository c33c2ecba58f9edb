use spate_engine::EngineError;

pub type Result<T, E = MasterError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<MasterError> for tonic::Status {
    fn from(e: MasterError) -> Self {
        match e {
            MasterError::Engine(EngineError::Plan(m)) => tonic::Status::invalid_argument(m),
            MasterError::Engine(e @ EngineError::PathEscape { .. }) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            MasterError::Engine(e @ EngineError::UnknownTopic { .. }) => {
                tonic::Status::not_found(e.to_string())
            }
            MasterError::Engine(e @ EngineError::Kafka { .. }) => {
                tonic::Status::failed_precondition(e.to_string())
            }
            other => tonic::Status::internal(other.to_string()),
        }
    }
}
