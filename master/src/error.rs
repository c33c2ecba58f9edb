use spate_engine::{EngineError, ErrorKind};

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
    /// A setting the master cannot start with (a TLS file, say).
    #[error("{0}")]
    Config(String),
    /// A client asked for more than the cluster's limits allow.
    #[error("{0}")]
    Limit(String),
}

impl MasterError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MasterError::Engine(e) => e.kind(),
            MasterError::Bind { .. } | MasterError::Io(_) | MasterError::Limit(_) => {
                ErrorKind::Execution
            }
            MasterError::Config(_) => ErrorKind::Plan,
            MasterError::Transport(_) => ErrorKind::Internal,
        }
    }
}

/// The gRPC code of each kind: what the user wrote is an invalid argument;
/// Kafka or storage trouble is worth a retry (unavailable).
impl From<MasterError> for tonic::Status {
    fn from(e: MasterError) -> Self {
        let message = e.to_string();
        if let MasterError::Limit(_) = e {
            return tonic::Status::resource_exhausted(message);
        }
        match e.kind() {
            ErrorKind::Plan => tonic::Status::invalid_argument(message),
            ErrorKind::NotFound => tonic::Status::not_found(message),
            ErrorKind::AlreadyExists => tonic::Status::already_exists(message),
            ErrorKind::Execution => tonic::Status::unavailable(message),
            ErrorKind::Internal => tonic::Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_grpc_codes() {
        let code = |e: EngineError| tonic::Status::from(MasterError::from(e)).code();
        assert_eq!(code(EngineError::plan("bad")), tonic::Code::InvalidArgument);
        assert_eq!(
            code(EngineError::NotFound("no job".into())),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(EngineError::AlreadyExists("running".into())),
            tonic::Code::AlreadyExists
        );
        let unknown_topic = EngineError::UnknownTopic {
            bootstrap: "k:9092".into(),
            topic: "t".into(),
        };
        assert_eq!(code(unknown_topic), tonic::Code::NotFound);
        let kafka = EngineError::Kafka {
            bootstrap: "k:9092".into(),
            message: "down".into(),
        };
        assert_eq!(code(kafka), tonic::Code::Unavailable);
        assert_eq!(code(EngineError::internal("bug")), tonic::Code::Internal);
    }
}
