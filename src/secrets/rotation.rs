//! Key rotation (`audit-worker keys rotate`), each a recorded operation.
//!
//! - **Signing**: a new Ed25519 key is drawn and registered in
//!   `signing_keys` before it signs anything, so what the old key signed
//!   stays verifiable; the private key goes where the configuration takes it
//!   from (the database for a generated key, the `file:` it names, or
//!   `--out`). Workers sign with it once restarted.
//! - **Encryption**: destination secrets and pseudonym originals sealed under
//!   an earlier key are re-sealed under the current one, in one transaction.
//!   A configured key is rotated by the operator (new `encryption_key`, old one
//!   in `previous_encryption_keys`, then this command); a generated one is
//!   replaced here, the old one kept as a previous key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::Serialize;
use serde_json::json;
use tokio_postgres::{Client, Transaction};

use super::{key_bytes, key_ring, previous_name, KeyRing, SecretError};
use crate::config::{Config, Secret};
use crate::db::{self, signing_keys, DbError};
use crate::deliveries::crypto::SecretBox;
use crate::deliveries::destination::DestinationConfig;
use crate::events::recorded::{self, AdminChange, RecordError};
use crate::gdpr::pseudonym::PseudonymKeys;
use crate::integrity::keys::{self, IntegrityKeys};

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Keys(#[from] SecretError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(
        "integrity.signing_key comes from {0}, which this command cannot write: \
         give --out FILE, then point integrity.signing_key at file:FILE"
    )]
    NowhereToWrite(String),
    #[error("cannot write the new key to {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what} {id} of organization `{organization}` opens with none of the keys \
         ({setting} and its previous keys): add the key that sealed it to the previous keys"
    )]
    Unopenable {
        what: &'static str,
        id: String,
        organization: String,
        setting: &'static str,
    },
}

/// What a signing-key rotation did.
#[derive(Debug, Serialize)]
pub struct SigningRotation {
    pub previous_key_id: String,
    pub key_id: String,
    /// Where the new private key was put: `database`, or a file.
    pub stored_in: String,
    pub next_step: &'static str,
}

/// What an encryption-key rotation did.
#[derive(Debug, Serialize)]
pub struct EncryptionRotation {
    /// The generated keys replaced here (those not configured).
    pub generated: Vec<&'static str>,
    pub destination_secrets_resealed: u64,
    pub pseudonym_originals_resealed: u64,
    /// Re-sealed values per organization.
    pub organizations: BTreeMap<String, u64>,
    pub next_step: &'static str,
}

