//! [`RedisStoreBuilder`]: where and how a [`RedisStore`] connects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::conn::{Conn, Runner};
use super::near::NearCache;
use super::replicas::{Replicas, Waiter};
use super::tracking::{self, Tracked};
use super::wire::SCRIPTS;
use super::{Inner, RedisStore};
use crate::backoff::{Backoff, DEFAULT_POLL};
use crate::error::Error;
use crate::store::backend::redact_url;

/// The default key prefix: records live at `idem:{key hex}`.
const DEFAULT_PREFIX: &str = "idem";
/// The default bound on establishing a connection (per attempt).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default bound on one command's reply.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How many reconnect attempts follow the first, unless the backoff says.
const DEFAULT_RECONNECT_RETRIES: usize = 1;
/// The default reconnect backoff.
const DEFAULT_RECONNECT: Backoff = Backoff::new(Duration::from_millis(25))
    .max(Duration::from_millis(250))
    .retries(DEFAULT_RECONNECT_RETRIES);

/// Where a [`RedisStoreBuilder`] connects.
#[derive(Clone)]
pub(super) enum Target {
    Single(String),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
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
/// use idem_core::{Backoff, RedisStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::Error> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/0")
///     .prefix("billing-idem")
///     .connect_timeout(Duration::from_millis(500))
///     .response_timeout(Duration::from_millis(250))
///     .reconnect_backoff(Backoff::new(Duration::from_millis(10)).max(Duration::from_millis(100)).retries(2))
///     .poll_backoff(Backoff::new(Duration::from_millis(2)).max(Duration::from_millis(100)))
///     .build()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect: Backoff,
    poll: Backoff,
    replicas: Option<Replicas>,
    near: Option<(u64, Duration)>,
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
            .field("replicas", &self.replicas)
            .field("near_cache", &self.near)
            .finish()
    }
}

impl RedisStoreBuilder {
    pub(super) fn new(target: Target) -> Self {
        RedisStoreBuilder {
            target,
            prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            reconnect: DEFAULT_RECONNECT,
            poll: DEFAULT_POLL,
            replicas: None,
            near: None,
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
    /// 25 ms up to 250 ms, 1 retry; 1 retry too when the backoff does not set
    /// [`retries`](Backoff::retries)). Once these fail, the operation fails with
    /// [`Error::Store`] and the next operation tries again, so the store recovers by
    /// itself when Redis returns.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379").reconnect_backoff(
    ///     Backoff::new(Duration::from_millis(10))
    ///         .max(Duration::from_millis(100))
    ///         .retries(3),
    /// );
    /// # drop(builder);
    /// ```
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        let retries = backoff.max_retries().unwrap_or(DEFAULT_RECONNECT_RETRIES);
        self.reconnect = backoff.retries(retries);
        self
    }

    /// The bounds of a waiting duplicate's polling while another holder runs: the first
    /// delay (at least 1 ms), doubled after each poll up to the longest (default 5 ms up
    /// to 250 ms). Duplicates inside one process share one poller.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .poll_backoff(Backoff::new(Duration::from_millis(10)).max(Duration::from_millis(500)));
    /// # drop(builder);
    /// ```
    pub fn poll_backoff(mut self, backoff: Backoff) -> Self {
        self.poll = backoff.first_at_least(Duration::from_millis(1));
        self
    }

    /// After each claim it takes and each result it stores, wait until `replicas` replicas
    /// acknowledged the write (Redis `WAIT`), for at most `timeout`; when fewer did, the
    /// claim is released and the call fails closed with [`Error::Store`] (the body does not
    /// run), or the stored result is reported as not stored (the caller still gets it, as
    /// when `complete` fails). Off by default: Redis replicates asynchronously, so without
    /// it a claim or record acknowledged by a primary that fails before replicating can be
    /// lost on failover, and the body may run again. `WAIT` does not make Redis strongly
    /// consistent: see the README for what it does not promise. A hit costs nothing extra.
    ///
    /// The write and its `WAIT` run on a connection of their own (a small pool), never on
    /// the connection other calls share, so a long `timeout` (up to `Duration::MAX`, which
    /// saturates) only makes the waiting call wait. In a cluster, `WAIT` goes over the
    /// cluster connection, so its timeout is clamped to ¾ of the response timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .wait_for_replicas(1, Duration::from_millis(100));
    /// # drop(builder);
    /// ```
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicas = (replicas > 0).then(|| Replicas::new(replicas, timeout));
        self
    }

