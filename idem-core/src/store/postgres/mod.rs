//! [`PostgresStore`]: records in a PostgreSQL table (feature `postgres`, sqlx 0.9), shared
//! by every process that uses the same table — and the transaction mode, where the record
//! is written in the caller's own transaction (`#[idempotent(transaction = "tx")]`).
//!
//! # Layout
//!
//! One row per key in the store's table (default `idem_records`;
//! [`PostgresStore::ddl`] prints it): the 32-byte key, the record version, the payload
//! fingerprint, the 16-byte fencing token of the claim that wrote the row, the encoded
//! outcome (NULL while the row is a claim) and `expires_at` (the lease deadline of a claim,
//! the TTL deadline of a record), on the database server's clock.
//!
//! # Shared-store mode
//!
//! - `claim` is one statement: it reads the row and, only when there is no live one,
//!   inserts a claim (`INSERT .. ON CONFLICT (key) DO UPDATE .. WHERE expires_at <=
//!   clock_timestamp()`, which also takes over a lapsed claim or an expired record). A hit
//!   therefore writes nothing and takes no row lock. Expired records are never replayed:
//!   the statement compares `expires_at` with the server's clock.
//! - `renew`, `complete` and `release` compare the row's token with the caller's (fencing).
//!   They act only on the caller's own claim row: a row that is gone (an operator's
//!   `forget`, or the purge after the lease lapsed) or was taken over means the claim is
//!   lost, and nothing is written. A lapsed claim row that nobody took over is still the
//!   holder's, so a stalled holder can still renew or complete it.
//! - A background task deletes expired rows in bounded batches (`purge_interval`).
//!
//! # Transaction mode
//!
//! See `tx.rs`: the claim is a call of the table's claim function through the
//! caller's connection, the outcome an `UPDATE` through it; both commit with the caller's
//! transaction or not at all. The connection must be inside a transaction (`&mut *tx` of
//! `pool.begin()`, or the `&mut sqlx::Transaction<'_, Postgres>` itself): a connection
//! that autocommits is refused before anything is written. A caller's
//! `statement_timeout` never aborts its transaction on idem's account: one claim
//! statement waits on a lock at most half of it, and the call claims again until its
//! `wait` is over (one deadline for the whole call), then returns
//! [`Error::InProgress`].
//!
//! # Requirements and limits
//!
//! - **PostgreSQL 13 or later** (`gen_random_uuid()` is built in from 13).
//! - **Table names** are quoted as given, so they are case-sensitive: `.table("Idem")` is
//!   the table `"Idem"`, not `idem`. `name` and `schema.name` are one table when `schema`
//!   is the connection's `current_schema()`; processes that spell it either way may start
//!   at once (the DDL lock is keyed on the resolved name).
//! - **The purge's index** is named `<table>_expires_at` (in the table's schema). If a
//!   relation of that name already exists, `CREATE INDEX IF NOT EXISTS` leaves the table
//!   without the index: `build` checks and logs a warning (the store still works; the
//!   purge then scans the table). Create an index on `expires_at` under another name, or
//!   rename that relation.
//! - **Records** larger than [`max_record_bytes`](PostgresStoreBuilder::max_record_bytes)
//!   (default 256 MiB) are returned to their caller but stored as a marker that is not
//!   replayable (a retry gets [`Error::Codec`], never a rerun), with
//!   a warning. A `complete` whose reply times out goes on in the background, and its
//!   retry joins it: one record is never uploaded twice at once.
//!
//! # Connections
//!
//! - **The store's own pool** (a URL) has 20 connections by default; a burst of calls
//!   queues for them within [`pool_wait`](PostgresStoreBuilder::pool_wait) (default
//!   10 s), while a server that refuses connections still fails within the connect
//!   timeout (0.5 s).
//! - **The application's pool** passed to [`PostgresStore::builder`] is shared with the
//!   application's own transactions: a call in shared-store mode made while the caller
//!   holds a transaction open needs a second connection of the same pool, and a burst of
//!   such callers can hold every connection and starve (each then fails after the pool's
//!   `acquire_timeout`). Give the store a pool of its own (a URL, or a second `PgPool`)
//!   when calls run inside open transactions; transaction mode itself needs no extra
//!   connection.
//! - **A lost connection** — an I/O error, a connection exception (SQLSTATE `08xxx`) or a
//!   server shutting down or restarting (`57P01`–`57P03`) — is closed and the statement
//!   sent once more on a new one; with the store's own pool, every idle connection opened
//!   before the loss is discarded too, so a restart fails at most one call.
//! - **Conflicts**: a serialization failure (`40001`) or deadlock (`40P01`) is an
//!   [`Error::Store`] whose
//!   [`is_retryable`](crate::Error::is_retryable) is `true`: roll back and retry the
//!   transaction at once; any other store error means the store is failing.

