//! An idempotent consumer of order events on NATS JetStream that writes each order to
//! PostgreSQL in the handler's own transaction, and a crash drill that proves it.
//!
//! ```text
//! cargo run -p examples --features nats --example orders_consumer  # one consumer
//! cargo run -p examples --features nats --example orders_consumer -- --crash-drill  # consumers SIGKILLed
//! ```
//!
//! `NATS_URL` (default `127.0.0.1:4222`) and `IDEM_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) pick the broker and the database. Each run
//! makes its own stream, consumer and tables, and removes them at the end.
//!
//! The publisher sends 150 order events and publishes 50 of them a second time under a new
//! `Nats-Msg-Id` — what a producer does when it retries after the broker's duplicate window,
//! so the broker cannot drop the copy itself. The consumer keys each order by its business
//! id (`order_id`), writes it with `#[idempotent(transaction = "tx")]`: the claim, the
//! order row and the stored outcome commit together or not at all, and the message is
//! acked (double ack) only after the commit.
//!
//! `--crash-drill [--kills N]` runs the consumer as child processes and SIGKILLs them `N`
//! times (default 6): at a random moment, right after the order row is written (before
//! the commit), and right after the commit (before the ack), restarting one each time,
//! then lets a last one finish. It prints the events published, the distinct orders, the
//! orders written, and the messages left unacked, and exits non-zero unless each order was
//! written exactly once and nothing is left unacked. The orders table has no unique
//! constraint on `order_id`: a second write would show.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use idem_core::nats::async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use idem_core::nats::{Delivery, HandlerError, Processor, async_nats};
use idem_core::{PostgresStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio::time::Instant;

/// Distinct orders published.
const ORDERS: usize = 150;
/// Of those, how many are published a second time under another `Nats-Msg-Id`.
const DUPLICATES: usize = 50;
/// The consumer's `AckWait`: short, so a killed consumer's messages come back quickly.
const ACK_WAIT: Duration = Duration::from_secs(1);
/// Messages handled at once by one consumer process.
const SLOTS: usize = 4;
/// The drill gives up (and fails) after this long.
const DRILL_LIMIT: Duration = Duration::from_secs(60);

/// The event on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    customer: String,
    amount_cents: i64,
}

#[derive(Debug)]
enum OrderError {
    Idem(idem_core::Error),
    Database(sqlx::Error),
}

impl From<idem_core::Error> for OrderError {
    fn from(err: idem_core::Error) -> Self {
        OrderError::Idem(err)
    }
}

impl From<sqlx::Error> for OrderError {
    fn from(err: sqlx::Error) -> Self {
        OrderError::Database(err)
    }
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderError::Idem(err) => write!(f, "{err}"),
            OrderError::Database(err) => write!(f, "database: {err}"),
        }
    }
}

/// Tells `idem_core::nats` which errors are idem's: in progress elsewhere → nak with a
/// delay; same order id with other content → terminate; anything else → nak with backoff.
impl HandlerError for OrderError {
    fn idem_error(&self) -> Option<&idem_core::Error> {
        match self {
            OrderError::Idem(err) => Some(err),
            OrderError::Database(_) => None,
        }
    }
}

/// One run's name: of its stream (subject `RUN.placed`, durable consumer `orders`) and of
/// its PostgreSQL schema, which holds the `orders` table and the idempotency records
/// (`idem_records`), dropped as a whole at the end.
#[derive(Debug, Clone)]
struct Run(String);

impl Run {
    fn fresh() -> Run {
        Run(format!(
            "orders_drill_{}_{}",
            std::process::id(),
            fastrand::u32(..)
        ))
    }

    fn subject(&self) -> String {
        format!("{}.placed", self.0)
    }

    /// The orders table, quoted.
    fn orders(&self) -> String {
        format!("\"{}\".orders", self.0)
    }

    /// The idempotency records table, as `PostgresStore` takes it.
    fn records(&self) -> String {
        format!("{}.idem_records", self.0)
    }
}

/// What a consumer process needs.
struct Consumer {
    store: SharedStore,
    pool: PgPool,
    orders: String,
    /// In a drill: report each stage on stdout, and linger after the Nth time it passes
    /// this one, so the parent can kill the process right there.
    drill: bool,
    linger: Option<(String, usize)>,
    passed: AtomicUsize,
}

