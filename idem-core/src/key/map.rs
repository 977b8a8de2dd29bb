//! In-memory maps keyed by a [`Key`]: their hasher, and a map split into locked shards.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::Key;

/// The `BuildHasher` of in-memory maps keyed by [`Key`] (or tuples containing one).
///
/// A key is already a uniformly distributed BLAKE3 digest, so SipHash over its 32 bytes
/// (std's default, ~10% of an in-memory hit) buys nothing; `foldhash`'s fast hasher, seeded
/// per map, is enough.
pub(crate) type KeyHashBuilder = foldhash::fast::RandomState;

const SHARDS: usize = 16;

/// A map behind 16 mutexes, the shard chosen by a key's first byte (uniform: it is a
/// hash), so calls on different keys rarely wait for each other.
pub(crate) struct ShardedMap<K, V> {
    shards: [Mutex<HashMap<K, V, KeyHashBuilder>>; SHARDS],
}

impl<K, V> ShardedMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| {
                Mutex::new(HashMap::with_hasher(KeyHashBuilder::default()))
            }),
        }
    }

    /// Locks the shard holding the entries of `key` (entries whose map key contains it).
    pub(crate) fn lock(&self, key: &Key) -> MutexGuard<'_, HashMap<K, V, KeyHashBuilder>> {
        // A panic never happens while a shard is locked, but stay usable if one did.
        self.shards[usize::from(key.as_bytes()[0]) % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
