//! The payments service of `payments.rs`, with its idempotency records in Redis, so every
//! instance of the service (every process) shares them.
//!
//! ```text
//! redis-server --port 6379 --save "" &      # or any Redis; IDEM_REDIS_URL picks it
//! cargo run -p examples --features redis --example redis_payments
//! cargo run -p examples --features redis --example redis_payments -- --hammer 8
//! ```
//!
//! The first form runs the payments flow: a first charge, a retry replayed, 100 concurrent
//! double-clicks charged once, a reused key with another amount refused, a declined charge
//! retried. `--hammer N` starts N OS processes of this example that all charge the same
//! order at once (20 concurrent callers each) and prints how many times the charge ran:
//! 1. Executions are counted in Redis (`INCR`), so the count covers every process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_core::{RedisStore, idempotent};
use serde::{Deserialize, Serialize};

/// What the client sends; `id` is the client's idempotency key.
#[derive(Debug, Clone, Serialize)]
struct ChargeRequest {
    id: String,
    customer: String,
    amount_cents: u64,
    card: String,
}

/// What the client gets back, stored in Redis and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount_cents: u64,
    charged_by_pid: u32,
}

#[derive(Debug)]
enum PayError {
    Declined,
    ProviderDown,
    Idempotency(idem_core::Error),
}

impl From<idem_core::Error> for PayError {
    fn from(err: idem_core::Error) -> Self {
        PayError::Idempotency(err)
    }
}

/// The payment provider: counts every real charge in Redis (`INCR`), so the count is
/// shared by every process; declines a card's first attempt when asked.
struct Provider {
    redis: redis::aio::MultiplexedConnection,
    counter_key: String,
    flaky_attempts: AtomicUsize,
}

impl Provider {
    async fn charge(
        &self,
        req: &ChargeRequest,
        idempotency_key: &str,
    ) -> Result<Receipt, PayError> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if req.card == "4000-flaky" && self.flaky_attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(PayError::Declined);
        }
        let n: u64 = redis::cmd("INCR")
            .arg(&self.counter_key)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|_| PayError::ProviderDown)?;
        println!(
            "    provider (pid {}): charged {} cents (provider idempotency key {}…)",
            std::process::id(),
            req.amount_cents,
            &idempotency_key[..12]
        );
        Ok(Receipt {
            charge_id: format!("ch_{n:04}"),
            amount_cents: req.amount_cents,
            charged_by_pid: std::process::id(),
        })
    }
}

/// Charges a card once per request id, across every process sharing the Redis.
#[idempotent(key = "req.id", ttl = "24h", lease = "10s", skip(provider))]
async fn charge(req: ChargeRequest, provider: &Provider) -> Result<Receipt, PayError> {
    let key = idem_core::current_key()
        .expect("inside an idempotent body")
        .to_hex();
    provider.charge(&req, &key).await
}

fn request(id: &str, amount_cents: u64, card: &str) -> ChargeRequest {
    ChargeRequest {
        id: id.to_string(),
        customer: "cus_ada".to_string(),
        amount_cents,
        card: card.to_string(),
    }
}

fn redis_url() -> String {
    std::env::var("IDEM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

async fn provider(counter_key: String) -> Provider {
    let redis = redis::Client::open(redis_url())
        .expect("a valid IDEM_REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis for the provider's counter");
    Provider {
        redis,
        counter_key,
        flaky_attempts: AtomicUsize::new(0),
    }
}

async fn charges_run(provider: &Provider) -> u64 {
    redis::cmd("GET")
        .arg(&provider.counter_key)
        .query_async::<Option<u64>>(&mut provider.redis.clone())
        .await
        .expect("read the counter")
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = redis_url();
    let store = match RedisStore::connect(&url).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("cannot reach Redis at {url} ({err}); start one or set IDEM_REDIS_URL");
            std::process::exit(2);
        }
    };
    idem_core::install(store).expect("install the Redis store once, at start-up");
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();

    match args.get(1).map(String::as_str) {
        Some("--hammer") => {
            let n: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
            hammer(n, run).await
        }
        Some("--child") => child(&args[2], &args[3]).await,
        _ => flow(run).await,
    }
}

