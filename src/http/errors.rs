//! The API's error type and its JSON shape: every error response is
//! `{"error": {"code", "message", "details"}}`, whatever produced it — a
//! handler, an extractor, an unknown route or an oversized body.

use actix_web::error::{JsonPayloadError, PayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route matches {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("not ready: {failing}")]
    NotReady { failing: String, checks: Value },
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
    /// Structured context (which field, which check), or null.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::RouteNotFound { .. } => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotReady { .. } => "not_ready",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::NotReady { checks, .. } => serde_json::json!({ "checks": checks }),
            ApiError::PayloadTooLarge { limit } => serde_json::json!({ "limit_bytes": limit }),
            _ => Value::Null,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                details: self.details(),
            },
        })
    }
}

/// The fallback service: any path or method no route serves.
pub async fn route_not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound {
        method: request.method().to_string(),
        path: request.path().to_owned(),
    })
}

/// Extractor settings that turn their failures into [`ApiError`]s, so that a
/// malformed or oversized body gets the same JSON error shape as everything else.
pub fn configure_extractors(cfg: &mut web::ServiceConfig, max_body: usize) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body)
            .error_handler(move |error, _| match error {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => {
                    ApiError::PayloadTooLarge { limit: max_body }.into()
                }
                JsonPayloadError::Payload(PayloadError::Overflow) => {
                    ApiError::PayloadTooLarge { limit: max_body }.into()
                }
                other => ApiError::BadRequest(format!("invalid JSON body: {other}")).into(),
            }),
    )
    .app_data(web::PayloadConfig::new(max_body))
    .app_data(
        web::QueryConfig::default().error_handler(|error: QueryPayloadError, _| {
            ApiError::BadRequest(format!("invalid query string: {error}")).into()
        }),
    );
}
