//! The opt-in near-cache of completed records in front of a
//! [`RedisStore`](super::RedisStore) (see
//! [`near_cache`](super::RedisStoreBuilder::near_cache)).
//!
//! Bounded in bytes; each entry lives at most `bound` after it was read from (or written
//! to) Redis, so a record that Redis no longer holds — forgotten by any process, or expired
//! — is replayed from here for at most `bound`. No server-side invalidation (RESP3
//! `CLIENT TRACKING`): the `redis` crate marks its client-side caching experimental and it
//! needs RESP3 on every connection, so the bound is the guarantee.

use std::sync::Arc;
use std::time::Duration;

use crate::key::Key;
use crate::store::Record;

/// Fixed cost counted per entry on top of the record's bytes (key, fingerprint, `Arc`,
/// the cache's own bookkeeping).
const ENTRY_OVERHEAD: u32 = 128;

/// Completed records recently seen in Redis.
pub(super) struct NearCache {
    records: ::moka::sync::Cache<Key, Arc<Record>, crate::key::KeyHashBuilder>,
}

impl NearCache {
    pub(super) fn new(max_bytes: u64, bound: Duration) -> Self {
        let records = ::moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, record: &Arc<Record>| {
                u32::try_from(record.value().len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .time_to_live(bound.max(Duration::from_millis(1)))
            .build_with_hasher(crate::key::KeyHashBuilder::default());
        NearCache { records }
    }

    pub(super) fn get(&self, key: &Key) -> Option<Arc<Record>> {
        self.records.get(key)
    }

    pub(super) fn insert(&self, key: &Key, record: &Arc<Record>) {
        self.records.insert(*key, Arc::clone(record));
    }

    pub(super) fn remove(&self, key: &Key) {
        self.records.invalidate(key);
    }
}
