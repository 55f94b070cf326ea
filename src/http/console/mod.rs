//! The web console at `/console`, served by the worker itself: pages
//! rendered on the server (`maud`); one script of its own, which checks an
//! event's inclusion proof in the browser, and htmx (vendored) where a page
//! follows something running. A person signs in with an API
//! key and gets a server-side session ([`session`]); every page honours the
//! key's role exactly as the API does. Every answer forbids framing, inline
//! script and style, and caching, and sends no referrer.

pub mod alerts;
pub mod charts;
pub mod destinations;
pub mod events;
pub mod gdpr;
pub mod histogram;
pub mod integrity;
pub mod layout;
pub mod operators;
pub mod reports;
pub mod session;
pub mod sign_in;

use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::http::api_error::ApiError;
use crate::http::AppState;
use session::{Refusal, Viewer};

const STYLESHEET: &str = include_str!("../../../assets/console.css");
/// Checks an event's inclusion proof in the browser (WebCrypto).
const VERIFY_SCRIPT: &str = include_str!("../../../assets/verify.js");
/// htmx, vendored by `scripts/vendor-htmx` at a pinned version.
const HTMX: &str = include_str!("../../../assets/vendor/htmx-2.0.11.min.js");

/// Content-Security-Policy of every console answer: this origin's
/// stylesheet and scripts, nothing inline, requests (htmx's) and forms only
/// back here, no frame.
const POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
    connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The headers of every console answer (the module's comment says which).
pub fn headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ))
        .add((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .add((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .add((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .add((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ))
}

/// The console's routes, under `/console`.
pub fn routes(console: &mut web::ServiceConfig) {
    console
        .route("", web::get().to(home))
        .route("/", web::get().to(home))
        .route("/login", web::get().to(sign_in::show))
        .route("/login", web::post().to(sign_in::submit))
        .route("/logout", web::post().to(sign_in::sign_out))
        .route("/events", web::get().to(events::list))
        .route("/events/export", web::get().to(events::export))
        .route("/events/{id}", web::get().to(events::show))
        .route("/integrity", web::get().to(integrity::show))
        .route("/integrity/verify", web::post().to(integrity::run))
        .route(
            "/integrity/checkpoints/{seq}",
            web::get().to(integrity::download),
        )
        .route("/destinations", web::get().to(destinations::show))
        .route(
            "/destinations/{id}/{step}",
            web::post().to(destinations::step),
        )
        .route(
            "/deliveries/{id}/replay",
            web::post().to(destinations::replay),
        )
        .route("/gdpr", web::get().to(gdpr::show))
        .route("/gdpr/export", web::post().to(gdpr::export))
        .route("/reports", web::get().to(reports::show))
        .route(
            "/reports/{id}/runs/{run}/output",
            web::get().to(reports::download),
        )
        .route("/operators", web::get().to(operators::show))
        .route("/alerts", web::get().to(alerts::list))
        .route("/alerts/{id}/{step}", web::post().to(alerts::step))
        .route("/assets/console.css", web::get().to(stylesheet))
        .route("/assets/verify.js", web::get().to(|| script(VERIFY_SCRIPT)))
        .route("/assets/htmx.min.js", web::get().to(|| script(HTMX)));
}

/// The console's front page: the events, for now.
async fn home() -> HttpResponse {
    session::see_other("/console/events")
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .body(STYLESHEET)
}

async fn script(source: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .body(source)
}

/// The request's viewer if its role may `action` on `resource`; else the
/// page that refuses it (the sign-in form without a session, else 403).
pub async fn viewer_who_may(
    request: &HttpRequest,
    state: &web::Data<AppState>,
    resource: &str,
    action: &str,
) -> Result<Viewer, HttpResponse> {
    let viewer = Viewer::of(request, state)
        .await
        .map_err(|refusal| refused(refusal, None))?;
    if viewer.may(resource, action) {
        Ok(viewer)
    } else {
        Err(refused(Refusal::Forbidden, Some(&viewer)))
    }
}

/// The viewer of a posted form: a live session, and the form carrying its
/// CSRF token; else the page that refuses it.
pub async fn form_viewer(
    request: &HttpRequest,
    state: &web::Data<AppState>,
    csrf: Option<&str>,
) -> Result<Viewer, HttpResponse> {
    let viewer = Viewer::of(request, state)
        .await
        .map_err(|refusal| refused(refusal, None))?;
    match viewer.check_csrf(csrf) {
        Ok(()) => Ok(viewer),
        Err(refusal) => Err(refused(refusal, Some(&viewer))),
    }
}

/// The page that says why the API's handler refused what a form asked.
pub fn api_refused(viewer: &Viewer, error: ApiError) -> HttpResponse {
    if let ApiError::Forbidden(_) = error {
        return refused(Refusal::Forbidden, Some(viewer));
    }
    let status = error.status_code();
    let title = status.canonical_reason().unwrap_or("Refused");
    HttpResponse::build(status)
        .body(layout::notice(title, Some(viewer), &error.to_string()).into_string())
}

/// The page a refusal shows: the sign-in form for no session, else a notice.
pub fn refused(refusal: Refusal, viewer: Option<&Viewer>) -> HttpResponse {
    let (mut response, title, message) = match refusal {
        Refusal::SignIn => return session::see_other("/console/login"),
        Refusal::Forbidden => (
            HttpResponse::Forbidden(),
            "Not allowed",
            "Your role does not allow this.",
        ),
        Refusal::Csrf => (
            HttpResponse::Forbidden(),
            "Form expired",
            "This form is not from your session: open the page again and resend it.",
        ),
        Refusal::Busy => (
            HttpResponse::TooManyRequests(),
            "Too many requests",
            "Your key has made too many requests just now: wait a moment.",
        ),
        Refusal::Unavailable => (
            HttpResponse::ServiceUnavailable(),
            "Unavailable",
            "The trail cannot be read just now: try again in a moment.",
        ),
    };
    response.body(layout::notice(title, viewer, message).into_string())
}
