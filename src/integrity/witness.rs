//! Checkpoints read back from where they are kept outside the database
//! (`verify --checkpoint`): a file, or a witness's copy at an HTTPS URL or in
//! S3 (`s3://bucket/key`, as an S3 witness destination stores them).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use reqwest::Url;

use super::checkpoint::SignedCheckpoint;

/// A checkpoint is a few hundred bytes: anything much larger is not one.
const MAX_BYTES: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not a usable URL: {1}")]
    BadUrl(String, String),
    #[error("{0}: plain http is only for loopback addresses (tests); use https")]
    PlainHttp(String),
    #[error("cannot read {}", .0.display())]
    File(PathBuf, #[source] std::io::Error),
    #[error("cannot fetch {0}")]
    Http(String, #[source] reqwest::Error),
    #[error("cannot fetch {0}: the server answered {1}")]
    Status(String, reqwest::StatusCode),
    #[error("cannot fetch {0}: {1}")]
    S3(String, String),
    #[error("{0} is larger than {MAX_BYTES} bytes: not a checkpoint")]
    TooLarge(String),
    #[error("{0} is not a checkpoint")]
    NotACheckpoint(String, #[source] serde_json::Error),
}

/// Where a checkpoint is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// https, or http to a loopback address.
    Http(Url),
    S3 {
        bucket: String,
        key: String,
    },
}

impl Source {
    /// `https://…`, `http://` to loopback, `s3://bucket/key`, else a file path.
    pub fn parse(text: &str) -> Result<Self, FetchError> {
        let scheme = text
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        let bad = |reason: &str| FetchError::BadUrl(text.to_owned(), reason.to_owned());
        match scheme.as_deref() {
            Some("https" | "http") => {
                let url = Url::parse(text).map_err(|error| bad(&error.to_string()))?;
                if !secure(&url) {
                    return Err(FetchError::PlainHttp(text.to_owned()));
                }
                Ok(Self::Http(url))
            }
            Some("s3") => {
                let url = Url::parse(text).map_err(|error| bad(&error.to_string()))?;
                let bucket = url.host_str().unwrap_or_default().to_owned();
                let key = url.path().trim_start_matches('/').to_owned();
                if bucket.is_empty() || key.is_empty() {
                    return Err(bad("an S3 URL is s3://bucket/key"));
                }
                Ok(Self::S3 { bucket, key })
            }
            _ => Ok(Self::File(PathBuf::from(text))),
        }
    }
}

/// https anywhere; plain http only to this machine, where nothing on the
/// way can change the answer.
fn secure(url: &Url) -> bool {
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(name))) => name.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => IpAddr::V4(ip).is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => IpAddr::V6(ip).is_loopback(),
        _ => false,
    }
}

/// Reads the checkpoint at `source`: `{payload, signature}`, or a listed one
/// (`GET /v1/integrity/checkpoints`) with it under `checkpoint`. Its
/// signature is checked by the verification that uses it.
pub async fn fetch(source: &Source) -> Result<SignedCheckpoint, FetchError> {
    let (name, bytes) = match source {
        Source::File(path) => (
            path.display().to_string(),
            std::fs::read(path).map_err(|error| FetchError::File(path.clone(), error))?,
        ),
        Source::Http(url) => (url.to_string(), get_http(url).await?),
        Source::S3 { bucket, key } => {
            let name = format!("s3://{bucket}/{key}");
            let bytes = get_s3(bucket, key)
                .await
                .map_err(|message| FetchError::S3(name.clone(), message))?;
            (name, bytes)
        }
    };
    if bytes.len() > MAX_BYTES {
        return Err(FetchError::TooLarge(name));
    }
    let not_a_checkpoint = |error| FetchError::NotACheckpoint(name.clone(), error);
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(not_a_checkpoint)?;
    let inner = value.get("checkpoint").cloned().unwrap_or(value);
    serde_json::from_value(inner).map_err(not_a_checkpoint)
}

async fn get_http(url: &Url) -> Result<Vec<u8>, FetchError> {
    let name = url.to_string();
    let failed = |error| FetchError::Http(name.clone(), error);
    // A redirect is held to the same rule as the URL given.
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 5 {
            attempt.error("too many redirects")
        } else if secure(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error("redirected to plain http off this machine")
        }
    });
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(redirects)
        .build()
        .map_err(failed)?;
    let mut response = client.get(url.clone()).send().await.map_err(failed)?;
    if !response.status().is_success() {
        return Err(FetchError::Status(name, response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BYTES {
            return Err(FetchError::TooLarge(name));
        }
    }
    Ok(body)
}

/// The object, with the endpoint, region and credentials every AWS tool
/// finds (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`..., profiles, instance roles). A store at a given
/// endpoint is addressed path-style (`endpoint/bucket/key`), which
/// S3-compatible stores expect.
async fn get_s3(bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let endpoint_given = shared.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|value| !value.is_empty());
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(endpoint_given)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let get = async {
        let object = client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| DisplayErrorContext(error).to_string())?;
        if object
            .content_length()
            .is_some_and(|length| length > MAX_BYTES as i64)
        {
            return Err(format!("larger than {MAX_BYTES} bytes: not a checkpoint"));
        }
        let body = object
            .body
            .collect()
            .await
            .map_err(|error| error.to_string())?;
        Ok(body.into_bytes().to_vec())
    };
    tokio::time::timeout(TIMEOUT, get)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", TIMEOUT.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_told_apart_and_plain_http_stays_on_this_machine() {
        assert_eq!(
            Source::parse("cp.json").unwrap(),
            Source::File("cp.json".into())
        );
        assert_eq!(
            Source::parse("s3://witness/checkpoints/acme/3.json").unwrap(),
            Source::S3 {
                bucket: "witness".into(),
                key: "checkpoints/acme/3.json".into()
            }
        );
        assert!(matches!(
            Source::parse("s3://witness/"),
            Err(FetchError::BadUrl(..))
        ));
        for allowed in [
            "https://witness.example/cp/3.json",
            "http://127.0.0.1:8081/cp.json",
            "http://[::1]/cp.json",
            "http://localhost/cp.json",
        ] {
            assert!(
                matches!(Source::parse(allowed), Ok(Source::Http(_))),
                "{allowed}"
            );
        }
        for refused in ["http://witness.example/cp.json", "http://10.0.0.1/cp.json"] {
            assert!(
                matches!(Source::parse(refused), Err(FetchError::PlainHttp(_))),
                "{refused}"
            );
        }
    }
}
