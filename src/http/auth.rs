//! The `Caller` extractor: every `/v1` handler takes one, so no handler can run
//! without an authenticated, rate-limited caller whose organization is known.

use std::collections::HashMap;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};

use super::api_error::{ApiError, FieldError};
use super::AppState;
use crate::auth::Identity;
use crate::validation::{Strictness, TextRules};

/// The resource of the operators' tools.
const OPERATIONS: &str = "system.operations";

/// The organization of a request's caller, left in the request's extensions
/// so that the error tracker can attribute a failure to it.
#[derive(Clone)]
pub struct CallerOrganization(pub String);

const OTHER_ORGANIZATION: &str =
    "this API key belongs to another organization than the one named in the request";

/// The authenticated caller of a request.
pub struct Caller(pub Identity);

impl Caller {
    /// The organization every query of this request is scoped to.
    pub fn organization_id(&self) -> &str {
        &self.0.organization_id
    }

    /// Who did it, for `created_by`-style columns: the key, never a name the client chose.
    pub fn actor(&self) -> String {
        format!("api-key:{}", self.0.key_id)
    }

    /// The principal of the events recording the caller's administrative changes.
    pub fn principal(&self) -> String {
        format!("key:{}", self.0.key_id)
    }

    /// 403 unless the caller's role grants `action` on `resource`.
    pub fn require(&self, resource: &str, action: &str) -> Result<(), ApiError> {
        if self.0.permissions.allows(resource, action) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the role `{}` does not grant `{action}` on `{resource}`",
                self.0.role
            )))
        }
    }

    /// 403 unless the caller is one of the platform's operators: its key belongs
    /// to `operations_organization` (`operations.organization`) and its role
    /// grants `action` on `system.operations`. A tenant's org:admin holds `*`
    /// in its own organization, so the organization check is what keeps
    /// tenants out.
    pub fn require_operator(
        &self,
        operations_organization: &str,
        action: &str,
    ) -> Result<(), ApiError> {
        if self.organization_id() != operations_organization {
            return Err(ApiError::Forbidden(
                "the /v1/admin API is for the platform's operators: this API key belongs to a \
                 tenant organization, not the operators' organization"
                    .to_owned(),
            ));
        }
        self.require(OPERATIONS, action)
    }

    /// 403 when `named` is another organization than the caller's.
    pub fn ensure_own_organization(&self, named: Option<&str>) -> Result<(), ApiError> {
        ensure_own_organization(&self.0, named)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Made now, before any extractor runs, so that each finds it.
        let authentication = authenticated(request);
        let request = request.clone();
        Box::pin(async move {
            let identity = authentication.await?;
            request
                .extensions_mut()
                .insert(CallerOrganization(identity.organization_id.clone()));
            let span = tracing::Span::current();
            span.record("organization_id", identity.organization_id.as_str());
            span.record("key_id", identity.key_id.as_str());
            Ok(Caller(identity))
        })
    }
}

/// The authentication of one request, run once whoever asks first.
pub type Authentication = Shared<LocalBoxFuture<'static, Result<Identity, ApiError>>>;

/// Authenticates the request's key, takes one request from its rate budget
/// and checks an `organization_id` named in the query, once per request: the
/// [`Caller`] extractor and the body extractor (when a body names an
/// organization, to check it) share the outcome. Extractors run side by side,
/// so neither can count on the other having finished.
pub fn authenticated(request: &HttpRequest) -> Authentication {
    if let Some(pending) = request.extensions().get::<Authentication>() {
        return pending.clone();
    }
    // Only owned values go in: the future is kept in the request's own extensions.
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.to_str().map(str::to_owned).unwrap_or_default());
    let named_organization =
        web::Query::<HashMap<String, String>>::from_query(request.query_string())
            .ok()
            .and_then(|query| query.into_inner().remove("organization_id"));
    let pending = async move {
        let state = state.ok_or_else(|| ApiError::Internal("no application state".to_owned()))?;
        let identity = state.auth.authenticate(authorization.as_deref()).await?;
        state
            .auth
            .check_rate(&identity.key_id)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        if let Some(problem) = named_organization
            .as_deref()
            .and_then(|named| TextRules::REQUEST.problem(named, Strictness::Text))
        {
            return Err(ApiError::Validation(vec![FieldError::new(
                "organization_id",
                problem,
            )]));
        }
        ensure_own_organization(&identity, named_organization.as_deref())?;
        Ok(identity)
    }
    .boxed_local()
    .shared();
    request.extensions_mut().insert(pending.clone());
    pending
}

/// The organization always comes from the key: a request that names another
/// one (in its query or its body) is refused outright.
pub fn ensure_own_organization(identity: &Identity, named: Option<&str>) -> Result<(), ApiError> {
    match named {
        Some(named) if named != identity.organization_id => {
            Err(ApiError::Forbidden(OTHER_ORGANIZATION.to_owned()))
        }
        _ => Ok(()),
    }
}
