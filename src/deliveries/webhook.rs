//! Webhook destinations: the payload posted (or put) to the receiver's URL as
//! it is stored, signed per the Standard Webhooks specification: headers
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`,
//! `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")), one
//! signature per active secret, space-separated (two during a rotation).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::body::Rendered;
use super::egress::{self, Egress, EgressError};
use super::retry::{self, Outcome, Verdict};
use crate::validation::FieldError;

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

impl WebhookConfig {
    /// The configuration's mistakes, each naming its field. Normalizes it on
    /// the way: the method upper-cased, a missing secret generated.
    pub fn validate(&mut self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match Url::parse(&self.url) {
            // URL parsing drops tabs and line breaks: the text is checked itself.
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host_str().is_some()
                    && !egress::has_control_or_space(&self.url) => {}
            _ => errors.push(FieldError::new(
                "config.url",
                "an absolute http or https URL, without spaces or control characters",
            )),
        }
        self.method = self.method.to_ascii_uppercase();
        if !matches!(self.method.as_str(), "POST" | "PUT") {
            errors.push(FieldError::new("config.method", "POST or PUT"));
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            errors.push(FieldError::new(
                "config.timeout_ms",
                "between 100 and 60000",
            ));
        }
        for (name, header_value) in &self.headers {
            let reserved = name.to_ascii_lowercase().starts_with("webhook-")
                || name.eq_ignore_ascii_case("content-type")
                || name.eq_ignore_ascii_case("content-length");
            // No line breaks: they would add headers of their own (CRLF injection).
            let valid = HeaderName::from_bytes(name.as_bytes()).is_ok()
                && HeaderValue::from_str(header_value).is_ok()
                && !egress::has_control_or_space(name)
                && !header_value.chars().any(char::is_control);
            if reserved || !valid {
                errors.push(FieldError::new(
                    format!("config.headers.{name}"),
                    "a valid header that the signature and body do not set themselves",
                ));
            }
        }
        if self.secret.is_none() {
            self.secret = Some(generate_secret());
        }
        for (field, secret) in [
            ("config.secret", &self.secret),
            ("config.previous_secret", &self.previous_secret),
        ] {
            if secret
                .as_deref()
                .is_some_and(|secret| secret_key(secret).is_none())
            {
                errors.push(FieldError::new(
                    field,
                    "`whsec_` followed by the base64 of 16 to 64 bytes",
                ));
            }
        }
        errors
    }

    /// The keys that sign each request: the current secret, then the previous one.
    fn signing_keys(&self) -> Vec<Vec<u8>> {
        [&self.secret, &self.previous_secret]
            .into_iter()
            .flatten()
            .filter_map(|secret| secret_key(secret))
            .collect()
    }
}

