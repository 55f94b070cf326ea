//! The shape of a validation problem, shared by every layer that validates
//! client input (events, roles, queries) and rendered by the HTTP error body.

use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field: which (`permissions[2].action`), why, and for batch
/// requests which item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            index: None,
            field: field.into(),
            message: message.into(),
        }
    }
}
