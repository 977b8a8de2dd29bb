//! Idempotent functions calling idempotent functions: an error idem hands to a body (a
//! nested call's `InProgress`, `PayloadMismatch`, ..) is transient for the outer call, so
//! `cache_errors` never stores it, however the body passes it on.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use idem_core::idempotent;
use tests::{IdemKind, TestError};

/// The inner call: slow, and a duplicate fails at once.
#[idempotent(in_flight = "reject")]
async fn reserve(item: u64) -> Result<u64, TestError> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(item * 10)
}

#[idempotent(in_flight = "reject", detach)]
async fn reserve_detached(item: u64) -> Result<u64, TestError> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(item * 10)
}

static DIRECT_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Passes the inner call's error on with `?`.
#[idempotent(cache_errors)]
async fn order(item: u64) -> Result<u64, TestError> {
    DIRECT_RUNS.fetch_add(1, SeqCst);
    Ok(reserve(item).await? + 1)
}

static WRAPPED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Turns the inner call's error into an error of its own making.
#[idempotent(cache_errors)]
async fn order_wrapped(item: u64) -> Result<u64, TestError> {
    WRAPPED_RUNS.fetch_add(1, SeqCst);
    match reserve(item).await {
        Ok(reserved) => Ok(reserved + 1),
        Err(err) => Err(TestError::Body(format!("could not reserve: {err:?}"))),
    }
}

/// A middle layer without `cache_errors`, which hands the inner error up.
#[idempotent]
async fn middle(item: u64) -> Result<u64, TestError> {
    reserve(item).await
}

static DEEP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(cache_errors)]
async fn order_deep(item: u64) -> Result<u64, TestError> {
    DEEP_RUNS.fetch_add(1, SeqCst);
    Ok(middle(item).await? + 1)
}

static DETACHED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(cache_errors)]
async fn order_via_detached(item: u64) -> Result<u64, TestError> {
    DETACHED_RUNS.fetch_add(1, SeqCst);
    Ok(reserve_detached(item).await? + 1)
}

static MISMATCH_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "id")]
async fn keyed(id: u64, amount: u64) -> Result<u64, TestError> {
    Ok(amount)
}

#[idempotent(cache_errors)]
async fn order_mismatched(id: u64, amount: u64) -> Result<u64, TestError> {
    MISMATCH_RUNS.fetch_add(1, SeqCst);
    keyed(id, amount).await
}

static BODY_ERR_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Its own `Err` after a nested call that succeeded: cached as usual.
#[idempotent(cache_errors)]
async fn order_declined(item: u64) -> Result<u64, TestError> {
    BODY_ERR_RUNS.fetch_add(1, SeqCst);
    let _ = reserve(item).await?;
    Err(TestError::Body("declined".into()))
}

/// Holds `reserve(item)` (or its detached twin) for 300 ms from now, while `outer` runs and
/// meets its `InProgress`; then checks `outer` is not replaying that error once the inner
/// call finished.
async fn outer_sees_in_progress_then_runs_again<F, Fut>(
    item: u64,
    detached: bool,
    outer: F,
    runs: &AtomicUsize,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u64, TestError>>,
{
    let holder = tokio::spawn(async move {
        if detached {
            reserve_detached(item).await
        } else {
            reserve(item).await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = outer().await;
    assert!(
        matches!(&first, Err(TestError::Idem(IdemKind::InProgress)))
            || matches!(&first, Err(TestError::Body(m)) if m.contains("InProgress")),
        "the inner call was held: {first:?}"
    );
    assert_eq!(holder.await.unwrap(), Ok(item * 10));
    assert_eq!(
        outer().await,
        Ok(item * 10 + 1),
        "the outer call replayed the inner call's transient error"
    );
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(outer().await, Ok(item * 10 + 1), "the success was stored");
    assert_eq!(runs.load(SeqCst), 2);
}

#[tokio::test]
async fn a_nested_in_progress_passed_on_with_question_mark_is_not_cached() {
    outer_sees_in_progress_then_runs_again(1, false, || order(1), &DIRECT_RUNS).await;
}

#[tokio::test]
async fn a_nested_in_progress_wrapped_in_the_bodys_own_error_is_not_cached() {
    outer_sees_in_progress_then_runs_again(2, false, || order_wrapped(2), &WRAPPED_RUNS).await;
}

#[tokio::test]
async fn a_nested_in_progress_through_a_middle_call_is_not_cached() {
    outer_sees_in_progress_then_runs_again(3, false, || order_deep(3), &DEEP_RUNS).await;
}

#[tokio::test]
async fn a_nested_in_progress_from_a_detached_call_is_not_cached() {
    outer_sees_in_progress_then_runs_again(4, true, || order_via_detached(4), &DETACHED_RUNS).await;
}

#[tokio::test]
async fn a_nested_payload_mismatch_is_not_cached() {
    assert_eq!(keyed(5, 100).await, Ok(100));
    let refused = Err(TestError::Idem(IdemKind::PayloadMismatch));
    assert_eq!(order_mismatched(5, 200).await, refused);
    assert_eq!(order_mismatched(5, 200).await, refused);
    assert_eq!(
        MISMATCH_RUNS.load(SeqCst),
        2,
        "the mismatch was replayed from the store"
    );
}

#[tokio::test]
async fn the_bodys_own_error_after_a_nested_call_is_still_cached() {
    let declined = Err(TestError::Body("declined".into()));
    assert_eq!(order_declined(6).await, declined);
    assert_eq!(order_declined(6).await, declined);
    assert_eq!(
        BODY_ERR_RUNS.load(SeqCst),
        1,
        "the body's own error was not cached"
    );
}

/// Each layer of the runtime once held its own copy of the body's future, so a nested
/// call's future was ~14× the size of the call inside it: three levels overflowed a test
/// thread's stack in a debug build. The body is pinned once now.
#[test]
fn a_nested_call_future_is_not_a_multiple_of_the_inner_one() {
    let inner = std::mem::size_of_val(&reserve(1));
    let one = std::mem::size_of_val(&order(1));
    let two = std::mem::size_of_val(&order_deep(1));
    println!("future sizes: inner {inner} B, one level up {one} B, two levels up {two} B");
    assert!(
        one <= 4 * inner,
        "one level: {one} B over an inner {inner} B"
    );
    assert!(two <= 4 * one, "two levels: {two} B over {one} B");
}
