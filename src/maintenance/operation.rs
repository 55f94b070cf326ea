//! A maintenance round's recorded operation on one organization's trail. It
//! begins, at the first change it is about to make, with its record event in
//! the organization's chain and its `trail_operations` row (one transaction);
//! every change of the round then runs inside it (see `db::trail`).

use serde_json::json;
use uuid::Uuid;

use crate::db::trail::{self, OperationKind};
use crate::db::{DbError, PgPool};
use crate::events::recorded::{self, Record, RecordError};
use crate::integrity::keys::IntegrityKeys;

/// The principal of the events the worker records about its own rounds.
pub const WORKER_PRINCIPAL: &str = "audit-worker";

pub struct RoundOperation<'a> {
    pool: &'a PgPool,
    keys: &'a IntegrityKeys,
    organization: &'a str,
    kind: OperationKind,
    /// The record event's action; its status is `attempt`.
    action: &'static str,
    id: Option<Uuid>,
}

impl<'a> RoundOperation<'a> {
    pub fn new(
        pool: &'a PgPool,
        keys: &'a IntegrityKeys,
        organization: &'a str,
        kind: OperationKind,
        action: &'static str,
    ) -> Self {
        RoundOperation {
            pool,
            keys,
            organization,
            kind,
            action,
            id: None,
        }
    }

    /// The operation's id, beginning it the first time.
    pub async fn id(&mut self) -> Result<Uuid, DbError> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let id = Uuid::new_v4();
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let receipt = recorded::append_in(
            &transaction,
            self.keys,
            &Record {
                organization_id: self.organization,
                principal_id: WORKER_PRINCIPAL,
                action: self.action,
                status: "attempt",
                outcome: format!("{} started", self.action),
                target: None,
                details: json!({"operation_id": id}),
            },
        )
        .await
        .map_err(worker_built)?;
        trail::register(&transaction, id, self.organization, self.kind, receipt.id).await?;
        transaction.commit().await?;
        self.id = Some(id);
        Ok(id)
    }
}

/// The database error of recording an event the worker built itself: a
/// refusal by validation would be a bug in the worker, not a condition.
pub fn worker_built(error: RecordError) -> DbError {
    match error {
        RecordError::Db(error) => error,
        RecordError::Invalid(problem) => panic!("the worker built an invalid record: {problem}"),
    }
}
