//! A run's output, kept in `report_outputs` as zstd-compressed chunks of
//! about [`CHUNK_BYTES`] so that writing and reading it back take constant
//! memory whatever its size. Its SHA-256 covers the uncompressed bytes.

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::writer::ReportWriter;
use super::ReportError;
use crate::db::{reports, PgPool};

/// Uncompressed bytes per stored chunk.
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// zstd's default level: fast, and audit rows compress well at it.
const COMPRESSION_LEVEL: i32 = 3;

/// The writer of a run and where its bytes go.
pub struct OutputSink {
    pub writer: ReportWriter,
    pool: PgPool,
    execution_id: Uuid,
    organization_id: String,
    pending: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
    seq: i32,
}

/// What was stored.
pub struct StoredOutput {
    pub sha256: String,
    pub bytes: u64,
}

impl OutputSink {
    pub fn new(
        writer: ReportWriter,
        pool: PgPool,
        execution_id: Uuid,
        organization_id: &str,
    ) -> Self {
        Self {
            writer,
            pool,
            execution_id,
            organization_id: organization_id.to_owned(),
            pending: Vec::with_capacity(CHUNK_BYTES),
            hasher: Sha256::new(),
            bytes: 0,
            seq: 0,
        }
    }

    /// Stores a chunk when the writer has buffered one.
    pub async fn flush_if_full(&mut self) -> Result<(), ReportError> {
        if self.writer.buffered() + self.pending.len() >= CHUNK_BYTES {
            self.collect();
            while self.pending.len() >= CHUNK_BYTES {
                let rest = self.pending.split_off(CHUNK_BYTES);
                let chunk = std::mem::replace(&mut self.pending, rest);
                self.store(chunk).await?;
            }
        }
        Ok(())
    }

    /// Stores the rest; the output is complete.
    pub async fn finish(mut self) -> Result<StoredOutput, ReportError> {
        self.collect();
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() || self.seq == 0 {
            self.store(rest).await?;
        }
        Ok(StoredOutput {
            sha256: hex::encode(self.hasher.finalize()),
            bytes: self.bytes,
        })
    }

    fn collect(&mut self) {
        let written = self.writer.take();
        self.hasher.update(&written);
        self.bytes += written.len() as u64;
        self.pending.extend_from_slice(&written);
    }

    async fn store(&mut self, chunk: Vec<u8>) -> Result<(), ReportError> {
        // A few milliseconds of CPU, compressed in place: runs execute on the
        // ReportActor's own arbiter, which nothing else waits on.
        let compressed =
            zstd::bulk::compress(&chunk, COMPRESSION_LEVEL).map_err(ReportError::Compression)?;
        let client = self.pool.get().await?;
        reports::insert_output_chunk(
            &**client,
            self.execution_id,
            self.seq,
            &self.organization_id,
            &compressed,
        )
        .await?;
        self.seq += 1;
        Ok(())
    }
}

/// The stored output of a run, chunk by chunk, decompressed; one chunk in
/// memory at a time.
pub fn read(
    pool: PgPool,
    organization_id: String,
    execution_id: Uuid,
) -> impl Stream<Item = Result<Bytes, ReportError>> {
    futures_util::stream::try_unfold(0i32, move |seq| {
        let (pool, organization_id) = (pool.clone(), organization_id.clone());
        async move {
            let client = pool.get().await?;
            let Some(compressed) =
                reports::output_chunk(&**client, &organization_id, execution_id, seq).await?
            else {
                return Ok(None);
            };
            drop(client);
            let chunk = tokio::task::spawn_blocking(move || {
                zstd::bulk::decompress(&compressed, CHUNK_BYTES)
            })
            .await
            .map_err(|error| ReportError::Compression(std::io::Error::other(error)))?
            .map_err(ReportError::Compression)?;
            Ok(Some((Bytes::from(chunk), seq + 1)))
        }
    })
}
