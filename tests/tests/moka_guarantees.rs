//! Every guarantee of the contract, on the default in-process `MokaStore`.
//!
//! Each test uses its own functions (and so its own key namespace), so the tests can share
//! the process default store and run in parallel.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use idem_core::store::Store;
use idem_core::{KeyHasher, MokaStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};
use tests::{IdemKind, TestError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    id: String,
    amount: u64,
    run: usize,
}

#[derive(Debug, Clone, Serialize)]
struct ChargeRequest {
    id: String,
    amount: u64,
}

fn req(id: &str, amount: u64) -> ChargeRequest {
    ChargeRequest {
        id: id.to_string(),
        amount,
    }
}

// ---------------------------------------------------------------------------------------
// 1. One live holder; a completed result never reruns.

static BURST_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "req.id")]
async fn burst(req: ChargeRequest) -> Result<Receipt, TestError> {
    let run = BURST_RUNS.fetch_add(1, SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(Receipt {
        id: req.id,
        amount: req.amount,
        run,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_callers_run_the_body_once() {
    let callers: Vec<_> = (0..500)
        .map(|_| tokio::spawn(burst(req("burst-1", 700))))
        .collect();
    let mut results = Vec::new();
    for caller in callers {
        results.push(caller.await.unwrap().unwrap());
    }
    assert_eq!(BURST_RUNS.load(SeqCst), 1, "the body ran more than once");
    assert!(
        results.iter().all(|r| *r == results[0]),
        "callers got different results"
    );
    // And later calls replay it too.
    assert_eq!(burst(req("burst-1", 700)).await.unwrap(), results[0]);
    assert_eq!(BURST_RUNS.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 2. Replay is identical, floats included.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Measurements {
    values: Vec<f64>,
    labels: BTreeMap<String, Option<i64>>,
    nested: (u128, char, String),
}

static FLOAT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent]
async fn measure(seed: u64) -> Result<Measurements, TestError> {
    FLOAT_RUNS.fetch_add(1, SeqCst);
    Ok(Measurements {
        values: vec![
            0.1 + 0.2,
            f64::MAX,
            f64::MIN_POSITIVE,
            -0.0,
            1e-300,
            seed as f64 / 3.0,
        ],
        labels: BTreeMap::from([("a".into(), Some(i64::MIN)), ("b".into(), None)]),
        nested: (
            u64::MAX as u128 + 1,
            'é',
            "line\nbreak \"quoted\" \u{1F600}".into(),
        ),
    })
}

#[tokio::test]
async fn replay_is_identical() {
    let first = measure(7).await.unwrap();
    let replayed = measure(7).await.unwrap();
    assert_eq!(FLOAT_RUNS.load(SeqCst), 1);
    assert_eq!(first, replayed);
    for (a, b) in first.values.iter().zip(&replayed.values) {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "float {a} did not round-trip bit for bit"
        );
    }
}

static LOSSY_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Results JSON would replay as something else: never stored, so each call runs the body
/// and returns the body's own value.
#[idempotent]
async fn lossy_float(which: u8) -> Result<f64, TestError> {
    LOSSY_RUNS.fetch_add(1, SeqCst);
    Ok([f64::NAN, f64::INFINITY, f64::NEG_INFINITY][usize::from(which)])
}

#[idempotent]
async fn lossy_some_float(id: u8) -> Result<Option<f64>, TestError> {
    LOSSY_RUNS.fetch_add(1, SeqCst);
    Ok(Some(f64::INFINITY * f64::from(id)))
}

#[idempotent]
async fn lossy_some_none(id: u8) -> Result<Option<Option<u32>>, TestError> {
    LOSSY_RUNS.fetch_add(1, SeqCst);
    let _ = id;
    Ok(Some(None))
}

type TwoNested = (Option<Option<u32>>, Option<Option<u32>>);

#[idempotent]
async fn lossless_nested(id: u8) -> Result<TwoNested, TestError> {
    LOSSY_RUNS.fetch_add(1, SeqCst);
    Ok((None, Some(Some(u32::from(id)))))
}

#[tokio::test]
async fn a_result_that_would_replay_as_another_value_is_never_stored() {
    for which in 0..3 {
        let first = lossy_float(which).await.unwrap();
        let second = lossy_float(which).await.unwrap();
        assert_eq!(
            first.to_bits(),
            second.to_bits(),
            "float {which} replayed lossily"
        );
    }
    assert_eq!(lossy_some_float(1).await, Ok(Some(f64::INFINITY)));
    assert_eq!(lossy_some_float(1).await, Ok(Some(f64::INFINITY)));
    assert_eq!(lossy_some_none(1).await, Ok(Some(None)));
    assert_eq!(lossy_some_none(1).await, Ok(Some(None)));
    // Each of those ran its body every time: 3×2 + 2 + 2.
    assert_eq!(LOSSY_RUNS.load(SeqCst), 10);
    // What JSON does encode faithfully is stored and replayed.
    assert_eq!(lossless_nested(4).await, Ok((None, Some(Some(4)))));
    assert_eq!(lossless_nested(4).await, Ok((None, Some(Some(4)))));
    assert_eq!(LOSSY_RUNS.load(SeqCst), 11);
}

// ---------------------------------------------------------------------------------------
// 3. Payload validation.

static MISMATCH_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "req.id")]
async fn charge_checked(req: ChargeRequest) -> Result<Receipt, TestError> {
    let run = MISMATCH_RUNS.fetch_add(1, SeqCst) + 1;
    Ok(Receipt {
        id: req.id,
        amount: req.amount,
        run,
    })
}

#[tokio::test]
async fn reused_key_with_other_arguments_is_refused_and_identical_payload_replays() {
    let first = charge_checked(req("mm-1", 100)).await.unwrap();
    // Same key, the key's own argument changed in another field.
    let refused = charge_checked(req("mm-1", 999)).await;
    assert_eq!(refused, Err(TestError::Idem(IdemKind::PayloadMismatch)));
    // An identical payload always replays.
    assert_eq!(charge_checked(req("mm-1", 100)).await.unwrap(), first);
    assert_eq!(MISMATCH_RUNS.load(SeqCst), 1, "a refused call ran the body");
}

static OTHER_ARG_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "order_id", skip(attempt))]
async fn charge_by_id(order_id: String, amount: u64, attempt: u32) -> Result<u64, TestError> {
    let _ = attempt;
    OTHER_ARG_RUNS.fetch_add(1, SeqCst);
    Ok(amount)
}

