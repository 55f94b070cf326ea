//! The API's error type and its JSON shape: every error response is
//! `{"error": {"code", "message", "details"}}`, whatever produced it — a
//! handler, an extractor, an unknown route or an oversized body.

use std::time::Duration;

use chrono::{DateTime, Utc};

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::validation::FieldError;

use crate::archive_store::ArchiveError;
use crate::auth::AuthError;
use crate::db::proofs::ProveError;
use crate::db::{DbError, SaveError};
use crate::messages::delivery::EnqueueError;
use crate::messages::ingest::IngestError;
use crate::supervisor::ActorUnavailable;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("no route matches {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request is invalid: {}", summarize(.0))]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    /// A key past its `expires_at`: 401 with a code of its own, so that a
    /// client can tell "get a new key" from "this key is wrong".
    #[error("{message}")]
    KeyExpired {
        message: String,
        expired_at: DateTime<Utc>,
    },
    /// A secret a rotation replaced, past its grace period: the key lives on
    /// under its new secret.
    #[error("{message}")]
    KeyRotated {
        message: String,
        expired_at: DateTime<Utc>,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests for this API key; retry after {} s", retry_after_secs(.retry_after))]
    RateLimited { retry_after: Duration },
    #[error("{reason}; retry in {} s", retry_after_secs(.retry_after))]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    #[error("unsupported content type `{given}`: send {expected}")]
    UnsupportedMediaType {
        given: String,
        expected: &'static str,
    },
    #[error("unsupported content encoding `{0}`: send the body as is, gzip or zstd")]
    UnsupportedEncoding(String),
    #[error("{method} is not allowed on {path}; allowed: {}", .allow.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: Vec<&'static str>,
    },
    #[error("the request URI is longer than the limit of {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("the request headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// The cause (logged and recorded by the error tracker) never reaches the
    /// client, who learns only that it was on our side.
    #[error("internal error")]
    Internal(String),
    #[error("not ready: {failing}")]
    NotReady { failing: String, checks: Value },
}

fn summarize(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|error| format!("{}: {}", error.field, error.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whole seconds, rounded up, never 0: what `Retry-After` carries.
fn retry_after_secs(wait: &Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `not_found`, `payload_too_large`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured context, or null: for `validation_failed`, the list of
    /// invalid fields; otherwise an object (`limit_bytes`, `allow`, `expired_at`,
    /// `retry_after_seconds`, `checks`).
    #[schema(schema_with = details_schema)]
    pub details: Value,
}

/// What [`ApiError::details`] may send: null, the fields of a validation
/// error, or an object.
fn details_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    use utoipa::openapi::Ref;
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(ArrayBuilder::new().items(Ref::from_schema_name("FieldError")))
        .item(ObjectBuilder::new().schema_type(Type::Object))
        .build()
        .into()
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::RouteNotFound { .. } | ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::KeyExpired { .. } => "key_expired",
            ApiError::KeyRotated { .. } => "key_rotated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::UnsupportedMediaType { .. } | ApiError::UnsupportedEncoding(_) => {
                "unsupported_media_type"
            }
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UriTooLong { .. } => "uri_too_long",
            ApiError::HeadersTooLarge { .. } => "headers_too_large",
            ApiError::Internal(_) => "internal",
            ApiError::NotReady { .. } => "not_ready",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::NotReady { checks, .. } => serde_json::json!({ "checks": checks }),
            ApiError::PayloadTooLarge { limit }
            | ApiError::UriTooLong { limit }
            | ApiError::HeadersTooLarge { limit } => serde_json::json!({ "limit_bytes": limit }),
            ApiError::MethodNotAllowed { allow, .. } => serde_json::json!({ "allow": allow }),
            ApiError::Validation(errors) => serde_json::to_value(errors).unwrap_or_default(),
            ApiError::RateLimited { retry_after } => {
                serde_json::json!({ "retry_after_seconds": retry_after_secs(retry_after) })
            }
            ApiError::KeyExpired { expired_at, .. } | ApiError::KeyRotated { expired_at, .. } => {
                serde_json::json!({ "expired_at": expired_at })
            }
            _ => Value::Null,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::RouteNotFound { .. } | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) | ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_)
            | ApiError::KeyExpired { .. }
            | ApiError::KeyRotated { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } | ApiError::NotReady { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UnsupportedMediaType { .. } | ApiError::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized(_)
            | ApiError::KeyExpired { .. }
            | ApiError::KeyRotated { .. } => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RateLimited { retry_after } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs(retry_after)));
            }
            ApiError::Unavailable { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs(retry_after)));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, allow.join(", ")));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                details: self.details(),
            },
        })
    }
}

impl From<SaveError> for ApiError {
    fn from(error: SaveError) -> Self {
        match error {
            SaveError::NameTaken(_) => ApiError::Conflict(error.to_string()),
            SaveError::Db(error) => error.into(),
        }
    }
}