/// Writes the order. In the caller's transaction: the claim, this row and the stored
/// outcome commit together. `in_flight = "reject"`: a duplicate that arrives while this
/// order is being written is naked with a delay rather than holding a consumer slot.
#[idempotent(
    key = "event.order_id",
    name = "examples.orders.place.v1",
    ttl = "7d",
    in_flight = "reject",
    transaction = "tx",
    skip(consumer),
    store = &consumer.store
)]
async fn place_order(
    event: OrderPlaced,
    consumer: &Consumer,
    tx: &mut PgConnection,
) -> Result<i64, OrderError> {
    let (id,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "INSERT INTO {} (order_id, customer, amount_cents, written_by) VALUES ($1, $2, $3, $4) RETURNING id",
        consumer.orders
    )))
    .bind(&event.order_id)
    .bind(&event.customer)
    .bind(event.amount_cents)
    .bind(i64::from(std::process::id()))
    .fetch_one(&mut *tx)
    .await?;
    Ok(id)
}

impl Consumer {
    /// The handler of one message: a transaction around the idempotent write. An `Err`
    /// drops the transaction (rolled back); `Ok` comes only after the commit, and
    /// `Processor::process` acks only after `Ok`.
    async fn handle(&self, sequence: u64, event: OrderPlaced) -> Result<i64, OrderError> {
        let mut tx = self.pool.begin().await?;
        let id = place_order(event, self, &mut tx).await?;
        self.stage("WRITTEN", sequence).await;
        tx.commit().await?;
        self.stage("COMMITTED", sequence).await;
        Ok(id)
    }

    async fn stage(&self, stage: &str, sequence: u64) {
        if self.drill {
            println!("{stage} {sequence}");
        }
        if let Some((at, nth)) = &self.linger
            && at == stage
            && self.passed.fetch_add(1, Ordering::Relaxed) + 1 == *nth
        {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }

    /// Consumes, `SLOTS` messages at once, until the process ends or the task is aborted.
    async fn run(self: Arc<Self>, consumer: PullConsumer) {
        // Reads the consumer's AckWait and max_deliver, and checks its ack policy.
        let processor = Processor::builder()
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .build(&consumer)
            .await
            .expect("a processor for the consumer");
        let messages = consumer
            .stream()
            .max_messages_per_batch(SLOTS * 2)
            .messages()
            .await
            .expect("consume");
        messages
            .for_each_concurrent(SLOTS, |message| {
                let (this, processor) = (Arc::clone(&self), processor.clone());
                async move {
                    let Ok(message) = message else { return };
                    let (sequence, delivered) = message
                        .info()
                        .map_or((0, 0), |i| (i.stream_sequence, i.delivered));
                    let outcome = processor
                        .process(&message, |d: Delivery<OrderPlaced>| {
                            this.handle(sequence, d.payload)
                        })
                        .await;
                    if this.drill {
                        println!("DONE {sequence} {delivered} {}", outcome.as_str());
                    }
                }
            })
            .await;
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn connect_nats() -> jetstream::Context {
    let url = env_or("NATS_URL", "127.0.0.1:4222");
    let client = async_nats::connect(&url)
        .await
        .unwrap_or_else(|err| panic!("NATS at {url}: {err}"));
    jetstream::new(client)
}

/// Connects to PostgreSQL; with `create`, makes the run's schema first.
async fn connect_store(run: &Run, create: bool) -> PostgresStore {
    let url = env_or(
        "IDEM_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let pool = PgPool::connect(&url)
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL at {url}: {err}"));
    if create {
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{}\"", run.0)))
            .execute(&pool)
            .await
            .expect("create schema");
    }
    // Creates the records table (and its transaction-mode function) if absent.
    PostgresStore::builder(pool)
        .table(run.records())
        .build()
        .await
        .expect("idempotency records table")
}

async fn consumer_of(js: &jetstream::Context, run: &Run) -> PullConsumer {
    js.get_stream(&run.0)
        .await
        .expect("stream")
        .get_consumer("orders")
        .await
        .expect("consumer")
}

/// Creates the stream, the consumer and the orders table, and publishes the events.
async fn set_up(js: &jetstream::Context, pool: &PgPool, run: &Run) -> usize {
    js.create_stream(jetstream::stream::Config {
        name: run.0.clone(),
        subjects: vec![run.subject()],
        ..Default::default()
    })
    .await
    .expect("create stream");
    js.get_stream(&run.0)
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some("orders".into()),
            ack_wait: ACK_WAIT,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    // No unique constraint on order_id, on purpose: a second write would show.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE {} (id bigserial PRIMARY KEY, order_id text NOT NULL, customer text NOT NULL,
             amount_cents bigint NOT NULL, written_by bigint NOT NULL)",
        run.orders()
    )))
    .execute(pool)
    .await
    .expect("create orders table");

    let mut published = 0;
    for i in 0..ORDERS {
        let event = OrderPlaced {
            order_id: format!("order-{i}"),
            customer: format!("customer-{}", i % 17),
            amount_cents: 1_000 + i as i64,
        };
        let payload = serde_json::to_vec(&event).expect("encode");
        let mut copies = vec![format!("evt-{i}")];
        if i % (ORDERS / DUPLICATES) == 0 {
            copies.push(format!("evt-{i}-retry"));
        }
        for msg_id in copies {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
            js.publish_with_headers(run.subject(), headers, payload.clone().into())
                .await
                .expect("publish")
                .await
                .expect("stream ack");
            published += 1;
        }
    }
    published
}