#[tokio::test]
async fn every_non_skipped_argument_is_fingerprinted_and_skipped_ones_are_not() {
    assert_eq!(charge_by_id("o-1".into(), 5, 1).await, Ok(5));
    // `attempt` is skipped: a retry with another attempt number replays.
    assert_eq!(charge_by_id("o-1".into(), 5, 2).await, Ok(5));
    // `amount` is not part of the key but is fingerprinted.
    assert_eq!(
        charge_by_id("o-1".into(), 6, 3).await,
        Err(TestError::Idem(IdemKind::PayloadMismatch))
    );
    assert_eq!(OTHER_ARG_RUNS.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 4. Failures are retryable: Err, panic and cancellation release the claim.

static FLAKY_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent]
async fn flaky(id: u32) -> Result<usize, TestError> {
    let run = FLAKY_RUNS.fetch_add(1, SeqCst) + 1;
    if run == 1 {
        return Err(TestError::Body(format!("declined {id}")));
    }
    Ok(run)
}

#[tokio::test]
async fn an_err_is_not_stored_and_the_retry_runs() {
    assert_eq!(flaky(1).await, Err(TestError::Body("declined 1".into())));
    assert_eq!(flaky(1).await, Ok(2), "the retry did not run the body");
    assert_eq!(flaky(1).await, Ok(2), "the successful retry was not stored");
    assert_eq!(FLAKY_RUNS.load(SeqCst), 2);
}

static CACHED_ERR_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(cache_errors)]
async fn declined_for_good(card: String) -> Result<u64, TestError> {
    CACHED_ERR_RUNS.fetch_add(1, SeqCst);
    Err(TestError::Body(format!("card {card} declined")))
}

#[tokio::test]
async fn cache_errors_replays_the_error() {
    let first = declined_for_good("4000".into()).await;
    assert_eq!(first, Err(TestError::Body("card 4000 declined".into())));
    assert_eq!(declined_for_good("4000".into()).await, first);
    assert_eq!(
        CACHED_ERR_RUNS.load(SeqCst),
        1,
        "the cached error was not replayed"
    );
}

static PANIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(in_flight = "reject")]
async fn panics_once(id: u32) -> Result<u32, TestError> {
    if PANIC_RUNS.fetch_add(1, SeqCst) == 0 {
        panic!("the body panicked");
    }
    Ok(id)
}

