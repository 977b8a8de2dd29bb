//! Transaction mode (`#[idempotent(transaction = "tx")]`) against the PostgreSQL on this
//! machine: the claim, the body's writes and the record share the caller's transaction.
//!
//! 50 concurrent transactions on one key (one order row, one result), rollback, `Err` then
//! commit, a child process SIGKILLed between its insert and its commit, a payload mismatch
//! (the caller's transaction still usable and rolled back cleanly), and a waiter that gives
//! up after `wait` while the first transaction stays open (or at once with `reject`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use idem_core::store::{Claim, Store};
use idem_core::{Backoff, Fingerprint, KeyHasher, PostgresStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use tests::postgres::{drop_table, shared_postgres, unique_table};
use tests::redis_server::{Worker, unique};
use tests::{IdemKind, TestError};

const WORKER: &str = env!("CARGO_BIN_EXE_idem_pg_worker");

#[derive(Debug, Clone, Serialize)]
struct PlaceOrder {
    order_id: String,
    amount: u64,
    fail: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Placed {
    order_id: String,
    run: usize,
}

struct Ctx {
    store: SharedStore,
    orders: String,
    runs: Arc<AtomicUsize>,
    body: Duration,
}

impl Ctx {
    fn runs(&self) -> usize {
        self.runs.load(SeqCst)
    }
}

fn db(err: sqlx::Error) -> TestError {
    TestError::Body(err.to_string())
}

async fn body(cmd: &PlaceOrder, ctx: &Ctx, tx: &mut PgConnection) -> Result<Placed, TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    if cmd.fail {
        return Err(TestError::Body("declined".into()));
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO \"{}\" (order_id, placed_by) VALUES ($1, $2)",
        ctx.orders
    )))
    .bind(&cmd.order_id)
    .bind(format!("run-{run}"))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tokio::time::sleep(ctx.body).await;
    Ok(Placed {
        order_id: cmd.order_id.clone(),
        run,
    })
}

#[idempotent(key = "cmd.order_id", name = "tests.pg_tx.place.v1", transaction = "tx", wait = "20s", skip(ctx), store = &ctx.store)]
async fn place(cmd: PlaceOrder, ctx: &Ctx, tx: &mut PgConnection) -> Result<Placed, TestError> {
    body(&cmd, ctx, tx).await
}

/// The same function (name and key), whose duplicates wait at most 1 s.
#[idempotent(key = "cmd.order_id", name = "tests.pg_tx.place.v1", transaction = "tx", wait = "1s", skip(ctx), store = &ctx.store)]
async fn place_wait_1s(
    cmd: PlaceOrder,
    ctx: &Ctx,
    tx: &mut PgConnection,
) -> Result<Placed, TestError> {
    body(&cmd, ctx, tx).await
}

/// The same function, whose duplicates fail at once.
#[idempotent(key = "cmd.order_id", name = "tests.pg_tx.place.v1", transaction = "tx", in_flight = "reject", skip(ctx), store = &ctx.store)]
async fn place_or_reject(
    cmd: PlaceOrder,
    ctx: &Ctx,
    tx: &mut PgConnection,
) -> Result<Placed, TestError> {
    body(&cmd, ctx, tx).await
}

fn cmd(order_id: &str) -> PlaceOrder {
    PlaceOrder {
        order_id: order_id.to_string(),
        amount: 100,
        fail: false,
    }
}

/// A store on a fresh table, its `_orders` table, and a pool for the callers.
struct Fixture {
    ctx: Arc<Ctx>,
    pool: PgPool,
    table: String,
    url: String,
}

