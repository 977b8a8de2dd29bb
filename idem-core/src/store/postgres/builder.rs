//! [`PostgresStoreBuilder`]: where the store connects (a URL or the application's pool),
//! its table, its timeouts; `connect`, `from_env` and `build`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::loss::LossMark;
use super::schema::{self, DEFAULT_TABLE, Table};
use super::store::Sql;
use super::{Inner, PostgresStore, purge};
use crate::backoff::{Backoff, DEFAULT_POLL};
use crate::error::Error;
use crate::store::backend::redact_url;

/// The environment variable [`PostgresStore::from_env`] reads.
pub(crate) const DATABASE_URL_ENV: &str = "IDEM_DATABASE_URL";

/// The default bound on getting a connection: opening one (a refused port fails after
/// this), or waiting for a free one.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The default bound on one statement's reply.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default size of a pool the store opens itself: a burst of first calls queues for
/// these (see [`DEFAULT_POOL_WAIT`]).
const DEFAULT_MAX_CONNECTIONS: u32 = 20;
/// The default bound on a statement's wait for a connection of a busy pool.
const DEFAULT_POOL_WAIT: Duration = Duration::from_secs(10);
/// The default largest record value: `MokaStore`'s default `max_bytes` (a record larger
/// than that is not kept there either).
pub(crate) const DEFAULT_MAX_RECORD_BYTES: usize = 256 << 20;
/// The default pause between two background purges.
const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The default number of rows one purge statement deletes.
const DEFAULT_PURGE_BATCH: u32 = 1000;

/// Where a [`PostgresStore`] gets its connections: a URL (the store opens its own pool)
/// or the application's own [`sqlx::PgPool`].
///
/// ```
/// use idem_core::PostgresSource;
///
/// let source = PostgresSource::from("postgres://postgres@127.0.0.1:5432/test");
/// # drop(source);
/// ```
#[derive(Clone)]
pub struct PostgresSource(SourceKind);

#[derive(Clone)]
enum SourceKind {
    Url(String),
    Pool(PgPool),
}

impl From<&str> for PostgresSource {
    fn from(url: &str) -> Self {
        PostgresSource(SourceKind::Url(url.to_string()))
    }
}

impl From<String> for PostgresSource {
    fn from(url: String) -> Self {
        PostgresSource(SourceKind::Url(url))
    }
}

impl From<&String> for PostgresSource {
    fn from(url: &String) -> Self {
        PostgresSource(SourceKind::Url(url.clone()))
    }
}

impl From<PgPool> for PostgresSource {
    fn from(pool: PgPool) -> Self {
        PostgresSource(SourceKind::Pool(pool))
    }
}

impl From<&PgPool> for PostgresSource {
    fn from(pool: &PgPool) -> Self {
        PostgresSource(SourceKind::Pool(pool.clone()))
    }
}

impl fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            SourceKind::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            SourceKind::Pool(_) => f.write_str("Pool"),
        }
    }
}

/// Builds a [`PostgresStore`]: table, timeouts, pool size, waiters' polling, purging.
///
/// The defaults: table `idem_records`, connect timeout 0.5 s, response timeout 1 s, 20
/// connections and a 10 s wait for a busy one (for a pool the store opens itself),
/// records up to 256 MiB, polling 5 ms up to 250 ms, a purge of expired rows every 60 s in
/// batches of 1000, and the table created if absent. With them a refused port gives
/// [`Error::Store`] within about half a second.
///
/// ```no_run
/// use std::time::Duration;
/// use idem_core::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), idem_core::Error> {
/// let store = PostgresStore::builder("postgres://postgres@127.0.0.1:5432/test")
///     .table("billing_idem")
///     .connect_timeout(Duration::from_millis(300))
///     .response_timeout(Duration::from_millis(500))
///     .max_connections(20)
///     .purge_interval(Duration::from_secs(300))
///     .build()
///     .await?;
/// # drop(store);
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    source: PostgresSource,
    table: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_connections: u32,
    pool_wait: Duration,
    max_record_bytes: usize,
    poll: Backoff,
    purge_interval: Option<Duration>,
    purge_batch: u32,
    create_table: bool,
}

impl fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("source", &self.source)
            .field("table", &self.table)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("max_connections", &self.max_connections)
            .field("pool_wait", &self.pool_wait)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("poll", &self.poll)
            .field("purge_interval", &self.purge_interval)
            .field("purge_batch", &self.purge_batch)
            .field("create_table", &self.create_table)
            .finish()
    }
}

