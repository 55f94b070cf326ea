//! An event as a row of a table (CSV, XML): its columns in file order, each
//! value as text, `None` where the column is NULL. Shared by the events
//! export (`GET /v1/events/export`) and GDPR exports, so both files read alike.

use crate::db::events::StoredEvent;

/// The columns of an event, in file order.
pub const COLUMNS: [&str; 19] = [
    "id",
    "timestamp",
    "organization_id",
    "principal_id",
    "action",
    "status",
    "target_resource_type",
    "target_resource_id",
    "outcome_description",
    "correlation_id",
    "data_classification",
    "retention_policy",
    "ttl",
    "event_version",
    "details",
    "idempotency_key",
    "hash",
    "hash_algorithm",
    "processing_latency",
];

/// An event's values by [`COLUMNS`]; `details` as its JSON text.
pub fn values(event: &StoredEvent) -> [Option<String>; 19] {
    [
        Some(event.id.to_string()),
        Some(event.timestamp.clone()),
        Some(event.organization_id.clone()),
        Some(event.principal_id.clone()),
        Some(event.action.clone()),
        Some(event.status.clone()),
        event.target_resource_type.clone(),
        event.target_resource_id.clone(),
        event.outcome_description.clone(),
        event.correlation_id.clone(),
        Some(event.data_classification.clone()),
        Some(event.retention_policy.clone()),
        event.ttl.clone(),
        Some(event.event_version.clone()),
        event.details.as_ref().map(|details| details.to_string()),
        event.idempotency_key.clone(),
        Some(event.hash.clone()),
        Some(event.hash_algorithm.clone()),
        event.processing_latency.map(|latency| latency.to_string()),
    ]
}

/// A CSV writer as every export writes: RFC 4180, CRLF line ends.
pub fn csv_builder() -> csv::WriterBuilder {
    let mut builder = csv::WriterBuilder::new();
    builder.terminator(csv::Terminator::CRLF);
    builder
}

/// One CSV record (a line, CRLF-terminated); NULL is the empty field.
pub fn csv_record(
    builder: &csv::WriterBuilder,
    fields: impl IntoIterator<Item = Option<String>>,
) -> Vec<u8> {
    let fields: Vec<String> = fields.into_iter().map(Option::unwrap_or_default).collect();
    let mut writer = builder.from_writer(Vec::new());
    writer
        .write_record(&fields)
        .expect("writing CSV to memory cannot fail");
    writer
        .into_inner()
        .expect("flushing CSV to memory cannot fail")
}
