//! TLS to PostgreSQL, through rustls, with libpq's meaning of `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` (tokio-postgres knows only
//! `sslmode=disable|prefer|require` and no files: `config::PostgresUrl` takes
//! the rest out of the URL and hands it here).
//!
//! The files are read, and the rustls configuration built, when the
//! configuration is loaded ([`PgTls::load`]): a missing or malformed file
//! fails the start (or `check-config`) naming `database.url`, not the first
//! connection. Every connection of the worker (the pool, its probe, the
//! single connections) uses the one connector built here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tls::{load_certificates, load_private_key, PemError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector every connection of the worker hands tokio-postgres.
pub type Connector = MakeRustlsConnect;

/// The stream of a connection made with [`Connector`] (what `connect_raw`'s
/// connection half is generic over).
pub type Stream = <Connector as MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// libpq's `sslmode`, weakest first: `environment = "production"` compares
/// against it (`>= Require`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is checked only when
    /// `sslrootcert` is given (then as `VerifyCa`), as libpq does.
    Require,
    /// TLS, the certificate chained to `sslrootcert`; any host name.
    VerifyCa,
    /// TLS, the certificate chained to `sslrootcert` and naming the host.
    VerifyFull,
}

impl SslMode {
    /// As libpq spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<Self, TlsConfigError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(TlsConfigError::SslMode(other.to_owned())),
        })
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether to
    /// give up without it. Certificate checks are the connector's.
    fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS parameters of a connection string, as written (values decoded).
#[derive(Debug, Default)]
pub struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl TlsParams {
    /// The names this module takes out of a connection string.
    pub const NAMES: [&'static str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

    /// Keeps `value` when `name` is one of [`NAMES`](Self::NAMES); false otherwise.
    pub fn take(&mut self, name: &str, value: String) -> bool {
        let slot = match name {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// Why the TLS parameters of `database.url` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("sslmode `{0}` is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error(
        "sslmode={0} needs sslrootcert (a CA file, or `system` for the public web roots): \
         the worker does not read ~/.postgresql/root.crt"
    )]
    NoRootCert(SslMode),
    #[error("sslrootcert=system needs sslmode=verify-full (as libpq), not {0}")]
    WeakModeWithSystemRoots(SslMode),
    #[error("sslcert and sslkey go together: the worker has no default client certificate files")]
    HalfClientCert,
    #[error("{param}: {source}")]
    Pem {
        param: &'static str,
        #[source]
        source: PemError,
    },
    #[error("sslrootcert {}: {reason}", .path.display())]
    RootCert { path: PathBuf, reason: String },
    #[error("sslcert {} / sslkey {}: {source}", .cert.display(), .key.display())]
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot set TLS up: {0}")]
    Rustls(#[source] rustls::Error),
}

/// Where the server's certificate must chain to.
#[derive(Debug, Clone)]
enum Roots {
    /// Nowhere: the certificate is not checked (`prefer`, `require` alone).
    Unchecked,
    /// The CAs of the `sslrootcert` file.
    File(PathBuf),
    /// `sslrootcert=system`: the public web roots (`webpki-roots`).
    System,
}

/// `database.url`'s TLS settings, files read, ready to connect with.
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    roots: Roots,
    connector: Connector,
}

impl fmt::Debug for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl PgTls {
    /// Reads the files `params` names and builds the connector, with libpq's
    /// defaults: `prefer`, or `verify-full` with `sslrootcert=system`.
    pub fn load(params: &TlsParams) -> Result<Self, TlsConfigError> {
        let system = params.sslrootcert.as_deref() == Some("system");
        let mode = match params.sslmode.as_deref() {
            Some(mode) => SslMode::parse(mode)?,
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system && mode != SslMode::VerifyFull {
            return Err(TlsConfigError::WeakModeWithSystemRoots(mode));
        }
        let roots = match params.sslrootcert.as_deref() {
            Some("system") => Roots::System,
            Some(path) => Roots::File(PathBuf::from(path)),
            None if mode >= SslMode::VerifyCa => return Err(TlsConfigError::NoRootCert(mode)),
            None => Roots::Unchecked,
        };
        let provider = crate::tls::provider();
        let verifier: Arc<dyn ServerCertVerifier> = match (&roots, mode) {
            // libpq checks no certificate in these modes.
            (_, SslMode::Disable | SslMode::Prefer) | (Roots::Unchecked, _) => {
                Arc::new(AnyCertificate(provider.clone()))
            }
            (Roots::System, _) => webpki(
                RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                &provider,
            )?,
            (Roots::File(path), SslMode::VerifyFull) => webpki(root_store(path)?, &provider)?,
            // `verify-ca`, and `require` with a root certificate (as libpq).
            (Roots::File(path), _) => Arc::new(ChainOnly(webpki(root_store(path)?, &provider)?)),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&params.sslcert, &params.sslkey) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
                let chain = load_certificates(&cert).map_err(|source| TlsConfigError::Pem {
                    param: "sslcert",
                    source,
                })?;
                let private_key = load_private_key(&key).map_err(|source| TlsConfigError::Pem {
                    param: "sslkey",
                    source,
                })?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|source| TlsConfigError::ClientCert { cert, key, source })?
            }
            _ => return Err(TlsConfigError::HalfClientCert),
        };
        Ok(Self {
            mode,
            roots,
            connector: MakeRustlsConnect::new(config),
        })
    }

    /// The `sslmode` in force (libpq's default `prefer` when none is given).
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// What tokio-postgres is told of TLS (see [`SslMode::driver_mode`]).
    pub fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        self.mode.driver_mode()
    }

    /// The connector: a cheap clone sharing one rustls configuration.
    pub fn connector(&self) -> Connector {
        self.connector.clone()
    }

    /// Why `error` (from connecting) is a failed TLS negotiation, when it is
    /// one: such a failure does not heal by retrying.
    pub fn failure(&self, error: &tokio_postgres::Error) -> Option<TlsFailure> {
        let mut source = std::error::Error::source(error);
        // tokio-postgres says so in a plain message when the server answers
        // the TLS request with "no".
        if source.is_some_and(|s| s.to_string() == "server does not support TLS") {
            return Some(TlsFailure::NotOffered);
        }
        while let Some(cause) = source {
            let rustls_error = cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .or_else(|| cause.downcast_ref::<rustls::Error>());
            if let Some(rustls_error) = rustls_error {
                return Some(self.classify(rustls_error));
            }
            source = cause.source();
        }
        None
    }

    fn classify(&self, error: &rustls::Error) -> TlsFailure {
        match error {
            rustls::Error::InvalidCertificate(certificate) => match certificate {
                CertificateError::NotValidForName => TlsFailure::WrongName { presented: vec![] },
                CertificateError::NotValidForNameContext { presented, .. } => {
                    TlsFailure::WrongName {
                        presented: presented.clone(),
                    }
                }
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsFailure::UnknownIssuer {
                        system: matches!(self.roots, Roots::System),
                    }
                }
                other => TlsFailure::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::AlertReceived(alert) => TlsFailure::Alert(format!("{alert:?}")),
            other => TlsFailure::Other(other.to_string()),
        }
    }
}

