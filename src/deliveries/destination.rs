//! What every destination has, whatever its kind: its configuration as one
//! [`DestinationConfig`] that dispatches to the kind's own file (validation,
//! the hosts it reaches), its secrets sealed at rest and never shown (`***`),
//! and its [`DeliverySettings`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto::{DecryptError, Sealing, SecretBox};
use super::egress::{self, Egress, Host};
use super::email::EmailConfig;
use super::ftp::FtpConfig;
use super::s3::S3Config;
use super::syslog::SyslogConfig;
use super::webhook::WebhookConfig;
use crate::validation::FieldError;

/// Kinds the schema knows.
pub const KINDS: &[&str] = &["webhook", "email", "s3", "ftp", "syslog"];
/// Kinds this build can deliver to; the others are refused until they can.
pub const AVAILABLE_KINDS: &[&str] = &["webhook", "email", "s3", "ftp", "syslog"];
const MASK: &str = "***";
/// Config fields that hold secrets: sealed at rest, masked in answers.
const SECRET_FIELDS: &[&str] = &["secret", "previous_secret", "password", "secret_access_key"];
/// Request headers that carry credentials (a webhook's `Authorization:
/// Splunk <token>`, say), by name, lower case: sealed and masked as secret
/// fields are. So is any header whose name contains [`SECRET_HEADER_WORDS`].
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];
const SECRET_HEADER_WORDS: &[&str] = &["token", "secret", "key", "password", "auth"];

fn secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str()) || SECRET_HEADER_WORDS.iter().any(|w| name.contains(w))
}

/// Where a secret sits in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretSlot {
    /// One of [`SECRET_FIELDS`].
    Field,
    /// A secret header's value. Those stored before headers were sealed are
    /// plain text: they open as they are, and are sealed at the next change
    /// of the destination or the next `keys rotate --kind encryption`.
    Header,
}

/// Calls `each` with every secret of a config object: its secret fields,
/// and the values of its secret headers.
fn for_each_secret<E>(
    config: &mut Value,
    mut each: impl FnMut(SecretSlot, &mut Value) -> Result<(), E>,
) -> Result<(), E> {
    let Some(object) = config.as_object_mut() else {
        return Ok(());
    };
    for (name, value) in object.iter_mut() {
        if SECRET_FIELDS.contains(&name.as_str()) {
            each(SecretSlot::Field, value)?;
        }
    }
    if let Some(Value::Object(headers)) = object.get_mut("headers") {
        for (name, value) in headers.iter_mut() {
            if secret_header(name) {
                each(SecretSlot::Header, value)?;
            }
        }
    }
    Ok(())
}

/// A destination's configuration, by kind.
#[derive(Debug, Clone)]
pub enum DestinationConfig {
    Webhook(WebhookConfig),
    Email(EmailConfig),
    S3(S3Config),
    Ftp(FtpConfig),
    Syslog(SyslogConfig),
}

impl DestinationConfig {
    /// Validates a configuration as a client sent it. `previous` is the stored
    /// configuration (unsealed) when updating: secrets sent as `***` keep their value.
    pub fn validate(
        kind: &str,
        value: &Value,
        previous: Option<&Value>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut value = value.clone();
        if let (Some(sent), Some(previous)) = (value.as_object_mut(), previous) {
            for field in SECRET_FIELDS {
                if sent.get(*field).and_then(Value::as_str) == Some(MASK) {
                    match previous.get(*field) {
                        Some(kept) => sent.insert((*field).to_owned(), kept.clone()),
                        None => sent.remove(*field),
                    };
                }
            }
            let kept_headers = previous.get("headers").and_then(Value::as_object);
            if let Some(Value::Object(headers)) = sent.get_mut("headers") {
                headers.retain(|name, value| {
                    if !secret_header(name) || value.as_str() != Some(MASK) {
                        return true;
                    }
                    match kept_headers.and_then(|kept| kept.get(name)) {
                        Some(kept) => {
                            *value = kept.clone();
                            true
                        }
                        None => false,
                    }
                });
            }
        }
        match kind {
            "webhook" => checked(value, WebhookConfig::validate).map(Self::Webhook),
            "email" => {
                checked(value, |config: &mut EmailConfig| config.validate()).map(Self::Email)
            }
            "s3" => checked(value, |config: &mut S3Config| config.validate()).map(Self::S3),
            "ftp" => checked(value, |config: &mut FtpConfig| config.validate()).map(Self::Ftp),
            "syslog" => {
                checked(value, |config: &mut SyslogConfig| config.validate()).map(Self::Syslog)
            }
            other => Err(vec![FieldError::new(
                "type",
                format!("`{other}` destinations are not available"),
            )]),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Self::Webhook(config) => serde_json::to_value(config),
            Self::Email(config) => serde_json::to_value(config),
            Self::S3(config) => serde_json::to_value(config),
            Self::Ftp(config) => serde_json::to_value(config),
            Self::Syslog(config) => serde_json::to_value(config),
        }
        .expect("a destination config serializes")
    }

