//! Transaction mode: `#[idempotent(transaction = "tx")]`, the record written in the
//! caller's own transaction.
//!
//! The generated code calls [`begin`] with the caller's connection: one statement, a call
//! of the table's claim function (see `postgres/schema.rs`), which inserts a claim row
//! (`INSERT .. ON CONFLICT DO NOTHING`), takes over an expired one, or reads the committed
//! record. A claim row another transaction inserted and has not committed makes the insert
//! wait on it — bounded by `wait` through a `lock_timeout` local to the function — until
//! that transaction ends: after its commit the record is read and replayed, after its
//! rollback the claim is ours. The body then runs with the connection, and [`finish`]
//! writes the outcome over the claim row (one `UPDATE`) — or deletes the row after an
//! `Err` that is not cached — so the record commits with the body's writes, or neither
//! does.
//!
//! This needs READ COMMITTED (PostgreSQL's default): the function reads, in a statement
//! of its own, what the transaction it waited for committed. Under REPEATABLE READ or
//! SERIALIZABLE a duplicate that waited gets PostgreSQL's serialization failure (reported
//! as [`Error::Store`], whose [`Error::is_retryable`] is `true`); its transaction must be
//! retried, and then replays.
//!
//! The claim function refuses a connection outside a transaction (its statement would be
//! the whole transaction) before it writes anything. It waits on another transaction's
//! claim in slices of at most 100 ms, within the call's remaining `wait` and half the
//! caller's `statement_timeout`, and answers `busy` when they run out: the call then
//! claims again until its one deadline, so neither a chain of holders that roll back nor
//! a statement timeout stretches `wait` or aborts the caller's transaction.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection, Row};
use tokio::time::Instant;

use super::PostgresStore;
use super::row::{self, Stored, VERSION};
use super::schema::{DEFAULT_TABLE, Table};
use crate::__private::{ErrOf, IdemError, IdemResult, Ids, OkOf, StoredValue};
use crate::backoff::DEFAULT_POLL;
use crate::call::{ErrCodec, encode_outcome, replay_record};
use crate::error::Error;
use crate::event::{self, Outcome as Event};
use crate::global::{FRAME, Frame, idem_error};
use crate::key::{Fingerprint, Key};
use crate::spec::{InFlight, Spec};
use crate::store::{Claim, SharedStore, Token};

/// The lock wait of `in_flight = "reject"`: PostgreSQL has no `NOWAIT` for an insert that
/// conflicts with an uncommitted row, and `lock_timeout = 0` means "no limit".
const REJECT_WAIT: Duration = Duration::from_millis(1);

/// The statements of transaction mode for one table.
pub(crate) struct TxSql {
    claim: Arc<str>,
    complete: Arc<str>,
    release: Arc<str>,
}

impl TxSql {
    pub(crate) fn new(table: &Table) -> TxSql {
        let t = &table.quoted;
        TxSql {
            claim: format!(
                "SELECT o_state, o_token, o_version, o_fingerprint, o_value FROM {}($1, $2, $3, $4, $5)",
                table.claim_fn
            )
            .into(),
            complete: format!(
                "UPDATE {t} SET version = $3, fingerprint = $4, value = $5,
                     expires_at = clock_timestamp() + $6::int8 * interval '1 millisecond'
                 WHERE key = $1 AND token = $2"
            )
            .into(),
            release: format!("DELETE FROM {t} WHERE key = $1 AND token = $2").into(),
        }
    }
}

/// The statements of the default table, for functions whose store is not a
/// `PostgresStore`.
static DEFAULT_SQL: LazyLock<TxSql> = LazyLock::new(|| {
    TxSql::new(&Table::new(DEFAULT_TABLE).expect("the default table name is valid"))
});

/// The process's installed store, if any (never the fallback default).
pub fn installed_store() -> Result<Option<&'static SharedStore>, Error> {
    Ok(crate::global::installed_store())
}

/// What [`begin`] decided.
pub enum Begin<R, E> {
    /// Replayed, or refused: return this.
    Done(R),
    /// The claim row is ours: run the body, then [`finish`].
    Run(TxClaim<E>),
}

/// A claim row written in the caller's transaction.
pub struct TxClaim<E> {
    spec: &'static Spec,
    sql: SqlRef,
    key: Key,
    fingerprint: Fingerprint,
    token: Token,
    errors: ErrCodec<E>,
    /// An idem error reached the body (a nested call's): its `Err` is never stored.
    saw_idem_error: bool,
}

/// The statements of the function's table: its store's, or the default table's.
enum SqlRef {
    Store(PostgresStore),
    Default,
}

