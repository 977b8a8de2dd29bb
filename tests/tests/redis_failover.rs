//! `RedisStore::builder(..).wait_for_replicas(n, timeout)` through a real failover: a
//! local primary and a replica (`redis-server --replicaof`), the primary killed with
//! SIGKILL, the replica promoted (`REPLICAOF NO ONE`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_core::store::{Claim, Record, Store};
use idem_core::{Error, KeyHasher, RedisStore};
use tests::chain;
use tests::redis_server::{RedisServer, redis_available, unique};

const LEASE: Duration = Duration::from_secs(30);

fn key(id: &str) -> idem_core::Key {
    KeyHasher::unkeyed()
        .key(&["tests.failover.v1"], &id)
        .unwrap()
}

fn fingerprint() -> idem_core::Fingerprint {
    KeyHasher::unkeyed().fingerprint(&"payload").unwrap()
}

/// A primary and its replica, in sync.
fn pair() -> Option<(RedisServer, RedisServer)> {
    if !redis_available() {
        return None;
    }
    let primary = RedisServer::spawn();
    let replica = RedisServer::spawn_replica_of(&primary);
    Some((primary, replica))
}

/// Makes the replica a primary, as a failover does.
fn promote(replica: &RedisServer) {
    replica.command(&["REPLICAOF", "NO", "ONE"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !replica
        .command(&["INFO", "replication"])
        .is_some_and(|info| info.contains("role:master"))
    {
        assert!(Instant::now() < deadline, "the replica was not promoted");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Cuts the replica off before the next write: it is frozen (SIGSTOP, so it cannot
/// reconnect) and the primary drops its link, so what the primary acknowledges next
/// reaches no replica.
fn cut_off(primary: &RedisServer, replica: &RedisServer) {
    replica.signal("STOP");
    primary
        .command(&["CLIENT", "KILL", "TYPE", "replica"])
        .unwrap();
}

async fn store(url: &str, prefix: &str, replicas: Option<Duration>) -> RedisStore {
    let builder = RedisStore::builder(url).prefix(prefix);
    let builder = match replicas {
        Some(timeout) => builder.wait_for_replicas(1, timeout),
        None => builder,
    };
    builder.build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_for_replicas_a_claim_and_a_record_survive_a_failover() {
    let Some((mut primary, replica)) = pair() else {
        return;
    };
    let prefix = unique("failover");
    let before = store(&primary.url(), &prefix, Some(Duration::from_secs(1))).await;
    let fp = fingerprint();

    let running = key("running");
    assert!(matches!(
        before.claim(&running, &fp, LEASE).await.unwrap(),
        Claim::Claimed { .. }
    ));
    let done = key("done");
    let Claim::Claimed { token, .. } = before.claim(&done, &fp, LEASE).await.unwrap() else {
        panic!("a free key is claimed");
    };
    let record = Arc::new(Record::new(fp, b"O\"receipt\"".to_vec()));
    assert!(
        before
            .complete(&done, token, Arc::clone(&record), Duration::from_secs(60))
            .await
            .unwrap()
    );

    primary.stop(); // SIGKILL, right after the acknowledgements
    promote(&replica);
    let after = store(&replica.url(), &prefix, None).await;
    assert!(
        matches!(
            after.claim(&running, &fp, LEASE).await.unwrap(),
            Claim::InProgress(_)
        ),
        "the claim survived: a retry waits instead of running the body again"
    );
    match after.claim(&done, &fp, LEASE).await.unwrap() {
        Claim::Completed(found) => assert_eq!(*found, *record),
        other => panic!("the completed record survived, got {other:?}"),
    }
}

/// The loss the README describes, made deterministic: the primary acknowledges a claim
/// it never replicated, dies, and the promoted replica has no claim, so the body would
/// run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_it_a_claim_the_primary_did_not_replicate_is_lost_on_failover() {
    let Some((mut primary, replica)) = pair() else {
        return;
    };
    let prefix = unique("failover-lost");
    let before = store(&primary.url(), &prefix, None).await;
    let fp = fingerprint();
    let running = key("lost");

    cut_off(&primary, &replica);
    assert!(matches!(
        before.claim(&running, &fp, LEASE).await.unwrap(),
        Claim::Claimed { .. }
    ));
    primary.stop();
    replica.signal("CONT");
    promote(&replica);

    let after = store(&replica.url(), &prefix, None).await;
    assert!(
        matches!(
            after.claim(&running, &fp, LEASE).await.unwrap(),
            Claim::Claimed { .. }
        ),
        "the acknowledged claim was lost: a second caller claims the key and runs the body"
    );
}

/// With the setting, a claim no replica acknowledged fails closed within the timeout, and
/// is released, so the body does not run on a claim a failover could lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_it_an_unacknowledged_claim_fails_closed_and_is_released() {
    let Some((primary, replica)) = pair() else {
        return;
    };
    let prefix = unique("failover-closed");
    let timeout = Duration::from_millis(200);
    let waiting = store(&primary.url(), &prefix, Some(timeout)).await;
    let fp = fingerprint();
    let running = key("unacknowledged");

    cut_off(&primary, &replica);
    let started = Instant::now();
    let err = waiting.claim(&running, &fp, LEASE).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(
        chain(&err).contains("acknowledged by 0 of 1 replicas"),
        "{}",
        chain(&err)
    );
    assert!(
        took >= timeout && took < Duration::from_secs(2),
        "took {took:?}"
    );
    // Released on the primary: the next caller (here without the setting) claims it.
    let plain = store(&primary.url(), &prefix, None).await;
    assert!(matches!(
        plain.claim(&running, &fp, LEASE).await.unwrap(),
        Claim::Claimed { .. }
    ));
    replica.signal("CONT");
}

/// Issue 22 A1: a `WAIT` that outlasts the response timeout (here 4 s against 1 s, and
/// `Duration::MAX`) never blocks the store's other calls, and the claim it timed out is
/// released. Before the fix `WAIT` ran on the one shared connection: the first call failed
/// after the operation bound with its claim still held, and every other call on the store
/// failed behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_never_blocks_other_calls_and_its_timed_out_claim_is_released() {
    if !redis_available() {
        return;
    }
    let server = RedisServer::spawn(); // no replica: every `WAIT` runs to its timeout
    let prefix = unique("wait-long");
    let fp = fingerprint();
    // A completed record, written by a store without the setting.
    let plain = store(&server.url(), &prefix, None).await;
    let done = key("done-before");
    let Claim::Claimed { token, .. } = plain.claim(&done, &fp, LEASE).await.unwrap() else {
        panic!("a free key is claimed");
    };
    let record = Arc::new(Record::new(fp, b"O\"receipt\"".to_vec()));
    assert!(
        plain
            .complete(&done, token, Arc::clone(&record), Duration::from_secs(60))
            .await
            .unwrap()
    );

    for timeout in [Duration::from_secs(4), Duration::MAX] {
        let waiting = store(&server.url(), &prefix, Some(timeout)).await;
        let running = key(&format!("waiting-{timeout:?}"));
        let first = {
            let waiting = waiting.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = waiting.claim(&running, &fingerprint(), LEASE).await;
                (result, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Meanwhile replays on the same store answer at once.
        for _ in 0..3 {
            let started = Instant::now();
            match waiting.claim(&done, &fp, LEASE).await {
                Ok(Claim::Completed(found)) => assert_eq!(*found, *record),
                other => panic!("{timeout:?}: a replay during a WAIT got {other:?}"),
            }
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "{timeout:?}: a replay waited behind the WAIT: {took:?}"
            );
        }
        if timeout == Duration::MAX {
            // No end: the waiting call is the only one that waits; the store stays usable.
            assert!(!first.is_finished());
            first.abort();
            continue;
        }
        let (result, took) = first.await.unwrap();
        let err = result.unwrap_err();
        assert!(
            chain(&err).contains("acknowledged by 0 of 1 replicas"),
            "{}",
            chain(&err)
        );
        assert!(took >= timeout, "failed before its WAIT ended: {took:?}");
        // The timed-out claim was released: the key is free.
        let pttl = server
            .command(&["PTTL", &plain.redis_key(&running)])
            .unwrap();
        assert_eq!(pttl.trim(), ":-2", "the timed-out claim is still held");
    }
}
