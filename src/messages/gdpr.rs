//! Messages of the [`GdprActor`](crate::actors::gdpr::GdprActor): one per
//! kind of data subject request.

use actix::Message;

use crate::db::gdpr::Operation;
use crate::gdpr::operations::{
    Erased, ExportDelivered, ExportRequest, ExportStream, Pseudonymized, Reversed,
};
use crate::gdpr::pseudonym::Strategy;
use crate::gdpr::GdprError;

/// Replace the subject's identifier by its pseudonym in every event.
#[derive(Debug, Message)]
#[rtype(result = "Result<Pseudonymized, GdprError>")]
pub struct Pseudonymize {
    pub organization_id: String,
    pub principal_id: String,
    pub strategy: Strategy,
    pub requested_by: String,
}

/// Delete the subject's events, keeping (pseudonymized) what must be kept.
#[derive(Debug, Message)]
#[rtype(result = "Result<Erased, GdprError>")]
pub struct Erase {
    pub organization_id: String,
    pub principal_id: String,
    pub preserve_compliance: bool,
    pub requested_by: String,
}

/// The original identifier behind a pseudonym.
#[derive(Debug, Message)]
#[rtype(result = "Result<Reversed, GdprError>")]
pub struct Reverse {
    pub organization_id: String,
    pub pseudonym_id: String,
    pub requested_by: String,
}

/// Record a request the worker does not act on by itself.
#[derive(Debug, Message)]
#[rtype(result = "Result<Operation, GdprError>")]
pub struct RecordRequest {
    pub organization_id: String,
    pub kind: String,
    pub principal_id: String,
    pub description: Option<String>,
    pub requested_by: String,
}

/// Export the subject's events: streamed back, or queued for a destination.
#[derive(Message)]
#[rtype(result = "Result<Exported, GdprError>")]
pub struct Export {
    pub request: ExportRequest,
    pub destination_id: Option<i64>,
}

pub enum Exported {
    Stream(ExportStream),
    Delivered(ExportDelivered),
}