#[tokio::test]
async fn a_panic_releases_the_claim() {
    let crashed = tokio::spawn(panics_once(3)).await;
    assert!(crashed.unwrap_err().is_panic());
    // `reject` would fail with InProgress if the claim were still held.
    assert_eq!(panics_once(3).await, Ok(3));
    assert_eq!(PANIC_RUNS.load(SeqCst), 2);
}

static DROP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent]
async fn slow_then_fast(id: u32) -> Result<usize, TestError> {
    let run = DROP_RUNS.fetch_add(1, SeqCst) + 1;
    if run == 1 {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    Ok(run)
}

#[tokio::test]
async fn a_dropped_future_releases_the_claim_at_once() {
    let cancelled = tokio::time::timeout(Duration::from_millis(50), slow_then_fast(9)).await;
    assert!(
        cancelled.is_err(),
        "the first call should have been cancelled"
    );
    let start = Instant::now();
    assert_eq!(slow_then_fast(9).await, Ok(2));
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "the retry waited {:?}: the dropped call's claim was not released",
        start.elapsed()
    );
}

static DETACHED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(detach)]
async fn detached(id: String) -> Result<Receipt, TestError> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let run = DETACHED_RUNS.fetch_add(1, SeqCst) + 1;
    Ok(Receipt { id, amount: 1, run })
}

#[tokio::test]
async fn detach_completes_and_stores_after_the_caller_drops() {
    let dropped = tokio::time::timeout(Duration::from_millis(10), detached("d-1".into())).await;
    assert!(dropped.is_err(), "the caller should have given up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        DETACHED_RUNS.load(SeqCst),
        1,
        "the detached body did not finish"
    );
    let replayed = detached("d-1".into()).await.unwrap();
    assert_eq!(replayed.run, 1, "the detached result was not stored");
    assert_eq!(DETACHED_RUNS.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// TTL, in-flight policies, waiting.

static TTL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(ttl = "300ms")]
async fn short_lived(id: u32) -> Result<usize, TestError> {
    let _ = id;
    Ok(TTL_RUNS.fetch_add(1, SeqCst) + 1)
}

#[tokio::test]
async fn a_result_expires_after_its_ttl() {
    assert_eq!(short_lived(1).await, Ok(1));
    assert_eq!(short_lived(1).await, Ok(1), "replayed within the TTL");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        short_lived(1).await,
        Ok(2),
        "the expired result was replayed"
    );
}

#[idempotent(in_flight = "reject")]
async fn rejecting(id: u32) -> Result<u32, TestError> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(id)
}

#[tokio::test]
async fn reject_fails_fast_while_the_first_call_runs() {
    let first = tokio::spawn(rejecting(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    assert_eq!(
        rejecting(1).await,
        Err(TestError::Idem(IdemKind::InProgress))
    );
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "reject waited {:?}",
        start.elapsed()
    );
    assert_eq!(first.await.unwrap(), Ok(1));
    assert_eq!(
        rejecting(1).await,
        Ok(1),
        "after completion, reject replays"
    );
}

#[idempotent(wait = "200ms")]
async fn waits_briefly(id: u32) -> Result<u32, TestError> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(id)
}

