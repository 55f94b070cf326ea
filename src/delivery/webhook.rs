//! Webhook signing per the Standard Webhooks specification: headers
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`,
//! `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")), one
//! signature per active secret, space-separated (two during a rotation).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, Url};
use sha2::Sha256;

use super::config::WebhookConfig;

const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_` secret, or `None` when it is malformed.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    (16..=64).contains(&key.len()).then_some(key)
}

/// Signs with every active secret. Each HMAC is keyed once, and cloned for
/// each signature.
pub struct Signer {
    keyed: Vec<Hmac<Sha256>>,
}

impl Signer {
    pub fn new(keys: &[Vec<u8>]) -> Self {
        let keyed = keys
            .iter()
            .map(|key| Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"))
            .collect();
        Self { keyed }
    }

    /// The `webhook-signature` header value for `body`.
    pub fn header(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
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
    pub url: Url,
    pub method: Method,
    /// `content-type` and the destination's own headers.
    pub headers: HeaderMap,
    pub signer: Signer,
    pub timeout: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;

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
