//! Writing one archive as its events arrive, a chunk at a time: memory holds
//! a chunk and the compressed output, never the whole archive's events, so
//! an archive of any size takes the same memory to write.

use std::collections::BTreeSet;
use std::io::Write as _;

use ::parquet::arrow::ArrowWriter;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::event::ArchivedEvent;
use super::parquet::{self, FormatError};
use super::ArchiveError;

/// Events handed to a writer at a time.
pub const CHUNK_EVENTS: usize = 1000;

/// What an archive is of, known before its events.
pub struct ArchiveHeader {
    pub organization_id: String,
    pub retention_policy: String,
    pub data_classification: String,
    pub archived_at: DateTime<Utc>,
    /// The archive a GDPR operation rewrites into this one.
    pub replaces: Option<Uuid>,
}

enum Encoder {
    /// JSON Lines through zstd (`postgres` store).
    Jsonl(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Parquet(Box<ArrowWriter<Vec<u8>>>),
}

/// What the events written so far add up to.
#[derive(Default)]
pub struct Summary {
    pub count: u64,
    /// Bytes of the canonical event stream (the JSON Lines).
    pub uncompressed_bytes: u64,
    pub ids: Option<(i64, i64)>,
    pub times: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The chain links of the events, each once.
    pub links: BTreeSet<i64>,
    /// Principal and target commitments of the events, each once.
    pub subjects: BTreeSet<String>,
}

pub struct ArchiveWriter {
    pub id: Uuid,
    pub header: ArchiveHeader,
    encoder: Encoder,
    /// SHA-256 of the canonical event stream.
    stream: Sha256,
    pub summary: Summary,
}

/// A finished archive's bytes and what they hold.
pub struct Encoded {
    pub id: Uuid,
    pub header: ArchiveHeader,
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of the canonical event stream.
    pub events_sha256: String,
    pub summary: Summary,
}

impl ArchiveWriter {
    /// A writer of JSON Lines (`parquet` false) or of Parquet, zstd at `level`.
    pub fn new(header: ArchiveHeader, parquet: bool, level: i32) -> Result<Self, ArchiveError> {
        let encoder = if parquet {
            Encoder::Parquet(Box::new(parquet::writer(level)?))
        } else {
            Encoder::Jsonl(
                zstd::stream::write::Encoder::new(Vec::new(), level)
                    .map_err(ArchiveError::Compress)?,
            )
        };
        Ok(Self {
            id: Uuid::new_v4(),
            header,
            encoder,
            stream: Sha256::new(),
            summary: Summary::default(),
        })
    }

    /// Adds events (CPU work: call it off the async threads).
    pub fn push(&mut self, events: &[ArchivedEvent]) -> Result<(), ArchiveError> {
        for event in events {
            let mut line = event.line();
            line.push('\n');
            self.stream.update(line.as_bytes());
            if let Encoder::Jsonl(encoder) = &mut self.encoder {
                encoder
                    .write_all(line.as_bytes())
                    .map_err(ArchiveError::Compress)?;
            }
            let summary = &mut self.summary;
            summary.count += 1;
            summary.uncompressed_bytes += line.len() as u64;
            summary.ids = Some(summary.ids.map_or((event.id, event.id), |(low, high)| {
                (low.min(event.id), high.max(event.id))
            }));
            let time = event.timestamp;
            summary.times = Some(
                summary
                    .times
                    .map_or((time, time), |(low, high)| (low.min(time), high.max(time))),
            );
            summary.links.insert(event.chain_link);
            for subject in [
                Some(&event.principal_commitment),
                event.target_resource_commitment.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                if !summary.subjects.contains(subject) {
                    summary.subjects.insert(subject.clone());
                }
            }
        }
        if let Encoder::Parquet(writer) = &mut self.encoder {
            writer
                .write(&parquet::batch(events)?)
                .map_err(FormatError::from)?;
        }
        Ok(())
    }

    /// The finished file (CPU work: call it off the async threads).
    pub fn finish(self) -> Result<Encoded, ArchiveError> {
        let bytes = match self.encoder {
            Encoder::Jsonl(encoder) => encoder.finish().map_err(ArchiveError::Compress)?,
            Encoder::Parquet(writer) => writer.into_inner().map_err(FormatError::from)?,
        };
        Ok(Encoded {
            id: self.id,
            header: self.header,
            bytes,
            events_sha256: hex::encode(self.stream.finalize()),
            summary: self.summary,
        })
    }
}
