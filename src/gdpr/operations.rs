//! The GDPR operations. Each one holds a per-subject lock (a transaction-scoped
//! advisory lock, released even if the worker dies), records itself as an
//! audit event in the organization's chain before it changes anything, and
//! changes events in short batches (each its own transaction), so no lock is
//! held long and a crash leaves every event either as it was or as it should
//! be; running the request again resumes the unfinished operation under its
//! id and completes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use utoipa::ToSchema;
use uuid::Uuid;

use super::export::{ExportWriter, Format, Manifest};
use super::pseudonym::{PseudonymKeys, Strategy, MAX_ENCRYPTABLE_BYTES};
use super::GdprError;
use crate::actors::ingest::IngestActor;
use crate::archive_store::ArchiveStore;
use crate::cache::{QueryCache, EVENTS};
use crate::config::{DatabaseConfig, GdprConfig};
use crate::db::gdpr::{self, Mapping, NewMapping, NewOperation, Operation, Preserved, Role};
use crate::db::trail::OperationKind;
use crate::db::{
    self, archives, checkpoints, deliveries, destinations, events, legal_holds, trail, DbError,
    PgPool,
};
use crate::events::{prepare, Rules};
use crate::integrity::canonical;
use crate::integrity::keys::IntegrityKeys;
use crate::messages::ingest::Ingest;
use crate::supervisor::ActorHandle;

/// Chunks of an export waiting to be sent, at most: the producer waits for
/// the client, so memory stays constant whatever the size (about
/// EXPORT_CHANNEL_CHUNKS × EXPORT_CHUNK_BYTES).
const EXPORT_CHANNEL_CHUNKS: usize = 16;
/// Bytes of an export sent at a time, about.
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Rows fetched at a time by an export.
const EXPORT_FETCH_ROWS: i32 = 1000;

