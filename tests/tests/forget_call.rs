//! `key_of` and `forget_call`: an operator finds a call's key, or forgets its record, from
//! the call's arguments. The key is the one the call itself uses (every namespace rule
//! included), the body never runs, and the store is not touched by `key_of`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{LazyLock, Mutex};

use idem_core::{Error, MokaStore, RedisStore, SharedStore, forget_call, idempotent, key_of};
use tests::redis_server::RedisServer;

static RUNS: AtomicUsize = AtomicUsize::new(0);
static SEEN_KEYS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[idempotent(key = "order", in_flight = "reject")]
async fn charge(order: u64, cents: u64) -> Result<u64, Error> {
    RUNS.fetch_add(1, SeqCst);
    SEEN_KEYS
        .lock()
        .unwrap()
        .push(idem_core::current_key().unwrap().to_hex());
    Ok(order * 1000 + cents)
}

#[tokio::test]
async fn key_of_is_the_key_the_call_uses_and_runs_nothing() {
    let runs = RUNS.load(SeqCst);
    let key = key_of(charge(501, 7)).await.unwrap();
    assert_eq!(RUNS.load(SeqCst), runs, "key_of ran the body");
    // Nothing was claimed either: with `reject`, a claim left behind would refuse this call.
    assert_eq!(charge(501, 7).await.unwrap(), 501_007);
    let seen = SEEN_KEYS.lock().unwrap().last().cloned().unwrap();
    assert_eq!(key.to_hex(), seen);
    // The key is the `key` expression's: other cents, same key; another order, another key.
    assert_eq!(key, key_of(charge(501, 8)).await.unwrap());
    assert_ne!(key, key_of(charge(502, 7)).await.unwrap());
}

#[idempotent(key = "order")]
async fn settle(order: u64) -> Result<u64, Error> {
    SETTLED.fetch_add(1, SeqCst);
    Ok(order + 1)
}

static SETTLED: AtomicUsize = AtomicUsize::new(0);

/// A probe reaches only the call it polls: while one is waiting in its task, calls in other
/// tasks (on other threads) run, store and replay as usual, and `observe` sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_probe_stops_only_its_own_call() {
    let probe = tokio::spawn(key_of(async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        settle(900).await
    }));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let others: Vec<_> = (0..8u64)
        .map(|i| tokio::spawn(idem_core::observe(settle(910 + i))))
        .collect();
    for (i, other) in (0..8u64).zip(others) {
        let (value, outcome) = other.await.unwrap();
        assert_eq!(value.unwrap(), 911 + i);
        assert_eq!(outcome, Some(idem_core::Outcome::Executed));
    }
    assert_eq!(
        SETTLED.load(SeqCst),
        8,
        "every other call ran its body once"
    );
    assert!(
        !probe.is_finished(),
        "the probe was still waiting meanwhile"
    );
    let key = probe.await.unwrap().unwrap();
    assert_eq!(SETTLED.load(SeqCst), 8, "the probed call did not run");
    assert_ne!(key, key_of(settle(910)).await.unwrap());
    let (replayed, outcome) = idem_core::observe(settle(910)).await;
    assert_eq!(replayed.unwrap(), 911);
    assert_eq!(outcome, Some(idem_core::Outcome::Replayed));
}

struct Ledger<T>(std::marker::PhantomData<T>);

impl<T: Send + Sync + 'static> Ledger<T> {
    #[idempotent]
    async fn post(&self, entry: u64) -> Result<String, Error> {
        Ok(format!("{entry} as {}", std::any::type_name::<T>()))
    }
}

#[tokio::test]
async fn key_of_keeps_the_namespace_of_methods_and_type_arguments() {
    let bytes = Ledger::<u8>(std::marker::PhantomData);
    let strings = Ledger::<String>(std::marker::PhantomData);
    let a = key_of(bytes.post(1)).await.unwrap();
    let b = key_of(strings.post(1)).await.unwrap();
    assert_ne!(a, b, "two type arguments share a key");
    assert_eq!(a, key_of(bytes.post(1)).await.unwrap());
}

