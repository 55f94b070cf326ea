//! Where the files of an object-storage archive live: an S3-compatible
//! bucket (aws-sdk-s3) or a directory. Both answer the same few verbs, so the
//! archive code above them is one.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;

use crate::config::ArchiveConfig;

/// An S3 call that takes longer than this has failed (an archive is a few MB).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{location}: {message}")]
    S3 { location: String, message: String },
    #[error("{}: {source}", .path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub enum Objects {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    Directory(PathBuf),
}

impl Objects {
    /// An S3 client with the configured endpoint and region and the standard
    /// AWS credential chain.
    pub async fn s3(config: &ArchiveConfig) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if !config.endpoint.is_empty() {
            loader = loader.endpoint_url(&config.endpoint);
        }
        let shared = loader.load().await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .timeout_config(timeouts)
            .build();
        Self::S3 {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: config.bucket.clone(),
        }
    }

    /// The store's name, as `archive_storage.store` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::S3 { .. } => "s3",
            Self::Directory(_) => "directory",
        }
    }

    /// `s3://bucket/key`, or the file's path.
    pub fn location(&self, key: &str) -> String {
        match self {
            Self::S3 { bucket, .. } => format!("s3://{bucket}/{key}"),
            Self::Directory(root) => root.join(key).display().to_string(),
        }
    }

    fn s3_error(&self, key: &str, error: impl std::error::Error) -> ObjectError {
        ObjectError::S3 {
            location: self.location(key),
            message: DisplayErrorContext(error).to_string(),
        }
    }

    /// Whether the store can be reached and written to (for `/readyz`).
    pub async fn check(&self) -> Result<(), ObjectError> {
        match self {
            Self::S3 { client, bucket } => {
                client
                    .head_bucket()
                    .bucket(bucket)
                    .send()
                    .await
                    .map_err(|error| self.s3_error("", error))?;
                Ok(())
            }
            Self::Directory(root) => {
                let probe = root.join(".audit-worker-probe");
                let result = async {
                    tokio::fs::create_dir_all(root).await?;
                    tokio::fs::write(&probe, b"ok").await?;
                    tokio::fs::remove_file(&probe).await
                }
                .await;
                result.map_err(|source| ObjectError::File {
                    path: root.clone(),
                    source,
                })
            }
        }
    }

    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        match self {
            Self::S3 { client, bucket } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type(content_type)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|error| self.s3_error(key, error))?;
                Ok(())
            }
            Self::Directory(root) => {
                let path = root.join(key);
                // Written aside, then renamed: a reader sees the old file or
                // the whole new one.
                let partial = path.with_extension("partial");
                let result = async {
                    if let Some(parent) = path.parent() {
                        tokio::fs::create_dir_all(parent).await?;
                    }
                    tokio::fs::write(&partial, body).await?;
                    tokio::fs::rename(&partial, &path).await
                }
                .await;
                result.map_err(|source| ObjectError::File { path, source })
            }
        }
    }

    /// The object's bytes; `None` when there is no such object.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        match self {
            Self::S3 { client, bucket } => {
                let object = match client.get_object().bucket(bucket).key(key).send().await {
                    Ok(object) => object,
                    Err(error)
                        if error
                            .as_service_error()
                            .is_some_and(|service| service.is_no_such_key()) =>
                    {
                        return Ok(None)
                    }
                    Err(error) => return Err(self.s3_error(key, error)),
                };
                let body = object
                    .body
                    .collect()
                    .await
                    .map_err(|error| self.s3_error(key, error))?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Self::Directory(root) => {
                let path = root.join(key);
                match tokio::fs::read(&path).await {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(ObjectError::File { path, source }),
                }
            }
        }
    }

    /// Deletes the object (gone already is fine).
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self {
            Self::S3 { client, bucket } => {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|error| self.s3_error(key, error))?;
                Ok(())
            }
            Self::Directory(root) => {
                let path = root.join(key);
                match tokio::fs::remove_file(&path).await {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        Err(ObjectError::File {
                            path,
                            source: error,
                        })
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The keys of every object under `prefix` (a folder, ending in `/`).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        match self {
            Self::S3 { client, bucket } => {
                let mut keys = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|error| self.s3_error(prefix, error))?;
                    keys.extend(
                        page.contents()
                            .iter()
                            .filter_map(|object| object.key().map(str::to_owned)),
                    );
                }
                Ok(keys)
            }
            Self::Directory(root) => {
                let folder = root.join(prefix);
                let mut keys = Vec::new();
                let mut entries = match tokio::fs::read_dir(&folder).await {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
                    Err(source) => {
                        return Err(ObjectError::File {
                            path: folder,
                            source,
                        })
                    }
                };
                let failed = |source| ObjectError::File {
                    path: folder.clone(),
                    source,
                };
                while let Some(entry) = entries.next_entry().await.map_err(failed)? {
                    if entry.file_type().await.map_err(failed)?.is_file() {
                        keys.push(format!("{prefix}{}", entry.file_name().to_string_lossy()));
                    }
                }
                Ok(keys)
            }
        }
    }
}

/// An organization id as one segment of an object key: letters, digits, `-`
/// and `_` as they are, every other byte percent-encoded (so no id can climb
/// out of its folder with `/` or `..`).
pub fn key_segment(text: &str) -> String {
    let mut segment = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            segment.push(byte as char);
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    segment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organization_ids_stay_one_folder() {
        assert_eq!(key_segment("org-a_1"), "org-a_1");
        assert_eq!(key_segment("../x/y"), "%2E%2E%2Fx%2Fy");
        assert_eq!(key_segment("ä"), "%C3%A4");
    }
}
