//! The record protocol every backend speaks, and the handle calls hold.
//!
//! A key's record is either a *claim* (a body is running; it has a fencing [`Token`] and a
//! lease) or *completed* (a stored [`Record`] with a TTL). [`Store::claim`] is one atomic
//! step that answers which, and takes the key when it is free or its lease has lapsed.
//! [`Store::renew`], [`Store::complete`] and [`Store::release`] act only while the caller's
//! token still holds the claim, so a holder that was taken over cannot touch its
//! successor's record (fencing).

#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) mod backend;
#[cfg(feature = "moka")]
pub(crate) mod moka;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, DEFAULT_POLL};
use crate::error::Error;
use crate::key::{Fingerprint, Key};

/// A boxed, `Send` future, as [`Store`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The version of the record layout; stores write it and refuse records of another.
pub const RECORD_VERSION: u8 = 1;

/// A fencing token: proof that the caller holds a claim. Unique per claim.
///
/// ```
/// let token = idem_core::store::Token::new(7);
/// assert_eq!(token.get(), 7);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u128);

impl Token {
    /// Wraps a backend's token value.
    pub const fn new(value: u128) -> Self {
        Token(value)
    }

    /// The token value.
    pub const fn get(self) -> u128 {
        self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:x})", self.0)
    }
}

/// A completed call's stored result: the encoded outcome and the arguments' fingerprint.
///
/// ```
/// use idem_core::Fingerprint;
/// use idem_core::store::Record;
///
/// let record = Record::new(Fingerprint::from_bytes([1; 32]), b"O{\"id\":1}".to_vec());
/// assert_eq!(record.value(), b"O{\"id\":1}");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    fingerprint: Fingerprint,
    value: Box<[u8]>,
}

impl Record {
    /// A record of `value` (the encoded outcome) for arguments with `fingerprint`.
    pub fn new(fingerprint: Fingerprint, value: impl Into<Box<[u8]>>) -> Self {
        Record {
            fingerprint,
            value: value.into(),
        }
    }

    /// The fingerprint of the arguments that produced this record.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The encoded outcome (opaque to stores).
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("fingerprint", &self.fingerprint)
            .field("len", &self.value.len())
            .finish()
    }
}

/// How a waiting duplicate learns that an in-progress record may have changed.
///
/// In memory a store hands out a notification that fires when the claim is completed or
/// released; a remote store asks the caller to poll again after a bounded backoff.
///
/// ```
/// let notice = idem_core::store::ChangeNotice::poll();
/// # drop(notice);
/// ```
pub struct ChangeNotice(pub(crate) NoticeKind);

pub(crate) enum NoticeKind {
    Poll,
    Notify(tokio::sync::watch::Receiver<()>),
}

impl ChangeNotice {
    /// Poll again with the caller's bounded backoff.
    pub fn poll() -> Self {
        ChangeNotice(NoticeKind::Poll)
    }

    /// Wake when `receiver`'s sender sends or is dropped (a store drops it when the claim
    /// ends). Subscribe while the claim is still in place, so no change is missed.
    pub fn notify(receiver: tokio::sync::watch::Receiver<()>) -> Self {
        ChangeNotice(NoticeKind::Notify(receiver))
    }
}

impl fmt::Debug for ChangeNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            NoticeKind::Poll => f.write_str("ChangeNotice::Poll"),
            NoticeKind::Notify(_) => f.write_str("ChangeNotice::Notify"),
        }
    }
}

/// The answer of [`Store::claim`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Claim {
    /// The caller now holds the key and runs the body.
    Claimed {
        /// The fencing token for `renew`, `complete` and `release`.
        token: Token,
        /// The key was held by a claim whose lease had lapsed (a crashed holder). A store
        /// that lets lapsed claims expire (`RedisStore`) cannot tell a takeover from a
        /// first claim and always reports `false`.
        taken_over: bool,
    },
    /// A result is stored; replay it.
    Completed(Arc<Record>),
    /// A live holder is running the body.
    InProgress(ChangeNotice),
}

