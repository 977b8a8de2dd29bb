//! The background purge: deletes expired rows in bounded batches.
//!
//! Expired rows are never replayed whether or not they were purged (every read compares
//! the deadline with the server's clock); the purge only keeps the table from growing.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Inner;
use super::store::Sql;

/// The most batches one round deletes; the rest waits for the next round, so a backlog
/// is worked off without one round monopolising a connection.
const MAX_BATCHES_PER_ROUND: u32 = 100;

/// Starts the purge task on the current tokio runtime (none: no purge). It holds the
/// store weakly and ends when the store is dropped.
pub(super) fn spawn(inner: &Arc<Inner>, interval: Duration, batch: u32) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        crate::event::purge_off_without_runtime();
        return;
    };
    let weak: Weak<Inner> = Arc::downgrade(inner);
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            match round(&inner, batch).await {
                Ok(0) => {}
                Ok(rows) => crate::event::purged(rows, &inner.table),
                Err(err) => crate::event::purge_failed(&err),
            }
        }
    });
}

/// One round: batches of at most `batch` rows until one comes back short. Returns the
/// number of rows deleted.
pub(super) async fn round(inner: &Inner, batch: u32) -> Result<u64, crate::Error> {
    let limit = i64::from(batch);
    let mut total = 0;
    for _ in 0..MAX_BATCHES_PER_ROUND {
        let deleted = inner
            .run("purge", |conn| {
                Box::pin(
                    sqlx::query(sqlx::AssertSqlSafe(Arc::clone(purge_sql(&inner.sql))))
                        .bind(limit)
                        .execute(conn),
                )
            })
            .await?
            .rows_affected();
        total += deleted;
        if deleted < u64::from(batch) {
            break;
        }
    }
    Ok(total)
}

fn purge_sql(sql: &Sql) -> &Arc<str> {
    &sql.purge
}

impl super::PostgresStore {
    /// Deletes expired rows now, in batches of `batch` rows (the background task does the
    /// same every `purge_interval`). Returns how many rows were deleted.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), idem_core::Error> {
    /// let store = idem_core::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// let deleted = store.purge_expired(1000).await?;
    /// println!("{deleted} expired rows deleted");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn purge_expired(&self, batch: u32) -> Result<u64, crate::Error> {
        round(&self.inner, batch.max(1)).await
    }
}
