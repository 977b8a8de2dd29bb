//! [`MokaStore`]: the in-process store, and the default when nothing else is installed.
//!
//! Completed records live in a bounded `moka` cache with a per-entry TTL; under memory
//! pressure moka may evict completed records (each eviction is logged). Claims live in a
//! separate map that is never evicted, so a running call is never forgotten. Waiters
//! subscribe to the claim and are woken the moment it is completed or released: no polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;
use tokio::sync::watch;

use crate::error::Error;
use crate::key::{Fingerprint, Key, KeyHashBuilder, ShardedMap};
use crate::store::{BoxFuture, ChangeNotice, Claim, Record, Store, Token, after};

/// The default bound on completed records.
pub const DEFAULT_MAX_CAPACITY: u64 = 100_000;

/// The default bound on the bytes of completed records: 256 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// What a completed record costs besides its value: its key and fingerprint (32 bytes
/// each) and the cache's bookkeeping, roughly.
const RECORD_OVERHEAD: u64 = 128;

/// An in-process [`Store`] backed by `moka`: bounded, per-entry TTL, waiters notified.
///
/// Records are only shared by calls within this process; use a `RedisStore` to share them
/// between processes.
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
    /// How many completed records to keep at most (default [`DEFAULT_MAX_CAPACITY`],
    /// 100,000). Claims do not count and are never evicted.
    ///
    /// ```
    /// let store = idem_core::MokaStore::builder().max_capacity(500).build();
    /// # drop(store);
    /// ```
    pub fn max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
        self
    }

    /// How many bytes of completed records to keep at most (default
    /// [`DEFAULT_MAX_BYTES`], 256 MiB): each record counts its encoded result plus about
    /// 128 bytes. Both bounds hold at once; a record larger than this is not kept.
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
        // One moka capacity bounds both: it counts bytes, and every record weighs at least
        // an equal share of them, so no more than `max_capacity` records fit.
        let share = self.max_bytes / self.max_capacity.max(1);
        let weigh = move |_key: &Key, done: &Completed| {
            let bytes = done.record.value().len() as u64 + RECORD_OVERHEAD;
            u32::try_from(bytes.max(share)).unwrap_or(u32::MAX)
        };
        let capacity = if self.max_capacity == 0 {
            0
        } else {
            self.max_bytes
        };
        let completed = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(weigh)
            .expire_after(PerEntryTtl)
            .eviction_listener(|key: Arc<Key>, _value, cause| {
                if cause == RemovalCause::Size {
                    crate::event::moka_evicted(&key);
                }
            })
            .build_with_hasher(KeyHashBuilder::default());
        MokaStore {
            completed,
            claims: ShardedMap::new(),
            next_token: AtomicU64::new(1),
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
    /// A store keeping at most [`DEFAULT_MAX_CAPACITY`] completed records.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set the bounds.
    pub fn builder() -> MokaStoreBuilder {
        MokaStoreBuilder {
            max_capacity: DEFAULT_MAX_CAPACITY,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    fn try_claim(&self, key: &Key, lease: Duration) -> Claim {
        if let Some(done) = self.completed.get(key) {
            return Claim::Completed(done.record);
        }
        let mut claims = self.claims.lock(key);
        // `complete` stores the record before it removes the claim, under this lock.
        if let Some(done) = self.completed.get(key) {
            return Claim::Completed(done.record);
        }
        let now = Instant::now();
        let taken_over = match claims.get(key) {
            Some(slot) if slot.expires > now => {
                return Claim::InProgress(ChangeNotice::notify(slot._changed.subscribe()));
            }
            Some(_) => true,
            None => false,
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
        Claim::Claimed { token, taken_over }
    }

    /// Removes the claim if `token` holds it; runs `before_remove` first, under the lock.
    fn end_claim(&self, key: &Key, token: Token, before_remove: impl FnOnce()) -> bool {
        let mut claims = self.claims.lock(key);
        match claims.get(key) {
            Some(slot) if slot.token == token => {
                before_remove();
                claims.remove(key);
                true
            }
            _ => false,
        }
    }
}

impl Store for MokaStore {
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        _fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>> {
        let claim = self.try_claim(key, lease);
        Box::pin(std::future::ready(Ok(claim)))
    }

    fn claim_now(
        &self,
        key: &Key,
        _fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Option<Result<Claim, Error>> {
        Some(Ok(self.try_claim(key, lease)))
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
        let stored = self.end_claim(key, token, || self.completed.insert(*key, done));
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

    fn fill(store: &MokaStore, records: u32, bytes: usize) {
        let fingerprint = Fingerprint::from_bytes([0; 32]);
        for i in 0..records {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            let key = Key::from_bytes(key);
            let Claim::Claimed { token, .. } = store.try_claim(&key, Duration::from_secs(60))
            else {
                panic!("claim {i}");
            };
            let record = Arc::new(Record::new(fingerprint, vec![b'O'; bytes]));
            assert!(store.end_claim(&key, token, || store.completed.insert(
                key,
                Completed {
                    record,
                    ttl: Duration::from_secs(60)
                }
            )));
        }
        store.completed.run_pending_tasks();
    }

    #[test]
    fn large_records_are_bounded_by_bytes() {
        let store = MokaStore::builder()
            .max_capacity(1_000)
            .max_bytes(1 << 20)
            .build();
        fill(&store, 100, 100 << 10);
        assert!(store.completed.weighted_size() <= 1 << 20);
        assert!(
            store.completed.entry_count() <= 10,
            "{} records of 100 KiB kept under a 1 MiB bound",
            store.completed.entry_count()
        );
    }

    #[test]
    fn small_records_are_bounded_by_count() {
        let store = MokaStore::builder()
            .max_capacity(10)
            .max_bytes(1 << 20)
            .build();
        fill(&store, 100, 10);
        assert!(
            store.completed.entry_count() <= 10,
            "{} small records kept under a bound of 10",
            store.completed.entry_count()
        );
    }
}
