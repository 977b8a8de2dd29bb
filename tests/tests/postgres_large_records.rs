//! Large records in `PostgresStore`: an outcome over `max_record_bytes` is returned to its
//! caller and stored as a marker a retry reads as a codec error (never a rerun), and a
//! `complete` whose reply timed out is never uploaded a second time beside the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use idem_core::store::{Claim, Record, Store};
use idem_core::{Error, Fingerprint, KeyHasher, PostgresStore, SharedStore, idempotent};
use sqlx::{AssertSqlSafe, PgPool, Row};
use tests::postgres::{drop_table, shared_postgres, unique_table};

struct Ctx {
    store: SharedStore,
    runs: AtomicUsize,
}

#[idempotent(name = "tests.pg_large.report.v1", skip(ctx), store = &ctx.store)]
async fn report(id: u64, bytes: usize, ctx: &Ctx) -> Result<String, Error> {
    ctx.runs.fetch_add(1, SeqCst);
    Ok(format!("{id}:{}", "x".repeat(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_over_max_record_bytes_is_returned_and_a_retry_gets_a_codec_error() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let table = unique_table("large");
    let store = PostgresStore::builder(url.as_str())
        .table(table.as_str())
        .max_record_bytes(1024)
        .purge_interval(None)
        .build()
        .await
        .unwrap();
    let ctx = Ctx {
        store: SharedStore::new(store.clone()),
        runs: AtomicUsize::new(0),
    };
    let (first, outcome) = idem_core::observe(report(1, 4096, &ctx)).await;
    assert_eq!(first.unwrap().len(), 4098, "the caller gets its result");
    assert_eq!(outcome, Some(idem_core::Outcome::Executed));
    let retry = report(1, 4096, &ctx).await.unwrap_err();
    let message = tests::chain(&retry);
    assert!(matches!(retry, Error::Codec(_)), "{message}");
    assert!(message.contains("max_record_bytes"), "{message}");
    assert_eq!(ctx.runs.load(SeqCst), 1, "never a second run");
    // A small outcome is stored and replays as before.
    let small = report(2, 10, &ctx).await.unwrap();
    assert_eq!(report(2, 10, &ctx).await.unwrap(), small);
    assert_eq!(ctx.runs.load(SeqCst), 2);
    let stored: i64 = sqlx::query(AssertSqlSafe(format!(
        "SELECT max(length(value))::int8 FROM \"{table}\""
    )))
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get(0);
    assert!(stored < 1024, "the large value was not written: {stored}");
    drop_table(store.pool(), &table).await;
}

/// The server takes 2 s over each `complete` (a trigger sleeps, as a large upload would):
/// the first try's reply times out; a second try while the first still runs joins it
/// instead of sending the record again, and a third after it finished reads it as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_complete_never_uploads_beside_the_first_try() {
    let Some(url) = shared_postgres() else {
        return;
    };
    let table = unique_table("upload");
    let store = PostgresStore::builder(url.as_str())
        .table(table.as_str())
        .response_timeout(Duration::from_millis(100))
        .purge_interval(None)
        .build()
        .await
        .unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE FUNCTION \"{table}_slow\"() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(2); RETURN NEW; END$$;
         CREATE TRIGGER slow BEFORE UPDATE ON \"{table}\" FOR EACH ROW EXECUTE FUNCTION \"{table}_slow\"();"
    )))
    .execute(&pool)
    .await
    .unwrap();

    let key = KeyHasher::unkeyed()
        .key(&["tests.pg_large"], &"upload")
        .unwrap();
    let fingerprint = Fingerprint::from_bytes([7; 32]);
    let Claim::Claimed { token, .. } = store
        .claim(&key, &fingerprint, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("a fresh key is claimed");
    };
    let record = Arc::new(Record::new(fingerprint, b"O\"done\"".to_vec()));
    let first = store
        .complete(&key, token, Arc::clone(&record), Duration::from_secs(60))
        .await;
    assert!(first.is_err(), "the first reply timed out: {first:?}");
    let second = store
        .complete(&key, token, Arc::clone(&record), Duration::from_secs(60))
        .await;
    assert!(second.is_err(), "the first try still runs: {second:?}");
    let uploads: i64 = sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%UPDATE \"{table}\" SET version%'"
    )))
    .fetch_one(&pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(uploads, 1, "one upload of the record at a time");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let third = store
        .complete(&key, token, Arc::clone(&record), Duration::from_secs(60))
        .await;
    assert!(
        matches!(third, Ok(true)),
        "the first try completed it: {third:?}"
    );
    let claim = store
        .claim(&key, &fingerprint, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Completed(_)), "{claim:?}");
    drop_table(&pool, &table).await;
    let _ = sqlx::query(AssertSqlSafe(format!(
        "DROP FUNCTION IF EXISTS \"{table}_slow\"()"
    )))
    .execute(&pool)
    .await;
}
