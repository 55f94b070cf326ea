//! `GET /v1/events/stream`: the organization's events as they commit, as
//! server-sent events, for people and tools watching live. Each event is one
//! SSE message whose `id:` is the event's id; a client that reconnects with
//! `Last-Event-ID` continues right after that event, in chain order. A
//! comment line goes out when nothing else has for `streams.tail_heartbeat`,
//! so proxies keep the connection open and a client that left is noticed.
//!
//! Live only for a client that asks for it (`Accept: text/event-stream`, as
//! every `EventSource` sends): any other gets the events committed so far
//! after its place, in the same form, and the response ends, so that a
//! generic HTTP client never waits on an endless body.
//!
//! Bounded: at most `streams.tail_max_per_key` connections per API key (429
//! beyond), and at most `streams.tail_buffer_events` events waiting for a
//! client; a client that falls that far behind is disconnected (it resumes
//! with `Last-Event-ID`), never buffered without limit.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{CacheControl, CacheDirective, ContentEncoding, ACCEPT};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use dashmap::DashMap;
use serde::Deserialize;
use tokio::sync::mpsc::{self, error::TrySendError};
use utoipa::IntoParams;

use super::api_error::{ApiError, FieldError};
use super::auth::Caller;
use super::extract::Query;
use super::streams::filter_problems;
use super::AppState;
use crate::db::streams::{self, ChainPosition, Pending, StreamFilter, Tail};
use crate::db::{tenant, PgPool};

const RESOURCE: &str = "audit.events";
/// Events read per poll at most.
const READ_LIMIT: i64 = 500;
const EVENT_STREAM: &str = "text/event-stream";
/// How long a browser waits before reconnecting.
const RETRY_MS: u32 = 2000;

/// The open live tails per API key.
#[derive(Default)]
pub struct Tails {
    open: DashMap<String, usize>,
}

impl Tails {
    /// Counts a new tail of `key_id` unless it has `max` open already.
    fn admit(self: &Arc<Self>, key_id: &str, max: usize) -> Option<OpenTail> {
        let mut open = self.open.entry(key_id.to_owned()).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(OpenTail {
            tails: self.clone(),
            key_id: key_id.to_owned(),
        })
    }
}

/// One open tail; dropping it (the client left or was dropped) frees its place.
struct OpenTail {
    tails: Arc<Tails>,
    key_id: String,
}

