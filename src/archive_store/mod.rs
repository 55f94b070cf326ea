//! The archive store: where archived events are kept, and the one place that
//! reads and writes them whatever the store. Archives of the `postgres` store
//! are zstd JSON Lines in `archive_storage.data`; those of an object store
//! (`s3`, `directory`) are Parquet files beside a manifest, with signed
//! digests. `archive_storage` lists every archive either way: the database
//! knows where each one is, and a reader of the bucket alone can check it.

pub mod digest;
pub mod event;
pub mod manifest;
pub mod objects;
pub mod parquet;
pub mod writer;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use self::digest::{Change, Digest, DIGEST_VERSION};
use self::event::ArchivedEvent;
use self::manifest::{events_sha256, sha256, Manifest, FORMAT_VERSION};
use self::objects::{key_segment, ObjectError, Objects};
use self::parquet::FormatError;
pub use self::writer::{ArchiveHeader, ArchiveWriter, Encoded, CHUNK_EVENTS};
use crate::config::{ArchiveConfig, ArchiveStoreKind};
use crate::db::archives::{self, Archive, NewArchive};
use crate::db::DbError;
use crate::integrity::keys::{IntegrityKeys, PublicKeys};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no archive {0}")]
    NotFound(Uuid),
    #[error("archive {id} is corrupted: {problem}")]
    Corrupted { id: Uuid, problem: String },
    #[error("cannot compress an archive: {0}")]
    Compress(#[source] std::io::Error),
    #[error("cannot write a Parquet archive: {0}")]
    Format(#[from] FormatError),
    #[error("an event cannot be archived: {0}")]
    Event(#[source] serde_json::Error),
    #[error("archive store: {0}")]
    Object(#[from] ObjectError),
    #[error("archive {id} is in the {store} store, which [archive] does not configure")]
    Unreachable { id: Uuid, store: String },
}

impl From<tokio_postgres::Error> for ArchiveError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error.into())
    }
}

/// An archive written (its files, for an object store) and ready to be listed.
pub struct Written {
    pub id: Uuid,
    pub store: ArchiveStoreKind,
    pub organization_id: String,
    pub metadata: Value,
    /// The compressed JSON Lines (`postgres` store).
    pub data: Option<Vec<u8>>,
    /// The Parquet file and its manifest (object stores).
    pub files: Option<Files>,
    pub event_count: i32,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub first_link: i64,
    pub last_link: i64,
    pub subject_commitments: Vec<String>,
    pub uncompressed_bytes: u64,
    pub stored_bytes: u64,
    pub replaces: Option<Uuid>,
}

pub struct Files {
    pub object_key: String,
    pub manifest_key: String,
    pub manifest_sha256: String,
}

impl Written {
    /// The row that lists the archive.
    pub fn row(&self) -> NewArchive<'_> {
        NewArchive {
            id: self.id,
            organization_id: &self.organization_id,
            store: self.store.as_str(),
            metadata: &self.metadata,
            data: self.data.as_deref(),
            object_key: self.files.as_ref().map(|files| files.object_key.as_str()),
            event_count: self.event_count,
            first_event_at: self.first_event_at,
            last_event_at: self.last_event_at,
            first_link: self.first_link,
            last_link: self.last_link,
            subject_commitments: &self.subject_commitments,
        }
    }
}

pub struct ArchiveStore {
    /// Where new archives go.
    kind: ArchiveStoreKind,
    prefix: String,
    /// The bucket or directory, when one is configured.
    objects: Option<Objects>,
    compression_level: i32,
}

impl ArchiveStore {
    pub async fn open(config: &ArchiveConfig, compression_level: i32) -> Self {
        let objects = match config.store {
            ArchiveStoreKind::Postgres if config.bucket.is_empty() => None,
            ArchiveStoreKind::Postgres | ArchiveStoreKind::S3 => Some(Objects::s3(config).await),
            ArchiveStoreKind::Directory => Some(Objects::Directory(config.directory.clone())),
        };
        Self {
            kind: config.store,
            prefix: config.prefix.clone(),
            objects,
            compression_level,
        }
    }

    /// Whether the object store answers and takes writes; `None` when new
    /// archives go to PostgreSQL.
    pub async fn check(&self) -> Option<Result<(), ObjectError>> {
        match (&self.objects, self.kind) {
            (_, ArchiveStoreKind::Postgres) | (None, _) => None,
            (Some(objects), _) => Some(objects.check().await),
        }
    }

