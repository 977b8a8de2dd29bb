//! Shared-store mode: the [`Store`] implementation and its statements.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgQueryResult, PgRow};
use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::row::{self, Stored, VERSION};
use super::schema::Table;
use super::{Inner, PostgresStore};
use crate::backoff::Backoff;
use crate::error::{Error, SharedError};
use crate::key::{Fingerprint, Key};
use crate::store::{BoxFuture, Claim, Record, Store, Token};

/// An upload's own bound, in operation bounds: a large record may take longer than one
/// statement's reply, and its caller stops waiting after one bound (the upload goes on).
const UPLOAD_BOUND: u32 = 30;

/// The statements of one table, formatted once.
pub(crate) struct Sql {
    claim: Arc<str>,
    renew: Arc<str>,
    complete: Arc<str>,
    release: Arc<str>,
    forget: Arc<str>,
    pub(super) purge: Arc<str>,
}

impl Sql {
    pub(crate) fn new(table: &Table) -> Sql {
        let t = &table.quoted;
        Sql {
            // `cur` is the row as the statement's snapshot sees it. The INSERT is attempted
            // only when there is no live row, so a hit (a live record) or a live claim
            // writes nothing and locks nothing; otherwise it inserts, or takes over a row
            // whose deadline has passed. If another caller inserted meanwhile, ON CONFLICT
            // sees its row, live, and leaves it: `claimed` is then NULL and `cur` empty,
            // which reads as "in progress, poll again".
            claim: format!(
                "WITH cur AS (
                    SELECT version, fingerprint, value, expires_at > clock_timestamp() AS live
                    FROM {t} WHERE key = $1
                ), ins AS (
                    INSERT INTO {t} AS r (key, version, fingerprint, token, value, expires_at)
                    SELECT $1::bytea, $2::int2, $3::bytea, uuid_send(gen_random_uuid()), NULL::bytea,
                           clock_timestamp() + $4::int8 * interval '1 millisecond'
                    WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.live)
                    ON CONFLICT (key) DO UPDATE
                    SET version = excluded.version, fingerprint = excluded.fingerprint,
                        token = excluded.token, value = NULL, expires_at = excluded.expires_at
                    WHERE r.expires_at <= clock_timestamp()
                    RETURNING r.token
                )
                SELECT ins.token AS claimed, cur.version IS NOT NULL AS present, cur.live,
                       cur.version, cur.fingerprint, cur.value
                FROM (SELECT 1) AS one LEFT JOIN cur ON true LEFT JOIN ins ON true"
            )
            .into(),
            renew: format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3::int8 * interval '1 millisecond'
                 WHERE key = $1 AND token = $2 AND value IS NULL"
            )
            .into(),
            // Only over our own claim: a row that is gone (forgotten, or purged after its
            // lease lapsed) or held by another token means the claim was lost, and a
            // forgotten call's result is not stored.
            // A record this token completed already (an earlier try whose reply was lost)
            // counts as completed.
            complete: format!(
                "WITH upd AS (
                    UPDATE {t} SET version = $2, fingerprint = $3, value = $5,
                        expires_at = clock_timestamp() + $6::int8 * interval '1 millisecond'
                    WHERE key = $1 AND token = $4 AND value IS NULL
                    RETURNING 1
                )
                SELECT EXISTS (SELECT 1 FROM upd)
                    OR EXISTS (SELECT 1 FROM {t} WHERE key = $1 AND token = $4 AND value IS NOT NULL)"
            )
            .into(),
            release: format!("DELETE FROM {t} WHERE key = $1 AND token = $2 AND value IS NULL")
                .into(),
            forget: format!("DELETE FROM {t} WHERE key = $1").into(),
            // Locked rows (a claim in an open transaction, a row being taken over) are
            // skipped, so the purge never waits for, nor blocks, a caller.
            purge: format!(
                "DELETE FROM {t} WHERE key IN (
                    SELECT key FROM {t} WHERE expires_at < clock_timestamp()
                    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
            )
            .into(),
        }
    }
}

/// A statement's SQL, for `sqlx::query`.
fn sql(text: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(text))
}

impl Inner {
    /// Runs `op` on a pooled connection within the operation bound. A connection that
    /// broke (the server restarted since it was opened: an I/O error, or the FATAL a
    /// restart sends, see [`connection_lost`](super::connection_lost)) is closed and the
    /// statement tried once more on a fresh one: the broken one never delivered it, or
    /// delivered it and lost the reply — then a claim is held until its lease lapses,
    /// never doubled.
    ///
    /// With the store's own pool, a statement first waits its turn for one of the pool's
    /// connections (within `pool_wait`), so a burst queues instead of failing; only then
    /// does the operation bound start.
    pub(super) async fn run<T>(
        &self,
        what: &'static str,
        op: impl for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    ) -> Result<T, Error> {
        self.run_within(what, self.op_timeout, op).await
    }

