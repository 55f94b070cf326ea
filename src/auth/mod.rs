//! Who is calling, for which organization, and what they may do.
//!
//! - [`keys`]: the API key format, generation and constant-time verification.
//! - [`permissions`]: roles, wildcards, inheritance.
//! - [`last_use`]: each key's `last_used_at`, noted in memory, written in batches.
//! - [`Authenticator`]: verifies a bearer key (cached in-process for
//!   `auth.key_cache_ttl`, so the hot path needs no database round trip, and
//!   for `auth.key_grace_period` while PostgreSQL is unreachable; a key's
//!   expiry and its replaced secret's end are cached with it and checked on
//!   every use), resolves the key's role (through the query cache for
//!   `auth.permission_cache_ttl`, invalidated on every role change on every
//!   instance), and rate-limits per key.
//! - [`issue_key`], [`rotate_key`]: a new key; a new secret for a key.

pub mod keys;
pub mod last_use;
pub mod permissions;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_postgres::GenericClient;

use crate::cache::{Lifetime, QueryCache, PERMISSIONS};
use crate::config::Config;
use crate::db::api_keys::{self, ApiKeyInfo, KeyCredentials, NewApiKey};
use crate::db::{self, tenant, DbError, PgPool};
use last_use::KeyUses;
use permissions::{PermissionSet, RoleDefinition};

/// The longest a replaced secret may keep working: a rotation is meant to end it.
const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long the secret a rotation replaces keeps working; at most 30 days,
/// which only [`GracePeriod::parse`] can make sure of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracePeriod(Duration);

impl GracePeriod {
    /// Unless the rotation says otherwise: a day to roll the new secret out.
    pub const DEFAULT: Self = Self(Duration::from_secs(24 * 3600));

    /// A duration in humantime's grammar (`24h`, `90min`, `0s`), at most 30 days.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let grace = humantime::parse_duration(raw)
            .map_err(|error| format!("not a duration like `24h`: {error}"))?;
        if grace > MAX_ROTATION_GRACE {
            return Err(format!(
                "the grace period may be at most {} days",
                MAX_ROTATION_GRACE.as_secs() / 86_400
            ));
        }
        Ok(Self(grace))
    }

    pub fn duration(self) -> Duration {
        self.0
    }
}

/// A presented secret that does not match the cached credentials is checked
/// against PostgreSQL again when the cached read is older than this: a key
/// created or rotated on another instance then works here at once, while
/// wrong secrets cost at most one read per key this often.
const REREAD_AFTER_MISMATCH: Duration = Duration::from_secs(1);