    /// Keeps completed records this process read from or wrote to Redis in memory, up to
    /// `max_bytes` (values plus ~128 bytes per entry): a repeat hit is answered without a
    /// command. Off by default. See the [`RedisStore`'s documentation](RedisStore#near-cache)
    /// for the guarantees.
    ///
    /// In short: each entry lives at most `bound` (`Duration::MAX` saturates) and never
    /// longer than the record's own remaining TTL; on one server, Redis client-side caching
    /// (`CLIENT TRACKING` on a RESP3 connection of its own) drops an entry about one round
    /// trip after the record changes in any process, and `bound` is the fallback while
    /// that connection is down. Claims are never cached.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::RedisStore::builder("redis://127.0.0.1:6379")
    ///     .near_cache(16 << 20, Duration::from_secs(60));
    /// # drop(builder);
    /// ```
    pub fn near_cache(mut self, max_bytes: u64, bound: Duration) -> Self {
        self.near = (max_bytes > 0 && !bound.is_zero()).then_some((max_bytes, bound));
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
        let first = self.reconnect.first_delay();
        let longest = self.reconnect.max_delay();
        let retries = self
            .reconnect
            .max_retries()
            .unwrap_or(DEFAULT_RECONNECT_RETRIES);
        // Every attempt, and the waits between them, plus the reply.
        // Saturating: `Duration::MAX` means "no bound", never a panic.
        let retries_u32 = u32::try_from(retries).unwrap_or(u32::MAX);
        let op_timeout = self
            .connect_timeout
            .saturating_mul(retries_u32.saturating_add(1))
            .saturating_add(longest.saturating_mul(retries_u32))
            .saturating_add(self.response_timeout);
        let target = describe(&self.target);
        // One server's client, also for the tracking and `WAIT` connections.
        let single = match &self.target {
            Target::Single(url) => {
                Some(redis::Client::open(url.as_str()).map_err(|err| connect_error(&target, err))?)
            }
            #[cfg(feature = "redis-cluster")]
            Target::Cluster(_) => None,
        };
        let connecting = async {
            match &self.target {
                Target::Single(_) => {
                    let client = single.clone().expect("a client for one server");
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
                            // A stuck connection shows as a timeout; a short one lets
                            // `cluster` replace it well within a lease.
                            .overall_response_timeout(Some(self.response_timeout))
                            // Redirects and retries are followed in `cluster`
                            // (ASKING and the command as one pipeline).
                            .retries(0)
                            .min_retry_wait(millis(first))
                            .max_retry_wait(millis(longest))
                            .build()
                            .map_err(|err| connect_error(&target, err))?;
                    super::cluster::Cluster::connect(client, op_timeout)
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
        let runner = Runner {
            conn,
            op_timeout,
            target,
        };
        // Load the scripts now, so a first call is one `EVALSHA` per script, not a
        // `NOSCRIPT` round trip and a load.
        for script in [&SCRIPTS.renew, &SCRIPTS.complete, &SCRIPTS.release] {
            runner.load(script).await?;
        }
        let replicas = self.replicas.map(|replicas| match &single {
            Some(client) => Waiter::single(replicas, client.clone(), self.connect_timeout),
            // The cluster connection is shared: its `WAIT` ends well before the reply
            // timeout, so it never makes other calls on the node time out.
            #[cfg(feature = "redis-cluster")]
            None => Waiter::cluster(replicas.at_most(self.response_timeout * 3 / 4)),
            #[cfg(not(feature = "redis-cluster"))]
            None => unreachable!("one server unless the cluster feature is on"),
        });
        let near = match (self.near, &single) {
            (None, _) => None,
            (Some((bytes, bound)), client) => {
                let tracked = Arc::new(Tracked::new(NearCache::new(bytes, bound), &self.prefix));
                if let Some(client) = client {
                    tracking::spawn(
                        &tracked,
                        client,
                        self.connect_timeout,
                        self.response_timeout,
                    )
                    .map_err(|err| connect_error(&runner.target, err))?;
                    // Up before the first call when the server allows it; else the bound
                    // applies until it is.
                    let deadline = tokio::time::Instant::now() + self.connect_timeout;
                    while tracked.connection().is_none() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                Some(tracked)
            }
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                runner,
                prefix: self.prefix,
                poll: self.poll,
                replicas,
                near,
            }),
        })
    }
}

fn connect_error(target: &str, err: RedisError) -> Error {
    Error::store(crate::store::backend::OperationError {
        backend: "redis",
        operation: "connect",
        target: target.to_owned(),
        hint: "",
        source: err,
    })
}

/// The target without credentials, for messages and `Debug`.
pub(super) fn describe(target: &Target) -> String {
    match target {
        Target::Single(url) => redact_url(url),
        #[cfg(feature = "redis-cluster")]
        Target::Cluster(nodes) => {
            let nodes: Vec<String> = nodes.iter().map(|node| redact_url(node)).collect();
            format!("cluster [{}]", nodes.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let target = Target::Single("redis://user:secret@host:6379/0".into());
        assert_eq!(describe(&target), "redis://***@host:6379/0");
        let builder = RedisStoreBuilder::new(Target::Single("redis://:hunter2@host".into()));
        let debug = format!("{builder:?}");
        assert!(
            debug.contains("redis://***@host") && !debug.contains("hunter2"),
            "{debug}"
        );
    }

    #[cfg(feature = "redis-cluster")]
    #[test]
    fn every_cluster_node_is_redacted() {
        let target = Target::Cluster(vec![
            "redis://:secret@a:7000".into(),
            "rediss://b:7001".into(),
        ]);
        assert_eq!(
            describe(&target),
            "cluster [redis://***@a:7000, rediss://b:7001]"
        );
    }
}
