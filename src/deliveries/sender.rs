//! One attempt's send, whatever the destination's kind: the stored
//! configuration opened and worked out once per read of the destination
//! ([`Prepared`]), then each payload handed to its kind's `send`, which
//! comes back as one [`Outcome`].

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::body::{self, Payload};
use super::crypto::SecretBox;
use super::destination::{DeliverySettings, DestinationConfig};
use super::egress::Egress;
use super::email::{self, EmailConfig};
use super::ftp::{self, FtpConfig};
use super::retry::{self, Outcome};
use super::s3::{self, Object, ObjectLock, S3Config};
use super::syslog::{self, SyslogConfig};
use super::webhook::{self, Target};
use crate::db::destinations::Destination;

/// Time limit of one SMTP, S3 or FTP attempt.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// A destination as every attempt needs it, worked out once from its stored
/// form: its settings, and how to send to it.
pub struct Prepared {
    pub settings: DeliverySettings,
    /// The settings' retry schedule, parsed.
    retry_waits: Vec<Duration>,
    /// Or why the stored config cannot be used (every attempt fails with it).
    sender: Result<Sender, String>,
    /// This machine's name: syslog's HOSTNAME, and Splunk HEC's `host` in a
    /// stream's records.
    host: String,
}

/// A destination's config with its secrets opened; a webhook's requests are
/// worked out too (see [`Target`]), as every attempt sends one.
enum Sender {
    Webhook(Target),
    Email(EmailConfig),
    S3(S3Config, Option<ObjectLock>),
    Ftp(FtpConfig),
    Syslog(SyslogConfig),
}

impl Prepared {
    /// From the destination as stored (its config's secrets sealed).
    /// Settings that do not parse are the defaults.
    pub fn new(destination: &Destination, secrets: &SecretBox) -> Self {
        let settings = DeliverySettings::parse(Some(&destination.settings)).unwrap_or_default();
        let lock = destination.object_lock_days.map(ObjectLock::days);
        let sender = DestinationConfig::unsealed(&destination.kind, &destination.config, secrets)
            .map_err(|error| error.to_string())
            .and_then(|config| Sender::new(config, lock));
        Self {
            retry_waits: settings.retry_waits(),
            settings,
            sender,
            host: super::machine_name(),
        }
    }

    /// This machine's name, as the destination's records carry it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The waits before each retry.
    pub fn retry_waits(&self) -> &[Duration] {
        &self.retry_waits
    }

    /// One attempt to deliver `payload` (see [`body`](super::body)): a
    /// webhook posts a document as it is; the other kinds write it out
    /// indented, for people to read.
    /// `object_key`: the name the worker gave the delivery when it queued it
    /// (an S3 destination stores it there, after its prefix; an FTP one
    /// names its file after it).
    pub async fn send(
        &self,
        egress: &Egress,
        id: Uuid,
        payload: Payload,
        object_key: Option<&str>,
    ) -> Outcome {
        let sender = match &self.sender {
            Ok(sender) => sender,
            Err(error) => return Outcome::permanent(error),
        };
        let started = Instant::now();
        let sent = match sender {
            Sender::Webhook(target) => {
                return webhook::send(egress, target, id, body::request(payload).await).await;
            }
            Sender::Email(config) => match &payload {
                Payload::Document(text) => {
                    email::send(config, egress, id, text, TRANSFER_TIMEOUT).await
                }
                Payload::Records(_) => {
                    return Outcome::permanent("an email destination cannot carry a stream's batch")
                }
            },
            Sender::S3(config, lock) => {
                let object = Object {
                    id,
                    key: object_key,
                    lock: lock.as_ref(),
                };
                match body::file(payload).await {
                    Ok(file) => s3::send(config, egress, &object, file, TRANSFER_TIMEOUT).await,
                    Err(error) => return Outcome::permanent(&error),
                }
            }
            Sender::Ftp(config) => match body::file(payload).await {
                Ok(file) => {
                    let name = object_key.map(|key| key.replace('/', "-"));
                    ftp::send(config, egress, id, name.as_deref(), file, TRANSFER_TIMEOUT).await
                }
                Err(error) => return Outcome::permanent(&error),
            },
            Sender::Syslog(config) => {
                syslog::send(config, egress, payload, &self.host, TRANSFER_TIMEOUT).await
            }
        };
        Outcome {
            verdict: sent.verdict,
            response_code: sent.code,
            latency_ms: retry::latency_ms(started),
            reason: sent.reason,
            reference: sent.reference,
            wait_at_least: None,
        }
    }
}

impl Sender {
    fn new(config: DestinationConfig, lock: Option<ObjectLock>) -> Result<Self, String> {
        Ok(match config {
            DestinationConfig::Webhook(config) => Self::Webhook(Target::new(&config)?),
            DestinationConfig::Email(config) => Self::Email(config),
            DestinationConfig::S3(config) => Self::S3(config, lock),
            DestinationConfig::Ftp(config) => Self::Ftp(config),
            DestinationConfig::Syslog(config) => Self::Syslog(config),
        })
    }
}