/// Why a TLS negotiation with PostgreSQL failed, in the operator's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server answered the TLS request with "no".
    NotOffered,
    /// The certificate chains to a trusted CA but names other hosts.
    WrongName {
        presented: Vec<String>,
    },
    /// The certificate does not chain to the CA in `sslrootcert`.
    UnknownIssuer {
        system: bool,
    },
    /// The certificate is expired, not valid yet, or otherwise unusable.
    BadCertificate(String),
    /// The server ended the handshake (it refused our client certificate, say).
    Alert(String),
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::NotOffered => f.write_str("the server does not support TLS"),
            TlsFailure::WrongName { presented } if presented.is_empty() => {
                f.write_str("the server's certificate is not valid for this host name")
            }
            TlsFailure::WrongName { presented } => write!(
                f,
                "the server's certificate is not valid for this host name: it names {}",
                presented.join(", ")
            ),
            TlsFailure::UnknownIssuer { system: false } => {
                f.write_str("the server's certificate is not signed by the CA in sslrootcert")
            }
            TlsFailure::UnknownIssuer { system: true } => f.write_str(
                "the server's certificate is not signed by a public CA of sslrootcert=system",
            ),
            TlsFailure::BadCertificate(reason) => {
                write!(f, "the server's certificate is not usable ({reason})")
            }
            TlsFailure::Alert(alert) => write!(
                f,
                "the server ended the handshake ({alert}; does it accept the client certificate in sslcert?)"
            ),
            TlsFailure::Other(reason) => f.write_str(reason),
        }
    }
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut store = RootCertStore::empty();
    let certificates = load_certificates(path).map_err(|source| TlsConfigError::Pem {
        param: "sslrootcert",
        source,
    })?;
    for certificate in certificates {
        store
            .add(certificate)
            .map_err(|error| TlsConfigError::RootCert {
                path: path.to_owned(),
                reason: format!("not a usable CA certificate: {error}"),
            })?;
    }
    Ok(store)
}

fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsConfigError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map(|verifier| verifier as Arc<dyn ServerCertVerifier>)
        .map_err(|error| TlsConfigError::Rustls(rustls::Error::General(error.to_string())))
}

