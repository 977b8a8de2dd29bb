//! [`RedisStore`]: records shared by every process that uses the same Redis (feature
//! `redis`), or the same Redis Cluster (feature `redis-cluster`).
//!
//! # Layout
//!
//! Each idempotency key is one Redis string at `{prefix}:{key hex}` (the prefix defaults to
//! `idem`; the key is the 64-hex-digit hash, never the raw arguments). Its value is either
//!
//! - a **claim**: `C`, the record version byte, the holder's 128-bit fencing token as 32 hex
//!   digits, then the lease deadline in milliseconds since the Unix epoch on the holder's
//!   clock (decimal). The deadline is informational: the key's own expiry (`PX`) *is* the
//!   lease, set when the claim is taken and reset by each renewal, so Redis removes a claim
//!   whose lease lapsed and the next claim finds the key free. (Releases of idem before the
//!   native claim compare the deadline with the server's clock in their claim script; it
//!   is kept so that they still see a live claim as live during a rolling upgrade, as long
//!   as the clocks agree within a fraction of the lease.) Or
//! - a **record**: `R`, the record version byte, the 32-byte payload fingerprint, then the
//!   encoded outcome; the key's TTL is the function's `ttl`.
//!
//! # Protocol
//!
//! - `claim` is one native command, `SET {key} {claim} NX PX {lease} GET` (Redis ≥ 7.0):
//!   a nil reply means the key was free and is now ours; a record is *completed*; a claim
//!   is *in progress* (it exists only while its lease holds). A key of another type, or a
//!   value that is neither, is [`Error::Codec`] and is never overwritten.
//! - `renew`, `complete` and `release` are Lua scripts, loaded once at connect
//!   (`SCRIPT LOAD`) and called by `EVALSHA` (with a fall-back to `EVAL` when the server
//!   answers `NOSCRIPT`, e.g. after a restart). Each compares the stored claim's token with
//!   the caller's before it writes (fencing): a holder that was taken over cannot touch its
//!   successor's claim or record. `renew` and `complete` also write when the key is absent
//!   (the holder's lease lapsed and nobody took the key: keeping the claim, or storing the
//!   completed result, is then correct), never over another claim or a record.
//!
//! A hit costs one command (the `SET .. NX PX .. GET` claim), a first call two (claim,
//! `complete`), plus one `renew` per third of a lease while a body runs. A lapsed claim
//! has expired by the time another caller takes the key, so this store cannot tell a
//! takeover from a first claim: [`Claim::Claimed`]'s `taken_over` is always `false` here.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, RedisError, Script, ServerErrorKind, Value};

use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::store::{BoxFuture, ChangeNotice, Claim, RECORD_VERSION, Record, Store, Token};

/// The default key prefix: records live at `idem:{key hex}`.
const DEFAULT_PREFIX: &str = "idem";
/// The default bound on establishing a connection (per attempt).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default bound on one command's reply.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default reconnect backoff: first delay, longest delay, attempts after the first.
const DEFAULT_RECONNECT: (Duration, Duration, usize) =
    (Duration::from_millis(25), Duration::from_millis(250), 1);
/// The default bounds of a waiter's polling.
const DEFAULT_POLL: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(250));

/// The tag byte of a claim value.
const CLAIM_TAG: u8 = b'C';
/// The tag byte of a completed record value.
const RECORD_TAG: u8 = b'R';
/// The length of a claim's prefix: tag, version, 32 hex digits of token.
const CLAIM_PREFIX_LEN: usize = 34;
/// The length of a record's header: tag, version, 32-byte fingerprint.
const RECORD_HEADER_LEN: usize = 34;

