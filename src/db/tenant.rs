//! Transactions scoped to one organization. Inside, PostgreSQL's row-level
//! security hides every other organization's rows (migration V2), so a query
//! that forgets its `organization_id` filter still cannot leak. Queries keep
//! their explicit filter too: it is what the indexes serve.

use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use super::connection::{PgConnection, Statements};
use super::{DbError, PgPool};

/// The role under which row-level security applies (migration V2).
pub(crate) const ROLE: &str = "SET LOCAL ROLE audit_worker_tenant";
/// The organization the policies let through, until the transaction ends.
pub(crate) const SCOPE: &str = "SELECT set_config('app.organization_id', $1, true)";

/// Begins a transaction that sees only `organization_id`'s rows.
pub async fn begin<'a>(
    connection: &'a mut PgConnection,
    organization_id: &str,
) -> Result<Transaction<'a>, DbError> {
    let (transaction, prepared) = connection.begin().await?;
    scope_with(
        &transaction,
        Statements::Prepared(&prepared),
        organization_id,
    )
    .await?;
    Ok(transaction)
}

/// Makes a transaction already begun (with its own isolation level, say)
/// see only `organization_id`'s rows, until it ends.
pub async fn scope(transaction: &Transaction<'_>, organization_id: &str) -> Result<(), DbError> {
    scope_with(transaction, Statements::Unnamed, organization_id).await
}

/// The role and the organization, in one round trip.
async fn scope_with(
    transaction: &Transaction<'_>,
    statements: Statements<'_>,
    organization_id: &str,
) -> Result<(), DbError> {
    let organization = [(&organization_id as _, Type::TEXT)];
    futures_util::try_join!(
        statements.execute(transaction, ROLE, &[]),
        statements.execute(transaction, SCOPE, &organization)
    )?;
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
