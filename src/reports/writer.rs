//! Report output in JSON, CSV or HTML, written piece by piece: metadata, then
//! sections of rows as they are read, then the summary and the integrity of
//! the period. The writer only buffers what has not been taken yet, so a
//! report of millions of rows never sits in memory.
//!
//! - JSON: `{"report": {...}, "sections": [{"name", "title", "columns",
//!   "rows": [{column: value}], "row_count"}], "summary": {...}, "integrity": {...}}`.
//! - CSV (RFC 4180, one file for every section): every record starts with
//!   its section's name; a section opens with a record `section,<columns...>`.
//!   The metadata, summary and integrity are sections `report`, `summary` and
//!   `integrity` of `field,value` records.
//! - HTML: one self-contained page, a table per section.

use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::escape::escape;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Format, ReportType};

/// What a report's output says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub execution_id: Uuid,
    pub report_id: Uuid,
    pub name: String,
    pub report_type: ReportType,
    pub organization_id: String,
    pub period_from: DateTime<Utc>,
    pub period_to: DateTime<Utc>,
    pub scheduled_time: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    pub criteria: Value,
}

pub struct ReportWriter {
    format: Format,
    out: Vec<u8>,
    columns: Vec<&'static str>,
    section_name: String,
    sections: u32,
    rows: u64,
}

