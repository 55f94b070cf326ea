//! Transactions scoped to one organization. Inside, PostgreSQL's row-level
//! security hides every other organization's rows (migration V2), so a query
//! that forgets its `organization_id` filter still cannot leak. Queries keep
//! their explicit filter too: it is what the indexes serve.

use tokio_postgres::{Client, Transaction};

use super::DbError;

/// Begins a transaction that sees only `organization_id`'s rows.
pub async fn begin<'a>(
    client: &'a mut Client,
    organization_id: &str,
) -> Result<Transaction<'a>, DbError> {
    let transaction = client.transaction().await?;
    transaction
        .batch_execute("SET LOCAL ROLE audit_worker_tenant")
        .await?;
    transaction
        .execute(
            "SELECT set_config('app.organization_id', $1, true)",
            &[&organization_id],
        )
        .await?;
    Ok(transaction)
}
