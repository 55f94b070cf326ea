//! The OpenAPI document, generated from the handlers' annotations.

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admin, alert_rules, alerts, archives, gdpr, legal_holds, presets, reports, retention_policies,
};
use super::{api_keys, deliveries, destinations, errors, events, health, integrity, roles};

#[derive(OpenApi)]
#[openapi(
    info(title = "audit-worker", description = "Tamper-evident, multi-tenant audit trail API"),
    paths(
        health::healthz, health::readyz, health::metrics, openapi_json,
        api_keys::create, api_keys::list, api_keys::revoke,
        roles::list, roles::get, roles::put, roles::delete,
        events::ingest, events::list, events::get,
        presets::list, presets::get, presets::create, presets::put, presets::delete,
        integrity::verify, integrity::list_checkpoints, integrity::create_checkpoint, integrity::public_key,
        destinations::create, destinations::list, destinations::get, destinations::update, destinations::delete,
        destinations::test, destinations::health,
        deliveries::create, deliveries::list, deliveries::get, deliveries::retry,
        retention_policies::list, retention_policies::create, retention_policies::update,
        retention_policies::delete,
        legal_holds::create, legal_holds::list, legal_holds::get, legal_holds::release,
        archives::list, archives::get,
        alert_rules::list, alert_rules::create, alert_rules::get, alert_rules::replace, alert_rules::delete,
        alerts::list, alerts::statistics, alerts::get, alerts::acknowledge, alerts::resolve, alerts::dismiss,
        alerts::create, alerts::create_subscription, alerts::list_subscriptions, alerts::get_subscription,
        alerts::update_subscription, alerts::delete_subscription,
        gdpr::export, gdpr::pseudonymize, gdpr::erase, gdpr::reverse, gdpr::record_request, gdpr::get_request,
        reports::list_templates, reports::create_template, reports::get_template, reports::update_template,
        reports::delete_template, reports::list_reports, reports::create_report, reports::get_report,
        reports::update_report, reports::delete_report, reports::run_now, reports::list_executions,
        reports::get_execution, reports::download_output,
        admin::performance, admin::explain, admin::run_maintenance, admin::list_errors, admin::get_error,
    ),
    components(schemas(errors::ErrorBody, errors::ErrorDetail, errors::FieldError)),
    modifiers(&BearerKeys),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "access", description = "API keys and roles of the caller's organization"),
        (name = "events", description = "Audit events: ingest and queries"),
        (name = "integrity", description = "Tamper evidence: verification and signed checkpoints"),
        (name = "delivery", description = "Destinations and the delivery queue"),
        (name = "retention", description = "Retention policies, legal holds and archives"),
        (name = "alerts", description = "Alerts, alert rules and alert subscriptions"),
        (name = "gdpr", description = "Data subject requests: export, pseudonymization, erasure"),
        (name = "reports", description = "Report templates, scheduled reports, their runs and outputs"),
        (name = "admin", description = "The platform operators' tools: database performance, maintenance, internal errors"),
    )
)]
pub struct ApiDoc;

/// Declares the `Authorization: Bearer <api key>` scheme the `/v1` routes use.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// The methods the route `pattern` (as actix and the document spell it,
/// `/v1/events/{id}`) answers, HEAD included wherever GET is; `None` for a
/// pattern the document does not know.
pub fn methods_of(pattern: &str) -> Option<Vec<&'static str>> {
    static METHODS: OnceLock<HashMap<String, Vec<&'static str>>> = OnceLock::new();
    METHODS
        .get_or_init(|| {
            ApiDoc::openapi()
                .paths
                .paths
                .into_iter()
                .map(|(path, item)| {
                    let methods = [
                        ("GET", item.get.is_some()),
                        ("HEAD", item.get.is_some() || item.head.is_some()),
                        ("POST", item.post.is_some()),
                        ("PUT", item.put.is_some()),
                        ("PATCH", item.patch.is_some()),
                        ("DELETE", item.delete.is_some()),
                    ];
                    let allowed = methods
                        .into_iter()
                        .filter_map(|(method, present)| present.then_some(method))
                        .collect();
                    (path, allowed)
                })
                .collect()
        })
        .get(pattern)
        .cloned()
}