const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 random bytes.
fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_` secret, or `None` when it is malformed.
fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    (16..=64).contains(&key.len()).then_some(key)
}

/// Signs with every active secret. Each HMAC is keyed once, and cloned for
/// each signature.
struct Signer {
    keyed: Vec<Hmac<Sha256>>,
}

impl Signer {
    fn new(keys: &[Vec<u8>]) -> Self {
        let keyed = keys
            .iter()
            .map(|key| Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"))
            .collect();
        Self { keyed }
    }

    /// The `webhook-signature` header value for `body`.
    fn header(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        self.keyed
            .iter()
            .map(|keyed| {
                let mut mac = keyed.clone();
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.as_bytes());
                mac.update(b".");
                mac.update(body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A webhook destination's requests, worked out once for each read of the
/// destination rather than on every attempt: the URL parsed, the method, the
/// fixed headers, the signing keys.
pub struct Target {
    url: Url,
    method: Method,
    /// `content-type` and the destination's own headers.
    headers: HeaderMap,
    signer: Signer,
    timeout: Duration,
}

impl Target {
    /// Or why the stored configuration cannot be used (validation on the way
    /// in makes that unlikely).
    pub fn new(config: &WebhookConfig) -> Result<Self, String> {
        let url = Url::parse(&config.url).map_err(|error| format!("config.url: {error}"))?;
        let method = if config.method == "PUT" {
            Method::PUT
        } else {
            Method::POST
        };
        let mut headers = HeaderMap::with_capacity(config.headers.len() + 1);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, text) in &config.headers {
            let (header, value) = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(text).ok())
                .ok_or_else(|| format!("config.headers.{name}: not a valid header"))?;
            headers.append(header, value);
        }
        Ok(Self {
            url,
            method,
            headers,
            signer: Signer::new(&config.signing_keys()),
            timeout: Duration::from_millis(config.timeout_ms),
        })
    }
}

/// Posts the payload, signed; the `webhook-id` is the delivery's id, the same
/// on every retry, so the receiver can drop duplicates. A host the network
/// policy refuses fails the attempt for good, before or while connecting.
pub async fn send(egress: &Egress, target: &Target, id: Uuid, body: Rendered) -> Outcome {
    // reqwest connects to a literal address without asking the resolver.
    if let Err(refused) = egress.check_url(&target.url) {
        return Outcome::permanent(&refused.to_string());
    }
    let http = egress.http();
    let message_id = format!("msg_{}", id.simple());
    let timestamp = Utc::now().timestamp();
    let signature = target.signer.header(&message_id, timestamp, &body.bytes);
    let mut headers = target.headers.clone();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
    let body = bytes::Bytes::from(body.bytes);
    // Built again only for a second try.
    let request = || {
        http.request(target.method.clone(), target.url.clone())
            .timeout(target.timeout)
            .headers(headers.clone())
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", &signature)
            .body(body.clone())
    };
    let started = Instant::now();
    let mut response = request().send().await;
    if let Err(error) = &response {
        // From the resolver (the name now points inside) or a redirect.
        if let Some(refused) = EgressError::refusal_in(error) {
            return Outcome {
                latency_ms: retry::latency_ms(started),
                ..Outcome::permanent(&refused.to_string())
            };
        }
        if broke_on_open_connection(error) {
            response = request().send().await;
        }
    }
    let latency_ms = retry::latency_ms(started);
    match response {
        Ok(response) => {
            let code = response.status().as_u16();
            let verdict = retry::verdict_for_status(code);
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let wait_at_least = match code {
                429 => Some(
                    retry_after
                        .unwrap_or(retry::MIN_WAIT_AFTER_OVERLOAD)
                        .max(retry::MIN_WAIT_AFTER_OVERLOAD),
                ),
                _ => retry_after,
            };
            let reference = response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Outcome {
                verdict,
                response_code: Some(i32::from(code)),
                latency_ms,
                reason: (verdict != Verdict::Delivered)
                    .then(|| format!("the receiver answered {code}")),
                reference,
                wait_at_least,
            }
        }
        Err(error) => Outcome {
            verdict: Verdict::Retryable,
            response_code: None,
            latency_ms,
            reason: Some(if error.is_timeout() {
                format!("no answer within {} ms", target.timeout.as_millis())
            } else {
                format!("cannot reach the receiver: {error}")
            }),
            reference: None,
            wait_at_least: error.is_timeout().then_some(retry::MIN_WAIT_AFTER_OVERLOAD),
        },
    }
}

/// The request failed on a connection that was open, rather than timing out
/// or failing to connect: most often a keep-alive connection the receiver
/// closed as it was taken from the pool (its idle timeout racing ours: Node,
/// actix-web and Apache close idle connections after 5 s, gunicorn after 2 s).
/// Such a request gets one more try at once, on another connection, where a
/// retry would wait out the backoff (seconds). Its `webhook-id` is the same,
/// so a receiver that did get the first one drops the repeat.
fn broke_on_open_connection(error: &reqwest::Error) -> bool {
    !(error.is_timeout() || error.is_connect() || error.is_builder())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::deliveries::destination::DestinationConfig;

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

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn the_published_test_vector_verifies() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = Signer::new(&[key]).header(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let (a, b) = (
            secret_key(&generate_secret()).unwrap(),
            secret_key(&generate_secret()).unwrap(),
        );
        let header = Signer::new(&[a.clone(), b]).header("id", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.starts_with(&Signer::new(&[a]).header("id", 1, b"{}")));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert!(secret_key("nope").is_none());
        assert!(secret_key("whsec_!!!").is_none());
        assert!(secret_key("whsec_AAAA").is_none(), "too short");
    }
}