mod builder;
mod loss;
mod purge;
mod row;
mod schema;
mod store;
pub(crate) mod tx;
mod upload;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

pub use builder::{PostgresSource, PostgresStoreBuilder};
use schema::Table;
/// The sqlx this store is built on (0.9), for the types its API names (`PgPool`,
/// `PgConnection`): use it to get the same version.
pub use sqlx;
use store::Sql;

use crate::backoff::Backoff;
use crate::error::Error;

/// A [`Store`](crate::store::Store) in PostgreSQL: every process that connects to the same
/// database (and uses the same table) shares one idempotency record per key.
///
/// A claim and a hit each take one statement (one round trip); `renew`, `complete` and
/// `release` are token-checked, so a holder that was taken over after its lease lapsed
/// cannot overwrite or delete its successor's record. Every operation is bounded by the
/// connect and response timeouts: when the database cannot be reached, calls fail closed
/// with [`Error::Store`] and the body does not run; new connections are opened by
/// themselves when it comes back.
///
/// The same store names the table of `#[idempotent(transaction = "tx")]` functions
/// (through `store = ..` or [`install`](crate::install)).
///
/// Cloning is cheap and shares the pool.
///
/// ```no_run
/// use idem_core::{PostgresStore, install};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// install(store)?; // every #[idempotent] fn without `store = ..` now uses PostgreSQL
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: PgPool,
    table: Table,
    sql: Sql,
    tx_sql: tx::TxSql,
    /// A hard bound on one store operation: getting a connection plus the reply.
    op_timeout: Duration,
    /// One turn per connection of the store's own pool (`None` for the application's
    /// pool): statements queue here, within `pool_wait`, instead of timing out in the pool.
    gate: Option<tokio::sync::Semaphore>,
    /// When the store's own pool last lost a connection (`None` for the application's
    /// pool): older idle connections are discarded, not handed out.
    loss: Option<Arc<loss::LossMark>>,
    /// How long a statement may wait for its turn at the gate.
    pool_wait: Duration,
    /// The largest record value written; a larger one is stored as a marker.
    max_record_bytes: usize,
    /// The `complete`s in flight, so a retry never uploads a record beside its first try.
    uploads: Arc<upload::Uploads>,
    poll: Backoff,
    /// The URL without credentials, for messages.
    target: String,
}

impl PostgresStore {
    /// The store's table name, as configured.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// assert_eq!(store.table(), "idem_records");
    /// # Ok(())
    /// # }
    /// ```
    pub fn table(&self) -> &str {
        self.inner.table.name()
    }

    /// The pool the store runs its statements on.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// let mut tx = store.pool().begin().await.map_err(idem_core::Error::store)?;
    /// # drop(tx);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The SQL that creates this store's table, index and transaction-mode function when
    /// absent, for teams that run their own migrations (see
    /// [`PostgresStoreBuilder::create_table`]).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// assert!(store.ddl().contains("CREATE TABLE IF NOT EXISTS \"idem_records\""));
    /// # Ok(())
    /// # }
    /// ```
    pub fn ddl(&self) -> String {
        self.inner.table.ddl()
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("table", &self.inner.table)
            .finish()
    }
}

impl Inner {
    /// A failed statement as an [`Error::Store`] naming the operation and the target, with
    /// the client's error as the source.
    fn failed(&self, what: &'static str, err: sqlx::Error) -> Error {
        Error::store(crate::store::backend::OperationError {
            backend: "postgres",
            operation: what,
            target: self.target.clone(),
            hint: "",
            source: err,
        })
    }
}

/// A row of the idem table (or the claim function's answer) whose columns are not the
/// expected ones; the client's error is the source.
#[derive(Debug, thiserror::Error)]
#[error("an idem row cannot be read")]
pub(crate) struct UnreadableRow(#[source] pub(crate) sqlx::Error);

/// The SQLSTATEs of a conflict the database broke by failing one transaction: a
/// serialization failure and a deadlock. Retrying the transaction at once may succeed.
const VICTIM_STATES: [&str; 2] = ["40001", "40P01"];

/// Whether `err` (one link of an error chain) is PostgreSQL failing this transaction to
/// break a conflict (see [`Error::is_retryable`]).
pub(crate) fn chose_victim(err: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(err) = err.downcast_ref::<sqlx::Error>() {
        return err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| VICTIM_STATES.contains(&&*code));
    }
    err.downcast_ref::<tx::ClaimFunctionError>()
        .is_some_and(|err| VICTIM_STATES.contains(&err.sqlstate.as_str()))
}

/// Whether a statement failed because its connection is gone: an I/O error, a connection
/// exception (SQLSTATE class `08`), or the server shutting down or restarting
/// (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now). The
/// connection is dropped and the statement may be sent once more on a new one.
pub(crate) fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}
