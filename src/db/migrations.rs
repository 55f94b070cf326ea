//! Schema migrations: the SQL files in `migrations/`, embedded at build time and
//! applied in order by refinery, each once, recorded with its checksum in
//! `refinery_schema_history`. A file edited after it was applied is refused.

use std::time::Duration;

use refinery::error::Kind;
use tokio_postgres::error::SqlState;

use super::locks::{self, Round};
use super::{DbError, PgPool};
use crate::config::DatabaseConfig;

mod embedded {
    refinery::embed_migrations!("migrations");
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {0} was edited after it was applied: its checksum differs from the \
         one recorded in refinery_schema_history. Restore the original file and put the \
         change in a new migration"
    )]
    Edited(String),
    #[error("migration failed: {0}")]
    Failed(#[source] refinery::Error),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// Applies every pending migration; returns the names of those applied now.
#[tracing::instrument(skip_all)]
pub async fn run(config: &DatabaseConfig) -> Result<Vec<String>, MigrationError> {
    let mut client = super::connect(config, &config.url)
        .await
        .map_err(DbError::from)?;
    locks::lock(&client, Round::Migrations).await?;
    if runtime_role_with_nothing_to_do(&client).await? {
        let _ = locks::unlock(&client, Round::Migrations).await;
        tracing::info!(
            "Migrations are current; this role runs no DDL, so they were not re-checked"
        );
        return Ok(Vec::new());
    }
    let outcome = embedded::migrations::runner().run_async(&mut client).await;
    // The lock is released with the session too; unlocking here just frees it sooner.
    let _ = locks::unlock(&client, Round::Migrations).await;
    let report = outcome.map_err(|error| match error.kind() {
        Kind::DivergentVersion(applied, _) => MigrationError::Edited(applied.to_string()),
        _ => MigrationError::Failed(error),
    })?;
    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(ToString::to_string)
        .collect();
    for name in &applied {
        tracing::info!(migration = %name, "Applied migration");
    }
    Ok(applied)
}

/// The newest migration this build knows.
/// Whether the database is migrated and the connecting role may not run DDL
/// (a least-privilege runtime role, see migration V17): refinery's runner
/// would try to create its history table, so it is not started.
async fn runtime_role_with_nothing_to_do(client: &tokio_postgres::Client) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT NOT has_schema_privilege('public', 'CREATE') \
               AND to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let applied: Option<i32> = client
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])
        .await?
        .get(0);
    Ok(applied.map(i64::from).unwrap_or(0) >= latest_version())
}

pub fn latest_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|migration| i64::from(migration.version()))
        .max()
        .unwrap_or(0)
}

/// Whether the database has every migration of this build (for `/readyz`).
pub async fn is_current(pool: &PgPool, timeout: Duration) -> Result<bool, DbError> {
    let check = async {
        let client = pool.get().await?;
        let row = client
            .query_one(
                "SELECT max(version)::bigint FROM refinery_schema_history",
                &[],
            )
            .await;
        match row {
            Ok(row) => Ok(row.get::<_, Option<i64>>(0).unwrap_or(0) >= latest_version()),
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(false),
            Err(error) => Err(DbError::from(error)),
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| DbError::Timeout(timeout))?
}
