//! The extractors every handler takes its input through, in place of actix's
//! `web::Json`, `web::Query` and `web::Path`, so that what a client may send is
//! decided once, for every route:
//!
//! - a body is JSON (`Content-Type` `application/json` or `…+json`, else 415),
//!   sent as is, gzip or zstd (`Content-Encoding`, else 415), and at most
//!   `http.max_body` bytes once decompressed (else 413);
//! - no string anywhere (body, query or path) holds NUL, none read as text a
//!   control character, and none is longer than [`MAX_STRING_CHARS`] (400
//!   naming the field; see [`TextRules`]);
//! - an `organization_id` named at the top of a body must be the caller's own
//!   (403), as one named in the query (checked by the `Caller` extractor);
//! - a value of the wrong type or shape is a 400 naming the field;
//! - a request refused for several reasons gets one answer, always the same:
//!   its authentication's refusal first, then its path's, query's, body's.

use std::io::Read;
use std::ops::{Deref, DerefMut};

use actix_web::dev::Payload;
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api_error::{ApiError, FieldError};
use super::auth::{authenticated, ensure_own_organization, Authentication};
use super::AppState;
use crate::validation::{Strictness, TextRules};

#[cfg(doc)]
use crate::validation::MAX_STRING_CHARS;

/// A JSON body, checked as the module says, then read into `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// A JSON body that may be left out (empty, or only whitespace).
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

/// The query string, checked as the module says, then read into `T`.
#[derive(Debug)]
pub struct Query<T>(pub T);

/// The path's parameters, checked as the module says, then read into `T`.
#[derive(Debug)]
pub struct Path<T>(pub T);

macro_rules! wrapper {
    ($name:ident) => {
        impl<T> $name<T> {
            pub fn into_inner(self) -> T {
                self.0
            }
        }

        impl<T> Deref for $name<T> {
            type Target = T;
            fn deref(&self) -> &T {
                &self.0
            }
        }

        impl<T> DerefMut for $name<T> {
            fn deref_mut(&mut self) -> &mut T {
                &mut self.0
            }
        }

        impl<T: std::fmt::Display> std::fmt::Display for $name<T> {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(formatter)
            }
        }
    };
}

wrapper!(Json);
wrapper!(Query);
wrapper!(Path);

impl<T> OptionalJson<T> {
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let optional = OptionalJson::<T>::from_request(request, payload);
        let request = request.clone();
        Box::pin(async move {
            match optional.await?.into_inner() {
                Some(body) => Ok(Json(body)),
                None => {
                    let missing = ApiError::BadRequest("a JSON body is required".to_owned());
                    keep_refusal(&request, Part::Body, missing);
                    Err(refusal(&request).await)
                }
            }
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        let payload = payload.take();
        Box::pin(async move {
            let read = async {
                let body = read_body(&request, payload).await?;
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(OptionalJson(None));
                }
                require_json(&request)?;
                typed_body(&request, &body)
                    .await
                    .map(|value| OptionalJson(Some(value)))
            };
            match read.await {
                Ok(body) => Ok(body),
                Err(error) => {
                    keep_refusal(&request, Part::Body, error);
                    Err(refusal(&request).await)
                }
            }
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let read = query(request.query_string()).map(Query);
        match read {
            Ok(query) => Box::pin(std::future::ready(Ok(query))),
            Err(error) => {
                keep_refusal(request, Part::Query, error);
                let request = request.clone();
                Box::pin(async move { Err(refusal(&request).await) })
            }
        }
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Path<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let problems: Vec<FieldError> = request
            .match_info()
            .iter()
            .filter_map(|(name, value)| {
                text_problem(value).map(|problem| FieldError::new(name, problem))
            })
            .collect();
        // The segments' types are actix's to read (a wrong one is a 404, as
        // for a path that names nothing).
        let read = if problems.is_empty() {
            web::Path::<T>::from_request(request, payload)
                .into_inner()
                .map(|typed| Path(typed.into_inner()))
                .map_err(|error| ApiError::NotFound(format!("{} ({error})", request.path())))
        } else {
            Err(ApiError::Validation(problems))
        };
        match read {
            Ok(path) => Box::pin(std::future::ready(Ok(path))),
            Err(error) => {
                keep_refusal(request, Part::Path, error);
                let request = request.clone();
                Box::pin(async move { Err(refusal(&request).await) })
            }
        }
    }
}

/// The parts of a request its input is read from, in the order they are
/// read, which is also the order their refusals take precedence in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Path,
    Query,
    Body,
}

/// The refusal a request's input gets: the first part's (see [`Part`]).
#[derive(Clone)]
struct InputRefusal(Part, ApiError);

/// Keeps `error` as the request's input refusal, unless an earlier part's
/// is kept. Path and query are read as their extractors are made, before any
/// of them runs, so a body's refusal can never come before theirs.
fn keep_refusal(request: &HttpRequest, part: Part, error: ApiError) {
    let mut extensions = request.extensions_mut();
    if extensions
        .get::<InputRefusal>()
        .is_none_or(|kept| part < kept.0)
    {
        extensions.insert(InputRefusal(part, error));
    }
}

/// The answer to a request whose input is refused: the caller's
/// authentication goes first (a 401, 403 or 429 before any 400), then the
/// refusal of the first part of the request (path, query, body), whichever
/// extractor finishes first.
async fn refusal(request: &HttpRequest) -> ApiError {
    let authentication = request.extensions().get::<Authentication>().cloned();
    if let Some(authentication) = authentication {
        if let Err(error) = authentication.await {
            return error;
        }
    }
    request
        .extensions()
        .get::<InputRefusal>()
        .map(|kept| kept.1.clone())
        .unwrap_or_else(|| ApiError::Internal("an input refusal was not kept".to_owned()))
}

/// What [`TextRules::REQUEST`] says of a query or path parameter.
fn text_problem(text: &str) -> Option<String> {
    TextRules::REQUEST.problem(text, Strictness::Text)
}

/// Reads the query string into `T`, naming the parameter of every problem.
pub fn query<T: DeserializeOwned>(query_string: &str) -> Result<T, ApiError> {
    let problems: Vec<FieldError> = form_urlencoded::parse(query_string.as_bytes())
        .flat_map(|(name, value)| {
            let name_problem = text_problem(&name).map(|problem| {
                FieldError::new(
                    name.escape_default().to_string(),
                    format!("(the name) {problem}"),
                )
            });
            let value_problem =
                text_problem(&value).map(|problem| FieldError::new(&*name, problem));
            name_problem.into_iter().chain(value_problem)
        })
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query_string.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        ApiError::Validation(vec![FieldError::new(
            if field == "." { String::new() } else { field },
            error.into_inner().to_string(),
        )])
    })
}

