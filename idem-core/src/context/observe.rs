//! [`observe`]: how a caller learns whether its idempotent call executed, waited or was
//! replayed, without changing the function's signature (for an `Idempotent-Replayed`
//! header, a log line, a metric).

use std::cell::Cell;
use std::future::Future;

use crate::key::Key;
use crate::outcome::Outcome;
use crate::scope_count::ScopeCount;

tokio::task_local! {
    static OBSERVER: Observer;
}

/// The [`observe`] scopes running right now, in the whole process.
static OBSERVING: ScopeCount = ScopeCount::new();

/// The call an [`observe`] scope watches (the first to start in it) and its last outcome.
struct Observer {
    call: Cell<Option<Key>>,
    outcome: Cell<Option<Outcome>>,
}

/// Runs `future` and reports the [`Outcome`] of the first idempotent call it makes:
/// `Executed`, `Replayed`, `Waited`, `Rejected`, .. — `None` if it made none (or failed
/// before claiming, e.g. an argument that could not be encoded). Calls that call runs in
/// its body, and later calls of the future, are not reported.
///
/// ```
/// use idem_core::{idempotent, observe, Outcome};
///
/// #[idempotent]
/// async fn charge(order: u64) -> Result<u64, idem_core::Error> {
///     Ok(order * 100)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (first, outcome) = observe(charge(7)).await;
/// assert_eq!((first.unwrap(), outcome), (700, Some(Outcome::Executed)));
/// let (retry, outcome) = observe(charge(7)).await;
/// assert_eq!((retry.unwrap(), outcome), (700, Some(Outcome::Replayed)));
/// # }
/// ```
pub async fn observe<F: Future>(future: F) -> (F::Output, Option<Outcome>) {
    let observer = Observer {
        call: Cell::new(None),
        outcome: Cell::new(None),
    };
    let _observing = OBSERVING.enter();
    OBSERVER
        .scope(observer, async {
            let output = future.await;
            (output, OBSERVER.with(|o| o.outcome.get()))
        })
        .await
}

/// A call with `key` starts: it is the one observed if it is the first in its scope.
#[inline]
pub(crate) fn start(key: &Key) {
    if !OBSERVING.any() {
        return;
    }
    let _ = OBSERVER.try_with(|o| {
        if o.call.get().is_none() {
            o.call.set(Some(*key));
        }
    });
}

/// The call with `key` had `outcome` (its last one counts).
#[inline]
pub(crate) fn record(key: &Key, outcome: Outcome) {
    if !OBSERVING.any() {
        return;
    }
    let _ = OBSERVER.try_with(|o| {
        if o.call.get() == Some(*key) {
            o.outcome.set(Some(outcome));
        }
    });
}

/// Whether the caller is inside an [`observe`] scope, so a call it runs in a spawned task
/// (`detach`) must carry its outcome back ([`carry`], [`adopt`]).
#[inline]
pub(crate) fn observed() -> bool {
    OBSERVING.any() && OBSERVER.try_with(|_| ()).is_ok()
}

/// Runs `future` (in the spawned task) in an observer of its own, and gives back its first
/// call and that call's outcome, for the caller's scope to [`adopt`].
pub(crate) async fn carry<F: Future>(future: F) -> (F::Output, Option<(Key, Outcome)>) {
    let observer = Observer {
        call: Cell::new(None),
        outcome: Cell::new(None),
    };
    let _observing = OBSERVING.enter();
    OBSERVER
        .scope(observer, async {
            let output = future.await;
            let seen = OBSERVER.with(|o| o.call.get().zip(o.outcome.get()));
            (output, seen)
        })
        .await
}

/// A call that ran in a spawned task had `seen`: reported in the caller's scope as if it
/// ran there.
pub(crate) fn adopt(seen: Option<(Key, Outcome)>) {
    if let Some((key, outcome)) = seen {
        start(&key);
        record(&key, outcome);
    }
}