static OWN_RUNS: AtomicUsize = AtomicUsize::new(0);
static OWN_STORE: LazyLock<SharedStore> = LazyLock::new(|| MokaStore::new().into());

#[idempotent(store = *OWN_STORE)]
async fn refund(order: u64) -> Result<usize, Error> {
    Ok(OWN_RUNS.fetch_add(1, SeqCst) + 1)
}

#[tokio::test]
async fn forget_call_forgets_in_the_functions_own_store() {
    let first = refund(9).await.unwrap();
    assert_eq!(refund(9).await.unwrap(), first, "not replayed");
    // The record is in OWN_STORE, not the default store: forget by key there finds nothing.
    let key = key_of(refund(9)).await.unwrap();
    assert!(!idem_core::forget(&key).await.unwrap());
    assert!(forget_call(refund(9)).await.unwrap());
    let second = refund(9).await.unwrap();
    assert_eq!(
        second,
        first + 1,
        "the body did not run again after forget_call"
    );
    assert!(forget_call(refund(10)).await.is_ok_and(|had| !had));
}

static DETACHED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(detach)]
async fn ship(parcel: u64) -> Result<u64, Error> {
    DETACHED_RUNS.fetch_add(1, SeqCst);
    Ok(parcel)
}

#[tokio::test]
async fn a_detached_call_is_probed_before_its_task_is_spawned() {
    let key = key_of(ship(3)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(DETACHED_RUNS.load(SeqCst), 0, "the detached body ran");
    assert_ne!(key, key_of(ship(4)).await.unwrap());
}

#[tokio::test]
async fn a_future_without_an_idempotent_call_is_an_error() {
    let err = key_of(async { 5 }).await.unwrap_err();
    assert!(matches!(err, Error::Codec(_)), "{err:?}");
    // A wrapper is followed to its first idempotent call.
    let wrapped = key_of(async { charge(77, 1).await }).await.unwrap();
    assert_eq!(wrapped, key_of(charge(77, 1)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_key_of_sends_nothing_and_forget_call_reaches_every_process() {
    if !tests::redis_server::redis_available() {
        return;
    }
    let server = RedisServer::spawn();
    let connect = || async { SharedStore::from(RedisStore::connect(&server.url()).await.unwrap()) };
    let (one, two) = (connect().await, connect().await);
    let runs = Arc::new(AtomicUsize::new(0));

    #[idempotent(store = store, skip(store, runs))]
    async fn send(mail: u64, store: &SharedStore, runs: &AtomicUsize) -> Result<usize, Error> {
        Ok(runs.fetch_add(1, SeqCst) + 1)
    }

    // Every command but the `INFO` that reads the counts.
    let commands = || {
        let mut calls = server.command_calls();
        calls.retain(|(name, _)| name != "info");
        calls
    };
    let before = commands();
    key_of(send(1, &one, &runs)).await.unwrap();
    assert_eq!(commands(), before, "key_of sent a command");

    assert_eq!(send(1, &one, &runs).await.unwrap(), 1);
    assert_eq!(send(1, &two, &runs).await.unwrap(), 1, "not shared");
    assert!(forget_call(send(1, &two, &runs)).await.unwrap());
    assert_eq!(
        send(1, &one, &runs).await.unwrap(),
        2,
        "the forget did not reach"
    );
}

#[idempotent(transaction = "tx")]
async fn book(tx: &mut sqlx::PgConnection, seat: u64) -> Result<u64, Error> {
    sqlx::query("SELECT 1").execute(&mut *tx).await.ok();
    Ok(seat)
}

#[tokio::test]
async fn transaction_mode_is_probed_before_any_statement() {
    use sqlx::Connection;
    let Some(url) = tests::postgres::shared_postgres() else {
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // Inside a transaction, any statement run on an aborted one would fail the next: the
    // probe runs none (no claim row, no table lookup).
    let mut tx = conn.begin().await.unwrap();
    let key = key_of(book(&mut tx, 12)).await.unwrap();
    assert_ne!(key, key_of(book(&mut tx, 13)).await.unwrap());
    // No store is installed in this test binary: the records are in callers' transactions.
    let err = forget_call(book(&mut tx, 12)).await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(one, 1);
}
