//! [`RedisStore`]: records shared by every process that uses the same Redis (feature
//! `redis`), or the same Redis Cluster (feature `redis-cluster`).
//!
//! # Layout
//!
//! Each idempotency key is one Redis string at `{prefix}:{key hex}` (the prefix defaults to
//! `idem`; the key is the 64-hex-digit hash, never the raw arguments). Its value is either
//!
//! - a **claim**: `C`, the record version byte, and the holder's 128-bit fencing token as
//!   32 hex digits. The key's own expiry (`PX`) *is* the lease, set when the claim is taken
//!   and reset by each renewal, so Redis removes a claim whose lease lapsed and the next
//!   claim finds the key free. (Earlier versions also wrote the lease deadline in decimal
//!   after the token; nothing read it, so it is no longer written, and a claim that has it
//!   — from a process not yet upgraded during a deploy — is still read as a claim.) Or
//! - a **record**: `R`, the record version byte, the 32-byte payload fingerprint, then the
//!   encoded outcome; the key's TTL is the function's `ttl`.
//!
//! # Protocol
//!
//! - `claim` is one native command, `SET {key} {claim} NX PX {lease} GET` (Redis ≥ 7.0):
//!   a nil reply means the key was free and is now ours; a record is *completed*; a claim
//!   is *in progress* (it exists only while its lease holds). A key of another type, or a
//!   value that is neither, is [`Error::Codec`] and is never overwritten.
//! - `renew`, `complete` and `release` are Lua scripts, called by `EVALSHA` through
//!   `redis::Script` (which loads a script the server does not have: first use, restart,
//!   failover). Each compares the stored claim's token with the caller's before it writes
//!   (fencing): a holder that was taken over cannot touch its successor's claim or record. They act only on the caller's own claim: a key that is
//!   absent (an operator's `forget`, or a lease that lapsed) means the claim is lost, and
//!   nothing is written to it, so a forgotten call's result is not stored.
//!
//! A hit costs one command (the `SET .. NX PX .. GET` claim), a first call two (claim,
//! `complete`), plus one `renew` per third of a lease while a body runs. A lapsed claim
//! has expired by the time another caller takes the key, so this store cannot tell a
//! takeover from a first claim: [`Claim::Claimed`]'s `taken_over` is always `false` here.
//!
//! # Files
//!
//! `wire` (values, scripts, replies), `token` (fencing tokens), `conn` (the connection and
//! the bound on each operation), `cluster` (following slot migrations), `replicas` (waiting
//! for replicas' acknowledgements on connections of their own), `near` (the near-cache),
//! `tracking` (its invalidation through client-side caching), `builder` (settings and
//! connecting), `store` (the [`Store`] impl).

mod builder;
#[cfg(feature = "redis-cluster")]
mod cluster;
mod conn;
mod near;
mod replicas;
mod store;
mod token;
mod tracking;
mod wire;

use std::fmt;
use std::sync::Arc;

pub use builder::RedisStoreBuilder;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::key::Key;
#[cfg(doc)]
use crate::store::{Claim, Store};
use builder::Target;
use conn::Runner;

