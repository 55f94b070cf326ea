//! A pooled connection: tokio-postgres's client, the statements prepared on
//! it, and transactions whose BEGIN and COMMIT share their statements' round
//! trips ([`PipelinedTransaction`]; tokio-postgres's `Transaction` waits for
//! each).
//!
//! Why a cache of our own: neither tokio-postgres nor bb8 keeps one, and an
//! unnamed statement (`query_typed`) is parsed and planned again at every
//! use. The statement log of a one-event ingest group showed 0.03–0.09 ms
//! of parse and as much of bind per statement, about half of PostgreSQL's
//! time for the whole group. The hot paths (ingest, enqueue, the tenant
//! scope) prepare each of their statements once per connection instead.

use std::collections::HashMap;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::maybe_done;
use futures_util::TryFutureExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Row, Statement, Transaction};

/// The pool's connection; dereferences to the client for everything else.
pub struct PgConnection {
    client: Client,
    prepared: Arc<PreparedStatements>,
    /// A [`PipelinedTransaction`] began and has not ended.
    in_transaction: AtomicBool,
}

impl PgConnection {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            prepared: Arc::default(),
            in_transaction: AtomicBool::new(false),
        }
    }

    /// Whether a [`PipelinedTransaction`] was left open here (its future
    /// dropped, its ROLLBACK failed): the pool closes such a connection
    /// rather than lend it again.
    pub fn is_in_transaction(&self) -> bool {
        self.in_transaction.load(Ordering::Relaxed)
    }

    /// Like [`begin`](Self::begin), for a transaction whose BEGIN and COMMIT
    /// share round trips with its statements.
    pub async fn begin_pipelined(&mut self) -> PipelinedTransaction<'_> {
        self.prepared.prepare_wanted(&self.client).await;
        PipelinedTransaction { connection: self }
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

/// A transaction whose BEGIN goes out with its first statements and whose
/// COMMIT can go out with its last: two round trips fewer than
/// [`PgConnection::begin`]'s, which waits for each. Made by
/// [`PgConnection::begin_pipelined`], run by [`run`](Self::run).
///
/// Why it is safe: after a failed statement PostgreSQL ignores the rest of
/// the transaction, and a COMMIT sent behind it rolls it back; a transaction
/// that a failure or a cancelled future leaves open is rolled back, or its
/// connection is closed rather than lent again (see
/// [`PgConnection::is_in_transaction`]).
pub struct PipelinedTransaction<'a> {
    connection: &'a PgConnection,
}

impl PipelinedTransaction<'_> {
    /// Where the transaction's statements go, between BEGIN and COMMIT.
    pub fn client(&self) -> &Client {
        &self.connection.client
    }

    /// This connection's prepared statements.
    pub fn statements(&self) -> Statements<'_> {
        Statements::Prepared(&self.connection.prepared)
    }

    /// Runs `work` in the transaction: BEGIN is sent just before `work`'s
    /// first statements, in the same round trip. `work` may send the COMMIT
    /// with its last statements ([`commit_with`](Self::commit_with));
    /// otherwise it is sent after `work` succeeds. When anything fails, the
    /// transaction is rolled back.
    pub async fn run<T, E>(&self, work: impl Future<Output = Result<T, E>>) -> Result<T, E>
    where
        E: From<tokio_postgres::Error>,
    {
        let outcome = match futures_util::try_join!(self.begin().err_into::<E>(), work) {
            Ok(((), value)) if self.connection.is_in_transaction() => {
                self.commit().await.map(|()| value).map_err(E::from)
            }
            Ok(((), value)) => Ok(value),
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            self.rollback().await;
        }
        outcome
    }

    async fn begin(&self) -> Result<(), tokio_postgres::Error> {
        self.connection
            .in_transaction
            .store(true, Ordering::Relaxed);
        self.client().batch_execute("BEGIN").await
    }

    /// Runs `pipeline` (see [`Statements::pipelined`]) and COMMIT, in one
    /// round trip. Should a statement fail, PostgreSQL rolls the transaction
    /// back instead of committing it.
    ///
    /// Why the statements are given as SQL, not as futures: a COMMIT sent
    /// before a statement (one that prepares first, as `execute(&str)`
    /// does) would leave that statement to run, and commit, on its own.
    /// These are sent, in order, before the COMMIT is.
    pub async fn commit_with<'v, P>(
        &self,
        pipeline: &[(&'static str, P)],
    ) -> Result<Vec<Vec<Row>>, tokio_postgres::Error>
    where
        P: AsRef<[TypedParam<'v>]>,
    {
        let (rows, ()) = futures_util::try_join!(
            self.statements().pipelined(self.client(), pipeline),
            self.commit()
        )?;
        Ok(rows)
    }

    async fn commit(&self) -> Result<(), tokio_postgres::Error> {
        self.client().batch_execute("COMMIT").await?;
        self.connection
            .in_transaction
            .store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the transaction after a failure; a transaction already ended
    /// (by a COMMIT behind the failed statement) only draws a warning. Should
    /// the ROLLBACK fail, the connection stays marked and is closed.
    async fn rollback(&self) {
        match self.client().batch_execute("ROLLBACK").await {
            Ok(()) => self
                .connection
                .in_transaction
                .store(false, Ordering::Relaxed),
            Err(error) => tracing::debug!(%error, "ROLLBACK failed; the connection is closed"),
        }
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
    /// they were polled. [`PipelinedTransaction::commit_with`] relies on
    /// it: keep both arms a single send.
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

    /// Like [`query`](Self::query), for a statement that answers exactly one row.
    pub async fn query_one(
        self,
        client: &impl GenericClient,
        sql: &'static str,
        params: &[TypedParam<'_>],
    ) -> Result<Row, tokio_postgres::Error> {
        match self.statement(sql, params) {
            Some(statement) => client.query_one(&statement, &values(params)).await,
            None => client.query_typed_one(sql, params).await,
        }
    }

    /// Runs `pipeline` in order in one round trip: each statement is sent
    /// before the next (on its first poll, see [`query`](Self::query)), then
    /// every answer is awaited. After a failed one, PostgreSQL refuses the
    /// rest of the transaction, and the first error is the one returned.
    pub async fn pipelined<'v, P>(
        self,
        client: &impl GenericClient,
        pipeline: &[(&'static str, P)],
    ) -> Result<Vec<Vec<Row>>, tokio_postgres::Error>
    where
        P: AsRef<[TypedParam<'v>]>,
    {
        let mut answers: Vec<_> = pipeline
            .iter()
            .map(|(sql, params)| Box::pin(maybe_done(self.query(client, sql, params.as_ref()))))
            .collect();
        for answer in &mut answers {
            let _ = futures_util::poll!(answer.as_mut());
        }
        let mut rows = Vec::with_capacity(answers.len());
        for mut answer in answers {
            answer.as_mut().await;
            rows.push(answer.as_mut().take_output().expect("awaited just now")?);
        }
        Ok(rows)
    }

    /// The statement prepared on this connection, prepared now at its first
    /// use there. For what must be prepared to run at all (a COPY, which
    /// `query_typed` cannot send unnamed); call it before sending anything
    /// else, as it waits for its prepare.
    pub async fn prepare(
        self,
        client: &impl GenericClient,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        let prepared = match self {
            Statements::Prepared(prepared) => prepared,
            Statements::Unnamed => return client.prepare(sql).await,
        };
        if let Some(statement) = prepared.cache().by_sql.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        prepared.cache().by_sql.insert(sql, statement.clone());
        Ok(statement)
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
