//! FTP destinations: the payload uploaded (suppaftp) under a temporary name,
//! then renamed, so a reader never sees a half-written file.

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode};
use uuid::Uuid;

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
    /// Explicit FTPS. Not available in this version yet: refused when true.
    #[serde(default)]
    pub tls: bool,
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
        if self.host.trim().is_empty() {
            errors.push(FieldError::new("config.host", "required"));
        }
        if self.port == 0 {
            errors.push(FieldError::new("config.port", "between 1 and 65535"));
        }
        if self.username.is_empty() {
            errors.push(FieldError::new("config.username", "required"));
        }
        if self.tls {
            errors.push(FieldError::new(
                "config.tls",
                "explicit FTPS is not available in this version yet",
            ));
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

pub async fn send(config: &FtpConfig, id: Uuid, payload: &Value, timeout: Duration) -> Sent {
    let name = format!("audit-{}-{}.json", Utc::now().format("%Y%m%d"), id.simple());
    match tokio::time::timeout(timeout, upload(config, &name, payload)).await {
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

async fn upload(config: &FtpConfig, name: &str, payload: &Value) -> Result<String, FtpError> {
    let mut ftp = AsyncFtpStream::connect((config.host.as_str(), config.port)).await?;
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
    let body = serde_json::to_vec_pretty(payload).expect("a JSON value serializes");
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
