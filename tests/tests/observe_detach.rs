//! Issue 22 A3: `observe()` reports the outcome of a `detach` function, whose body runs in
//! a spawned task (the observer's task-local did not reach it: the outcome was `None`).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use idem_core::{Error, Outcome, idempotent, observe};

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "order", detach)]
async fn ship(order: u64) -> Result<u64, Error> {
    RUNS.fetch_add(1, SeqCst);
    Ok(order * 10)
}

#[idempotent(key = "order", detach)]
async fn pack(order: u64) -> Result<u64, Error> {
    Ok(order * 10)
}

#[idempotent(key = "order")]
async fn plain(order: u64) -> Result<u64, Error> {
    Ok(order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_reports_a_detached_call_first_run_and_replay() {
    let (first, outcome) = observe(ship(41)).await;
    assert_eq!(first.unwrap(), 410);
    assert_eq!(outcome, Some(Outcome::Executed));
    let (again, outcome) = observe(ship(41)).await;
    assert_eq!(again.unwrap(), 410);
    assert_eq!(outcome, Some(Outcome::Replayed));
    assert_eq!(RUNS.load(SeqCst), 1);
}

/// The first call in the scope is the one reported, detached or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_in_the_scope_is_reported() {
    let (_, outcome) = observe(async {
        plain(7).await.unwrap();
        pack(77).await.unwrap()
    })
    .await;
    assert_eq!(outcome, Some(Outcome::Executed));
    let (_, outcome) = observe(async {
        plain(7).await.unwrap(); // replayed: reported
        pack(78).await.unwrap() // executed: a later call, not reported
    })
    .await;
    assert_eq!(outcome, Some(Outcome::Replayed));
}
