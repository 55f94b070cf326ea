//! Email destinations: the payload sent over SMTP (lettre), as the body or as
//! a JSON attachment.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::egress::{self, Egress};
use super::retry::{Sent, Verdict};
use crate::validation::FieldError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    /// Default: 25 without TLS, 587 with STARTTLS, 465 with TLS.
    pub port: Option<u16>,
    /// none | starttls | tls
    #[serde(default = "default_tls")]
    pub tls: String,
    pub username: Option<String>,
    /// Stored encrypted, shown as `***`.
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_subject")]
    pub subject: String,
    /// When set, the payload goes as a JSON attachment of this name instead of the body.
    pub attachment_name: Option<String>,
}

fn default_tls() -> String {
    "starttls".to_owned()
}

fn default_subject() -> String {
    "Audit delivery".to_owned()
}

impl EmailConfig {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        errors.extend(egress::host_problem(&self.host));
        if self.port == Some(0) {
            errors.push(FieldError::new("config.port", "between 1 and 65535"));
        }
        if !matches!(self.tls.as_str(), "none" | "starttls" | "tls") {
            errors.push(FieldError::new("config.tls", "none, starttls or tls"));
        }
        if self.username.is_some() != self.password.is_some() {
            errors.push(FieldError::new(
                "config.password",
                "username and password go together",
            ));
        }
        if self.from.parse::<Mailbox>().is_err() {
            errors.push(FieldError::new("config.from", "an email address"));
        }
        if self.to.is_empty() || self.to.len() > 50 {
            errors.push(FieldError::new("config.to", "1 to 50 addresses"));
        }
        for (i, to) in self.to.iter().enumerate() {
            if to.parse::<Mailbox>().is_err() {
                errors.push(FieldError::new(
                    format!("config.to[{i}]"),
                    "an email address",
                ));
            }
        }
        if self.subject.is_empty()
            || self.subject.chars().count() > 255
            || self.subject.contains(['\r', '\n'])
        {
            errors.push(FieldError::new(
                "config.subject",
                "1 to 255 characters on one line",
            ));
        }
        if self
            .attachment_name
            .as_ref()
            .is_some_and(|name| name.is_empty() || name.contains(['/', '\\', '\r', '\n']))
        {
            errors.push(FieldError::new("config.attachment_name", "a file name"));
        }
        errors
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls.as_str() {
            "none" => 25,
            "tls" => 465,
            _ => 587,
        })
    }
}

/// Sends the payload. The host is resolved here and the connection made to
/// an address the network policy allows (the first, in the resolver's
/// order), TLS still checking the certificate against the host's name.
pub async fn send(
    config: &EmailConfig,
    egress: &Egress,
    id: Uuid,
    payload: &str,
    timeout: Duration,
) -> Sent {
    let message_id = format!("<{}@audit-worker>", id.simple());
    let message = match build(config, &message_id, payload) {
        Ok(message) => message,
        Err(reason) => return Sent::failed(Verdict::Permanent, reason),
    };
    let Some(host) = egress::parse_host(&config.host) else {
        return Sent::failed(
            Verdict::Permanent,
            format!("config.host: `{}` is not a host", config.host),
        );
    };
    let address = match egress.resolve(&host, config.port()).await {
        Ok(addresses) => addresses[0].ip(),
        Err(error) => return Sent::failed(error.verdict(), format!("SMTP: {error}")),
    };
    let tls_parameters = || TlsParameters::new(egress::server_name(&host));
    let tls = match config.tls.as_str() {
        "tls" => tls_parameters().map(Tls::Wrapper),
        "starttls" => tls_parameters().map(Tls::Required),
        _ => Ok(Tls::None),
    };
    let tls = match tls {
        Ok(tls) => tls,
        Err(error) => return Sent::failed(Verdict::Permanent, error.to_string()),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.to_string())
        .port(config.port())
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(username), Some(password)) = (&config.username, &config.password) {
        builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
    }
    match builder.build().send(message).await {
        Ok(response) => Sent {
            verdict: Verdict::Delivered,
            code: Some(i32::from(u16::from(response.code()))),
            reason: None,
            reference: Some(message_id),
        },
        Err(error) => Sent {
            // A 5xx reply will not change on retry; anything else (4xx, network) may.
            verdict: if error.is_permanent() {
                Verdict::Permanent
            } else {
                Verdict::Retryable
            },
            code: error.status().map(|code| i32::from(u16::from(code))),
            reason: Some(format!("SMTP: {error}")),
            reference: None,
        },
    }
}

fn build(config: &EmailConfig, message_id: &str, payload: &str) -> Result<Message, String> {
    let text = super::indented(payload);
    let mut builder = Message::builder()
        .from(config.from.parse::<Mailbox>().map_err(|e| e.to_string())?)
        .subject(config.subject.clone())
        .message_id(Some(message_id.to_owned()));
    for to in &config.to {
        builder = builder.to(to.parse::<Mailbox>().map_err(|e| e.to_string())?);
    }
    let built = match &config.attachment_name {
        None => builder.header(ContentType::TEXT_PLAIN).body(text),
        Some(name) => builder.multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(format!(
                    "The attached {name} holds the delivered data."
                )))
                .singlepart(Attachment::new(name.clone()).body(
                    text,
                    ContentType::parse("application/json").expect("a valid type"),
                )),
        ),
    };
    built.map_err(|error| error.to_string())
}