/// `KEYS[1]` the record; `ARGV[1]` the renewed claim value (its first 34 bytes name the
/// holder); `ARGV[2]` the lease in ms. Renews our claim, or takes the key again when it is
/// absent (our lease lapsed and nobody took over); never touches another claim or a record.
const RENEW_LUA: &str = r#"
local v = redis.pcall('GET', KEYS[1])
if v ~= false and (type(v) ~= 'string' or string.sub(v, 1, 34) ~= string.sub(ARGV[1], 1, 34)) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// `KEYS[1]` the record; `ARGV[1]` the claim's prefix; `ARGV[2]` the record value;
/// `ARGV[3]` its TTL in ms. Writes over our claim, or when the key is absent (nobody holds
/// it); never over another claim or a record.
const COMPLETE_LUA: &str = r#"
local v = redis.pcall('GET', KEYS[1])
if v ~= false and (type(v) ~= 'string' or string.sub(v, 1, 34) ~= ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// `KEYS[1]` the record; `ARGV[1]` the claim's prefix.
const RELEASE_LUA: &str = r#"
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' or string.sub(v, 1, 34) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"#;

struct Scripts {
    renew: Script,
    complete: Script,
    release: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    renew: Script::new(RENEW_LUA),
    complete: Script::new(COMPLETE_LUA),
    release: Script::new(RELEASE_LUA),
});

/// Where a [`RedisStoreBuilder`] connects.
#[derive(Clone)]
enum Target {
    Single(String),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
}

/// The connection: one multiplexed connection that reconnects by itself.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn query(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(conn) => cmd.query_async(&mut conn.clone()).await,
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
    }
}

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
/// # async fn main() -> Result<(), idem_core::Error> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// install(store)?; // every #[idempotent] fn without `store = ..` now uses Redis
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    prefix: String,
    /// A hard bound on one store operation, on top of the client's own timeouts.
    op_timeout: Duration,
    poll: (Duration, Duration),
    target: String,
}

/// Builds a [`RedisStore`]: key prefix, timeouts, reconnect backoff, waiters' polling.
///
/// The defaults: prefix `idem`, connect timeout 1 s, response timeout 1 s, reconnect
/// backoff 25 ms up to 250 ms with one retry, polling 5 ms up to 250 ms. With them a
/// refused port gives [`Error::Store`] within a few tens of milliseconds, and an
/// unreachable host within about two seconds.
///
/// ```no_run
/// use std::time::Duration;
/// use idem_core::RedisStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::Error> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/0")
///     .prefix("billing-idem")
///     .connect_timeout(Duration::from_millis(500))
///     .response_timeout(Duration::from_millis(250))
///     .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100), 2)
///     .poll_backoff(Duration::from_millis(2), Duration::from_millis(100))
///     .build()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect: (Duration, Duration, usize),
    poll: (Duration, Duration),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("target", &describe(&self.target))
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect", &self.reconnect)
            .field("poll", &self.poll)
            .finish()
    }
}

impl RedisStoreBuilder {
    fn new(target: Target) -> Self {
        RedisStoreBuilder {
            target,
            prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            reconnect: DEFAULT_RECONNECT,
            poll: DEFAULT_POLL,
        }
    }

