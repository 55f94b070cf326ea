//! S3 destinations (aws-sdk-s3, any S3-compatible store through `endpoint`):
//! the payload is stored as one JSON object per delivery, under Object Lock
//! retention when the destination has `object_lock_days`.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::body::Rendered;
use super::egress::{self, Egress, EgressError};
use super::retry::{self, Sent, Verdict};
use crate::validation::FieldError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Prepended to every key (e.g. `audit/`).
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// For S3-compatible stores; default: AWS.
    pub endpoint: Option<String>,
    pub access_key_id: String,
    /// Stored encrypted, shown as `***`.
    pub secret_access_key: String,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint`.
    #[serde(default)]
    pub path_style: bool,
    /// The object key; `{prefix}`, `{date}` (YYYY-MM-DD, UTC) and `{delivery_id}` are replaced.
    #[serde(default = "default_key_template")]
    pub key_template: String,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_key_template() -> String {
    "{prefix}{date}/{delivery_id}.json".to_owned()
}

impl S3Config {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            errors.push(FieldError::new(
                "config.bucket",
                "3 to 63 lower-case letters, digits, `-` or `.`",
            ));
        }
        if self.region.trim().is_empty() {
            errors.push(FieldError::new("config.region", "required"));
        }
        if let Some(endpoint) = &self.endpoint {
            match reqwest::Url::parse(endpoint) {
                // URL parsing drops tabs and line breaks: the text is checked itself.
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host_str().is_some()
                        && !egress::has_control_or_space(endpoint) => {}
                _ => errors.push(FieldError::new(
                    "config.endpoint",
                    "an http or https URL, without spaces or control characters",
                )),
            }
        }
        if self.access_key_id.is_empty() {
            errors.push(FieldError::new("config.access_key_id", "required"));
        }
        if self.secret_access_key.is_empty() {
            errors.push(FieldError::new("config.secret_access_key", "required"));
        }
        if !self.key_template.contains("{delivery_id}") {
            errors.push(FieldError::new(
                "config.key_template",
                "must contain {delivery_id}, so that deliveries never overwrite each other",
            ));
        }
        errors
    }

    /// The object's key: the name the worker gave it, after the prefix as
    /// written (as `{prefix}` in the template: `audit/` gives
    /// `audit/checkpoints/...`), else the key template's.
    fn key(&self, object: &Object<'_>) -> String {
        match object.key {
            Some(key) => format!("{}{key}", self.prefix),
            None => self
                .key_template
                .replace("{prefix}", &self.prefix)
                .replace("{date}", &Utc::now().format("%Y-%m-%d").to_string())
                .replace("{delivery_id}", &object.id.to_string()),
        }
    }

    /// Where a connection test connects.
    pub fn endpoint_host(&self) -> (String, u16) {
        let endpoint = self
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region));
        let url = reqwest::Url::parse(&endpoint).ok();
        (
            url.as_ref()
                .and_then(|u| u.host_str())
                .unwrap_or_default()
                .to_owned(),
            url.as_ref()
                .and_then(|u| u.port_or_known_default())
                .unwrap_or(443),
        )
    }
}

/// S3 Object Lock retention in compliance mode: until it ends, nobody (the
/// bucket's owner included) can delete or overwrite the object's version.
#[derive(Debug, Clone, Copy)]
pub struct ObjectLock {
    days: i64,
}

impl ObjectLock {
    /// For the destination's `object_lock_days` (1 to 36500, as stored).
    pub fn days(days: i32) -> Self {
        Self {
            days: i64::from(days),
        }
    }

    /// Retained until `days` after the attempt that stores the object.
    fn retain_until(&self) -> DateTime {
        let until = Utc::now() + chrono::Duration::days(self.days);
        DateTime::from_secs(until.timestamp())
    }
}

/// What one delivery stores: its id (for the key template), the name the
/// worker gave it if any, and its retention.
pub struct Object<'a> {
    pub id: Uuid,
    pub key: Option<&'a str>,
    pub lock: Option<&'a ObjectLock>,
}

/// Stores the payload. The SDK's HTTP client resolves through the network
/// policy; a literal endpoint address, which it does not resolve, is checked
/// here first.
pub async fn send(
    config: &S3Config,
    egress: &Egress,
    object: &Object<'_>,
    file: Rendered,
    timeout: Duration,
) -> Sent {
    let refused = |error: &EgressError| Sent {
        verdict: error.verdict(),
        code: None,
        reason: Some(format!("S3: {error}")),
        reference: None,
    };
    if let Some(Ok(url)) = config.endpoint.as_deref().map(reqwest::Url::parse) {
        if let Err(error) = egress.check_url(&url) {
            return refused(&error);
        }
    }
    let mut builder = aws_sdk_s3::Config::builder()
        .http_client(egress.s3_http())
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .credentials_provider(Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.clone(),
            None,
            None,
            "audit-worker",
        ))
        .force_path_style(config.path_style);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    let client = aws_sdk_s3::Client::from_conf(builder.build());
    let key = config.key(object);
    let mut put = client
        .put_object()
        .bucket(&config.bucket)
        .key(&key)
        .content_type(file.content_type)
        .set_content_encoding(file.content_encoding.map(str::to_owned))
        .body(ByteStream::from(file.bytes));
    if let Some(lock) = object.lock {
        // A put with retention must carry an integrity check (Content-MD5 or
        // a checksum): the algorithm named, the SDK sends its checksum header.
        put = put
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(lock.retain_until())
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
    }
    let put = put.send();
    match tokio::time::timeout(timeout, put).await {
        Ok(Ok(output)) => Sent {
            verdict: Verdict::Delivered,
            code: Some(200),
            reason: None,
            reference: Some(format!(
                "{}/{key} {}",
                config.bucket,
                output.e_tag().unwrap_or_default()
            )),
        },
        Ok(Err(error)) => {
            if let Some(refusal) = EgressError::refusal_in(&error) {
                return refused(refusal);
            }
            let code = error
                .raw_response()
                .map(|response| response.status().as_u16());
            Sent {
                verdict: code.map_or(Verdict::Retryable, retry::verdict_for_status),
                code: code.map(i32::from),
                reason: Some(format!("S3: {}", DisplayErrorContext(&error))),
                reference: None,
            }
        }
        Err(_) => Sent {
            verdict: Verdict::Retryable,
            code: None,
            reason: Some(format!("S3: no answer within {} ms", timeout.as_millis())),
            reference: None,
        },
    }
}
