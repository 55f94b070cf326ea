//! FTP destinations: the payload uploaded (suppaftp) under a temporary name,
//! then renamed, so a reader never sees a half-written file. With `tls`, the
//! session is explicit FTPS (`AUTH TLS`, then protected data connections),
//! the server checked against the public web roots or a configured CA.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode};
use tokio_rustls::TlsConnector;
use uuid::Uuid;

use super::body::Rendered;
use super::egress::{self, Egress, Host};
use super::retry::{Sent, Verdict};
use crate::validation::FieldError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub username: String,
    /// Stored encrypted, shown as `***`.
    pub password: String,
    /// Where files go; default the login directory.
    pub directory: Option<String>,
    /// Explicit FTPS: `AUTH TLS` before logging in, data connections protected.
    #[serde(default)]
    pub tls: bool,
    /// PEM certificates of the CA that signed the server's certificate, for a
    /// private CA; the public web roots otherwise.
    pub ca_certificate: Option<String>,
    #[serde(default = "default_passive")]
    pub passive: bool,
}

fn default_port() -> u16 {
    21
}

fn default_passive() -> bool {
    true
}

impl FtpConfig {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        errors.extend(egress::host_problem(&self.host));
        if self.port == 0 {
            errors.push(FieldError::new("config.port", "between 1 and 65535"));
        }
        if self.username.is_empty() {
            errors.push(FieldError::new("config.username", "required"));
        }
        if let Some(pem) = &self.ca_certificate {
            if let Err(problem) = egress::trust_roots(Some(pem)) {
                errors.push(FieldError::new("config.ca_certificate", problem));
            }
        }
        if self
            .directory
            .as_ref()
            .is_some_and(|d| d.contains(['\r', '\n']))
        {
            errors.push(FieldError::new("config.directory", "a path on one line"));
        }
        errors
    }
}

/// Uploads the payload. The host is resolved here and only the addresses the
/// network policy allows are connected to, TLS still checking the
/// certificate against the host's name.
pub async fn send(
    config: &FtpConfig,
    egress: &Egress,
    id: Uuid,
    name: Option<&str>,
    file: Rendered,
    timeout: Duration,
) -> Sent {
    let Some(host) = egress::parse_host(&config.host) else {
        return Sent::failed(
            Verdict::Permanent,
            format!("config.host: `{}` is not a host", config.host),
        );
    };
    let addresses = match egress.resolve(&host, config.port).await {
        Ok(addresses) => addresses,
        Err(error) => return Sent::failed(error.verdict(), format!("FTP: {error}")),
    };
    let name = name.map_or_else(
        || format!("audit-{}-{}.json", Utc::now().format("%Y%m%d"), id.simple()),
        str::to_owned,
    );
    let upload = upload(config, &host, &addresses, &name, file.bytes);
    match tokio::time::timeout(timeout, upload).await {
        Ok(Ok(path)) => Sent {
            verdict: Verdict::Delivered,
            code: None,
            reason: None,
            reference: Some(path),
        },
        Ok(Err(error)) => Sent {
            code: None,
            verdict: match &error {
                // 5xx replies (bad login, no such directory) will not change on retry.
                FtpError::UnexpectedResponse(response) if response.status.code() >= 500 => {
                    Verdict::Permanent
                }
                _ => Verdict::Retryable,
            },
            reason: Some(format!("FTP: {error}")),
            reference: None,
        },
        Err(_) => Sent {
            verdict: Verdict::Retryable,
            code: None,
            reason: Some(format!("FTP: no answer within {} ms", timeout.as_millis())),
            reference: None,
        },
    }
}

fn tls_connector(config: &FtpConfig) -> Result<AsyncRustlsConnector, FtpError> {
    let client =
        egress::tls_client(config.ca_certificate.as_deref()).map_err(FtpError::SecureError)?;
    Ok(AsyncRustlsConnector::from(TlsConnector::from(client)))
}

async fn upload(
    config: &FtpConfig,
    host: &Host,
    addresses: &[SocketAddr],
    name: &str,
    body: Vec<u8>,
) -> Result<String, FtpError> {
    let mut ftp = AsyncRustlsFtpStream::connect(addresses).await?;
    if config.tls {
        ftp = ftp
            .into_secure(tls_connector(config)?, &egress::server_name(host))
            .await?;
    }
    // Passive data connections go to the address the control connection
    // was checked on, never to the one the server's PASV reply names: a
    // server could name an internal address there.
    ftp.set_passive_nat_workaround(true);
    ftp.login(config.username.as_str(), config.password.as_str())
        .await?;
    ftp.set_mode(if config.passive {
        Mode::Passive
    } else {
        Mode::Active
    });
    ftp.transfer_type(FileType::Binary).await?;
    if let Some(directory) = &config.directory {
        ftp.cwd(directory).await?;
    }
    let partial = format!(".{name}.part");
    ftp.put_file(&partial, &mut body.as_slice()).await?;
    ftp.rename(&partial, &name.to_owned()).await?;
    let _ = ftp.quit().await;
    let directory = config
        .directory
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    Ok(format!("{directory}/{name}"))
}
