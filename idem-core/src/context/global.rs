//! Process-wide state: the default store, the key hasher, and the running call's key.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;

use crate::error::Error;
use crate::key::{Key, KeyHasher};
use crate::store::SharedStore;

static DEFAULT_STORE: OnceLock<SharedStore> = OnceLock::new();
static KEY_HASHER: OnceLock<KeyHasher> = OnceLock::new();

tokio::task_local! {
    /// The frame of the idempotent call whose body runs in this task.
    pub(crate) static FRAME: Frame;
}

/// What idem knows about the body running in a task: its key, and whether an idem error
/// was handed to it (a nested call's `InProgress`, `Store`, ..): an `Err` it then returns
/// may carry that error, so `cache_errors` must not store it.
pub(crate) struct Frame {
    key: Option<Key>,
    idem_error: Cell<bool>,
}

impl Frame {
    /// The frame of a body running under `key`.
    pub(crate) fn body(key: Key) -> Self {
        Frame {
            key: Some(key),
            idem_error: Cell::new(false),
        }
    }

    /// Whether an idem error was handed to this body.
    pub(crate) fn saw_idem_error(&self) -> bool {
        self.idem_error.get()
    }
}

/// `err` as the caller's `E`, noting in the caller's frame (if it is a body) that an idem
/// error reached it. Every idem error a call returns goes through here.
pub(crate) fn idem_error<E: From<Error>>(err: Error) -> E {
    note_idem_error();
    err.into()
}

/// Notes in the running body's frame that an idem error reached it.
pub(crate) fn note_idem_error() {
    let _ = FRAME.try_with(|frame| frame.idem_error.set(true));
}

/// Runs `future` (a call made in a task of its own, `detach`) and tells whether an idem
/// error came out of it, so the spawning body's frame can note it too.
pub(crate) async fn watch_idem_errors<F: Future>(future: F) -> (F::Output, bool) {
    let frame = Frame {
        key: None,
        idem_error: Cell::new(false),
    };
    FRAME
        .scope(frame, async {
            let output = future.await;
            (output, FRAME.with(Frame::saw_idem_error))
        })
        .await
}

/// Sets the process default store, used by every `#[idempotent]` function without
/// `store = ..`. Call it once, at start-up, before the first idempotent call.
///
/// Installing twice, or after the default (a `MokaStore`) was already used, returns an
/// [`InstallError`] instead of splitting records across two stores; the first store stays.
///
/// ```
/// use idem_core::{install, MokaStore};
///
/// install(MokaStore::builder().max_capacity(10_000).build()).unwrap();
/// assert!(install(MokaStore::new()).is_err());
/// ```
pub fn install(store: impl Into<SharedStore>) -> Result<(), InstallError> {
    let mut installed = false;
    DEFAULT_STORE.get_or_init(|| {
        installed = true;
        store.into()
    });
    if installed {
        Ok(())
    } else {
        Err(InstallError {
            refused: Refused::Store,
        })
    }
}

/// [`install`] or [`install_key_hasher`] refused: the default was already installed, or
/// already in use (the first idempotent call fixes it). A set-up mistake, reported once at
/// start-up, so it is not an [`Error`] that every call's error type must handle. Its
/// message names what was refused.
///
/// ```
/// use idem_core::{install, InstallError, MokaStore};
///
/// install(MokaStore::new()).unwrap();
/// let err: InstallError = install(MokaStore::new()).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "idem's default store is already installed or already in use; \
///      install it once, before the first idempotent call"
/// );
/// ```
#[derive(Debug)]
pub struct InstallError {
    refused: Refused,
}

/// What an [`InstallError`] refused to install.
#[derive(Debug)]
enum Refused {
    Store,
    KeyHasher,
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.refused {
            Refused::Store => "store",
            Refused::KeyHasher => "key hasher",
        };
        write!(
            f,
            "idem's default {what} is already installed or already in use; install it once, before the first idempotent call"
        )
    }
}

impl std::error::Error for InstallError {}

/// The process default store: the installed one, else a [`MokaStore`](crate::MokaStore)
/// (feature `moka`), else [`Error::Store`].
///
/// ```
/// let store = idem_core::default_store().unwrap();
/// # drop(store);
/// ```
pub fn default_store() -> Result<&'static SharedStore, Error> {
    #[cfg(feature = "moka")]
    {
        Ok(DEFAULT_STORE.get_or_init(|| SharedStore::new(crate::MokaStore::new())))
    }
    #[cfg(not(feature = "moka"))]
    {
        DEFAULT_STORE.get().ok_or_else(|| {
            Error::store("no idempotency store is installed: call idem_core::install(..) at start-up, or enable the `moka` feature")
        })
    }
}

/// The installed store, if any, without falling back to (and so fixing) the default.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn installed_store() -> Option<&'static SharedStore> {
    DEFAULT_STORE.get()
}

/// Sets the process key hasher, e.g. [`KeyHasher::keyed`] with a secret. Once, before the
/// first idempotent call; every process sharing a store must use the same one.
///
/// Installing twice, or after the first idempotent call used the default (unkeyed) one,
/// returns an [`InstallError`]; the first hasher stays.
///
/// ```
/// use idem_core::{install_key_hasher, KeyHasher};
///
/// install_key_hasher(KeyHasher::keyed("load me from a secret store")).unwrap();
/// assert!(install_key_hasher(KeyHasher::unkeyed()).is_err());
/// ```
pub fn install_key_hasher(hasher: KeyHasher) -> Result<(), InstallError> {
    let mut installed = false;
    KEY_HASHER.get_or_init(|| {
        installed = true;
        hasher
    });
    if installed {
        Ok(())
    } else {
        Err(InstallError {
            refused: Refused::KeyHasher,
        })
    }
}

/// The process key hasher (unkeyed unless [`install_key_hasher`] set one).
///
/// ```
/// let key = idem_core::key_hasher().key(&["jobs::send_mail"], &42).unwrap();
/// assert_eq!(key.to_hex().len(), 64);
/// ```
pub fn key_hasher() -> &'static KeyHasher {
    KEY_HASHER.get_or_init(KeyHasher::unkeyed)
}

/// The key of the idempotent call whose body is running; `None` outside an
/// `#[idempotent]` body, and in tasks the body spawns (the key is task-local: pass it to
/// them as an argument). It displays as 64 hex characters ([`Key::to_hex`]).
///
/// Pass it downstream as the idempotency key of the next service (a payment provider's
/// `Idempotency-Key` header), so a rerun after a crash is deduplicated there too.
///
/// ```
/// #[idem_core::idempotent]
/// async fn charge(cents: u64) -> Result<String, idem_core::Error> {
///     let key = idem_core::current_key().expect("inside an idempotent body");
///     Ok(key.to_hex()) // the provider's Idempotency-Key
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(idem_core::current_key(), None);
/// assert_eq!(charge(500).await.unwrap().len(), 64);
/// # }
/// ```
pub fn current_key() -> Option<Key> {
    FRAME.try_with(|frame| frame.key).ok().flatten()
}

/// Removes the record of `key` from the default store, so the next call runs the body
/// again: the operator's escape hatch after a bad result was stored. A running holder of
/// the key loses its claim (its result is then not stored). `Ok(true)` if there was a
/// record. For another store, use [`SharedStore::forget`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let key = idem_core::Key::from_hex(&"ab".repeat(32)).unwrap();
/// assert!(!idem_core::forget(&key).await.unwrap());
/// # }
/// ```
pub async fn forget(key: &Key) -> Result<bool, Error> {
    default_store()?.forget(key).await
}