impl Fixture {
    async fn new(name: &str, body: Duration, connections: u32) -> Option<Fixture> {
        let url = shared_postgres()?;
        let table = unique_table(name);
        let store = PostgresStore::builder(url.as_str())
            .table(table.as_str())
            .build()
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(20))
            .connect(&url)
            .await
            .unwrap();
        let orders = format!("{table}_orders");
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE \"{orders}\" (order_id text NOT NULL, placed_by text NOT NULL)"
        )))
        .execute(&pool)
        .await
        .unwrap();
        Some(Fixture {
            ctx: Arc::new(Ctx {
                store: SharedStore::new(store),
                orders,
                runs: Arc::new(AtomicUsize::new(0)),
                body,
            }),
            pool,
            table,
            url,
        })
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query(AssertSqlSafe(
            sql.replace("$T", &format!("\"{}\"", self.table))
                .replace("$O", &format!("\"{}\"", self.ctx.orders)),
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
        .get(0)
    }

    async fn orders(&self, order_id: &str) -> i64 {
        self.count(&format!(
            "SELECT count(*) FROM $O WHERE order_id = '{order_id}'"
        ))
        .await
    }

    async fn records(&self) -> i64 {
        self.count("SELECT count(*) FROM $T").await
    }

    /// One transaction: `place`, then commit on `Ok` (roll back on `Err`).
    async fn place_and_commit(&self, cmd: PlaceOrder) -> Result<Placed, TestError> {
        let mut tx = self.pool.begin().await.unwrap();
        let placed = place(cmd, &self.ctx, &mut tx).await;
        if placed.is_ok() {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        placed
    }

    async fn cleanup(self) {
        let _ = sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS \"{}\"",
            self.ctx.orders
        )))
        .execute(&self.pool)
        .await;
        drop_table(&self.pool, &self.table).await;
    }
}

