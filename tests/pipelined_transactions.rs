//! Transactions whose BEGIN and COMMIT share round trips with their
//! statements (ingest and enqueue groups): a COMMIT sent behind a failed
//! statement commits nothing, a failure leaves the connection out of any
//! transaction, and an abandoned transaction marks its connection so the
//! pool never lends it again.

mod common;

use audit_worker::db::connection::{PgConnection, TypedParam};
use common::spawn_app;
use futures_util::TryFutureExt;
use tokio_postgres::types::Type;

const PROBE: &str = "CREATE TABLE pipelined_probe (n int PRIMARY KEY)";
const INSERT: &str = "INSERT INTO pipelined_probe VALUES ($1)";

async fn probed(app: &common::TestApp) -> (PgConnection, tokio_postgres::Client) {
    let db = PgConnection::new(app.database().await);
    db.batch_execute(PROBE).await.unwrap();
    (db, app.database().await)
}

fn number(n: &'static i32) -> [TypedParam<'static>; 1] {
    [(n, Type::INT4)]
}

async fn stored(observer: &tokio_postgres::Client) -> Vec<i32> {
    observer
        .query("SELECT n FROM pipelined_probe ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[actix_web::test]
async fn statements_and_their_commit_in_one_round_trip_are_committed() {
    let app = spawn_app().await;
    let (mut db, observer) = probed(&app).await;
    let transaction = db.begin_pipelined().await;
    transaction
        .run(transaction.commit_with(&[(INSERT, number(&1)), (INSERT, number(&2))]))
        .await
        .unwrap();
    assert!(!db.is_in_transaction());
    assert_eq!(stored(&observer).await, [1, 2]);
}

#[actix_web::test]
async fn a_commit_sent_behind_a_failed_statement_commits_nothing() {
    let app = spawn_app().await;
    let (mut db, observer) = probed(&app).await;
    let transaction = db.begin_pipelined().await;
    // The second is a duplicate key: PostgreSQL refuses it and the rest of the transaction.
    let outcome = transaction
        .run(transaction.commit_with(&[(INSERT, number(&1)), (INSERT, number(&1))]))
        .await;
    let error = outcome.expect_err("the duplicate is refused");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    assert!(!db.is_in_transaction());
    assert!(stored(&observer).await.is_empty());
    // The connection is usable, outside any transaction: this commits at once.
    db.execute(INSERT, &[&3]).await.unwrap();
    assert_eq!(stored(&observer).await, [3]);
}

#[actix_web::test]
async fn work_that_sends_no_commit_is_committed_after_it_and_failed_work_rolled_back() {
    let app = spawn_app().await;
    let (mut db, observer) = probed(&app).await;
    let transaction = db.begin_pipelined().await;
    let client = transaction.client();
    transaction
        .run(client.execute(INSERT, &[&1]))
        .await
        .unwrap();
    assert!(!db.is_in_transaction());
    assert_eq!(stored(&observer).await, [1]);

    // A failure of the work itself, after PostgreSQL accepted its statement.
    let transaction = db.begin_pipelined().await;
    let client = transaction.client();
    let outcome: Result<u64, tokio_postgres::Error> = transaction
        .run(client.execute(INSERT, &[&2]).and_then(|_| async {
            // Any refused statement stands for a failure found by the caller.
            client.execute("SELECT 1/0", &[]).await
        }))
        .await;
    assert!(outcome.is_err());
    assert!(!db.is_in_transaction());
    assert_eq!(stored(&observer).await, [1]);
}

#[actix_web::test]
async fn an_abandoned_transaction_marks_its_connection_for_closing() {
    let app = spawn_app().await;
    let (mut db, observer) = probed(&app).await;
    let transaction = db.begin_pipelined().await;
    let client = transaction.client();
    {
        let work = transaction.run(async {
            client.execute(INSERT, &[&1]).await?;
            // Never ends: the caller gives up on it.
            std::future::pending::<Result<(), tokio_postgres::Error>>().await
        });
        let mut work = std::pin::pin!(work);
        assert!(futures_util::poll!(work.as_mut()).is_pending());
    }
    assert!(db.is_in_transaction());
    // What it sent is not committed; closing the connection rolls it back.
    assert!(stored(&observer).await.is_empty());
}
