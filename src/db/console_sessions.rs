//! Queries on `console_sessions`: the web console's server-side sessions,
//! found by the SHA-256 of the token their cookie holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::DbError;

/// A live session: who signed in, with which key.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub organization_id: String,
    pub key_id: String,
    pub key_secret_hash: Vec<u8>,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session, and drops those past their absolute end.
pub async fn insert(
    client: &impl GenericClient,
    token_hash: &[u8],
    session: &ConsoleSession,
) -> Result<(), DbError> {
    client
        .execute("DELETE FROM console_sessions WHERE expires_at < now()", &[])
        .await?;
    client
        .execute(
            "INSERT INTO console_sessions (token_hash, organization_id, key_id, key_secret_hash, \
               csrf_token, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &token_hash,
                &session.organization_id,
                &session.key_id,
                &session.key_secret_hash,
                &session.csrf_token,
                &session.expires_at,
            ],
        )
        .await?;
    Ok(())
}

/// The session of `token_hash` if it has neither expired nor been idle for
/// `idle`, marked as seen now; `None` otherwise (and an ended one is deleted).
pub async fn touch(
    client: &impl GenericClient,
    token_hash: &[u8],
    idle: Duration,
) -> Result<Option<ConsoleSession>, DbError> {
    let row = client
        .query_opt(
            "UPDATE console_sessions SET last_seen_at = now() \
             WHERE token_hash = $1 AND expires_at > now() \
               AND last_seen_at > now() - make_interval(secs => $2) \
             RETURNING organization_id, key_id, key_secret_hash, csrf_token, expires_at",
            &[&token_hash, &idle.as_secs_f64()],
        )
        .await?;
    let Some(row) = row else {
        delete(client, token_hash).await?;
        return Ok(None);
    };
    Ok(Some(ConsoleSession {
        organization_id: row.get("organization_id"),
        key_id: row.get("key_id"),
        key_secret_hash: row.get("key_secret_hash"),
        csrf_token: row.get("csrf_token"),
        expires_at: row.get("expires_at"),
    }))
}

/// Ends the session (sign-out); whether there was one.
pub async fn delete(client: &impl GenericClient, token_hash: &[u8]) -> Result<bool, DbError> {
    Ok(client
        .execute(
            "DELETE FROM console_sessions WHERE token_hash = $1",
            &[&token_hash],
        )
        .await?
        == 1)
}
