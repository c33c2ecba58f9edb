//! The master's certificate, loaded once for both of its ports: tonic
//! serves gRPC with it, tokio-rustls the web UI. rustls with ring, as the
//! clients use, so the build needs no C toolchain beyond cc.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tonic::transport::{Identity, ServerTlsConfig};

use crate::TlsFiles;
use crate::error::{MasterError, Result};

/// A certificate chain and its key, read and checked.
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ui: Arc<ServerConfig>,
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Tls> {
        let read = |what: &str, path: &std::path::Path, flag: &str| {
            if path.as_os_str().is_empty() {
                return Err(MasterError::Config(format!(
                    "TLS needs both a certificate and its key: {flag} is missing"
                )));
            }
            std::fs::read(path).map_err(|e| {
                MasterError::Config(format!(
                    "cannot read the TLS {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let cert_pem = read("certificate", &files.cert, "--tls-cert")?;
        let key_pem = read("private key", &files.key, "--tls-key")?;
        let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
            MasterError::Config(format!(
                "the TLS {what} {} is no PEM {what}: {e}",
                path.display()
            ))
        };
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate", &files.cert, &e))?;
        if chain.is_empty() {
            return Err(bad(
                "certificate",
                &files.cert,
                &"it holds no CERTIFICATE block",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| bad("private key", &files.key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut ui = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| {
                MasterError::Config(format!(
                    "the TLS key {} does not fit the certificate {}: {e}",
                    files.key.display(),
                    files.cert.display()
                ))
            })?;
        ui.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert_pem,
            key_pem,
            ui: Arc::new(ui),
        })
    }

    /// For tonic's server.
    pub fn grpc(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// For the web UI's listener.
    pub fn ui(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.ui))
    }
}
