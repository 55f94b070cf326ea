//! Delivery to organizations' own systems: what a delivery *is*, apart from
//! when it runs.
//!
//! - One file per kind, holding its config, validation and send: `webhook`
//!   (with its signing), `email`, `s3`, `ftp`, `syslog`.
//! - `destination`: what every destination has, whatever its kind: the config
//!   enum dispatching to the kinds, sealed secrets, the delivery settings.
//! - `sender`: one attempt's send to a destination of any kind, and its outcome;
//!   `body`: what the stored payload becomes on the wire (a document, or a
//!   stream's batch as NDJSON).
//! - `retry`: what an outcome makes of the delivery (delivered, retried after
//!   a wait, dead-lettered).
//! - `crypto`: the sealed secrets' box; `network_policy` judges addresses,
//!   `egress` resolves and connects under it. The circuit breaker each
//!   DeliveryActor holds is the crate's one [`Breaker`](crate::breaker::Breaker).
//!
//! The moving parts are actors (`src/actors/`): `QueueActor` claims work, one
//! `DeliveryActor` per destination performs it, `HealthActor` keeps
//! `destination_health`.

pub mod body;
pub mod crypto;
pub mod destination;
pub mod egress;
pub mod email;
pub mod ftp;
pub mod network_policy;
pub mod retry;
pub mod s3;
pub mod sender;
pub mod syslog;
pub mod webhook;

/// The payload (JSON text, as stored) indented for people to read, as email,
/// S3 and FTP destinations write it; as stored if it does not parse.
pub fn indented(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| payload.to_owned())
}

/// This machine's name, as syslog's HOSTNAME and Splunk HEC's `host` name
/// it: printable ASCII, at most 255 characters; `-` (RFC 5424's nil value)
/// when it has no such name.
pub fn machine_name() -> String {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)))
        .map_or_else(|| "-".to_owned(), |name| name.chars().take(255).collect())
}
