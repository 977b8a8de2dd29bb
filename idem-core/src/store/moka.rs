//! [`MokaStore`]: the in-process store, and the default when nothing else is installed.
//!
//! Completed records live in a `moka` cache with a per-entry TTL; claims live in a separate
//! map. Neither is ever evicted to make room: a retry must find the record its first call
//! stored, whatever other keys arrived since. The bounds (records and bytes) are enforced
//! where no record is lost — at a *new* claim, which fails closed with
//! [`Error::StoreFull`] while the store is full. Waiters subscribe to the claim and are
//! woken the moment it is completed or released: no polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use tokio::sync::watch;

use crate::error::Error;
use crate::key::{Fingerprint, Key, KeyHashBuilder, ShardedMap};
use crate::store::{BoxFuture, ChangeNotice, Claim, Record, Store, Token, after};

/// What a completed record costs besides its value: its key and fingerprint (32 bytes
/// each) and the cache's bookkeeping, roughly.
const RECORD_OVERHEAD: u64 = 128;

/// An in-process [`Store`] backed by `moka`: bounded, per-entry TTL, waiters notified.
///
/// Records are only shared by calls within this process; use a `RedisStore` to share them
/// between processes.
///
/// **The bound never costs a live record.** A completed record stays until its TTL ends (or
/// a [`forget`](crate::forget)); when the store holds [`max_capacity`] records (completed
/// plus running claims) or [`max_bytes`] of results, a call with a *new* key gets
/// [`Error::StoreFull`] (HTTP 503 with `Retry-After`), a `store_full` warning event and
/// counter, and its body does not run; replays and duplicates of stored keys still answer.
/// Size it for the records one TTL accumulates at peak: `max_capacity` ≥ new keys per
/// second × TTL in seconds, `max_bytes` ≥ that × the mean encoded result. A tenant that
/// floods new keys fills the bound and gets 503s; it cannot push out another's record.
///
/// [`max_capacity`]: MokaStoreBuilder::max_capacity
/// [`max_bytes`]: MokaStoreBuilder::max_bytes
///
/// ```
/// use idem_core::{MokaStore, SharedStore};
///
/// let store = SharedStore::new(
///     MokaStore::builder()
///         .max_capacity(10_000)
///         .max_bytes(64 << 20)
///         .build(),
/// );
/// # drop(store);
/// ```
pub struct MokaStore {
    completed: moka::sync::Cache<Key, Completed, KeyHashBuilder>,
    claims: ShardedMap<Key, ClaimSlot>,
    next_token: AtomicU64,
    usage: Arc<Usage>,
    bounds: MokaStoreBuilder,
}

/// What the store holds now, against its bounds. Signed: the cache's removal listener may
/// run before the insert that it balances is counted.
#[derive(Default)]
struct Usage {
    /// Completed records plus running claims.
    records: AtomicI64,
    /// Bytes of completed records (value plus overhead).
    bytes: AtomicI64,
}

impl Usage {
    fn full(&self, bounds: &MokaStoreBuilder) -> bool {
        self.records.load(Ordering::Relaxed) >= bounds.max_capacity as i64
            || self.bytes.load(Ordering::Relaxed) >= bounds.max_bytes as i64
    }
}

fn weight(done: &Completed) -> i64 {
    (done.record.value().len() as u64 + RECORD_OVERHEAD) as i64
}

#[derive(Clone)]
struct Completed {
    record: Arc<Record>,
    ttl: Duration,
}

struct ClaimSlot {
    token: Token,
    expires: Instant,
    /// Dropped when the claim ends, which wakes every subscribed waiter.
    _changed: watch::Sender<()>,
}

struct PerEntryTtl;

impl Expiry<Key, Completed> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Completed,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Completed,
        _now: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Builds a [`MokaStore`].
///
/// ```
/// let store = idem_core::MokaStore::builder().max_capacity(1_000).build();
/// # drop(store);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MokaStoreBuilder {
    max_capacity: u64,
    max_bytes: u64,
}