    /// [`run`](Self::run) with another bound than the operation bound.
    pub(super) async fn run_within<T>(
        &self,
        what: &'static str,
        bound: Duration,
        op: impl for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    ) -> Result<T, Error> {
        let _turn = match &self.gate {
            Some(gate) => match tokio::time::timeout(self.pool_wait, gate.acquire()).await {
                Ok(Ok(turn)) => Some(turn),
                _ => {
                    return Err(Error::store(format!(
                        "postgres {what} on {}: every connection of the store's pool stayed busy for {:?} (raise max_connections or pool_wait)",
                        self.target, self.pool_wait
                    )));
                }
            },
            None => None,
        };
        let attempt = async {
            let mut retried = false;
            loop {
                let mut conn = self.pool.acquire().await?;
                match op(&mut conn).await {
                    Err(err) if super::connection_lost(&err) => {
                        conn.close_on_drop();
                        if let Some(loss) = &self.loss {
                            loss.note();
                        }
                        if retried {
                            return Err(err);
                        }
                        retried = true;
                        crate::event::pooled_connection_broke(&err);
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(bound, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.failed(what, err)),
            Err(_) => Err(Error::store(format!(
                "postgres {what} on {}: no reply within {bound:?}",
                self.target
            ))),
        }
    }
}

fn affected(result: PgQueryResult) -> bool {
    result.rows_affected() == 1
}

/// What the claim statement answered.
fn parse_claim(row: &PgRow) -> Result<Claim, Error> {
    let decode = |err: sqlx::Error| Error::codec(super::UnreadableRow(err));
    if let Some(token) = row
        .try_get::<Option<Vec<u8>>, _>("claimed")
        .map_err(decode)?
    {
        let present: bool = row.try_get("present").map_err(decode)?;
        let live: Option<bool> = row.try_get("live").map_err(decode)?;
        let was_claim = row
            .try_get::<Option<Vec<u8>>, _>("value")
            .map_err(decode)?
            .is_none();
        return Ok(Claim::Claimed {
            token: row::token(&token)?,
            taken_over: present && was_claim && live == Some(false),
        });
    }
    let stored = Stored {
        version: row.try_get("version").map_err(decode)?,
        fingerprint: row.try_get("fingerprint").map_err(decode)?,
        value: row.try_get("value").map_err(decode)?,
    };
    let live: Option<bool> = row.try_get("live").map_err(decode)?;
    match (live, &stored.value) {
        (Some(true), Some(_)) => row::completed(stored),
        // A live claim; or a row another caller took over, or inserted, since this
        // statement's snapshot: in progress either way.
        _ => row::in_progress(&stored),
    }
}

impl Store for PostgresStore {
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>> {
        Box::pin(async move {
            let inner = &self.inner;
            let row = inner
                .run("claim", |conn| {
                    Box::pin(
                        sqlx::query(sql(&inner.sql.claim))
                            .bind(key.as_bytes().as_slice())
                            .bind(VERSION)
                            .bind(fingerprint.as_bytes().as_slice())
                            .bind(row::millis(lease))
                            .fetch_one(conn),
                    )
                })
                .await?;
            parse_claim(&row)
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let inner = &self.inner;
            let token = row::token_bytes(token);
            inner
                .run("renew", |conn| {
                    Box::pin(
                        sqlx::query(sql(&inner.sql.renew))
                            .bind(key.as_bytes().as_slice())
                            .bind(token.as_slice())
                            .bind(row::millis(lease))
                            .execute(conn),
                    )
                })
                .await
                .map(affected)
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
            let inner = &self.inner;
            let record = match record.value().len() {
                bytes if bytes > inner.max_record_bytes => {
                    crate::event::record_too_large(key, bytes, inner.max_record_bytes);
                    let marker = crate::codec::too_large_marker(bytes);
                    Arc::new(Record::new(*record.fingerprint(), marker))
                }
                _ => record,
            };
            let (owner, owned_key) = (Arc::clone(&self.inner), *key);
            let upload = move || async move {
                let (inner, key, token) = (owner, owned_key, row::token_bytes(token));
                let statement = Arc::clone(&inner.sql.complete);
                inner
                    .run_within("complete", inner.op_timeout * UPLOAD_BOUND, |conn| {
                        // Owned by the statement's future: the upload outlives the caller.
                        let (statement, record) = (Arc::clone(&statement), Arc::clone(&record));
                        Box::pin(async move {
                            sqlx::query_scalar::<_, bool>(AssertSqlSafe(statement))
                                .bind(key.as_bytes().as_slice())
                                .bind(VERSION)
                                .bind(record.fingerprint().as_bytes().as_slice())
                                .bind(token.as_slice())
                                .bind(record.value())
                                .bind(row::millis(ttl))
                                .fetch_one(conn)
                                .await
                        })
                    })
                    .await
                    .map_err(SharedError::new)
            };
            let mut answer = inner.uploads.join_or_start(*key, token, upload);
            match tokio::time::timeout(inner.op_timeout, answer.wait_for(Option::is_some)).await {
                Ok(Ok(done)) => match &*done {
                    Some(Ok(completed)) => Ok(*completed),
                    Some(Err(err)) => Err(err.to_error()),
                    None => unreachable!("wait_for returns an answer"),
                },
                Ok(Err(_unsent)) => Err(Error::store(format!(
                    "postgres complete on {}: no tokio runtime to run the statement",
                    inner.target
                ))),
                // The upload goes on in its task; a retry joins it.
                Err(_) => Err(Error::store(format!(
                    "postgres complete on {}: no reply within {:?} (the statement goes on, and a retry waits for it)",
                    inner.target, inner.op_timeout
                ))),
            }
        })
    }

    fn release<'a>(&'a self, key: &'a Key, token: Token) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let inner = &self.inner;
            let token = row::token_bytes(token);
            inner
                .run("release", |conn| {
                    Box::pin(
                        sqlx::query(sql(&inner.sql.release))
                            .bind(key.as_bytes().as_slice())
                            .bind(token.as_slice())
                            .execute(conn),
                    )
                })
                .await
                .map(affected)
        })
    }

    fn forget<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner
                .run("forget", |conn| {
                    Box::pin(
                        sqlx::query(sql(&inner.sql.forget))
                            .bind(key.as_bytes().as_slice())
                            .execute(conn),
                    )
                })
                .await
                .map(|done| done.rows_affected() > 0)
        })
    }

    fn poll_backoff(&self) -> Backoff {
        self.inner.poll
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn as_postgres(&self) -> Option<&PostgresStore> {
        Some(self)
    }
}
