//! TLS material shared by the listener and the clients: the crypto provider
//! and the PEM files (certificate chains, private keys) operators point the
//! configuration at.
//!
//! Every error names the file it is about, so that an operator who gave the
//! wrong path, or a key where a certificate was expected, sees which file to fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The provider every rustls configuration of the worker is built with.
/// The dependency graph compiles rustls with both `ring` and `aws-lc-rs`, so
/// rustls cannot pick one by itself: where we build a configuration we name it.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default, for crates that build their
/// own rustls configuration with `ClientConfig::builder()` (the `redis`
/// crate), which panics while no default is installed. Idempotent: a
/// default installed before (by us or a test) stays.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid PEM: {source}", path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no {what} (PEM block `{block}`)", path.display())]
    Missing {
        path: PathBuf,
        what: &'static str,
        block: &'static str,
    },
}

/// A PEM file as read from disk: its bytes (what the `redis` crate takes)
/// and the path its errors name.
pub struct PemFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl PemFile {
    pub fn read(path: &Path) -> Result<Self, PemError> {
        let bytes = std::fs::read(path).map_err(|source| PemError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
        })
    }

    /// Every certificate in the file, in order (a chain: the leaf first);
    /// at least one.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, PemError> {
        let certificates = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| self.malformed(source))?;
        if certificates.is_empty() {
            return Err(PemError::Missing {
                path: self.path.clone(),
                what: "certificate",
                block: "CERTIFICATE",
            });
        }
        Ok(certificates)
    }

    /// The first private key in the file (PKCS#8, PKCS#1 or SEC1).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, PemError> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|source| match source {
            rustls_pki_types::pem::Error::NoItemsFound => PemError::Missing {
                path: self.path.clone(),
                what: "private key",
                block: "PRIVATE KEY",
            },
            other => self.malformed(other),
        })
    }

    fn malformed(&self, source: rustls_pki_types::pem::Error) -> PemError {
        PemError::Malformed {
            path: self.path.clone(),
            source,
        }
    }
}

/// The certificates of the PEM file at `path`.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    PemFile::read(path)?.certificates()
}

/// The private key of the PEM file at `path`.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PemFile::read(path)?.private_key()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Each way a file can be wrong is told apart, and names the file.
    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("aw-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("absent.pem");
        let error = load_certificates(&missing).unwrap_err();
        assert!(matches!(error, PemError::Read { .. }), "{error}");
        assert!(error.to_string().contains("absent.pem"), "{error}");

        let empty = write(&dir, "empty.pem", "not PEM at all\n");
        let error = load_certificates(&empty).unwrap_err().to_string();
        assert!(
            error.contains("empty.pem") && error.contains("no certificate"),
            "{error}"
        );
        let error = load_private_key(&empty).unwrap_err().to_string();
        assert!(error.contains("no private key"), "{error}");

        let torn = write(&dir, "torn.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let error = load_certificates(&torn).unwrap_err();
        assert!(matches!(error, PemError::Malformed { .. }), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