    /// The form kept in the database: secrets sealed.
    pub fn sealed(&self, secrets: &SecretBox) -> Value {
        let mut value = self.to_value();
        let Ok(()) = for_each_secret(&mut value, |_, slot| {
            if let Value::String(plain) = slot {
                *slot = Value::String(secrets.seal(plain));
            }
            Ok::<_, std::convert::Infallible>(())
        });
        value
    }

    /// The stored form with its secrets opened (still untyped).
    pub fn unsealed_value(stored: &Value, secrets: &SecretBox) -> Result<Value, DecryptError> {
        let mut value = stored.clone();
        for_each_secret(&mut value, |kind, slot| {
            if let Value::String(sealed) = slot {
                if kind == SecretSlot::Field || SecretBox::is_sealed(sealed) {
                    *slot = Value::String(secrets.open(sealed)?);
                }
            }
            Ok(())
        })?;
        Ok(value)
    }

    /// The stored form with every secret sealed under the current key
    /// (`keys rotate --kind encryption`); `None` when all already are.
    pub fn resealed(stored: &Value, secrets: &SecretBox) -> Result<Option<Value>, DecryptError> {
        let mut value = stored.clone();
        let mut changed = false;
        for_each_secret(&mut value, |kind, slot| {
            if let Value::String(sealed) = slot {
                if kind == SecretSlot::Header && !SecretBox::is_sealed(sealed) {
                    *slot = Value::String(secrets.seal(sealed));
                    changed = true;
                } else if let Sealing::Resealed(resealed) = secrets.reseal(sealed)? {
                    *slot = Value::String(resealed);
                    changed = true;
                }
            }
            Ok(())
        })?;
        Ok(changed.then_some(value))
    }

    /// From the database form.
    pub fn unsealed(kind: &str, stored: &Value, secrets: &SecretBox) -> Result<Self, DecryptError> {
        let value = Self::unsealed_value(stored, secrets)?;
        let parsed = match kind {
            "webhook" => serde_json::from_value(value).map(Self::Webhook),
            "email" => serde_json::from_value(value).map(Self::Email),
            "s3" => serde_json::from_value(value).map(Self::S3),
            "ftp" => serde_json::from_value(value).map(Self::Ftp),
            "syslog" => serde_json::from_value(value).map(Self::Syslog),
            _ => return Err(DecryptError),
        };
        parsed.map_err(|_| DecryptError)
    }

    /// The form shown by the API: secrets masked.
    pub fn masked(stored: &Value) -> Value {
        let mut shown = stored.clone();
        let Ok(()) = for_each_secret(&mut shown, |_, slot| {
            if !slot.is_null() {
                *slot = Value::String(MASK.to_owned());
            }
            Ok::<_, std::convert::Infallible>(())
        });
        shown
    }

    /// The hosts this destination connects to, each with the field that
    /// names it and its port (an S3 destination without `endpoint` goes to
    /// AWS, and has none). Only valid configurations have them all.
    pub fn hosts(&self) -> Vec<(&'static str, Host, u16)> {
        let from_url = |field, text: &str| {
            let url = reqwest::Url::parse(text).ok()?;
            Some((field, url.host()?.to_owned(), url.port_or_known_default()?))
        };
        let host =
            match self {
                Self::Webhook(config) => from_url("config.url", &config.url),
                Self::Email(config) => egress::parse_host(&config.host)
                    .map(|host| ("config.host", host, config.port())),
                Self::Ftp(config) => {
                    egress::parse_host(&config.host).map(|host| ("config.host", host, config.port))
                }
                Self::Syslog(config) => egress::parse_host(&config.host)
                    .map(|host| ("config.host", host, config.port())),
                Self::S3(config) => config
                    .endpoint
                    .as_deref()
                    .and_then(|endpoint| from_url("config.endpoint", endpoint)),
            };
        host.into_iter().collect()
    }