impl MokaStoreBuilder {
    /// How many records (completed, plus running claims) the store holds at most (default
    /// [`MokaStore::DEFAULT_MAX_CAPACITY`], 100,000). At the bound a new key's claim fails with
    /// [`Error::StoreFull`]; no record is ever evicted to make room.
    ///
    /// ```
    /// let store = idem_core::MokaStore::builder().max_capacity(500).build();
    /// # drop(store);
    /// ```
    pub fn max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
        self
    }

    /// How many bytes of completed records the store holds before it refuses new keys
    /// (default [`MokaStore::DEFAULT_MAX_BYTES`], 256 MiB): each record counts its encoded result plus
    /// about 128 bytes. Both bounds hold at once. A claim's result is not known when it is
    /// taken, so the running claims' results may overshoot this by their own size.
    ///
    /// ```
    /// let store = idem_core::MokaStore::builder().max_bytes(16 << 20).build();
    /// # drop(store);
    /// ```
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The store.
    ///
    /// ```
    /// let store = idem_core::MokaStore::builder().build();
    /// # drop(store);
    /// ```
    pub fn build(self) -> MokaStore {
        let usage = Arc::new(Usage::default());
        let counted = Arc::clone(&usage);
        // No capacity: moka never evicts for size. Every removal (TTL, forget, replace)
        // gives its record's share of the bounds back.
        let completed = moka::sync::Cache::builder()
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_key: Arc<Key>, done: Completed, _cause| {
                counted.records.fetch_sub(1, Ordering::Relaxed);
                counted.bytes.fetch_sub(weight(&done), Ordering::Relaxed);
            })
            .build_with_hasher(KeyHashBuilder::default());
        MokaStore {
            completed,
            claims: ShardedMap::new(),
            next_token: AtomicU64::new(1),
            usage,
            bounds: self,
        }
    }
}

impl Default for MokaStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MokaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MokaStore")
            .field("completed", &self.completed.entry_count())
            .finish()
    }
}

impl MokaStore {
    /// The default bound on records (completed and running claims together).
    ///
    /// ```
    /// assert_eq!(idem_core::MokaStore::DEFAULT_MAX_CAPACITY, 100_000);
    /// ```
    pub const DEFAULT_MAX_CAPACITY: u64 = 100_000;

    /// The default bound on the bytes of completed records: 256 MiB.
    ///
    /// ```
    /// assert_eq!(idem_core::MokaStore::DEFAULT_MAX_BYTES, 256 << 20);
    /// ```
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

