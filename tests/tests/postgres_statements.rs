//! How many statements idem sends to PostgreSQL per call, counted from sqlx's own
//! per-statement events (one test binary of its own, on a current-thread runtime, so the
//! counting subscriber sees every statement and nothing else's).
//!
//! Shared-store mode: a hit is one statement, a first call two. Transaction mode: a first
//! call adds two statements to the caller's transaction (the claim function, the record's
//! `UPDATE`), a replay one.

use std::time::Duration;

use idem_core::{PostgresStore, SharedStore, idempotent};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tests::TestError;
use tests::postgres::{StatementCounter, drop_table, shared_postgres, unique_table};

struct Ctx {
    store: SharedStore,
    orders: String,
}

#[idempotent(key = "id", name = "tests.pg_count.shared.v1", skip(ctx), store = &ctx.store)]
async fn shared(id: String, ctx: &Ctx) -> Result<String, TestError> {
    Ok(format!("receipt-{id}"))
}

#[idempotent(key = "id", name = "tests.pg_count.tx.v1", transaction = "tx", skip(ctx), store = &ctx.store)]
async fn in_tx(id: String, ctx: &Ctx, tx: &mut PgConnection) -> Result<String, TestError> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO \"{}\" (order_id) VALUES ($1)",
        ctx.orders
    )))
    .bind(&id)
    .execute(&mut *tx)
    .await
    .map_err(|err| TestError::Body(err.to_string()))?;
    Ok(format!("order-{id}"))
}

#[tokio::test(flavor = "current_thread")]
async fn statements_per_call_in_both_modes() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let table = unique_table("count");
    let store = PostgresStore::builder(url.as_str())
        .table(table.as_str())
        .max_connections(1)
        .build()
        .await
        .unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let orders = format!("{table}_orders");
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE \"{orders}\" (order_id text NOT NULL)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let ctx = Ctx {
        store: SharedStore::new(store),
        orders: orders.clone(),
    };
    let counter = StatementCounter::default();
    let _guard = tracing::subscriber::set_default(counter.clone());
    tracing::callsite::rebuild_interest_cache();

    // Shared mode, after a warm-up that prepares the statements on the connection.
    shared("warm".into(), &ctx).await.unwrap();
    shared("warm".into(), &ctx).await.unwrap();
    counter.take();
    shared("s-1".into(), &ctx).await.unwrap();
    let first = counter.take();
    shared("s-1".into(), &ctx).await.unwrap();
    let hit = counter.take();
    println!("shared mode: first call {first:?}; hit {hit:?}");
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(hit.len(), 1, "{hit:?}");

    // Transaction mode: the statements idem adds to the caller's transaction (one begun
    // by sqlx; a raw `BEGIN`, which sqlx does not track, costs one more to check it).
    let mut conn = pool.acquire().await.unwrap();
    for (id, expected) in [("warm", None), ("t-1", Some(2)), ("t-1", Some(1))] {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        counter.take();
        in_tx(id.into(), &ctx, &mut tx).await.unwrap();
        let sent = counter.take();
        tx.commit().await.unwrap();
        if let Some(expected) = expected {
            // The body's own INSERT is the caller's statement, not idem's.
            let idem: Vec<_> = sent.iter().filter(|s| !s.contains(&orders)).collect();
            println!("transaction mode ({id}): {sent:?}");
            assert_eq!(idem.len(), expected, "{sent:?}");
        }
    }
    drop(conn);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{orders}\"")))
        .execute(&pool)
        .await;
    drop_table(&pool, &table).await;
}
