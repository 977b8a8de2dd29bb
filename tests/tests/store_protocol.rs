//! The record protocol, the same on every store (`MokaStore`, `RedisStore`, `PostgresStore`):
//!
//! - `forget` of a running claim: the holder's result is not stored, on every store.
//! - The conformance suite of `idem_core::testkit` (the scenarios, the model-based random
//!   schedules and the concurrency stress) passes on each store, and fails on two
//!   deliberately broken stores: one whose claim is not atomic, one that ignores the
//!   fencing token.
//!
//! A failing schedule prints its seed; `IDEM_TESTKIT_SEED=<seed>` runs those schedules again.

#[path = "store_protocol/broken_stores.rs"]
mod broken_stores;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_core::testkit::{Property, Suite};
use idem_core::{Key, MokaStore, PostgresStore, RedisStore, SharedStore, idempotent};
use tests::TestError;
use tests::postgres::{drop_table, shared_postgres, unique_table};
use tests::redis_server::{RedisServer, shared_redis, unique};

use broken_stores::{RacyStore, TokenBlindStore};

/// What keeps a store's server or table alive for a test, and cleans up after it.
enum Guard {
    None,
    /// A Redis spawned for the test (none on the shared one), stopped when dropped.
    Redis {
        _server: Option<RedisServer>,
    },
    Postgres(Table),
}

/// A test's own PostgreSQL table, dropped at the end of the test.
struct Table {
    url: String,
    name: String,
}

impl Table {
    async fn drop(&self) {
        if let Ok(pool) = sqlx::PgPool::connect(&self.url).await {
            drop_table(&pool, &self.name).await;
        }
    }
}

/// A `RedisStore` under a prefix of its own (the shared Redis when `IDEM_REDIS_URL` is set,
/// else one spawned for the test). A generous response timeout: thousands of schedules at
/// once on a busy CI machine must not turn a slow reply into a failed schedule.
async fn redis_store() -> Option<(SharedStore, Guard)> {
    let (url, server) = shared_redis()?;
    let store = RedisStore::builder(url)
        .prefix(unique("protocol"))
        .response_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    Some((SharedStore::new(store), Guard::Redis { _server: server }))
}

/// A `PostgresStore` on a table of its own in the shared PostgreSQL.
async fn postgres_store() -> Option<(SharedStore, Guard)> {
    let url = shared_postgres()?;
    let name = unique_table("protocol");
    let store = PostgresStore::builder(url.as_str())
        .table(name.as_str())
        .response_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    Some((
        SharedStore::new(store),
        Guard::Postgres(Table { url, name }),
    ))
}

/// The stores under test: a fresh `MokaStore`, a `RedisStore` and a `PostgresStore`.
async fn stores() -> Vec<(&'static str, SharedStore, Guard)> {
    let mut out = vec![("moka", SharedStore::new(MokaStore::new()), Guard::None)];
    if let Some((store, guard)) = redis_store().await {
        out.push(("redis", store, guard));
    }
    if let Some((store, guard)) = postgres_store().await {
        out.push(("postgres", store, guard));
    }
    out
}

/// Runs the conformance suite on `store` (a clone per property), `schedules` random
/// schedules `parallel` at a time; panics with the failure, which names the property.
async fn conforms(name: &str, store: &SharedStore, schedules: u64, parallel: usize) {
    let report = Suite::new()
        .schedules(schedules)
        .parallel(parallel)
        .run(|| async { store.clone() })
        .await
        .unwrap_or_else(|failure| panic!("{name}: {failure}"));
    println!("{name}: {report}");
}

// ---------------------------------------------------------------------------------------
// `forget` of a running claim.

struct Ctx {
    store: SharedStore,
    runs: AtomicUsize,
    key: Mutex<Option<String>>,
}