impl Drop for OpenTail {
    fn drop(&mut self) {
        self.tails.open.remove_if_mut(&self.key_id, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TailQuery {
    /// Exact action, or a prefix ending in `*` (`auth.*`).
    #[param(max_length = 255, pattern = r"\S")]
    pub action: Option<String>,
    /// attempt, success or failure.
    #[param(pattern = "^(attempt|success|failure)$")]
    pub status: Option<String>,
    /// PUBLIC, INTERNAL, CONFIDENTIAL or PHI.
    #[param(pattern = "^(PUBLIC|INTERNAL|CONFIDENTIAL|PHI)$")]
    pub data_classification: Option<String>,
    #[param(max_length = 255, pattern = r"\S")]
    pub principal_id: Option<String>,
    #[param(max_length = 255, pattern = r"\S")]
    pub target_resource_type: Option<String>,
    /// Checked against the key's organization (403 when it differs).
    pub organization_id: Option<String>,
}

/// The organization's events as they commit (`text/event-stream`): live with
/// `Accept: text/event-stream`; otherwise those committed so far, then the end.
#[utoipa::path(get, path = "/v1/events/stream", operation_id = "stream_events", tag = "events", params(TailQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Continue after this event (the `id:` of the last message received)")),
    responses((status = 200, description = "Server-sent events: each committed event as `data:`, its id as `id:`",
            content_type = "text/event-stream", body = String),
        (status = 400), (status = 401), (status = 403),
        (status = 429, description = "This API key has `streams.tail_max_per_key` live tails open")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all)]
pub async fn stream(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
    query: Query<TailQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(RESOURCE, "read")?;
    let query = query.into_inner();
    let filter = StreamFilter {
        action: query.action,
        status: query.status,
        data_classification: query.data_classification,
        principal_id: query.principal_id,
        target_resource_type: query.target_resource_type,
    };
    let mut errors = filter_problems(&filter, "");
    let last_event_id = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => match value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
        {
            Some(id) => Some(id),
            None => {
                errors.push(FieldError::new("Last-Event-ID", "an event id (an integer)"));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let organization_id = caller.organization_id().to_owned();
    let start = tenant::scoped(&state.pool, &organization_id, async |tx| {
        Ok::<_, ApiError>(match last_event_id {
            Some(id) => streams::position_of(tx, &organization_id, id)
                .await?
                .ok_or_else(|| {
                    ApiError::Validation(vec![FieldError::new(
                        "Last-Event-ID",
                        format!("no event {id} in this organization"),
                    )])
                })?,
            None => streams::chain_end(tx, &organization_id).await?,
        })
    })
    .await?;
    let settings = &state.config.streams;
    let Some(open) = state
        .tails
        .admit(&caller.0.key_id, settings.tail_max_per_key)
    else {
        return Err(ApiError::RateLimited {
            retry_after: settings.tail_heartbeat,
        });
    };
    let live = request
        .headers()
        .get_all(ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains(EVENT_STREAM));
    let (sender, receiver) = mpsc::channel::<Bytes>(settings.tail_buffer_events);
    let _ = sender.try_send(Bytes::from(format!("retry: {RETRY_MS}\n\n")));
    let follow = Follow {
        pool: state.pool.clone(),
        organization_id,
        filter,
        after: start,
        poll: settings.poll_interval,
        heartbeat: settings.tail_heartbeat,
        live,
    };
    actix_web::rt::spawn(follow.run(sender, open));
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let next = receiver.recv().await?;
        Some((Ok::<_, Infallible>(next), receiver))
    });
    Ok(HttpResponse::Ok()
        .content_type(EVENT_STREAM)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header(("x-accel-buffering", "no"))
        // Compressed, events would wait in the encoder's buffer.
        .insert_header(ContentEncoding::Identity)
        .streaming(body))
}

/// Reads a tail's events as they commit and hands them to its client.
struct Follow {
    pool: PgPool,
    organization_id: String,
    filter: StreamFilter,
    after: ChainPosition,
    poll: Duration,
    heartbeat: Duration,
    /// Follows new events; else ends once it has caught up.
    live: bool,
}

impl Follow {
    /// Until the client leaves or falls `tail_buffer_events` behind.
    async fn run(mut self, sender: mpsc::Sender<Bytes>, _open: OpenTail) {
        let mut last_sent = Instant::now();
        while !sender.is_closed() {
            let read = tenant::scoped(&self.pool, &self.organization_id, async |tx| {
                let tail = Tail {
                    organization_id: &self.organization_id,
                    filter: &self.filter,
                    starts_at: None,
                    after: self.after,
                };
                streams::pending(tx, &tail, READ_LIMIT).await
            })
            .await;
            let pending = match read {
                Ok(pending) => pending,
                Err(error) => {
                    tracing::debug!(%error, "A live tail could not read; trying again");
                    Pending::nothing()
                }
            };
            let more = !pending.at_end || pending.events.len() as i64 == READ_LIMIT;
            if pending.events.is_empty() {
                if let Some(to) = pending.looked_to {
                    self.after = to;
                }
            }
            for event in pending.events {
                let data = serde_json::to_string(&event.event).expect("an event serializes");
                let message = format!("id: {}\ndata: {data}\n\n", event.event.id);
                match sender.try_send(Bytes::from(message)) {
                    Ok(()) => self.after = event.place.position,
                    Err(TrySendError::Full(_)) => {
                        tracing::info!(
                            organization_id = self.organization_id,
                            "A live tail's client fell too far behind: disconnected"
                        );
                        return;
                    }
                    Err(TrySendError::Closed(_)) => return,
                }
                last_sent = Instant::now();
            }
            if last_sent.elapsed() >= self.heartbeat {
                if sender
                    .try_send(Bytes::from_static(b": heartbeat\n\n"))
                    .is_err()
                {
                    return;
                }
                last_sent = Instant::now();
            }
            if !more {
                if !self.live {
                    return;
                }
                tokio::time::sleep(self.poll).await;
            }
        }
    }
}