    /// A store holding at most [`MokaStore::DEFAULT_MAX_CAPACITY`] records and [`MokaStore::DEFAULT_MAX_BYTES`]
    /// of results.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set the bounds.
    pub fn builder() -> MokaStoreBuilder {
        MokaStoreBuilder {
            max_capacity: Self::DEFAULT_MAX_CAPACITY,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }

    fn try_claim(&self, key: &Key, lease: Duration) -> Result<Claim, Error> {
        if let Some(done) = self.completed.get(key) {
            return Ok(Claim::Completed(done.record));
        }
        let mut claims = self.claims.lock(key);
        // `complete` stores the record before it removes the claim, under this lock.
        if let Some(done) = self.completed.get(key) {
            return Ok(Claim::Completed(done.record));
        }
        let now = Instant::now();
        let taken_over = match claims.get(key) {
            Some(slot) if slot.expires > now => {
                return Ok(Claim::InProgress(ChangeNotice::notify(
                    slot._changed.subscribe(),
                )));
            }
            Some(_) => true,
            None => {
                self.admit()?;
                false
            }
        };
        let token = Token::new(self.next_token.fetch_add(1, Ordering::Relaxed).into());
        let (changed, _) = watch::channel(());
        claims.insert(
            *key,
            ClaimSlot {
                token,
                expires: after(now, lease),
                _changed: changed,
            },
        );
        Ok(Claim::Claimed { token, taken_over })
    }

    /// Counts a new claim in, or refuses it at the bound. Expired records may still be
    /// counted until the cache's housekeeping removes them: that is run once before a
    /// refusal.
    fn admit(&self) -> Result<(), Error> {
        if self.usage.full(&self.bounds) {
            self.completed.run_pending_tasks();
            if self.usage.full(&self.bounds) {
                return Err(Error::StoreFull);
            }
        }
        self.usage.records.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes the claim if `token` holds it; runs `before_remove` first, under the lock.
    fn end_claim(&self, key: &Key, token: Token, before_remove: impl FnOnce()) -> bool {
        let mut claims = self.claims.lock(key);
        match claims.get(key) {
            Some(slot) if slot.token == token => {
                before_remove();
                claims.remove(key);
                self.usage.records.fetch_sub(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Stores a completed record, counted against the bounds until it is removed.
    fn insert_completed(&self, key: Key, done: Completed) {
        self.usage.records.fetch_add(1, Ordering::Relaxed);
        self.usage.bytes.fetch_add(weight(&done), Ordering::Relaxed);
        self.completed.insert(key, done);
    }
}

impl Store for MokaStore {
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        _fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>> {
        Box::pin(std::future::ready(self.try_claim(key, lease)))
    }

    fn claim_now(
        &self,
        key: &Key,
        _fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Option<Result<Claim, Error>> {
        Some(self.try_claim(key, lease))
    }

    fn renew<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        let mut claims = self.claims.lock(key);
        let renewed = match claims.get_mut(key) {
            Some(slot) if slot.token == token => {
                slot.expires = after(Instant::now(), lease);
                true
            }
            _ => false,
        };
        Box::pin(std::future::ready(Ok(renewed)))
    }

    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        record: Arc<Record>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        let done = Completed { record, ttl };
        let stored = self.end_claim(key, token, || self.insert_completed(*key, done));
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn release<'a>(&'a self, key: &'a Key, token: Token) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(std::future::ready(Ok(self.release_now(key, token))))
    }

    fn release_now(&self, key: &Key, token: Token) -> bool {
        self.end_claim(key, token, || ())
    }

    fn forget<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, Error>> {
        let claim = self.claims.lock(key).remove(key).is_some();
        if claim {
            self.usage.records.fetch_sub(1, Ordering::Relaxed);
        }
        let completed = self.completed.remove(key).is_some();
        Box::pin(std::future::ready(Ok(claim || completed)))
    }

    fn coalesce_local_waiters(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "moka"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        let mut key = [0; 32];
        key[..4].copy_from_slice(&i.to_le_bytes());
        Key::from_bytes(key)
    }

    /// Claims and completes `records` new keys from `first`; how many were refused.
    fn fill(store: &MokaStore, first: u32, records: u32, bytes: usize) -> u32 {
        let fingerprint = Fingerprint::from_bytes([0; 32]);
        let mut refused = 0;
        for i in first..first + records {
            let key = key(i);
            match store.try_claim(&key, Duration::from_secs(60)) {
                Ok(Claim::Claimed { token, .. }) => {
                    let record = Arc::new(Record::new(fingerprint, vec![b'O'; bytes]));
                    let done = Completed {
                        record,
                        ttl: Duration::from_secs(60),
                    };
                    assert!(store.end_claim(&key, token, || store.insert_completed(key, done)));
                }
                Err(Error::StoreFull) => refused += 1,
                other => panic!("claim {i}: {other:?}"),
            }
        }
        store.completed.run_pending_tasks();
        refused
    }

    fn is_stored(store: &MokaStore, i: u32) -> bool {
        matches!(
            store.try_claim(&key(i), Duration::from_secs(60)),
            Ok(Claim::Completed(_))
        )
    }

    #[test]
    fn a_full_store_refuses_new_keys_and_keeps_every_record() {
        let store = MokaStore::builder()
            .max_capacity(10)
            .max_bytes(1 << 20)
            .build();
        assert_eq!(fill(&store, 0, 100, 10), 90);
        assert!(
            (0..10).all(|i| is_stored(&store, i)),
            "a record was evicted"
        );
        assert!(!is_stored(&store, 10));
    }

    #[test]
    fn large_records_fill_the_byte_bound_without_eviction() {
        let store = MokaStore::builder()
            .max_capacity(1_000)
            .max_bytes(1 << 20)
            .build();
        let refused = fill(&store, 0, 100, 100 << 10);
        assert!(
            refused >= 89,
            "{refused} of 100 records of 100 KiB refused under 1 MiB"
        );
        assert!((0..100 - refused).all(|i| is_stored(&store, i)));
    }

    #[test]
    fn a_removed_record_makes_room() {
        let store = MokaStore::builder().max_capacity(2).build();
        assert_eq!(fill(&store, 0, 2, 10), 0);
        assert_eq!(fill(&store, 2, 1, 10), 1);
        let removed = futures_util::FutureExt::now_or_never(store.forget(&key(0)));
        assert_eq!(removed.map(Result::ok), Some(Some(true)));
        store.completed.run_pending_tasks();
        assert_eq!(fill(&store, 2, 1, 10), 0);
    }
}
