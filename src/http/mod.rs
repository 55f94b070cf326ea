//! The HTTP API: routes, middleware and error mapping.

pub mod admin;
mod admin_trail;
pub mod alert_rules;
pub mod alerts;
pub mod api_error;
pub mod api_keys;
pub mod archives;
pub mod auth;
pub mod console;
mod cursor;
pub mod deliveries;
pub mod destinations;
pub mod events;
pub mod extract;
pub mod gdpr;
pub mod health;
pub mod integrity;
pub mod legal_holds;
mod middleware;
pub mod openapi;
pub mod presets;
pub mod reports;
pub mod retention_policies;
pub mod roles;
pub mod streams;
pub mod tail;
pub mod tls;

use std::sync::Arc;

use actix::Addr;
use actix_web::http::header::HeaderValue;
use actix_web::middleware::{from_fn, Compress, Condition};
use actix_web::{guard, web, App, Route};

use crate::actors::alert::AlertActor;
use crate::actors::enqueue::EnqueueActor;
use crate::actors::gdpr::GdprActor;
use crate::actors::ingest::IngestActor;
use crate::actors::queue::QueueActor;
use crate::actors::report::ReportActor;
use crate::archive_store::ArchiveStore;
use crate::auth::Authenticator;
use crate::cache::QueryCache;
use crate::config::Config;
use crate::db::PgPool;
use crate::deliveries::crypto::SecretBox;
use crate::deliveries::egress::Egress;
use crate::error_tracking::ErrorTracker;
use crate::http::tail::Tails;
use crate::integrity::keys::IntegrityKeys;
use crate::metrics::Metrics;
use crate::redis_conn::RedisConnection;
use crate::reload::LiveConfig;
use crate::supervisor::{ActorHandle, Supervisor};

/// What handlers share: cheap to clone, the same for every HTTP worker thread.
pub struct AppState {
    /// Restart-only keys, as at start.
    pub config: Arc<Config>,
    /// The keys a reload may change (`ingest.max_batch`, `ingest.max_clock_skew`):
    /// read where used.
    pub live: LiveConfig,
    pub pool: PgPool,
    pub redis: RedisConnection,
    pub supervisor: Addr<Supervisor>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<Authenticator>,
    pub keys: Arc<IntegrityKeys>,
    /// Where archived events are read and written.
    pub archives: Arc<ArchiveStore>,
    pub ingest: ActorHandle<IngestActor>,
    /// Queues `POST /v1/deliveries` in groups.
    pub enqueue: ActorHandle<EnqueueActor>,
    /// Told when destinations change, to start or stop their DeliveryActors.
    pub queue: ActorHandle<QueueActor>,
    /// Seals and opens destination secrets.
    pub secrets: Arc<SecretBox>,
    /// The delivery network policy: destinations are checked against it
    /// when saved, and connection tests connect through it.
    pub egress: Egress,
    /// Query answers (L1 here, L2 in Redis), invalidated by every write.
    pub cache: Arc<QueryCache>,
    /// Carries out data subject requests.
    pub gdpr: ActorHandle<GdprActor>,
    /// Told when an organization's alert rules change.
    pub alerts: ActorHandle<AlertActor>,
    /// Told when a manual report run is queued.
    pub reports: ActorHandle<ReportActor>,
    /// Where 5xx answers are recorded as internal errors.
    pub errors: ErrorTracker,
    /// The live tails open, per API key (`GET /v1/events/stream`).
    pub tails: Arc<Tails>,
    /// Failed console sign-ins per client address.
    pub failed_sign_ins: Arc<console::sign_in::FailedSignIns>,
    /// `Strict-Transport-Security`, when serving HTTPS with `http.tls.hsts`.
    pub hsts: Option<HeaderValue>,
}

