//! Callers of a failing or frozen store, against their own `redis-server` (never the shared
//! one): a leader's claim error reaches its local duplicates at once, and `wait` is a hard
//! bound even when the store stalls in the last poll.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use idem_core::store::Store;
use idem_core::{Backoff, Fingerprint, KeyHasher, RedisStore, SharedStore, idempotent};
use tests::redis_server::{RedisServer, redis_available};
use tests::{IdemKind, TestError, chain};

struct Ctx {
    store: SharedStore,
    runs: AtomicUsize,
}

#[idempotent(key = "id", name = "tests.faults.charge.v1", wait = "10s", skip(ctx), store = &ctx.store)]
async fn charge(id: u64, ctx: &Ctx) -> Result<u64, TestError> {
    ctx.runs.fetch_add(1, SeqCst);
    Ok(id)
}

#[idempotent(key = "id", name = "tests.faults.charge.v1", wait = "1s", skip(ctx), store = &ctx.store)]
async fn charge_waiting_1s(id: u64, ctx: &Ctx) -> Result<u64, TestError> {
    ctx.runs.fetch_add(1, SeqCst);
    Ok(id)
}

#[idempotent(key = "id", name = "tests.faults.charge.v1", skip(ctx), store = &ctx.store)]
async fn charge_or_idem_error(id: u64, ctx: &Ctx) -> Result<u64, idem_core::Error> {
    ctx.runs.fetch_add(1, SeqCst);
    Ok(id)
}

macro_rules! spawned_or_skip {
    () => {{
        if !redis_available() {
            return;
        }
        RedisServer::spawn()
    }};
}

/// Runs `callers` concurrent calls of `charge(id)` and returns each one's result and when
/// it came, from the start.
async fn burst(ctx: &Arc<Ctx>, callers: usize, id: u64) -> Vec<(Result<u64, TestError>, Duration)> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let ctx = Arc::clone(ctx);
            tokio::spawn(async move {
                let result = charge(id, &ctx).await;
                (result, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

fn assert_all_store_errors(results: &[(Result<u64, TestError>, Duration)], within: Duration) {
    let kinds: Vec<_> = results.iter().map(|(r, _)| r.clone()).collect();
    assert!(
        kinds
            .iter()
            .all(|r| *r == Err(TestError::Idem(IdemKind::Store))),
        "every caller must get Error::Store: {kinds:?}"
    );
    let slowest = results.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < within,
        "the slowest caller got its error after {slowest:?}"
    );
    println!(
        "{} callers of one key: all Error::Store, the slowest after {slowest:?}",
        results.len()
    );
}

/// A5: 100 local callers of one key while the server refuses connections: the leader's
/// claim fails, and so do its 99 followers at once (not one at a time, not `InProgress`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_store_fails_every_local_duplicate_at_once() {
    let mut server = spawned_or_skip!();
    let ctx = Arc::new(Ctx {
        store: SharedStore::new(RedisStore::connect(&server.url()).await.unwrap()),
        runs: AtomicUsize::new(0),
    });
    assert_eq!(charge(1, &ctx).await, Ok(1));
    server.stop();
    let results = burst(&ctx, 100, 2).await;
    assert_all_store_errors(&results, Duration::from_secs(1));
    assert_eq!(
        ctx.runs.load(SeqCst),
        1,
        "no body ran while the store was down"
    );
}

/// A5: 8 local callers of one key on a frozen server (response timeout 300 ms): all get
/// `Error::Store` after one response timeout, not one timeout after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_store_fails_every_local_duplicate_after_one_timeout() {
    let server = spawned_or_skip!();
    let store = RedisStore::builder(server.url())
        .response_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let ctx = Arc::new(Ctx {
        store: SharedStore::new(store),
        runs: AtomicUsize::new(0),
    });
    server.signal("STOP");
    let results = burst(&ctx, 8, 3).await;
    server.signal("CONT");
    assert_all_store_errors(&results, Duration::from_millis(1200));
    assert_eq!(ctx.runs.load(SeqCst), 0);
}

