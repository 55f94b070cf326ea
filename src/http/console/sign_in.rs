//! Signing in and out. The form takes an API key (a password field: it is
//! never put in the page, a URL or browser storage) and opens a server-side
//! session; failed sign-ins are limited per client address and recorded in
//! the trail of the worker's own organization, successes in the key's.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use dashmap::DashMap;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::layout;
use super::session::{self, Refusal, CSRF_FIELD, SESSION_COOKIE, SIGN_IN_COOKIE};
use crate::auth::keys;
use crate::db::console_sessions::{self, ConsoleSession};
use crate::events::recorded::{self, Record};
use crate::http::AppState;

/// Failed sign-ins per client address in the current minute. Written by
/// hand: governor's keyed limiter cannot be consulted without spending, and
/// only failures may spend here.
#[derive(Default)]
pub struct FailedSignIns(DashMap<IpAddr, (Instant, u32)>);

const WINDOW: Duration = Duration::from_secs(60);

impl FailedSignIns {
    fn exhausted(&self, address: IpAddr, allowed: u32) -> bool {
        self.0
            .get(&address)
            .is_some_and(|entry| entry.0.elapsed() < WINDOW && entry.1 >= allowed)
    }

    fn count(&self, address: IpAddr) {
        let mut entry = self.0.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        // Addresses whose minute is over are forgotten as others fail.
        drop(entry);
        if self.0.len() > 10_000 {
            self.0.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
    }
}

#[derive(Deserialize)]
pub struct SignInForm {
    api_key: String,
    csrf: String,
}

fn form(csrf: &str, problem: Option<&str>) -> maud::Markup {
    layout::page(
        "Sign in",
        None,
        html! {
            form.sign-in method="post" action="/console/login" {
                h1 { "Sign in to the audit trail" }
                @if let Some(problem) = problem {
                    p.notice role="alert" { (problem) }
                }
                label for="api_key" {
                    "API key"
                    input #api_key type="password" name="api_key" required autocomplete="off"
                        spellcheck="false";
                }
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The sign-in form, with a fresh CSRF token in its cookie and its field.
pub async fn show(request: HttpRequest) -> HttpResponse {
    let csrf = session::random_token();
    HttpResponse::Ok()
        .cookie(session::cookie(&request, SIGN_IN_COOKIE, csrf.clone()))
        .body(form(&csrf, None).into_string())
}

/// Checks the key, opens a session and goes to the events.
pub async fn submit(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: web::Form<SignInForm>,
) -> HttpResponse {
    let SignInForm { api_key, csrf } = body.into_inner();
    let expected = request.cookie(SIGN_IN_COOKIE);
    if !expected.is_some_and(|cookie| session::tokens_match(&csrf, cookie.value())) {
        return super::refused(Refusal::Csrf, None);
    }
    let address = request
        .peer_addr()
        .map(|peer| peer.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let allowed = state.config.console.failed_sign_ins_per_minute;
    if state.failed_sign_ins.exhausted(address, allowed) {
        return HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", WINDOW.as_secs().to_string()))
            .body(form(&csrf, Some("Too many failed sign-ins: wait a minute.")).into_string());
    }
    let presented = keys::parse(api_key.trim());
    let key_id = presented.as_ref().map(|key| key.id.to_owned());
    let verified = match presented {
        Some(key) => {
            let hash = keys::hash_secret(key.secret);
            state
                .auth
                .verify(key.id, &hash)
                .await
                .map(|identity| (identity, hash))
        }
        None => Err(crate::auth::AuthError::Malformed),
    };
    let (identity, hash) = match verified {
        Ok(verified) => verified,
        Err(crate::auth::AuthError::Backend(_)) => {
            return super::refused(Refusal::Unavailable, None)
        }
        Err(error) => {
            state.failed_sign_ins.count(address);
            record(&state, None, "failure", &error.to_string(), key_id, address).await;
            let page = form(&csrf, Some("That key cannot sign in."));
            return HttpResponse::Unauthorized().body(page.into_string());
        }
    };
    let token = session::random_token();
    let ttl = chrono::Duration::from_std(state.config.console.session_ttl).unwrap_or_default();
    let stored = ConsoleSession {
        organization_id: identity.organization_id.clone(),
        key_id: identity.key_id.clone(),
        key_secret_hash: hash.to_vec(),
        csrf_token: session::random_token(),
        expires_at: chrono::Utc::now() + ttl,
    };
    let inserted = async {
        let client = state.pool.get().await?;
        console_sessions::insert(&**client, &session::token_hash(&token), &stored).await
    };
    if inserted.await.is_err() {
        return super::refused(Refusal::Unavailable, None);
    }
    let organization = identity.organization_id.clone();
    record(
        &state,
        Some(&organization),
        "success",
        "signed in to the console",
        Some(identity.key_id.clone()),
        address,
    )
    .await;
    let mut response = session::see_other("/console/events");
    let _ = response.add_cookie(&session::cookie(&request, SESSION_COOKIE, token));
    let _ = response.add_cookie(&session::removal(&request, SIGN_IN_COOKIE));
    response
}

#[derive(Deserialize)]
pub struct SignOutForm {
    csrf: Option<String>,
}

/// Ends the session and goes back to the sign-in form.
pub async fn sign_out(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: web::Form<SignOutForm>,
) -> HttpResponse {
    if let Err(refused) = super::form_viewer(&request, &state, body.csrf.as_deref()).await {
        return refused;
    }
    if let Some(token) = request.cookie(SESSION_COOKIE) {
        if let Ok(client) = state.pool.get().await {
            let _ = console_sessions::delete(&**client, &session::token_hash(token.value())).await;
        }
    }
    let mut response = session::see_other("/console/login");
    let _ = response.add_cookie(&session::removal(&request, SESSION_COOKIE));
    response
}

/// Records a sign-in in the trail: a success in the key's organization, a
/// failure in the worker's own (the key may name none). Never the secret.
async fn record(
    state: &AppState,
    organization_id: Option<&str>,
    status: &str,
    outcome: &str,
    key_id: Option<String>,
    address: IpAddr,
) {
    let organization_id = organization_id.unwrap_or(&state.config.alerts.system_organization);
    let principal = key_id
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), |id| format!("key:{id}"));
    let event = Record {
        organization_id,
        principal_id: &principal,
        action: "console.sign_in",
        status,
        outcome: outcome.to_owned(),
        target: None,
        details: json!({"key_id": key_id, "address": address.to_string()}),
    };
    if let Err(error) = recorded::append(&state.pool, &state.keys, &event).await {
        tracing::warn!(%error, "A console sign-in could not be recorded in the trail");
    }
}
