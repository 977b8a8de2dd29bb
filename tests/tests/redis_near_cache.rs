//! `RedisStore::builder(..).near_cache(bytes, bound)` against a real Redis and several OS
//! processes: a near-cached hit sends no command; a `forget` in another process, and a
//! record's expiry, reach this process within the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use idem_core::{RedisStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};
use tests::redis_server::{
    RedisServer, Worker, log_path, read_log, receipts, redis_available, spawn_worker, unique,
};

const WORKER: &str = env!("CARGO_BIN_EXE_idem_redis_worker");
const BOUND: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(30);

/// The worker's request and receipt, field for field, so this process and the worker
/// derive the same key and fingerprint.
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

struct Ctx {
    store: SharedStore,
    runs: AtomicUsize,
}

/// The worker's function (same name, key, arguments and result), run here.
#[idempotent(key = "req.id", name = "tests.worker.charge.v1", ttl = "1h", lease = "1s", wait = "20s", skip(ctx), store = &ctx.store)]
async fn charge(req: ChargeRequest, ctx: &Ctx) -> Result<Receipt, tests::TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    Ok(Receipt {
        charge_id: format!("local-{}-run{run}", req.id),
        amount_cents: req.amount_cents,
    })
}

/// A short-lived record, to see its expiry reach the near-cache.
#[idempotent(key = "id", name = "tests.near.short.v1", ttl = "1s", skip(ctx), store = &ctx.store)]
async fn short(id: String, ctx: &Ctx) -> Result<String, tests::TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    Ok(format!("{id}-run{run}"))
}

async fn near_cached(url: &str) -> Arc<Ctx> {
    let store = RedisStore::builder(url)
        .near_cache(1 << 20, BOUND)
        .build()
        .await
        .unwrap();
    Arc::new(Ctx {
        store: SharedStore::new(store),
        runs: AtomicUsize::new(0),
    })
}

fn request(order: &str) -> ChargeRequest {
    ChargeRequest {
        id: order.to_string(),
        amount_cents: 100,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cached_hits_send_no_command_and_another_process_forget_arrives_within_the_bound() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::spawn();
    let url = server.url();
    let order = unique("near");

    // Another process runs the charge.
    let log = log_path("near");
    let first = spawn_worker(WORKER, &url, &order, 100, 1, 0, &log, false).finish(LONG);
    let first = receipts(&first);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(read_log(&log).len(), 1);

    // This process replays it, then answers repeats from memory: no command at all.
    let ctx = near_cached(&url).await;
    assert_eq!(
        charge(request(&order), &ctx).await.unwrap().charge_id,
        first[0]
    );
    let sent = |server: &RedisServer| server.calls_of("set") + server.calls_of("evalsha");
    let before = sent(&server);
    for _ in 0..200 {
        assert_eq!(
            charge(request(&order), &ctx).await.unwrap().charge_id,
            first[0]
        );
    }
    assert_eq!(sent(&server), before, "near-cached hits sent commands");
    assert_eq!(ctx.runs.load(SeqCst), 0);

    // Another process forgets it: within the bound, this process runs the body again.
    let forgot = Worker::spawn(
        WORKER,
        &[
            "--url".into(),
            url.clone(),
            "--order".into(),
            order.clone(),
            "--forget".into(),
        ],
    )
    .finish(LONG);
    let forgotten = Instant::now();
    assert_eq!(forgot, ["FORGOT true"]);
    let seen = loop {
        let receipt = charge(request(&order), &ctx).await.unwrap();
        if receipt.charge_id != first[0] {
            break forgotten.elapsed();
        }
        assert!(
            forgotten.elapsed() < BOUND * 3,
            "still replayed after the forget"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("a forget in another process reached the near-cache after {seen:?} (bound {BOUND:?})");
    assert!(seen <= BOUND + Duration::from_millis(100), "{seen:?}");
    assert_eq!(ctx.runs.load(SeqCst), 1);
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_expiry_reaches_the_near_cache_within_the_bound() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::spawn();
    let ctx = near_cached(&server.url()).await;
    let id = unique("short");
    let stored = Instant::now();
    let first = short(id.clone(), &ctx).await.unwrap();
    let rerun = loop {
        let now = short(id.clone(), &ctx).await.unwrap();
        if now != first {
            break stored.elapsed();
        }
        assert!(
            stored.elapsed() < Duration::from_secs(3),
            "replayed long after expiry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("ttl 1s, bound {BOUND:?}: the body ran again {rerun:?} after the first run");
    assert!(
        rerun >= Duration::from_secs(1),
        "ran again before the ttl: {rerun:?}"
    );
    assert!(
        rerun <= Duration::from_secs(1) + BOUND + Duration::from_millis(150),
        "{rerun:?}"
    );
    assert_eq!(ctx.runs.load(SeqCst), 2);
}
