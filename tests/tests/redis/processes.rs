//! `RedisStore` across OS processes: each worker is a separate process
//! (`src/bin/idem_redis_worker.rs`) with its own connection, sharing one Redis.
//!
//! Bursts, a later replay, a SIGKILLed holder taken over after its lease (not before), a
//! SIGSTOPped holder fenced after a takeover, payload mismatch across processes.

use std::time::{Duration, Instant};

use idem_core::KeyHasher;

use tests::redis_server::{
    Worker, burst_across_processes, log_path, read_log, receipts, shared_redis, spawn_worker,
    unique,
};

const WORKER: &str = env!("CARGO_BIN_EXE_idem_redis_worker");

fn worker(
    url: &str,
    order: &str,
    amount: u64,
    callers: usize,
    body_ms: u64,
    log: &std::path::Path,
    wait_go: bool,
) -> Worker {
    spawn_worker(WORKER, url, order, amount, callers, body_ms, log, wait_go)
}

const LONG: Duration = Duration::from_secs(30);

/// How long the claim on `order` has left, read from Redis: a claim's expiry (`PTTL`) is
/// its lease.
fn claim_time_left(url: &str, order: &str) -> Duration {
    let key = KeyHasher::unkeyed()
        .key(&["tests.worker.charge.v1"], &order)
        .unwrap();
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let (value, pttl): (Vec<u8>, i64) = redis::pipe()
        .cmd("GET")
        .arg(format!("idem:{key}"))
        .cmd("PTTL")
        .arg(format!("idem:{key}"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(value[0], b'C', "a claim");
    assert!(pttl > 0, "a claim expires by itself: PTTL {pttl}");
    Duration::from_millis(pttl as u64)
}

#[test]
fn processes_times_concurrent_callers_run_the_body_once() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    burst_across_processes(WORKER, &url, 4, 25);
}

#[test]
fn a_killed_holder_is_taken_over_after_its_lease_not_before() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let order = unique("kill");
    let log = log_path("kill");
    let mut holder = worker(&url, &order, 100, 1, 20_000, &log, false);
    holder.wait_line("STARTED", LONG).expect("holder started");
    let mut successor = worker(&url, &order, 100, 1, 50, &log, false);
    successor.wait_line("READY", LONG).expect("successor ready");
    // The holder is alive and renews: 2 leases later the successor is still waiting.
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        !successor.has_line("STARTED"),
        "taken over while the holder lived"
    );

    holder.signal("KILL");
    let killed = Instant::now();
    // The dead holder's claim no longer changes: its expiry, on the server's clock, tells
    // how much of the lease was left at the kill.
    let left = claim_time_left(&url, &order) + killed.elapsed();
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
}

#[test]
fn a_frozen_holder_resumed_after_a_takeover_cannot_overwrite_the_new_result() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let order = unique("stop");
    let log = log_path("stop");
    let mut frozen = worker(&url, &order, 100, 1, 1500, &log, false);
    frozen.wait_line("STARTED", LONG).expect("holder started");
    frozen.signal("STOP");
    // Past its lease (1 s), with no renewal possible.
    std::thread::sleep(Duration::from_millis(1300));

    let successor = worker(&url, &order, 100, 1, 50, &log, false).finish(LONG);
    let new = receipts(&successor);
    assert_eq!(new.len(), 1, "the successor took over: {successor:?}");

    frozen.signal("CONT");
    let resumed = frozen.finish(LONG);
    let old = receipts(&resumed);
    // A side effect that ran is never reported as failed: the frozen caller gets its own
    // result, but it is not stored.
    assert_eq!(old.len(), 1, "{resumed:?}");
    assert_ne!(old, new);

    let later = worker(&url, &order, 100, 1, 50, &log, false).finish(LONG);
    assert_eq!(receipts(&later), new, "the successor's record stands");
    assert_eq!(read_log(&log).len(), 2);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_payload_mismatch_across_processes_is_refused_and_identical_payloads_replay() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let order = unique("mismatch");
    let log = log_path("mismatch");
    let first = receipts(&worker(&url, &order, 100, 1, 10, &log, false).finish(LONG));
    assert_eq!(first.len(), 1);
    let other = worker(&url, &order, 200, 3, 10, &log, false).finish(LONG);
    assert_eq!(
        other
            .iter()
            .filter(|l| l.starts_with("ERR PayloadMismatch"))
            .count(),
        3,
        "{other:?}"
    );
    let same = receipts(&worker(&url, &order, 100, 3, 10, &log, false).finish(LONG));
    assert_eq!(same, vec![first[0].clone(); 3], "identical payloads replay");
    assert_eq!(read_log(&log).len(), 1);
    let _ = std::fs::remove_file(&log);
}
