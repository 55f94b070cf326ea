//! The actors, one per file. Each owns its state; they share only the
//! PostgreSQL pool, the Redis connection and read-only configuration.

pub mod alert;
pub mod cache;
pub mod checkpoint;
pub mod delivery;
pub mod enqueue;
pub mod error_log;
pub mod gdpr;
pub mod health;
pub mod heartbeat;
pub mod histogram;
pub mod ingest;
pub mod key_use;
pub mod maintenance;
pub mod partition;
pub mod queue;
pub mod report;
pub mod stream;
