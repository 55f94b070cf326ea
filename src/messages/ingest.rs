//! Messages of the [`IngestActor`](crate::actors::ingest::IngestActor).

use std::time::{Duration, Instant};

use actix::Message;

use crate::events::{NewEvent, Receipt};

/// Store these events (one request's, validated and hashed); answered only once
/// the transaction holding them has committed.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Receipt>, IngestError>")]
pub struct Ingest {
    pub events: Vec<NewEvent>,
    /// When the request arrived: `processing_latency` is measured from here.
    pub received: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// PostgreSQL is down (or the breaker that guards it is open): nothing was stored.
    #[error("the database is unavailable; retry in {} s", .retry_after.as_secs().max(1))]
    Unavailable { retry_after: Duration },
    /// The write failed for another reason (logged with its cause): nothing was stored.
    #[error("the events could not be stored")]
    Failed,
}
