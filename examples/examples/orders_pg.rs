//! Orders in PostgreSQL, with the idempotency record in the same transaction as the order
//! (`#[idempotent(transaction = "tx")]`): the order rows and the record commit together or
//! not at all.
//!
//! ```text
//! cargo run -p examples --features postgres --example orders_pg  # replay, 50 duplicates, rollback
//! cargo run -p examples --features postgres --example orders_pg -- --crash  # a child killed before its commit
//! ```
//!
//! On `IDEM_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Each run uses
//! its own tables (`orders_pg_{pid}_*`) and drops them at the end.
//!
//! - a first order, then a retry of the same command: replayed, one order row;
//! - 50 concurrent duplicates, each in its own transaction: one order, 50 equal answers;
//! - a transaction rolled back after the order was placed: no order, no record, and the
//!   retry places it at once;
//! - `--crash`: a child process places an order and is SIGKILLed between its writes and its
//!   commit; PostgreSQL rolls its transaction back, and the retry creates the order once.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_core::{PostgresStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

/// What the client sends; `order_id` is its idempotency key.
#[derive(Debug, Clone, Serialize)]
struct PlaceOrder {
    order_id: String,
    customer: String,
    items: Vec<(String, u32)>,
}

/// What the client gets back: stored with the order, replayed to retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    total_items: u32,
    placed_by_pid: u32,
}

// Read through `Debug` when `main` returns the error.
#[allow(dead_code)]
#[derive(Debug)]
enum OrderError {
    Db(String),
    Idempotency(idem_core::Error),
}

impl From<idem_core::Error> for OrderError {
    fn from(err: idem_core::Error) -> Self {
        OrderError::Idempotency(err)
    }
}

impl From<sqlx::Error> for OrderError {
    fn from(err: sqlx::Error) -> Self {
        OrderError::Db(err.to_string())
    }
}

struct Shop {
    store: SharedStore,
    /// The store's table (its records).
    idem: String,
    orders: String,
    lines: String,
}

/// Writes the order and its lines through the caller's transaction; idem writes the
/// record through it too.
#[idempotent(key = "cmd.order_id", name = "orders_pg.place.v1", transaction = "tx", skip(shop), store = &shop.store)]
async fn place_order(
    cmd: PlaceOrder,
    shop: &Shop,
    tx: &mut PgConnection,
) -> Result<OrderPlaced, OrderError> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (order_id, customer) VALUES ($1, $2)",
        shop.orders
    )))
    .bind(&cmd.order_id)
    .bind(&cmd.customer)
    .execute(&mut *tx)
    .await?;
    for (sku, quantity) in &cmd.items {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (order_id, sku, quantity) VALUES ($1, $2, $3)",
            shop.lines
        )))
        .bind(&cmd.order_id)
        .bind(sku)
        .bind(i32::try_from(*quantity).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    }
    Ok(OrderPlaced {
        order_id: cmd.order_id.clone(),
        total_items: cmd.items.iter().map(|(_, q)| q).sum(),
        placed_by_pid: std::process::id(),
    })
}

fn command(order_id: &str) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id.to_string(),
        customer: "cus_42".to_string(),
        items: vec![("sku-red-mug".to_string(), 2), ("sku-tea".to_string(), 1)],
    }
}

/// One transaction: place the order, commit.
async fn place_and_commit(
    pool: &PgPool,
    shop: &Shop,
    order_id: &str,
) -> Result<OrderPlaced, OrderError> {
    let mut tx = pool.begin().await?;
    let placed = place_order(command(order_id), shop, &mut tx).await?;
    tx.commit().await?;
    Ok(placed)
}

async fn count(pool: &PgPool, table: &str, order_id: &str) -> i64 {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE order_id = $1"
    )))
    .bind(order_id)
    .fetch_one(pool)
    .await
    .map(|row| row.get(0))
    .unwrap_or(-1)
}

async fn shop(url: &str, prefix: &str) -> Result<(Shop, PgPool), OrderError> {
    let store = PostgresStore::builder(url)
        .table(format!("{prefix}_idem"))
        .max_connections(4)
        .build()
        .await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(55)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?;
    let shop = Shop {
        store: SharedStore::new(store),
        idem: format!("{prefix}_idem"),
        orders: format!("{prefix}_orders"),
        lines: format!("{prefix}_lines"),
    };
    for ddl in [
        format!(
            "CREATE TABLE IF NOT EXISTS {} (order_id text NOT NULL, customer text NOT NULL)",
            shop.orders
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (order_id text NOT NULL, sku text NOT NULL, quantity int NOT NULL)",
            shop.lines
        ),
    ] {
        sqlx::query(AssertSqlSafe(ddl)).execute(&pool).await?;
    }
    Ok((shop, pool))
}

