//! Event streams: what a batch holds and how its records are written. The
//! StreamActor (`src/actors/stream.rs`) cuts the batches; the delivery
//! machinery sends them.
//!
//! - [`Format::Native`]: the event as `GET /v1/events/{id}` shows it, hash included.
//! - [`Format::Ocsf`]: an OCSF 1.x event ([`ocsf`]).
//! - [`Format::SplunkHec`]: Splunk's HTTP Event Collector envelope around the
//!   native event, so a webhook pointed at a HEC endpoint works as is.

pub mod ocsf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::events::StoredEvent;
use crate::db::streams::{self, BatchRange};
use crate::db::{tenant, DbError, PgPool};
use crate::deliveries::body::{self, EventFacts, Record};

/// The Splunk source type of the events a stream sends.
const SPLUNK_SOURCETYPE: &str = "audit-worker:event";

/// How a subscription writes its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Native,
    Ocsf,
    SplunkHec,
}

impl Format {
    /// From its stored name (`native`, `ocsf`, `splunk_hec`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "native" => Some(Self::Native),
            "ocsf" => Some(Self::Ocsf),
            "splunk_hec" => Some(Self::SplunkHec),
            _ => None,
        }
    }

    /// One record per event, in the events' order.
    pub fn records(self, events: &[StoredEvent], host: &str) -> Vec<Record> {
        events
            .iter()
            .map(|event| self.record(event, host))
            .collect()
    }

    fn record(self, event: &StoredEvent, host: &str) -> Record {
        let json = match self {
            Self::Native => serde_json::to_string(event),
            Self::Ocsf => serde_json::to_string(&ocsf::event(event)),
            Self::SplunkHec => serde_json::to_string(&HecEvent {
                time: epoch_seconds(&event.timestamp),
                host,
                source: format!("audit-worker:{}", event.organization_id),
                sourcetype: SPLUNK_SOURCETYPE,
                event,
            }),
        };
        Record {
            json: json.expect("a record serializes"),
            event: EventFacts::of_event(event),
        }
    }
}

/// Splunk HEC's envelope around the native event.
#[derive(Serialize)]
struct HecEvent<'a> {
    time: f64,
    host: &'a str,
    source: String,
    sourcetype: &'static str,
    event: &'a StoredEvent,
}

/// Why a stream batch's records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Database(#[from] DbError),
    /// The stored range cannot be sent, now or ever.
    #[error("a stream batch cannot be sent: {0}")]
    Unsendable(String),
}

/// The records of a stream batch, whose delivery stores its `range` (JSON
/// text): the organization's events in it, read now (so pseudonymization or
/// erasure done since it was cut applies), written as its format says.
pub async fn batch_records(
    pool: &PgPool,
    organization_id: &str,
    range: &str,
    host: &str,
) -> Result<Vec<Record>, BatchError> {
    let range: BatchRange = serde_json::from_str(range)
        .map_err(|error| BatchError::Unsendable(format!("its range does not parse: {error}")))?;
    let format = Format::parse(&range.format).ok_or_else(|| {
        BatchError::Unsendable(format!("the format `{}` is unknown", range.format))
    })?;
    let events = tenant::scoped(pool, organization_id, async |transaction| {
        streams::batch_events(transaction, organization_id, &range).await
    })
    .await?;
    let host = host.to_owned();
    Ok(body::off_thread(move || format.records(&events, &host)).await)
}

/// An event's RFC 3339 timestamp as HEC's `time`: seconds since the epoch,
/// with the milliseconds as decimals.
fn epoch_seconds(timestamp: &str) -> f64 {
    DateTime::parse_from_rfc3339(timestamp)
        .map(|time| time.with_timezone(&Utc).timestamp_millis() as f64 / 1000.0)
        .unwrap_or_default()
}

/// Where an S3 or FTP destination stores a batch: under the organization
/// and the subscription, by day, named after its first and last event.
pub fn object_key(
    organization_id: &str,
    subscription_id: i64,
    at: DateTime<Utc>,
    first_event_id: i64,
    last_event_id: i64,
) -> String {
    format!(
        "{organization_id}/{subscription_id}/{}/{first_event_id}-{last_event_id}.ndjson.gz",
        at.format("%Y/%m/%d")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_stored_by_organization_subscription_and_day() {
        let at = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            object_key("org-a", 7, at, 10, 42),
            "org-a/7/2026/03/04/10-42.ndjson.gz"
        );
    }

    #[test]
    fn hec_time_is_epoch_seconds_with_milliseconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:01.250Z"), 1.25);
    }
}
