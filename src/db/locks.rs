//! PostgreSQL advisory locks: how one worker instance at a time runs a round
//! that every instance schedules. Every key is declared here, side by side,
//! so two rounds can never share one by accident.

use tokio_postgres::GenericClient;

use super::DbError;

/// A round that one instance at a time runs, named by its advisory lock key
/// (eight ASCII bytes, readable in `pg_locks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Applying migrations ("audit_mg"); waited for, never skipped.
    Migrations,
    /// Signing checkpoints ("audit_cp").
    Checkpoints,
    /// Destination health: auto-disabling and gauges ("audit_hl").
    DestinationHealth,
    /// Partitions, archival, retention deletion ("audit_pm").
    PartitionMaintenance,
    /// ANALYZE and VACUUM ("audit_db").
    DatabaseMaintenance,
    /// Deleting old closed alerts ("alerts"); a transaction lock.
    AlertRetention,
}

impl Round {
    pub const fn key(self) -> i64 {
        match self {
            Round::Migrations => 0x6175_6469_745f_6d67,
            Round::Checkpoints => 0x6175_6469_745f_6370,
            Round::DestinationHealth => 0x6175_6469_745f_686c,
            Round::PartitionMaintenance => 0x6175_6469_745f_706d,
            Round::DatabaseMaintenance => 0x6175_6469_745f_6462,
            Round::AlertRetention => 0x616c_6572_7473,
        }
    }
}

/// Takes the session lock of `round` unless another session holds it. It is
/// released by [`unlock`] or when the session closes.
pub async fn try_lock(client: &impl GenericClient, round: Round) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&round.key()])
        .await?;
    Ok(row.get(0))
}

/// Waits for the session lock of `round`.
pub async fn lock(client: &impl GenericClient, round: Round) -> Result<(), DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&round.key()])
        .await?;
    Ok(())
}

/// Releases the session lock of `round` taken by [`try_lock`] or [`lock`].
pub async fn unlock(client: &impl GenericClient, round: Round) -> Result<(), DbError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&round.key()])
        .await?;
    Ok(())
}

/// Takes the lock of `round` until the transaction ends, unless another
/// transaction holds it.
pub async fn try_lock_for_transaction(
    client: &impl GenericClient,
    round: Round,
) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&round.key()])
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_has_its_own_key() {
        let rounds = [
            Round::Migrations,
            Round::Checkpoints,
            Round::DestinationHealth,
            Round::PartitionMaintenance,
            Round::DatabaseMaintenance,
            Round::AlertRetention,
        ];
        let keys: std::collections::HashSet<i64> = rounds.iter().map(|r| r.key()).collect();
        assert_eq!(keys.len(), rounds.len());
    }
}