/// A9: waiters with `wait = "1s"` on keys another store holds; the server freezes just
/// before their deadline, so their last poll hangs. Each waiter still returns at its
/// deadline, with `InProgress` (not `Store` a response timeout later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_a_hard_bound_when_the_last_poll_hangs() {
    const KEYS: u64 = 200;
    const PER_KEY: usize = 10;
    let server = spawned_or_skip!();
    let holder = RedisStore::connect(&server.url()).await.unwrap();
    // Held by another store (another process, as far as the waiters can tell).
    for id in 0..KEYS {
        let key = KeyHasher::unkeyed()
            .key(&["tests.faults.charge.v1"], &id)
            .unwrap();
        let claim = holder
            .claim(
                &key,
                &Fingerprint::from_bytes([0; 32]),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        assert!(matches!(claim, idem_core::store::Claim::Claimed { .. }));
    }
    let ctx = Arc::new(Ctx {
        store: SharedStore::new(RedisStore::connect(&server.url()).await.unwrap()),
        runs: AtomicUsize::new(0),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..KEYS)
        .flat_map(|id| (0..PER_KEY).map(move |_| id))
        .map(|id| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                let result = charge_waiting_1s(id, &ctx).await;
                (result, started.elapsed())
            })
        })
        .collect();
    // Freeze the server for the waiters' last polls (the backoff reaches 250 ms, so some
    // poll starts within the last quarter second before the deadline).
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.signal("STOP");
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    server.signal("CONT");
    let slowest = results.iter().map(|(_, t)| *t).max().unwrap();
    let not_in_progress: Vec<_> = results
        .iter()
        .filter(|(r, _)| *r != Err(TestError::Idem(IdemKind::InProgress)))
        .collect();
    println!(
        "{} waiters, wait = 1s, server frozen at 0.8s: slowest returned after {slowest:?}",
        results.len()
    );
    assert!(
        not_in_progress.is_empty(),
        "{} waiters did not get InProgress, e.g. {:?}",
        not_in_progress.len(),
        not_in_progress.first()
    );
    assert!(
        slowest < Duration::from_millis(1300),
        "a waiter returned {slowest:?} after it started (wait = 1s)"
    );
    assert_eq!(ctx.runs.load(SeqCst), 0);
}

/// Durations too large for the clock saturate in the builder and the store: no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_without_bound_saturate_in_the_redis_builder_and_store() {
    let server = spawned_or_skip!();
    let store = RedisStore::builder(server.url())
        .connect_timeout(Duration::MAX)
        .response_timeout(Duration::MAX)
        .reconnect_backoff(
            Backoff::new(Duration::MAX)
                .max(Duration::MAX)
                .retries(usize::MAX),
        )
        .poll_backoff(Backoff::new(Duration::MAX).max(Duration::MAX))
        .build()
        .await
        .unwrap();
    let key = KeyHasher::unkeyed().key(&["tests.faults.max"], &1).unwrap();
    let fingerprint = Fingerprint::from_bytes([0; 32]);
    let idem_core::store::Claim::Claimed { token, .. } = store
        .claim(&key, &fingerprint, Duration::MAX)
        .await
        .unwrap()
    else {
        panic!("a fresh key is claimed");
    };
    assert!(store.renew(&key, token, Duration::MAX).await.unwrap());
    let record = Arc::new(idem_core::store::Record::new(fingerprint, b"O1".to_vec()));
    assert!(
        store
            .complete(&key, token, record, Duration::MAX)
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .claim(&key, &fingerprint, Duration::MAX)
            .await
            .unwrap(),
        idem_core::store::Claim::Completed(_)
    ));
}

/// The Redis client's error in an idem error's `source()` chain, if it is there.
fn redis_error_in(err: &idem_core::Error) -> Option<&redis::RedisError> {
    std::iter::successors(Some(err as &dyn std::error::Error), |err| (*err).source())
        .find_map(|err| err.downcast_ref::<redis::RedisError>())
}

/// A store error keeps the Redis client's error as its source, for the caller that
/// claimed and for its local duplicates alike: a caller walks `source()` to it and
/// downcasts it (to read its kind), and the chain names the operation and the server once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_servers_error_is_a_redis_error_in_the_chain() {
    let mut server = spawned_or_skip!();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let ctx = Arc::new(Ctx {
        store: SharedStore::new(store.clone()),
        runs: AtomicUsize::new(0),
    });
    server.stop();

    let key = KeyHasher::unkeyed()
        .key(&["tests.faults.downcast"], &1)
        .unwrap();
    let err = store
        .claim(
            &key,
            &Fingerprint::from_bytes([0; 32]),
            Duration::from_secs(30),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, idem_core::Error::Store(_)), "{err:?}");
    assert_eq!(err.to_string(), "idempotency store failed");
    let redis_err = redis_error_in(&err).expect("the redis::RedisError is in the chain");
    assert!(redis_err.is_io_error(), "{redis_err:?}");
    // idem's layers name what they add and leave the client's message to the client.
    let operation = err.source().unwrap().to_string();
    assert!(
        operation.starts_with("redis claim on ")
            && operation.contains(&format!("127.0.0.1:{}", server.port()))
            && operation.ends_with(" failed"),
        "{operation}"
    );
    println!("{}", chain(&err));

    // Through the macro: 10 local duplicates share the leader's failed claim.
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move { charge_or_idem_error(3, &ctx).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, idem_core::Error::Store(_)), "{err:?}");
        assert!(redis_error_in(&err).is_some(), "{}", chain(&err));
    }
    assert_eq!(ctx.runs.load(SeqCst), 0);
}
