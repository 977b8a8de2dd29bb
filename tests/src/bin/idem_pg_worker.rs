//! A worker process for the multi-process PostgreSQL tests.
//!
//! ```text
//! idem_pg_worker --url URL#TABLE --order ID --amount N --callers C --body-ms MS --log PATH [--wait-go]
//! idem_pg_worker --tx URL#TABLE --order ID --hold-ms MS
//! ```
//!
//! The first form is the protocol of `idem_redis_worker` on a `PostgresStore` (shared-store
//! mode) on table `TABLE`: prints `READY`, optionally waits for `GO` on stdin, runs `C`
//! concurrent calls of an idempotent `charge` (lease 1 s, wait 20 s); each body run
//! appends `EXEC <pid> <charge id>` to the log and prints `STARTED <charge id>`, sleeps
//! `MS`; each call prints `OK <charge id> <amount>` or `ERR <error>`; then `DONE`.
//!
//! The second form is transaction mode: in one transaction, an idempotent `place_order`
//! (`transaction = "tx"`) inserts a row into `TABLE_orders`; the worker prints `INSERTED`
//! and then waits `MS` before it commits and prints `COMMITTED <order id>` (the crash tests
//! SIGKILL it while it waits).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_core::{Error, PostgresStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize)]
struct ChargeRequest {
    id: String,
    amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount_cents: u64,
}

#[derive(Debug)]
enum WorkerError {
    Idem(Error),
    Db(sqlx::Error),
}

impl WorkerError {
    /// `Idem(InProgress)`-style names, as the tests match them.
    fn describe(&self) -> String {
        match self {
            WorkerError::Idem(err) => format!("{err:?}"),
            WorkerError::Db(err) => format!("Db({err})"),
        }
    }
}

impl From<Error> for WorkerError {
    fn from(err: Error) -> Self {
        WorkerError::Idem(err)
    }
}

impl From<sqlx::Error> for WorkerError {
    fn from(err: sqlx::Error) -> Self {
        WorkerError::Db(err)
    }
}

struct Ctx {
    store: SharedStore,
    log: PathBuf,
    body: Duration,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn charge_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("ch_{}_{nanos}", std::process::id())
}

#[idempotent(
    key = "req.id",
    name = "tests.pg_worker.charge.v1",
    ttl = "1h",
    lease = "1s",
    wait = "20s",
    skip(ctx),
    store = &ctx.store
)]
async fn charge(req: ChargeRequest, ctx: &Ctx) -> Result<Receipt, WorkerError> {
    let charge_id = charge_id();
    {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ctx.log)
            .expect("open the execution log");
        log.write_all(format!("EXEC {} {charge_id}\n", std::process::id()).as_bytes())
            .expect("append to the execution log");
    }
    say(&format!("STARTED {charge_id}"));
    tokio::time::sleep(ctx.body).await;
    Ok(Receipt {
        charge_id,
        amount_cents: req.amount_cents,
    })
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `URL#TABLE` split.
fn url_and_table(value: &str) -> (String, String) {
    let (url, table) = value.split_once('#').expect("URL#TABLE");
    (url.to_string(), table.to_string())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(target) = arg(&args, "--tx") {
        return transaction_mode(&args, &target).await;
    }
    let need = |name: &str| arg(&args, name).unwrap_or_else(|| panic!("missing {name}"));
    let (url, table) = url_and_table(&need("--url"));
    let order = need("--order");
    let amount: u64 = need("--amount").parse().expect("--amount");
    let callers: usize = need("--callers").parse().expect("--callers");
    let body = Duration::from_millis(need("--body-ms").parse().expect("--body-ms"));
    let log = PathBuf::from(need("--log"));

    let store = PostgresStore::builder(url.as_str())
        .table(table)
        .build()
        .await
        .expect("connect to postgres");
    let ctx = Arc::new(Ctx {
        store: SharedStore::new(store),
        log,
        body,
    });
    say("READY");
    if args.iter().any(|a| a == "--wait-go") {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .expect("read GO");
    }

    let calls: Vec<_> = (0..callers)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            let req = ChargeRequest {
                id: order.clone(),
                amount_cents: amount,
            };
            tokio::spawn(async move { charge(req, &ctx).await })
        })
        .collect();
    for call in calls {
        match call.await.expect("call task") {
            Ok(receipt) => say(&format!(
                "OK {} {}",
                receipt.charge_id, receipt.amount_cents
            )),
            Err(err) => say(&format!("ERR {}", err.describe())),
        }
    }
    say("DONE");
}

#[derive(Debug, Clone, Serialize)]
struct PlaceOrder {
    order_id: String,
}

struct TxCtx {
    store: SharedStore,
    orders: String,
}

#[idempotent(
    key = "cmd.order_id",
    name = "tests.pg_worker.place_order.v1",
    transaction = "tx",
    skip(ctx),
    store = &ctx.store
)]
async fn place_order(
    cmd: PlaceOrder,
    ctx: &TxCtx,
    tx: &mut sqlx::PgConnection,
) -> Result<String, WorkerError> {
    let placed_by = format!("pid-{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{}\" (order_id, placed_by) VALUES ($1, $2)",
        ctx.orders
    )))
    .bind(&cmd.order_id)
    .bind(&placed_by)
    .execute(&mut *tx)
    .await?;
    Ok(placed_by)
}

async fn transaction_mode(args: &[String], target: &str) {
    let need = |name: &str| arg(args, name).unwrap_or_else(|| panic!("missing {name}"));
    let (url, table) = url_and_table(target);
    let order = need("--order");
    let hold = Duration::from_millis(need("--hold-ms").parse().expect("--hold-ms"));
    let store = PostgresStore::builder(url.as_str())
        .table(table.as_str())
        .build()
        .await
        .expect("connect to postgres");
    let pool = store.pool().clone();
    let ctx = TxCtx {
        store: SharedStore::new(store),
        orders: format!("{table}_orders"),
    };
    say("READY");
    let mut tx = pool.begin().await.expect("begin");
    let placed = place_order(
        PlaceOrder {
            order_id: order.clone(),
        },
        &ctx,
        &mut tx,
    )
    .await;
    match placed {
        Ok(placed_by) => say(&format!("INSERTED {placed_by}")),
        Err(err) => {
            say(&format!("ERR {}", err.describe()));
            return;
        }
    }
    tokio::time::sleep(hold).await;
    tx.commit().await.expect("commit");
    say(&format!("COMMITTED {order}"));
}
