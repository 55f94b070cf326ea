//! What a delivery's stored payload becomes on the wire. Most deliveries are
//! one JSON document; a stream's batch is stored as a JSON array of records
//! and sent as NDJSON, one record a line, so that SIEMs and query engines
//! read it line by line (gzipped where it lands as a file).

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// How a delivery's payload is laid out (`delivery_queue.body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyShape {
    /// One JSON document.
    #[default]
    Document,
    /// A JSON array whose elements go out one a line.
    Ndjson,
}

impl BodyShape {
    /// From its column; an unknown value is a document.
    pub fn from_column(value: &str) -> Self {
        match value {
            "ndjson" => Self::Ndjson,
            _ => Self::Document,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Ndjson => "ndjson",
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

/// For a request (a webhook): a document as stored, a batch as NDJSON.
pub fn for_request(shape: BodyShape, payload: String) -> Result<Rendered, String> {
    Ok(match shape {
        BodyShape::Document => Rendered {
            bytes: payload.into_bytes(),
            content_type: JSON,
            content_encoding: None,
        },
        BodyShape::Ndjson => Rendered {
            bytes: lines(&payload)?,
            content_type: NDJSON,
            content_encoding: None,
        },
    })
}

/// For a file (S3, FTP): a document indented for people to read, a batch as
/// gzipped NDJSON.
pub fn for_file(shape: BodyShape, payload: &str) -> Result<Rendered, String> {
    Ok(match shape {
        BodyShape::Document => Rendered {
            bytes: super::indented(payload).into_bytes(),
            content_type: JSON,
            content_encoding: None,
        },
        BodyShape::Ndjson => {
            let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
            let written = gzip
                .write_all(&lines(payload)?)
                .and_then(|()| gzip.finish());
            Rendered {
                bytes: written.map_err(|error| format!("cannot compress the batch: {error}"))?,
                content_type: NDJSON,
                content_encoding: Some("gzip"),
            }
        }
    })
}

/// The array's elements, each compact on its own line.
fn lines(payload: &str) -> Result<Vec<u8>, String> {
    let records: Vec<&serde_json::value::RawValue> = serde_json::from_str(payload)
        .map_err(|error| format!("a batch's payload is not a JSON array: {error}"))?;
    let mut out = Vec::with_capacity(payload.len());
    for record in records {
        // PostgreSQL's jsonb text has blanks after `:` and `,`: written
        // again, compact, so that a line is the record as the API shows it.
        let value: serde_json::Value = serde_json::from_str(record.get())
            .map_err(|error| format!("a batch's record is not JSON: {error}"))?;
        serde_json::to_writer(&mut out, &value).expect("a JSON value serializes");
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;

    #[test]
    fn a_batch_is_one_compact_record_a_line_and_gzipped_as_a_file() {
        let stored = r#"[{"id": 1, "action": "a"}, {"id": 2, "details": {"k": [1, 2]}}]"#;
        let expected = "{\"action\":\"a\",\"id\":1}\n{\"details\":{\"k\":[1,2]},\"id\":2}\n";
        let request = for_request(BodyShape::Ndjson, stored.to_owned()).unwrap();
        assert_eq!(String::from_utf8(request.bytes).unwrap(), expected);
        assert_eq!(request.content_type, NDJSON);

        let file = for_file(BodyShape::Ndjson, stored).unwrap();
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
        let request = for_request(BodyShape::Document, stored.to_owned()).unwrap();
        assert_eq!(request.bytes, stored.as_bytes());
        let file = for_file(BodyShape::Document, stored).unwrap();
        assert_eq!(String::from_utf8(file.bytes).unwrap(), "{\n  \"a\": 1\n}");
        assert!(for_request(BodyShape::Ndjson, stored.to_owned()).is_err());
    }
}