impl ReportWriter {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            out: Vec::with_capacity(64 * 1024),
            columns: Vec::new(),
            section_name: String::new(),
            sections: 0,
            rows: 0,
        }
    }

    /// Bytes written and not taken yet.
    pub fn buffered(&self) -> usize {
        self.out.len()
    }

    /// Hands over what was written so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn begin(&mut self, metadata: &Metadata) {
        match self.format {
            Format::Json => {
                self.out.extend_from_slice(b"{\"report\":");
                self.json(metadata);
                self.out.extend_from_slice(b",\"sections\":[");
            }
            Format::Csv => {
                let fields = fields_of(metadata);
                self.key_values("report", &fields);
            }
            Format::Html => {
                let title = escape(metadata.name.as_str()).into_owned();
                self.text(&format!(
                    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                     <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
                ));
                let fields = fields_of(metadata);
                self.html_key_values(&fields);
            }
        }
    }

    /// Opens a section of rows with these columns.
    pub fn section(&mut self, name: &str, title: &str, columns: &[&'static str]) {
        self.columns = columns.to_vec();
        self.section_name = name.to_owned();
        self.rows = 0;
        match self.format {
            Format::Json => {
                if self.sections > 0 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(b"{\"name\":");
                self.json(name);
                self.out.extend_from_slice(b",\"title\":");
                self.json(title);
                self.out.extend_from_slice(b",\"columns\":");
                self.json(columns);
                self.out.extend_from_slice(b",\"rows\":[");
            }
            Format::Csv => {
                let mut header = vec!["section"];
                header.extend_from_slice(columns);
                self.csv_record(header);
            }
            Format::Html => {
                self.text(&format!("<h2>{}</h2>\n<table><thead><tr>", escape(title)));
                for column in columns {
                    self.text(&format!("<th>{}</th>", escape(*column)));
                }
                self.text("</tr></thead><tbody>\n");
            }
        }
        self.sections += 1;
    }

    /// One row of the open section: a value per column.
    pub fn row(&mut self, cells: &[Value]) {
        debug_assert_eq!(cells.len(), self.columns.len());
        match self.format {
            Format::Json => {
                if self.rows > 0 {
                    self.out.push(b',');
                }
                let object: Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(cells)
                    .map(|(column, cell)| ((*column).to_owned(), cell.clone()))
                    .collect();
                self.json(&object);
            }
            Format::Csv => {
                let mut record = vec![self.section_name.clone()];
                record.extend(cells.iter().map(cell_text));
                self.csv_record(record);
            }
            Format::Html => {
                self.out.extend_from_slice(b"<tr>");
                for cell in cells {
                    let text = cell_text(cell);
                    self.text(&format!("<td>{}</td>", escape(text.as_str())));
                }
                self.out.extend_from_slice(b"</tr>\n");
            }
        }
        self.rows += 1;
    }

    /// Closes the open section; returns its row count.
    pub fn end_section(&mut self) -> u64 {
        match self.format {
            Format::Json => {
                self.out.extend_from_slice(b"],\"row_count\":");
                self.json(&self.rows.clone());
                self.out.push(b'}');
            }
            Format::Csv => {}
            Format::Html => {
                let rows = self.rows;
                self.text(&format!(
                    "</tbody></table>\n<p class=\"count\">{rows} row{}</p>\n",
                    if rows == 1 { "" } else { "s" }
                ));
            }
        }
        self.rows
    }

    /// Ends the output with the summary and the period's integrity.
    pub fn finish(&mut self, summary: &Map<String, Value>, integrity: &Value) {
        let integrity_fields: Vec<(String, Value)> = match integrity {
            Value::Object(object) => object.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            other => vec![("result".to_owned(), other.clone())],
        };
        let summary_fields: Vec<(String, Value)> = summary
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match self.format {
            Format::Json => {
                self.out.extend_from_slice(b"],\"summary\":");
                self.json(summary);
                self.out.extend_from_slice(b",\"integrity\":");
                self.json(integrity);
                self.out.extend_from_slice(b"}\n");
            }
            Format::Csv => {
                self.key_values("summary", &summary_fields);
                self.key_values("integrity", &integrity_fields);
            }
            Format::Html => {
                self.text("<h2>Summary</h2>\n");
                self.html_key_values(&summary_fields);
                self.text("<h2>Integrity of the period</h2>\n");
                self.html_key_values(&integrity_fields);
                self.text("</body></html>\n");
            }
        }
    }

    fn json(&mut self, value: &(impl Serialize + ?Sized)) {
        serde_json::to_writer(&mut self.out, value).expect("report values serialize");
    }

    fn text(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
    }

    fn csv_record<I, T>(&mut self, record: I)
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .buffer_capacity(1024)
            .from_writer(&mut self.out);
        writer
            .write_record(record)
            .and_then(|()| writer.flush().map_err(csv::Error::from))
            .expect("writing to memory cannot fail");
    }

    fn key_values(&mut self, section: &str, fields: &[(String, Value)]) {
        self.csv_record(["section", "field", "value"]);
        for (field, value) in fields {
            self.csv_record([section, field.as_str(), cell_text(value).as_str()]);
        }
    }

    fn html_key_values(&mut self, fields: &[(String, Value)]) {
        self.text("<dl>");
        for (field, value) in fields {
            let value = cell_text(value);
            self.text(&format!(
                "<dt>{}</dt><dd>{}</dd>",
                escape(field.as_str()),
                escape(value.as_str())
            ));
        }
        self.text("</dl>\n");
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
    table{border-collapse:collapse;margin-bottom:.5em}\
    th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;font-size:.9em}\
    th{background:#f0f0f0}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}\
    dt{font-weight:bold}dd{margin:0}.count{color:#666;font-size:.85em}";

fn fields_of(metadata: &Metadata) -> Vec<(String, Value)> {
    let time = |t: DateTime<Utc>| Value::String(t.to_rfc3339_opts(SecondsFormat::Micros, true));
    vec![
        ("name".into(), Value::String(metadata.name.clone())),
        (
            "report_type".into(),
            Value::String(metadata.report_type.as_str().into()),
        ),
        (
            "organization_id".into(),
            Value::String(metadata.organization_id.clone()),
        ),
        (
            "report_id".into(),
            Value::String(metadata.report_id.to_string()),
        ),
        (
            "execution_id".into(),
            Value::String(metadata.execution_id.to_string()),
        ),
        ("period_from".into(), time(metadata.period_from)),
        ("period_to".into(), time(metadata.period_to)),
        ("scheduled_time".into(), time(metadata.scheduled_time)),
        ("generated_at".into(), time(metadata.generated_at)),
        ("criteria".into(), metadata.criteria.clone()),
    ]
}

/// A cell as text: strings as they are, null as empty, anything else as JSON.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn write(format: Format) -> String {
        let metadata = Metadata {
            execution_id: Uuid::nil(),
            report_id: Uuid::nil(),
            name: "Weekly <access>".into(),
            report_type: ReportType::AccessSummary,
            organization_id: "org".into(),
            period_from: DateTime::UNIX_EPOCH,
            period_to: DateTime::UNIX_EPOCH,
            scheduled_time: DateTime::UNIX_EPOCH,
            generated_at: DateTime::UNIX_EPOCH,
            criteria: json!({}),
        };
        let mut writer = ReportWriter::new(format);
        writer.begin(&metadata);
        writer.section("by_action", "By action", &["action", "events"]);
        writer.row(&[json!("a,\"b\"\n<c>"), json!(3)]);
        writer.row(&[json!("d"), Value::Null]);
        assert_eq!(writer.end_section(), 2);
        writer.section("empty", "Empty", &["x"]);
        writer.end_section();
        let mut summary = Map::new();
        summary.insert("records_processed".into(), json!(3));
        writer.finish(&summary, &json!({"valid": true}));
        String::from_utf8(writer.take()).unwrap()
    }

    #[test]
    fn json_output_parses() {
        let output: Value = serde_json::from_str(&write(Format::Json)).unwrap();
        assert_eq!(output["report"]["name"], "Weekly <access>");
        assert_eq!(output["sections"][0]["rows"][0]["action"], "a,\"b\"\n<c>");
        assert_eq!(output["sections"][0]["row_count"], 2);
        assert_eq!(output["sections"][1]["rows"], json!([]));
        assert_eq!(output["summary"]["records_processed"], 3);
        assert_eq!(output["integrity"]["valid"], true);
    }

    #[test]
    fn csv_output_parses() {
        let text = write(Format::Csv);
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(text.as_bytes());
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let by_action: Vec<_> = records.iter().filter(|r| &r[0] == "by_action").collect();
        assert_eq!(&by_action[0][1], "a,\"b\"\n<c>");
        assert_eq!(&by_action[1][2], "");
        assert!(records
            .iter()
            .any(|r| &r[0] == "integrity" && &r[1] == "valid" && &r[2] == "true"));
    }

    #[test]
    fn html_output_escapes() {
        let html = write(Format::Html);
        assert!(html.contains("<title>Weekly &lt;access&gt;</title>"));
        assert!(html.contains("<td>a,&quot;b&quot;\n&lt;c&gt;</td>"));
        assert!(html.ends_with("</body></html>\n"));
    }
}