impl SqlRef {
    fn get(&self) -> &TxSql {
        match self {
            SqlRef::Store(store) => &store.inner.tx_sql,
            SqlRef::Default => &DEFAULT_SQL,
        }
    }
}

fn sql(text: &Arc<str>) -> AssertSqlSafe<Arc<str>> {
    AssertSqlSafe(Arc::clone(text))
}

fn store_error(what: &'static str, err: sqlx::Error) -> Error {
    let hint = match err.as_database_error().and_then(|db| db.code()) {
        // undefined_function, undefined_table
        Some(code) if code == "42883" || code == "42P01" => {
            " (the idem table or its claim function is missing: connect a PostgresStore once, which creates them, or run its DDL)"
        }
        _ => "",
    };
    Error::store(crate::store::backend::OperationError {
        backend: "postgres",
        operation: what,
        target: "the caller's transaction".to_owned(),
        hint,
        source: err,
    })
}

fn done<R, M1, M2>(result: Result<OkOf<R, M1>, ErrOf<R, M2>>) -> R
where
    R: IdemResult,
    R::Ok: StoredValue<M1>,
    R::Err: IdemError<M2>,
{
    R::from_result(match result {
        Ok(value) => Ok(StoredValue::from_checked(value)),
        Err(err) => Err(IdemError::from_checked(err)),
    })
}

/// Claims the key in the caller's transaction: replays a committed record, waits (within
/// `wait`) on another transaction's uncommitted claim, or returns the claim to run the
/// body with.
pub async fn begin<R, M1, M2>(
    spec: &'static Spec,
    store: Result<Option<&SharedStore>, Error>,
    ids: Result<Ids, Error>,
    errors: ErrCodec<ErrOf<R, M2>>,
    conn: &mut PgConnection,
) -> Begin<R, ErrOf<R, M2>>
where
    R: IdemResult,
    R::Ok: StoredValue<M1>,
    R::Err: IdemError<M2>,
{
    // The records are in the installed (or given) `PostgresStore`'s table, else in the
    // default table, which only the caller's connection reaches.
    let reached = |store: Result<Option<&SharedStore>, Error>| match store? {
        Some(store) if store.store().as_postgres().is_some() => Ok(store.clone()),
        _ => Err(Error::store(
            "the function keeps its records in the default table of the caller's transactions, which no store reaches: delete its row by key",
        )),
    };
    let Some((store, ids)) = crate::probe::offer(store, ids, reached) else {
        return crate::probe::stop().await;
    };
    let (store, (key, fingerprint)) = match (store, ids) {
        (Ok(store), Ok(ids)) => (store, ids),
        (Err(err), _) | (_, Err(err)) => {
            return Begin::Done(done::<R, M1, M2>(Err(idem_error(err))));
        }
    };
    let statements = match store.and_then(|s| s.store().as_postgres()) {
        Some(store) => SqlRef::Store(store.clone()),
        None => SqlRef::Default,
    };
    crate::observe::start(&key);
    if let Err(err) = in_transaction(conn).await {
        event::store_error(spec, &key, "claim", &err);
        return Begin::Done(done::<R, M1, M2>(Err(idem_error(err))));
    }
    let deadline = Instant::now() + spec.wait;
    let poll = match &statements {
        SqlRef::Store(store) => store.inner.poll,
        SqlRef::Default => DEFAULT_POLL,
    };
    let mut backoff = poll.first_delay();
    let mut waited = false;
    loop {
        let wait = match spec.in_flight {
            InFlight::Reject => REJECT_WAIT,
            InFlight::Wait => deadline.saturating_duration_since(Instant::now()),
        };
        let row = sqlx::query(sql(&statements.get().claim))
            .bind(key.as_bytes().as_slice())
            .bind(VERSION)
            .bind(fingerprint.as_bytes().as_slice())
            .bind(row::millis(spec.lease))
            .bind(row::millis(wait))
            .fetch_optional(&mut *conn)
            .await;
        let claim = match row {
            Ok(Some(row)) => parse(&row),
            // The row vanished between the function's statements (a `forget`): again.
            Ok(None) => Ok((Claim::InProgress(crate::store::ChangeNotice::poll()), false)),
            Err(err) => Err(store_error("claim", err)),
        };
        let claim = match claim {
            Ok((claim, waited_for_it)) => {
                waited |= waited_for_it;
                claim
            }
            Err(err) => {
                if matches!(err, Error::Codec(_)) {
                    event::codec_error(spec, &key, &err);
                } else {
                    event::store_error(spec, &key, "claim", &err);
                }
                return Begin::Done(done::<R, M1, M2>(Err(idem_error(err))));
            }
        };
        match claim {
            Claim::Claimed { token, taken_over } => {
                if taken_over {
                    event::emit(spec, &key, Event::TakenOver);
                }
                return Begin::Run(TxClaim {
                    spec,
                    sql: statements,
                    key,
                    fingerprint,
                    token,
                    errors,
                    saw_idem_error: false,
                });
            }
            Claim::Completed(record) => {
                let outcome = if waited {
                    Event::Waited
                } else {
                    Event::Replayed
                };
                let result = replay_record::<OkOf<R, M1>, ErrOf<R, M2>, _>(
                    spec,
                    &key,
                    &fingerprint,
                    &errors,
                    &record,
                    outcome,
                );
                return Begin::Done(done::<R, M1, M2>(result));
            }
            Claim::InProgress(_) => {
                let now = Instant::now();
                if spec.in_flight == InFlight::Reject || now >= deadline {
                    event::emit(spec, &key, Event::Rejected);
                    return Begin::Done(done::<R, M1, M2>(Err(idem_error(Error::InProgress))));
                }
                // A committed claim row without an outcome (a cancelled call whose caller
                // committed anyway) holds until its lease lapses: poll.
                waited = true;
                let next = now.checked_add(backoff).unwrap_or(deadline);
                tokio::time::sleep_until(deadline.min(next)).await;
                backoff = poll.next_delay(backoff);
            }
        }
    }
}

