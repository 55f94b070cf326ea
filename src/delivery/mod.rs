//! Delivery to organizations' own systems: destination configuration and its
//! sealed secrets, the kinds (webhook, email, S3, FTP), the circuit breaker and the
//! retry policy.
//! The moving parts are actors: `QueueActor` claims work, one `DeliveryActor`
//! per destination performs it, `HealthActor` keeps `destination_health`.

pub mod breaker;
pub mod config;
pub mod crypto;
pub mod email;
pub mod ftp;
pub mod retry;
pub mod s3;
pub mod webhook;
