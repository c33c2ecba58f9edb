//! Spate's wire: the gRPC services and messages of `spate.proto`.
//!
//! This crate holds the generated code, the protocol version, and how a
//! peer dials the master and carries the cluster secret (`auth`, `dial`).

pub mod auth;
pub mod dial;

/// Bumped on any wire change an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 3;

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("spate.v1");
}

pub use generated::*;