/// The claim function's answer: the claim, and whether a record came only after a wait.
fn parse(row: &sqlx::postgres::PgRow) -> Result<(Claim, bool), Error> {
    let decode = |err: sqlx::Error| Error::codec(super::UnreadableRow(err));
    let state: String = row.try_get("o_state").map_err(decode)?;
    let stored = || -> Result<Stored, Error> {
        Ok(Stored {
            version: row.try_get("o_version").map_err(decode)?,
            fingerprint: row.try_get("o_fingerprint").map_err(decode)?,
            value: row.try_get("o_value").map_err(decode)?,
        })
    };
    let claim = match state.as_str() {
        "claimed" | "taken_over" => {
            let token: Vec<u8> = row.try_get("o_token").map_err(decode)?;
            Claim::Claimed {
                token: row::token(&token)?,
                taken_over: state == "taken_over",
            }
        }
        "completed" => row::completed(stored()?)?,
        "waited" => return Ok((row::completed(stored()?)?, true)),
        "in_progress" => row::in_progress(&stored()?)?,
        // The lock wait ran out: another transaction's claim is still uncommitted.
        "busy" => Claim::InProgress(crate::store::ChangeNotice::poll()),
        "error" => {
            let text = |column: &str| -> Result<String, Error> {
                let bytes: Option<Vec<u8>> = row.try_get(column).map_err(decode)?;
                Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
            };
            return Err(Error::store(ClaimFunctionError {
                sqlstate: text("o_token")?,
                message: text("o_value")?,
            }));
        }
        other => {
            return Err(Error::codec(format!(
                "the idem claim function answered {other:?}"
            )));
        }
    };
    Ok((claim, false))
}

/// Refuses a connection outside a transaction, before anything is written: each of its
/// statements would commit on its own, the claim before the body ran. A transaction sqlx
/// began is known without a round trip; otherwise (a raw `BEGIN`, or none) the server is
/// asked, in a simple query, whose one statement is the whole transaction only outside a
/// transaction block.
async fn in_transaction(conn: &mut PgConnection) -> Result<(), Error> {
    use sqlx::Connection;

    if conn.is_in_transaction() {
        return Ok(());
    }
    let alone = sqlx::raw_sql("SELECT transaction_timestamp() = statement_timestamp()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| store_error("claim", err))?;
    match alone.try_get::<bool, _>(0) {
        Ok(false) => Ok(()),
        Ok(true) => Err(Error::store(NotInTransaction)),
        Err(err) => Err(Error::codec(super::UnreadableRow(err))),
    }
}

/// Transaction mode was given a connection outside a transaction.
#[derive(Debug, thiserror::Error)]
#[error(
    "transaction mode needs a connection inside a transaction, and this one autocommits each statement (the claim would commit before the body ran): pass `&mut *tx` from `let mut tx = pool.begin().await?` and commit it after the call"
)]
pub(crate) struct NotInTransaction;

