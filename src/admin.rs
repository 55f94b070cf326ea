//! Operator commands that the CLI runs against the database directly (no
//! worker needs to be running). Each makes sure the schema is current first.

use chrono::{DateTime, Utc};

use crate::archive_store::ArchiveError;
use crate::archive_store::ArchiveStore;
use crate::auth::{self, permissions, GracePeriod, IssueError, IssuedKey, KeyRequest, RotateError};
use crate::config::Config;
use crate::db::api_keys::{self, ApiKeyInfo};
use crate::db::archives::Archive;
use crate::db::config_changes::{self, ConfigChange};
use crate::db::migrations::{self, MigrationError};
use crate::db::partitions::Partition;
use crate::db::performance::{self, PerformanceReport};
use crate::db::{self, roles, DbError};
use crate::events::recorded::{self, AdminChange, RecordError};
use crate::integrity::checkpoint::SignedCheckpoint;
use crate::integrity::keys::IntegrityKeys;
use crate::integrity::verify::{self, Report, Scope, VerifyError};
use crate::maintenance::archive::{self, ArchiveReport};
use crate::maintenance::database::{self as database_maintenance, MaintenanceError};
use crate::maintenance::longest_retention_days;
use crate::maintenance::partitions::{self as maintain, Expired};
use crate::secrets::rotation::{self, EncryptionRotation, RotationError, SigningRotation};
use crate::secrets::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error(transparent)]
    Rotate(#[from] RotateError),
    #[error("no API key with id `{0}`")]
    UnknownKey(String),
    #[error(transparent)]
    Keys(#[from] SecretError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

/// Who the stored records name as the author of CLI changes.
const CLI_ACTOR: &str = "cli";

/// The principal of the `admin.*` events recording CLI changes: `cli:<user>`.
pub fn cli_principal() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{CLI_ACTOR}:{user}")
}

async fn connect(config: &Config) -> Result<tokio_postgres::Client, AdminError> {
    db::ensure_database(&config.database).await?;
    migrations::run(&config.database).await?;
    Ok(db::connect(&config.database, &config.database.url)
        .await
        .map_err(DbError::from)?)
}

/// `keys rotate --kind signing` (see [`rotation`]).
pub async fn rotate_signing_key(
    config: &Config,
    out: Option<&std::path::Path>,
) -> Result<SigningRotation, AdminError> {
    let mut client = connect(config).await?;
    Ok(rotation::rotate_signing(&mut client, config, out).await?)
}

/// `keys rotate --kind encryption` (see [`rotation`]).
pub async fn rotate_encryption_keys(config: &Config) -> Result<EncryptionRotation, AdminError> {
    let mut client = connect(config).await?;
    Ok(rotation::rotate_encryption(&mut client, config).await?)
}

/// The latest `limit` recorded configuration changes, newest first.
pub async fn config_history(config: &Config, limit: i64) -> Result<Vec<ConfigChange>, AdminError> {
    let client = connect(config).await?;
    Ok(config_changes::latest(&client, limit).await?)
}

/// Issues a key for `role` in `organization_id` that never expires; returns the key itself.
pub async fn create_api_key(
    config: &Config,
    organization_id: &str,
    role: &str,
    name: Option<&str>,
) -> Result<String, AdminError> {
    let request = KeyRequest {
        organization_id,
        role,
        name,
        expires_at: None,
    };
    Ok(issue_api_key(config, &request).await?.key)
}

/// Issues a key as `request` says.
pub async fn issue_api_key(
    config: &Config,
    request: &KeyRequest<'_>,
) -> Result<IssuedKey, AdminError> {
    let organization_id = request.organization_id;
    auth::validate_organization_id(organization_id)?;
    let mut client = connect(config).await?;
    let keys = IntegrityKeys::load(&config.integrity, &db::pool(&config.database)).await?;
    let transaction = client.transaction().await.map_err(DbError::from)?;
    let catalog = permissions::role_catalog(roles::list(&transaction, organization_id).await?);
    let issued = auth::issue_key(&transaction, &catalog, request, CLI_ACTOR).await?;
    let change = AdminChange {
        object: "api_key",
        verb: "create",
        target_id: issued.info.id.clone(),
        details: serde_json::json!({
            "role": request.role,
            "name": request.name,
            "expires_at": request.expires_at,
        }),
    };
    recorded::admin_in(
        &transaction,
        &keys,
        organization_id,
        &cli_principal(),
        change,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(issued)
}

pub async fn list_api_keys(
    config: &Config,
    organization_id: Option<&str>,
) -> Result<Vec<ApiKeyInfo>, AdminError> {
    let client = connect(config).await?;
    Ok(api_keys::list(&client, organization_id).await?)
}

pub async fn revoke_api_key(config: &Config, id: &str) -> Result<ApiKeyInfo, AdminError> {
    let mut client = connect(config).await?;
    let keys = IntegrityKeys::load(&config.integrity, &db::pool(&config.database)).await?;
    let transaction = client.transaction().await.map_err(DbError::from)?;
    let organization_id = key_organization(&transaction, None, id).await?;
    let revoked = api_keys::revoke(&transaction, &organization_id, id, CLI_ACTOR)
        .await?
        .ok_or_else(|| AdminError::UnknownKey(id.to_owned()))?;
    let change = AdminChange {
        object: "api_key",
        verb: "revoke",
        target_id: id.to_owned(),
        details: serde_json::json!({}),
    };
    recorded::admin_in(
        &transaction,
        &keys,
        &organization_id,
        &cli_principal(),
        change,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(revoked)
}

/// The organization of the key `id`: `given`, else the key's own.
async fn key_organization(
    client: &impl tokio_postgres::GenericClient,
    given: Option<&str>,
    id: &str,
) -> Result<String, AdminError> {
    match given {
        Some(organization_id) => Ok(organization_id.to_owned()),
        None => api_keys::credentials(client, id)
            .await?
            .map(|key| key.organization_id)
            .ok_or_else(|| AdminError::UnknownKey(id.to_owned())),
    }
}

/// Gives the key `id` a new secret (the replaced one works for `grace`);
/// `organization_id`, when given, must be the key's.
pub async fn rotate_api_key(
    config: &Config,
    organization_id: Option<&str>,
    id: &str,
    grace: GracePeriod,
) -> Result<IssuedKey, AdminError> {
    let mut client = connect(config).await?;
    let keys = IntegrityKeys::load(&config.integrity, &db::pool(&config.database)).await?;
    let transaction = client.transaction().await.map_err(DbError::from)?;
    let organization_id = key_organization(&transaction, organization_id, id).await?;
    let key = api_keys::lock(&transaction, &organization_id, id)
        .await?
        .ok_or_else(|| AdminError::UnknownKey(id.to_owned()))?;
    let rotated = auth::rotate_key(&transaction, &key, grace).await?;
    let change = AdminChange {
        object: "api_key",
        verb: "rotate",
        target_id: id.to_owned(),
        details: rotation_details(&rotated, grace),
    };
    recorded::admin_in(
        &transaction,
        &keys,
        &key.organization_id,
        &cli_principal(),
        change,
    )
    .await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(rotated)
}

/// What the `admin.api_key.rotate` event says: when the replaced secret
/// ends, never a secret or its hash.
pub fn rotation_details(rotated: &IssuedKey, grace: GracePeriod) -> serde_json::Value {
    serde_json::json!({
        "grace_period_seconds": grace.duration().as_secs(),
        "previous_secret_expires_at": rotated.info.previous_secret_expires_at,
    })
}

/// Verifies an organization's events and chain (optionally against a
/// checkpoint kept outside) and records the run, as `POST /v1/integrity/verify` does.
pub async fn verify(
    config: &Config,
    organization_id: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    checkpoint: Option<&SignedCheckpoint>,
) -> Result<Report, AdminError> {
    connect(config).await?;
    let pool = db::pool(&config.database);
    let keys = IntegrityKeys::load(&config.integrity, &pool).await?;
    let scope = Scope {
        organization_id,
        from,
        to,
        checkpoint,
        progress: None,
    };
    let store = archive_store(config).await;
    let report = verify::verify(&pool, &keys, &store, &scope).await?;
    let client = pool.get().await?;
    verify::record(&**client, organization_id, &report, &scope, CLI_ACTOR).await?;
    Ok(report)
}

/// The configured archive store.
async fn archive_store(config: &Config) -> ArchiveStore {
    ArchiveStore::open(&config.archive, config.partitions.archive_compression_level).await
}

/// The partitions of `audit_log`, oldest first.
pub async fn list_partitions(config: &Config) -> Result<Vec<Partition>, AdminError> {
    let client = connect(config).await?;
    Ok(db::partitions::list(&client).await?)
}

/// Creates the partitions from this month to `partitions.months_ahead` ahead;
/// the names of those it created.
pub async fn ensure_partitions(config: &Config) -> Result<Vec<String>, AdminError> {
    connect(config).await?;
    let pool = db::pool(&config.database);
    Ok(maintain::ensure_ahead(&pool, Utc::now(), config.partitions.months_ahead).await?)
}

/// Drops the empty partitions past every retention period (lists them only in
/// a dry run).
pub async fn drop_expired_partitions(
    config: &Config,
    dry_run: bool,
) -> Result<Vec<Expired>, AdminError> {
    connect(config).await?;
    let pool = db::pool(&config.database);
    let keep_days = longest_retention_days(&pool).await?;
    Ok(maintain::drop_expired(&pool, Utc::now(), keep_days, dry_run).await?)
}

/// Archives every organization's due events now (counts them only in a dry run).
pub async fn run_archival(config: &Config, dry_run: bool) -> Result<ArchiveReport, AdminError> {
    connect(config).await?;
    let pool = db::pool(&config.database);
    let keys = IntegrityKeys::load(&config.integrity, &pool).await?;
    let store = archive_store(config).await;
    Ok(archive::run(
        &pool,
        &store,
        &keys,
        &config.partitions,
        Utc::now(),
        dry_run,
    )
    .await?)
}

pub async fn list_archives(config: &Config) -> Result<Vec<Archive>, AdminError> {
    let client = connect(config).await?;
    Ok(db::archives::list_all(&client).await?)
}

/// Puts an archive's events back into the live table; how many.
pub async fn restore_archive(config: &Config, id: uuid::Uuid) -> Result<u64, AdminError> {
    connect(config).await?;
    let pool = db::pool(&config.database);
    let keys = IntegrityKeys::load(&config.integrity, &pool).await?;
    let store = archive_store(config).await;
    Ok(archive::restore(&pool, &store, &keys, id, &cli_principal()).await?)
}

/// The database performance report, as `GET /v1/admin/performance` gives it
/// (the pool figures are this command's own).
pub async fn performance_report(config: &Config) -> Result<PerformanceReport, AdminError> {
    connect(config).await?;
    let pool = db::pool(&config.database);
    Ok(performance::report(&pool, config).await?)
}

/// Runs database maintenance now; `None` when another instance is running it.
pub async fn maintain_database(
    config: &Config,
) -> Result<database_maintenance::Outcome, AdminError> {
    connect(config).await?;
    Ok(database_maintenance::run(config, database_maintenance::Trigger::Operator).await?)
}
