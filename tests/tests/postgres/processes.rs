//! `PostgresStore` (shared-store mode) across OS processes: each worker is a separate
//! process (`src/bin/idem_pg_worker.rs`) with its own pool, sharing one table.
//!
//! A burst from 4 processes × 25 callers, a later replay, a SIGKILLed holder taken over
//! after its lease (not before), a SIGSTOPped holder fenced after a takeover, and a payload
//! mismatch across processes.

use std::time::{Duration, Instant};

use idem_core::KeyHasher;
use sqlx::{AssertSqlSafe, PgPool, Row};
use tests::postgres::{drop_table, shared_postgres, unique_table};
use tests::redis_server::{
    Worker, burst_across_processes, log_path, read_log, receipts, spawn_worker, unique,
};

const WORKER: &str = env!("CARGO_BIN_EXE_idem_pg_worker");
const LONG: Duration = Duration::from_secs(30);

fn worker(
    target: &str,
    order: &str,
    amount: u64,
    callers: usize,
    body_ms: u64,
    log: &std::path::Path,
) -> Worker {
    spawn_worker(WORKER, target, order, amount, callers, body_ms, log, false)
}

/// The shared server's URL and a fresh table, as the worker's `URL#TABLE` target.
fn target(name: &str) -> Option<(String, String, String)> {
    let url = shared_postgres()?;
    let table = unique_table(name);
    Some((format!("{url}#{table}"), url, table))
}

fn cleanup(url: &str, table: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = PgPool::connect(url).await.unwrap();
        drop_table(&pool, table).await;
    });
}

/// How long the claim on `order` has left, on the server's clock.
fn claim_time_left(url: &str, table: &str, order: &str) -> Duration {
    let key = KeyHasher::unkeyed()
        .key(&["tests.pg_worker.charge.v1"], &order)
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = PgPool::connect(url).await.unwrap();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT value IS NULL, extract(epoch FROM expires_at - clock_timestamp())::float8 FROM \"{table}\" WHERE key = $1"
        )))
        .bind(key.as_bytes().as_slice())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(row.get::<bool, _>(0), "a claim");
        Duration::from_secs_f64(row.get::<f64, _>(1).max(0.0))
    })
}

#[test]
fn processes_times_concurrent_callers_run_the_body_once() {
    let Some((target, url, table)) = target("procs") else {
        return;
    };
    // Creates the table first, so the four workers do not all race to create it.
    worker(&target, &unique("warm"), 1, 1, 1, &log_path("warm")).finish(LONG);
    burst_across_processes(WORKER, &target, 4, 25);
    cleanup(&url, &table);
}

#[test]
fn a_killed_holder_is_taken_over_after_its_lease_not_before() {
    let Some((target, url, table)) = target("kill") else {
        return;
    };
    let order = unique("kill");
    let log = log_path("kill");
    let mut holder = worker(&target, &order, 100, 1, 20_000, &log);
    holder.wait_line("STARTED", LONG).expect("holder started");
    let mut successor = worker(&target, &order, 100, 1, 50, &log);
    successor.wait_line("READY", LONG).expect("successor ready");
    // The holder is alive and renews: 2 leases later the successor is still waiting.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        !successor.has_line("STARTED"),
        "taken over while the holder lived"
    );

    holder.signal("KILL");
    let killed = Instant::now();
    let left = claim_time_left(&url, &table, &order) + killed.elapsed();
    let (started, _) = successor
        .wait_line("STARTED", Duration::from_secs(10))
        .expect("the successor took over");
    let takeover = started.duration_since(killed);
    println!(
        "SIGKILLed holder (lease 1 s): taken over after {takeover:?}; its lease had {left:?} left"
    );
    assert!(
        takeover + Duration::from_millis(50) >= left,
        "taken over {takeover:?} after the kill, before the lease ended ({left:?} left)"
    );
    assert!(
        left >= Duration::from_millis(300),
        "the holder renewed: {left:?} left"
    );
    assert!(
        takeover <= left + Duration::from_millis(1500),
        "took {takeover:?} ({left:?} of lease left)"
    );
    let lines = successor.finish(LONG);
    assert_eq!(receipts(&lines).len(), 1, "{lines:?}");
    assert_eq!(
        read_log(&log).len(),
        2,
        "the killed holder's run and the successor's"
    );
    let _ = std::fs::remove_file(&log);
    cleanup(&url, &table);
}

#[test]
fn a_frozen_holder_resumed_after_a_takeover_cannot_overwrite_the_new_result() {
    let Some((target, url, table)) = target("stop") else {
        return;
    };
    let order = unique("stop");
    let log = log_path("stop");
    let mut frozen = worker(&target, &order, 100, 1, 1500, &log);
    frozen.wait_line("STARTED", LONG).expect("holder started");
    frozen.signal("STOP");
    // Past its lease (1 s), with no renewal possible.
    std::thread::sleep(Duration::from_millis(1300));

    let successor = worker(&target, &order, 100, 1, 50, &log).finish(LONG);
    let new = receipts(&successor);
    assert_eq!(new.len(), 1, "the successor took over: {successor:?}");

    frozen.signal("CONT");
    let resumed = frozen.finish(LONG);
    let old = receipts(&resumed);
    // A side effect that ran is never reported as failed: the frozen caller gets its own
    // result, but it is not stored.
    assert_eq!(old.len(), 1, "{resumed:?}");
    assert_ne!(old, new);

    let later = worker(&target, &order, 100, 1, 50, &log).finish(LONG);
    assert_eq!(receipts(&later), new, "the successor's record stands");
    assert_eq!(read_log(&log).len(), 2);
    let _ = std::fs::remove_file(&log);
    cleanup(&url, &table);
}

#[test]
fn a_payload_mismatch_across_processes_is_refused_and_identical_payloads_replay() {
    let Some((target, url, table)) = target("mismatch") else {
        return;
    };
    let order = unique("mismatch");
    let log = log_path("mismatch");
    let first = receipts(&worker(&target, &order, 100, 1, 10, &log).finish(LONG));
    assert_eq!(first.len(), 1);
    let other = worker(&target, &order, 200, 3, 10, &log).finish(LONG);
    assert_eq!(
        other
            .iter()
            .filter(|l| l.starts_with("ERR PayloadMismatch"))
            .count(),
        3,
        "{other:?}"
    );
    let same = receipts(&worker(&target, &order, 100, 3, 10, &log).finish(LONG));
    assert_eq!(same, vec![first[0].clone(); 3], "identical payloads replay");
    assert_eq!(read_log(&log).len(), 1);
    let _ = std::fs::remove_file(&log);
    cleanup(&url, &table);
}