/// The claim function caught an error (reported, not raised, so the caller's transaction
/// goes on): its SQLSTATE and message.
#[derive(Debug, thiserror::Error)]
#[error("postgres claim (transaction mode) failed: {sqlstate}: {message}")]
pub(crate) struct ClaimFunctionError {
    pub(crate) sqlstate: String,
    pub(crate) message: String,
}

/// Runs the body in the call's frame: its key is [`current_key`](crate::current_key), and
/// an idem error that reaches it is noted.
pub async fn scope<E, F: std::future::Future>(claim: &mut TxClaim<E>, body: F) -> F::Output {
    let mut body = std::pin::pin!(FRAME.scope(Frame::body(claim.key), body));
    let output = body.as_mut().await;
    claim.saw_idem_error = body
        .take_value()
        .is_some_and(|frame| frame.saw_idem_error());
    output
}

/// Writes the body's outcome over the claim row through the caller's connection (or
/// deletes the row after an `Err` that is not cached), and returns the outcome.
///
/// When the record cannot be written, the call returns [`Error::Store`] or
/// [`Error::Codec`] and the caller's transaction is left aborted, so the body's writes
/// cannot commit without their record: the caller rolls back, and a retry runs the body.
pub async fn finish<R, M1, M2>(
    claim: TxClaim<ErrOf<R, M2>>,
    conn: &mut PgConnection,
    outcome: R,
) -> R
where
    R: IdemResult,
    R::Ok: StoredValue<M1>,
    R::Err: IdemError<M2>,
{
    let outcome = match outcome.into_result() {
        Ok(value) => Ok(value.into_checked()),
        Err(err) => Err(err.into_checked()),
    };
    let encoded = encode_outcome(&claim.errors, &outcome, claim.saw_idem_error);
    let (spec, key) = (claim.spec, claim.key);
    let token = row::token_bytes(claim.token);
    match encoded {
        Ok(Some(value)) => {
            let written = sqlx::query(sql(&claim.sql.get().complete))
                .bind(key.as_bytes().as_slice())
                .bind(token.as_slice())
                .bind(VERSION)
                .bind(claim.fingerprint.as_bytes().as_slice())
                .bind(value.as_slice())
                .bind(row::millis(spec.ttl))
                .execute(&mut *conn)
                .await;
            match written {
                Ok(done) if done.rows_affected() == 1 => {
                    event::emit(spec, &key, Event::Executed);
                    done_outcome::<R, M1, M2>(outcome)
                }
                Ok(_) => {
                    let err = Error::store(
                        "postgres complete (transaction mode): the claim row is gone (forgotten while the body ran)",
                    );
                    fail::<R, M1, M2>(spec, &key, conn, err).await
                }
                // The transaction is aborted already: its writes cannot commit.
                Err(err) => match outcome {
                    // An `Err` is returned as it is (it was an error either way).
                    Err(err) => done_outcome::<R, M1, M2>(Err(err)),
                    Ok(_) => {
                        let err = store_error("complete", err);
                        event::store_error(spec, &key, "complete", &err);
                        done::<R, M1, M2>(Err(idem_error(err)))
                    }
                },
            }
        }
        Ok(None) => {
            // Ignored on failure: a failed statement aborted the transaction, whose
            // rollback removes the claim row with the rest.
            let _ = sqlx::query(sql(&claim.sql.get().release))
                .bind(key.as_bytes().as_slice())
                .bind(token.as_slice())
                .execute(&mut *conn)
                .await;
            event::emit(spec, &key, Event::Released);
            done_outcome::<R, M1, M2>(outcome)
        }
        Err(err) => {
            event::codec_error(spec, &key, &err);
            fail::<R, M1, M2>(spec, &key, conn, err).await
        }
    }
}

fn done_outcome<R, M1, M2>(outcome: Result<OkOf<R, M1>, ErrOf<R, M2>>) -> R
where
    R: IdemResult,
    R::Ok: StoredValue<M1>,
    R::Err: IdemError<M2>,
{
    done::<R, M1, M2>(outcome)
}

/// The record cannot be written: aborts the caller's transaction, so the body's writes
/// cannot commit without it, and returns `err`.
async fn fail<R, M1, M2>(spec: &'static Spec, key: &Key, conn: &mut PgConnection, err: Error) -> R
where
    R: IdemResult,
    R::Ok: StoredValue<M1>,
    R::Err: IdemError<M2>,
{
    event::store_error(spec, key, "complete", &err);
    let _ = sqlx::raw_sql(
        "DO $$BEGIN RAISE EXCEPTION 'idem: the idempotency record could not be written; this transaction must roll back'; END$$",
    )
    .execute(&mut *conn)
    .await;
    done::<R, M1, M2>(Err(idem_error(err)))
}