/// `verify-ca` (and `require` with `sslrootcert`): the chain must lead to
/// `sslrootcert`, whatever host names the certificate holds. rustls has no
/// such mode, and checks the name only after the chain, so the one error let
/// through here — a name mismatch — comes from a certificate whose chain was
/// already found good.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`, and `require` without `sslrootcert`: libpq encrypts then without
/// checking who the server is, so any certificate is accepted. The handshake
/// signatures are still checked (by the provider): the server must hold the
/// key of the certificate it shows, which is what the channel binding of
/// SCRAM authentication relies on.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a connection is secured, as the server sees it (`pg_stat_ssl`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TlsState {
    /// The `sslmode` in force (`database.url`).
    #[schema(example = "verify-full")]
    pub sslmode: String,
    /// Whether this connection is encrypted.
    pub negotiated: bool,
    /// The TLS version, when encrypted (`TLSv1.3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "TLSv1.3")]
    pub version: Option<String>,
    /// The cipher suite, when encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "TLS_AES_256_GCM_SHA384")]
    pub cipher: Option<String>,
}

impl TlsState {
    /// The query whose one row this is built from: one round trip, the
    /// server's own view of the connection.
    pub const QUERY: &'static str =
        "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

    /// From the row of [`QUERY`](Self::QUERY) read with the simple query
    /// protocol (text values: `t`/`f`).
    pub fn from_text(mode: SslMode, row: &tokio_postgres::SimpleQueryRow) -> Self {
        Self {
            sslmode: mode.to_string(),
            negotiated: row.get(0) == Some("t"),
            version: row.get(1).map(str::to_owned),
            cipher: row.get(2).map(str::to_owned),
        }
    }

    /// One line for people: `TLS 1.3 (TLS_AES_256_GCM_SHA384), sslmode=verify-full`.
    pub fn describe(&self) -> String {
        if self.negotiated {
            let version = self.version.as_deref().unwrap_or("?");
            let version = version
                .strip_prefix("TLSv")
                .map_or_else(|| version.to_owned(), |number| format!("TLS {number}"));
            format!(
                "{version} ({}), sslmode={}",
                self.cipher.as_deref().unwrap_or("?"),
                self.sslmode
            )
        } else if self.sslmode == SslMode::Disable.as_str() {
            "not encrypted (sslmode=disable)".to_owned()
        } else {
            format!(
                "not encrypted (sslmode={}: the server offers no TLS)",
                self.sslmode
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> TlsParams {
        let mut params = TlsParams::default();
        for (name, value) in pairs {
            assert!(params.take(name, (*value).to_owned()));
        }
        params
    }

    #[test]
    fn modes_order_from_weakest_and_print_as_libpq_spells_them() {
        assert!(SslMode::Disable < SslMode::Prefer);
        assert!(SslMode::Prefer < SslMode::Require);
        assert!(SslMode::Require < SslMode::VerifyCa);
        assert!(SslMode::VerifyCa < SslMode::VerifyFull);
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(mode).unwrap().to_string(), mode);
        }
        assert!(SslMode::parse("allow").is_err());
    }

    #[test]
    fn defaults_follow_libpq() {
        assert_eq!(PgTls::load(&params(&[])).unwrap().mode(), SslMode::Prefer);
        let system = PgTls::load(&params(&[("sslrootcert", "system")])).unwrap();
        assert_eq!(system.mode(), SslMode::VerifyFull);
        let weak = PgTls::load(&params(&[
            ("sslrootcert", "system"),
            ("sslmode", "require"),
        ]));
        assert!(matches!(
            weak,
            Err(TlsConfigError::WeakModeWithSystemRoots(SslMode::Require))
        ));
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        for mode in ["verify-ca", "verify-full"] {
            let error = PgTls::load(&params(&[("sslmode", mode)])).unwrap_err();
            assert!(error.to_string().contains("needs sslrootcert"), "{error}");
        }
        let error = PgTls::load(&params(&[("sslcert", "/a.crt")])).unwrap_err();
        assert!(matches!(error, TlsConfigError::HalfClientCert), "{error}");
    }

    #[test]
    fn a_missing_or_malformed_file_is_named() {
        let error = PgTls::load(&params(&[
            ("sslmode", "verify-full"),
            ("sslrootcert", "/nonexistent/ca.crt"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("sslrootcert: cannot read /nonexistent/ca.crt"),
            "{error}"
        );
        let file = std::env::temp_dir().join(format!("aw-not-pem-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, "not a certificate").unwrap();
        let error = PgTls::load(&params(&[
            ("sslmode", "verify-ca"),
            ("sslrootcert", file.to_str().unwrap()),
        ]))
        .unwrap_err()
        .to_string();
        std::fs::remove_file(&file).unwrap();
        assert!(error.contains("holds no certificate"), "{error}");
    }
}
