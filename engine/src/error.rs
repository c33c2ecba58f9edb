//! The engine's one error type. Messages are written for the person who
//! typed the SQL: they say what was wrong and where. Every error has a
//! kind, which decides the gRPC code a client sees and whether a task that
//! failed with it is worth running again.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// What the user wrote is wrong: SQL, options, a record that does not
    /// decode. Running again gives the same error.
    Plan,
    /// Running failed on something outside Spate: Kafka, storage, a panic
    /// in an operator. Running again may succeed.
    Execution,
    /// A bug of Spate's, or a checkpoint file it cannot read.
    Internal,
    NotFound,
    AlreadyExists,
}

impl ErrorKind {
    /// Whether running the failed work again may succeed.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::Execution | ErrorKind::Internal)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job's SQL or options are wrong; the message names the statement or option.
    #[error("{0}")]
    Plan(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Running failed; the message says what and where.
    #[error("{0}")]
    Execution(String),
    #[error("{0}")]
    Internal(String),
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
    #[error("{}", readable(.0))]
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

    pub fn internal(message: impl Into<String>) -> Self {
        EngineError::Internal(message.into())
    }

    pub fn execution(message: impl Into<String>) -> Self {
        EngineError::Execution(message.into())
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Plan(_)
            | EngineError::PathEscape { .. }
            | EngineError::MalformedRecord { .. } => ErrorKind::Plan,
            EngineError::NotFound(_) | EngineError::UnknownTopic { .. } => ErrorKind::NotFound,
            EngineError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            EngineError::Execution(_)
            | EngineError::Kafka { .. }
            | EngineError::Io(_)
            | EngineError::Arrow(_) => ErrorKind::Execution,
            EngineError::Internal(_) | EngineError::Json(_) => ErrorKind::Internal,
            EngineError::Storage(e) => match e {
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. } => ErrorKind::AlreadyExists,
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                _ => ErrorKind::Execution,
            },
            EngineError::DataFusion(e) => match e.find_root() {
                DataFusionError::External(inner) => inner
                    .downcast_ref::<EngineError>()
                    .map_or(ErrorKind::Execution, EngineError::kind),
                DataFusionError::Plan(_)
                | DataFusionError::SQL(..)
                | DataFusionError::SchemaError(..)
                | DataFusionError::Configuration(_)
                | DataFusionError::NotImplemented(_) => ErrorKind::Plan,
                DataFusionError::Internal(_) => ErrorKind::Internal,
                _ => ErrorKind::Execution,
            },
        }
    }

    /// Turns an error that crossed DataFusion (which wraps ours as `External`)
    /// back into the engine error, so users read the original message.
    pub fn unwrap_datafusion(self) -> Self {
        match self {
            EngineError::DataFusion(e) => match e.find_root() {
                DataFusionError::External(inner) => match inner.downcast_ref::<EngineError>() {
                    Some(engine) => match engine.kind() {
                        ErrorKind::Plan => EngineError::plan(engine.to_string()),
                        ErrorKind::NotFound => EngineError::NotFound(engine.to_string()),
                        ErrorKind::AlreadyExists => EngineError::AlreadyExists(engine.to_string()),
                        ErrorKind::Execution => EngineError::execution(engine.to_string()),
                        ErrorKind::Internal => EngineError::internal(engine.to_string()),
                    },
                    None => EngineError::execution(inner.to_string()),
                },
                DataFusionError::Plan(m) | DataFusionError::Configuration(m) => {
                    EngineError::plan(m.clone())
                }
                DataFusionError::SQL(e, _) => EngineError::plan(syntax_error(e)),
                _ => EngineError::DataFusion(e),
            },
            other => other,
        }
    }
}

/// DataFusion's message without its debug wrappers: a parser error reads
/// as a sentence with its line and column.
pub fn readable(e: &DataFusionError) -> String {
    match e.find_root() {
        DataFusionError::SQL(parser, _) => syntax_error(parser),
        _ => e.to_string(),
    }
}

/// "syntax error at line 2, column 8: expected ..., found ...", from
/// sqlparser's "Expected: ..., found: ... at Line: 2, Column: 8".
pub fn syntax_error(e: &ParserError) -> String {
    let text = match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => {
            return "syntax error: the statement nests too deeply".to_string();
        }
    };
    let (what, position) = match text.rsplit_once(" at Line: ") {
        Some((what, at)) => {
            let position = at
                .split_once(", Column: ")
                .map(|(line, column)| format!(" at line {line}, column {}", column.trim()));
            (what.to_string(), position.unwrap_or_default())
        }
        None => (text.clone(), String::new()),
    };
    let what = what
        .replacen("Expected: ", "expected ", 1)
        .replacen(", found: ", ", found ", 1);
    format!("syntax error{position}: {what}")
}

impl From<EngineError> for DataFusionError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_read_as_sentences() {
        let e = datafusion::sql::parser::DFParser::parse_sql("SELECT 1;\nSELEC x").unwrap_err();
        assert_eq!(
            readable(&e),
            "syntax error at line 2, column 1: expected an SQL statement, found SELEC"
        );
    }

    #[test]
    fn kinds_decide_retries() {
        assert!(!EngineError::plan("bad").kind().retryable());
        let wrapped = EngineError::DataFusion(EngineError::plan("bad column").into());
        assert_eq!(wrapped.kind(), ErrorKind::Plan);
        assert!(EngineError::execution("broker down").kind().retryable());
    }
}