macro_rules! fixture_or_skip {
    ($name:expr, $body:expr, $connections:expr) => {
        match Fixture::new($name, $body, $connections).await {
            Some(fixture) => fixture,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_transactions_create_one_order_and_get_one_result() {
    let fx = Arc::new(fixture_or_skip!("tx50", Duration::from_millis(300), 52));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let fx = Arc::clone(&fx);
            tokio::spawn(async move { fx.place_and_commit(cmd("order-50")).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().unwrap());
    }
    assert_eq!(fx.ctx.runs(), 1, "the body ran once");
    assert!(results.iter().all(|r| *r == results[0]), "{results:?}");
    assert_eq!(fx.orders("order-50").await, 1, "exactly one order row");
    assert_eq!(fx.records().await, 1);
    // A later transaction replays.
    assert_eq!(
        fx.place_and_commit(cmd("order-50")).await.unwrap(),
        results[0]
    );
    assert_eq!(fx.ctx.runs(), 1);
    Arc::try_unwrap(fx).ok().unwrap().cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_leaves_no_row_and_no_record_and_the_retry_runs_at_once() {
    let fx = fixture_or_skip!("txrollback", Duration::from_millis(1), 4);
    let mut tx = fx.pool.begin().await.unwrap();
    let first = place(cmd("rb"), &fx.ctx, &mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(fx.orders("rb").await, 0);
    assert_eq!(
        fx.records().await,
        0,
        "the claim rolled back with the writes"
    );

    let started = Instant::now();
    let retry = fx.place_and_commit(cmd("rb")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no lease to wait out"
    );
    assert_ne!(retry, first, "the retry ran the body");
    assert_eq!(fx.ctx.runs(), 2);
    assert_eq!(fx.orders("rb").await, 1);
    assert_eq!(fx.records().await, 1);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_err_then_commit_stores_no_record_and_the_retry_runs() {
    let fx = fixture_or_skip!("txerr", Duration::from_millis(1), 4);
    let failing = PlaceOrder {
        fail: true,
        ..cmd("err")
    };
    let mut tx = fx.pool.begin().await.unwrap();
    assert_eq!(
        place(failing, &fx.ctx, &mut tx).await,
        Err(TestError::Body("declined".into()))
    );
    // The caller commits anyway: the claim row was deleted in its transaction.
    tx.commit().await.unwrap();
    assert_eq!(fx.records().await, 0, "an uncached Err stores nothing");

    let started = Instant::now();
    fx.place_and_commit(cmd("err")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fx.ctx.runs(), 2, "the retry ran the body");
    assert_eq!(fx.orders("err").await, 1);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_mismatch_is_refused_and_the_callers_transaction_still_rolls_back_cleanly() {
    let fx = fixture_or_skip!("txmismatch", Duration::from_millis(1), 4);
    fx.place_and_commit(cmd("mm")).await.unwrap();

    let mut tx = fx.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO \"{}\" (order_id, placed_by) VALUES ('marker', 'caller')",
        fx.ctx.orders
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let other = PlaceOrder {
        amount: 999,
        ..cmd("mm")
    };
    assert_eq!(
        place(other, &fx.ctx, &mut tx).await,
        Err(TestError::Idem(IdemKind::PayloadMismatch))
    );
    // Not aborted: the caller's own statements still run in it.
    let one: i32 = sqlx::query("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    tx.rollback().await.unwrap();
    assert_eq!(
        fx.orders("marker").await,
        0,
        "the caller's write rolled back"
    );
    assert_eq!(fx.orders("mm").await, 1);
    assert_eq!(fx.ctx.runs(), 1);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gives_up_after_wait_while_the_first_transaction_stays_open() {
    let fx = fixture_or_skip!("txwait", Duration::from_millis(1), 6);
    let mut first = fx.pool.begin().await.unwrap();
    let placed = place(cmd("w"), &fx.ctx, &mut first).await.unwrap();

    let mut waiter = fx.pool.begin().await.unwrap();
    let started = Instant::now();
    assert_eq!(
        place_wait_1s(cmd("w"), &fx.ctx, &mut waiter).await,
        Err(TestError::Idem(IdemKind::InProgress))
    );
    let waited = started.elapsed();
    println!("waiter gave up after {waited:?} (wait = 1s)");
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // The waiter's transaction is still usable and rolls back cleanly.
    sqlx::query("SELECT 1").execute(&mut *waiter).await.unwrap();
    waiter.rollback().await.unwrap();

    let mut rejected = fx.pool.begin().await.unwrap();
    let started = Instant::now();
    assert_eq!(
        place_or_reject(cmd("w"), &fx.ctx, &mut rejected).await,
        Err(TestError::Idem(IdemKind::InProgress))
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "reject fails at once"
    );
    sqlx::query("SELECT 1")
        .execute(&mut *rejected)
        .await
        .unwrap();
    rejected.rollback().await.unwrap();

    // A waiter blocked when the first commits replays its record at once.
    let waiting = {
        let pool = fx.pool.clone();
        let ctx = Arc::clone(&fx.ctx);
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let placed = place(cmd("w"), &ctx, &mut tx).await;
            tx.commit().await.unwrap();
            placed
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.commit().await.unwrap();
    let committed = Instant::now();
    assert_eq!(waiting.await.unwrap().unwrap(), placed);
    assert!(committed.elapsed() < Duration::from_millis(500));
    assert_eq!(fx.ctx.runs(), 1);
    assert_eq!(fx.orders("w").await, 1);
    fx.cleanup().await;
}

/// A waiter behind a committed claim without an outcome polls with its store's
/// `poll_backoff`: one without bound (`Duration::MAX`) saturates at the wait's deadline,
/// never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_poll_backoff_waits_until_the_deadline_without_a_panic() {
    let fx = fixture_or_skip!("txpollmax", Duration::from_millis(1), 2);
    let store = PostgresStore::builder(fx.url.as_str())
        .table(fx.table.as_str())
        .poll_backoff(Backoff::new(Duration::MAX).max(Duration::MAX))
        .build()
        .await
        .unwrap();
    // A claim committed on its own (shared mode), live for a minute.
    let key = KeyHasher::unkeyed()
        .key(&["tests.pg_tx.place.v1"], &"unbounded")
        .unwrap();
    let fingerprint = Fingerprint::from_bytes([0; 32]);
    let claim = store
        .claim(&key, &fingerprint, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Claimed { .. }), "{claim:?}");
    let ctx = Ctx {
        store: SharedStore::new(store),
        orders: fx.ctx.orders.clone(),
        runs: Arc::new(AtomicUsize::new(0)),
        body: Duration::from_millis(1),
    };

    let mut tx = fx.pool.begin().await.unwrap();
    let started = Instant::now();
    assert_eq!(
        place_wait_1s(cmd("unbounded"), &ctx, &mut tx).await,
        Err(TestError::Idem(IdemKind::InProgress))
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    tx.rollback().await.unwrap();
    assert_eq!(ctx.runs(), 0);
    fx.cleanup().await;
}

/// A child process claims and inserts in its transaction and is SIGKILLed before its
/// commit: PostgreSQL rolls the transaction back when the connection drops, so a waiter
/// blocked on the claim runs at once (no lease to wait out), and the order exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_between_its_insert_and_its_commit_leaves_nothing_and_the_next_call_runs_at_once()
 {
    let fx = fixture_or_skip!("txkill", Duration::from_millis(1), 4);
    let order = unique("kill");
    let mut child = Worker::spawn(
        WORKER,
        &[
            "--tx".to_string(),
            format!("{}#{}", fx.url, fx.table),
            "--order".to_string(),
            order.clone(),
            "--hold-ms".to_string(),
            "30000".to_string(),
        ],
    );
    child
        .wait_line("INSERTED", Duration::from_secs(30))
        .expect("the child inserted its order");

    // Same function as the worker's `place_order`: same name, key and payload.
    #[derive(Serialize)]
    struct PlaceOrder {
        order_id: String,
    }
    #[idempotent(key = "cmd.order_id", name = "tests.pg_worker.place_order.v1", transaction = "tx", skip(ctx), store = &ctx.store)]
    async fn place_order(
        cmd: PlaceOrder,
        ctx: &Ctx,
        tx: &mut PgConnection,
    ) -> Result<String, TestError> {
        ctx.runs.fetch_add(1, SeqCst);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO \"{}\" (order_id, placed_by) VALUES ($1, 'test')",
            ctx.orders
        )))
        .bind(&cmd.order_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        Ok("test".to_string())
    }

    let waiter = {
        let pool = fx.pool.clone();
        let ctx = Arc::clone(&fx.ctx);
        let order = order.clone();
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let placed = place_order(PlaceOrder { order_id: order }, &ctx, &mut tx).await;
            tx.commit().await.unwrap();
            (placed, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fx.ctx.runs(), 0, "the waiter blocks on the child's claim");
    child.signal("KILL");
    let killed = Instant::now();
    let (placed, done) = waiter.await.unwrap();
    assert_eq!(placed.unwrap(), "test", "the waiter ran the body");
    let took = done.duration_since(killed);
    println!("SIGKILLed before its commit: the waiter ran after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "no lease to wait out: {took:?}"
    );
    assert_eq!(
        fx.orders(&order).await,
        1,
        "the killed child's insert is gone"
    );
    assert_eq!(fx.ctx.runs(), 1);
    // And a later call replays.
    let mut tx = fx.pool.begin().await.unwrap();
    assert_eq!(
        place_order(
            PlaceOrder {
                order_id: order.clone()
            },
            &fx.ctx,
            &mut tx
        )
        .await
        .unwrap(),
        "test"
    );
    tx.commit().await.unwrap();
    assert_eq!(fx.ctx.runs(), 1);
    let _ = child.finish(Duration::from_secs(5));
    fx.cleanup().await;
}

/// The same function, returning idem's own error (to read its message).
#[idempotent(key = "cmd.order_id", name = "tests.pg_tx.place.v1", transaction = "tx", skip(ctx), store = &ctx.store)]
async fn place_idem_error(
    cmd: PlaceOrder,
    ctx: &Ctx,
    tx: &mut PgConnection,
) -> Result<Placed, idem_core::Error> {
    body(&cmd, ctx, tx)
        .await
        .map_err(|err| idem_core::Error::store(format!("{err:?}")))
}

/// The same function, taking the `sqlx::Transaction` itself.
#[idempotent(key = "cmd.order_id", name = "tests.pg_tx.place.v1", transaction = "tx", wait = "20s", skip(ctx), store = &ctx.store)]
async fn place_in_transaction(
    cmd: PlaceOrder,
    ctx: &Ctx,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<Placed, TestError> {
    body(&cmd, ctx, tx).await
}

/// A pooled connection outside a transaction autocommits each statement: the claim would
/// commit before the body ran. It is refused before anything is written, with an error
/// that names the fix, and the body does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_outside_a_transaction_is_refused_before_anything_is_written() {
    let fx = fixture_or_skip!("txnotx", Duration::from_millis(1), 4);
    let mut conn = fx.pool.acquire().await.unwrap();
    let err = place_idem_error(cmd("notx"), &fx.ctx, &mut conn)
        .await
        .unwrap_err();
    let message = tests::chain(&err);
    println!("{message}");
    assert!(matches!(err, idem_core::Error::Store(_)), "{message}");
    assert!(message.contains("pool.begin()"), "names the fix: {message}");
    assert_eq!(fx.ctx.runs(), 0, "the body did not run");
    assert_eq!(fx.records().await, 0, "no claim row was written");
    assert_eq!(fx.orders("notx").await, 0);
    // In a transaction (here a raw `BEGIN`, which sqlx does not track), the same call runs.
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    let placed = place_idem_error(cmd("notx"), &fx.ctx, &mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await.unwrap();
    assert_eq!(placed.run, 1);
    assert_eq!((fx.records().await, fx.orders("notx").await), (1, 1));
    fx.cleanup().await;
}

/// `&mut sqlx::Transaction<'_, Postgres>` works as `&mut PgConnection` does: the first
/// call runs and commits with its record, a rollback leaves nothing, a retry replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlx_transaction_parameter_works_like_a_connection() {
    let fx = fixture_or_skip!("txparam", Duration::from_millis(1), 4);
    let mut rolled_back = fx.pool.begin().await.unwrap();
    place_in_transaction(cmd("param"), &fx.ctx, &mut rolled_back)
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    assert_eq!((fx.records().await, fx.orders("param").await), (0, 0));

    let mut tx = fx.pool.begin().await.unwrap();
    let (first, outcome) =
        idem_core::observe(place_in_transaction(cmd("param"), &fx.ctx, &mut tx)).await;
    tx.commit().await.unwrap();
    assert_eq!(outcome, Some(idem_core::Outcome::Executed));
    let mut tx = fx.pool.begin().await.unwrap();
    let (retry, outcome) =
        idem_core::observe(place_in_transaction(cmd("param"), &fx.ctx, &mut tx)).await;
    tx.commit().await.unwrap();
    assert_eq!(outcome, Some(idem_core::Outcome::Replayed));
    assert_eq!(first.unwrap(), retry.unwrap());
    assert_eq!(
        fx.ctx.runs(),
        2,
        "the rolled-back run and the committed one"
    );
    assert_eq!(fx.orders("param").await, 1);
    fx.cleanup().await;
}

/// `observe()` reports transaction-mode calls: the first `Executed`, a retry after its
/// commit `Replayed` (not `Waited`), a duplicate blocked until the commit `Waited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_reports_transaction_mode_calls() {
    let fx = fixture_or_skip!("txobserve", Duration::from_millis(300), 4);
    let mut first = fx.pool.begin().await.unwrap();
    let blocked = {
        let pool = fx.pool.clone();
        let ctx = Arc::clone(&fx.ctx);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut tx = pool.begin().await.unwrap();
            let (placed, outcome) = idem_core::observe(place(cmd("obs"), &ctx, &mut tx)).await;
            tx.commit().await.unwrap();
            (placed.unwrap(), outcome)
        })
    };
    let (placed, outcome) = idem_core::observe(place(cmd("obs"), &fx.ctx, &mut first)).await;
    first.commit().await.unwrap();
    assert_eq!(outcome, Some(idem_core::Outcome::Executed));
    let placed = placed.unwrap();
    assert_eq!(
        blocked.await.unwrap(),
        (placed.clone(), Some(idem_core::Outcome::Waited))
    );
    for _ in 0..5 {
        let mut tx = fx.pool.begin().await.unwrap();
        let (again, outcome) = idem_core::observe(place(cmd("obs"), &fx.ctx, &mut tx)).await;
        tx.commit().await.unwrap();
        assert_eq!(
            (again.unwrap(), outcome),
            (placed.clone(), Some(idem_core::Outcome::Replayed))
        );
    }
    assert_eq!(fx.ctx.runs(), 1);
    fx.cleanup().await;
}

/// The caller's `statement_timeout` (500 ms) is shorter than `wait` (1 s) while another
/// transaction holds the key: the call ends in `InProgress` after its `wait`, and the
/// caller's transaction is not aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_statement_timeout_never_aborts_its_transaction() {
    let fx = fixture_or_skip!("txstmt", Duration::from_millis(1), 4);
    let mut holder = fx.pool.begin().await.unwrap();
    place(cmd("st"), &fx.ctx, &mut holder).await.unwrap();

    let mut waiter = fx.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = '500ms'")
        .execute(&mut *waiter)
        .await
        .unwrap();
    let started = Instant::now();
    let result = place_wait_1s(cmd("st"), &fx.ctx, &mut waiter).await;
    let waited = started.elapsed();
    println!("with statement_timeout 500ms and wait 1s: {result:?} after {waited:?}");
    assert_eq!(result, Err(TestError::Idem(IdemKind::InProgress)));
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    // The caller's transaction goes on.
    sqlx::query("SELECT 1").execute(&mut *waiter).await.unwrap();
    waiter.commit().await.unwrap();

    // Once the holder commits, a caller with the same timeout replays.
    holder.commit().await.unwrap();
    let mut tx = fx.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = '500ms'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        place_wait_1s(cmd("st"), &fx.ctx, &mut tx)
            .await
            .unwrap()
            .run,
        1
    );
    tx.commit().await.unwrap();
    assert_eq!(fx.ctx.runs(), 1);
    fx.cleanup().await;
}

/// Holders that claim the key and roll back one after another (each claim waited on, then
/// gone): a duplicate's `wait = "1s"` is still one deadline for its whole call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_one_deadline_while_holders_roll_back_one_after_another() {
    let fx = fixture_or_skip!("txchain", Duration::from_millis(400), 8);
    let until = Instant::now() + Duration::from_secs(6);
    let mut holders = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (pool, ctx) = (fx.pool.clone(), Arc::clone(&fx.ctx));
        holders.spawn(async move {
            while Instant::now() < until {
                let mut tx = pool.begin().await.unwrap();
                let _ = place(cmd("chain"), &ctx, &mut tx).await;
                tx.rollback().await.unwrap();
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The duplicate's own body is instant: if it wins a claim, it returns at once.
    let quick = Ctx {
        store: fx.ctx.store.clone(),
        orders: fx.ctx.orders.clone(),
        runs: Arc::new(AtomicUsize::new(0)),
        body: Duration::ZERO,
    };
    let mut longest = Duration::ZERO;
    for _ in 0..4 {
        let mut tx = fx.pool.begin().await.unwrap();
        let started = Instant::now();
        let result = place_wait_1s(cmd("chain"), &quick, &mut tx).await;
        let took = started.elapsed();
        tx.rollback().await.unwrap();
        println!("duplicate with wait 1s: {result:?} after {took:?}");
        longest = longest.max(took);
    }
    while holders.join_next().await.is_some() {}
    assert!(
        longest < Duration::from_millis(1300),
        "wait = 1s, the longest call took {longest:?}"
    );
    fx.cleanup().await;
}
