//! `/v1/events`: ingest (one event, a JSON array, or NDJSON) and queries.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::cursor;
use super::extract::{self, Path, Query};
use super::AppState;
use crate::cache::EVENTS;
use crate::db::events::{self, EventFilter, StoredEvent};
use crate::db::proofs;
use crate::db::{presets, tenant};
use crate::events::{self as audit_events, table, Receipt, Rules, CLASSIFICATIONS, STATUSES};
use crate::integrity::proof::EventProof;
use crate::messages::ingest::Ingest;
use crate::validation::{timestamp_field, Strictness, TextRules};

const RESOURCE: &str = "audit.events";

/// An event's strings: its fields read as text, its `details` as JSON, and
/// lengths left to the event's own rules (`events::prepare`).
const EVENT_TEXT: TextRules = TextRules {
    fields: Strictness::Text,
    nested: Strictness::Json,
    max_chars: None,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// One receipt per event, in input order.
    pub events: Vec<Receipt>,
}

/// Stores events. Answered only after the transaction holding them has
/// committed; all-or-nothing: one invalid event and nothing is stored.
#[utoipa::path(post, path = "/v1/events", operation_id = "ingest_events", tag = "events",
    request_body(content = Object, description = "One event object, a JSON array of them, or NDJSON (application/x-ndjson)"),
    responses((status = 201, body = IngestResponse), (status = 400, body = super::api_error::ErrorBody),
        (status = 401), (status = 403), (status = 413), (status = 503)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(events = tracing::field::Empty))]
pub async fn ingest(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let received = Instant::now();
    caller.require(RESOURCE, "create")?;
    let body = extract::read_body(&request, payload.into_inner()).await?;
    let items = parse_events(&request, &body)?;
    tracing::Span::current().record("events", items.len());
    let max_batch = state.live.borrow().ingest.max_batch;
    if items.is_empty() || items.len() > max_batch {
        return Err(ApiError::Validation(vec![FieldError::new(
            "",
            format!(
                "send 1 to {max_batch} events per request ({} given)",
                items.len()
            ),
        )]));
    }
    // Before anything reads a value (presets are looked up by name): strings
    // PostgreSQL would refuse, or that have no place in a trail, are named
    // here.
    let problems: Vec<FieldError> = items
        .iter()
        .enumerate()
        .flat_map(|(index, item)| {
            EVENT_TEXT
                .json_problems(item)
                .into_iter()
                .map(move |problem| FieldError {
                    index: Some(index),
                    ..problem
                })
        })
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    for item in &items {
        caller.ensure_own_organization(item.get("organization_id").and_then(Value::as_str))?;
    }

    let organization_id = caller.organization_id();
    let preset_names: Vec<String> = items
        .iter()
        .filter_map(|item| item.get("preset").and_then(Value::as_str))
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let presets = if preset_names.is_empty() {
        HashMap::new()
    } else {
        tenant::scoped(&state.pool, organization_id, async |tx| {
            Ok::<_, ApiError>(presets::load(tx, organization_id, &preset_names).await?)
        })
        .await?
    };
    let rules = Rules {
        organization_id,
        now: Utc::now(),
        max_clock_skew: state.live.borrow().ingest.max_clock_skew,
        commitment_key: state.keys.commitment_key(),
        presets: &presets,
    };
    let mut prepared = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match audit_events::prepare(index, item, &rules) {
            Ok(event) => prepared.push(event),
            Err(problems) => errors.extend(problems),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let receipts = state
        .ingest
        .send(Ingest {
            events: prepared,
            received,
        })
        .await??;
    // Before the acknowledgement: no query after it may see an answer without these events.
    state.cache.invalidate(organization_id, EVENTS).await;
    Ok(HttpResponse::Created().json(IngestResponse { events: receipts }))
}

/// One object, an array of objects, or NDJSON (one object per line).
fn parse_events(request: &HttpRequest, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    match extract::media_type(request).as_deref() {
        None | Some("application/json") => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => Ok(items),
            Ok(object @ Value::Object(_)) => Ok(vec![object]),
            Ok(_) => Err(ApiError::BadRequest(
                "the body must be an event object or an array of them".to_owned(),
            )),
            Err(error) => Err(ApiError::BadRequest(format!("invalid JSON body: {error}"))),
        },
        Some("application/x-ndjson") | Some("application/jsonl") => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::BadRequest("the body is not UTF-8".to_owned()))?;
            let mut items = Vec::new();
            let mut errors = Vec::new();
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                match serde_json::from_str::<Value>(line) {
                    Ok(item) => items.push(item),
                    Err(error) => errors.push(FieldError {
                        index: Some(items.len() + errors.len()),
                        field: String::new(),
                        message: format!("invalid JSON: {error}"),
                    }),
                }
            }
            if errors.is_empty() {
                Ok(items)
            } else {
                Err(ApiError::Validation(errors))
            }
        }
        Some(other) => Err(ApiError::UnsupportedMediaType {
            given: other.to_owned(),
            expected: "application/json or application/x-ndjson",
        }),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// RFC 3339; default: `to` minus `query.default_window` (31 days). Not after `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, exclusive; default: now plus the allowed clock skew.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Exact action, or a prefix ending in `*` (`auth.*`).
    pub action: Option<String>,
    pub principal_id: Option<String>,
    pub target_resource_type: Option<String>,
    pub target_resource_id: Option<String>,
    /// attempt, success or failure.
    #[param(pattern = "^(attempt|success|failure)$")]
    pub status: Option<String>,
    pub correlation_id: Option<String>,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI.
    #[param(pattern = "^(PUBLIC|INTERNAL|CONFIDENTIAL|PHI)$")]
    pub data_classification: Option<String>,
    /// Default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Checked against the key's organization (403 when it differs).
    pub organization_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<StoredEvent>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Lists events, newest first, with keyset pagination.
