//! The key of an idempotent call, from its arguments, without running it: for the
//! operator who must [`forget`](crate::forget) a bad result and knows the call, not its key.
//!
//! The probe polls the call's future in a task-local scope. The generated code derives the
//! key and fingerprint first; then, seeing the probe, it reports them (and its store) and
//! never goes on, so neither the store nor the body is touched. Deriving the key here with
//! the real generated code, rather than recomputing it, keeps every namespace rule (methods,
//! generics, nested fns, `name`, `key`) in one place.

use std::cell::RefCell;
use std::future::{Future, IntoFuture, poll_fn};
use std::pin::pin;
use std::task::Poll;

use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::scope_count::ScopeCount;
use crate::store::SharedStore;

tokio::task_local! {
    /// Where a probed call reports; set only while [`key_of`] or [`forget_call`] polls.
    static PROBE: RefCell<Option<Probed>>;
}

/// The probes polling right now, in the whole process (every call asks; probes are rare).
static PROBING: ScopeCount = ScopeCount::new();

/// A call's derived key and fingerprint, or why they could not be derived.
type Derived = Result<(Key, Fingerprint), Error>;

/// What a probed call reported.
struct Probed {
    ids: Derived,
    store: Result<SharedStore, Error>,
}

/// Hands `store` and `ids` back when no probe is waiting (the call goes on); else reports
/// the ids and the store `reached` gets from `store` to the probe and returns `None`: the
/// call must then stop before it uses its store.
#[inline]
pub(crate) fn offer<S>(
    store: S,
    ids: Derived,
    reached: impl FnOnce(S) -> Result<SharedStore, Error>,
) -> Option<(S, Derived)> {
    // The common case: no probe anywhere (one atomic load, inlined in every call), or none
    // in this task.
    if !PROBING.any() || PROBE.try_with(|_| ()).is_err() {
        return Some((store, ids));
    }
    report(ids, reached(store));
    None
}

/// Reports a probed call's ids and store to its probe.
#[cold]
fn report(ids: Derived, store: Result<SharedStore, Error>) {
    PROBE.with(|slot| *slot.borrow_mut() = Some(Probed { ids, store }));
}

/// Stops a probed call: it never completes, and the probe drops it.
pub(crate) async fn stop<T>() -> T {
    std::future::pending().await
}

/// Polls `call` until it reports to the probe.
async fn probe<F: IntoFuture>(call: F) -> Result<Probed, Error> {
    let _probing = PROBING.enter();
    PROBE
        .scope(RefCell::new(None), async {
            let mut call = pin!(call.into_future());
            poll_fn(|cx| {
                let finished = call.as_mut().poll(cx).is_ready();
                if let Some(probed) = PROBE.with(|slot| slot.borrow_mut().take()) {
                    return Poll::Ready(Ok(probed));
                }
                if finished {
                    return Poll::Ready(Err(Error::codec(
                        "the future given to key_of/forget_call finished without calling an #[idempotent] function: pass the call itself, as in `key_of(charge(&order))`",
                    )));
                }
                Poll::Pending
            })
            .await
        })
        .await
}

/// The key that a call of an `#[idempotent]` function uses, computed from its arguments
/// exactly as the call would, without touching the store or running the body.
///
/// Pass the call itself (not awaited): `key_of(charge(order))`. The future is polled until
/// the function has derived its key and then dropped; anything a wrapper future does
/// before its first idempotent call does run, so pass the idempotent call, not a wrapper.
/// The key comes from the process's [`KeyHasher`](crate::KeyHasher): install the same one
/// as the service's processes.
///
/// # Errors
///
/// The call's own key derivation error ([`Error::Codec`]), or [`Error::Codec`] if the
/// future finished without calling an `#[idempotent]` function.
///
/// ```
/// use idem_core::idempotent;
///
/// #[idempotent(key = "order")]
/// async fn charge(order: u64, cents: u64) -> Result<String, idem_core::Error> {
///     unreachable!("key_of never runs the body")
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::Error> {
/// let key = idem_core::key_of(charge(42, 1_000)).await?;
/// assert_eq!(key, idem_core::key_of(charge(42, 9_999)).await?);
/// assert_ne!(key, idem_core::key_of(charge(43, 1_000)).await?);
/// # Ok(())
/// # }
/// ```
pub async fn key_of<F: IntoFuture>(call: F) -> Result<Key, Error> {
    let Probed { ids, .. } = probe(call).await?;
    Ok(ids?.0)
}

/// Removes the stored record of a call of an `#[idempotent]` function, found from its
/// arguments, in the function's own store (its `store = ..`, else the default store), so
/// the next such call runs the body again: [`forget`](crate::forget) for the operator who
/// knows the call but not its key. The call's body does not run. `Ok(true)` if there was a
/// record; a running holder of the key loses its claim.
///
/// # Errors
///
/// As [`key_of`]; [`Error::Store`] if the store fails, or if the function keeps its
/// records in the caller's PostgreSQL transaction without a `PostgresStore` installed or
/// given to reach its table (delete the row by [`key_of`]'s key then).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use idem_core::idempotent;
///
/// static RUNS: AtomicU32 = AtomicU32::new(0);
///
/// #[idempotent(key = "order")]
/// async fn charge(order: u64) -> Result<u32, idem_core::Error> {
///     Ok(RUNS.fetch_add(1, Ordering::SeqCst) + 1)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::Error> {
/// assert_eq!(charge(7).await?, 1);
/// assert_eq!(charge(7).await?, 1); // replayed
/// assert!(idem_core::forget_call(charge(7)).await?);
/// assert_eq!(charge(7).await?, 2); // runs again
/// # Ok(())
/// # }
/// ```
pub async fn forget_call<F: IntoFuture>(call: F) -> Result<bool, Error> {
    let Probed { ids, store } = probe(call).await?;
    let (key, _) = ids?;
    store?.forget(&key).await
}
