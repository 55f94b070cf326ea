//! HTTPS on the listener: the rustls server configuration and the
//! certificate it presents, which a reload replaces without a restart.
//!
//! rustls asks the [`ServerCertificate`] resolver for the certificate at each
//! handshake; the resolver holds it in an `ArcSwap`, so a reload swaps it for
//! the handshakes to come while open connections, whose handshake is done,
//! carry on untouched. Nothing is dropped, nothing waits on a lock.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::config::HttpTlsConfig;
use crate::tls::{load_certificates, load_private_key, PemError};

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("key `http.tls.cert`: {0}")]
    Certificate(#[source] PemError),
    #[error("key `http.tls.key`: {0}")]
    Key(#[source] PemError),
    /// An unsupported key type, or a key that is not the certificate's.
    #[error("key `http.tls.key`: {} does not fit the certificate in {}: {source}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The certificate the listener presents, re-read from its files on reload.
pub struct ServerCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl ServerCertificate {
    /// Reads the files `config` names (which must be set).
    pub fn load(config: &HttpTlsConfig) -> Result<Self, CertificateError> {
        let current = certified_key(&config.cert, &config.key)?;
        Ok(Self {
            cert_file: config.cert.clone(),
            key_file: config.key.clone(),
            current: ArcSwap::from_pointee(current),
        })
    }

    /// Reads the files again and, when they load, presents the new
    /// certificate from the next handshake on. When they do not, the
    /// certificate in force stays, and the error says why.
    pub fn reload(&self) -> Result<Swap, CertificateError> {
        let next = Arc::new(certified_key(&self.cert_file, &self.key_file)?);
        let previous = self.current.swap(next.clone());
        Ok(Swap {
            previous: fingerprint(&previous),
            new: fingerprint(&next),
        })
    }

    /// The SHA-256 fingerprint (hex) of the leaf certificate in force.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.current.load())
    }
}

/// The certificates before and after a reload, by fingerprint (equal when the files did not change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub previous: String,
    pub new: String,
}

impl fmt::Debug for ServerCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listener's rustls configuration: TLS 1.3 and 1.2 (rustls implements
/// nothing older, so TLS 1.0/1.1 clients are refused at the handshake), no
/// client certificates, the certificate from `certificate`. ALPN is left to
/// actix-web, which offers h2 (its `http2` feature) and http/1.1.
pub fn server_config(certificate: Arc<ServerCertificate>) -> ServerConfig {
    ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certificate)
}

/// The chain of `cert` and the key of `key`, checked to belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, CertificateError> {
    let chain = load_certificates(cert).map_err(CertificateError::Certificate)?;
    let private_key = load_private_key(key).map_err(CertificateError::Key)?;
    CertifiedKey::from_der(chain, private_key, &crate::tls::provider()).map_err(|source| {
        CertificateError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        }
    })
}

fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|leaf| hex::encode(Sha256::digest(leaf.as_ref())))
        .unwrap_or_default()
}
