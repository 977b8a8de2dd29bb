//! `PostgresStore` in shared-store mode, in one process, against the PostgreSQL on this
//! machine (each test on its own table): statements per call, the record protocol
//! (takeover, fencing, renewal), TTL expiry and the purge, corrupt rows, and faults (a
//! refused port, the server going away behind a proxy and coming back).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use idem_core::store::{Claim, Record, Store};
use idem_core::{Error, Fingerprint, KeyHasher, PostgresStore, SharedStore, idempotent};
use sqlx::{AssertSqlSafe, PgPool, Row};
use tests::postgres::{Proxy, authority, drop_table, shared_postgres, unique_table, with_port};
use tests::{IdemKind, TestError};

struct Ctx {
    store: SharedStore,
    runs: Arc<AtomicUsize>,
    body: Duration,
}

impl Ctx {
    fn new(store: &PostgresStore, body: Duration) -> Ctx {
        Ctx {
            store: SharedStore::new(store.clone()),
            runs: Arc::new(AtomicUsize::new(0)),
            body,
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(SeqCst)
    }
}

async fn body(id: &str, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    tokio::time::sleep(ctx.body).await;
    Ok(format!("receipt-{id}-{amount}-run{run}"))
}

#[idempotent(key = "id", name = "tests.pg.charge.v1", lease = "1s", wait = "10s", skip(ctx), store = &ctx.store)]
async fn charge(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    body(&id, amount, ctx).await
}

#[idempotent(key = "id", name = "tests.pg.charge.v1", lease = "1s", in_flight = "reject", skip(ctx), store = &ctx.store)]
async fn charge_or_reject(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    body(&id, amount, ctx).await
}

#[idempotent(key = "id", name = "tests.pg.short_ttl.v1", ttl = "1s", skip(ctx), store = &ctx.store)]
async fn charge_short_ttl(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    body(&id, amount, ctx).await
}

#[idempotent(key = "id", name = "tests.pg.long_lease.v1", lease = "20s", wait = "10s", skip(ctx), store = &ctx.store)]
async fn charge_long_lease(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    body(&id, amount, ctx).await
}

fn key_of(id: &str) -> idem_core::Key {
    KeyHasher::unkeyed()
        .key(&["tests.pg.charge.v1"], &id)
        .unwrap()
}

/// A store on a fresh table, the raw pool to inspect it, and the table's name.
struct Fixture {
    store: PostgresStore,
    pool: PgPool,
    table: String,
}

impl Fixture {
    async fn new(name: &str) -> Option<Fixture> {
        let url = shared_postgres()?;
        let table = unique_table(name);
        let store = PostgresStore::builder(url.as_str())
            .table(table.as_str())
            .build()
            .await
            .unwrap();
        let pool = PgPool::connect(&url).await.unwrap();
        Some(Fixture { store, pool, table })
    }

    async fn sql(&self, sql: &str) -> sqlx::postgres::PgQueryResult {
        sqlx::query(AssertSqlSafe(
            sql.replace("$T", &format!("\"{}\"", self.table)),
        ))
        .execute(&self.pool)
        .await
        .unwrap()
    }

    async fn count(&self) -> i64 {
        sqlx::query(AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{}\"",
            self.table
        )))
        .fetch_one(&self.pool)
        .await
        .unwrap()
        .get(0)
    }

    async fn cleanup(self) {
        drop_table(&self.pool, &self.table).await;
    }
}