/// What an unknown key id is compared with: hashing and comparing for it
/// too makes both answers take as long.
static UNKNOWN_KEY: LazyLock<KeyCredentials> = LazyLock::new(|| KeyCredentials {
    secret_hash: vec![0; 32],
    ..KeyCredentials::default()
});

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_id: String,
    pub organization_id: String,
    pub role: String,
    pub permissions: Arc<PermissionSet>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header: send `Authorization: Bearer <api key>`")]
    Missing,
    #[error("malformed Authorization header: expected `Bearer awk_<id>_<secret>`")]
    Malformed,
    /// Unknown id and wrong secret alike: the answer must not tell them apart.
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("this API key expired at {}", .0.to_rfc3339())]
    Expired(DateTime<Utc>),
    /// The secret a rotation replaced, past its grace period.
    #[error("this API key's secret was replaced by a rotation; the previous secret stopped working at {}", .0.to_rfc3339())]
    Rotated(DateTime<Utc>),
    #[error(transparent)]
    Backend(#[from] DbError),
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("invalid organization id: {0}")]
    InvalidOrganization(String),
    #[error("no role named `{0}` in this organization")]
    UnknownRole(String),
    #[error("the expiry {} is not in the future", .0.to_rfc3339())]
    PastExpiry(DateTime<Utc>),
    #[error(transparent)]
    Database(#[from] DbError),
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("API key `{0}` has been revoked: a revoked key cannot be rotated")]
    Revoked(String),
    #[error("API key `{0}` has expired: issue a new key instead")]
    Expired(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// A key's credentials as read from PostgreSQL, and when.
#[derive(Clone)]
struct CachedKey {
    read_at: Instant,
    credentials: Option<Arc<KeyCredentials>>,
}

/// The bytes a cached key holds, which `auth.key_cache_max_kb` bounds.
fn key_weight(id: &str, cached: &CachedKey) -> u32 {
    let credentials = cached.credentials.as_deref().map_or(0, |key| {
        std::mem::size_of::<KeyCredentials>()
            + key.id.len()
            + key.organization_id.len()
            + key.role.len()
            + key.secret_hash.len()
            + key
                .previous_secret
                .as_ref()
                .map_or(0, |(hash, _)| hash.len())
    });
    let bytes = id.len() + std::mem::size_of::<CachedKey>() + credentials;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

pub struct Authenticator {
    pool: PgPool,
    cache: Arc<QueryCache>,
    /// key id → credentials as last read; `None` caches "no such key" so that
    /// guessing ids cannot hammer the database either.
    keys: moka::sync::Cache<String, CachedKey>,
    /// How long a read stays fresh (`auth.key_cache_ttl`).
    key_ttl: Duration,
    /// How long a read may serve while PostgreSQL is unreachable
    /// (`auth.key_grace_period`).
    key_grace: Duration,
    /// Swapped whole when a configuration reload changes the rate limit
    /// (`governor` cannot change a limiter's quota); the hot path reads it
    /// without a lock.
    limiter: ArcSwap<DefaultKeyedRateLimiter<String>>,
    permission_lifetime: Lifetime,
    /// Where each successful authentication notes its key's use; the
    /// `KeyUseActor` writes them.
    uses: Arc<KeyUses>,
}

/// Which of a key's secrets a presented one matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Current,
    /// The secret the latest rotation replaced, which works until then.
    Previous(DateTime<Utc>),
}

/// The secret of `credentials` that `hash` matches, if any. Both are compared
/// whatever the first answer, so that timing says nothing about which matched.
fn matching_secret(hash: &[u8; 32], credentials: &KeyCredentials) -> Option<Secret> {
    let current = keys::hash_matches(hash, &credentials.secret_hash);
    let previous = credentials
        .previous_secret
        .as_ref()
        .filter(|(stored, _)| keys::hash_matches(hash, stored))
        .map(|(_, until)| Secret::Previous(*until));
    if current {
        Some(Secret::Current)
    } else {
        previous
    }
}

/// Whether a key whose `secret` matched may be used at `now`. Checked on
/// every use, whatever cache the credentials came from.
fn check_validity(
    credentials: &KeyCredentials,
    secret: Secret,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    if credentials.revoked {
        return Err(AuthError::Revoked);
    }
    if let Some(at) = credentials.expires_at.filter(|at| *at <= now) {
        return Err(AuthError::Expired(at));
    }
    match secret {
        Secret::Previous(until) if until <= now => Err(AuthError::Rotated(until)),
        _ => Ok(()),
    }
}

impl Authenticator {
    pub fn new(config: &Config, pool: PgPool, cache: Arc<QueryCache>, uses: Arc<KeyUses>) -> Self {
        Self {
            pool,
            cache,
            uses,
            keys: moka::sync::Cache::builder()
                .max_capacity(config.auth.key_cache_max_kb * 1024)
                .weigher(|id: &String, cached: &CachedKey| key_weight(id, cached))
                .time_to_live(config.auth.key_cache_ttl.max(config.auth.key_grace_period))
                .build(),
            key_ttl: config.auth.key_cache_ttl,
            key_grace: config.auth.key_grace_period,
            limiter: ArcSwap::from_pointee(limiter(
                config.auth.rate_limit_per_second,
                config.auth.rate_limit_burst,
            )),
            permission_lifetime: Lifetime {
                ttl: config.auth.permission_cache_ttl,
                strict: true,
            },
        }
    }

    /// Verifies the `Authorization` header value and resolves the caller's permissions.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or(AuthError::Malformed)?
            .trim();
        let presented = keys::parse(token).ok_or(AuthError::Malformed)?;
        self.verify(presented.id, &keys::hash_secret(presented.secret))
            .await
    }

    /// The caller whose key `id` came with a secret hashing to `hash`: the
    /// checks of [`authenticate`](Self::authenticate) (revocation, expiry,
    /// rotation), for a console session, which keeps the hash, never the key.
    pub async fn verify(&self, id: &str, hash: &[u8; 32]) -> Result<Identity, AuthError> {
        let matches = |credentials: &Option<Arc<KeyCredentials>>| {
            matching_secret(hash, credentials.as_deref().unwrap_or(&UNKNOWN_KEY))
        };
        let mut credentials = self.credentials(id, self.key_ttl).await?;
        let mut matched = matches(&credentials);
        if matched.is_none() {
            credentials = self.credentials(id, REREAD_AFTER_MISMATCH).await?;
            matched = matches(&credentials);
        }
        let (credentials, secret) = match (credentials, matched) {
            (Some(credentials), Some(secret)) => (credentials, secret),
            _ => return Err(AuthError::Invalid),
        };
        check_validity(&credentials, secret, Utc::now())?;
        self.uses
            .note(&credentials.id, &credentials.organization_id);
        let permissions = self
            .permissions(&credentials.organization_id, &credentials.role)
            .await?;
        Ok(Identity {
            key_id: credentials.id.clone(),
            organization_id: credentials.organization_id.clone(),
            role: credentials.role.clone(),
            permissions,
        })
    }

    /// The key's credentials: from this instance's cache while read less
    /// than `max_age` ago, else from PostgreSQL; while PostgreSQL is
    /// unreachable, from a read within the grace period.
    async fn credentials(
        &self,
        id: &str,
        max_age: Duration,
    ) -> Result<Option<Arc<KeyCredentials>>, DbError> {
        let cached = self.keys.get(id);
        if let Some(cached) = cached.as_ref().filter(|c| c.read_at.elapsed() < max_age) {
            return Ok(cached.credentials.clone());
        }
        let read = async {
            let client = self.pool.get().await?;
            Ok::<_, DbError>(api_keys::credentials(&**client, id).await?.map(Arc::new))
        };
        match read.await {
            Ok(found) => {
                self.keys.insert(
                    id.to_owned(),
                    CachedKey {
                        read_at: Instant::now(),
                        credentials: found.clone(),
                    },
                );
                Ok(found)
            }
            Err(error) if error.is_unavailable() => match cached {
                Some(cached) if cached.read_at.elapsed() < self.key_grace => {
                    tracing::debug!(%error, "Key accepted from a read within the grace period");
                    Ok(cached.credentials)
                }
                _ => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    /// Drops a key from this instance's cache (after a revocation or a
    /// rotation here; other instances notice within `auth.key_cache_ttl`).
    pub fn forget_key(&self, id: &str) {
        self.keys.invalidate(id);
    }

    /// Applies a new rate limit (a configuration reload). Every key starts
    /// again with a full burst: the old limiter's state is dropped with it.
    pub fn set_rate_limit(&self, per_second: u32, burst: u32) {
        self.limiter.store(Arc::new(limiter(per_second, burst)));
    }

    /// Takes one request from the key's budget, or says how long to wait.
    pub fn check_rate(&self, key_id: &str) -> Result<(), Duration> {
        self.limiter
            .load()
            .check_key(&key_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The built-in and custom roles of an organization, read from PostgreSQL.
    pub async fn role_catalog(
        &self,
        organization_id: &str,
    ) -> Result<HashMap<String, RoleDefinition>, DbError> {
        let custom = tenant::scoped(&self.pool, organization_id, async |tx| {
            db::roles::list(tx, organization_id).await
        })
        .await?;
        Ok(permissions::role_catalog(custom))
    }

    /// The effective permissions of `role` in `organization_id`, through the
    /// query cache (strict: never from memory while Redis cannot vouch for
    /// the organization's generation). A role that no longer exists grants
    /// nothing.
    pub async fn permissions(
        &self,
        organization_id: &str,
        role: &str,
    ) -> Result<Arc<PermissionSet>, DbError> {
        let resolve = || async {
            let catalog = self.role_catalog(organization_id).await?;
            Ok::<_, DbError>(permissions::resolve(role, &catalog).unwrap_or_default())
        };
        let answer = self
            .cache
            .get_or_load(
                organization_id,
                PERMISSIONS,
                role,
                self.permission_lifetime,
                || async {
                    let set = resolve().await?;
                    Ok::<_, DbError>(serde_json::to_vec(&set).expect("permissions serialize"))
                },
            )
            .await?;
        match serde_json::from_slice::<PermissionSet>(&answer) {
            Ok(set) => Ok(Arc::new(set)),
            // Not what this version stores (an older worker's entry): ask PostgreSQL.
            Err(_) => Ok(Arc::new(resolve().await?)),
        }
    }

    /// Makes every instance forget the organization's cached permissions
    /// before the change is acknowledged.
    pub async fn roles_changed(&self, organization_id: &str) {
        self.cache.invalidate(organization_id, PERMISSIONS).await;
    }
}

/// A per-key limiter of `per_second` requests with bursts of `burst` (0 counts as 1).
fn limiter(per_second: u32, burst: u32) -> DefaultKeyedRateLimiter<String> {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

/// Organization ids: 1 to 255 characters of letters, digits and `._:@-`.
pub fn validate_organization_id(id: &str) -> Result<(), IssueError> {
    let valid = !id.is_empty()
        && id.len() <= 255
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(IssueError::InvalidOrganization(format!(
            "`{id}`: use 1 to 255 letters, digits or `._:@-`"
        )))
    }
}

/// A key just issued: its listing, and the full key, shown this once.
pub struct IssuedKey {
    pub info: ApiKeyInfo,
    pub key: String,
}

/// What a new key is: its organization, role, label and end.
pub struct KeyRequest<'a> {
    pub organization_id: &'a str,
    /// Must exist in the organization's role catalog.
    pub role: &'a str,
    pub name: Option<&'a str>,
    /// Must be in the future; `None`: the key never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Mints a key as `request` says and stores its hash.
pub async fn issue_key(
    client: &impl GenericClient,
    catalog: &HashMap<String, RoleDefinition>,
    request: &KeyRequest<'_>,
    created_by: &str,
) -> Result<IssuedKey, IssueError> {
    let KeyRequest {
        organization_id,
        role,
        name,
        expires_at,
    } = *request;
    validate_organization_id(organization_id)?;
    if !catalog.contains_key(role) {
        return Err(IssueError::UnknownRole(role.to_owned()));
    }
    if let Some(at) = expires_at.filter(|at| *at <= Utc::now()) {
        return Err(IssueError::PastExpiry(at));
    }
    let new = keys::generate();
    let info = api_keys::insert(
        client,
        &NewApiKey {
            id: &new.id,
            organization_id,
            name,
            role,
            secret_hash: &new.secret_hash,
            created_by,
            expires_at,
        },
    )
    .await?;
    Ok(IssuedKey { info, key: new.key })
}

/// Gives `key` (locked in this transaction: [`api_keys::lock`]) a new
/// secret; the replaced one keeps working for `grace`. Same id, role,
/// organization and expiry. A second rotation within a grace period ends the
/// older replaced secret at once: only the latest replaced secret is kept.
pub async fn rotate_key(
    client: &impl GenericClient,
    key: &ApiKeyInfo,
    grace: GracePeriod,
) -> Result<IssuedKey, RotateError> {
    if key.revoked_at.is_some() {
        return Err(RotateError::Revoked(key.id.clone()));
    }
    if key.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(RotateError::Expired(key.id.clone()));
    }
    let new = keys::new_secret(&key.id);
    let info = api_keys::rotate(
        client,
        &key.organization_id,
        &key.id,
        &new.secret_hash,
        grace.duration(),
    )
    .await?;
    Ok(IssuedKey { info, key: new.key })
}

/// The instant `after` from `now`, or a message when it is past what can be stored.
pub fn instant_after(now: DateTime<Utc>, after: Duration) -> Result<DateTime<Utc>, String> {
    chrono::Duration::from_std(after)
        .ok()
        .and_then(|after| now.checked_add_signed(after))
        .ok_or_else(|| "too far in the future".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(secret: &str) -> KeyCredentials {
        KeyCredentials {
            id: "0123456789abcdef".to_owned(),
            organization_id: "org-a".to_owned(),
            role: "auditor".to_owned(),
            secret_hash: keys::hash_secret(secret).to_vec(),
            ..KeyCredentials::default()
        }
    }

    #[test]
    fn the_current_and_the_previous_secret_match_and_no_other() {
        let until = Utc::now();
        let mut key = credentials("new");
        key.previous_secret = Some((keys::hash_secret("old").to_vec(), until));
        let matched = |secret| matching_secret(&keys::hash_secret(secret), &key);
        assert_eq!(matched("new"), Some(Secret::Current));
        assert_eq!(matched("old"), Some(Secret::Previous(until)));
        assert_eq!(matched("other"), None);
    }

    #[test]
    fn an_expired_key_is_refused_with_its_expiry_whichever_secret() {
        let now = Utc::now();
        let mut key = credentials("new");
        key.expires_at = Some(now - chrono::Duration::seconds(1));
        let later = now + chrono::Duration::hours(1);
        for secret in [Secret::Current, Secret::Previous(later)] {
            assert!(matches!(
                check_validity(&key, secret, now),
                Err(AuthError::Expired(at)) if Some(at) == key.expires_at
            ));
        }
        key.expires_at = Some(now + chrono::Duration::seconds(1));
        assert!(check_validity(&key, Secret::Current, now).is_ok());
    }

    #[test]
    fn a_replaced_secret_works_until_its_grace_ends() {
        let now = Utc::now();
        let key = credentials("new");
        let until = now + chrono::Duration::seconds(1);
        assert!(check_validity(&key, Secret::Previous(until), now).is_ok());
        assert!(matches!(
            check_validity(&key, Secret::Previous(now), now),
            Err(AuthError::Rotated(at)) if at == now
        ));
    }

    #[test]
    fn a_grace_period_is_a_duration_of_at_most_30_days() {
        assert_eq!(GracePeriod::parse("0s").unwrap().duration(), Duration::ZERO);
        assert_eq!(
            GracePeriod::parse("30d").unwrap().duration(),
            MAX_ROTATION_GRACE
        );
        assert!(GracePeriod::parse("30d 1s")
            .unwrap_err()
            .contains("30 days"));
        assert!(GracePeriod::parse("soon").unwrap_err().contains("24h"));
    }

    #[test]
    fn revocation_comes_before_expiry() {
        let now = Utc::now();
        let mut key = credentials("new");
        key.revoked = true;
        key.expires_at = Some(now);
        assert!(matches!(
            check_validity(&key, Secret::Current, now),
            Err(AuthError::Revoked)
        ));
    }
}
