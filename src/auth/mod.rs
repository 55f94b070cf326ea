//! Who is calling, for which organization, and what they may do.
//!
//! - [`keys`]: the API key format, generation and constant-time verification.
//! - [`permissions`]: roles, wildcards, inheritance.
//! - [`Authenticator`]: verifies a bearer key (cached in-process for
//!   `auth.key_cache_ttl`, so the hot path needs no database round trip, and
//!   for `auth.key_grace_period` while PostgreSQL is unreachable),
//!   resolves the key's role (through the query cache for
//!   `auth.permission_cache_ttl`, invalidated on every role change on every
//!   instance), and rate-limits per key.

pub mod keys;
pub mod permissions;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_postgres::GenericClient;

use crate::cache::{Lifetime, QueryCache, PERMISSIONS};
use crate::config::Config;
use crate::db::api_keys::{self, ApiKeyInfo, KeyCredentials, NewApiKey};
use crate::db::{self, tenant, DbError, PgPool};
use permissions::{PermissionSet, RoleDefinition};

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
    #[error(transparent)]
    Backend(#[from] DbError),
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("invalid organization id: {0}")]
    InvalidOrganization(String),
    #[error("no role named `{0}` in this organization")]
    UnknownRole(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// A key's credentials as read from PostgreSQL, and when.
#[derive(Clone)]
struct CachedKey {
    read_at: Instant,
    credentials: Option<Arc<KeyCredentials>>,
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
}

impl Authenticator {
    pub fn new(config: &Config, pool: PgPool, cache: Arc<QueryCache>) -> Self {
        Self {
            pool,
            cache,
            keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
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
        let credentials = self.credentials(presented.id).await?;
        // Hash and compare even for an unknown id, so both answers take as long.
        let stored: &[u8] = credentials.as_ref().map_or(&[0; 32], |c| &c.secret_hash);
        let matched = keys::secret_matches(presented.secret, stored);
        let credentials = match credentials {
            Some(credentials) if matched => credentials,
            _ => return Err(AuthError::Invalid),
        };
        if credentials.revoked {
            return Err(AuthError::Revoked);
        }
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

    /// The key's credentials: from this instance's cache while fresh, else
    /// from PostgreSQL; while PostgreSQL is unreachable, from a read within
    /// the grace period.
    async fn credentials(&self, id: &str) -> Result<Option<Arc<KeyCredentials>>, DbError> {
        let cached = self.keys.get(id);
        if let Some(cached) = cached
            .as_ref()
            .filter(|c| c.read_at.elapsed() < self.key_ttl)
        {
            return Ok(cached.credentials.clone());
        }
        let read = async {
            let client = self.pool.get().await?;
            Ok::<_, DbError>(api_keys::credentials(&*client, id).await?.map(Arc::new))
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

    /// Drops a key from this instance's cache (after a revocation here; other
    /// instances notice within `auth.key_cache_ttl`).
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

/// Mints a key for `role` (which must exist in `catalog`) and stores its hash.
pub async fn issue_key(
    client: &impl GenericClient,
    catalog: &HashMap<String, RoleDefinition>,
    organization_id: &str,
    role: &str,
    name: Option<&str>,
    created_by: &str,
) -> Result<IssuedKey, IssueError> {
    validate_organization_id(organization_id)?;
    if !catalog.contains_key(role) {
        return Err(IssueError::UnknownRole(role.to_owned()));
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
        },
    )
    .await?;
    Ok(IssuedKey { info, key: new.key })
}
