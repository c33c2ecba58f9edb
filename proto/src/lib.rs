//! Spate's wire: the gRPC services and messages of `spate.proto`.
//!
//! This crate holds only generated code and the protocol version.

/// Bumped on any wire change an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 2;

#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("spate.v1");
}

pub use generated::*;