    /// The prefix of every key this store writes (default `idem`): records live at
    /// `{prefix}:{key hex}`. Stores with different prefixes never see each other's records.
    ///
    /// ```
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379").prefix("orders");
    /// # drop(builder);
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one attempt to establish a connection may take (default 1 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .connect_timeout(Duration::from_millis(300));
    /// # drop(builder);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one command's reply may take (default 1 s). A claim whose reply timed out
    /// may still have been taken on the server: it is then held until its lease lapses,
    /// never treated as free.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .response_timeout(Duration::from_millis(200));
    /// # drop(builder);
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How the connection is re-established after it broke: the first delay between two
    /// attempts, the longest delay, and how many attempts follow the first one (default
    /// 25 ms, 250 ms, 1). Once these fail, the operation fails with [`Error::Store`] and
    /// the next operation tries again, so the store recovers by itself when Redis returns.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100), 3);
    /// # drop(builder);
    /// ```
    pub fn reconnect_backoff(mut self, first: Duration, longest: Duration, retries: usize) -> Self {
        self.reconnect = (first, longest.max(first), retries);
        self
    }

    /// The bounds of a waiting duplicate's polling while another holder runs: the first
    /// delay, doubled after each poll up to the longest (default 5 ms up to 250 ms).
    /// Duplicates inside one process share one poller.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .poll_backoff(Duration::from_millis(10), Duration::from_millis(500));
    /// # drop(builder);
    /// ```
    pub fn poll_backoff(mut self, first: Duration, longest: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        self.poll = (first, longest.max(first));
        self
    }

    /// Connects, loads the scripts, and returns the store. A server that cannot be reached
    /// is an [`Error::Store`] within the connect timeout (at once when the port refuses).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::RedisStore::builder("redis://127.0.0.1:6379").build().await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build(self) -> Result<RedisStore, Error> {
        let (first, longest, retries) = self.reconnect;
        // Every attempt, and the waits between them, plus the reply.
        let op_timeout = self.connect_timeout * (retries as u32 + 1)
            + longest * retries as u32
            + self.response_timeout;
        let target = describe(&self.target);
        let connecting = async {
            match &self.target {
                Target::Single(url) => {
                    let client = redis::Client::open(url.as_str())
                        .map_err(|err| connect_error(&target, err))?;
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.connect_timeout))
                        .set_response_timeout(Some(self.response_timeout))
                        .set_min_delay(first)
                        .set_max_delay(longest)
                        .set_number_of_retries(retries);
                    ConnectionManager::new_with_config(client, config)
                        .await
                        .map(Conn::Single)
                        .map_err(|err| connect_error(&target, err))
                }
                #[cfg(feature = "redis-cluster")]
                Target::Cluster(nodes) => {
                    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    let client =
                        redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                            .connection_timeout(self.connect_timeout)
                            .response_timeout(self.response_timeout)
                            .overall_response_timeout(Some(op_timeout))
                            .retries(u32::try_from(retries).unwrap_or(u32::MAX))
                            .min_retry_wait(millis(first))
                            .max_retry_wait(millis(longest))
                            .build()
                            .map_err(|err| connect_error(&target, err))?;
                    client
                        .get_async_connection()
                        .await
                        .map(Conn::Cluster)
                        .map_err(|err| connect_error(&target, err))
                }
            }
        };
        let conn = tokio::time::timeout(op_timeout, connecting)
            .await
            .map_err(|_| {
                Error::store(format!(
                    "redis: could not connect to {target} within {op_timeout:?}"
                ))
            })??;
        let inner = Inner {
            conn,
            prefix: self.prefix,
            op_timeout,
            poll: self.poll,
            target,
        };
        // Load the scripts once, so each call is a single EVALSHA.
        for script in [&SCRIPTS.renew, &SCRIPTS.complete, &SCRIPTS.release] {
            let mut load = redis::cmd("SCRIPT");
            load.arg("LOAD").arg(script_source(script));
            inner.run("SCRIPT LOAD", &load).await?;
        }
        Ok(RedisStore {
            inner: Arc::new(inner),
        })
    }
}

fn script_source(script: &Script) -> &'static str {
    let s = &*SCRIPTS;
    if std::ptr::eq(script, &s.renew) {
        RENEW_LUA
    } else if std::ptr::eq(script, &s.complete) {
        COMPLETE_LUA
    } else {
        RELEASE_LUA
    }
}

fn connect_error(target: &str, err: RedisError) -> Error {
    Error::store(format!("redis: could not connect to {target}: {err}"))
}

/// The target without credentials, for messages and `Debug`.
fn describe(target: &Target) -> String {
    fn redact(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &url[..scheme], &url[at + 1..])
            }
            _ => url.to_string(),
        }
    }
    match target {
        Target::Single(url) => redact(url),
        #[cfg(feature = "redis-cluster")]
        Target::Cluster(nodes) => {
            let nodes: Vec<String> = nodes.iter().map(|n| redact(n)).collect();
            format!("cluster [{}]", nodes.join(", "))
        }
    }
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
            .field("target", &self.inner.target)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

impl Inner {
    /// Runs one command within the operation bound and hands back the server's answer,
    /// error replies included; `Err` only when no answer came in time. A command that could
    /// not be sent because the (re)connection was refused is tried once more, within the
    /// same bound: the connection manager starts a fresh connection attempt on such an
    /// error, so the first call after Redis came back does not fail on a stale attempt.
    async fn query(&self, what: &str, cmd: &Cmd) -> Result<redis::RedisResult<Value>, Error> {
        let attempt = async {
            match self.conn.query(cmd).await {
                Err(err) if err.is_connection_refusal() => self.conn.query(cmd).await,
                other => other,
            }
        };
        tokio::time::timeout(self.op_timeout, attempt)
            .await
            .map_err(|_| {
                Error::store(format!(
                    "redis {what} on {}: no reply within {:?}",
                    self.target, self.op_timeout
                ))
            })
    }

