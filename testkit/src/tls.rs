//! A throwaway certificate authority and a master certificate it signed,
//! for `localhost` and `127.0.0.1`, as PEM files in a temporary folder.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct TestCertificates {
    /// The CA certificate clients verify the master with (`--tls-ca`).
    pub ca: PathBuf,
    /// The master's certificate (`--tls-cert`) and key (`--tls-key`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A second CA that signed nothing: a client trusting only it is refused.
    pub other_ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn authority(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

impl TestCertificates {
    pub fn generate() -> TestCertificates {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = authority("Spate test CA");
        let (other, _) = authority("Some other CA");
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "spate master");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        TestCertificates {
            ca: write("ca.pem", ca.pem()),
            cert: write("master.pem", cert.pem()),
            key: write("master-key.pem", key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
            _dir: dir,
        }
    }
}