#[utoipa::path(get, path = "/v1/events", operation_id = "list_events", tag = "events", params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let query = query.into_inner();
    // Every parameter as sent: the answer is a function of them (and of the
    // organization's generation), not of the time `to` defaults to.
    let parameters = format!("{query:?}");
    let filter = event_filter(query, &state)?;
    let organization_id = caller.organization_id();
    let page = state
        .cache
        .get_or_load(
            organization_id,
            EVENTS,
            &parameters,
            state.cache.default_lifetime(),
            || async {
                let events = tenant::scoped(&state.pool, organization_id, async |tx| {
                    Ok::<_, ApiError>(events::list(tx, organization_id, &filter).await?)
                })
                .await?;
                let next_cursor = (events.len() as i64 == filter.limit)
                    .then(|| events.last().map(encode_cursor))
                    .flatten();
                Ok::<_, ApiError>(
                    serde_json::to_vec(&EventPage {
                        events,
                        next_cursor,
                    })
                    .expect("an event page serializes"),
                )
            },
        )
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(page.as_ref().clone()))
}

/// The filter of a listing's parameters, each checked (400 naming the field).
pub fn event_filter(query: EventQuery, state: &AppState) -> Result<EventFilter, ApiError> {
    let mut errors = Vec::new();
    let from = timestamp_field("from", query.from.as_deref(), &mut errors);
    let to = timestamp_field("to", query.to.as_deref(), &mut errors);
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 1000"));
    }
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            errors.push(FieldError::new(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    if let Some(classification) = &query.data_classification {
        if !CLASSIFICATIONS.contains(&classification.as_str()) {
            errors.push(FieldError::new(
                "data_classification",
                format!("must be one of {}", CLASSIFICATIONS.join(", ")),
            ));
        }
    }
    let after = match query.cursor.as_deref().map(cursor::decode) {
        None => None,
        Some(Some(after)) => Some(after),
        Some(None) => {
            errors.push(FieldError::new("cursor", "not a cursor this API returned"));
            None
        }
    };
    let skew = TimeDelta::from_std(state.live.borrow().ingest.max_clock_skew).unwrap_or_default();
    let window = TimeDelta::from_std(state.config.query.default_window).unwrap_or_default();
    let to = to.unwrap_or_else(|| Utc::now() + skew);
    let from = from.unwrap_or(to - window);
    if from > to {
        errors.push(FieldError::new("from", "must not be after `to`"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(EventFilter {
        from,
        to,
        action: query.action,
        principal_id: query.principal_id,
        target_resource_type: query.target_resource_type,
        target_resource_id: query.target_resource_id,
        status: query.status,
        correlation_id: query.correlation_id,
        data_classification: query.data_classification,
        after,
        limit,
    })
}

/// `GET /v1/events/export`: the filters of `GET /v1/events`, and the file's format.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` or `ndjson` (the default).
    #[param(pattern = "^(csv|ndjson)$")]
    pub format: Option<String>,
    /// RFC 3339; default: `to` minus `query.default_window` (31 days). Not after `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, exclusive; default: now plus the allowed clock skew.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Exact action, or a prefix ending in `*` (`auth.*`).
    pub action: Option<String>,
    pub principal_id: Option<String>,
    pub target_resource_type: Option<String>,
    pub target_resource_id: Option<String>,
    /// attempt, success or failure.
    #[param(pattern = "^(attempt|success|failure)$")]
    pub status: Option<String>,
    pub correlation_id: Option<String>,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI.
    #[param(pattern = "^(PUBLIC|INTERNAL|CONFIDENTIAL|PHI)$")]
    pub data_classification: Option<String>,
    /// Checked against the key's organization (403 when it differs).
    pub organization_id: Option<String>,
}

/// Events read per query of an export: it is streamed a page at a time, so
/// its size is bounded by neither memory nor a request's limit.
const EXPORT_PAGE: i64 = 1000;

/// How an export writes its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180, a header line, the columns of `events::table`.
    Csv,
    /// One event a line, as `GET /v1/events/{id}` shows it.
    Ndjson,
}

impl ExportFormat {
    /// From `format=`: `csv`, or `ndjson` (also when absent).
    pub fn parse(format: Option<&str>) -> Option<Self> {
        match format {
            None | Some("ndjson") => Some(Self::Ndjson),
            Some("csv") => Some(Self::Csv),
            Some(_) => None,
        }
    }
}

/// Every event matching the filters of `GET /v1/events`, newest first, as
/// one file (CSV or NDJSON), streamed a page at a time: any size. Pages are
/// read one after another, so an event committed during the export may or
/// may not be in it.
#[utoipa::path(get, path = "/v1/events/export", operation_id = "export_events", tag = "events",
    params(ExportQuery),
    responses((status = 200, description = "The events, newest first",
            content(("text/csv"), ("application/x-ndjson"))),
        (status = 400), (status = 401), (status = 403)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "export")?;
    let query = query.into_inner();
    let Some(format) = ExportFormat::parse(query.format.as_deref()) else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "format",
            "must be csv or ndjson",
        )]));
    };
    let filter = event_filter(
        EventQuery {
            from: query.from,
            to: query.to,
            action: query.action,
            principal_id: query.principal_id,
            target_resource_type: query.target_resource_type,
            target_resource_id: query.target_resource_id,
            status: query.status,
            correlation_id: query.correlation_id,
            data_classification: query.data_classification,
            limit: None,
            cursor: None,
            organization_id: query.organization_id,
        },
        &state,
    )?;
    Ok(export_response(
        &state,
        caller.organization_id(),
        filter,
        format,
    ))
}

