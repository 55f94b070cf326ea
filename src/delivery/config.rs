//! Destination configuration: validated per kind, secrets sealed at rest and
//! never shown (`***`), and the delivery settings every destination has.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto::{DecryptError, SecretBox};
use super::egress::{self, Egress, Host};
use super::email::EmailConfig;
use super::ftp::FtpConfig;
use super::s3::S3Config;
use super::webhook;
use crate::validation::FieldError;

/// Kinds the schema knows.
pub const KINDS: &[&str] = &["webhook", "email", "s3", "ftp"];
/// Kinds this build can deliver to; the others are refused until they can.
pub const AVAILABLE_KINDS: &[&str] = &["webhook", "email", "s3", "ftp"];
const MASK: &str = "***";
/// Config fields that hold secrets: sealed at rest, masked in answers.
const SECRET_FIELDS: &[&str] = &["secret", "previous_secret", "password", "secret_access_key"];

/// A destination's configuration, by kind.
#[derive(Debug, Clone)]
pub enum DestinationConfig {
    Webhook(WebhookConfig),
    Email(EmailConfig),
    S3(S3Config),
    Ftp(FtpConfig),
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
        }
        let parse_error =
            |error: serde_json::Error| vec![FieldError::new("config", error.to_string())];
        match kind {
            "webhook" => validate_webhook(&value).map(Self::Webhook),
            "email" => {
                let config: EmailConfig = serde_json::from_value(value).map_err(parse_error)?;
                let errors = config.validate();
                if errors.is_empty() {
                    Ok(Self::Email(config))
                } else {
                    Err(errors)
                }
            }
            "s3" => {
                let config: S3Config = serde_json::from_value(value).map_err(parse_error)?;
                let errors = config.validate();
                if errors.is_empty() {
                    Ok(Self::S3(config))
                } else {
                    Err(errors)
                }
            }
            "ftp" => {
                let config: FtpConfig = serde_json::from_value(value).map_err(parse_error)?;
                let errors = config.validate();
                if errors.is_empty() {
                    Ok(Self::Ftp(config))
                } else {
                    Err(errors)
                }
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
        }
        .expect("a destination config serializes")
    }

    /// The form kept in the database: secret fields sealed.
    pub fn sealed(&self, secrets: &SecretBox) -> Value {
        let mut value = self.to_value();
        if let Some(object) = value.as_object_mut() {
            for field in SECRET_FIELDS {
                if let Some(Value::String(plain)) = object.get(*field) {
                    let sealed = secrets.seal(plain);
                    object.insert((*field).to_owned(), Value::String(sealed));
                }
            }
        }
        value
    }

    /// The stored form with its secrets opened (still untyped).
    pub fn unsealed_value(stored: &Value, secrets: &SecretBox) -> Result<Value, DecryptError> {
        let mut value = stored.clone();
        if let Some(object) = value.as_object_mut() {
            for field in SECRET_FIELDS {
                if let Some(Value::String(sealed)) = object.get(*field) {
                    let plain = secrets.open(sealed)?;
                    object.insert((*field).to_owned(), Value::String(plain));
                }
            }
        }
        Ok(value)
    }

    /// From the database form.
    pub fn unsealed(kind: &str, stored: &Value, secrets: &SecretBox) -> Result<Self, DecryptError> {
        let value = Self::unsealed_value(stored, secrets)?;
        let parsed = match kind {
            "webhook" => serde_json::from_value(value).map(Self::Webhook),
            "email" => serde_json::from_value(value).map(Self::Email),
            "s3" => serde_json::from_value(value).map(Self::S3),
            "ftp" => serde_json::from_value(value).map(Self::Ftp),
            _ => return Err(DecryptError),
        };
        parsed.map_err(|_| DecryptError)
    }

    /// The form shown by the API: secrets masked.
    pub fn masked(stored: &Value) -> Value {
        let mut shown = stored.clone();
        if let Some(object) = shown.as_object_mut() {
            for field in SECRET_FIELDS {
                if object.get(*field).is_some_and(|v| !v.is_null()) {
                    object.insert((*field).to_owned(), Value::String(MASK.to_owned()));
                }
            }
        }
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
        let host = match self {
            Self::Webhook(config) => from_url("config.url", &config.url),
            Self::Email(config) => {
                egress::parse_host(&config.host).map(|host| ("config.host", host, config.port()))
            }
            Self::Ftp(config) => {
                egress::parse_host(&config.host).map(|host| ("config.host", host, config.port))
            }
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
        }
    }
}

/// A webhook destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// http or https.
    pub url: String,
    /// POST or PUT.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `whsec_` + base64; generated when absent. Signs every request.
    pub secret: Option<String>,
    /// The secret before the last rotation: also signs while receivers switch over.
    pub previous_secret: Option<String>,
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_timeout_ms() -> u64 {
    10_000
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

/// Validates a webhook configuration; a missing secret is generated.
fn validate_webhook(value: &Value) -> Result<WebhookConfig, Vec<FieldError>> {
    let mut config: WebhookConfig = serde_json::from_value(value.clone())
        .map_err(|error| vec![FieldError::new("config", error.to_string())])?;
    let mut errors = Vec::new();
    match reqwest::Url::parse(&config.url) {
        // URL parsing drops tabs and line breaks: the text is checked itself.
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && !egress::has_control_or_space(&config.url) => {}
        _ => errors.push(FieldError::new(
            "config.url",
            "an absolute http or https URL, without spaces or control characters",
        )),
    }
    config.method = config.method.to_ascii_uppercase();
    if !matches!(config.method.as_str(), "POST" | "PUT") {
        errors.push(FieldError::new("config.method", "POST or PUT"));
    }
    if !(100..=60_000).contains(&config.timeout_ms) {
        errors.push(FieldError::new(
            "config.timeout_ms",
            "between 100 and 60000",
        ));
    }
    for (name, header_value) in &config.headers {
        let reserved = name.to_ascii_lowercase().starts_with("webhook-")
            || name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("content-length");
        // No line breaks: they would add headers of their own (CRLF injection).
        let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && reqwest::header::HeaderValue::from_str(header_value).is_ok()
            && !egress::has_control_or_space(name)
            && !header_value.chars().any(char::is_control);
        if reserved || !valid {
            errors.push(FieldError::new(
                format!("config.headers.{name}"),
                "a valid header that the signature and body do not set themselves",
            ));
        }
    }
    if config.secret.is_none() {
        config.secret = Some(webhook::generate_secret());
    }
    for (field, secret) in [
        ("config.secret", &config.secret),
        ("config.previous_secret", &config.previous_secret),
    ] {
        if secret
            .as_deref()
            .is_some_and(|secret| webhook::secret_key(secret).is_none())
        {
            errors.push(FieldError::new(
                field,
                "`whsec_` followed by the base64 of 16 to 64 bytes",
            ));
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

impl WebhookConfig {
    /// The keys that sign each request: the current secret, then the previous one.
    pub fn signing_keys(&self) -> Vec<Vec<u8>> {
        [&self.secret, &self.previous_secret]
            .into_iter()
            .flatten()
            .filter_map(|secret| webhook::secret_key(secret))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_webhook_gets_a_secret_and_defaults() {
        let DestinationConfig::Webhook(config) = DestinationConfig::validate(
            "webhook",
            &json!({"url": "https://example.test/hook"}),
            None,
        )
        .unwrap() else {
            panic!("a webhook")
        };
        assert_eq!(config.method, "POST");
        assert!(config.secret.as_deref().unwrap().starts_with("whsec_"));
    }

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
        let secrets = SecretBox::new(&[1; 32]);
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
}
