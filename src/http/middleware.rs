//! Request middleware: the per-request span, HTTP metrics and the guard on
//! the request's size (URI, headers, declared body), and HSTS over HTTPS.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, ResponseError};
use tracing::field::Empty;
use tracing::Instrument;
use uuid::Uuid;

use super::api_error::ApiError;
use super::auth::CallerOrganization;
use super::AppState;
use crate::error_tracking::{ErrorEvent, Severity};

/// Wraps each request in a span (method, route, request id, status, latency),
/// counts it by route pattern and status, and tags the response with its request id.
pub async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let state = request.app_data::<web::Data<AppState>>().cloned();
    // The pattern (`/v1/events/{id}`), never the raw path, keeps label cardinality bounded.
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let method_label = crate::metrics::method_label(request.method());
    let request_id = Uuid::new_v4();
    let span = tracing::info_span!(
        "http_request",
        %method,
        %route,
        %request_id,
        organization_id = Empty,
        key_id = Empty,
        status = Empty,
        latency_ms = Empty,
    );
    let started = Instant::now();
    let outcome = next.call(request).instrument(span.clone()).await;
    let latency = started.elapsed();
    let status = match &outcome {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    span.record("status", status.as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
    if let Some(state) = &state {
        state
            .metrics
            .http
            .requests
            .with_label_values(&[method_label, &route, status.as_str()])
            .inc();
        state
            .metrics
            .http
            .request_duration
            .with_label_values(&[method_label, &route])
            .observe(latency.as_secs_f64());
    }
    if status.is_server_error() {
        if let Some(state) = &state {
            let (error, organization) = match &outcome {
                Ok(response) => (
                    response.response().error(),
                    response
                        .request()
                        .extensions()
                        .get::<CallerOrganization>()
                        .map(|caller| caller.0.clone()),
                ),
                Err(error) => (Some(error), None),
            };
            if let Some(mut event) = internal_error(error, &route) {
                event.organization_id = organization;
                event.request_id = Some(request_id.to_string());
                event.context = serde_json::json!({ "method": method, "status": status.as_u16() });
                state.errors.record(event);
            }
        }
    }
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::error!("Request failed");
        } else {
            tracing::info!("Request handled");
        }
    });
    let mut response = outcome?;
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}

/// The internal error behind a 5xx answer (component `http`, operation the
/// route pattern); `None` for a readiness probe's 503, which reports a state
/// the heartbeat already tracks.
fn internal_error(error: Option<&Error>, route: &str) -> Option<ErrorEvent> {
    let api_error = error.and_then(|error| error.as_error::<ApiError>());
    let (category, severity, code, message, retryable) = match api_error {
        Some(ApiError::NotReady { .. }) => return None,
        Some(ApiError::Internal(cause)) => (
            "internal",
            Severity::High,
            "internal_error",
            cause.clone(),
            false,
        ),
        Some(unavailable @ ApiError::Unavailable { .. }) => (
            "dependency",
            Severity::Medium,
            "unavailable",
            unavailable.to_string(),
            true,
        ),
        _ => (
            "internal",
            Severity::High,
            "internal_error",
            error.map_or_else(|| "server error".to_owned(), ToString::to_string),
            false,
        ),
    };
    let mut event = ErrorEvent::new(category, severity, code, "http", route, message);
    event.retryable = retryable;
    Some(event)
}

/// Longest request URI answered, in bytes (longer: a JSON 414).
const MAX_URI_BYTES: usize = 16 * 1024;
/// Largest sum of header names and values answered, in bytes (larger: a JSON
/// 431). The HTTP parser's own bound (128 KiB for the whole head) lies beyond
/// these two, so any head the parser accepts gets an answer in our JSON shape.
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses, before any handler runs, a URI or headers past their limits and a
/// body whose declared length exceeds `http.max_body`. Bodies without a length
/// (chunked, compressed) are capped as they are read.
pub async fn limit_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let limit = request
        .app_data::<web::Data<AppState>>()
        .map(|state| state.config.http.max_body);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let refusal = if request.uri().to_string().len() > MAX_URI_BYTES {
        Some(ApiError::UriTooLong {
            limit: MAX_URI_BYTES,
        })
    } else if header_bytes > MAX_HEADER_BYTES {
        Some(ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        })
    } else {
        match (limit, declared) {
            (Some(limit), Some(declared)) if declared > limit => {
                Some(ApiError::PayloadTooLarge { limit })
            }
            _ => None,
        }
    };
    if let Some(refusal) = refusal {
        let response = refusal.error_response();
        return Ok(request.into_response(response).map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}

/// Adds `Strict-Transport-Security` (the value in [`AppState::hsts`]) to
/// every answer, including one still travelling as an error: that error is
/// given the answer it would make, with the header.
pub async fn hsts(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let value = request
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.hsts.clone());
    let Some(value) = value else {
        return next.call(request).await;
    };
    match next.call(request).await {
        Ok(mut response) => {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, value);
            Ok(response)
        }
        Err(error) => {
            let mut answer = error.error_response();
            answer
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, value);
            Err(actix_web::error::InternalError::from_response(error, answer).into())
        }
    }
}