    /// The network policy's check on a new or changed destination: a host
    /// that is, or now resolves to, a refused address is refused, naming its
    /// field. Connections are checked again (see [`egress`]).
    pub async fn check_network(&self, egress: &Egress) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (field, host, port) in self.hosts() {
            if let Err(error) = egress.vet(&host, port).await {
                errors.push(FieldError::new(
                    field,
                    format!("must not reach an internal network: {error}"),
                ));
            }
        }
        errors
    }

    /// Where a connection test connects, and how long it may take.
    pub fn endpoint(&self) -> (String, u16, Duration) {
        match self {
            Self::Webhook(config) => {
                let url = reqwest::Url::parse(&config.url).ok();
                let host = url
                    .as_ref()
                    .and_then(|u| u.host_str())
                    .unwrap_or_default()
                    .to_owned();
                let port = url
                    .as_ref()
                    .and_then(|u| u.port_or_known_default())
                    .unwrap_or(443);
                (host, port, Duration::from_millis(config.timeout_ms))
            }
            Self::Email(config) => (config.host.clone(), config.port(), Duration::from_secs(10)),
            Self::S3(config) => {
                let (host, port) = config.endpoint_host();
                (host, port, Duration::from_secs(10))
            }
            Self::Ftp(config) => (config.host.clone(), config.port, Duration::from_secs(10)),
            Self::Syslog(config) => (config.host.clone(), config.port(), Duration::from_secs(10)),
        }
    }
}

