//! Witnesses: the destinations each signed checkpoint of their organization
//! is delivered to, so that a copy exists outside the database (a truncated
//! chain is only provable against one).

use serde_json::{json, Value};
use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;

use super::deliveries::{self, NewDeliveries};
use super::DbError;
use crate::deliveries::destination::DeliverySettings;

/// Checkpoints go ahead of ordinary deliveries (priority 0): they are small,
/// and a witness behind on them proves less.
const PRIORITY: i16 = 5;

/// Queues the stored checkpoint `seq` of the organization to each of its
/// enabled witnesses; returns how many deliveries it queued (or found queued).
///
/// What is delivered is the checkpoint as stored, `{"payload", "signature"}`
/// (the form `verify --checkpoint` reads), read back from
/// `integrity_checkpoints` rather than taken from the caller: when two
/// instances signed the same `seq`, only the stored one is the checkpoint.
/// Idempotent: each delivery's key is `checkpoint:<seq>`, so queueing the
/// same checkpoint again queues nothing to a witness that has it.
pub async fn enqueue_checkpoint(
    client: &impl GenericClient,
    organization_id: &str,
    seq: i64,
) -> Result<usize, DbError> {
    let rows = client
        .query(
            "SELECT d.id, d.settings, c.payload, c.signature \
             FROM integrity_checkpoints c JOIN delivery_destinations d \
               ON d.organization_id = c.organization_id \
             WHERE c.organization_id = $1 AND c.seq = $2 \
               AND d.witness AND NOT d.disabled AND d.deleted_at IS NULL \
             ORDER BY d.id",
            &[&organization_id, &seq],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Ok(0);
    };
    let payload = json!({
        "payload": first.try_get::<_, String>("payload")?,
        "signature": first.try_get::<_, String>("signature")?,
    });
    let mut destination_ids = Vec::with_capacity(rows.len());
    let mut max_retries = Vec::with_capacity(rows.len());
    for row in &rows {
        destination_ids.push(row.try_get::<_, i64>("id")?);
        let settings = row.try_get::<_, Json<Value>>("settings")?.0;
        let settings = DeliverySettings::parse(Some(&settings)).unwrap_or_default();
        max_retries.push(settings.retry_waits().len() as i32);
    }
    let idempotency_key = format!("checkpoint:{seq}");
    let queued = deliveries::enqueue_named(
        client,
        &NewDeliveries {
            organization_id,
            destination_ids: &destination_ids,
            payload: &payload,
            priority: PRIORITY,
            scheduled_at: None,
            idempotency_key: Some(&idempotency_key),
            correlation_id: Some(&idempotency_key),
            max_retries: &max_retries,
        },
        Some(&object_key(organization_id, seq)),
    )
    .await?;
    Ok(queued.len())
}

/// Where a witness that stores objects keeps checkpoint `seq`: one object per
/// checkpoint, found by organization and sequence number alone.
pub fn object_key(organization_id: &str, seq: i64) -> String {
    format!("checkpoints/{organization_id}/{seq}.json")
}
