//! How the cluster secret travels: in gRPC metadata (`authorization: Bearer
//! <secret>`), never in message bodies, added by the client's interceptor
//! and checked by the server's on every call, in constant time.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key the secret travels in, as HTTP's.
pub const AUTHORIZATION: &str = "authorization";

/// The header API clients may send the secret in instead (the UI takes it too).
pub const SECRET_HEADER: &str = "x-spate-secret";

/// Whether `given` (an `Authorization` or `X-Spate-Secret` value) carries
/// `secret`. Constant time in the secret's bytes, so timing tells nothing.
pub fn carries(secret: &[u8], given: Option<&str>) -> bool {
    let Some(given) = given else {
        return false;
    };
    let given = given.strip_prefix("Bearer ").unwrap_or(given).trim();
    bool::from(given.as_bytes().ct_eq(secret))
}

/// A client's interceptor: adds the secret, when there is one, to each call.
#[derive(Clone, Default)]
pub struct WithSecret(Option<MetadataValue<Ascii>>);

impl WithSecret {
    /// `secret` empty: calls go without one.
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Ok(WithSecret(None));
        }
        MetadataValue::try_from(format!("Bearer {secret}"))
            .map(|v| WithSecret(Some(v)))
            .map_err(|_| "the cluster secret must be printable ASCII".to_string())
    }
}

impl Interceptor for WithSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A server's interceptor: refuses calls without the secret, when the
/// cluster has one.
#[derive(Clone, Default)]
pub struct RequireSecret(Option<Arc<[u8]>>);

impl RequireSecret {
    pub fn new(secret: Option<&str>) -> Self {
        RequireSecret(
            secret
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().into()),
        )
    }
}

impl Interceptor for RequireSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = &self.0 else {
            return Ok(request);
        };
        let metadata = request.metadata();
        let given = metadata
            .get(AUTHORIZATION)
            .or_else(|| metadata.get(SECRET_HEADER))
            .and_then(|v| v.to_str().ok());
        if carries(secret, given) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "wrong or missing cluster secret: set SPATE_SECRET (or --secret) to the master's",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_travels_in_metadata_and_is_checked() {
        let mut client = WithSecret::new("s3cret").unwrap();
        let mut server = RequireSecret::new(Some("s3cret"));
        let request = client.call(Request::new(())).unwrap();
        assert!(server.call(request).is_ok());
        let wrong = WithSecret::new("nope")
            .unwrap()
            .call(Request::new(()))
            .unwrap();
        assert_eq!(
            server.call(wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(server.call(Request::new(())).is_err());
        assert!(RequireSecret::new(None).call(Request::new(())).is_ok());
        assert!(carries(b"s3cret", Some("Bearer s3cret")));
        assert!(carries(b"s3cret", Some("s3cret")));
        assert!(!carries(b"s3cret", Some("s3cre")));
    }
}