/// The lease is 1 s, so the holder renews about every 330 ms while its 1.2 s body runs (a
/// lease long enough that a busy machine, running the conformance suites beside it, does
/// not lapse it).
#[idempotent(key = "id", name = "tests.protocol.forget.v1", lease = "1s", skip(ctx), store = &ctx.store)]
async fn forgotten(id: u64, ctx: &Ctx) -> Result<usize, TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    *ctx.key.lock().unwrap() = idem_core::current_key().map(|key| key.to_hex());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let _ = id;
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_of_a_running_claim_means_its_result_is_not_stored_on_every_store() {
    for (name, store, guard) in stores().await {
        let ctx = Arc::new(Ctx {
            store,
            runs: AtomicUsize::new(0),
            key: Mutex::new(None),
        });
        let holder = {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move { forgotten(1, &ctx).await })
        };
        // Past the holder's first renewal, so a renewal after the forget is tested too.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let key = ctx
            .key
            .lock()
            .unwrap()
            .clone()
            .expect("the body is running");
        let key = Key::from_hex(&key).unwrap();
        assert!(
            ctx.store.forget(&key).await.unwrap(),
            "{name}: the claim was there"
        );
        assert_eq!(
            holder.await.unwrap(),
            Ok(1),
            "{name}: the holder gets its result"
        );
        assert_eq!(
            forgotten(1, &ctx).await,
            Ok(2),
            "{name}: the forgotten holder's result was stored"
        );
        assert_eq!(
            forgotten(1, &ctx).await,
            Ok(2),
            "{name}: the rerun was stored"
        );
        assert_eq!(ctx.runs.load(SeqCst), 2, "{name}");
        if let Guard::Postgres(table) = guard {
            table.drop().await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The conformance suite on each store.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moka_store_passes_the_conformance_suite() {
    conforms("moka", &SharedStore::new(MokaStore::new()), 10_000, 128).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let Some((store, _guard)) = redis_store().await else {
        return;
    };
    conforms("redis", &store, 10_000, 128).await;
}

/// Fewer schedules than in memory: each step is a statement on the shared server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    let Some((store, guard)) = postgres_store().await else {
        return;
    };
    conforms("postgres", &store, 2_000, 32).await;
    if let Guard::Postgres(table) = guard {
        table.drop().await;
    }
}

// ---------------------------------------------------------------------------------------
// The suite fails on broken stores, naming the property they break. A current-thread
// runtime, so the racing claims interleave at every await, the same way every run.

#[tokio::test]
async fn a_store_whose_claim_is_not_atomic_fails_the_suite_at_claim_is_atomic() {
    let failure = Suite::new()
        .run(|| async { RacyStore::default() })
        .await
        .expect_err("a store whose claim is not atomic must fail the suite");
    println!("{failure}");
    assert_eq!(failure.property(), Property::ClaimIsAtomic, "{failure}");
    assert!(
        failure.to_string().contains("`claim_is_atomic` failed"),
        "{failure}"
    );
    // The stress rounds catch it too, on their own.
    let failure = Suite::new()
        .only(&[Property::ConcurrentStress])
        .run(|| async { RacyStore::default() })
        .await
        .expect_err("the stress rounds must catch a claim that is not atomic");
    println!("{failure}");
    assert_eq!(failure.property(), Property::ConcurrentStress, "{failure}");
}

#[tokio::test]
async fn a_store_that_ignores_the_token_fails_the_suite_at_fencing() {
    let failure = Suite::new()
        .run(|| async { TokenBlindStore::default() })
        .await
        .expect_err("a store that ignores the fencing token must fail the suite");
    println!("{failure}");
    assert_eq!(failure.property(), Property::Fencing, "{failure}");
    // The random schedules catch it too, on their own.
    let failure = Suite::new()
        .only(&[Property::RandomSchedules])
        .run(|| async { TokenBlindStore::default() })
        .await
        .expect_err("the random schedules must catch a store that ignores the token");
    println!("{failure}");
    assert_eq!(failure.property(), Property::RandomSchedules, "{failure}");
    assert!(failure.detail().contains("seed "), "{failure}");
}
