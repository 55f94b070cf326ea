//! Delivery to organizations' own systems: destination configuration and its
//! sealed secrets, the kinds (webhook, email, S3, FTP), the circuit breaker, the
//! retry policy, and the network policy every connection is held to
//! (`network_policy` judges addresses, `egress` resolves and connects).
//! The moving parts are actors: `QueueActor` claims work, one `DeliveryActor`
//! per destination performs it, `HealthActor` keeps `destination_health`.

pub mod config;
pub mod crypto;
pub mod egress;
pub mod email;
pub mod ftp;
pub mod network_policy;
pub mod retry;
pub mod s3;
pub mod webhook;

/// The payload (JSON text, as stored) indented for people to read, as email,
/// S3 and FTP destinations write it; as stored if it does not parse.
pub fn indented(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| payload.to_owned())
}