/// The payments flow, against Redis.
async fn flow(run: u128) {
    let provider = Arc::new(provider(format!("example:charges:{run}")).await);
    let order = |n: u32| format!("order-{run}-{n}");

    println!("1. first charge of order 1");
    let first = charge(request(&order(1), 2_500, "4242"), &provider)
        .await
        .expect("charged");
    println!("   -> {first:?}");

    println!("2. the client retries order 1 (a timeout on its side)");
    let retried = charge(request(&order(1), 2_500, "4242"), &provider)
        .await
        .expect("replayed");
    println!("   -> {retried:?} (replayed: {})", retried == first);

    println!("3. 100 concurrent double-clicks on order 2");
    let before = charges_run(&provider).await;
    let clicks: Vec<_> = (0..100)
        .map(|_| {
            let provider = Arc::clone(&provider);
            let req = request(&order(2), 990, "4242");
            tokio::spawn(async move { charge(req, &provider).await })
        })
        .collect();
    let mut receipts = Vec::new();
    for click in clicks {
        receipts.push(click.await.expect("task").expect("charged or replayed"));
    }
    let distinct = receipts.iter().filter(|r| **r != receipts[0]).count();
    println!(
        "   -> 100 callers got {:?}; charges run: {}; callers with another receipt: {distinct}",
        receipts[0],
        charges_run(&provider).await - before
    );

    println!("4. order 1 reused with another amount");
    match charge(request(&order(1), 9_999, "4242"), &provider).await {
        Err(PayError::Idempotency(idem_core::Error::PayloadMismatch)) => {
            println!("   -> refused: key reused with a different payload (nothing charged)")
        }
        other => println!("   -> unexpected: {other:?}"),
    }

    println!("5. order 3 is declined, then retried");
    match charge(request(&order(3), 1_200, "4000-flaky"), &provider).await {
        Err(PayError::Declined) => {
            println!("   -> declined (the key is released, a retry may run)")
        }
        other => println!("   -> unexpected: {other:?}"),
    }
    let retry = charge(request(&order(3), 1_200, "4000-flaky"), &provider)
        .await
        .expect("charged on retry");
    println!("   -> retry charged: {retry:?}");

    println!(
        "total charges run by the provider: {} (orders 1, 2 and 3)",
        charges_run(&provider).await
    );
}

/// Starts `n` processes of this example charging one order at once; prints the count.
async fn hammer(n: usize, run: u128) {
    let order = format!("order-{run}-hammer");
    let counter = format!("example:charges:{run}:hammer");
    let exe = std::env::current_exe().expect("the example's own path");
    println!("starting {n} processes x 20 concurrent callers, all charging {order}");
    // All children start at once; the hammering overlaps.
    let children: Vec<_> = (0..n)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--child", &order, &counter])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a child process")
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().expect("wait for a child"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("wait for the children");
    let mut receipts = Vec::new();
    for output in outputs {
        assert!(output.status.success(), "a child failed: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        receipts.extend(
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("RECEIPT "))
                .map(str::to_string),
        );
    }
    receipts.sort();
    receipts.dedup();
    let provider = provider(counter).await;
    println!(
        "{n} processes, {} callers: the charge ran {} time(s); distinct receipts: {} ({})",
        n * 20,
        charges_run(&provider).await,
        receipts.len(),
        receipts.join("; ")
    );
}

/// One hammering process: 20 concurrent callers of the same order.
async fn child(order: &str, counter: &str) {
    let provider = Arc::new(provider(counter.to_string()).await);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let provider = Arc::clone(&provider);
            let req = request(order, 4_200, "4242");
            tokio::spawn(async move { charge(req, &provider).await })
        })
        .collect();
    for call in calls {
        let receipt = call.await.expect("task").expect("charged or replayed");
        println!(
            "RECEIPT {} by pid {}",
            receipt.charge_id, receipt.charged_by_pid
        );
    }
}