/// Everything the operations need; shared by the GdprActor's tasks.
pub struct Gdpr {
    pub pool: PgPool,
    pub keys: Arc<IntegrityKeys>,
    pub archives: Arc<ArchiveStore>,
    pub pseudonyms: Arc<PseudonymKeys>,
    pub ingest: ActorHandle<IngestActor>,
    pub cache: Arc<QueryCache>,
    pub settings: GdprConfig,
    /// For the connections that hold subject locks.
    pub database: DatabaseConfig,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pseudonymized {
    pub request_id: Uuid,
    pub pseudonym_id: String,
    pub strategy: Strategy,
    /// Events changed by this request (as principal or as target).
    pub records_affected: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Erased {
    pub request_id: Uuid,
    /// The subject's own events deleted (their chain leaves are kept).
    pub records_deleted: u64,
    /// The subject's own events kept (configured compliance actions and
    /// classifications, legal holds), now under the pseudonym.
    pub compliance_records_preserved: u64,
    /// Other principals' events naming the subject as their target, now under the pseudonym.
    pub references_pseudonymized: u64,
    pub pseudonym_id: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reversed {
    pub pseudonym_id: String,
    pub original_id: String,
    pub strategy: Strategy,
}

/// An export to stream to the client: its chunks arrive on `body`; the
/// manifest is stored with the request once the last one is sent.
pub struct ExportStream {
    pub request_id: Uuid,
    pub format: Format,
    pub body: mpsc::Receiver<Result<Bytes, GdprError>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExportDelivered {
    pub request_id: Uuid,
    pub manifest: Manifest,
    pub delivery_ids: Vec<Uuid>,
}

pub struct ExportRequest {
    pub organization_id: String,
    pub principal_id: String,
    pub format: Format,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub requested_by: String,
}

/// An audit event recording a GDPR operation.
struct Recorded<'a> {
    organization_id: &'a str,
    requested_by: &'a str,
    action: &'a str,
    /// `attempt` when an operation starts, `success` when it ends.
    status: &'a str,
    outcome: String,
    /// The pseudonym the operation concerns (never the identifier itself).
    target: Option<&'a str>,
    details: Value,
}

/// The action of the audit events recording an operation of `kind`.
fn record_action(kind: &str) -> &'static str {
    match kind {
        "pseudonymize" => "gdpr.data.pseudonymize",
        "erase" => "gdpr.data.delete",
        _ => "gdpr.data.export",
    }
}

/// Holds the subject's lock for as long as it lives: a session lock on a
/// connection of its own, closed (and the lock released) when dropped, even
/// if the operation fails half-way.
struct SubjectLock {
    _client: tokio_postgres::Client,
}

impl Gdpr {
    fn commitment(&self, organization_id: &str, identifier: &str) -> String {
        canonical::commitment(self.keys.commitment_key(), organization_id, identifier)
    }

    async fn lock_subject(
        &self,
        organization_id: &str,
        commitment: &str,
    ) -> Result<SubjectLock, GdprError> {
        let (client, connection) = db::connect_raw(&self.database)
            .await
            .map_err(DbError::from)?;
        tokio::spawn(connection);
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1 || chr(1) || $2, 11))",
                &[&organization_id, &commitment],
            )
            .await
            .map_err(DbError::from)?
            .get(0);
        if !locked {
            return Err(GdprError::Busy);
        }
        Ok(SubjectLock { _client: client })
    }

    /// Stores an audit event recording a GDPR operation (through ingest, so
    /// it is chained, and the alert rules see it); its id.
    async fn record(&self, recorded: Recorded<'_>) -> Result<i64, GdprError> {
        let Recorded {
            organization_id,
            requested_by,
            action,
            status,
            outcome,
            target,
            details,
        } = recorded;
        let input = json!({
            "principal_id": requested_by,
            "action": action,
            "status": status,
            "outcome_description": outcome,
            "data_classification": "CONFIDENTIAL",
            "target_resource_type": "data_subject",
            "target_resource_id": target,
            "details": details,
        });
        let rules = Rules {
            organization_id,
            now: Utc::now(),
            max_clock_skew: std::time::Duration::ZERO,
            commitment_key: self.keys.commitment_key(),
            presets: &HashMap::new(),
        };
        let event = prepare(0, input, &rules).map_err(|problems| {
            GdprError::Record(
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let receipts = self
            .ingest
            .send(Ingest {
                events: vec![event],
                received: Instant::now(),
            })
            .await??;
        receipts
            .first()
            .map(|receipt| receipt.id)
            .ok_or_else(|| GdprError::Record("ingest returned no receipt".to_owned()))
    }

    /// The subject's mapping, created with `strategy` if it has none.
    async fn mapping(
        &self,
        organization_id: &str,
        principal_id: &str,
        commitment: &str,
        strategy: Strategy,
        requested_by: &str,
    ) -> Result<Mapping, GdprError> {
        let client = self.pool.get().await?;
        if let Some(existing) =
            gdpr::mapping_of_subject(&**client, organization_id, commitment).await?
        {
            return Ok(existing);
        }
        if strategy == Strategy::Encryption && principal_id.len() > MAX_ENCRYPTABLE_BYTES {
            return Err(GdprError::TooLongToEncrypt);
        }
        let pseudonym = self
            .pseudonyms
            .derive(strategy, organization_id, principal_id)
            .unwrap_or_else(PseudonymKeys::token);
        Ok(gdpr::insert_mapping(
            &**client,
            &NewMapping {
                organization_id,
                subject_commitment: commitment,
                pseudonym_id: &pseudonym,
                sealed_original: &self.pseudonyms.seal_original(organization_id, principal_id),
                strategy: strategy.as_str(),
                created_by: requested_by,
            },
        )
        .await?)
    }

    /// The subject's unfinished operation of `kind`, or a new one; either way
    /// recorded in the chain before anything changes.
    async fn operation(
        &self,
        organization_id: &str,
        kind: &str,
        commitment: &str,
        mapping: &Mapping,
        requested_by: &str,
        parameters: Value,
    ) -> Result<Operation, GdprError> {
        let client = self.pool.get().await?;
        let mut operation = match gdpr::unfinished_operation(
            &**client,
            organization_id,
            kind,
            commitment,
        )
        .await?
        {
            Some(unfinished) => {
                tracing::info!(request = %unfinished.id, "Resuming an unfinished GDPR operation");
                unfinished
            }
            None => {
                gdpr::start_operation(
                    &**client,
                    &NewOperation {
                        organization_id,
                        kind,
                        subject_commitment: Some(commitment),
                        pseudonym_id: Some(&mapping.pseudonym_id),
                        strategy: Some(&mapping.strategy),
                        requested_by,
                        parameters: &parameters,
                        completed: false,
                    },
                )
                .await?
            }
        };
        if operation.record_event_id.is_none() {
            let event_id = self
                .record(Recorded {
                    organization_id,
                    requested_by,
                    action: record_action(kind),
                    status: "attempt",
                    outcome: format!("{kind} of a data subject's events started"),
                    target: Some(&mapping.pseudonym_id),
                    details: json!({
                        "operation_id": operation.id,
                        "subject_commitment": commitment,
                        "pseudonym_id": mapping.pseudonym_id,
                        "strategy": mapping.strategy,
                        "parameters": parameters,
                    }),
                })
                .await?;
            gdpr::set_record_event(&**client, &operation, event_id).await?;
            operation.record_event_id = Some(event_id);
        }
        // Only pseudonymization and erasure change events (and come here).
        let kind = match kind {
            "erase" => OperationKind::GdprErasure,
            _ => OperationKind::GdprPseudonymization,
        };
        let record_event = operation
            .record_event_id
            .expect("the operation's record event was just written");
        trail::register(&**client, operation.id, organization_id, kind, record_event).await?;
        Ok(operation)
    }

    /// Replaces the subject's identifier with its pseudonym in batches; how many events changed.
    async fn pseudonymize_events(
        &self,
        operation: Uuid,
        organization_id: &str,
        commitment: &str,
        pseudonym: &str,
    ) -> Result<u64, GdprError> {
        let mut total = 0;
        for role in [Role::Principal, Role::Target] {
            let mut after_id = 0;
            loop {
                let batch = trail::within(&self.pool, operation, async |transaction| {
                    gdpr::pseudonymize_batch(
                        transaction,
                        organization_id,
                        commitment,
                        pseudonym,
                        role,
                        after_id,
                        self.settings.batch_size,
                    )
                    .await
                })
                .await?;
                total += batch.changed;
                match batch.last_id {
                    Some(last) => after_id = last,
                    None => break,
                }
            }
        }
        Ok(total)
    }

    /// Ends an operation: its closing audit event, its result, fresh answers
    /// for the organization's event queries, and a signed checkpoint.
    async fn complete(
        &self,
        organization_id: &str,
        operation: &Operation,
        requested_by: &str,
        outcome: String,
        result: Value,
    ) -> Result<(), GdprError> {
        self.record(Recorded {
            organization_id,
            requested_by,
            action: record_action(&operation.kind),
            status: "success",
            outcome,
            target: operation.pseudonym_id.as_deref(),
            details: json!({"operation_id": operation.id, "result": result}),
        })
        .await?;
        let client = self.pool.get().await?;
        gdpr::finish_operation(&**client, operation, "completed", &result).await?;
        checkpoints::create(&**client, &self.keys, Some(organization_id)).await?;
        self.cache.invalidate(organization_id, EVENTS).await;
        Ok(())
    }

    pub async fn pseudonymize(
        &self,
        organization_id: &str,
        principal_id: &str,
        strategy: Strategy,
        requested_by: &str,
    ) -> Result<Pseudonymized, GdprError> {
        let commitment = self.commitment(organization_id, principal_id);
        let _lock = self.lock_subject(organization_id, &commitment).await?;
        let mapping = self
            .mapping(
                organization_id,
                principal_id,
                &commitment,
                strategy,
                requested_by,
            )
            .await?;
        if mapping.strategy != strategy.as_str() {
            return Err(GdprError::StrategyConflict(mapping.strategy));
        }
        let operation = self
            .operation(
                organization_id,
                "pseudonymize",
                &commitment,
                &mapping,
                requested_by,
                json!({"strategy": strategy}),
            )
            .await?;
        let live = self
            .pseudonymize_events(
                operation.id,
                organization_id,
                &commitment,
                &mapping.pseudonym_id,
            )
            .await?;
        let archived = self
            .pseudonymize_archived(
                operation.id,
                organization_id,
                &commitment,
                &mapping.pseudonym_id,
            )
            .await?;
        let records_affected = live + archived;
        self.complete(
            organization_id,
            &operation,
            requested_by,
            format!("{records_affected} events pseudonymized"),
            json!({"records_affected": records_affected}),
        )
        .await?;
        Ok(Pseudonymized {
            request_id: operation.id,
            pseudonym_id: mapping.pseudonym_id,
            strategy,
            records_affected,
        })
    }

    pub async fn erase(
        &self,
        organization_id: &str,
        principal_id: &str,
        preserve_compliance: bool,
        requested_by: &str,
    ) -> Result<Erased, GdprError> {
        let commitment = self.commitment(organization_id, principal_id);
        let _lock = self.lock_subject(organization_id, &commitment).await?;
        // What is kept goes under a pseudonym: the subject's own if it has
        // one, else a keyed hash (not reversible).
        let mapping = self
            .mapping(
                organization_id,
                principal_id,
                &commitment,
                Strategy::Hash,
                requested_by,
            )
            .await?;
        let (actions, classifications) = if preserve_compliance {
            (
                self.settings
                    .preserve_actions
                    .iter()
                    .map(|pattern| like_pattern(pattern))
                    .collect(),
                self.settings.preserve_classifications.clone(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        // A legal hold always wins over erasure.
        let holds: Vec<_> =
            legal_holds::list(&**self.pool.get().await?, organization_id, Some(true))
                .await?
                .into_iter()
                .filter(|hold| {
                    hold.principal_id
                        .as_deref()
                        .is_none_or(|held| held == principal_id)
                })
                .collect();
        let hold_starts: Vec<_> = holds.iter().map(|hold| hold.starts_at).collect();
        let hold_ends: Vec<_> = holds.iter().map(|hold| hold.ends_at).collect();
        let preserved = Preserved {
            actions: &actions,
            classifications: &classifications,
            hold_starts: &hold_starts,
            hold_ends: &hold_ends,
        };
        let operation = self
            .operation(
                organization_id,
                "erase",
                &commitment,
                &mapping,
                requested_by,
                json!({
                    "preserve_compliance": preserve_compliance,
                    "preserved_actions": self.settings.preserve_actions,
                    "preserved_classifications": classifications,
                    "legal_holds": holds.iter().map(|hold| hold.id).collect::<Vec<_>>(),
                }),
            )
            .await?;
        let mut after_id = 0;
        loop {
            let batch = trail::within(&self.pool, operation.id, async |transaction| {
                gdpr::erase_batch(
                    transaction,
                    organization_id,
                    &commitment,
                    &preserved,
                    operation.id,
                    after_id,
                    self.settings.batch_size,
                )
                .await
            })
            .await?;
            match batch.last_id {
                Some(last) => after_id = last,
                None => break,
            }
        }
        let archived = self
            .erase_archived(
                operation.id,
                organization_id,
                &commitment,
                &mapping.pseudonym_id,
                &preserved,
            )
            .await?;
        let client = self.pool.get().await?;
        // Counted from what is stored, so a resumed operation reports its whole work.
        let records_deleted = gdpr::count_erased(&**client, organization_id, operation.id).await?;
        let compliance_records_preserved =
            gdpr::count_preserved(&**client, organization_id, &commitment, &preserved).await?
                + archived.preserved;
        drop(client);
        let changed = self
            .pseudonymize_events(
                operation.id,
                organization_id,
                &commitment,
                &mapping.pseudonym_id,
            )
            .await?
            + archived.pseudonymized;
        let result = json!({
            "records_deleted": records_deleted,
            "compliance_records_preserved": compliance_records_preserved,
            "events_pseudonymized": changed,
        });
        self.complete(
            organization_id,
            &operation,
            requested_by,
            format!("{records_deleted} events erased, {compliance_records_preserved} kept under a pseudonym"),
            result,
        )
        .await?;
        Ok(Erased {
            request_id: operation.id,
            records_deleted,
            compliance_records_preserved,
            references_pseudonymized: changed.saturating_sub(compliance_records_preserved),
            pseudonym_id: mapping.pseudonym_id,
        })
    }

    /// The original identifier behind a pseudonym; the look-up is itself recorded.
    pub async fn reverse(
        &self,
        organization_id: &str,
        pseudonym_id: &str,
        requested_by: &str,
    ) -> Result<Reversed, GdprError> {
        let client = self.pool.get().await?;
        let mapping = gdpr::mapping_of_pseudonym(&**client, organization_id, pseudonym_id)
            .await?
            .ok_or_else(|| GdprError::UnknownPseudonym(pseudonym_id.to_owned()))?;
        let original_id = self
            .pseudonyms
            .open_original(organization_id, &mapping.sealed_original)
            .map_err(|_| GdprError::Undecryptable)?;
        let operation = gdpr::start_operation(
            &**client,
            &NewOperation {
                organization_id,
                kind: "reverse",
                subject_commitment: Some(&self.commitment(organization_id, &original_id)),
                pseudonym_id: Some(pseudonym_id),
                strategy: Some(&mapping.strategy),
                requested_by,
                parameters: &json!({}),
                completed: true,
            },
        )
        .await?;
        let event_id = self
            .record(Recorded {
                organization_id,
                requested_by,
                action: "gdpr.pseudonym.reverse",
                status: "success",
                outcome: "a pseudonym was resolved to its original identifier".to_owned(),
                target: Some(pseudonym_id),
                details: json!({"operation_id": operation.id, "pseudonym_id": pseudonym_id}),
            })
            .await?;
        gdpr::set_record_event(&**client, &operation, event_id).await?;
        Ok(Reversed {
            pseudonym_id: mapping.pseudonym_id,
            original_id,
            strategy: Strategy::parse(&mapping.strategy).unwrap_or(Strategy::Hash),
        })
    }

    /// Records a request the worker does not act on by itself (rectification,
    /// restriction, objection).
    pub async fn record_request(
        &self,
        organization_id: &str,
        kind: &str,
        principal_id: &str,
        description: Option<&str>,
        requested_by: &str,
    ) -> Result<Operation, GdprError> {
        let commitment = self.commitment(organization_id, principal_id);
        let client = self.pool.get().await?;
        let operation = gdpr::start_operation(
            &**client,
            &NewOperation {
                organization_id,
                kind,
                subject_commitment: Some(&commitment),
                pseudonym_id: None,
                strategy: None,
                requested_by,
                parameters: &json!({"description": description}),
                completed: true,
            },
        )
        .await?;
        let event_id = self
            .record(Recorded {
                organization_id,
                requested_by,
                action: &format!("gdpr.request.{kind}"),
                status: "success",
                outcome: super::statement(kind).to_owned(),
                target: None,
                details: json!({"operation_id": operation.id, "subject_commitment": commitment,
                       "description": description}),
            })
            .await?;
        gdpr::set_record_event(&**client, &operation, event_id).await?;
        Ok(operation)
    }

    /// Starts an export streamed to the caller.
    pub async fn export(
        self: &Arc<Self>,
        request: ExportRequest,
    ) -> Result<ExportStream, GdprError> {
        let (operation, commitment) = self.start_export(&request, None).await?;
        let (sender, body) = mpsc::channel(EXPORT_CHANNEL_CHUNKS);
        let gdpr = self.clone();
        let format = request.format;
        let request_id = operation.id;
        tokio::spawn(async move {
            let written = gdpr
                .write_export(&request, &commitment, operation.id, |chunk| {
                    let sender = sender.clone();
                    async move { sender.send(Ok(chunk)).await.is_ok() }
                })
                .await;
            match written {
                // The manifest is stored before the file's last bytes go out:
                // a client that has the whole file finds it.
                Ok(Some((last, manifest))) => match gdpr.finish_export(&operation, &manifest).await
                {
                    Ok(()) => {
                        let _ = sender.send(Ok(last)).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cannot store an export's manifest");
                        let _ = sender.send(Err(error.into())).await;
                    }
                },
                Ok(None) => {
                    tracing::info!(request = %operation.id, "The client left before the export ended")
                }
                Err(error) => {
                    tracing::warn!(%error, request = %operation.id, "Export failed");
                    let _ = sender.send(Err(error)).await;
                }
            }
        });
        Ok(ExportStream {
            request_id,
            format,
            body,
        })
    }

    /// Builds the export and queues it for a destination.
    pub async fn export_to(
        &self,
        request: ExportRequest,
        destination_id: i64,
    ) -> Result<ExportDelivered, GdprError> {
        let organization_id = request.organization_id.clone();
        let destination =
            destinations::get(&**self.pool.get().await?, &organization_id, destination_id)
                .await?
                .filter(|destination| !destination.disabled)
                .ok_or(GdprError::UnknownDestination(destination_id))?;
        let (operation, commitment) = self.start_export(&request, Some(destination_id)).await?;
        let limit = self.settings.max_delivery_bytes;
        let mut content = Vec::new();
        let mut too_large = false;
        let manifest = self
            .write_export(&request, &commitment, operation.id, |chunk| {
                too_large |= content.len() as u64 + chunk.len() as u64 > limit;
                if !too_large {
                    content.extend_from_slice(&chunk);
                }
                std::future::ready(!too_large)
            })
            .await?;
        let Some((last, manifest)) = manifest.filter(|_| !too_large) else {
            let client = self.pool.get().await?;
            gdpr::finish_operation(
                &**client,
                &operation,
                "failed",
                &json!({"error": "too large to deliver"}),
            )
            .await?;
            return Err(GdprError::TooLargeToDeliver(limit));
        };
        content.extend_from_slice(&last);
        let payload = json!({
            "type": "gdpr.export",
            "request_id": operation.id,
            "manifest": manifest,
            "file": {
                "name": format!("gdpr-export-{}.{}", operation.id, request.format.extension()),
                "content_type": request.format.content_type(),
                "content": String::from_utf8_lossy(&content),
            },
        });
        let settings =
            crate::deliveries::destination::DeliverySettings::parse(Some(&destination.settings))
                .unwrap_or_default();
        let client = self.pool.get().await?;
        let delivered = deliveries::enqueue(
            &**client,
            &deliveries::NewDeliveries {
                organization_id: &organization_id,
                destination_ids: &[destination_id],
                payload: &payload,
                priority: 5,
                scheduled_at: None,
                idempotency_key: Some(&format!("gdpr-export:{}", operation.id)),
                correlation_id: Some(&operation.id.to_string()),
                max_retries: &[settings.retry_waits().len() as i32],
            },
        )
        .await?;
        drop(client);
        self.finish_export(&operation, &manifest).await?;
        Ok(ExportDelivered {
            request_id: operation.id,
            manifest,
            delivery_ids: delivered.iter().map(|delivery| delivery.id).collect(),
        })
    }

    async fn start_export(
        &self,
        request: &ExportRequest,
        destination_id: Option<i64>,
    ) -> Result<(Operation, String), GdprError> {
        let organization_id = request.organization_id.as_str();
        let commitment = self.commitment(organization_id, &request.principal_id);
        let client = self.pool.get().await?;
        let parameters = json!({
            "format": request.format, "from": request.from, "to": request.to,
            "destination_id": destination_id,
        });
        let operation = gdpr::start_operation(
            &**client,
            &NewOperation {
                organization_id,
                kind: "export",
                subject_commitment: Some(&commitment),
                pseudonym_id: None,
                strategy: None,
                requested_by: &request.requested_by,
                parameters: &parameters,
                completed: false,
            },
        )
        .await?;
        let event_id = self
            .record(Recorded {
                    organization_id,
                    requested_by: &request.requested_by,
                    action: "gdpr.data.export",
                    status: "success",
                    outcome: "a data subject's events were exported".to_owned(),
                    target: None,
                    details: json!({"operation_id": operation.id, "subject_commitment": commitment, "parameters": parameters}),
                })
            .await?;
        gdpr::set_record_event(&**client, &operation, event_id).await?;
        Ok((operation, commitment))
    }

    /// Streams the subject's events (as principal or as target, under any
    /// pseudonym: their commitment says whose they are) through the writer in
    /// one consistent snapshot, archived ones first (archive by archive,
    /// oldest first), then the live ones; each chunk goes to `send`, which
    /// answers whether to go on. Returns the file's last chunk (not sent yet)
    /// and its manifest; `None` when `send` stopped it.
    async fn write_export<F, Fut>(
        &self,
        request: &ExportRequest,
        commitment: &str,
        request_id: Uuid,
        mut send: F,
    ) -> Result<Option<(Bytes, Manifest)>, GdprError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut writer = ExportWriter::new(request.format, request_id);
        // Events go out in chunks of about EXPORT_CHUNK_BYTES, not one each.
        let mut pending: Vec<u8> = writer.begin(&request.principal_id).to_vec();
        let mut client = self.pool.get().await?;
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(DbError::from)?;
        let organization_id = request.organization_id.as_str();
        let in_range = |time: DateTime<Utc>| {
            request.from.is_none_or(|from| time >= from) && request.to.is_none_or(|to| time <= to)
        };
        for archive in archives::holding_subject(&transaction, organization_id, commitment).await? {
            let outside = request
                .from
                .is_some_and(|from| archive.last_event_at < from)
                || request.to.is_some_and(|to| archive.first_event_at > to);
            if outside {
                continue;
            }
            let mut events = self.archives.read(&transaction, &archive).await?;
            events.retain(|event| event.concerns(commitment) && in_range(event.timestamp));
            events.sort_by_key(|event| (event.timestamp, event.id));
            for event in &events {
                pending.extend_from_slice(&writer.event(&event.stored(), event.timestamp, true));
                if pending.len() >= EXPORT_CHUNK_BYTES
                    && !send(Bytes::from(std::mem::take(&mut pending))).await
                {
                    return Ok(None);
                }
            }
        }
        let statement = transaction
            .prepare(&format!(
                "SELECT {} FROM audit_log WHERE organization_id = $1 \
                   AND (principal_commitment = $2 OR target_resource_commitment = $2) \
                   AND ($3::timestamptz IS NULL OR \"timestamp\" >= $3) \
                   AND ($4::timestamptz IS NULL OR \"timestamp\" <= $4) \
                 ORDER BY \"timestamp\", id",
                events::EVENT_COLUMNS
            ))
            .await
            .map_err(DbError::from)?;
        let parameters: [&(dyn ToSql + Sync); 4] =
            [&organization_id, &commitment, &request.from, &request.to];
        let portal = transaction
            .bind(&statement, &parameters)
            .await
            .map_err(DbError::from)?;
        loop {
            let rows = transaction
                .query_portal(&portal, EXPORT_FETCH_ROWS)
                .await
                .map_err(DbError::from)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let timestamp: DateTime<Utc> = row.get("timestamp");
                pending.extend_from_slice(&writer.event(&events::stored(row), timestamp, false));
                if pending.len() >= EXPORT_CHUNK_BYTES
                    && !send(Bytes::from(std::mem::take(&mut pending))).await
                {
                    return Ok(None);
                }
            }
        }
        transaction.commit().await.map_err(DbError::from)?;
        let (end, manifest) = writer.finish();
        pending.extend_from_slice(&end);
        Ok(Some((Bytes::from(pending), manifest)))
    }

    async fn finish_export(
        &self,
        operation: &Operation,
        manifest: &Manifest,
    ) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        gdpr::finish_operation(
            &**client,
            operation,
            "completed",
            &json!({"manifest": manifest}),
        )
        .await?;
        Ok(())
    }
}

/// A `*` glob as a SQL `LIKE` pattern (`%` and `_` taken literally).
fn like_pattern(glob: &str) -> String {
    let mut pattern = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => pattern.push('%'),
            '%' | '_' | '\\' => {
                pattern.push('\\');
                pattern.push(c);
            }
            c => pattern.push(c),
        }
    }
    pattern
}