/// Orders written and distinct orders written.
async fn written(pool: &PgPool, run: &Run) -> (i64, i64) {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT order_id) FROM {}",
        run.orders()
    )))
    .fetch_one(pool)
    .await
    .expect("count orders")
}

/// Messages not delivered yet plus messages delivered and not acked.
async fn unacked(consumer: &mut PullConsumer) -> u64 {
    let info = consumer.info().await.expect("consumer info");
    info.num_pending + info.num_ack_pending as u64
}

async fn tear_down(js: &jetstream::Context, pool: &PgPool, run: &Run) {
    let _ = js.delete_stream(&run.0).await;
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        run.0
    )))
    .execute(pool)
    .await;
}

/// Prints the figures; true when each order was written once and nothing is unacked.
fn report(published: usize, (written, distinct): (i64, i64), unacked: u64) -> bool {
    println!("events published:      {published}");
    println!("distinct orders:       {ORDERS}");
    println!("orders written:        {written} ({distinct} distinct)");
    println!("messages left unacked: {unacked}");
    let ok = written == ORDERS as i64 && distinct == ORDERS as i64 && unacked == 0;
    println!(
        "{}",
        if ok {
            "each order written exactly once, every message acked"
        } else {
            "FAILED"
        }
    );
    ok
}

/// The plain run: one consumer in this process.
async fn single() -> bool {
    let run = Run::fresh();
    let js = connect_nats().await;
    let store = connect_store(&run, true).await;
    let pool = store.pool().clone();
    let published = set_up(&js, &pool, &run).await;
    let consumer = Arc::new(Consumer {
        store: SharedStore::new(store),
        pool: pool.clone(),
        orders: run.orders(),
        drill: false,
        linger: None,
        passed: AtomicUsize::new(0),
    });
    let mut pull = consumer_of(&js, &run).await;
    let deadline = Instant::now() + DRILL_LIMIT;
    let task = tokio::spawn(Arc::clone(&consumer).run(pull.clone()));
    while unacked(&mut pull).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
    let ok = report(
        published,
        written(&pool, &run).await,
        unacked(&mut pull).await,
    );
    tear_down(&js, &pool, &run).await;
    ok
}

/// Where the drill kills a consumer process.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KillAt {
    /// A random moment, 20–300 ms after it is ready.
    Random,
    /// Right after an order row is written, before the commit.
    AfterWrite,
    /// Right after a commit, before the ack.
    AfterCommit,
}

/// The drill's counts, from the consumers' stdout.
#[derive(Debug, Default)]
struct Tally {
    kills: Vec<KillAt>,
    /// Kills after a commit whose message had not been answered (no `DONE` line for it).
    between_commit_and_ack: usize,
    deliveries: usize,
    redeliveries: usize,
    naked_in_progress: usize,
}

impl Tally {
    fn line(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        if words.next() == Some("DONE") {
            let _sequence = words.next();
            let delivered: i64 = words.next().and_then(|d| d.parse().ok()).unwrap_or(1);
            self.deliveries += 1;
            if delivered > 1 {
                self.redeliveries += 1;
            }
            if words.next() == Some("in_progress") {
                self.naked_in_progress += 1;
            }
        }
    }
}

/// Starts a consumer process of this example that lingers after the `nth` time it passes
/// `stage` (`WRITTEN`, `COMMITTED`, or `none`).
fn spawn_consumer(
    run: &Run,
    stage: &str,
    nth: usize,
) -> (tokio::process::Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--consume", &run.0, stage, &nth.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn consumer");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

/// Reads lines into `tally` until the `nth` one that starts with `prefix` (returned), or
/// `limit` passes.
async fn read_until(
    lines: &mut Lines<BufReader<ChildStdout>>,
    tally: &mut Tally,
    prefix: &str,
    nth: usize,
    limit: Duration,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut seen = 0;
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        tally.line(&line);
        if line.starts_with(prefix) {
            seen += 1;
            if seen == nth {
                return Some(line);
            }
        }
    }
    None
}

/// Reads lines into `tally` for `duration`.
async fn read_for(
    lines: &mut Lines<BufReader<ChildStdout>>,
    tally: &mut Tally,
    duration: Duration,
) {
    let deadline = Instant::now() + duration;
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        tally.line(&line);
    }
}