/// A backend that keeps idempotency records. Public so you can add your own.
///
/// Every method must be safe to call concurrently from many tasks and processes; `claim`
/// must be atomic. Methods return boxed futures so stores can be used as trait objects
/// (`SharedStore`); a store that can answer without I/O may also implement the
/// synchronous fast paths.
///
/// ```
/// use idem_core::{MokaStore, SharedStore};
/// use idem_core::store::Store;
///
/// fn shared(store: impl Store) -> SharedStore {
///     SharedStore::new(store)
/// }
/// let _store = shared(MokaStore::new());
/// ```
pub trait Store: Send + Sync + 'static {
    /// Atomically: return the completed record, or report a live claim, or take the key
    /// (free, or held by a claim whose lease lapsed) for `lease` and return a new token.
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>>;

    /// Extends the claim's lease to `lease` from now, if `token` still holds it.
    /// `Ok(false)` means the claim was lost: taken over, or gone ([`Store::forget`], a
    /// lapsed lease). A renewal never takes a key back.
    fn renew<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Replaces the claim with `record`, kept for `ttl`, if `token` still holds it.
    /// `Ok(false)` means the claim was lost and nothing was written: a key whose claim is
    /// gone ([`Store::forget`] of a running claim, a lapsed lease) stays without a record.
    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        record: Arc<Record>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Removes the claim, if `token` still holds it, so the next call runs the body.
    fn release<'a>(&'a self, key: &'a Key, token: Token) -> BoxFuture<'a, Result<bool, Error>>;

    /// Removes whatever record `key` has. `Ok(true)` if there was one.
    fn forget<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, Error>>;

    /// A synchronous `claim`, for stores that can answer without I/O. `None` (the
    /// default) means "use `claim`".
    fn claim_now(
        &self,
        _key: &Key,
        _fingerprint: &Fingerprint,
        _lease: Duration,
    ) -> Option<Result<Claim, Error>> {
        None
    }

    /// A synchronous `release`, used when a claim is dropped (panic, cancellation).
    /// `false` (the default) means "not supported": the runtime then spawns `release` on
    /// the current tokio runtime, and the lease is the backstop.
    fn release_now(&self, _key: &Key, _token: Token) -> bool {
        false
    }

    /// Whether duplicates inside one process should share one claim attempt and one
    /// poller (single-flight in front of a remote store). In-memory stores, which notify
    /// waiters themselves, return `false`.
    fn coalesce_local_waiters(&self) -> bool {
        true
    }

    /// The bounds of a waiter's polling when `claim` answers `InProgress` with
    /// [`ChangeNotice::poll`]: the first delay, doubled after each poll up to the longest
    /// ([`Backoff::max_delay`]). The default is 5 ms up to 250 ms.
    fn poll_backoff(&self) -> Backoff {
        DEFAULT_POLL
    }

    /// A short name for logs and events (`"moka"`, `"redis"`).
    fn kind(&self) -> &'static str {
        "custom"
    }

    /// The [`PostgresStore`](crate::PostgresStore) this store is, if it is one: transaction
    /// mode keeps its records in that store's table, through the caller's connection.
    /// Other stores keep the default (`None`).
    ///
    /// ```
    /// use idem_core::store::Store;
    ///
    /// assert!(idem_core::MokaStore::new().as_postgres().is_none());
    /// ```
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    fn as_postgres(&self) -> Option<&crate::PostgresStore> {
        None
    }
}

/// A cheap, cloneable handle to a store, as `store = expr` and [`install`](crate::install)
/// take.
///
/// ```
/// use idem_core::{MokaStore, SharedStore};
///
/// let store = SharedStore::new(MokaStore::new());
/// let same = store.clone();
/// assert!(store.same_store(&same));
/// ```
#[derive(Clone)]
pub struct SharedStore(Arc<dyn Store>);

impl SharedStore {
    /// Wraps a store.
    pub fn new(store: impl Store) -> Self {
        SharedStore(Arc::new(store))
    }

    /// Wraps an already shared store.
    pub fn from_arc(store: Arc<dyn Store>) -> Self {
        SharedStore(store)
    }

    /// The store behind the handle.
    pub fn store(&self) -> &dyn Store {
        &*self.0
    }

    /// Whether both handles point at the same store.
    pub fn same_store(&self, other: &SharedStore) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }

    /// An identity for this store within the process.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const () as usize
    }

    /// Removes the record of `key` (see [`forget`](crate::forget)).
    pub async fn forget(&self, key: &Key) -> Result<bool, Error> {
        self.0.forget(key).await
    }
}

impl<S: Store> From<S> for SharedStore {
    fn from(store: S) -> Self {
        SharedStore::new(store)
    }
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedStore").field(&self.0.kind()).finish()
    }
}

/// `now + duration`, saturating about 30 years ahead (as tokio's own far future) instead of
/// overflowing: a `Duration::MAX` lease, TTL or wait means "no bound", never a panic.
pub(crate) fn after(now: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    now.checked_add(duration).unwrap_or_else(|| now + FAR)
}