#[tokio::test]
async fn wait_gives_up_with_in_progress_after_its_bound() {
    let first = tokio::spawn(waits_briefly(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    assert_eq!(
        waits_briefly(1).await,
        Err(TestError::Idem(IdemKind::InProgress))
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(180) && waited < Duration::from_millis(1500),
        "waited {waited:?}, expected about 200ms"
    );
    first.abort();
}

static RENEW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(lease = "400ms", in_flight = "reject")]
async fn longer_than_its_lease(id: u32) -> Result<u32, TestError> {
    RENEW_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    Ok(id)
}

#[tokio::test]
async fn a_live_holder_renews_its_lease_and_is_not_taken_over() {
    let first = tokio::spawn(longer_than_its_lease(4));
    // Well past the 400ms lease: without renewal a duplicate would take over and run.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        longer_than_its_lease(4).await,
        Err(TestError::Idem(IdemKind::InProgress))
    );
    assert_eq!(first.await.unwrap(), Ok(4));
    assert_eq!(longer_than_its_lease(4).await, Ok(4));
    assert_eq!(RENEW_RUNS.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// Stable keys, no key confusion.

static MAP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent]
async fn with_map(lines: HashMap<String, u64>) -> Result<u64, TestError> {
    MAP_RUNS.fetch_add(1, SeqCst);
    Ok(lines.values().sum())
}

#[tokio::test]
async fn maps_with_the_same_entries_in_another_order_give_one_key() {
    let forward: HashMap<String, u64> = (0..64).map(|i| (format!("sku-{i}"), i)).collect();
    let mut backward = HashMap::new();
    for i in (0..64).rev() {
        backward.insert(format!("sku-{i}"), i);
    }
    assert_eq!(with_map(forward).await, Ok(2016));
    assert_eq!(with_map(backward).await, Ok(2016));
    assert_eq!(MAP_RUNS.load(SeqCst), 1, "the map order changed the key");

    let hasher = KeyHasher::unkeyed();
    let a: HashMap<&str, i32> = [("x", 1), ("y", 2), ("z", 3)].into();
    let b: BTreeMap<&str, i32> = [("z", 3), ("x", 1), ("y", 2)].into();
    assert_eq!(
        hasher.key(&["n"], &a).unwrap(),
        hasher.key(&["n"], &b).unwrap()
    );
}

static CONFUSION_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent]
async fn pair(a: String, b: String) -> Result<String, TestError> {
    CONFUSION_RUNS.fetch_add(1, SeqCst);
    Ok(format!("{a}|{b}"))
}

#[idempotent]
async fn pair_twin(a: String, b: String) -> Result<String, TestError> {
    Ok(format!("twin {a}|{b}"))
}

#[tokio::test]
async fn structurally_different_arguments_and_functions_never_share_a_key() {
    assert_eq!(pair("a:b".into(), "".into()).await.unwrap(), "a:b|");
    assert_eq!(pair("a".into(), "b".into()).await.unwrap(), "a|b");
    assert_eq!(pair("a".into(), "b:".into()).await.unwrap(), "a|b:");
    assert_eq!(CONFUSION_RUNS.load(SeqCst), 3);
    // Another function with the same arguments has its own key.
    assert_eq!(pair_twin("a".into(), "b".into()).await.unwrap(), "twin a|b");
}

struct Cards;
struct Wallets;

impl Cards {
    #[idempotent]
    async fn balance(&self, account: u64) -> Result<String, TestError> {
        Ok(format!("cards:{account}"))
    }
}

impl Wallets {
    #[idempotent]
    async fn balance(&self, account: u64) -> Result<String, TestError> {
        Ok(format!("wallets:{account}"))
    }
}

#[tokio::test]
async fn two_types_methods_of_the_same_name_never_share_a_key() {
    assert_eq!(Cards.balance(1).await.unwrap(), "cards:1");
    assert_eq!(Wallets.balance(1).await.unwrap(), "wallets:1");
    assert_eq!(Cards.balance(1).await.unwrap(), "cards:1");
}

#[idempotent]
async fn generic_echo<T: Serialize + Send + Sync + ToString>(
    value: T,
) -> Result<String, TestError> {
    Ok(format!(
        "{}:{}",
        std::any::type_name::<T>(),
        value.to_string()
    ))
}

#[tokio::test]
async fn generic_functions_are_namespaced_by_their_type_arguments() {
    // 7u8 and 7u64 encode to the same value, but the type arguments differ.
    assert_eq!(generic_echo(7u8).await.unwrap(), "u8:7");
    assert_eq!(generic_echo(7u64).await.unwrap(), "u64:7");
}

#[test]
fn a_key_hash_is_identical_in_a_second_os_process() {
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_print_key"))
            .output()
            .expect("spawn print_key");
        assert!(out.status.success(), "print_key failed: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let first = run();
    let second = run();
    assert_eq!(first.len(), 64);
    assert_eq!(first, second);
    // And this process computes the same key for the same logical arguments.
    let lines: BTreeMap<String, u64> = (0..20).map(|i| (format!("sku-{i}"), i)).collect();
    let hasher = KeyHasher::unkeyed();
    let fingerprint = hasher
        .fingerprint(&(&"order-7".to_string(), &lines))
        .unwrap();
    let key = hasher.key_from_fingerprint(&["tests.cross_process.v1"], &fingerprint);
    assert_eq!(key.to_hex(), first);
}

// ---------------------------------------------------------------------------------------
// current_key, forget, bad stored data, results that cannot be stored.

#[idempotent(key = "id", name = "tests.current_key.v1")]
async fn reports_its_key(id: String) -> Result<String, TestError> {
    Ok(idem_core::current_key().expect("inside the body").to_hex())
}

#[tokio::test]
async fn current_key_inside_the_body_is_the_stored_key() {
    assert_eq!(idem_core::current_key(), None);
    let inside = reports_its_key("k-1".into()).await.unwrap();
    let expected = KeyHasher::unkeyed()
        .key(&["tests.current_key.v1"], &"k-1")
        .unwrap();
    assert_eq!(inside, expected.to_hex());
    // The record is stored under that very key.
    assert!(idem_core::forget(&expected).await.unwrap());
    assert!(!idem_core::forget(&expected).await.unwrap());
}

static FORGET_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "id", name = "tests.forget.v1")]
async fn forgettable(id: String) -> Result<usize, TestError> {
    Ok(FORGET_RUNS.fetch_add(1, SeqCst) + 1)
}

