//! PostgreSQL benchmarks: `PostgresStore` beside raw statements on the same server, in
//! the same run (`cargo bench -p idem-core --features bench-postgres --bench postgres`).
//!
//! Latency on a shared 2-vCPU machine swings from batch to batch, so each row is a paired
//! loop: every iteration runs the baseline and the measured operation back to back (in
//! alternating order), and the medians of both are reported with the median of the
//! per-pair differences.
//!
//! - shared-mode hit vs a raw `SELECT` of one row by primary key;
//! - shared-mode first call vs a raw `INSERT .. ON CONFLICT DO NOTHING`;
//! - transaction-mode first call (claim + business insert + record, then commit) vs a bare
//!   transaction doing the same business insert.
//!
//! `IDEM_DATABASE_URL` picks the server (default `postgres://postgres@127.0.0.1:5432/test`);
//! `IDEM_BENCH_PAIRS` the number of pairs (default 2000).
#![allow(missing_docs)]

#[path = "common/machine.rs"]
mod machine;

use std::future::Future;
use std::time::{Duration, Instant};

use idem_core::{PostgresStore, SharedStore, idempotent};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

#[derive(Debug)]
struct BenchError;

impl From<idem_core::Error> for BenchError {
    fn from(_: idem_core::Error) -> Self {
        BenchError
    }
}

struct Ctx {
    store: SharedStore,
    orders: String,
}

#[idempotent(key = "id", name = "bench.pg.shared.v1", skip(ctx), store = &ctx.store)]
async fn shared(id: u64, ctx: &Ctx) -> Result<String, BenchError> {
    Ok(format!("receipt-{id}"))
}

#[idempotent(key = "id", name = "bench.pg.tx.v1", transaction = "tx", skip(ctx), store = &ctx.store)]
async fn in_tx(id: u64, ctx: &Ctx, tx: &mut PgConnection) -> Result<String, BenchError> {
    business_insert(tx, &ctx.orders, id).await;
    Ok(format!("order-{id}"))
}

async fn business_insert(conn: &mut PgConnection, orders: &str, id: u64) {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO \"{orders}\" (order_id, amount) VALUES ($1, 4250)"
    )))
    .bind(id as i64)
    .execute(conn)
    .await
    .expect("business insert");
}