/// When to ask again after the archive store did not answer.
const ARCHIVE_STORE_RETRY: Duration = Duration::from_secs(30);

impl From<ProveError> for ApiError {
    /// 404 for what the caller cannot see, 409 for what exists but is not
    /// provable against the checkpoint asked for.
    fn from(error: ProveError) -> Self {
        match error {
            ProveError::Database(error) => error.into(),
            ProveError::EventNotFound(_)
            | ProveError::CheckpointNotFound(_)
            | ProveError::NoCheckpoint
            | ProveError::SizeNotFound(_) => ApiError::NotFound(error.to_string()),
            ProveError::NoTree(_)
            | ProveError::NewerThanCheckpoint { .. }
            | ProveError::LeavesUnavailable { .. } => ApiError::Conflict(error.to_string()),
        }
    }
}

impl From<ArchiveError> for ApiError {
    /// 503 while the archive store does not answer (the client may retry),
    /// 404 for an archive that is not listed, 409 for one that is listed but
    /// cannot be read (corrupted, its file missing, its store not configured).
    fn from(error: ArchiveError) -> Self {
        match error {
            ArchiveError::Db(error) => error.into(),
            ArchiveError::Object(_) => ApiError::Unavailable {
                reason: format!("the archive store does not answer: {error}"),
                retry_after: ARCHIVE_STORE_RETRY,
            },
            ArchiveError::NotFound(_) => ApiError::NotFound(error.to_string()),
            _ => ApiError::Conflict(error.to_string()),
        }
    }
}

impl From<DbError> for ApiError {
    /// An outage of PostgreSQL is a 503 the client may retry; anything else from
    /// the database is a bug on our side, logged with its cause.
    fn from(error: DbError) -> Self {
        if let Some(refusal) = refused_input(&error) {
            return refusal;
        }
        if error.is_unavailable() {
            tracing::warn!(%error, "Database unavailable");
            ApiError::Unavailable {
                reason: "the database is unavailable".to_owned(),
                retry_after: Duration::from_secs(1),
            }
        } else {
            tracing::error!(%error, "Database error");
            ApiError::Internal(error.to_string())
        }
    }
}

/// What PostgreSQL refused because of a value the client sent, as the client's
/// error rather than ours: a value out of its column's range or length (class
/// 22), a missing or constraint-breaking value (23502, 23514) or a clash with
/// another row (23505, 23503). Handlers validate what they know first; this
/// keeps whatever they missed from turning into a 500.
fn refused_input(error: &DbError) -> Option<ApiError> {
    let DbError::Postgres(error) = error else {
        return None;
    };
    let db = error.as_db_error()?;
    let code = db.code().code();
    let field = db.column().unwrap_or_default();
    if code.starts_with("22") || code == "23502" || code == "23514" {
        tracing::info!(code, message = db.message(), "PostgreSQL refused a value");
        Some(ApiError::Validation(vec![FieldError::new(
            field,
            format!("refused by the database: {}", db.message()),
        )]))
    } else if code == "23505" || code == "23503" {
        tracing::info!(
            code,
            message = db.message(),
            "PostgreSQL refused a conflicting row"
        );
        Some(ApiError::Conflict(format!(
            "conflicts with another record: {}",
            db.message()
        )))
    } else {
        None
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> Self {
        DbError::from(error).into()
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Unavailable { retry_after } => ApiError::Unavailable {
                reason: "the database is unavailable; nothing was stored".to_owned(),
                retry_after,
            },
            IngestError::Failed => ApiError::Internal("the ingest transaction failed".to_owned()),
        }
    }
}

impl From<EnqueueError> for ApiError {
    fn from(error: EnqueueError) -> Self {
        match error {
            EnqueueError::UnknownDestinations(unknown) => ApiError::Validation(
                unknown
                    .into_iter()
                    .map(|(position, id)| {
                        FieldError::new(
                            format!("destination_ids[{position}]"),
                            format!("no destination {id}"),
                        )
                    })
                    .collect(),
            ),
            EnqueueError::Unavailable => ApiError::Unavailable {
                reason: "the database is unavailable; nothing was queued".to_owned(),
                retry_after: Duration::from_secs(1),
            },
            EnqueueError::Refused(error) => error.into(),
        }
    }
}

impl From<ActorUnavailable> for ApiError {
    fn from(error: ActorUnavailable) -> Self {
        ApiError::Unavailable {
            reason: error.to_string(),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::Backend(error) => error.into(),
            AuthError::Expired(expired_at) => ApiError::KeyExpired {
                message,
                expired_at,
            },
            AuthError::Rotated(expired_at) => ApiError::KeyRotated {
                message,
                expired_at,
            },
            AuthError::Missing | AuthError::Malformed | AuthError::Invalid | AuthError::Revoked => {
                ApiError::Unauthorized(message)
            }
        }
    }
}