    /// Runs one command within the operation bound; any failure is an [`Error::Store`].
    async fn run(&self, what: &str, cmd: &Cmd) -> Result<Value, Error> {
        self.query(what, cmd)
            .await?
            .map_err(|err| self.failed(what, &err))
    }

    fn failed(&self, what: &str, err: &RedisError) -> Error {
        Error::store(format!("redis {what} on {}: {err}", self.target))
    }

    /// `EVALSHA` of `script`; `EVAL` of its source when the server does not have it
    /// (after a restart, a failover, or a `SCRIPT FLUSH`), which caches it again.
    async fn eval(
        &self,
        what: &str,
        script: &Script,
        key: &str,
        args: &[&[u8]],
    ) -> Result<Value, Error> {
        let build = |command: &str, head: &str| {
            let mut cmd = redis::cmd(command);
            cmd.arg(head).arg(1).arg(key);
            for arg in args {
                cmd.arg(*arg);
            }
            cmd
        };
        match self
            .query(what, &build("EVALSHA", script.get_hash()))
            .await?
        {
            Ok(value) => Ok(value),
            Err(err) if is_noscript(&err) => {
                self.run(what, &build("EVAL", script_source(script))).await
            }
            Err(err) => Err(self.failed(what, &err)),
        }
    }
}

fn is_noscript(err: &RedisError) -> bool {
    matches!(err.kind(), ErrorKind::Server(ServerErrorKind::NoScript))
        || err.code() == Some("NOSCRIPT")
}

/// A new random 128-bit fencing token: BLAKE3 of a per-process random seed, a counter,
/// the process id and the time. Unique per claim, unpredictable enough that no two
/// processes pick the same one.
fn new_token() -> Token {
    use std::hash::{BuildHasher, Hasher};
    static SEED: LazyLock<[u8; 32]> = LazyLock::new(|| {
        let mut hasher = blake3::Hasher::new();
        for salt in 0u64..4 {
            // Each `RandomState` is keyed from the OS's randomness.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            hasher.update(&h.finish().to_le_bytes());
        }
        hasher.update(&std::process::id().to_le_bytes());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        hasher.update(&now.as_nanos().to_le_bytes());
        *hasher.finalize().as_bytes()
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = blake3::Hasher::new_keyed(&SEED);
    hasher.update(&count.to_le_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    Token::new(u128::from_le_bytes(bytes))
}

/// The first 34 bytes of a claim value held by `token`: tag, version, token in hex.
fn claim_prefix(token: Token) -> Vec<u8> {
    let mut out = Vec::with_capacity(CLAIM_PREFIX_LEN + 20);
    push_claim_prefix(&mut out, token);
    out
}

fn push_claim_prefix(out: &mut Vec<u8>, token: Token) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(CLAIM_TAG);
    out.push(RECORD_VERSION);
    out.extend(
        token
            .get()
            .to_be_bytes()
            .iter()
            .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]),
    );
}

/// A whole claim value held by `token` for `lease` from now: the prefix, then the lease
/// deadline in ms since the Unix epoch on this process's clock (informational: the key's
/// `PX` is the lease).
fn claim_value(token: Token, lease: Duration) -> Vec<u8> {
    let mut out = claim_prefix(token);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let deadline = (now + lease).as_millis();
    out.extend_from_slice(deadline.to_string().as_bytes());
    out
}

