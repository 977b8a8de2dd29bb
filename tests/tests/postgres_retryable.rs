//! `Error::is_retryable`: a transaction PostgreSQL failed to break a conflict (here a
//! serialization failure under REPEATABLE READ) is told apart from a store that is down.

use std::time::Duration;

use idem_core::{Error, PostgresStore, SharedStore, idempotent};
use sqlx::PgConnection;
use tests::postgres::{drop_table, shared_postgres, unique_table};

#[idempotent(name = "tests.pg_retryable.book.v1", transaction = "tx", skip(store), store = store)]
async fn book(seat: u32, store: &SharedStore, tx: &mut PgConnection) -> Result<u32, Error> {
    sqlx::query("SELECT pg_sleep(0.3)")
        .execute(&mut *tx)
        .await
        .map_err(Error::store)?;
    Ok(seat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serialization_failure_is_retryable_and_a_store_outage_is_not() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let table = unique_table("retryable");
    let store = PostgresStore::builder(url.as_str())
        .table(table.as_str())
        .purge_interval(None)
        .build()
        .await
        .unwrap();
    let shared = SharedStore::new(store.clone());
    let pool = store.pool().clone();

    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *second)
        .await
        .unwrap();
    // The snapshot is taken before the first transaction commits.
    sqlx::query("SELECT 1").execute(&mut *second).await.unwrap();
    let holder = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let seat = book(7, &shared, &mut first).await;
            first.commit().await.unwrap();
            seat
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = book(7, &shared, &mut second).await.unwrap_err();
    println!("{}", tests::chain(&err));
    assert!(matches!(err, Error::Store(_)));
    assert!(err.is_retryable(), "{}", tests::chain(&err));
    second.rollback().await.unwrap();
    assert_eq!(holder.await.unwrap().unwrap(), 7);
    // Retried at once, the transaction replays.
    let mut retry = pool.begin().await.unwrap();
    assert_eq!(book(7, &shared, &mut retry).await.unwrap(), 7);
    retry.commit().await.unwrap();

    // A store that is down is not "retry now".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = PostgresStore::builder(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(down, Error::Store(_)));
    assert!(!down.is_retryable(), "{}", tests::chain(&down));
    assert!(!Error::InProgress.is_retryable());
    drop_table(&pool, &table).await;
}