/// A kind's configuration parsed from `value`, then validated by `validate`
/// (which may also normalize it); every field found wrong is named.
fn checked<T: DeserializeOwned>(
    value: Value,
    validate: impl FnOnce(&mut T) -> Vec<FieldError>,
) -> Result<T, Vec<FieldError>> {
    let mut config: T = serde_json::from_value(value)
        .map_err(|error| vec![FieldError::new("config", error.to_string())])?;
    let errors = validate(&mut config);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// How a destination is delivered to: concurrency, rate, breaker and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Deliveries in flight at once to this destination.
    pub concurrency: u32,
    /// At most this many delivery attempts per second (none: unlimited).
    pub rate_limit_per_second: Option<u32>,
    /// Consecutive failures that open the circuit breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe is let through.
    #[serde(with = "humantime_serde")]
    pub reset_timeout: Duration,
    /// Waits before each retry (±20% jitter); its length is the number of retries.
    pub retry_schedule: Vec<String>,
    /// A destination failing without a single success this long is disabled.
    #[serde(with = "humantime_serde")]
    pub auto_disable_after: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            rate_limit_per_second: None,
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(60),
            retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(str::to_owned)
                .to_vec(),
            auto_disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl DeliverySettings {
    /// The parsed retry waits (validated on save).
    pub fn retry_waits(&self) -> Vec<Duration> {
        self.retry_schedule
            .iter()
            .filter_map(|wait| humantime::parse_duration(wait).ok())
            .collect()
    }

    /// Why a destination that has failed without a single success for
    /// `failing_for` is disabled; `None` while it may go on trying.
    pub fn auto_disable_reason(&self, failing_for: Duration) -> Option<String> {
        (failing_for >= self.auto_disable_after).then(|| {
            format!(
                "no successful delivery for {} (auto_disable_after is {})",
                humantime::format_duration(Duration::from_secs(failing_for.as_secs())),
                humantime::format_duration(self.auto_disable_after)
            )
        })
    }

    pub fn parse(value: Option<&Value>) -> Result<Self, Vec<FieldError>> {
        let settings: DeliverySettings = match value {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|error| vec![FieldError::new("settings", error.to_string())])?,
        };
        let mut errors = Vec::new();
        if !(1..=64).contains(&settings.concurrency) {
            errors.push(FieldError::new("settings.concurrency", "between 1 and 64"));
        }
        if settings.rate_limit_per_second == Some(0) {
            errors.push(FieldError::new(
                "settings.rate_limit_per_second",
                "at least 1 (or null for no limit)",
            ));
        }
        if settings.failure_threshold == 0 {
            errors.push(FieldError::new("settings.failure_threshold", "at least 1"));
        }
        if settings.reset_timeout.is_zero() {
            errors.push(FieldError::new(
                "settings.reset_timeout",
                "longer than zero",
            ));
        }
        if settings.retry_schedule.len() > 20 {
            errors.push(FieldError::new(
                "settings.retry_schedule",
                "at most 20 retries",
            ));
        }
        for (i, wait) in settings.retry_schedule.iter().enumerate() {
            if humantime::parse_duration(wait).is_err() {
                errors.push(FieldError::new(
                    format!("settings.retry_schedule[{i}]"),
                    "a duration such as 30s, 5m or 2h",
                ));
            }
        }
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_bad_field_is_named() {
        let errors = DestinationConfig::validate(
            "webhook",
            &json!({"url": "ftp://x", "method": "GET", "timeout_ms": 5, "secret": "plain",
                    "headers": {"Webhook-Id": "x", "bad header": "y"}}),
            None,
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for field in [
            "config.url",
            "config.method",
            "config.timeout_ms",
            "config.secret",
        ] {
            assert!(fields.contains(&field), "{field}: {fields:?}");
        }
        assert_eq!(
            fields
                .iter()
                .filter(|f| f.starts_with("config.headers."))
                .count(),
            2
        );
        let errors =
            DestinationConfig::validate("email", &json!({"host": "", "from": "x", "to": []}), None)
                .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["config.host", "config.from", "config.to"]);
        let errors = DestinationConfig::validate(
            "ftp",
            &json!({"host": "h", "username": "", "password": "p"}),
            None,
        )
        .unwrap_err();
        assert_eq!(errors[0].field, "config.username");
    }

    #[test]
    fn secrets_are_sealed_masked_and_kept_when_sent_masked() {
        let secrets = SecretBox::new(&crate::secrets::KeyRing::single([1; 32]));
        let config = DestinationConfig::validate(
            "ftp",
            &json!({"host": "127.0.0.1", "username": "u", "password": "hunter2"}),
            None,
        )
        .unwrap();
        let stored = config.sealed(&secrets);
        assert!(!stored.to_string().contains("hunter2"));
        assert_eq!(DestinationConfig::masked(&stored)["password"], "***");
        let opened = DestinationConfig::unsealed_value(&stored, &secrets).unwrap();
        assert_eq!(opened["password"], "hunter2");
        let DestinationConfig::Ftp(updated) = DestinationConfig::validate(
            "ftp",
            &json!({"host": "127.0.0.2", "username": "u", "password": "***"}),
            Some(&opened),
        )
        .unwrap() else {
            panic!("ftp")
        };
        assert_eq!(updated.password, "hunter2");
    }

    #[test]
    fn credential_headers_are_sealed_masked_kept_and_sealed_once_rotated() {
        let secrets = SecretBox::new(&crate::secrets::KeyRing::single([1; 32]));
        let headers = json!({"Authorization": "Splunk t0ken", "X-Api-Key": "k3y",
                             "X-Team": "blue"});
        let config = DestinationConfig::validate(
            "webhook",
            &json!({"url": "https://siem.example/hec", "headers": headers}),
            None,
        )
        .unwrap();
        let stored = config.sealed(&secrets);
        let text = stored.to_string();
        assert!(!text.contains("t0ken") && !text.contains("k3y"), "{text}");
        assert_eq!(stored["headers"]["X-Team"], "blue");
        let shown = DestinationConfig::masked(&stored);
        assert_eq!(shown["headers"]["Authorization"], "***");
        assert_eq!(shown["headers"]["X-Api-Key"], "***");
        assert_eq!(shown["headers"]["X-Team"], "blue");
        let opened = DestinationConfig::unsealed_value(&stored, &secrets).unwrap();
        assert_eq!(opened["headers"], headers);

        // Sent back masked, a header keeps its value; one added masked is dropped.
        let sent = json!({"url": "https://siem.example/hec",
                          "headers": {"Authorization": "***", "X-Token": "***"}});
        let DestinationConfig::Webhook(updated) =
            DestinationConfig::validate("webhook", &sent, Some(&opened)).unwrap()
        else {
            panic!("webhook")
        };
        assert_eq!(
            updated.headers.get("Authorization").unwrap(),
            "Splunk t0ken"
        );
        assert!(!updated.headers.contains_key("X-Token"));

        // Stored before headers were sealed: opens as it is, sealed by a rotation.
        let legacy = json!({"url": "https://siem.example/hec", "headers": headers});
        assert_eq!(
            DestinationConfig::unsealed_value(&legacy, &secrets).unwrap(),
            legacy
        );
        let rotated = DestinationConfig::resealed(&legacy, &secrets)
            .unwrap()
            .expect("plain headers get sealed");
        assert!(!rotated.to_string().contains("t0ken"));
        assert_eq!(
            DestinationConfig::unsealed_value(&rotated, &secrets).unwrap(),
            legacy
        );
    }

    #[test]
    fn settings_are_validated() {
        assert_eq!(
            DeliverySettings::parse(None).unwrap(),
            DeliverySettings::default()
        );
        let errors = DeliverySettings::parse(Some(
            &json!({"concurrency": 0, "retry_schedule": ["5s", "soon"]}),
        ))
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["settings.concurrency", "settings.retry_schedule[1]"]
        );
        assert_eq!(DeliverySettings::default().retry_waits().len(), 7);
    }

    #[test]
    fn a_destination_failing_for_its_auto_disable_after_is_disabled_with_a_reason() {
        let settings = DeliverySettings {
            auto_disable_after: Duration::from_secs(3600),
            ..DeliverySettings::default()
        };
        assert_eq!(
            settings.auto_disable_reason(Duration::from_secs(3599)),
            None
        );
        assert_eq!(
            settings
                .auto_disable_reason(Duration::from_millis(5_400_250))
                .as_deref(),
            Some("no successful delivery for 1h 30m (auto_disable_after is 1h)")
        );
    }
}