/// Draws a new signing key, registers it and stores it (see the module doc).
pub async fn rotate_signing(
    client: &mut Client,
    config: &Config,
    out: Option<&Path>,
) -> Result<SigningRotation, RotationError> {
    let pool = db::pool(&config.database);
    let keys = IntegrityKeys::load(&config.integrity, &pool).await?;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let key_id = keys::key_id(&key.verifying_key());

    let configured = &config.integrity.signing_key;
    let file = match (out, configured.reference()) {
        (Some(out), _) => Some(out.to_path_buf()),
        (None, Some(reference)) => match reference.strip_prefix("file:") {
            Some(path) => Some(PathBuf::from(path)),
            None => return Err(RotationError::NowhereToWrite(reference.to_owned())),
        },
        (None, None) if configured.is_empty() => None,
        (None, None) => return Err(RotationError::NowhereToWrite("an inline value".into())),
    };
    // Written beside its place first: a failed write leaves nothing changed.
    let staged = match &file {
        Some(path) => Some(stage(path, &STANDARD.encode(seed))?),
        None => None,
    };

    let transaction = client.transaction().await.map_err(DbError::from)?;
    signing_keys::register(&transaction, &key_id, key.verifying_key().as_bytes()).await?;
    if file.is_none() {
        replace_stored(&transaction, "integrity.signing_key", &seed).await?;
    }
    let stored_in = file
        .as_ref()
        .map_or("database".to_owned(), |path| path.display().to_string());
    let change = AdminChange {
        object: "signing_key",
        verb: "rotate",
        target_id: key_id.clone(),
        details: json!({ "previous_key_id": keys.key_id(), "stored_in": stored_in }),
    };
    let principal = crate::admin::cli_principal();
    let operators = &config.operations.organization;
    recorded::admin_in(&transaction, &keys, operators, &principal, change).await?;
    transaction.commit().await.map_err(DbError::from)?;
    if let (Some(staged), Some(path)) = (staged, &file) {
        std::fs::rename(&staged, path).map_err(|source| RotationError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(SigningRotation {
        previous_key_id: keys.key_id(),
        key_id,
        stored_in,
        next_step: if out.is_some() {
            "point integrity.signing_key at the new file, then restart the workers: they sign with the new key; \
             both keys stay listed at GET /v1/integrity/public-key"
        } else {
            "restart the workers: they sign with the new key; both keys stay listed at GET /v1/integrity/public-key"
        },
    })
}

/// Writes `text` to a fresh file beside `path` (mode 0600), renamed onto
/// `path` once the database has the new key.
fn stage(path: &Path, text: &str) -> Result<PathBuf, RotationError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    let staged = PathBuf::from(name);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    write().map_err(|source| RotationError::Write {
        path: staged.clone(),
        source,
    })?;
    Ok(staged)
}

/// Replaces the generated key `setting` in `worker_secrets`.
async fn replace_stored(
    transaction: &Transaction<'_>,
    setting: &str,
    key: &[u8; 32],
) -> Result<(), DbError> {
    transaction
        .execute(
            "INSERT INTO worker_secrets (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, created_at = now()",
            &[&setting, &key.as_slice()],
        )
        .await?;
    Ok(())
}

/// An encryption key's ring after this rotation: a generated key is replaced
/// by a new one (the old one kept as previous); a configured one stays.
async fn next_ring(
    transaction: &Transaction<'_>,
    pool: &db::PgPool,
    setting: &'static str,
    configured: &Secret,
    previous_setting: &'static str,
    previous: &[Secret],
    generated: &mut Vec<&'static str>,
) -> Result<KeyRing, RotationError> {
    let mut ring = key_ring(setting, configured, previous_setting, previous, pool).await?;
    if configured.is_empty() {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        transaction
            .execute(
                "UPDATE worker_secrets SET name = $2 WHERE name = $1",
                &[&setting, &previous_name(setting, &ring.current)],
            )
            .await
            .map_err(DbError::from)?;
        replace_stored(transaction, setting, &fresh).await?;
        ring.previous.insert(0, ring.current);
        ring.current = fresh;
        generated.push(setting);
    }
    Ok(ring)
}

/// Re-seals every destination secret and pseudonym original under the
/// current keys, in one transaction (see the module doc).
pub async fn rotate_encryption(
    client: &mut Client,
    config: &Config,
) -> Result<EncryptionRotation, RotationError> {
    let pool = db::pool(&config.database);
    let keys = IntegrityKeys::load(&config.integrity, &pool).await?;
    let pseudonym_key = key_bytes(
        "gdpr.pseudonym_key",
        config.gdpr.pseudonym_key.expose(),
        &pool,
    )
    .await?;
    let transaction = client.transaction().await.map_err(DbError::from)?;
    // One rotation at a time: a second waits, then finds nothing left to do.
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext('audit-worker:keys-rotate'))",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    let mut generated = Vec::new();
    let delivery = next_ring(
        &transaction,
        &pool,
        "delivery.encryption_key",
        &config.delivery.encryption_key,
        "delivery.previous_encryption_keys",
        &config.delivery.previous_encryption_keys,
        &mut generated,
    )
    .await?;
    let gdpr = next_ring(
        &transaction,
        &pool,
        "gdpr.encryption_key",
        &config.gdpr.encryption_key,
        "gdpr.previous_encryption_keys",
        &config.gdpr.previous_encryption_keys,
        &mut generated,
    )
    .await?;

    let mut organizations = BTreeMap::new();
    let destination_secrets_resealed =
        reseal_destinations(&transaction, &SecretBox::new(&delivery), &mut organizations).await?;
    let pseudonym_originals_resealed = reseal_originals(
        &transaction,
        &PseudonymKeys::new(&pseudonym_key, &gdpr),
        &mut organizations,
    )
    .await?;

    let principal = crate::admin::cli_principal();
    for (organization, resealed) in &organizations {
        let change = AdminChange {
            object: "encryption_key",
            verb: "rotate",
            target_id: organization.clone(),
            details: json!({ "resealed": resealed }),
        };
        recorded::admin_in(&transaction, &keys, organization, &principal, change).await?;
    }
    let change = AdminChange {
        object: "encryption_key",
        verb: "rotate",
        target_id: "all".to_owned(),
        details: json!({
            "generated": generated,
            "destination_secrets_resealed": destination_secrets_resealed,
            "pseudonym_originals_resealed": pseudonym_originals_resealed,
            "organizations": organizations.len(),
        }),
    };
    let operators = &config.operations.organization;
    recorded::admin_in(&transaction, &keys, operators, &principal, change).await?;
    transaction.commit().await.map_err(DbError::from)?;
    Ok(EncryptionRotation {
        next_step: if generated.is_empty() {
            "once every worker runs with these keys, the previous_encryption_keys may be removed"
        } else {
            "restart the workers: they load the new generated keys (the old ones stay as previous keys)"
        },
        generated,
        destination_secrets_resealed,
        pseudonym_originals_resealed,
        organizations,
    })
}