/// The crash drill: consumer processes SIGKILLed `kills` times, then one left to finish.
async fn crash_drill(kills: usize) -> bool {
    let run = Run::fresh();
    let js = connect_nats().await;
    let store = connect_store(&run, true).await;
    let pool = store.pool().clone();
    let published = set_up(&js, &pool, &run).await;
    let mut pull = consumer_of(&js, &run).await;
    let mut tally = Tally::default();
    let plan = [KillAt::AfterCommit, KillAt::Random, KillAt::AfterWrite];
    let started = Instant::now();

    for kill_at in plan.into_iter().cycle().take(kills) {
        // Which stage, and the how-manieth time the process passes it.
        let (stage, nth) = match kill_at {
            KillAt::Random => ("none", 0),
            KillAt::AfterWrite => ("WRITTEN", fastrand::usize(1..=30)),
            KillAt::AfterCommit => ("COMMITTED", fastrand::usize(1..=30)),
        };
        let (mut child, mut lines) = spawn_consumer(&run, stage, nth);
        read_until(&mut lines, &mut tally, "READY", 1, Duration::from_secs(10))
            .await
            .expect("the consumer did not start");
        let last = match kill_at {
            KillAt::Random => {
                let pause = Duration::from_millis(fastrand::u64(20..300));
                read_for(&mut lines, &mut tally, pause).await;
                None
            }
            KillAt::AfterWrite | KillAt::AfterCommit => {
                read_until(&mut lines, &mut tally, stage, nth, Duration::from_secs(5)).await
            }
        };
        let committed = last.filter(|_| kill_at == KillAt::AfterCommit);
        // `Child::start_kill` is SIGKILL: no destructor, no flush, no ack.
        child.start_kill().expect("SIGKILL");
        let _ = child.wait().await;
        // What the process printed before it died.
        let mut answered = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            tally.line(&line);
            answered.push(line);
        }
        if let Some(sequence) = committed.as_deref().and_then(|l| l.split(' ').nth(1)) {
            let done = format!("DONE {sequence} ");
            if !answered.iter().any(|l| l.starts_with(&done)) {
                tally.between_commit_and_ack += 1;
            }
        }
        tally.kills.push(kill_at);
    }

    // The last consumer runs until every message is acked.
    let (mut child, mut lines) = spawn_consumer(&run, "none", 0);
    let deadline = started + DRILL_LIMIT;
    while unacked(&mut pull).await > 0 && Instant::now() < deadline {
        read_for(&mut lines, &mut tally, Duration::from_millis(100)).await;
    }
    child.start_kill().expect("stop the last consumer");
    let _ = child.wait().await;
    while let Ok(Some(line)) = lines.next_line().await {
        tally.line(&line);
    }

    let count = |at: KillAt| tally.kills.iter().filter(|&&k| k == at).count();
    println!(
        "kills:                 {} ({} at a random moment, {} after the write before the commit, {} after the commit before the ack, {} of them confirmed unanswered)",
        tally.kills.len(),
        count(KillAt::Random),
        count(KillAt::AfterWrite),
        count(KillAt::AfterCommit),
        tally.between_commit_and_ack,
    );
    println!(
        "deliveries:            {} ({} redeliveries, {} naked while in progress)",
        tally.deliveries, tally.redeliveries, tally.naked_in_progress
    );
    println!("drill time:            {:.1?}", started.elapsed());
    let ok = report(
        published,
        written(&pool, &run).await,
        unacked(&mut pull).await,
    );
    tear_down(&js, &pool, &run).await;
    ok
}

/// A consumer process of the drill: `--consume RUN STAGE N` (lingers after the Nth time it
/// passes STAGE).
async fn consume(args: &[String]) {
    let (run, linger) = match args {
        [run, stage, nth] => (Run(run.clone()), (stage.clone(), nth.parse().expect("N"))),
        _ => panic!("usage: --consume RUN STAGE N"),
    };
    let js = connect_nats().await;
    let store = connect_store(&run, false).await;
    let consumer = Arc::new(Consumer {
        pool: store.pool().clone(),
        store: SharedStore::new(store),
        orders: run.orders(),
        drill: true,
        linger: Some(linger),
        passed: AtomicUsize::new(0),
    });
    let pull = consumer_of(&js, &run).await;
    println!("READY");
    // Runs until the drill kills it.
    consumer.run(pull).await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        Some("--consume") => {
            consume(&args[1..]).await;
            true
        }
        Some("--crash-drill") => {
            let kills = match args.get(1).map(String::as_str) {
                Some("--kills") => args.get(2).and_then(|n| n.parse().ok()).expect("--kills N"),
                _ => 6,
            };
            crash_drill(kills).await
        }
        _ => single().await,
    };
    if !ok {
        std::process::exit(1);
    }
}
