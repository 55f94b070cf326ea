//! Transactions scoped to one organization. Inside, PostgreSQL's row-level
//! security hides every other organization's rows (migration V2), so a query
//! that forgets its `organization_id` filter still cannot leak. Queries keep
//! their explicit filter too: it is what the indexes serve.

use tokio_postgres::{Client, Transaction};

use super::{DbError, PgPool};

/// Begins a transaction that sees only `organization_id`'s rows.
pub async fn begin<'a>(
    client: &'a mut Client,
    organization_id: &str,
) -> Result<Transaction<'a>, DbError> {
    let transaction = client.transaction().await?;
    scope(&transaction, organization_id).await?;
    Ok(transaction)
}

/// Makes a transaction already begun (with its own isolation level, say)
/// see only `organization_id`'s rows, until it ends.
pub async fn scope(transaction: &Transaction<'_>, organization_id: &str) -> Result<(), DbError> {
    transaction
        .batch_execute("SET LOCAL ROLE audit_worker_tenant")
        .await?;
    transaction
        .execute(
            "SELECT set_config('app.organization_id', $1, true)",
            &[&organization_id],
        )
        .await?;
    Ok(())
}

/// Runs `work` in a transaction scoped to `organization_id` on a pooled
/// connection, and commits it when `work` succeeds (an error rolls it back).
pub async fn scoped<T, E>(
    pool: &PgPool,
    organization_id: &str,
    work: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbError>,
{
    let mut client = pool.get().await?;
    let transaction = begin(&mut client, organization_id).await?;
    let value = work(&transaction).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(value)
}