/// The response that streams every event of `filter` (its limit aside) as
/// `format`: the API's export, and the console's.
pub fn export_response(
    state: &AppState,
    organization_id: &str,
    mut filter: EventFilter,
    format: ExportFormat,
) -> HttpResponse {
    filter.limit = EXPORT_PAGE;
    let export = Export {
        pool: state.pool.clone(),
        organization_id: organization_id.to_owned(),
        filter,
        format,
        csv: table::csv_builder(),
        header_written: false,
        done: false,
    };
    let chunks = futures_util::stream::unfold(export, |mut export| async move {
        let chunk = export.next_chunk().await?;
        Some((chunk, export))
    });
    let (content_type, extension) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
        ExportFormat::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"events.{extension}\""),
        ))
        .streaming(chunks)
}

/// An export under way: where it has read to.
struct Export {
    pool: crate::db::PgPool,
    organization_id: String,
    /// `after` moves on with each page.
    filter: EventFilter,
    format: ExportFormat,
    csv: csv::WriterBuilder,
    header_written: bool,
    done: bool,
}

impl Export {
    /// The file's next piece: the CSV header, then a page of events; `None`
    /// at the end. A page that cannot be read ends the body with an error,
    /// which the client sees as a response cut short, never as a whole file.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, actix_web::Error>> {
        if self.done {
            return None;
        }
        if self.format == ExportFormat::Csv && !self.header_written {
            self.header_written = true;
            let header = table::COLUMNS.map(|column| Some(column.to_owned()));
            return Some(Ok(Bytes::from(table::csv_record(&self.csv, header))));
        }
        let (organization_id, filter) = (&self.organization_id, &self.filter);
        let page = tenant::scoped(&self.pool, organization_id, async |tx| {
            events::list(tx, organization_id, filter).await
        })
        .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "An events export stopped half-way");
                self.done = true;
                return Some(Err(actix_web::error::ErrorServiceUnavailable(
                    "the export could not be read to its end",
                )));
            }
        };
        let last = page.last()?;
        self.done = (page.len() as i64) < self.filter.limit;
        let time = DateTime::parse_from_rfc3339(&last.timestamp)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        self.filter.after = Some((time, last.id));
        let mut text = Vec::with_capacity(page.len() * 512);
        for event in &page {
            match self.format {
                ExportFormat::Csv => {
                    text.extend(table::csv_record(&self.csv, table::values(event)));
                }
                ExportFormat::Ndjson => {
                    serde_json::to_writer(&mut text, event).expect("an event serializes");
                    text.push(b'\n');
                }
            }
        }
        Some(Ok(Bytes::from(text)))
    }
}