/// 415 unless the declared content type is JSON; a body without one is read as JSON.
fn require_json(request: &HttpRequest) -> Result<(), ApiError> {
    match media_type(request) {
        None => Ok(()),
        Some(media) if media == "application/json" || media.ends_with("+json") => Ok(()),
        Some(other) => Err(ApiError::UnsupportedMediaType {
            given: other,
            expected: "application/json",
        }),
    }
}

/// The request's media type (`Content-Type` without its parameters), lower-cased.
pub fn media_type(request: &HttpRequest) -> Option<String> {
    request.headers().get(CONTENT_TYPE).map(|value| {
        value
            .to_str()
            .unwrap_or("(not text)")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
}

/// Reads the whole body, decoded from its `Content-Encoding` (identity, gzip
/// or zstd), at most `http.max_body` bytes before and after decoding.
///
/// Decoded here rather than by actix, whose decoders expand each received
/// chunk whole before any limit applies: a few kilobytes of zstd could become
/// gigabytes in memory. Reading through `take` stops at the limit instead.
pub async fn read_body(request: &HttpRequest, mut payload: Payload) -> Result<Bytes, ApiError> {
    let limit = request
        .app_data::<web::Data<AppState>>()
        .map_or(usize::MAX, |state| state.config.http.max_body);
    let encoding = Encoding::of(request)?;
    let mut raw = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|error| ApiError::BadRequest(format!("cannot read the body: {error}")))?;
        if raw.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        raw.extend_from_slice(&chunk);
    }
    let raw = raw.freeze();
    match encoding {
        Encoding::Identity => Ok(raw),
        // Off the HTTP worker thread: decoding ten megabytes takes a while.
        encoded => web::block(move || encoded.decode(&raw, limit))
            .await
            .map_err(|_| ApiError::Internal("the body decoder stopped".to_owned()))?,
    }
}

/// The content codings a body may be sent in.
#[derive(Clone, Copy)]
enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    fn of(request: &HttpRequest) -> Result<Self, ApiError> {
        let Some(value) = request.headers().get(CONTENT_ENCODING) else {
            return Ok(Self::Identity);
        };
        let name = value
            .to_str()
            .unwrap_or("(not text)")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "" | "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            _ => Err(ApiError::UnsupportedEncoding(name)),
        }
    }

    fn decode(self, raw: &[u8], limit: usize) -> Result<Bytes, ApiError> {
        let reader: Box<dyn Read + '_> = match self {
            Self::Identity => return Ok(Bytes::copy_from_slice(raw)),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Self::Zstd => Box::new(
                zstd::stream::read::Decoder::new(raw)
                    .map_err(|error| ApiError::BadRequest(format!("invalid zstd body: {error}")))?,
            ),
        };
        let mut decoded = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut decoded)
            .map_err(|error| ApiError::BadRequest(format!("cannot decode the body: {error}")))?;
        if decoded.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Ok(decoded.into())
    }
}

/// Parses a JSON body, applies the module's checks and reads it into `T`.
async fn typed_body<T: DeserializeOwned>(
    request: &HttpRequest,
    body: &[u8],
) -> Result<T, ApiError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("invalid JSON body: {error}")))?;
    let problems = TextRules::REQUEST.json_problems(&value);
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    if let Some(object) = value.as_object_mut() {
        if let Some(named) = object.remove("organization_id") {
            let Value::String(named) = named else {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "organization_id",
                    "must be a string",
                )]));
            };
            let identity = authenticated(request).await?;
            ensure_own_organization(&identity, Some(&named))?;
        }
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let field = error.path().to_string();
        ApiError::Validation(vec![FieldError::new(
            if field == "." { String::new() } else { field },
            error.into_inner().to_string(),
        )])
    })
}
