//! Syslog destinations, for SIEM collectors: RFC 5424 messages over TCP,
//! framed by octet counting (RFC 6587), optionally in TLS (RFC 5425). A
//! stream's batch is one message per record; any other delivery is one
//! message. Each message carries the event's id, hash and organization as
//! structured data, so the collector can check what it stored.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::{self, Payload, Record};
use super::egress::{self, Egress};
use super::retry::{Sent, Verdict};
use crate::validation::FieldError;

/// The SD-ID of the event's structured data. 32473 is the private enterprise
/// number RFC 5612 sets aside for documentation: this worker has none of its
/// own, and collectors match the SD-ID as text.
const SD_ID: &str = "audit@32473";
/// RFC 5424's longest APP-NAME and MSGID.
const MAX_APP_NAME: usize = 48;
const MAX_MSGID: usize = 32;
/// Facility 13, "log audit".
const DEFAULT_FACILITY: u8 = 13;
const SEVERITY_WARNING: u8 = 4;
const SEVERITY_INFORMATIONAL: u8 = 6;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    pub host: String,
    /// Default 6514 with TLS, 601 without (the IANA syslog ports for each).
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: bool,
    /// PEM certificates of the CA that signed the collector's certificate,
    /// for a private CA; the public web roots otherwise.
    pub ca: Option<String>,
    /// The messages' APP-NAME; default `audit-worker`.
    pub app_name: Option<String>,
    /// The messages' facility, 0 to 23; default 13 (log audit).
    pub facility: Option<u8>,
}

impl SyslogConfig {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        errors.extend(egress::host_problem(&self.host));
        if self.port == Some(0) {
            errors.push(FieldError::new("config.port", "between 1 and 65535"));
        }
        if let Some(pem) = &self.ca {
            if let Err(problem) = egress::trust_roots(Some(pem)) {
                errors.push(FieldError::new("config.ca", problem));
            }
        }
        if self.app_name.as_ref().is_some_and(|name| {
            name.is_empty() || name.len() > MAX_APP_NAME || !name.bytes().all(printable)
        }) {
            errors.push(FieldError::new(
                "config.app_name",
                format!("1 to {MAX_APP_NAME} printable ASCII characters, no space"),
            ));
        }
        if self.facility.is_some_and(|facility| facility > 23) {
            errors.push(FieldError::new("config.facility", "between 0 and 23"));
        }
        errors
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 6514 } else { 601 })
    }

    fn app_name(&self) -> &str {
        self.app_name.as_deref().unwrap_or("audit-worker")
    }
}

/// RFC 5424's PRINTUSASCII: the characters of its header fields.
fn printable(byte: u8) -> bool {
    (33..=126).contains(&byte)
}