impl PostgresStoreBuilder {
    pub(crate) fn new(source: PostgresSource) -> Self {
        PostgresStoreBuilder {
            source,
            table: DEFAULT_TABLE.to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            pool_wait: DEFAULT_POOL_WAIT,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            poll: DEFAULT_POLL,
            purge_interval: Some(DEFAULT_PURGE_INTERVAL),
            purge_batch: DEFAULT_PURGE_BATCH,
            create_table: true,
        }
    }

    /// The table of the records (default `idem_records`): `name` or `schema.name`, of
    /// ASCII letters, digits and `_`. Stores on different tables never see each other's
    /// records.
    ///
    /// ```
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app")
    ///     .table("billing.idem_records");
    /// # drop(builder);
    /// ```
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// How long getting a connection may take once it is a statement's turn (default
    /// 0.5 s): opening one when none is free, so a refused port or an unreachable host
    /// fails after this. Waiting for a busy pool is bounded by
    /// [`pool_wait`](Self::pool_wait) instead. For a pool passed in, its own
    /// `acquire_timeout` applies to both.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app")
    ///     .connect_timeout(Duration::from_millis(250));
    /// # drop(builder);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one statement's reply may take (default 1 s). A claim whose reply timed
    /// out may still have been taken: it is then held until its lease lapses, never
    /// treated as free.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app")
    ///     .response_timeout(Duration::from_millis(300));
    /// # drop(builder);
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The most connections the store's own pool opens (default 20; ignored for a pool
    /// passed in). Statements beyond that wait their turn (see
    /// [`pool_wait`](Self::pool_wait)).
    ///
    /// ```
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app").max_connections(32);
    /// # drop(builder);
    /// ```
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How long a statement may wait for one of the store's own connections while all
    /// are busy (default 10 s): a burst of calls queues, then fails with [`Error::Store`]
    /// if the pool stays busy that long. A server that refuses connections still fails
    /// within the [connect timeout](Self::connect_timeout). Ignored for a pool passed in
    /// (its `acquire_timeout` applies).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app")
    ///     .pool_wait(Duration::from_secs(2));
    /// # drop(builder);
    /// ```
    pub fn pool_wait(mut self, wait: Duration) -> Self {
        self.pool_wait = wait;
        self
    }

    /// The largest record value the store writes, in bytes (default 256 MiB, as
    /// `MokaStore`'s default `max_bytes`). A larger outcome is still returned to its
    /// caller, but stored as a marker that is not replayable: a retry gets
    /// [`Error::Codec`] saying so (never a second run of the body), and a warning is
    /// logged.
    ///
    /// ```
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app")
    ///     .max_record_bytes(16 << 20);
    /// # drop(builder);
    /// ```
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
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
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app")
    ///     .poll_backoff(Backoff::new(Duration::from_millis(10)).max(Duration::from_millis(500)));
    /// # drop(builder);
    /// ```
    pub fn poll_backoff(mut self, backoff: Backoff) -> Self {
        self.poll = backoff.first_at_least(Duration::from_millis(1));
        self
    }