/// A route for GET, and HEAD too: a HEAD answer is the GET answer's head.
fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Builds the application for one HTTP worker thread.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let hsts = state.hsts.is_some();
    App::new()
        .app_data(state)
        // The last `wrap` is the outermost: the span and metrics see the
        // guard's 413, 414 and 431 too, every answer may be compressed, and
        // every answer carries HSTS when it is on.
        .wrap(from_fn(middleware::limit_request))
        .wrap(from_fn(middleware::observe))
        .wrap(Compress::default())
        .wrap(Condition::new(hsts, from_fn(middleware::hsts)))
        .route("/healthz", get().to(health::healthz))
        .route("/readyz", get().to(health::readyz))
        .route("/metrics", get().to(health::metrics))
        .route("/openapi.json", get().to(openapi::openapi_json))
        .service(
            web::scope("/console")
                .wrap(console::headers())
                .configure(console::routes),
        )
        .service(
            web::scope("/v1")
                .route("/events", web::post().to(events::ingest))
                .route("/events", get().to(events::list))
                // Before `/events/{id}`, which would take them for an id.
                .route("/events/stream", get().to(tail::stream))
                .route("/events/export", get().to(events::export))
                .route("/events/{id}", get().to(events::get))
                .route("/events/{id}/proof", get().to(events::proof))
                .route("/presets", get().to(presets::list))
                .route("/presets", web::post().to(presets::create))
                .route("/presets/{name}", get().to(presets::get))
                .route("/presets/{name}", web::put().to(presets::put))
                .route("/presets/{name}", web::delete().to(presets::delete))
                .route("/integrity/verify", web::post().to(integrity::verify))
                .route(
                    "/integrity/checkpoints",
                    get().to(integrity::list_checkpoints),
                )
                .route(
                    "/integrity/checkpoints",
                    web::post().to(integrity::create_checkpoint),
                )
                .route("/integrity/public-key", get().to(integrity::public_key))
                .route("/integrity/consistency", get().to(integrity::consistency))
                .route("/api-keys", get().to(api_keys::list))
                .route("/api-keys", web::post().to(api_keys::create))
                .route("/api-keys/{id}", web::delete().to(api_keys::revoke))
                .route("/api-keys/{id}/rotate", web::post().to(api_keys::rotate))
                .route("/roles", get().to(roles::list))
                .route("/roles/{name}", get().to(roles::get))
                .route("/roles/{name}", web::put().to(roles::put))
                .route("/roles/{name}", web::delete().to(roles::delete))
                .route("/destinations", web::post().to(destinations::create))
                .route("/destinations", get().to(destinations::list))
                .route("/destinations/{id}", get().to(destinations::get))
                .route("/destinations/{id}", web::patch().to(destinations::update))
                .route("/destinations/{id}", web::delete().to(destinations::delete))
                .route(
                    "/destinations/{id}/test",
                    web::post().to(destinations::test),
                )
                .route("/destinations/{id}/health", get().to(destinations::health))
                .route("/deliveries", web::post().to(deliveries::create))
                .route("/deliveries", get().to(deliveries::list))
                .route("/deliveries/{id}", get().to(deliveries::get))
                .route("/deliveries/{id}/retry", web::post().to(deliveries::retry))
                .route("/subscriptions", web::post().to(streams::create))
                .route("/subscriptions", get().to(streams::list))
                .route("/subscriptions/{id}", get().to(streams::get))
                .route("/subscriptions/{id}", web::patch().to(streams::update))
                .route("/subscriptions/{id}", web::delete().to(streams::delete))
                .route("/subscriptions/{id}/pause", web::post().to(streams::pause))
                .route(
                    "/subscriptions/{id}/resume",
                    web::post().to(streams::resume),
                )
                .route("/retention-policies", get().to(retention_policies::list))
                .route(
                    "/retention-policies",
                    web::post().to(retention_policies::create),
                )
                .route(
                    "/retention-policies/{id}",
                    web::patch().to(retention_policies::update),
                )
                .route(
                    "/retention-policies/{id}",
                    web::delete().to(retention_policies::delete),
                )
                .route("/legal-holds", web::post().to(legal_holds::create))
                .route("/legal-holds", get().to(legal_holds::list))
                .route("/legal-holds/{id}", get().to(legal_holds::get))
                .route(
                    "/legal-holds/{id}/release",
                    web::post().to(legal_holds::release),
                )
                .route("/alert-rules", get().to(alert_rules::list))
                .route("/alert-rules", web::post().to(alert_rules::create))
                .route("/alert-rules/{id}", get().to(alert_rules::get))
                .route("/alert-rules/{id}", web::put().to(alert_rules::replace))
                .route("/alert-rules/{id}", web::delete().to(alert_rules::delete))
                // `/alerts/statistics` before `/alerts/{id}`, which would take it for an id.
                .route("/alerts", get().to(alerts::list))
                .route("/alerts", web::post().to(alerts::create))
                .route("/alerts/statistics", get().to(alerts::statistics))
                .route("/alerts/{id}", get().to(alerts::get))
                .route(
                    "/alerts/{id}/acknowledge",
                    web::post().to(alerts::acknowledge),
                )
                .route("/alerts/{id}/resolve", web::post().to(alerts::resolve))
                .route("/alerts/{id}/dismiss", web::post().to(alerts::dismiss))
                .route(
                    "/alert-subscriptions",
                    web::post().to(alerts::create_subscription),
                )
                .route("/alert-subscriptions", get().to(alerts::list_subscriptions))
                .route(
                    "/alert-subscriptions/{id}",
                    get().to(alerts::get_subscription),
                )
                .route(
                    "/alert-subscriptions/{id}",
                    web::patch().to(alerts::update_subscription),
                )
                .route(
                    "/alert-subscriptions/{id}",
                    web::delete().to(alerts::delete_subscription),
                )
                .route("/gdpr/export", web::post().to(gdpr::export))
                .route("/gdpr/pseudonymize", web::post().to(gdpr::pseudonymize))
                .route("/gdpr/erase", web::post().to(gdpr::erase))
                .route("/gdpr/pseudonyms/{pseudonym_id}", get().to(gdpr::reverse))
                .route("/gdpr/requests", web::post().to(gdpr::record_request))
                .route("/gdpr/requests/{id}", get().to(gdpr::get_request))
                .route("/archives", get().to(archives::list))
                .route("/archives/{id}", get().to(archives::get))
                .route("/report-templates", get().to(reports::list_templates))
                .route(
                    "/report-templates",
                    web::post().to(reports::create_template),
                )
                .route("/report-templates/{id}", get().to(reports::get_template))
                .route(
                    "/report-templates/{id}",
                    web::patch().to(reports::update_template),
                )
                .route(
                    "/report-templates/{id}",
                    web::delete().to(reports::delete_template),
                )
                .route("/reports", get().to(reports::list_reports))
                .route("/reports", web::post().to(reports::create_report))
                .route("/reports/{id}", get().to(reports::get_report))
                .route("/reports/{id}", web::patch().to(reports::update_report))
                .route("/reports/{id}", web::delete().to(reports::delete_report))
                .route("/reports/{id}/run", web::post().to(reports::run_now))
                .route(
                    "/reports/{id}/executions",
                    get().to(reports::list_executions),
                )
                .route(
                    "/reports/{id}/executions/{execution_id}",
                    get().to(reports::get_execution),
                )
                .route(
                    "/reports/{id}/executions/{execution_id}/output",
                    get().to(reports::download_output),
                )
                .route("/admin/performance", get().to(admin::performance))
                .route("/admin/performance/explain", web::post().to(admin::explain))
                .route(
                    "/admin/maintenance/run",
                    web::post().to(admin::run_maintenance),
                )
                .route("/admin/errors", get().to(admin::list_errors))
                .route(
                    "/admin/errors/{aggregation_key}",
                    get().to(admin::get_error),
                ),
        )
        .default_service(web::to(openapi::route_not_found))
}
