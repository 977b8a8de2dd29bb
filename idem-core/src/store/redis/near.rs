//! The opt-in near-cache of completed records in front of a
//! [`RedisStore`](super::RedisStore) (see
//! [`near_cache`](super::RedisStoreBuilder::near_cache)).
//!
//! Bounded in bytes. Each entry lives at most `bound`, and never longer than the record's
//! own remaining TTL (read with the record, `PTTL`). While the tracking connection is up
//! (`tracking`), Redis tells this process when a key it read changed (a `forget`, an
//! expiry, an eviction, in any process) and the entry is dropped at once; without it, the
//! bound is the guarantee.
//!
//! A late reply never re-inserts what a later `forget` or invalidation removed: every
//! change bumps a counter of the key's slot (or the epoch, for a flush), a fill takes a
//! [`Ticket`] of both before its read is sent, and inserts only while they are unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::key::Key;
use crate::store::Record;

/// Fixed cost counted per entry on top of the record's bytes (key, fingerprint, `Arc`,
/// the cache's own bookkeeping).
const ENTRY_OVERHEAD: u32 = 128;
/// The longest life of an entry: `Duration::MAX` saturates here (the cache refuses
/// expiries beyond 1000 years).
const MAX_LIFE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Slots of change counters. Two keys in one slot only cost a refused fill, never a stale
/// entry.
const SLOTS: usize = 4096;

/// A near-cached record and how long it may live from its insertion.
#[derive(Clone)]
struct Entry {
    record: Arc<Record>,
    life: Duration,
}

/// Each entry's own life ([`Entry::life`]), reset when it is replaced.
struct EntryLife;

impl ::moka::Expiry<Key, Entry> for EntryLife {
    fn expire_after_create(&self, _: &Key, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.life)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.life)
    }
}

/// What a fill saw before its read was sent: the key's slot counter and the epoch.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket {
    slot: usize,
    generation: u64,
    epoch: u64,
}

/// Completed records recently seen in Redis.
pub(super) struct NearCache {
    records: ::moka::sync::Cache<Key, Entry, crate::key::KeyHashBuilder>,
    bound: Duration,
    /// Bumped by each `forget` through this store and each invalidation of a key in the slot.
    generations: Box<[AtomicU64]>,
    /// Bumped by each flush (tracking lost or regained, a server flush).
    epoch: AtomicU64,
}

impl NearCache {
    /// A cache of at most `max_bytes`, each entry living at most `bound` (saturating).
    pub(super) fn new(max_bytes: u64, bound: Duration) -> Self {
        let records = ::moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, entry: &Entry| {
                u32::try_from(entry.record.value().len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
            })
            .expire_after(EntryLife)
            .build_with_hasher(crate::key::KeyHashBuilder::default());
        NearCache {
            records,
            bound: bound.clamp(Duration::from_millis(1), MAX_LIFE),
            generations: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
        }
    }

    pub(super) fn get(&self, key: &Key) -> Option<Arc<Record>> {
        self.records.get(key).map(|entry| entry.record)
    }

    /// Taken before the read (or write) whose reply may fill the cache.
    pub(super) fn ticket(&self, key: &Key) -> Ticket {
        let slot = slot(key);
        Ticket {
            slot,
            generation: self.generations[slot].load(SeqCst),
            epoch: self.epoch.load(SeqCst),
        }
    }

    fn still(&self, ticket: Ticket) -> bool {
        self.generations[ticket.slot].load(SeqCst) == ticket.generation
            && self.epoch.load(SeqCst) == ticket.epoch
    }

    /// Keeps `record`, which Redis holds for `remaining` more, unless the key changed (or
    /// the cache was flushed) since `ticket`. Inserted first and checked after: a change
    /// that lands in between bumps its counter before it removes the entry, so either
    /// this check sees it or its removal comes after the insert.
    pub(super) fn fill(
        &self,
        key: &Key,
        ticket: Ticket,
        record: &Arc<Record>,
        remaining: Duration,
    ) {
        let life = remaining.min(self.bound);
        if life.is_zero() || !self.still(ticket) {
            return;
        }
        self.records.insert(
            *key,
            Entry {
                record: Arc::clone(record),
                life,
            },
        );
        if !self.still(ticket) {
            self.records.invalidate(key);
        }
    }

    /// `key` changed in Redis (a `forget`, an invalidation): drops its entry, and refuses
    /// the fills already under way.
    pub(super) fn remove(&self, key: &Key) {
        self.generations[slot(key)].fetch_add(1, SeqCst);
        self.records.invalidate(key);
    }

    /// Drops every entry and refuses the fills already under way.
    pub(super) fn flush(&self) {
        self.epoch.fetch_add(1, SeqCst);
        self.records.invalidate_all();
    }
}

fn slot(key: &Key) -> usize {
    let bytes = key.as_bytes();
    usize::from(u16::from_le_bytes([bytes[0], bytes[1]])) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Fingerprint;

    fn record() -> Arc<Record> {
        Arc::new(Record::new(
            Fingerprint::from_bytes([1; 32]),
            b"O1".to_vec(),
        ))
    }

    #[test]
    fn a_change_after_the_ticket_refuses_the_fill() {
        let near = NearCache::new(1 << 20, Duration::MAX);
        let key = Key::from_bytes([7; 32]);
        let ticket = near.ticket(&key);
        near.remove(&key);
        near.fill(&key, ticket, &record(), Duration::from_secs(60));
        assert!(near.get(&key).is_none());
        let ticket = near.ticket(&key);
        near.flush();
        near.fill(&key, ticket, &record(), Duration::from_secs(60));
        assert!(near.get(&key).is_none());
        let ticket = near.ticket(&key);
        near.fill(&key, ticket, &record(), Duration::from_secs(60));
        assert!(near.get(&key).is_some());
    }

    #[test]
    fn an_entry_lives_no_longer_than_the_record() {
        let near = NearCache::new(1 << 20, Duration::from_secs(60));
        let key = Key::from_bytes([8; 32]);
        near.fill(
            &key,
            near.ticket(&key),
            &record(),
            Duration::from_millis(30),
        );
        assert!(near.get(&key).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(near.get(&key).is_none());
    }
}