macro_rules! fixture_or_skip {
    ($name:expr) => {
        match Fixture::new($name).await {
            Some(fixture) => fixture,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_runs_a_retry_replays_and_the_row_holds_only_the_hash() {
    let fx = fixture_or_skip!("first");
    let ctx = Ctx::new(&fx.store, Duration::from_millis(1));
    let first = charge("order-1".into(), 500, &ctx).await.unwrap();
    let again = charge("order-1".into(), 500, &ctx).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(ctx.runs(), 1);

    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT key, version, length(fingerprint), length(token), value, expires_at > now() + interval '23 hours' FROM \"{}\"",
        fx.table
    )))
    .fetch_one(&fx.pool)
    .await
    .unwrap();
    let key: Vec<u8> = row.get(0);
    assert_eq!(key, key_of("order-1").as_bytes());
    assert_eq!(
        row.get::<i16, _>(1),
        i16::from(idem_core::store::RECORD_VERSION)
    );
    assert_eq!(row.get::<i32, _>(2), 32);
    assert_eq!(row.get::<i32, _>(3), 16);
    let value: Vec<u8> = row.get(4);
    assert_eq!(value, format!("O{:?}", first).into_bytes());
    assert!(row.get::<bool, _>(5), "kept for the default ttl (24 h)");
    assert!(
        !String::from_utf8_lossy(&key).contains("order-1"),
        "no raw argument in the key"
    );
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_in_one_process_run_the_body_once() {
    let fx = fixture_or_skip!("burst");
    let ctx = Arc::new(Ctx::new(&fx.store, Duration::from_millis(200)));
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move { charge("burst".into(), 7, &ctx).await })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().unwrap());
    }
    assert_eq!(ctx.runs(), 1);
    assert!(results.iter().all(|r| *r == results[0]));
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_mismatch_is_refused_reject_fails_at_once_and_forget_reruns() {
    let fx = fixture_or_skip!("mismatch");
    let ctx = Arc::new(Ctx::new(&fx.store, Duration::from_millis(400)));
    let first = charge("m".into(), 100, &ctx).await.unwrap();
    assert_eq!(
        charge("m".into(), 200, &ctx).await,
        Err(TestError::Idem(IdemKind::PayloadMismatch))
    );
    assert_eq!(charge("m".into(), 100, &ctx).await.unwrap(), first);

    let running = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move { charge("busy".into(), 1, &ctx).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(
        charge_or_reject("busy".into(), 1, &ctx).await,
        Err(TestError::Idem(IdemKind::InProgress))
    );
    assert!(started.elapsed() < Duration::from_millis(200));
    running.await.unwrap().unwrap();

    assert!(fx.store.forget(&key_of("m")).await.unwrap());
    assert_ne!(charge("m".into(), 100, &ctx).await.unwrap(), first);
    assert_eq!(ctx.runs(), 3);
    fx.cleanup().await;
}

/// The record protocol directly: a lapsed claim is taken over (reported as such), and the
/// old holder's token then changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_claim_is_taken_over_and_the_old_holder_is_fenced() {
    let fx = fixture_or_skip!("fence");
    let store = &fx.store;
    let key = key_of("fenced");
    let fp = Fingerprint::from_bytes([1; 32]);
    let lease = Duration::from_millis(300);
    let Claim::Claimed { token: old, .. } = store.claim(&key, &fp, lease).await.unwrap() else {
        panic!("first claim");
    };
    assert!(matches!(
        store.claim(&key, &fp, lease).await.unwrap(),
        Claim::InProgress(_)
    ));
    assert!(
        store.renew(&key, old, lease).await.unwrap(),
        "live: renewed"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;

    let Claim::Claimed {
        token: new,
        taken_over,
    } = store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("takeover");
    };
    assert!(taken_over, "a lapsed claim row is reported as taken over");
    assert_ne!(old, new);
    let stale = Arc::new(Record::new(fp, b"O\"stale\"".to_vec()));
    assert!(!store.renew(&key, old, lease).await.unwrap());
    assert!(
        !store
            .complete(&key, old, stale, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(!store.release(&key, old).await.unwrap());

    let fresh = Arc::new(Record::new(fp, b"O\"fresh\"".to_vec()));
    assert!(
        store
            .complete(&key, new, Arc::clone(&fresh), Duration::from_secs(60))
            .await
            .unwrap()
    );
    match store.claim(&key, &fp, lease).await.unwrap() {
        Claim::Completed(record) => assert_eq!(*record, *fresh),
        other => panic!("{other:?}"),
    }
    // A record is never released or completed again by a token.
    assert!(!store.release(&key, new).await.unwrap());
    fx.cleanup().await;
}

/// A holder whose lease lapsed while nobody took the key still holds its row: it can renew
/// and complete. A forgotten claim is lost: its result is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_claim_nobody_took_can_still_complete_and_a_forgotten_one_cannot() {
    let fx = fixture_or_skip!("lapsed");
    let store = &fx.store;
    let fp = Fingerprint::from_bytes([2; 32]);
    let lease = Duration::from_millis(100);
    let record = Arc::new(Record::new(fp, b"O1".to_vec()));

    let key = key_of("lapsed");
    let Claim::Claimed { token, .. } = store.claim(&key, &fp, lease).await.unwrap() else {
        panic!();
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(store.renew(&key, token, lease).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        store
            .complete(&key, token, Arc::clone(&record), Duration::from_secs(60))
            .await
            .unwrap()
    );

    let key = key_of("forgotten");
    let Claim::Claimed { token, .. } = store.claim(&key, &fp, lease).await.unwrap() else {
        panic!();
    };
    assert!(store.forget(&key).await.unwrap());
    assert!(!store.renew(&key, token, lease).await.unwrap());
    assert!(
        !store
            .complete(&key, token, record, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(fx.count().await, 1, "only the first record");
    fx.cleanup().await;
}

/// A body three times longer than its lease renews and is not taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_longer_than_its_lease_renews_and_is_not_taken_over() {
    let fx = fixture_or_skip!("renew");
    let ctx = Arc::new(Ctx::new(&fx.store, Duration::from_millis(3000)));
    let first = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move { charge("long".into(), 1, &ctx).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = charge("long".into(), 1, &ctx).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap(), second);
    assert_eq!(ctx.runs(), 1);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_releases_its_claim_at_once() {
    let fx = fixture_or_skip!("cancel");
    let ctx = Arc::new(Ctx::new(&fx.store, Duration::from_secs(5)));
    let call = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move { charge_long_lease("c".into(), 1, &ctx).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    let _ = call.await;
    let quick = Ctx {
        store: ctx.store.clone(),
        runs: Arc::clone(&ctx.runs),
        body: Duration::from_millis(1),
    };
    let started = Instant::now();
    // Released by a spawned, token-checked delete: the retry runs well before the 20 s lease.
    charge_long_lease("c".into(), 1, &quick).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(ctx.runs(), 2);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_a_codec_error_and_the_body_does_not_run() {
    let fx = fixture_or_skip!("corrupt");
    let ctx = Ctx::new(&fx.store, Duration::from_millis(1));
    for id in ["version", "fingerprint", "json", "cached-err"] {
        charge(id.into(), 1, &ctx).await.unwrap();
    }
    let runs = ctx.runs();
    let hex = |id: &str| key_of(id).to_hex();
    fx.sql(&format!(
        "UPDATE $T SET version = 9 WHERE key = '\\x{}'",
        hex("version")
    ))
    .await;
    fx.sql(&format!(
        "UPDATE $T SET fingerprint = '\\x0102' WHERE key = '\\x{}'",
        hex("fingerprint")
    ))
    .await;
    fx.sql(&format!(
        "UPDATE $T SET value = 'O{{\"not\":\"a string\"' WHERE key = '\\x{}'",
        hex("json")
    ))
    .await;
    fx.sql(&format!(
        "UPDATE $T SET value = 'E\"boom\"' WHERE key = '\\x{}'",
        hex("cached-err")
    ))
    .await;
    for id in ["version", "fingerprint", "json", "cached-err"] {
        assert_eq!(
            charge(id.into(), 1, &ctx).await,
            Err(TestError::Idem(IdemKind::Codec)),
            "{id}"
        );
    }
    // A claim row of another layout is not taken for a live claim of this one.
    let Claim::Claimed { .. } = fx
        .store
        .claim(
            &key_of("claim"),
            &Fingerprint::from_bytes([0; 32]),
            Duration::from_secs(30),
        )
        .await
        .unwrap()
    else {
        panic!();
    };
    fx.sql(&format!(
        "UPDATE $T SET version = 7 WHERE key = '\\x{}'",
        hex("claim")
    ))
    .await;
    assert_eq!(
        charge("claim".into(), 1, &ctx).await,
        Err(TestError::Idem(IdemKind::Codec))
    );
    assert_eq!(ctx.runs(), runs, "a corrupt row never reruns the body");
    fx.cleanup().await;
}

/// An expired record is never replayed, even before the purge deleted it; the purge
/// deletes expired rows in batches, and the background task does it by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_are_not_replayed_and_are_purged_in_batches() {
    let fx = fixture_or_skip!("ttl");
    let ctx = Ctx::new(&fx.store, Duration::from_millis(1));
    let first = charge_short_ttl("t".into(), 1, &ctx).await.unwrap();
    assert_eq!(charge_short_ttl("t".into(), 1, &ctx).await.unwrap(), first);
    for i in 0..24 {
        charge_short_ttl(format!("bulk-{i}"), 1, &ctx)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fx.count().await, 25, "expired, not yet purged");
    let second = charge_short_ttl("t".into(), 1, &ctx).await.unwrap();
    assert_ne!(second, first, "an expired record is not replayed");
    assert_eq!(ctx.runs(), 26);

    // 24 expired rows, batches of 10: three statements, one round.
    assert_eq!(fx.store.purge_expired(10).await.unwrap(), 24);
    assert_eq!(fx.count().await, 1, "the live record stays");

    // The background purge of a store built with a short interval.
    let url = shared_postgres().unwrap();
    let purging = PostgresStore::builder(url.as_str())
        .table(fx.table.as_str())
        .purge_interval(Duration::from_millis(200))
        .purge_batch(5)
        .build()
        .await
        .unwrap();
    let ctx = Ctx::new(&purging, Duration::from_millis(1));
    for i in 0..12 {
        charge_short_ttl(format!("bg-{i}"), 1, &ctx).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.count().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fx.count().await,
        0,
        "the background task purged every expired row"
    );
    drop(purging);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_is_a_store_error_within_a_second() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = PostgresStore::connect(&with_port(&url, port))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The client's error is kept as the source, for a caller to downcast.
    let sqlx_err =
        std::iter::successors(Some(&err as &dyn std::error::Error), |err| (*err).source())
            .find_map(|err| err.downcast_ref::<sqlx::Error>());
    assert!(sqlx_err.is_some(), "{}", tests::chain(&err));
    println!(
        "connect to a refused port: Error::Store after {took:?}: {}",
        tests::chain(&err)
    );
}

/// The server goes away (a proxy in front of it stops: its port refuses and its open
/// connections break): calls fail closed within a second and the body does not run; when
/// it is back on the same port, calls succeed without a new store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_fails_closed_within_a_second_and_recovers() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let mut proxy = Proxy::start(&authority(&url)).await;
    let table = unique_table("down");
    let store = PostgresStore::builder(with_port(&url, proxy.port()))
        .table(table.as_str())
        .build()
        .await
        .unwrap();
    let ctx = Ctx::new(&store, Duration::from_millis(1));
    charge("before".into(), 1, &ctx).await.unwrap();

    proxy.stop().await;
    for id in ["down-1", "down-2", "down-3"] {
        let started = Instant::now();
        assert_eq!(
            charge(id.into(), 1, &ctx).await,
            Err(TestError::Idem(IdemKind::Store))
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "took {took:?}");
        println!("server gone: Error::Store after {took:?}");
    }
    assert_eq!(ctx.runs(), 1, "the body never runs unprotected");

    proxy.restart().await;
    charge("after".into(), 1, &ctx).await.unwrap();
    assert_eq!(
        charge("before".into(), 1, &ctx).await.unwrap(),
        "receipt-before-1-run1"
    );
    assert_eq!(ctx.runs(), 2);
    drop(store);
    let pool = PgPool::connect(&url).await.unwrap();
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_table_name_or_missing_url_is_a_store_error() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let err = PostgresStore::builder(url.as_str())
        .table("x; DROP TABLE y")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    let err = PostgresStore::connect("not a url").await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
}

/// Processes starting at once, spelling the table `name` and `public.name`: every `build`
/// creates or finds the same table (the DDL lock is keyed on the resolved name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_builds_spelling_the_table_differently_all_succeed() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let table = unique_table("spell");
    let mut builds = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (url, name) = (
            url.clone(),
            if i % 2 == 0 {
                table.clone()
            } else {
                format!("public.{table}")
            },
        );
        builds.spawn(async move {
            PostgresStore::builder(url.as_str())
                .table(name.as_str())
                .purge_interval(None)
                .build()
                .await
                .map(drop)
                .map_err(|err| tests::chain(&err))
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = builds.join_next().await {
        if let Err(err) = done.unwrap() {
            failed.push(err);
        }
    }
    let pool = PgPool::connect(&url).await.unwrap();
    drop_table(&pool, &table).await;
    assert!(
        failed.is_empty(),
        "{} of 40 builds failed: {failed:#?}",
        failed.len()
    );
}

/// 2,000 concurrent first calls with distinct keys on a default store (its own pool): a
/// burst queues for the pool's connections, and no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_two_thousand_first_calls_on_the_default_pool_all_succeed() {
    let fx = fixture_or_skip!("burst");
    let ctx = Arc::new(Ctx::new(&fx.store, Duration::ZERO));
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let ctx = Arc::clone(&ctx);
        calls.spawn(async move { charge(format!("burst-{i}"), 1, &ctx).await });
    }
    let mut failed = Vec::new();
    while let Some(done) = calls.join_next().await {
        if let Err(err) = done.unwrap() {
            failed.push(err);
        }
    }
    println!("2,000 first calls in {:?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "{} of 2,000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(ctx.runs(), 2000);
    assert_eq!(fx.count().await, 2000);
    fx.cleanup().await;
}

/// A relation already named like the purge's index (`<table>_expires_at`) leaves the table
/// without that index (`CREATE INDEX IF NOT EXISTS` does nothing): `build` warns.
#[test]
fn a_relation_named_like_the_expiry_index_is_warned_about() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let captured = tests::CapturedLog::default();
    let writer = captured.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let table = unique_table("idxname");
        let pool = PgPool::connect(&url).await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE \"{table}_expires_at\" (x int)"
        )))
        .execute(&pool)
        .await
        .unwrap();
        let store = PostgresStore::builder(url.as_str())
            .table(table.as_str())
            .purge_interval(None)
            .build()
            .await
            .unwrap();
        drop(store);
        drop_table(&pool, &table).await;
        let _ = sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS \"{table}_expires_at\""
        )))
        .execute(&pool)
        .await;
    });
    let log = captured.text();
    assert!(log.contains("no index on expires_at"), "{log}");
}
