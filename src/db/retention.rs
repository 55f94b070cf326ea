//! Queries on `audit_retention_policy` (an organization's own policies; the
//! built-ins live in code, see `events::retention`).

use tokio_postgres::GenericClient;

use super::DbError;
use crate::events::retention::{self, RetentionPolicy};

const COLUMNS: &str = "id, policy_name, retention_days, archive_after_days, delete_after_days, \
    data_classification, description, is_active, created_at, updated_at, created_by";

fn policy(row: &tokio_postgres::Row) -> RetentionPolicy {
    RetentionPolicy {
        id: Some(row.get("id")),
        policy_name: row.get("policy_name"),
        retention_days: row.get("retention_days"),
        archive_after_days: row.get("archive_after_days"),
        delete_after_days: row.get("delete_after_days"),
        data_classification: row.get("data_classification"),
        description: row.get("description"),
        is_active: row.get("is_active"),
        built_in: false,
        created_at: Some(row.get("created_at")),
        updated_at: Some(row.get("updated_at")),
        created_by: row.get("created_by"),
    }
}

/// The organization's effective policies, sorted by name: its own rows plus
/// each built-in it has not overridden. What archival asks (then
/// [`retention::policy_for`]) to decide an event's fate.
pub async fn effective_policies(
    client: &impl GenericClient,
    organization_id: &str,
) -> Result<Vec<RetentionPolicy>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM audit_retention_policy WHERE organization_id = $1 ORDER BY policy_name"
            ),
            &[&organization_id],
        )
        .await?;
    Ok(retention::effective(rows.iter().map(policy).collect()))
}

/// Saves a new policy (`created_by` from `new`); `None` when the organization
/// already has one of that name.
pub async fn insert(
    client: &impl GenericClient,
    organization_id: &str,
    new: &RetentionPolicy,
) -> Result<Option<RetentionPolicy>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "INSERT INTO audit_retention_policy (organization_id, policy_name, retention_days, \
                   archive_after_days, delete_after_days, data_classification, description, is_active, created_by) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (organization_id, policy_name) DO NOTHING RETURNING {COLUMNS}"
            ),
            &[
                &organization_id,
                &new.policy_name,
                &new.retention_days,
                &new.archive_after_days,
                &new.delete_after_days,
                &new.data_classification,
                &new.description,
                &new.is_active,
                &new.created_by,
            ],
        )
        .await?;
    Ok(row.as_ref().map(policy))
}

/// One of the organization's policies, locked until the transaction ends so a
/// concurrent change cannot slip between reading it and [`update`].
pub async fn get_for_update(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<Option<RetentionPolicy>, DbError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM audit_retention_policy WHERE organization_id = $1 AND id = $2 FOR UPDATE"
            ),
            &[&organization_id, &id],
        )
        .await?;
    Ok(row.as_ref().map(policy))
}

/// Replaces the editable fields of a policy (its name stays: events refer to it).
pub async fn update(
    client: &impl GenericClient,
    organization_id: &str,
    changed: &RetentionPolicy,
) -> Result<RetentionPolicy, DbError> {
    let row = client
        .query_one(
            &format!(
                "UPDATE audit_retention_policy SET retention_days = $3, archive_after_days = $4, \
                   delete_after_days = $5, data_classification = $6, description = $7, is_active = $8, \
                   updated_at = now() \
                 WHERE organization_id = $1 AND id = $2 RETURNING {COLUMNS}"
            ),
            &[
                &organization_id,
                &changed.id,
                &changed.retention_days,
                &changed.archive_after_days,
                &changed.delete_after_days,
                &changed.data_classification,
                &changed.description,
                &changed.is_active,
            ],
        )
        .await?;
    Ok(policy(&row))
}

/// Deletes a policy; returns whether it existed. A built-in of the same name
/// applies again from then on.
pub async fn delete(
    client: &impl GenericClient,
    organization_id: &str,
    id: i64,
) -> Result<bool, DbError> {
    let deleted = client
        .execute(
            "DELETE FROM audit_retention_policy WHERE organization_id = $1 AND id = $2",
            &[&organization_id, &id],
        )
        .await?;
    Ok(deleted > 0)
}

/// The longest time any organization's active policy keeps data, in days
/// (`None` when no organization has a policy of its own).
pub async fn longest_retention_days(client: &impl GenericClient) -> Result<Option<i64>, DbError> {
    Ok(client
        .query_one(
            "SELECT max(greatest(retention_days, coalesce(delete_after_days, 0)))::int8 \
             FROM audit_retention_policy WHERE is_active",
            &[],
        )
        .await?
        .get(0))
}