    /// The configured object store, which must be the one named `store`
    /// (where archive `id` is).
    fn objects_for(&self, store: &str, id: Uuid) -> Result<&Objects, ArchiveError> {
        self.objects
            .as_ref()
            .filter(|objects| objects.name() == store)
            .ok_or_else(|| ArchiveError::Unreachable {
                id,
                store: store.to_owned(),
            })
    }

    /// The object store new archives go to (none for `postgres`).
    fn objects_for_new(&self) -> Option<&Objects> {
        (self.kind != ArchiveStoreKind::Postgres)
            .then_some(self.objects.as_ref())
            .flatten()
    }

    fn folder(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// `<prefix>/<organization>/<yyyy>/<mm>/<id>.parquet`
    fn object_key(&self, organization_id: &str, first: DateTime<Utc>, id: Uuid) -> String {
        format!(
            "{}{}/{:04}/{:02}/{id}.parquet",
            self.folder(),
            key_segment(organization_id),
            first.year(),
            first.month()
        )
    }

    /// `<prefix>/digests/<organization>/`
    pub fn digest_folder(&self, organization_id: &str) -> String {
        format!("{}digests/{}/", self.folder(), key_segment(organization_id))
    }

    /// A writer of a new archive for the store new archives go to.
    pub fn writer(&self, header: ArchiveHeader) -> Result<ArchiveWriter, ArchiveError> {
        ArchiveWriter::new(
            header,
            self.objects_for_new().is_some(),
            self.compression_level,
        )
    }

    /// Writes `events` (in id order) as a new archive: see [`Self::store`].
    pub async fn write(
        &self,
        header: ArchiveHeader,
        events: Vec<ArchivedEvent>,
        chain_links: Value,
    ) -> Result<Written, ArchiveError> {
        let mut writer = self.writer(header)?;
        let encoded = tokio::task::spawn_blocking(move || {
            for chunk in events.chunks(CHUNK_EVENTS) {
                writer.push(chunk)?;
            }
            writer.finish()
        })
        .await
        .expect("encoding does not panic")?;
        self.store(encoded, chain_links).await
    }

    /// Makes a finished archive ready to be listed: its compressed bytes for
    /// the `postgres` store; for an object store, its Parquet file and
    /// manifest, each read back and compared before this returns (only then
    /// may its events leave `audit_log`).
    pub async fn store(
        &self,
        encoded: Encoded,
        chain_links: Value,
    ) -> Result<Written, ArchiveError> {
        let summary = &encoded.summary;
        let (Some((first_event_id, last_event_id)), Some((first_event_at, last_event_at))) =
            (summary.ids, summary.times)
        else {
            return Err(ArchiveError::Corrupted {
                id: encoded.id,
                problem: "an archive needs at least one event".to_owned(),
            });
        };
        let header = &encoded.header;
        let mut written = Written {
            id: encoded.id,
            store: self.kind,
            organization_id: header.organization_id.clone(),
            metadata: Value::Null,
            data: None,
            files: None,
            event_count: summary.count as i32,
            first_event_at,
            last_event_at,
            first_link: summary.links.first().copied().unwrap_or_default(),
            last_link: summary.links.last().copied().unwrap_or_default(),
            subject_commitments: summary.subjects.iter().cloned().collect(),
            uncompressed_bytes: summary.uncompressed_bytes,
            stored_bytes: encoded.bytes.len() as u64,
            replaces: header.replaces,
        };
        let Some(objects) = self.objects_for_new() else {
            written.metadata = json!({
                "format": "jsonl",
                "compression": "zstd",
                "event_count": summary.count,
                "first_event_id": first_event_id,
                "last_event_id": last_event_id,
                "first_event_at": first_event_at,
                "last_event_at": last_event_at,
                "uncompressed_bytes": summary.uncompressed_bytes,
                "compressed_bytes": encoded.bytes.len(),
                "sha256_uncompressed": encoded.events_sha256,
                "sha256_compressed": sha256(&encoded.bytes),
                "retention_policy": header.retention_policy,
                "data_classification": header.data_classification,
                "archived_at": header.archived_at,
                "chain_links": chain_links,
                "replaces": header.replaces,
            });
            written.data = Some(encoded.bytes);
            return Ok(written);
        };
        let object_key = self.object_key(&header.organization_id, first_event_at, encoded.id);
        let manifest_key = object_key.replace(".parquet", ".manifest.json");
        let manifest = Manifest {
            version: FORMAT_VERSION,
            archive_id: encoded.id,
            organization_id: header.organization_id.clone(),
            object_key: object_key.clone(),
            format: "parquet".to_owned(),
            compression: "zstd".to_owned(),
            event_count: summary.count,
            first_event_id,
            last_event_id,
            first_event_at,
            last_event_at,
            chain_links,
            parquet_bytes: encoded.bytes.len() as u64,
            parquet_sha256: sha256(&encoded.bytes),
            events_sha256: encoded.events_sha256.clone(),
            retention_policy: header.retention_policy.clone(),
            data_classification: header.data_classification.clone(),
            archived_at: header.archived_at,
            replaces: header.replaces,
        };
        let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        let manifest_sha256 = sha256(&manifest_bytes);
        put_checked(
            objects,
            &object_key,
            encoded.bytes,
            "application/vnd.apache.parquet",
        )
        .await?;
        put_checked(objects, &manifest_key, manifest_bytes, "application/json").await?;
        let mut metadata = serde_json::to_value(&manifest).expect("a manifest serializes");
        metadata["store"] = json!(self.kind.as_str());
        metadata["location"] = json!(objects.location(&object_key));
        metadata["manifest_key"] = json!(manifest_key);
        metadata["manifest_sha256"] = json!(manifest_sha256);
        metadata["compressed_bytes"] = json!(written.stored_bytes);
        metadata["uncompressed_bytes"] = json!(written.uncompressed_bytes);
        written.metadata = metadata;
        written.files = Some(Files {
            object_key,
            manifest_key,
            manifest_sha256,
        });
        Ok(written)
    }

    /// The archive's events, after checking its bytes against the sums its
    /// metadata records (and, for an object store, the event count and the
    /// canonical event stream).
    pub async fn read(
        &self,
        client: &impl GenericClient,
        archive: &Archive,
    ) -> Result<Vec<ArchivedEvent>, ArchiveError> {
        let corrupted = |problem: String| ArchiveError::Corrupted {
            id: archive.id,
            problem,
        };
        let recorded = |key: &str| {
            archive.metadata[key]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let (events, stream_sha) = if archive.store == ArchiveStoreKind::Postgres.as_str() {
            let data = archives::data(client, &archive.organization_id, archive.id)
                .await?
                .ok_or(ArchiveError::NotFound(archive.id))?;
            let stored = archive.clone();
            tokio::task::spawn_blocking(move || open_jsonl(&stored, &data))
                .await
                .expect("opening an archive does not panic")?
        } else {
            let objects = self.objects_for(&archive.store, archive.id)?;
            let key = archive.object_key.clone().unwrap_or_default();
            let file = objects.get(&key).await?.ok_or_else(|| {
                corrupted(format!("its file {} is missing", objects.location(&key)))
            })?;
            if sha256(&file) != recorded("parquet_sha256") {
                return Err(corrupted(format!(
                    "its file {} no longer matches its SHA-256",
                    objects.location(&key)
                )));
            }
            tokio::task::spawn_blocking(move || {
                let events = parquet::decode(Bytes::from(file))
                    .map_err(|error| format!("it is not readable Parquet: {error}"))?;
                let sha = events_sha256(&events);
                Ok::<_, String>((events, sha))
            })
            .await
            .expect("decoding does not panic")
            .map_err(corrupted)?
        };
        if events.len() != archive.event_count as usize {
            return Err(corrupted(format!(
                "it holds {} events, not {}",
                events.len(),
                archive.event_count
            )));
        }
        let expected = match archive.store.as_str() {
            "postgres" => recorded("sha256_uncompressed"),
            _ => recorded("events_sha256"),
        };
        if stream_sha != expected {
            return Err(corrupted(
                "its events no longer match their SHA-256".to_owned(),
            ));
        }
        Ok(events)
    }

    /// Appends the digest of a change to an object archive, inside the
    /// transaction making the change (it holds the organization's digest
    /// head until it ends). Nothing for archives of the `postgres` store.
    pub async fn append_digest(
        &self,
        client: &impl GenericClient,
        keys: &IntegrityKeys,
        change: Change,
        subject: DigestSubject<'_>,
    ) -> Result<(), ArchiveError> {
        if subject.store == ArchiveStoreKind::Postgres.as_str() {
            return Ok(());
        }
        let objects = self.objects_for(subject.store, subject.archive_id)?;
        let (sequence, previous) =
            archives::lock_digest_head(client, subject.organization_id, subject.store).await?;
        let digest = Digest {
            version: DIGEST_VERSION,
            organization_id: subject.organization_id.to_owned(),
            sequence: sequence + 1,
            change,
            archive_id: subject.archive_id,
            replaces: subject.replaces,
            object_key: subject.object_key.to_owned(),
            manifest_key: subject.manifest_key.to_owned(),
            manifest_sha256: subject.manifest_sha256.to_owned(),
            previous_digest_sha256: previous,
            created_at: Utc::now(),
            key_id: keys.key_id(),
            signature: String::new(),
        }
        .sign(keys.signing_key());
        let bytes = digest.bytes();
        let sha = sha256(&bytes);
        let key = format!(
            "{}{}.json",
            self.digest_folder(subject.organization_id),
            digest.sequence
        );
        objects.put(&key, bytes, "application/json").await?;
        archives::set_digest_head(
            client,
            subject.organization_id,
            subject.store,
            (digest.sequence, &sha),
        )
        .await?;
        Ok(())
    }

    /// Deletes an archive's files: one no longer listed (after the change
    /// committed), or one written but never listed (its transaction
    /// failed). A failure leaves an unlisted file, which is logged: nothing
    /// reads it, and the digests do not name it as in place.
    pub async fn delete_files(&self, files: DigestSubject<'_>) {
        let Ok(objects) = self.objects_for(files.store, files.archive_id) else {
            return;
        };
        for key in [files.object_key, files.manifest_key] {
            if let Err(error) = objects.delete(key).await {
                tracing::warn!(%error, archive = %files.archive_id, "Cannot delete an unlisted archive's file");
            }
        }
    }
}

/// An archive's files, as its digests name them.
pub struct DigestSubject<'a> {
    pub organization_id: &'a str,
    pub store: &'a str,
    pub archive_id: Uuid,
    pub replaces: Option<Uuid>,
    pub object_key: &'a str,
    pub manifest_key: &'a str,
    pub manifest_sha256: &'a str,
}

impl<'a> DigestSubject<'a> {
    /// A new archive (written, or a rewrite replacing another).
    pub fn written(written: &'a Written) -> Self {
        let files = written.files.as_ref();
        Self {
            organization_id: &written.organization_id,
            store: written.store.as_str(),
            archive_id: written.id,
            replaces: written.replaces,
            object_key: files.map_or("", |f| f.object_key.as_str()),
            manifest_key: files.map_or("", |f| f.manifest_key.as_str()),
            manifest_sha256: files.map_or("", |f| f.manifest_sha256.as_str()),
        }
    }

