//! The OpenAPI document, generated from the handlers' annotations.

use actix_web::HttpResponse;
use utoipa::OpenApi;

use super::{errors, health};

#[derive(OpenApi)]
#[openapi(
    info(title = "audit-worker", description = "Tamper-evident, multi-tenant audit trail API"),
    paths(health::healthz, health::readyz, health::metrics, openapi_json),
    components(schemas(errors::ErrorBody, errors::ErrorDetail)),
    tags((name = "operations", description = "Health, readiness, metrics and this document"))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
