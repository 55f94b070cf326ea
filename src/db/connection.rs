//! A pooled connection: tokio-postgres's client, and the statements prepared
//! on it.
//!
//! Why a cache of our own: neither tokio-postgres nor bb8 keeps one, and an
//! unnamed statement (`query_typed`) is parsed and planned again at every
//! use. The statement log of a one-event ingest group showed 0.03–0.09 ms
//! of parse and as much of bind per statement, about half of PostgreSQL's
//! time for the whole group. The hot paths (ingest, enqueue, the tenant
//! scope) prepare each of their statements once per connection instead.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Row, Statement, Transaction};

/// The pool's connection; dereferences to the client for everything else.
pub struct PgConnection {
    client: Client,
    prepared: Arc<PreparedStatements>,
}

impl PgConnection {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            prepared: Arc::default(),
        }
    }

    /// Begins a transaction whose statements can go through this
    /// connection's cache. The statements that went out unnamed at their
    /// first use here are prepared first, while nothing else is in flight.
    pub async fn begin(
        &mut self,
    ) -> Result<(Transaction<'_>, Arc<PreparedStatements>), tokio_postgres::Error> {
        self.prepared.prepare_wanted(&self.client).await;
        let prepared = Arc::clone(&self.prepared);
        Ok((self.client.transaction().await?, prepared))
    }
}

impl Deref for PgConnection {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// A statement's parameter with its type, as `query_typed` takes them.
pub type TypedParam<'a> = (&'a (dyn ToSql + Sync), Type);

/// The statements prepared on one connection, by their SQL, and those to
/// prepare before its next transaction. Only `&'static str` keys: the
/// program's own statements, so the cache is bounded by the program, never
/// by its input.
#[derive(Default)]
pub struct PreparedStatements {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    by_sql: HashMap<&'static str, Statement>,
    wanted: HashMap<&'static str, Vec<Type>>,
}

impl PreparedStatements {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .expect("the statement cache is not poisoned")
    }

    /// The prepared statement, or `None` after noting `sql` for the next
    /// [`prepare_wanted`](Self::prepare_wanted).
    ///
    /// Why not prepare it at once: a statement waiting for its prepare would
    /// be overtaken by the statements polled after it, and one waiting for
    /// an answer behind theirs stalls the connection until they are read.
    fn get_or_want(&self, sql: &'static str, params: &[TypedParam<'_>]) -> Option<Statement> {
        let mut cache = self.cache();
        if let Some(statement) = cache.by_sql.get(sql) {
            return Some(statement.clone());
        }
        cache
            .wanted
            .entry(sql)
            .or_insert_with(|| params.iter().map(|(_, ty)| ty.clone()).collect());
        None
    }

    /// Prepares the wanted statements, all in one round trip. A failure
    /// leaves that statement unnamed; it is wanted again at its next use.
    async fn prepare_wanted(&self, client: &Client) {
        let wanted: Vec<(&'static str, Vec<Type>)> = self.cache().wanted.drain().collect();
        if wanted.is_empty() {
            return;
        }
        let prepares = wanted
            .iter()
            .map(|(sql, types)| client.prepare_typed(sql, types));
        let prepared = futures_util::future::join_all(prepares).await;
        let mut cache = self.cache();
        for ((sql, _), outcome) in wanted.into_iter().zip(prepared) {
            match outcome {
                Ok(statement) => {
                    cache.by_sql.insert(sql, statement);
                }
                Err(error) => {
                    tracing::debug!(%error, sql, "Statement not prepared; it goes unnamed")
                }
            }
        }
    }
}

/// How a path sends its statements: prepared once on the connection, or
/// unnamed each time, for a caller's transaction whose connection is not at
/// hand (an administrative change recorded in its own transaction).
#[derive(Clone, Copy)]
pub enum Statements<'a> {
    Prepared(&'a PreparedStatements),
    Unnamed,
}

impl Statements<'_> {
    fn statement(self, sql: &'static str, params: &[TypedParam<'_>]) -> Option<Statement> {
        match self {
            Statements::Prepared(prepared) => prepared.get_or_want(sql, params),
            Statements::Unnamed => None,
        }
    }

    /// Like `query_typed`, and like it sent on the first poll, so that
    /// statements polled together share a round trip and run in the order
    /// they were polled.
    pub async fn query(
        self,
        client: &impl GenericClient,
        sql: &'static str,
        params: &[TypedParam<'_>],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match self.statement(sql, params) {
            Some(statement) => client.query(&statement, &values(params)).await,
            None => client.query_typed(sql, params).await,
        }
    }

    /// Like `execute_typed` (see [`query`](Self::query)).
    pub async fn execute(
        self,
        client: &impl GenericClient,
        sql: &'static str,
        params: &[TypedParam<'_>],
    ) -> Result<u64, tokio_postgres::Error> {
        match self.statement(sql, params) {
            Some(statement) => client.execute(&statement, &values(params)).await,
            None => client.execute_typed(sql, params).await,
        }
    }
}

fn values<'a>(params: &[TypedParam<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(value, _)| *value).collect()
}