    /// A listed archive (deleted).
    pub fn listed(archive: &'a Archive) -> Self {
        let recorded = |key: &str| archive.metadata[key].as_str().unwrap_or_default();
        Self {
            organization_id: &archive.organization_id,
            store: &archive.store,
            archive_id: archive.id,
            replaces: None,
            object_key: archive.object_key.as_deref().unwrap_or_default(),
            manifest_key: recorded("manifest_key"),
            manifest_sha256: recorded("manifest_sha256"),
        }
    }
}

/// Writes an object and reads it back: a store that acknowledged bytes it
/// does not return is not trusted with an archive.
async fn put_checked(
    objects: &Objects,
    key: &str,
    bytes: Vec<u8>,
    content_type: &str,
) -> Result<(), ArchiveError> {
    let expected = sha256(&bytes);
    objects.put(key, bytes, content_type).await?;
    let back = objects.get(key).await?;
    if back.as_deref().map(sha256) != Some(expected) {
        return Err(ArchiveError::Object(ObjectError::S3 {
            location: objects.location(key),
            message: "the object read back differs from what was written".to_owned(),
        }));
    }
    Ok(())
}

/// The events of a `postgres` archive and the SHA-256 of its JSON Lines,
/// after checking its compressed bytes.
fn open_jsonl(
    archive: &Archive,
    data: &[u8],
) -> Result<(Vec<ArchivedEvent>, String), ArchiveError> {
    let corrupted = |problem: String| ArchiveError::Corrupted {
        id: archive.id,
        problem,
    };
    let recorded = archive.metadata["sha256_compressed"]
        .as_str()
        .unwrap_or_default();
    if sha256(data) != recorded {
        return Err(corrupted(
            "its compressed bytes no longer match their SHA-256".to_owned(),
        ));
    }
    let body = zstd::decode_all(data)
        .map_err(|error| corrupted(format!("it does not decompress: {error}")))?;
    let sha = sha256(&body);
    let text = String::from_utf8(body).map_err(|_| corrupted("it is not UTF-8".to_owned()))?;
    let events = text
        .lines()
        .map(ArchivedEvent::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| corrupted(format!("an event does not parse: {error}")))?;
    Ok((events, sha))
}

/// What an organization's digests say, read from the object store alone.
#[derive(Debug, Default)]
pub struct DigestWalk {
    /// The store walked (`s3` or `directory`).
    pub store: &'static str,
    pub digests: u64,
    /// The archives the digests leave in place, by id.
    pub live: std::collections::BTreeMap<Uuid, Digest>,
    /// Digests missing, unsigned, out of order or not linked; manifests
    /// missing or replaced.
    pub problems: Vec<String>,
}

impl ArchiveStore {
    /// Walks the organization's digests in the object store, in order up to
    /// the head `client` sees, checking each one's signature and link to the
    /// one before, and then the manifest of every archive they leave in
    /// place. (A digest past the head belongs to a change not committed when
    /// the caller looked, or never committed.) `None` without an object store.
    pub async fn walk_digests(
        &self,
        client: &impl GenericClient,
        organization_id: &str,
        keys: &PublicKeys,
    ) -> Result<Option<DigestWalk>, ArchiveError> {
        let Some(objects) = &self.objects else {
            return Ok(None);
        };
        let last = archives::digest_head(client, organization_id, objects.name()).await?;
        let folder = self.digest_folder(organization_id);
        let mut numbered: Vec<(i64, String)> = objects
            .list(&folder)
            .await?
            .into_iter()
            .filter_map(|key| {
                let name = key.strip_prefix(&folder)?.strip_suffix(".json")?;
                Some((name.parse().ok()?, key))
            })
            .collect();
        numbered.sort();
        numbered.retain(|(sequence, _)| *sequence <= last);
        let mut walk = DigestWalk {
            store: objects.name(),
            ..DigestWalk::default()
        };
        let mut previous: Option<String> = None;
        let mut expected = 0;
        for (sequence, name) in numbered {
            expected += 1;
            if sequence != expected {
                walk.problems.push(format!(
                    "digest {expected} is missing (the next one found is {sequence})"
                ));
                break;
            }
            let location = objects.location(&name);
            let Some(bytes) = objects.get(&name).await? else {
                walk.problems
                    .push(format!("{location} vanished while being read"));
                break;
            };
            let digest: Digest = match serde_json::from_slice(&bytes) {
                Ok(digest) => digest,
                Err(error) => {
                    walk.problems
                        .push(format!("{location} is not a digest: {error}"));
                    break;
                }
            };
            if !keys
                .get(&digest.key_id)
                .is_some_and(|key| digest.signed_by(key))
            {
                walk.problems.push(format!(
                    "{location} is not signed by the key it names (`{}`) nor by any key registered here",
                    digest.key_id
                ));
            }
            if digest.sequence != sequence || digest.organization_id != organization_id {
                walk.problems.push(format!(
                    "{location} names digest {} of `{}`",
                    digest.sequence, digest.organization_id
                ));
            }
            if digest.previous_digest_sha256 != previous {
                walk.problems
                    .push(format!("{location} does not link to the digest before it"));
            }
            previous = Some(sha256(&bytes));
            walk.digests += 1;
            if let Some(replaced) = digest.replaces {
                walk.live.remove(&replaced);
            }
            match digest.change {
                Change::Deleted => {
                    walk.live.remove(&digest.archive_id);
                }
                Change::Written | Change::Rewritten => {
                    walk.live.insert(digest.archive_id, digest);
                }
            }
        }
        if (walk.digests as i64) < last && walk.problems.is_empty() {
            walk.problems
                .push(format!("digests {}..={last} are missing", walk.digests + 1));
        }
        for digest in walk.live.values() {
            let location = objects.location(&digest.manifest_key);
            match objects.get(&digest.manifest_key).await? {
                None => walk.problems.push(format!(
                    "the manifest of archive {} ({location}) is missing",
                    digest.archive_id
                )),
                Some(bytes) if sha256(&bytes) != digest.manifest_sha256 => {
                    walk.problems.push(format!(
                        "the manifest of archive {} ({location}) was replaced",
                        digest.archive_id
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(Some(walk))
    }
}
