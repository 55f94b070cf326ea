//! `/v1/integrity`: verification, signed checkpoints and the public key.

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::{OptionalJson, Query};
use super::AppState;
use crate::db::checkpoints::{self, StoredCheckpoint};
use crate::db::{proofs, signing_keys, tenant};
use crate::integrity::checkpoint::SignedCheckpoint;
use crate::integrity::proof::ConsistencyProof;
use crate::integrity::verify::{self, Report, Scope, VerifyError};

const RESOURCE: &str = "audit.integrity";
/// Tree sizes are link counts; beyond this no chain grows, and u64 math on
/// them cannot overflow.
const MAX_TREE_SIZE: i64 = 1 << 62;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// RFC 3339; events from this time. Default: the beginning.
    #[serde(default, deserialize_with = "crate::validation::optional_timestamp")]
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339, exclusive. Default: the end.
    #[serde(default, deserialize_with = "crate::validation::optional_timestamp")]
    pub to: Option<DateTime<Utc>>,
    /// A checkpoint kept outside (as `GET /v1/integrity/checkpoints` returned it):
    /// the chain must still reach it, else the report says `truncated`.
    pub checkpoint: Option<SignedCheckpoint>,
}

/// Recomputes every hash and link of the caller's organization (in the time
/// range, if given) and reports what no longer matches. The run is recorded in
/// `audit_integrity_log`. A body is optional.
#[utoipa::path(post, path = "/v1/integrity/verify", operation_id = "verify_integrity", tag = "integrity", request_body = Option<VerifyRequest>,
    responses((status = 200, body = Report), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn verify(
    state: web::Data<AppState>,
    caller: Caller,
    body: OptionalJson<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "verify")?;
    let request = body.into_inner().unwrap_or_default();
    if let (Some(from), Some(to)) = (request.from, request.to) {
        if from > to {
            return Err(ApiError::Validation(vec![FieldError::new(
                "from",
                "must not be after `to`",
            )]));
        }
    }
    let organization_id = caller.organization_id();
    let scope = Scope {
        organization_id,
        from: request.from,
        to: request.to,
        checkpoint: request.checkpoint.as_ref(),
        progress: None,
    };
    let report = verify::verify(&state.pool, &state.keys, &state.archives, &scope)
        .await
        .map_err(|error| match error {
            VerifyError::Database(error) => ApiError::from(error),
            other => ApiError::Validation(vec![FieldError::new("checkpoint", other.to_string())]),
        })?;
    let client = state.pool.get().await?;
    verify::record(&**client, organization_id, &report, &scope, &caller.actor()).await?;
    if !report.valid {
        tracing::warn!(
            problems = report.problem_count,
            "Integrity verification failed"
        );
    }
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    /// Default 20.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Checked against the key's organization (403 when it differs).
    pub organization_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// Newest first.
    pub checkpoints: Vec<StoredCheckpoint>,
}

/// The organization's signed checkpoints, newest first.
#[utoipa::path(get, path = "/v1/integrity/checkpoints", operation_id = "list_checkpoints", tag = "integrity", params(CheckpointQuery),
    responses((status = 200, body = CheckpointList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list_checkpoints(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<CheckpointQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 1000",
        )]));
    }
    let organization_id = caller.organization_id();
    let checkpoints = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(checkpoints::list(tx, organization_id, limit).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(CheckpointList { checkpoints }))
}

/// Signs a checkpoint of the organization's chain now (if it grew since the last one).
#[utoipa::path(post, path = "/v1/integrity/checkpoints", operation_id = "create_checkpoint", tag = "integrity",
    responses((status = 201, body = CheckpointList), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn create_checkpoint(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "verify")?;
    let organization_id = caller.organization_id();
    let client = state.pool.get().await?;
    checkpoints::create(&**client, &state.keys, Some(organization_id)).await?;
    let checkpoints = checkpoints::list(&**client, organization_id, 1).await?;
    Ok(HttpResponse::Created().json(CheckpointList { checkpoints }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKey {
    pub algorithm: &'static str,
    /// The key this worker signs new checkpoints and digests with.
    pub key_id: String,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// Every key that has signed here, oldest first: a checkpoint or digest
    /// names its signer's `key_id`, and a rotation never retires one.
    pub keys: Vec<ListedKey>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListedKey {
    pub key_id: String,
    pub algorithm: &'static str,
    /// Base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// When the key was first registered (its first use, or its rotation).
    pub created_at: DateTime<Utc>,
    /// Whether this worker signs with it now.
    pub current: bool,
}

/// The keys that verify checkpoint and digest signatures. Public: no key needed.
#[utoipa::path(get, path = "/v1/integrity/public-key", operation_id = "get_public_key", tag = "integrity",
    responses((status = 200, body = PublicKey), (status = 503, body = super::api_error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn public_key(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let current = state.keys.key_id();
    let client = state.pool.get().await?;
    let keys = signing_keys::list(&**client)
        .await?
        .into_iter()
        .map(|row| ListedKey {
            current: row.key_id == current,
            key_id: row.key_id,
            algorithm: "Ed25519",
            public_key: STANDARD.encode(&row.public_key),
            created_at: row.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(PublicKey {
        algorithm: "Ed25519",
        key_id: current,
        public_key: STANDARD.encode(state.keys.verifying_key().as_bytes()),
        keys,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size: any from 1 to `to` (the `seq` of a checkpoint
    /// the client holds, typically).
    #[param(minimum = 1, maximum = 4611686018427387904_i64)]
    pub from: i64,
    /// The newer tree size: the `seq` of one of the organization's
    /// checkpoints that commit to a tree (format version 2).
    #[param(minimum = 1, maximum = 4611686018427387904_i64)]
    pub to: i64,
}

/// An RFC 9162 consistency proof that the organization's link tree of `to`
/// links extends its tree of `from` links (`docs/integrity.md` section 12):
/// with the root of a checkpoint it kept, a client checks that nothing before
/// it was rewritten or cut since. 404 when `to` is not the size of a
/// checkpoint with a tree.
#[utoipa::path(get, path = "/v1/integrity/consistency", operation_id = "get_consistency_proof", tag = "integrity",
    params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = 400, body = super::api_error::ErrorBody),
        (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(from = query.from, to = query.to))]
pub async fn consistency(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let (from, to) = (query.from, query.to);
    let mut errors = Vec::new();
    for (field, value) in [("from", from), ("to", to)] {
        if !(1..=MAX_TREE_SIZE).contains(&value) {
            errors.push(FieldError::new(field, "must be a tree size from 1 to 2^62"));
        }
    }
    if errors.is_empty() && from > to {
        errors.push(FieldError::new("from", "must not be larger than `to`"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = caller.organization_id();
    let proof = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(proofs::consistency_proof(tx, organization_id, from, to).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(proof))
}
