//! A console session: a random token in an HttpOnly, SameSite=Strict cookie
//! (Secure over TLS), its SHA-256 stored with the API key it signed in with
//! (id and secret hash, never the key). Every request checks the key again
//! (revoked, expired, rotated: the session ends with it) and spends from its
//! rate budget, as an API request does.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header::LOCATION;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Identity;
use crate::db::console_sessions;
use crate::http::auth::Caller;
use crate::http::AppState;

/// The session's cookie.
pub const SESSION_COOKIE: &str = "audit_console_session";
/// The sign-in form's own CSRF token (double submit: cookie and field).
pub const SIGN_IN_COOKIE: &str = "audit_console_sign_in";
/// Every form's hidden CSRF field.
pub const CSRF_FIELD: &str = "csrf";

/// 32 random bytes, URL-safe: a session token or a CSRF token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether two tokens are equal, in time that does not tell how much of them is.
pub fn tokens_match(sent: &str, expected: &str) -> bool {
    sent.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// A cookie of the console's: HttpOnly, SameSite=Strict, scoped to
/// `/console`, Secure when the request came over TLS.
pub fn cookie(request: &HttpRequest, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(request.connection_info().scheme() == "https")
        .finish()
}

/// The same cookie, expired.
pub fn removal(request: &HttpRequest, name: &'static str) -> Cookie<'static> {
    let mut cookie = cookie(request, name, String::new());
    cookie.make_removal();
    cookie
}

/// The person signed in: the key's identity, and the session's CSRF token.
pub struct Viewer {
    pub identity: Identity,
    pub csrf_token: String,
    /// May read the operators' pages (the API's `/v1/admin` rule).
    pub operator: bool,
}

/// Why a page cannot be shown to the request.
pub enum Refusal {
    /// No live session: to the sign-in page.
    SignIn,
    /// The session's role lacks the permission (403).
    Forbidden,
    /// A form without the session's CSRF token (403).
    Csrf,
    /// The key has spent its rate budget (429).
    Busy,
    Unavailable,
}

impl Viewer {
    /// The request's session, if it is live and its key still valid.
    pub async fn of(request: &HttpRequest, state: &web::Data<AppState>) -> Result<Self, Refusal> {
        let Some(token) = request.cookie(SESSION_COOKIE) else {
            return Err(Refusal::SignIn);
        };
        let hash = token_hash(token.value());
        let idle = state.config.console.idle_timeout;
        let client = state.pool.get().await.map_err(|_| Refusal::Unavailable)?;
        let session = console_sessions::touch(&**client, &hash, idle)
            .await
            .map_err(|_| Refusal::Unavailable)?
            .ok_or(Refusal::SignIn)?;
        let secret_hash: [u8; 32] = session
            .key_secret_hash
            .as_slice()
            .try_into()
            .map_err(|_| Refusal::SignIn)?;
        let identity = match state.auth.verify(&session.key_id, &secret_hash).await {
            Ok(identity) => identity,
            Err(crate::auth::AuthError::Backend(_)) => return Err(Refusal::Unavailable),
            Err(_) => {
                // The key was revoked, expired or rotated away: so is the session.
                let _ = console_sessions::delete(&**client, &hash).await;
                return Err(Refusal::SignIn);
            }
        };
        if state.auth.check_rate(&identity.key_id).is_err() {
            return Err(Refusal::Busy);
        }
        let operator = Caller(identity.clone())
            .require_operator(&state.config.operations.organization, "read")
            .is_ok();
        Ok(Self {
            identity,
            csrf_token: session.csrf_token,
            operator,
        })
    }

    pub fn may(&self, resource: &str, action: &str) -> bool {
        self.identity.permissions.allows(resource, action)
    }

    /// Refuses a form whose CSRF field is not the session's token.
    pub fn check_csrf(&self, sent: Option<&str>) -> Result<(), Refusal> {
        match sent {
            Some(sent) if tokens_match(sent, &self.csrf_token) => Ok(()),
            _ => Err(Refusal::Csrf),
        }
    }
}

/// A redirect after a form (303: the browser follows it with a GET).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, location.to_owned()))
        .finish()
}