    /// How often the background task deletes expired rows (default every 60 s); `None`
    /// turns it off (expired rows are never replayed either way: every read checks the
    /// deadline, and the next claim overwrites them).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app")
    ///     .purge_interval(Duration::from_secs(600));
    /// let off = idem_core::PostgresStore::builder("postgres://127.0.0.1/app").purge_interval(None);
    /// # drop((builder, off));
    /// ```
    pub fn purge_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.purge_interval = interval.into().map(|d| d.max(Duration::from_millis(10)));
        self
    }

    /// How many rows one purge statement deletes (default 1000): a purge round deletes
    /// batch after batch, each its own short statement, so it never holds many row locks.
    ///
    /// ```
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app").purge_batch(200);
    /// # drop(builder);
    /// ```
    pub fn purge_batch(mut self, rows: u32) -> Self {
        self.purge_batch = rows.max(1);
        self
    }

    /// Whether `build` creates the table, its index and the transaction-mode function when
    /// absent (default `true`). Turn it off when the application's migrations create them
    /// ([`PostgresStore::ddl`] prints the DDL) and its role may not run DDL.
    ///
    /// ```
    /// let builder = idem_core::PostgresStore::builder("postgres://127.0.0.1/app").create_table(false);
    /// # drop(builder);
    /// ```
    pub fn create_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// Connects (or takes the pool), creates the table if absent, starts the background
    /// purge (when called inside a tokio runtime), and returns the store. A server that
    /// cannot be reached is an [`Error::Store`] within the connect timeout.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::PostgresStore::builder("postgres://127.0.0.1/app").build().await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build(self) -> Result<PostgresStore, Error> {
        let table = Table::new(&self.table)?;
        let (pool, target, acquire, gate, loss) = match self.source.0 {
            SourceKind::Url(url) => {
                let target = redact_url(&url);
                let options = PgConnectOptions::from_str(&url).map_err(|err| {
                    Error::store(crate::store::backend::OperationError {
                        backend: "postgres",
                        operation: "connect",
                        target: target.clone(),
                        hint: " (invalid URL)",
                        source: err,
                    })
                })?;
                let loss = Arc::new(LossMark::new());
                let mark = Arc::clone(&loss);
                let pool = PgPoolOptions::new()
                    .max_connections(self.max_connections)
                    .acquire_timeout(self.connect_timeout)
                    // A ping before every statement would double each hit's round trips;
                    // a broken connection is dropped and the statement retried instead.
                    .test_before_acquire(false)
                    // After a restart, every connection opened before it is broken.
                    .before_acquire(move |_conn, meta| {
                        let fresh = !mark.predates(meta.age);
                        Box::pin(std::future::ready(Ok(fresh)))
                    })
                    .connect_lazy_with(options);
                let gate = tokio::sync::Semaphore::new(self.max_connections as usize);
                (pool, target, self.connect_timeout, Some(gate), Some(loss))
            }
            SourceKind::Pool(pool) => {
                let acquire = pool.options().get_acquire_timeout();
                (
                    pool,
                    "the application's pool".to_string(),
                    acquire,
                    None,
                    None,
                )
            }
        };
        let inner = Arc::new(Inner {
            sql: Sql::new(&table),
            tx_sql: super::tx::TxSql::new(&table),
            pool,
            table,
            op_timeout: acquire + self.response_timeout,
            gate,
            loss,
            pool_wait: self.pool_wait,
            max_record_bytes: self.max_record_bytes,
            uploads: Arc::default(),
            poll: self.poll,
            target,
        });
        let ddl = async {
            if self.create_table {
                schema::ensure(&inner.pool, &inner.table).await
            } else {
                // Still prove the server answers, so a bad URL fails here, not at the
                // first call.
                sqlx::query("SELECT 1").execute(&inner.pool).await.map(drop)
            }
        };
        // DDL may wait for another process's: a generous bound, still finite.
        match tokio::time::timeout(inner.op_timeout * 10, ddl).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(inner.failed("create table", err)),
            Err(_) => {
                return Err(Error::store(format!(
                    "postgres create table on {}: no reply within {:?}",
                    inner.target,
                    inner.op_timeout * 10
                )));
            }
        }
        match schema::has_expiry_index(&inner.pool, &inner.table).await {
            Ok(true) => {}
            Ok(false) => crate::event::postgres_expiry_index_missing(&inner.table),
            Err(err) => return Err(inner.failed("check the expires_at index", err)),
        }
        if let Some(interval) = self.purge_interval {
            purge::spawn(&inner, interval, self.purge_batch);
        }
        Ok(PostgresStore { inner })
    }
}

impl PostgresStore {
    /// A builder on a URL (the store opens its own pool) or on the application's
    /// [`sqlx::PgPool`].
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use idem_core::PostgresStore;
    ///
    /// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// let store = PostgresStore::builder(pool.clone()).table("orders_idem").build().await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(source: impl Into<PostgresSource>) -> PostgresStoreBuilder {
        PostgresStoreBuilder::new(source.into())
    }

    /// Connects to `url` with the defaults (table `idem_records`, created if absent).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = idem_core::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// idem_core::install(store)?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<PostgresStore, Error> {
        PostgresStore::builder(url).build().await
    }

    /// Connects to the URL in `IDEM_DATABASE_URL`; [`Error::Store`] when it is not set.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::PostgresStore::from_env().await?;
    /// # drop(store);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_env() -> Result<PostgresStore, Error> {
        let url = std::env::var(DATABASE_URL_ENV).map_err(|_| {
            Error::store(format!(
                "{DATABASE_URL_ENV} is not set: set it to a postgres:// URL, or use PostgresStore::connect(url)"
            ))
        })?;
        PostgresStore::connect(&url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_redacted_in_debug() {
        let source = PostgresSource::from("postgres://user:secret@host:5432/db?password=other");
        let debug = format!("{:?}", PostgresStore::builder(source));
        assert!(
            debug.contains("postgres://***@host:5432/db?password=***")
                && !debug.contains("secret")
                && !debug.contains("other"),
            "{debug}"
        );
    }
}
