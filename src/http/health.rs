//! Operational endpoints: liveness, readiness and Prometheus metrics.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::api_error::ApiError;
use super::AppState;
use crate::db::tls::TlsState;
use crate::db::{self, migrations};
use crate::messages::supervisor::GetStatus;

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `alive`: the process answers.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`; a worker that is not ready answers 503 with an error body instead.
    pub status: &'static str,
    pub checks: Checks,
}

/// One entry per dependency or capability the worker needs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub postgres: PostgresCheck,
    pub migrations: Check,
    pub actors: Check,
    /// Redis is optional: when it is down this check says `degraded` and the
    /// worker stays ready.
    pub redis: ConnectionCheck,
    /// The object store new archives go to (`[archive] store`), when it is
    /// not PostgreSQL: an unreachable or forbidden bucket says `degraded`
    /// (archival waits; events stay live) and the worker stays ready.
    pub archive_store: Check,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Redis's check, and whether its connection is encrypted.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionCheck {
    #[serde(flatten)]
    pub check: Check,
    /// The connection is TLS (a `rediss://` URL, which never falls back to
    /// clear text).
    pub tls: bool,
}

/// PostgreSQL's check, with how the probe's connection is secured.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostgresCheck {
    #[serde(flatten)]
    pub check: Check,
    /// The TLS state of the connection the probe used, as PostgreSQL sees it
    /// (`pg_stat_ssl`); absent when PostgreSQL did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Failing,
    Degraded,
}

impl Check {
    fn ok() -> Self {
        Self {
            status: CheckStatus::Ok,
            message: None,
        }
    }

    fn with(status: CheckStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: Some(message.into()),
        }
    }
}

/// Liveness: 200 as long as the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "The process is running", body = Liveness)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "alive" })
}

/// Readiness: PostgreSQL answers, the schema is current and every supervised
/// actor runs. Each check really exercises its dependency.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations", responses(
    (status = 200, description = "Ready to serve", body = Readiness),
    (status = 503, description = "Not ready; `details.checks` names what is not", body = super::api_error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let timeout = state.config.database.health_timeout;
    let (postgres, redis, actors, archive_store) = tokio::join!(
        db::ping_tls(&state.pool, timeout),
        state.redis.ping(),
        state.supervisor.send(GetStatus),
        tokio::time::timeout(timeout, state.archives.check()),
    );
    let migrations = match &postgres {
        Err(_) => Check::with(CheckStatus::Failing, "unknown: PostgreSQL does not answer"),
        Ok(_) => match migrations::is_current(&state.pool, timeout).await {
            Ok(true) => Check::ok(),
            Ok(false) => Check::with(CheckStatus::Failing, "migrations are not all applied"),
            Err(error) => Check::with(CheckStatus::Failing, error.to_string()),
        },
    };
    let checks = Checks {
        postgres: match postgres {
            Ok(tls) => PostgresCheck {
                check: Check::ok(),
                tls: Some(tls),
            },
            Err(error) => PostgresCheck {
                check: Check::with(CheckStatus::Failing, error.to_string()),
                tls: None,
            },
        },
        migrations,
        actors: match actors {
            Ok(children) => {
                let down: Vec<&str> = children
                    .iter()
                    .filter(|c| !c.running)
                    .map(|c| c.name)
                    .collect();
                if down.is_empty() {
                    Check::ok()
                } else {
                    Check::with(
                        CheckStatus::Failing,
                        format!("not running: {}", down.join(", ")),
                    )
                }
            }
            Err(error) => Check::with(
                CheckStatus::Failing,
                format!("supervisor unreachable: {error}"),
            ),
        },
        redis: ConnectionCheck {
            check: redis.map_or_else(
                |e| Check::with(CheckStatus::Degraded, e.to_string()),
                |()| Check::ok(),
            ),
            tls: state.redis.tls(),
        },
        archive_store: match archive_store {
            Ok(None) | Ok(Some(Ok(()))) => Check::ok(),
            Ok(Some(Err(error))) => Check::with(CheckStatus::Degraded, error.to_string()),
            Err(_) => Check::with(
                CheckStatus::Degraded,
                format!("no answer within {} ms", timeout.as_millis()),
            ),
        },
    };
    let failing: Vec<&str> = [
        ("postgres", checks.postgres.check.status),
        ("migrations", checks.migrations.status),
        ("actors", checks.actors.status),
        ("redis", checks.redis.check.status),
    ]
    .into_iter()
    .filter(|(_, status)| *status == CheckStatus::Failing)
    .map(|(name, _)| name)
    .collect();
    if failing.is_empty() {
        Ok(HttpResponse::Ok().json(Readiness {
            status: "ready",
            checks,
        }))
    } else {
        Err(ApiError::NotReady {
            failing: failing.join(", "),
            checks: serde_json::to_value(&checks).unwrap_or_default(),
        })
    }
}

/// Prometheus text exposition of every `audit_worker_` metric.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&state.pool))
}
