//! What a delivery's stored payload becomes on the wire. Most deliveries are
//! one JSON document; a stream's batch is records, sent as NDJSON, one record
//! a line, so that SIEMs and query engines read it line by line (gzipped
//! where it lands as a file).

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::Value;

use crate::db::events::StoredEvent;

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// How a delivery's payload is stored (`delivery_queue.body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyShape {
    /// One JSON document.
    #[default]
    Document,
    /// A JSON array of records (a stream's batch queued before V24).
    Ndjson,
    /// A stream's batch named by its range of the chain
    /// ([`BatchRange`](crate::db::streams::BatchRange)): its records are
    /// read and written as it is sent, not stored once per subscription.
    Stream,
}

impl BodyShape {
    /// From its column; an unknown value is a document.
    pub fn from_column(value: &str) -> Self {
        match value {
            "ndjson" => Self::Ndjson,
            "stream" => Self::Stream,
            _ => Self::Document,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Ndjson => "ndjson",
            Self::Stream => "stream",
        }
    }
}

/// What an attempt sends, read from the stored payload.
#[derive(Debug)]
pub enum Payload {
    /// A document's JSON text as stored: a webhook posts it unchanged, so it
    /// is neither parsed nor written again on the way.
    Document(String),
    /// A batch's records, in order.
    Records(Vec<Record>),
}

impl Payload {
    /// A stored array of records.
    pub fn records_of(array: &str) -> Result<Self, String> {
        let records: Vec<Value> = serde_json::from_str(array)
            .map_err(|error| format!("a batch's payload is not a JSON array: {error}"))?;
        Ok(Self::Records(
            records.iter().map(Record::of_value).collect(),
        ))
    }
}

/// One record of a batch, written out once as it is rendered.
#[derive(Debug)]
pub struct Record {
    /// Its JSON text, compact: a line of NDJSON.
    pub json: String,
    /// The event it carries, as a syslog header names it.
    pub event: EventFacts,
}

impl Record {
    /// A record as JSON: PostgreSQL's jsonb text has blanks after `:` and
    /// `,`, so it is written again, compact, as the API shows it.
    pub fn of_value(record: &Value) -> Self {
        Self {
            json: record.to_string(),
            event: EventFacts::of_record(record),
        }
    }
}

/// What a syslog message's header says of an event: its severity (from the
/// status), MSGID (the action), and structured data (id, hash, organization).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFacts {
    pub id: Option<i64>,
    pub timestamp: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub hash: Option<String>,
    pub organization_id: Option<String>,
}

impl EventFacts {
    pub fn of_event(event: &StoredEvent) -> Self {
        Self {
            id: Some(event.id),
            timestamp: Some(event.timestamp.clone()),
            action: Some(event.action.clone()),
            status: Some(event.status.clone()),
            hash: Some(event.hash.clone()),
            organization_id: Some(event.organization_id.clone()),
        }
    }

    /// Of the event a record's JSON carries: the record itself (native), or
    /// the native event an OCSF record (`unmapped`) or a Splunk HEC one
    /// (`event`) wraps.
    pub fn of_record(record: &Value) -> Self {
        let event = record
            .get("unmapped")
            .or_else(|| record.get("event"))
            .filter(|inner| inner.is_object())
            .unwrap_or(record);
        let text = |field: &str| event.get(field).and_then(Value::as_str).map(str::to_owned);
        Self {
            id: event.get("id").and_then(Value::as_i64),
            timestamp: text("timestamp"),
            action: text("action"),
            status: text("status"),
            hash: text("hash"),
            organization_id: text("organization_id"),
        }
    }
}

/// A payload ready to send.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    /// `gzip` for a compressed file.
    pub content_encoding: Option<&'static str>,
}

/// Runs `work` on tokio's blocking pool: writing and compressing a batch's
/// records takes tens of milliseconds of CPU, which must not hold up the
/// thread the DeliveryActors share (nor run on it one batch after another).
pub async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|failed| std::panic::resume_unwind(failed.into_panic()))
}

/// [`for_request`], records off the DeliveryActors' thread.
pub async fn request(payload: Payload) -> Rendered {
    match payload {
        Payload::Records(_) => off_thread(move || for_request(payload)).await,
        Payload::Document(_) => for_request(payload),
    }
}

/// [`for_file`], records off the DeliveryActors' thread.
pub async fn file(payload: Payload) -> Result<Rendered, String> {
    match payload {
        Payload::Records(_) => off_thread(move || for_file(&payload)).await,
        Payload::Document(_) => for_file(&payload),
    }
}

/// For a request (a webhook): a document as stored, records as NDJSON.
fn for_request(payload: Payload) -> Rendered {
    match payload {
        Payload::Document(text) => Rendered {
            bytes: text.into_bytes(),
            content_type: JSON,
            content_encoding: None,
        },
        Payload::Records(records) => Rendered {
            bytes: lines(&records),
            content_type: NDJSON,
            content_encoding: None,
        },
    }
}

/// For a file (S3, FTP): a document indented for people to read, records as
/// gzipped NDJSON (compressed fast: a batch is written once, and read by
/// engines that care more for its arrival than for its last few percent).
fn for_file(payload: &Payload) -> Result<Rendered, String> {
    Ok(match payload {
        Payload::Document(text) => Rendered {
            bytes: super::indented(text).into_bytes(),
            content_type: JSON,
            content_encoding: None,
        },
        Payload::Records(records) => {
            let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
            let written = gzip.write_all(&lines(records)).and_then(|()| gzip.finish());
            Rendered {
                bytes: written.map_err(|error| format!("cannot compress the batch: {error}"))?,
                content_type: NDJSON,
                content_encoding: Some("gzip"),
            }
        }
    })
}

/// Each record on its own line.
fn lines(records: &[Record]) -> Vec<u8> {
    let length = records.iter().map(|record| record.json.len() + 1).sum();
    let mut out = Vec::with_capacity(length);
    for record in records {
        out.extend_from_slice(record.json.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    #[test]
    fn records_are_one_compact_record_a_line_and_gzipped_as_a_file() {
        let stored = r#"[{"id": 1, "action": "a"}, {"id": 2, "details": {"k": [1, 2]}}]"#;
        let expected = "{\"action\":\"a\",\"id\":1}\n{\"details\":{\"k\":[1,2]},\"id\":2}\n";
        let request = for_request(Payload::records_of(stored).unwrap());
        assert_eq!(String::from_utf8(request.bytes).unwrap(), expected);
        assert_eq!(request.content_type, NDJSON);

        let file = for_file(&Payload::records_of(stored).unwrap()).unwrap();
        assert_eq!(file.content_encoding, Some("gzip"));
        let mut unzipped = String::new();
        GzDecoder::new(file.bytes.as_slice())
            .read_to_string(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, expected);
    }

    #[test]
    fn a_document_is_sent_as_stored_and_indented_as_a_file() {
        let stored = r#"{"a": 1}"#;
        let request = for_request(Payload::Document(stored.to_owned()));
        assert_eq!(request.bytes, stored.as_bytes());
        let file = for_file(&Payload::Document(stored.to_owned())).unwrap();
        assert_eq!(String::from_utf8(file.bytes).unwrap(), "{\n  \"a\": 1\n}");
        assert!(Payload::records_of(stored).is_err());
    }
}