/// The cursor after `event`, the last of a page.
pub fn encode_cursor(event: &StoredEvent) -> String {
    let time = DateTime::parse_from_rfc3339(&event.timestamp)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    cursor::encode(time, event.id)
}

/// One event of the caller's organization.
#[utoipa::path(get, path = "/v1/events/{id}", operation_id = "get_event", tag = "events",
    params(("id" = i64, Path, description = "Event id")),
    responses((status = 200, body = StoredEvent), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(event = %id))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let organization_id = caller.organization_id();
    let event = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(events::get(tx, organization_id, *id).await?)
    })
    .await?;
    event
        .map(|event| HttpResponse::Ok().json(event))
        .ok_or_else(|| ApiError::NotFound(format!("event {id}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// `latest` (the default) or the `seq` of one of the organization's
    /// checkpoints: the tree the proof leads to.
    #[param(pattern = "^(latest|[1-9][0-9]{0,17})$")]
    pub checkpoint: Option<String>,
}

/// The proof that an event is in a signed checkpoint, checkable without
/// trusting the worker (`docs/integrity.md` section 11): the event and its
/// hash, its audit path to its chain link's Merkle root, the link's fields,
/// the link's audit path in the link tree, and the checkpoint whose signed
/// `tree_root` that path reaches. 404 for an event the caller's organization
/// does not have live (archived, or removed by retention or erasure: the
/// event itself is then not at hand to prove) and for an unknown checkpoint;
/// 409 when the event is newer than the checkpoint, or the checkpoint was
/// signed before format version 2 (no tree).
#[utoipa::path(get, path = "/v1/events/{id}/proof", operation_id = "get_event_proof", tag = "events",
    params(("id" = i64, Path, description = "Event id"), ProofQuery),
    responses((status = 200, body = EventProof), (status = 400, body = super::api_error::ErrorBody),
        (status = 401), (status = 403), (status = 404), (status = 409)),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(event = %id))]
pub async fn proof(
    state: web::Data<AppState>,
    caller: Caller,
    id: Path<i64>,
    query: Query<ProofQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let at = match query.checkpoint.as_deref() {
        None | Some("latest") => None,
        Some(seq) => match seq.parse::<i64>() {
            Ok(seq) if seq > 0 => Some(seq),
            _ => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "checkpoint",
                    "must be `latest` or the seq (a positive integer) of a checkpoint",
                )]))
            }
        },
    };
    let organization_id = caller.organization_id();
    let proof = tenant::scoped(&state.pool, organization_id, async |tx| {
        Ok::<_, ApiError>(proofs::event_proof(tx, &state.archives, organization_id, *id, at).await?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(proof))
}