/// A [`Store`] in Redis: every process that connects to the same Redis (and uses the same
/// key prefix) shares one idempotency record per key.
///
/// A claim and a hit each take one round trip (one native `SET .. NX PX .. GET`, so Redis
/// 7.0 or later is needed); `complete`, `renew` and `release` are token-checked Lua
/// scripts, so a holder that was taken over after its lease lapsed cannot overwrite or
/// delete its successor's record. Every command is bounded by
/// the connect and response timeouts: when Redis cannot be reached, calls fail closed with
/// [`Error::Store`] (at once when the port refuses) and the body does not run; the
/// connection comes back by itself when Redis does.
///
/// Cloning is cheap and shares the connection.
///
/// ```no_run
/// use idem_core::{RedisStore, install};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// install(store)?; // every #[idempotent] fn without `store = ..` now uses Redis
/// # Ok(())
/// # }
/// ```
///
/// # Near-cache
///
/// [`near_cache(max_bytes, bound)`](RedisStoreBuilder::near_cache) keeps completed records
/// in memory, so a repeat hit sends no command:
///
/// - **Filled** when a claim finds a completed record (one more round trip, `GET` and
///   `PTTL`, on that first replay only) and after a `complete`.
/// - **Life**: at most `bound`, and never longer than the record's remaining TTL in Redis
///   (read with it), so two stores never disagree because one replays an expired record.
/// - **Invalidation** (one server): the store keeps one RESP3 connection with
///   `CLIENT TRACKING ON`, and the near-cache reads what it keeps over it, so Redis pushes
///   an `invalidate` message when such a key changes — a `forget` or rerun from any process,
///   an expiry, an eviction, a `FLUSHALL` — and the entry is dropped when it arrives, about
///   one round trip after the change. The main connection stays RESP2/3 as the URL says.
/// - **Fallback**: while the tracking connection is down (not yet up, killed, a server
///   without RESP3, or a Redis Cluster, which this store does not track), the near-cache is
///   flushed when it goes down and again when it comes back, and an entry filled meanwhile
///   may be replayed for up to `bound` after the record changed, never longer. A `PING`
///   each second finds a connection that died silently. Choose `bound` as the staleness
///   you accept then.
/// - **No late re-insert**: a `forget` through this store clears its own entry before and
///   after it removes the key, and a lookup or `complete` whose reply arrives after a `forget` or
///   an invalidation is not kept (each fill checks a per-key-slot change counter taken
///   before its read was sent).
/// - Claims are never cached, so "one live holder" across processes is unchanged.
///
/// ```no_run
/// use std::time::Duration;
/// use idem_core::store::Store;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::Error> {
/// let store = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
///     .near_cache(16 << 20, Duration::from_secs(60)) // 16 MiB; 60 s without tracking
///     .build()
///     .await?;
/// let key = idem_core::KeyHasher::unkeyed().key(&["charge"], &"order-1")?;
/// // Nothing stored yet: `false`, whatever the near-cache holds.
/// assert!(!store.forget(&key).await?);
/// # Ok(())
/// # }
/// ```
///
/// # `forget`
///
/// [`Store::forget`] (and [`forget`](crate::forget), [`forget_call`](crate::forget_call))
/// is one `GETDEL`. Its three cases:
///
/// - a completed record was there: removed, `Ok(true)`;
/// - a running claim was there: removed, `Ok(true)` (as on every store), and a warning
///   event under target `idem` says that it was a running claim, not a record: its
///   holder's `renew` and `complete` find the key absent, so its result is not stored and
///   the next call runs the body;
/// - nothing was there: `Ok(false)`.
///
/// A key of another Redis type is [`Error::Codec`] and is left in place.
///
/// # Waiting for replicas
///
/// With [`wait_for_replicas(n, timeout)`](RedisStoreBuilder::wait_for_replicas), a claim
/// is taken on the shared connection as usual; then, on a connection of its own from a
/// small pool (at most 8 idle), the claim is renewed (the write `WAIT` counts: `WAIT`
/// counts the writes of the connection it is sent on) and `WAIT n timeout` is sent. A
/// `complete` and its `WAIT` run on such a connection too. So a `WAIT` never blocks the
/// connection other calls share, whatever its timeout; a claim it timed out is released
/// over the shared connection at once. In a cluster the timeout is clamped to ¾ of the
/// response timeout instead.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    runner: Runner,
    prefix: String,
    poll: Backoff,
    /// Replicas to wait for after a claim and a `complete` (`WAIT`), if set.
    replicas: Option<replicas::Waiter>,
    /// Completed records recently seen, and their tracking, if the near-cache is on.
    near: Option<Arc<tracking::Tracked>>,
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port/db`, `redis://user:pass@host`,
    /// `rediss://..` when a TLS feature of the `redis` crate is enabled) with the default
    /// settings of [`RedisStore::builder`].
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        Self::builder(url).build().await
    }

    /// Connects to the Redis named by the `IDEM_REDIS_URL` environment variable. With the
    /// `redis-cluster` feature, a comma-separated list of URLs connects to a Redis Cluster
    /// through those seed nodes.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// // IDEM_REDIS_URL=redis://127.0.0.1:6379
    /// let store = idem_core::RedisStore::from_env().await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_env() -> Result<RedisStore, Error> {
        let url = std::env::var("IDEM_REDIS_URL")
            .map_err(|_| Error::store("IDEM_REDIS_URL is not set (e.g. redis://127.0.0.1:6379)"))?;
        #[cfg(feature = "redis-cluster")]
        if url.contains(',') {
            let nodes = url.split(',').map(str::trim).filter(|n| !n.is_empty());
            return Self::connect_cluster(nodes).await;
        }
        Self::connect(url.trim()).await
    }

    /// A builder for the Redis at `url`, to set the key prefix, timeouts, reconnect
    /// backoff and polling bounds.
    ///
    /// ```
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379").prefix("idem");
    /// # drop(builder);
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Single(url.into()))
    }

    /// Connects to a Redis Cluster through its seed `nodes` (feature `redis-cluster`).
    /// Each record is a single key, so records spread over every slot.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::RedisStore::connect_cluster([
    ///     "redis://10.0.0.1:7000",
    ///     "redis://10.0.0.2:7000",
    /// ])
    /// .await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub async fn connect_cluster<I, S>(nodes: I) -> Result<RedisStore, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::cluster_builder(nodes).build().await
    }

    /// A builder for a Redis Cluster reached through its seed `nodes` (feature
    /// `redis-cluster`).
    ///
    /// ```
    /// let builder = idem_core::RedisStore::cluster_builder(["redis://127.0.0.1:7000"])
    ///     .prefix("idem");
    /// # drop(builder);
    /// ```
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster_builder<I, S>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisStoreBuilder::new(Target::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    /// The Redis key that holds the record of `key`: `{prefix}:{key hex}`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// use idem_core::{KeyHasher, RedisStore};
    ///
    /// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// let key = KeyHasher::unkeyed().key(&["charge"], &"order-1")?;
    /// assert_eq!(store.redis_key(&key), format!("idem:{key}"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_key(&self, key: &Key) -> String {
        format!("{}:{}", self.inner.prefix, key)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.runner.target)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}