/// Whether `bytes` is a claim value this version writes or understands: tag, version, 32
/// lowercase hex digits of token, then the decimal deadline (or nothing).
fn is_claim(bytes: &[u8]) -> bool {
    match bytes {
        [CLAIM_TAG, RECORD_VERSION, rest @ ..] if rest.len() >= CLAIM_PREFIX_LEN - 2 => {
            let (token, deadline) = rest.split_at(CLAIM_PREFIX_LEN - 2);
            token
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                && deadline.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

fn millis_arg(duration: Duration) -> Vec<u8> {
    // At least 1 ms: Redis refuses a zero expiry.
    let ms = duration.as_millis().clamp(1, i64::MAX as u128 / 4);
    ms.to_string().into_bytes()
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + record.value().len());
    out.push(RECORD_TAG);
    out.push(RECORD_VERSION);
    out.extend_from_slice(record.fingerprint().as_bytes());
    out.extend_from_slice(record.value());
    out
}

fn decode_record(bytes: &[u8]) -> Result<Record, Error> {
    match bytes {
        [RECORD_TAG, version, rest @ ..] if rest.len() >= 32 => {
            if *version != RECORD_VERSION {
                return Err(Error::codec(format!(
                    "the stored record has version {version}, this build reads version {RECORD_VERSION}"
                )));
            }
            let (fingerprint, value) = rest.split_at(32);
            let fingerprint: [u8; 32] = fingerprint.try_into().expect("split at 32");
            Ok(Record::new(Fingerprint::from_bytes(fingerprint), value))
        }
        [CLAIM_TAG, version, ..] => Err(Error::codec(format!(
            "the stored claim has version {version}, this build reads version {RECORD_VERSION}"
        ))),
        _ => Err(Error::codec(
            "the value at the record's Redis key is not an idem record",
        )),
    }
}

fn unexpected(what: &str, reply: &Value) -> Error {
    Error::store(format!("redis {what}: unexpected reply {reply:?}"))
}

fn int_reply(what: &str, reply: Value) -> Result<bool, Error> {
    match reply {
        Value::Int(n) => Ok(n == 1),
        other => Err(unexpected(what, &other)),
    }
}

/// What the claim's `SET {key} {claim} NX PX {lease} GET` answered.
fn parse_claim(reply: Value, token: Token) -> Result<Claim, Error> {
    match reply {
        // The key was absent: the SET took it.
        Value::Nil => Ok(Claim::Claimed {
            token,
            taken_over: false,
        }),
        // The key was there (nothing was written): a live claim or a stored record.
        Value::BulkString(bytes) => {
            if bytes.first() == Some(&CLAIM_TAG) && bytes.get(1) == Some(&RECORD_VERSION) {
                if is_claim(&bytes) {
                    Ok(Claim::InProgress(ChangeNotice::poll()))
                } else {
                    Err(Error::codec(
                        "the claim at the record's Redis key cannot be read",
                    ))
                }
            } else {
                decode_record(&bytes).map(|record| Claim::Completed(Arc::new(record)))
            }
        }
        other => Err(unexpected("claim", &other)),
    }
}

impl Store for RedisStore {
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        _fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>> {
        Box::pin(async move {
            let token = new_token();
            let mut set = redis::cmd("SET");
            set.arg(self.redis_key(key))
                .arg(claim_value(token, lease))
                .arg("NX")
                .arg("PX")
                .arg(millis_arg(lease))
                .arg("GET");
            match self.inner.query("claim", &set).await? {
                Ok(reply) => parse_claim(reply, token),
                Err(err) if err.code() == Some("WRONGTYPE") => Err(Error::codec(
                    "the record's Redis key holds a value of another type than a string",
                )),
                // Before 7.0, Redis refuses NX together with GET.
                Err(err) if err.to_string().contains("syntax error") => Err(Error::store(format!(
                    "redis claim on {}: {err} (idem needs Redis 7.0 or later: SET with NX and GET)",
                    self.inner.target
                ))),
                Err(err) => Err(self.inner.failed("claim", &err)),
            }
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let reply = self
                .inner
                .eval(
                    "renew",
                    &SCRIPTS.renew,
                    &self.redis_key(key),
                    &[&claim_value(token, lease), &millis_arg(lease)],
                )
                .await?;
            int_reply("renew", reply)
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        record: Arc<Record>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let reply = self
                .inner
                .eval(
                    "complete",
                    &SCRIPTS.complete,
                    &self.redis_key(key),
                    &[
                        &claim_prefix(token),
                        &encode_record(&record),
                        &millis_arg(ttl),
                    ],
                )
                .await?;
            int_reply("complete", reply)
        })
    }

    fn release<'a>(&'a self, key: &'a Key, token: Token) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let reply = self
                .inner
                .eval(
                    "release",
                    &SCRIPTS.release,
                    &self.redis_key(key),
                    &[&claim_prefix(token)],
                )
                .await?;
            int_reply("release", reply)
        })
    }

    fn forget<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut del = redis::cmd("DEL");
            del.arg(self.redis_key(key));
            let reply = self.inner.run("forget", &del).await?;
            match reply {
                Value::Int(n) => Ok(n > 0),
                other => Err(unexpected("forget", &other)),
            }
        })
    }

    fn poll_backoff(&self) -> (Duration, Duration) {
        self.inner.poll
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_codec_errors() {
        let record = Record::new(Fingerprint::from_bytes([7; 32]), b"O{\"a\":1}".to_vec());
        let bytes = encode_record(&record);
        assert_eq!(decode_record(&bytes).unwrap(), record);
        for bad in [&b""[..], b"R", b"Rx", b"garbage", b"{\"json\":true}"] {
            assert!(
                matches!(decode_record(bad), Err(Error::Codec(_))),
                "{bad:?}"
            );
        }
        let mut other_version = bytes.clone();
        other_version[1] = RECORD_VERSION + 1;
        assert!(matches!(
            decode_record(&other_version),
            Err(Error::Codec(_))
        ));
    }

    #[test]
    fn tokens_are_distinct_and_claim_prefixes_have_a_fixed_length() {
        let tokens: std::collections::HashSet<u128> =
            (0..10_000).map(|_| new_token().get()).collect();
        assert_eq!(tokens.len(), 10_000);
        assert_eq!(claim_prefix(new_token()).len(), CLAIM_PREFIX_LEN);
        assert_eq!(claim_prefix(Token::new(0)).len(), CLAIM_PREFIX_LEN);
    }

    #[test]
    fn claim_replies_are_classified() {
        let token = Token::new(0xfeed_0000_0000_0000_0000_0000_0000_beef);
        let value = claim_value(token, Duration::from_secs(30));
        assert_eq!(&value[..CLAIM_PREFIX_LEN], claim_prefix(token).as_slice());
        assert_eq!(
            &value[2..CLAIM_PREFIX_LEN],
            b"feed000000000000000000000000beef"
        );
        assert!(is_claim(&value));
        assert!(is_claim(&claim_prefix(token)), "the deadline may be absent");

        assert!(matches!(
            parse_claim(Value::Nil, token),
            Ok(Claim::Claimed {
                token: t,
                taken_over: false
            }) if t == token
        ));
        let other = claim_value(new_token(), Duration::from_millis(1));
        assert!(matches!(
            parse_claim(Value::BulkString(other), token),
            Ok(Claim::InProgress(_))
        ));
        let record = Record::new(Fingerprint::from_bytes([3; 32]), b"O1".to_vec());
        match parse_claim(Value::BulkString(encode_record(&record)), token) {
            Ok(Claim::Completed(found)) => assert_eq!(*found, record),
            other => panic!("{other:?}"),
        }
        let mut bad_deadline = claim_prefix(token);
        bad_deadline.extend_from_slice(b"notanumber");
        let mut upper_hex = claim_prefix(token);
        upper_hex[2] = b'F';
        let mut other_version = claim_value(token, Duration::from_secs(1));
        other_version[1] = RECORD_VERSION + 1;
        for bad in [
            bad_deadline,
            upper_hex,
            claim_prefix(token)[..20].to_vec(),
            other_version,
            b"C".to_vec(),
            b"garbage".to_vec(),
        ] {
            assert!(
                matches!(
                    parse_claim(Value::BulkString(bad.clone()), token),
                    Err(Error::Codec(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_claim(Value::Int(1), token),
            Err(Error::Store(_))
        ));
    }

    #[test]
    fn credentials_are_redacted() {
        let target = Target::Single("redis://user:secret@host:6379/0".into());
        assert_eq!(describe(&target), "redis://***@host:6379/0");
    }
}
