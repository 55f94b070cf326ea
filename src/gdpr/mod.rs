//! GDPR: export, pseudonymization and erasure of a data subject's events, as
//! recorded operations that keep the audit trail verifiable
//! (docs/integrity.md, section 9), and the other requests of data subjects,
//! which are recorded.

pub mod archived;
pub mod export;
pub mod operations;
pub mod pseudonym;

use crate::archive_store::ArchiveError;
use crate::db::DbError;
use crate::messages::ingest::IngestError;
use crate::supervisor::ActorUnavailable;

/// The kinds of request that are recorded and answered with a statement.
pub const RECORDED_REQUESTS: [&str; 3] = ["rectification", "restriction", "objection"];

/// What the worker does with a recorded request, as its answer says.
pub fn statement(kind: &str) -> &'static str {
    match kind {
        "rectification" => {
            "Recorded. Audit events are evidence of what happened and are never rewritten: correct the \
             data in the system that holds it; the correction will be recorded by the events that follow. \
             To stop the subject being identifiable in past events, request pseudonymization."
        }
        "restriction" => {
            "Recorded. The worker processes the subject's events only to keep, verify, export and \
             deliver the audit trail (a legal obligation); it does not use them otherwise. Access stays \
             limited to roles holding audit.events read. Place a legal hold if they must be kept while \
             the request is examined."
        }
        _ => {
            "Recorded. The audit trail is kept to meet legal obligations, which an objection does not \
             override; the request is part of the trail for the controller to decide on. Erasure and \
             pseudonymization remain available."
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GdprError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("another GDPR operation on this subject is running; retry when it has finished")]
    Busy,
    #[error("the subject was pseudonymized with strategy `{0}`; a subject has one pseudonym")]
    StrategyConflict(String),
    #[error(
        "principal_id is too long for the encryption strategy (at most {} bytes)",
        pseudonym::MAX_ENCRYPTABLE_BYTES
    )]
    TooLongToEncrypt,
    #[error("no pseudonym `{0}` in this organization")]
    UnknownPseudonym(String),
    #[error("the stored mapping cannot be decrypted with the configured gdpr.encryption_key")]
    Undecryptable,
    #[error("the audit event recording the operation is invalid: {0}")]
    Record(String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Unavailable(#[from] ActorUnavailable),
    #[error("the export exceeds gdpr.max_delivery_bytes ({0} bytes) and cannot be delivered; download it instead")]
    TooLargeToDeliver(u64),
    #[error("destination {0} is not one of the organization's active destinations")]
    UnknownDestination(i64),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}
