//! Scheduled compliance reports: what a report is (type, criteria, format,
//! schedule), how it is produced (streamed from PostgreSQL into its stored
//! output) and delivered.
//!
//! - [`schedule`]: cron expressions in a time zone, and the period a run covers.
//! - [`criteria`]: the time range and event filters of a report, validated.
//! - [`definition`]: what makes a template or a scheduled report valid.
//! - [`writer`]: JSON, CSV and HTML output, written section by section.
//! - [`generate`]: what each report type contains, written as it is read.
//! - [`run`]: one execution from claim to delivery.

pub mod criteria;
pub mod definition;
pub mod generate;
pub mod output;
pub mod run;
pub mod schedule;
pub mod writer;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::DbError;
use crate::integrity::verify::VerifyError;

/// The built-in report types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportType {
    /// Events by action, principal and resource type.
    AccessSummary,
    /// Failed and denied access.
    FailedAccess,
    /// Every PHI event: who, what, when.
    PhiAccess,
    /// GDPR operations and GDPR events.
    GdprActivity,
    /// A verification of the period's events and chain.
    Integrity,
    /// Alerts raised in the period.
    AlertsSummary,
}

impl ReportType {
    pub const ALL: [ReportType; 6] = [
        ReportType::AccessSummary,
        ReportType::FailedAccess,
        ReportType::PhiAccess,
        ReportType::GdprActivity,
        ReportType::Integrity,
        ReportType::AlertsSummary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportType::AccessSummary => "access_summary",
            ReportType::FailedAccess => "failed_access",
            ReportType::PhiAccess => "phi_access",
            ReportType::GdprActivity => "gdpr_activity",
            ReportType::Integrity => "integrity",
            ReportType::AlertsSummary => "alerts_summary",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }

    /// Whether the event filters of the criteria apply (the others read no events).
    pub fn reads_events(self) -> bool {
        !matches!(self, ReportType::Integrity | ReportType::AlertsSummary)
    }

    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// Output formats. The seed's `pdf` is refused: HTML is the human-readable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ReportFormat)]
pub enum Format {
    Json,
    Csv,
    Html,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "html" => Some(Format::Html),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot verify the period: {0}")]
    Verify(#[from] VerifyError),
    #[error("cannot compress the output: {0}")]
    Compression(#[source] std::io::Error),
    #[error("the stored report is not valid: {0}")]
    Invalid(String),
}

impl From<tokio_postgres::Error> for ReportError {
    fn from(error: tokio_postgres::Error) -> Self {
        ReportError::Database(error.into())
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for ReportError {
    fn from(error: bb8::RunError<tokio_postgres::Error>) -> Self {
        ReportError::Database(error.into())
    }
}
