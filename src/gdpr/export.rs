//! The export file of a subject's events, written a chunk at a time so that
//! an export of any size runs in constant memory: JSON, CSV (RFC 4180, with a
//! header, `details` as JSON text) or XML (escaped; a value holding a
//! character XML 1.0 cannot carry is written as base64 and says so). The
//! writer hashes every byte it hands out: the manifest's SHA-256 is that of
//! the whole file. Each event says whether it was read from an archive
//! (`archived`): a subject's archived events come first, then the live ones.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::events::StoredEvent;
use crate::events::table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
    Xml,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xml => "application/xml",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Xml => "xml",
        }
    }
}

/// What an export contained: kept with its request, and returned by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Manifest {
    pub request_id: Uuid,
    pub format: Format,
    /// Events in the file.
    pub count: u64,
    /// The earliest and latest event timestamp in the file.
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the whole file, as streamed.
    pub sha256: String,
    pub bytes: u64,
    pub generated_at: DateTime<Utc>,
}

/// The columns of an exported event, in file order: an event's, and
/// whether it was read from an archive.
fn columns() -> impl Iterator<Item = &'static str> {
    table::COLUMNS.into_iter().chain(["archived"])
}

/// An exported event (JSON): the stored event, and where it was read.
#[derive(Serialize)]
struct Exported<'a> {
    #[serde(flatten)]
    event: &'a StoredEvent,
    archived: bool,
}

/// An event's values by [`columns`]: `None` where the column is NULL.
fn values(event: &StoredEvent, archived: bool) -> impl Iterator<Item = Option<String>> {
    table::values(event)
        .into_iter()
        .chain([Some(archived.to_string())])
}

pub struct ExportWriter {
    format: Format,
    request_id: Uuid,
    digest: Sha256,
    bytes: u64,
    count: u64,
    first_event_at: Option<DateTime<Utc>>,
    last_event_at: Option<DateTime<Utc>>,
    /// CSV quoting per RFC 4180 (CRLF line ends).
    csv: csv::WriterBuilder,
}

impl ExportWriter {
    pub fn new(format: Format, request_id: Uuid) -> Self {
        Self {
            format,
            request_id,
            digest: Sha256::new(),
            bytes: 0,
            count: 0,
            first_event_at: None,
            last_event_at: None,
            csv: table::csv_builder(),
        }
    }

    /// The file's opening: the JSON object and array, the CSV header, the XML root.
    pub fn begin(&mut self, principal_id: &str) -> Bytes {
        let text = match self.format {
            Format::Json => format!(
                "{{\"request_id\":\"{}\",\"principal_id\":{},\"events\":[",
                self.request_id,
                serde_json::Value::from(principal_id)
            )
            .into_bytes(),
            Format::Csv => table::csv_record(&self.csv, columns().map(|c| Some(c.to_owned()))),
            Format::Xml => {
                let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
                xml.push_str(&format!(
                    "<gdpr_export request_id=\"{}\" principal_id=\"{}\">\n",
                    self.request_id,
                    attribute(principal_id)
                ));
                xml.into_bytes()
            }
        };
        self.emit(text)
    }

    /// One event; `archived` when it was read from an archive.
    pub fn event(
        &mut self,
        event: &StoredEvent,
        timestamp: DateTime<Utc>,
        archived: bool,
    ) -> Bytes {
        self.first_event_at = Some(self.first_event_at.map_or(timestamp, |t| t.min(timestamp)));
        self.last_event_at = Some(self.last_event_at.map_or(timestamp, |t| t.max(timestamp)));
        let text = match self.format {
            Format::Json => {
                let mut text = if self.count == 0 {
                    Vec::new()
                } else {
                    b",".to_vec()
                };
                let exported = Exported { event, archived };
                text.extend(serde_json::to_vec(&exported).expect("an event serializes"));
                text
            }
            Format::Csv => table::csv_record(&self.csv, values(event, archived)),
            Format::Xml => {
                let mut xml = String::from("<event>");
                for (column, value) in columns().zip(values(event, archived)) {
                    match value {
                        None => xml.push_str(&format!("<{column} null=\"true\"/>")),
                        Some(value) if value.chars().all(xml_char) => xml.push_str(&format!(
                            "<{column}>{}</{column}>",
                            quick_xml::escape::escape(value.as_str())
                        )),
                        Some(value) => xml.push_str(&format!(
                            "<{column} encoding=\"base64\">{}</{column}>",
                            STANDARD.encode(value)
                        )),
                    }
                }
                xml.push_str("</event>\n");
                xml.into_bytes()
            }
        };
        self.count += 1;
        self.emit(text)
    }

    /// The file's end, and the manifest of the whole file.
    pub fn finish(mut self) -> (Bytes, Manifest) {
        let text: &[u8] = match self.format {
            Format::Json => b"]}",
            Format::Csv => b"",
            Format::Xml => b"</gdpr_export>\n",
        };
        let last = self.emit(text.to_vec());
        let manifest = Manifest {
            request_id: self.request_id,
            format: self.format,
            count: self.count,
            first_event_at: self.first_event_at,
            last_event_at: self.last_event_at,
            sha256: hex::encode(self.digest.finalize()),
            bytes: self.bytes,
            generated_at: Utc::now(),
        };
        (last, manifest)
    }

    fn emit(&mut self, text: Vec<u8>) -> Bytes {
        self.digest.update(&text);
        self.bytes += text.len() as u64;
        Bytes::from(text)
    }
}

/// Whether XML 1.0 can carry the character (section 2.2, `Char`).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// An attribute value: escaped, with characters XML cannot carry replaced.
fn attribute(value: &str) -> String {
    let carried: String = value
        .chars()
        .map(|c| if xml_char(c) { c } else { '\u{FFFD}' })
        .collect();
    quick_xml::escape::escape(carried.as_str()).into_owned()
}
