//! Typed messages between actors, one module per family. Every request message
//! has a typed response. An actor's own ticks are not here: each is private
//! to its actor.

pub mod alert;
pub mod delivery;
pub mod gdpr;
pub mod ingest;
pub mod report;
pub mod supervisor;
