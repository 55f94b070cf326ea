//! Events the worker writes itself into an organization's chain: the record of
//! each of its operations on the trail (archival, retention) and of every
//! administrative change (`admin.<object>.<verb>`), so that neither happens
//! without a trace in the organization's own trail.

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;
use serde_json::{json, Value};
use tokio_postgres::Transaction;

use super::{prepare, NewEvent, Receipt, Rules};
use crate::db::{events, DbError, PgPool};
use crate::integrity::keys::IntegrityKeys;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The worker built an event validation refuses (say, details too large).
    #[error("the record event is not a valid event: {0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One event the worker records.
pub struct Record<'a> {
    pub organization_id: &'a str,
    /// Who acted: `key:<id>`, `cli:<user>`, or `audit-worker` for the worker's own rounds.
    pub principal_id: &'a str,
    pub action: &'a str,
    pub status: &'a str,
    pub outcome: String,
    pub target: Option<(&'a str, &'a str)>,
    pub details: Value,
}

impl Record<'_> {
    fn prepared(&self, keys: &IntegrityKeys) -> Result<NewEvent, RecordError> {
        let (target_type, target_id) = self.target.unzip();
        let input = json!({
            "principal_id": self.principal_id,
            "action": self.action,
            "status": self.status,
            "outcome_description": self.outcome,
            "data_classification": "INTERNAL",
            "target_resource_type": target_type,
            "target_resource_id": target_id,
            "details": self.details,
        });
        let rules = Rules {
            organization_id: self.organization_id,
            now: Utc::now(),
            max_clock_skew: std::time::Duration::ZERO,
            commitment_key: keys.commitment_key(),
            presets: &HashMap::new(),
        };
        prepare(0, input, &rules).map_err(|problems| {
            RecordError::Invalid(
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }
}

/// Appends the event in a transaction of its own; its receipt.
pub async fn append(
    pool: &PgPool,
    keys: &IntegrityKeys,
    record: &Record<'_>,
) -> Result<Receipt, RecordError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await.map_err(DbError::from)?;
    let receipt = append_in(&transaction, keys, record).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(receipt)
}

/// Appends the event inside the caller's transaction, which makes it durable
/// with the change it records or not at all. Call it last: it leaves the
/// transaction under the connection's own role (a tenant scope's role cannot
/// COPY into a table under row-level security).
pub async fn append_in(
    transaction: &Transaction<'_>,
    keys: &IntegrityKeys,
    record: &Record<'_>,
) -> Result<Receipt, RecordError> {
    let event = record.prepared(keys)?;
    transaction
        .batch_execute("SET LOCAL ROLE NONE")
        .await
        .map_err(DbError::from)?;
    transaction
        .execute(
            "SELECT audit_log_ensure_partition($1)",
            &[&events::month_of(event.timestamp)],
        )
        .await
        .map_err(DbError::from)?;
    let written = events::write_in(
        transaction,
        &[events::Submission {
            events: vec![event],
            received: Instant::now(),
        }],
    )
    .await?;
    Ok(written
        .receipts
        .into_iter()
        .flatten()
        .next()
        .expect("one event gives one receipt"))
}

/// An administrative change: recorded as the event `admin.<object>.<verb>`
/// on the target `<object>`/`target_id`, in the transaction of the change.
pub struct AdminChange<'a> {
    /// `api_key`, `role`, `destination`, `preset`, `retention_policy`, …
    pub object: &'a str,
    /// `create`, `update`, `delete`, `revoke`, `release`, `replay`, …
    pub verb: &'a str,
    pub target_id: String,
    /// The changed fields, every secret already masked.
    pub details: Value,
}

/// Records `change` by `principal` (`key:<id>` or `cli:<user>`) inside the
/// transaction that makes it. Details too large for an event are recorded by
/// their field names.
pub async fn admin_in(
    transaction: &Transaction<'_>,
    keys: &IntegrityKeys,
    organization_id: &str,
    principal: &str,
    change: AdminChange<'_>,
) -> Result<Receipt, RecordError> {
    let action = format!("admin.{}.{}", change.object, change.verb);
    let details = if change.details.to_string().len() > super::MAX_DETAILS_BYTES / 2 {
        let fields: Vec<&String> = change
            .details
            .as_object()
            .map(|object| object.keys().collect())
            .unwrap_or_default();
        json!({"fields": fields, "too_large_to_record": true})
    } else {
        change.details
    };
    append_in(
        transaction,
        keys,
        &Record {
            organization_id,
            principal_id: principal,
            action: &action,
            status: "success",
            outcome: format!("{} {}: {}", change.object, change.target_id, change.verb),
            target: Some((change.object, &change.target_id)),
            details,
        },
    )
    .await
}
