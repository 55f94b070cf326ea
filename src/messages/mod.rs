//! Typed messages between actors, one module per family. Every request message
//! has a typed response; internal ticks answer `()`.

pub mod alert;
pub mod checkpoint;
pub mod delivery;
pub mod errors;
pub mod gdpr;
pub mod heartbeat;
pub mod ingest;
pub mod maintenance;
pub mod partition;
pub mod report;
pub mod supervisor;