async fn drop_tables(pool: &PgPool, prefix: &str) {
    let _ = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {prefix}_orders, {prefix}_lines, {prefix}_idem; DROP FUNCTION IF EXISTS {prefix}_idem_claim;"
    )))
    .execute(pool)
    .await;
}

#[tokio::main]
async fn main() -> Result<(), OrderError> {
    let url = std::env::var("IDEM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let args: Vec<String> = std::env::args().collect();
    // The child of the crash drill: place the order, report, and wait to be killed.
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let prefix = &args[i + 1];
        let order_id = &args[i + 2];
        let (shop, pool) = shop(&url, prefix).await?;
        let mut tx = pool.begin().await?;
        let placed = place_order(command(order_id), &shop, &mut tx).await?;
        println!("WRITTEN {}", placed.placed_by_pid);
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.commit().await?;
        return Ok(());
    }

    let prefix = format!("orders_pg_{}", std::process::id());
    let (shop, pool) = shop(&url, &prefix).await?;
    let shop = Arc::new(shop);
    let outcome = if args.iter().any(|a| a == "--crash") {
        crash_drill(&pool, &shop, &prefix).await
    } else {
        tour(&pool, &shop).await
    };
    drop_tables(&pool, &prefix).await;
    outcome
}

async fn tour(pool: &PgPool, shop: &Arc<Shop>) -> Result<(), OrderError> {
    println!("1. a first order, then a retry of the same command");
    let first = place_and_commit(pool, shop, "order-1001").await?;
    let retry = place_and_commit(pool, shop, "order-1001").await?;
    println!(
        "   first: {first:?}\n   retry: {retry:?} (replayed: {})",
        first == retry
    );
    println!(
        "   order-1001: {} order row, {} line rows",
        count(pool, &shop.orders, "order-1001").await,
        count(pool, &shop.lines, "order-1001").await
    );

    println!("2. 50 concurrent duplicates, each in its own transaction");
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (pool, shop) = (pool.clone(), Arc::clone(shop));
            tokio::spawn(async move { place_and_commit(&pool, &shop, "order-2002").await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("task")?);
    }
    println!(
        "   {} answers, all equal: {}; order-2002: {} order row, {} line rows",
        answers.len(),
        answers.iter().all(|a| *a == answers[0]),
        count(pool, &shop.orders, "order-2002").await,
        count(pool, &shop.lines, "order-2002").await
    );

    println!("3. a transaction rolled back after the order was placed");
    let mut tx = pool.begin().await?;
    place_order(command("order-3003"), shop, &mut tx).await?;
    tx.rollback().await?;
    let records: i64 = sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {}", shop.idem)))
        .fetch_one(pool)
        .await?
        .get(0);
    println!(
        "   after the rollback: {} order rows; {records} idempotency records (order-1001 and order-2002 only)",
        count(pool, &shop.orders, "order-3003").await,
    );
    let started = Instant::now();
    place_and_commit(pool, shop, "order-3003").await?;
    println!(
        "   the retry placed it after {:?}: {} order row",
        started.elapsed(),
        count(pool, &shop.orders, "order-3003").await
    );
    Ok(())
}

async fn crash_drill(pool: &PgPool, shop: &Arc<Shop>, prefix: &str) -> Result<(), OrderError> {
    let order_id = "order-4004";
    println!("crash drill: a child places {order_id} and is killed before its commit");
    let exe = std::env::current_exe().map_err(|err| OrderError::Db(err.to_string()))?;
    let mut child = Command::new(exe)
        .args(["--child", prefix, order_id])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| OrderError::Db(err.to_string()))?;
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|err| OrderError::Db(err.to_string()))?;
    }
    println!(
        "   child {}: wrote the order, not committed ({})",
        child.id(),
        line.trim()
    );
    let retry = {
        let (pool, shop) = (pool.clone(), Arc::clone(shop));
        tokio::spawn(async move { place_and_commit(&pool, &shop, order_id).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("   a retry is waiting on the child's claim row; SIGKILL the child");
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let killed = Instant::now();
    let _ = child.wait();
    let placed = retry.await.expect("task")?;
    println!(
        "   the retry placed it {:?} after the kill, in pid {} (the child was {})",
        killed.elapsed(),
        placed.placed_by_pid,
        child.id()
    );
    let again = place_and_commit(pool, shop, order_id).await?;
    println!(
        "   a later retry replays: {}; {order_id}: {} order row, {} line rows",
        again == placed,
        count(pool, &shop.orders, order_id).await,
        count(pool, &shop.lines, order_id).await
    );
    Ok(())
}
