//! How a worker or a client dials the master: plain `http://`, or
//! `https://` with TLS, verifying the master's certificate against a CA
//! file (`--tls-ca`), and the cluster secret on every call.

use std::path::Path;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::auth::WithSecret;
use crate::client_service_client::ClientServiceClient;

/// A client of the master's ClientService that carries the secret.
pub type Client = ClientServiceClient<InterceptedService<Channel, WithSecret>>;

/// Why dialing failed: a setting that cannot work, or a master that did
/// not answer (worth another try).
#[derive(Debug)]
pub enum DialError {
    Config(String),
    Unreachable { url: String, cause: String },
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Config(message) => f.write_str(message),
            DialError::Unreachable { url, cause } => {
                write!(f, "cannot reach the master at {url}: {cause}")
            }
        }
    }
}

impl std::error::Error for DialError {}

/// An endpoint for the master at `url` (not yet connected). `ca`: the
/// certificate authority that signed the master's certificate, for
/// `https://` URLs; without one, the public web's roots.
pub fn endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint, DialError> {
    let mut endpoint = Channel::from_shared(url.to_string())
        .map_err(|e| DialError::Config(format!("'{url}' is no master URL: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match ca {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    DialError::Config(format!(
                        "cannot read the CA certificate {}: {e}",
                        ca.display()
                    ))
                })?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            // A certificate from a public authority needs no --tls-ca.
            None => tls.with_webpki_roots(),
        };
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| DialError::Config(format!("TLS for {url}: {e}")))?;
    } else if let Some(ca) = ca {
        return Err(DialError::Config(format!(
            "a CA certificate ({}) is given, but the master URL '{url}' is plain http: use https://",
            ca.display()
        )));
    }
    Ok(endpoint)
}

/// Connects `endpoint`, with the innermost cause on failure (where a
/// certificate's trouble shows).
pub async fn connect(endpoint: &Endpoint) -> Result<Channel, DialError> {
    endpoint.connect().await.map_err(|e| {
        let mut cause: &dyn std::error::Error = &e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        let mut cause = cause.to_string();
        if cause.contains("UnknownIssuer") {
            cause.push_str(
                " (pass the CA certificate that signed the master's with --tls-ca, \
                 or SPATE_CLIENT_TLS_CA)",
            );
        }
        DialError::Unreachable {
            url: endpoint.uri().to_string(),
            cause,
        }
    })
}

/// Connects to the master's ClientService, with `secret` on every call.
pub async fn client(url: &str, ca: Option<&Path>, secret: &str) -> Result<Client, DialError> {
    let secret = WithSecret::new(secret).map_err(DialError::Config)?;
    let channel = connect(&endpoint(url, ca)?).await?;
    Ok(ClientServiceClient::with_interceptor(channel, secret))
}