#[tokio::test]
async fn forget_makes_the_next_call_run() {
    assert_eq!(forgettable("f-1".into()).await, Ok(1));
    assert_eq!(forgettable("f-1".into()).await, Ok(1));
    let key = KeyHasher::unkeyed()
        .key(&["tests.forget.v1"], &"f-1")
        .unwrap();
    assert!(idem_core::forget(&key).await.unwrap());
    assert_eq!(forgettable("f-1".into()).await, Ok(2));
}

static CORRUPT_RUNS: AtomicUsize = AtomicUsize::new(0);
static CORRUPT_STORE: std::sync::LazyLock<SharedStore> =
    std::sync::LazyLock::new(|| SharedStore::new(MokaStore::new()));

#[idempotent(key = "id", name = "tests.corrupt.v1", store = &*CORRUPT_STORE)]
async fn reads_corrupt(id: String) -> Result<u64, TestError> {
    CORRUPT_RUNS.fetch_add(1, SeqCst);
    Ok(1)
}

#[tokio::test]
async fn bad_stored_data_is_a_codec_error_not_a_panic_or_a_rerun() {
    let hasher = KeyHasher::unkeyed();
    let key = hasher.key(&["tests.corrupt.v1"], &"c-1").unwrap();
    let fingerprint = hasher.fingerprint(&(&"c-1".to_string(),)).unwrap();
    let store = CORRUPT_STORE.store();
    for garbage in [
        &b"O{not json"[..],
        b"Ostring instead of u64",
        b"",
        b"X1",
        b"E\"cached error\"",
    ] {
        store.forget(&key).await.unwrap();
        let idem_core::store::Claim::Claimed { token, .. } = store
            .claim(&key, &fingerprint, Duration::from_secs(5))
            .await
            .unwrap()
        else {
            panic!("expected a fresh claim");
        };
        let record = Arc::new(idem_core::store::Record::new(fingerprint, garbage.to_vec()));
        assert!(
            store
                .complete(&key, token, record, Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert_eq!(
            reads_corrupt("c-1".into()).await,
            Err(TestError::Idem(IdemKind::Codec)),
            "garbage {garbage:?}"
        );
    }
    assert_eq!(
        CORRUPT_RUNS.load(SeqCst),
        0,
        "bad stored data made the body rerun"
    );
}

static UNSTORABLE_RUNS: AtomicUsize = AtomicUsize::new(0);

/// JSON cannot encode a map whose keys are tuples.
#[idempotent]
async fn unstorable(id: u32) -> Result<HashMap<(u32, u32), u32>, TestError> {
    UNSTORABLE_RUNS.fetch_add(1, SeqCst);
    Ok(HashMap::from([((id, id), 1)]))
}

#[tokio::test]
async fn a_side_effect_that_ran_is_never_reported_as_failed() {
    let result = unstorable(5).await;
    assert_eq!(
        result,
        Ok(HashMap::from([((5, 5), 1)])),
        "the caller lost the body's result"
    );
    assert_eq!(UNSTORABLE_RUNS.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// Store protocol: fencing, crash recovery, eviction.

#[tokio::test]
async fn fencing_a_taken_over_holder_cannot_overwrite_or_delete() {
    let store = MokaStore::new();
    let hasher = KeyHasher::unkeyed();
    let key = hasher.key(&["tests.fencing"], &1).unwrap();
    let fp = hasher.fingerprint(&1).unwrap();
    let lease = Duration::from_millis(100);

    let idem_core::store::Claim::Claimed {
        token: old,
        taken_over: false,
    } = store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("first claim")
    };
    assert!(matches!(
        store.claim(&key, &fp, lease).await.unwrap(),
        idem_core::store::Claim::InProgress(_)
    ));
    // The old holder stalls past its lease (a crash, a GC pause); a new caller takes over.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let idem_core::store::Claim::Claimed {
        token: new,
        taken_over: true,
    } = store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("takeover after the lease")
    };
    let late = Arc::new(idem_core::store::Record::new(fp, b"O\"late\"".to_vec()));
    assert!(!store.renew(&key, old, lease).await.unwrap());
    assert!(
        !store.release(&key, old).await.unwrap(),
        "the old holder released the new claim"
    );
    assert!(
        !store
            .complete(&key, old, late, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let fresh = Arc::new(idem_core::store::Record::new(fp, b"O\"fresh\"".to_vec()));
    assert!(
        store
            .complete(&key, new, fresh, Duration::from_secs(60))
            .await
            .unwrap()
    );
    match store.claim(&key, &fp, lease).await.unwrap() {
        idem_core::store::Claim::Completed(record) => assert_eq!(record.value(), b"O\"fresh\""),
        other => panic!("expected the new holder's record, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_store_refuses_new_claims_and_evicts_nothing() {
    let store = SharedStore::new(MokaStore::builder().max_capacity(10).build());
    let hasher = KeyHasher::unkeyed();
    let running = hasher.key(&["tests.evict"], &"running").unwrap();
    let fp = hasher.fingerprint(&"running").unwrap();
    let lease = Duration::from_secs(30);
    let idem_core::store::Claim::Claimed { token, .. } =
        store.store().claim(&running, &fp, lease).await.unwrap()
    else {
        panic!("claim")
    };
    // Flood the store with ten times its capacity of new keys: the excess is refused.
    let (mut stored, mut refused) = (Vec::new(), 0);
    for i in 0..100u32 {
        let key = hasher.key(&["tests.evict"], &i).unwrap();
        let fp = hasher.fingerprint(&i).unwrap();
        match store.store().claim(&key, &fp, lease).await {
            Ok(idem_core::store::Claim::Claimed { token, .. }) => {
                let record = Arc::new(idem_core::store::Record::new(fp, b"O1".to_vec()));
                assert!(
                    store
                        .store()
                        .complete(&key, token, record, Duration::from_secs(60))
                        .await
                        .unwrap()
                );
                stored.push((key, fp));
            }
            Err(idem_core::Error::StoreFull) => refused += 1,
            Ok(other) => panic!("claim {i}: {other:?}"),
            Err(err) => panic!("claim {i}: {err}"),
        }
    }
    assert_eq!((stored.len(), refused), (9, 91));
    // Every completed record is still replayed, and the running claim still held.
    for (key, fp) in &stored {
        assert!(matches!(
            store.store().claim(key, fp, lease).await.unwrap(),
            idem_core::store::Claim::Completed(_)
        ));
    }
    assert!(matches!(
        store.store().claim(&running, &fp, lease).await.unwrap(),
        idem_core::store::Claim::InProgress(_)
    ));
    let record = Arc::new(idem_core::store::Record::new(fp, b"O2".to_vec()));
    assert!(
        store
            .store()
            .complete(&running, token, record, Duration::from_secs(60))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn durations_without_bound_saturate_instead_of_panicking() {
    let store = MokaStore::new();
    let hasher = KeyHasher::unkeyed();
    let key = hasher.key(&["tests.saturate"], &1).unwrap();
    let fp = hasher.fingerprint(&1).unwrap();
    let idem_core::store::Claim::Claimed { token, .. } =
        store.claim(&key, &fp, Duration::MAX).await.unwrap()
    else {
        panic!("claim")
    };
    assert!(matches!(
        store.claim(&key, &fp, Duration::MAX).await.unwrap(),
        idem_core::store::Claim::InProgress(_)
    ));
    assert!(store.renew(&key, token, Duration::MAX).await.unwrap());
    let record = Arc::new(idem_core::store::Record::new(fp, b"O1".to_vec()));
    assert!(
        store
            .complete(&key, token, record, Duration::MAX)
            .await
            .unwrap()
    );
    assert!(matches!(
        store.claim(&key, &fp, Duration::MAX).await.unwrap(),
        idem_core::store::Claim::Completed(_)
    ));
}

static FORGOTTEN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "id", name = "tests.forget_running.v1")]
async fn forgotten_while_running(id: u32) -> Result<usize, TestError> {
    let run = FORGOTTEN_RUNS.fetch_add(1, SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(run)
}

#[tokio::test]
async fn forget_of_a_running_claim_means_its_result_is_not_stored() {
    let key = KeyHasher::unkeyed()
        .key(&["tests.forget_running.v1"], &1u32)
        .unwrap();
    let holder = tokio::spawn(forgotten_while_running(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        idem_core::forget(&key).await.unwrap(),
        "the claim was there"
    );
    assert_eq!(
        holder.await.unwrap(),
        Ok(1),
        "the holder still gets its result"
    );
    assert_eq!(
        forgotten_while_running(1).await,
        Ok(2),
        "the result was stored"
    );
}

// ---------------------------------------------------------------------------------------
// `observe`: the caller learns what happened to its call.

#[idempotent(key = "id", name = "tests.observe.inner.v1")]
async fn observed_inner(id: u32) -> Result<u32, TestError> {
    Ok(id)
}

#[idempotent(key = "id", name = "tests.observe.v1")]
async fn observed(id: u32, fail: bool) -> Result<u32, TestError> {
    // A nested call is not what the caller observes.
    let inner = observed_inner(id).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    if fail {
        return Err(TestError::Body("declined".into()));
    }
    Ok(inner)
}

#[idempotent(key = "id", name = "tests.observe.v1", in_flight = "reject")]
async fn observed_or_rejected(id: u32, fail: bool) -> Result<u32, TestError> {
    let _ = fail;
    Ok(id)
}

#[tokio::test]
async fn observe_tells_executed_waited_replayed_rejected_and_released() {
    use idem_core::{Outcome, observe};
    let first = tokio::spawn(observe(observed(1, false)));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let rejected = observe(observed_or_rejected(1, false)).await;
    let waited = observe(observed(1, false)).await;
    assert_eq!(first.await.unwrap(), (Ok(1), Some(Outcome::Executed)));
    assert_eq!(
        rejected,
        (
            Err(TestError::Idem(IdemKind::InProgress)),
            Some(Outcome::Rejected)
        )
    );
    assert_eq!(waited, (Ok(1), Some(Outcome::Waited)));
    assert_eq!(
        observe(observed(1, false)).await,
        (Ok(1), Some(Outcome::Replayed))
    );
    assert_eq!(
        observe(observed(2, true)).await,
        (
            Err(TestError::Body("declined".into())),
            Some(Outcome::Released)
        )
    );
    assert_eq!(
        observe(observed(1, true)).await,
        (
            Err(TestError::Idem(IdemKind::PayloadMismatch)),
            Some(Outcome::Mismatch)
        )
    );
    assert_eq!(observe(async { 5 }).await, (5, None));
}

static BOUNDED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(name = "tests.moka.bounded", store = store, skip(store))]
async fn bounded_charge(id: u32, store: &SharedStore) -> Result<u32, TestError> {
    BOUNDED_RUNS.fetch_add(1, SeqCst);
    Ok(id * 10)
}

/// The function surface at a store's bound: a new key fails closed with
/// `Error::StoreFull` (its body does not run), with a `store_full` warning that `observe`
/// reports too, and every stored key still replays.
#[tokio::test]
async fn at_the_bound_a_new_key_fails_closed_and_stored_keys_replay() {
    let captured = tests::CapturedLog::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let store = SharedStore::new(MokaStore::builder().max_capacity(5).build());
    for id in 0..5 {
        assert_eq!(bounded_charge(id, &store).await, Ok(id * 10));
    }
    let (refused, outcome) = idem_core::observe(bounded_charge(5, &store)).await;
    assert_eq!(refused, Err(TestError::Idem(IdemKind::StoreFull)));
    assert_eq!(outcome, Some(idem_core::Outcome::StoreFull));
    assert_eq!(BOUNDED_RUNS.load(SeqCst), 5, "a body ran at the bound");
    assert!(
        captured.text().contains("store_full"),
        "{}",
        captured.text()
    );
    for id in 0..5 {
        let (replay, outcome) = idem_core::observe(bounded_charge(id, &store)).await;
        assert_eq!(replay, Ok(id * 10));
        assert_eq!(outcome, Some(idem_core::Outcome::Replayed));
    }
    assert_eq!(BOUNDED_RUNS.load(SeqCst), 5);
}