/// A structured-data parameter value: `"`, `\` and `]` escaped.
fn sd_value(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// One RFC 5424 message for `record`, framed by its length in bytes.
fn frame(config: &SyslogConfig, hostname: &str, record: &Record) -> Vec<u8> {
    let event = &record.event;
    let severity = match event.status.as_deref() {
        Some("failure") => SEVERITY_WARNING,
        _ => SEVERITY_INFORMATIONAL,
    };
    let priority = u16::from(config.facility.unwrap_or(DEFAULT_FACILITY)) * 8 + u16::from(severity);
    let timestamp = event.timestamp.as_deref().unwrap_or("-");
    let msgid: String = (event.action.as_deref())
        .unwrap_or("delivery")
        .bytes()
        .filter(|b| printable(*b))
        .take(MAX_MSGID)
        .map(char::from)
        .collect();
    let msgid = if msgid.is_empty() {
        "-".to_owned()
    } else {
        msgid
    };
    let mut parameters = Vec::new();
    if let Some(id) = event.id {
        parameters.push(format!("id=\"{id}\""));
    }
    for (field, value) in [
        ("hash", &event.hash),
        ("organization_id", &event.organization_id),
    ] {
        if let Some(value) = value {
            parameters.push(format!("{field}=\"{}\"", sd_value(value)));
        }
    }
    let structured = if parameters.is_empty() {
        "-".to_owned()
    } else {
        format!("[{SD_ID} {}]", parameters.join(" "))
    };
    let message = format!(
        "<{priority}>1 {timestamp} {hostname} {} - {msgid} {structured} {}",
        config.app_name(),
        record.json
    );
    let mut framed = format!("{} ", message.len()).into_bytes();
    framed.extend_from_slice(message.as_bytes());
    framed
}

/// The messages a delivery's payload makes: a record each for a batch, one
/// for a document.
fn frames(config: &SyslogConfig, hostname: &str, payload: &Payload) -> Result<Vec<u8>, String> {
    let document;
    let records = match payload {
        Payload::Records(records) => records.as_slice(),
        Payload::Document(text) => {
            let value = serde_json::from_str::<Value>(text)
                .map_err(|error| format!("the payload is not JSON: {error}"))?;
            document = Record::of_value(&value);
            std::slice::from_ref(&document)
        }
    };
    Ok(records
        .iter()
        .flat_map(|record| frame(config, hostname, record))
        .collect())
}

/// Writes the payload's messages on one connection, and closes it. TCP syslog
/// has no answer: the messages count as delivered once written and the
/// connection closed cleanly.
pub async fn send(
    config: &SyslogConfig,
    egress: &Egress,
    payload: Payload,
    hostname: &str,
    timeout: Duration,
) -> Sent {
    let framed = match payload {
        Payload::Records(_) => {
            let (config, hostname) = (config.clone(), hostname.to_owned());
            body::off_thread(move || frames(&config, &hostname, &payload)).await
        }
        Payload::Document(_) => frames(config, hostname, &payload),
    };
    let bytes = match framed {
        Ok(bytes) => bytes,
        Err(problem) => return Sent::failed(Verdict::Permanent, format!("syslog: {problem}")),
    };
    let Some(host) = egress::parse_host(&config.host) else {
        return Sent::failed(
            Verdict::Permanent,
            format!("config.host: `{}` is not a host", config.host),
        );
    };
    let port = config.port();
    let write = async {
        let addresses = egress
            .resolve(&host, port)
            .await
            .map_err(|error| (error.verdict(), error.to_string()))?;
        let tcp = TcpStream::connect(&addresses[..])
            .await
            .map_err(|error| (Verdict::Retryable, format!("cannot connect: {error}")))?;
        if config.tls {
            let client = egress::tls_client(config.ca.as_deref())
                .map_err(|problem| (Verdict::Permanent, problem))?;
            let name = rustls::pki_types::ServerName::try_from(egress::server_name(&host))
                .map_err(|error| (Verdict::Permanent, error.to_string()))?;
            let tls = TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|error| (Verdict::Retryable, format!("TLS: {error}")))?;
            write_all(tls, &bytes).await
        } else {
            write_all(tcp, &bytes).await
        }
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Sent {
            verdict: Verdict::Delivered,
            code: None,
            reason: None,
            reference: Some(format!("syslog {}:{port}", config.host)),
        },
        Ok(Err((verdict, reason))) => Sent::failed(verdict, format!("syslog: {reason}")),
        Err(_) => Sent::failed(
            Verdict::Retryable,
            format!("syslog: not written within {} ms", timeout.as_millis()),
        ),
    }
}

async fn write_all(
    mut stream: impl AsyncWrite + Unpin,
    bytes: &[u8],
) -> Result<(), (Verdict, String)> {
    let written = async {
        stream.write_all(bytes).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    written
        .await
        .map_err(|error| (Verdict::Retryable, format!("cannot write: {error}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> SyslogConfig {
        serde_json::from_value(json!({"host": "collector.test"})).unwrap()
    }

    #[test]
    fn a_record_is_one_octet_counted_rfc_5424_message() {
        let record = json!({"id": 42, "timestamp": "2026-01-02T03:04:05.000006Z",
            "action": "patient.record.read", "status": "failure", "hash": "ab]\"c",
            "organization_id": "org-a"});
        let framed =
            String::from_utf8(frame(&config(), "worker-1", &Record::of_value(&record))).unwrap();
        let (length, message) = framed.split_once(' ').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), message.len());
        assert_eq!(
            message,
            format!(
                "<108>1 2026-01-02T03:04:05.000006Z worker-1 audit-worker - patient.record.read \
                 [audit@32473 id=\"42\" hash=\"ab\\]\\\"c\" organization_id=\"org-a\"] {record}"
            )
        );
    }

    #[test]
    fn a_batch_is_a_message_per_record_and_ocsf_or_hec_records_name_their_event() {
        let batch = json!([
            {"unmapped": {"id": 1, "action": "a", "status": "success"}},
            {"event": {"id": 2, "action": "b", "status": "success"}},
        ]);
        let batch = Payload::records_of(&batch.to_string()).unwrap();
        let bytes = frames(&config(), "h", &batch).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains("<110>1 - h audit-worker - a [audit@32473 id=\"1\"]"),
            "{text}"
        );
        assert!(
            text.contains("<110>1 - h audit-worker - b [audit@32473 id=\"2\"]"),
            "{text}"
        );
        let not_json = Payload::Document("{".to_owned());
        assert!(frames(&config(), "h", &not_json).is_err());
    }

    #[test]
    fn bad_configurations_name_their_field() {
        let bad: SyslogConfig = serde_json::from_value(
            json!({"host": "", "port": 0, "app_name": "has space", "facility": 24, "ca": "nope"}),
        )
        .unwrap();
        let fields: Vec<String> = bad.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "config.host",
                "config.port",
                "config.ca",
                "config.app_name",
                "config.facility"
            ]
        );
        assert_eq!(config().port(), 601);
    }
}