struct Row {
    name: &'static str,
    measured: f64,
    baseline_name: &'static str,
    baseline: f64,
    extra: f64,
    target: &'static str,
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// `pairs` iterations of the baseline and the measured operation back to back.
async fn paired<A, FA, B, FB>(pairs: u64, mut baseline: A, mut measured: B) -> (f64, f64, f64)
where
    A: FnMut(u64) -> FA,
    FA: Future<Output = ()>,
    B: FnMut(u64) -> FB,
    FB: Future<Output = ()>,
{
    let (mut base, mut meas, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let (b, m) = if i % 2 == 0 {
            let t = Instant::now();
            baseline(i).await;
            let b = t.elapsed();
            let t = Instant::now();
            measured(i).await;
            (b, t.elapsed())
        } else {
            let t = Instant::now();
            measured(i).await;
            let m = t.elapsed();
            let t = Instant::now();
            baseline(i).await;
            (t.elapsed(), m)
        };
        let (b, m) = (b.as_nanos() as f64, m.as_nanos() as f64);
        base.push(b);
        meas.push(m);
        diff.push(m - b);
    }
    (median(&mut base), median(&mut meas), median(&mut diff))
}

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--bench") {
        machine::print_machine();
    }
    let url = std::env::var("IDEM_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let pairs: u64 = std::env::var("IDEM_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let table = format!("idem_bench_{}", std::process::id());
    let orders = format!("{table}_orders");
    let raw_table = format!("{table}_raw");
    // One connection each, so every operation is one round trip on a warm connection.
    let store = PostgresStore::builder(url.as_str())
        .table(table.as_str())
        .max_connections(1)
        .purge_interval(None)
        .build()
        .await
        .expect("connect");
    let pool = PgPool::connect(&url).await.expect("connect");
    for ddl in [
        format!("CREATE TABLE \"{orders}\" (order_id bigint NOT NULL, amount bigint NOT NULL)"),
        format!(
            "CREATE TABLE \"{raw_table}\" (key bytea PRIMARY KEY, version smallint NOT NULL, fingerprint bytea NOT NULL, token bytea NOT NULL, value bytea, expires_at timestamptz NOT NULL)"
        ),
    ] {
        sqlx::query(AssertSqlSafe(ddl))
            .execute(&pool)
            .await
            .expect("ddl");
    }
    let ctx = Ctx {
        store: SharedStore::new(store),
        orders: orders.clone(),
    };
    let mut raw = PgConnection::connect(&url).await.expect("connect");
    let mut caller = PgConnection::connect(&url).await.expect("connect");

    // The record a hit reads, and the same row for the raw SELECT.
    shared(0, &ctx).await.expect("first call");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO \"{raw_table}\" SELECT * FROM \"{table}\""
    )))
    .execute(&pool)
    .await
    .expect("copy the record");
    let record_key: Vec<u8> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT key FROM \"{table}\" LIMIT 1"
    )))
    .fetch_one(&pool)
    .await
    .expect("the record's key");

    let select =
        format!("SELECT value, expires_at > clock_timestamp() FROM \"{raw_table}\" WHERE key = $1");
    let insert = format!(
        "INSERT INTO \"{raw_table}\" (key, version, fingerprint, token, value, expires_at) VALUES ($1, 1, $2, $3, NULL, clock_timestamp() + interval '30 seconds') ON CONFLICT (key) DO NOTHING"
    );
    let raw = tokio::sync::Mutex::new(&mut raw);
    let mut rows = Vec::new();

    let (baseline, measured, extra) = paired(
        pairs,
        |_| {
            let select = select.clone();
            let key = record_key.clone();
            let raw = &raw;
            async move {
                let mut conn = raw.lock().await;
                sqlx::query(AssertSqlSafe(select))
                    .bind(key)
                    .fetch_one(&mut **conn)
                    .await
                    .expect("select");
            }
        },
        |_| async { shared(0, &ctx).await.map(drop).expect("hit") },
    )
    .await;
    rows.push(Row {
        name: "shared-mode hit (1 statement)",
        measured,
        baseline_name: "raw SELECT of the row by primary key",
        baseline,
        extra,
        target: "≤ 1.3× the raw SELECT",
    });

    let (baseline, measured, extra) = paired(
        pairs,
        |i| {
            let insert = insert.clone();
            let raw = &raw;
            async move {
                let mut conn = raw.lock().await;
                let key = blake3::hash(&i.to_le_bytes());
                sqlx::query(AssertSqlSafe(insert))
                    .bind(key.as_bytes().as_slice())
                    .bind([0u8; 32].as_slice())
                    .bind([0u8; 16].as_slice())
                    .execute(&mut **conn)
                    .await
                    .expect("insert");
            }
        },
        |i| {
            let ctx = &ctx;
            async move {
                shared(1_000_000 + i, ctx)
                    .await
                    .map(drop)
                    .expect("first call")
            }
        },
    )
    .await;
    rows.push(Row {
        name: "shared-mode first call (2 statements: claim, complete)",
        measured,
        baseline_name: "raw INSERT .. ON CONFLICT DO NOTHING",
        baseline,
        extra,
        target: "",
    });

    let caller = tokio::sync::Mutex::new(&mut caller);
    let (baseline, measured, extra) = paired(
        pairs,
        |i| {
            let caller = &caller;
            let orders = &orders;
            async move {
                let mut conn = caller.lock().await;
                let mut tx = conn.begin().await.expect("begin");
                business_insert(&mut tx, orders, 2_000_000 + i).await;
                tx.commit().await.expect("commit");
            }
        },
        |i| {
            let caller = &caller;
            let ctx = &ctx;
            async move {
                let mut conn = caller.lock().await;
                let mut tx = conn.begin().await.expect("begin");
                in_tx(3_000_000 + i, ctx, &mut tx).await.expect("tx call");
                tx.commit().await.expect("commit");
            }
        },
    )
    .await;
    rows.push(Row {
        name: "transaction-mode first call (+2 statements in the transaction)",
        measured,
        baseline_name: "bare transaction: BEGIN, the same insert, COMMIT",
        baseline,
        extra,
        target: "≤ 2 added statements",
    });

    println!("\nPostgreSQL, {pairs} pairs each (medians):\n");
    println!("| measured | median | baseline | median | median extra per pair | ratio | target |");
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2}× | {} |",
            row.name,
            us(row.measured),
            row.baseline_name,
            us(row.baseline),
            us(row.extra),
            row.measured / row.baseline,
            row.target
        );
    }

    for table in [&orders, &raw_table, &table] {
        let _ = sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS \"{table}\"")))
            .execute(&pool)
            .await;
    }
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP FUNCTION IF EXISTS \"{table}_claim\""
    )))
    .execute(&pool)
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}