/// Re-seals one value (of the organization given first) under the current
/// key: `None` when it already is, `Err` when no key of the ring opens it.
type Reseal<'a> = &'a dyn Fn(&str, &str) -> Result<Option<String>, ()>;

/// Where sealed values live, and how one is re-sealed.
struct SealedColumn<'a> {
    /// The organizations that have rows (a read without locks).
    owners: &'static str,
    /// A page of one organization's rows: `id` and the sealed value (as
    /// text), locked (`FOR UPDATE`), of `$1`'s rows after the id `$2`, at
    /// most `$3`, by id.
    page: &'static str,
    /// Sets the values of `$1`'s rows named by `unnest($2 id, $3 value)`.
    update: &'static str,
    what: &'static str,
    setting: &'static str,
    reseal: Reseal<'a>,
}

/// Rows are read a page at a time: a mapping table of millions of subjects
/// never sits in memory at once.
const PAGE: i64 = 1000;

/// Re-seals every value of `column` not sealed under the current key; how
/// many, counted per organization into `organizations` too. One
/// organization at a time: rows are locked by statements that name their
/// organization, which Citus routes to its shard (`docs/scaling.md`).
async fn reseal_column(
    transaction: &Transaction<'_>,
    column: SealedColumn<'_>,
    organizations: &mut BTreeMap<String, u64>,
) -> Result<u64, RotationError> {
    let owners = transaction
        .query(column.owners, &[])
        .await
        .map_err(DbError::from)?;
    let mut resealed = 0;
    for owner in &owners {
        let organization: String = owner.get(0);
        let mut after = i64::MIN;
        loop {
            let rows = transaction
                .query(column.page, &[&organization, &after, &PAGE])
                .await
                .map_err(DbError::from)?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.get(0);
            let (mut ids, mut values) = (Vec::new(), Vec::new());
            for row in &rows {
                let (id, sealed): (i64, String) = (row.get(0), row.get(1));
                let unopenable = || RotationError::Unopenable {
                    what: column.what,
                    id: id.to_string(),
                    organization: organization.clone(),
                    setting: column.setting,
                };
                let Some(value) =
                    (column.reseal)(&organization, &sealed).map_err(|()| unopenable())?
                else {
                    continue;
                };
                ids.push(id);
                values.push(value);
            }
            if ids.is_empty() {
                continue;
            }
            *organizations.entry(organization.clone()).or_default() += ids.len() as u64;
            resealed += transaction
                .execute(column.update, &[&organization, &ids, &values])
                .await
                .map_err(DbError::from)?;
        }
    }
    Ok(resealed)
}

async fn reseal_destinations(
    transaction: &Transaction<'_>,
    secrets: &SecretBox,
    organizations: &mut BTreeMap<String, u64>,
) -> Result<u64, RotationError> {
    let reseal = |_: &str, stored: &str| {
        let stored = serde_json::from_str(stored).map_err(|_| ())?;
        let resealed = DestinationConfig::resealed(&stored, secrets).map_err(|_| ())?;
        Ok(resealed.map(|config| config.to_string()))
    };
    let column = SealedColumn {
        owners:
            "SELECT DISTINCT organization_id FROM delivery_destinations ORDER BY organization_id",
        page: "SELECT id, config::text FROM delivery_destinations \
               WHERE organization_id = $1 AND id > $2 ORDER BY id LIMIT $3 FOR UPDATE",
        update: "UPDATE delivery_destinations AS d SET config = r.config::jsonb \
                 FROM unnest($2::bigint[], $3::text[]) AS r (id, config) \
                 WHERE d.organization_id = $1 AND d.id = r.id",
        what: "destination",
        setting: "delivery.encryption_key",
        reseal: &reseal,
    };
    reseal_column(transaction, column, organizations).await
}

async fn reseal_originals(
    transaction: &Transaction<'_>,
    pseudonyms: &PseudonymKeys,
    organizations: &mut BTreeMap<String, u64>,
) -> Result<u64, RotationError> {
    let reseal = |organization: &str, sealed: &str| {
        pseudonyms
            .reseal_original(organization, sealed)
            .map_err(|_| ())
    };
    let column = SealedColumn {
        owners: "SELECT DISTINCT organization_id FROM pseudonym_mapping ORDER BY organization_id",
        page: "SELECT id, original_id FROM pseudonym_mapping \
               WHERE organization_id = $1 AND id > $2 ORDER BY id LIMIT $3 FOR UPDATE",
        update: "UPDATE pseudonym_mapping AS m SET original_id = r.sealed \
                 FROM unnest($2::bigint[], $3::text[]) AS r (id, sealed) \
                 WHERE m.organization_id = $1 AND m.id = r.id",
        what: "pseudonym mapping",
        setting: "gdpr.encryption_key",
        reseal: &reseal,
    };
    reseal_column(transaction, column, organizations).await
}
