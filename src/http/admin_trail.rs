//! Administrative changes made through the API leave an `admin.<object>.<verb>`
//! event in the organization's own chain, written in the transaction of the
//! change: no change without its event, and no event without its change.

use serde_json::Value;
use tokio_postgres::Transaction;

use super::api_error::ApiError;
use super::auth::Caller;
use super::AppState;
use crate::events::recorded::{self, AdminChange, RecordError};

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Db(error) => error.into(),
            RecordError::Invalid(problem) => ApiError::Internal(problem),
        }
    }
}

/// Records the caller's change of `object` `target_id` inside `transaction`;
/// call it last in the transaction (see [`recorded::append_in`]).
pub async fn record(
    state: &AppState,
    transaction: &Transaction<'_>,
    caller: &Caller,
    (object, verb): (&str, &str),
    target_id: impl ToString,
    details: Value,
) -> Result<(), ApiError> {
    recorded::admin_in(
        transaction,
        &state.keys,
        caller.organization_id(),
        &caller.principal(),
        AdminChange {
            object,
            verb,
            target_id: target_id.to_string(),
            details,
        },
    )
    .await?;
    Ok(())
}
