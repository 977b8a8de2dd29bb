//! `RedisStore` on a real local Redis Cluster (feature `redis-cluster`): three
//! `redis-server --cluster-enabled yes` nodes on free loopback ports, joined with
//! `redis-cli --cluster create`, started and torn down by the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use idem_core::{RedisStore, SharedStore, idempotent};
use tests::redis_server::{RedisCluster, burst_across_processes, redis_available, unique};
use tests::{IdemKind, TestError};

const WORKER: &str = env!("CARGO_BIN_EXE_idem_redis_worker");

struct Ctx {
    store: SharedStore,
    runs: Arc<AtomicUsize>,
}

#[idempotent(key = "id", name = "tests.cluster.charge.v1", lease = "2s", wait = "10s", skip(ctx), store = &ctx.store)]
async fn charge(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(format!("receipt-{id}-{amount}-run{run}"))
}

#[test]
fn a_local_three_node_cluster_passes_concurrency_and_replay() {
    if !redis_available() {
        return;
    }
    let cluster = RedisCluster::spawn();
    let urls = cluster.urls();

    // Several OS processes, each with many callers, on one key: one execution.
    burst_across_processes(WORKER, &urls.join(","), 3, 20);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let prefix = unique("cluster");
        let store = |prefix: String| {
            let urls = urls.clone();
            async move {
                RedisStore::cluster_builder(urls)
                    .prefix(prefix)
                    .build()
                    .await
                    .unwrap()
            }
        };
        let runs = Arc::new(AtomicUsize::new(0));
        // Two stores (two connections, no shared single-flight) play two processes.
        let a = Arc::new(Ctx {
            store: SharedStore::new(store(prefix.clone()).await),
            runs: Arc::clone(&runs),
        });
        let b = Arc::new(Ctx {
            store: SharedStore::new(store(prefix.clone()).await),
            runs: Arc::clone(&runs),
        });

        // Many keys, spread over every node's slots: each runs once and replays.
        let mut first = Vec::new();
        for i in 0..40 {
            first.push(charge(format!("key-{i}"), i, &a).await.unwrap());
        }
        for i in 0..40 {
            assert_eq!(
                charge(format!("key-{i}"), i, &b).await.unwrap(),
                first[i as usize]
            );
        }
        assert_eq!(runs.load(SeqCst), 40);
        assert_eq!(
            charge("key-0".into(), 999, &b).await,
            Err(TestError::Idem(IdemKind::PayloadMismatch))
        );

        // Concurrent callers through both connections on one key.
        let callers: Vec<_> = (0..100)
            .map(|i| {
                let ctx = Arc::clone(if i % 2 == 0 { &a } else { &b });
                tokio::spawn(async move { charge("hot".into(), 1, &ctx).await })
            })
            .collect();
        let mut results = Vec::new();
        for caller in callers {
            results.push(caller.await.unwrap().unwrap());
        }
        assert!(results.iter().all(|r| *r == results[0]));
        assert_eq!(runs.load(SeqCst), 41);
    });

    let with_keys = cluster
        .nodes()
        .iter()
        .filter(|n| {
            n.command(&["DBSIZE"])
                .and_then(|r| r.trim().trim_start_matches(':').parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
        .count();
    assert!(
        with_keys >= 2,
        "records spread over the nodes ({with_keys} had keys)"
    );
}

/// Counts body runs per key, to show that none ran twice.
struct Counted {
    store: SharedStore,
    runs: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

#[idempotent(key = "id", name = "tests.cluster.migrate.v1", lease = "5s", wait = "10s", skip(ctx), store = &ctx.store)]
async fn counted(id: String, ctx: &Counted) -> Result<String, TestError> {
    let run = {
        let mut runs = ctx.runs.lock().unwrap();
        let n = runs.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(format!("{id}-run{run}"))
}

/// A routine online migration of 3000 slots (`redis-cli --cluster reshard`) while two
/// stores with one prefix keep calling, four callers per key: the stores follow `ASK` and
/// `MOVED`, no body runs twice, and afterwards both stores answer at once (no store stuck
/// on a stale slot map or a broken connection).
#[test]
fn a_slot_migration_under_load_is_followed_and_no_body_runs_twice() {
    if !redis_available() {
        return;
    }
    let cluster = RedisCluster::spawn();
    let urls = cluster.urls();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let prefix = unique("migrate");
        let runs = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let mut stores = Vec::new();
        for _ in 0..2 {
            let store = RedisStore::cluster_builder(urls.clone())
                .prefix(prefix.clone())
                .build()
                .await
                .unwrap();
            stores.push(Arc::new(Counted {
                store: SharedStore::new(store),
                runs: Arc::clone(&runs),
            }));
        }
        // Four callers per key, two through each store.
        let round = |ids: Vec<String>| {
            let stores = stores.clone();
            async move {
                let mut calls = Vec::new();
                for id in &ids {
                    for i in 0..4 {
                        let ctx = Arc::clone(&stores[i % 2]);
                        let id = id.clone();
                        calls.push(tokio::spawn(async move {
                            (id.clone(), counted(id, &ctx).await)
                        }));
                    }
                }
                let mut out = Vec::new();
                for call in calls {
                    out.push(call.await.unwrap());
                }
                out
            }
        };
        let mut results: std::collections::HashMap<String, String> = Default::default();
        // Keeps each key's first result and checks every later one against it.
        fn record(
            results: &mut std::collections::HashMap<String, String>,
            out: Vec<(String, Result<String, TestError>)>,
            failed: &mut usize,
        ) {
            for (id, result) in out {
                match result {
                    Ok(value) => {
                        let first = results.entry(id.clone()).or_insert(value.clone());
                        assert_eq!(*first, value, "{id}: every caller gets one result");
                    }
                    Err(_) => *failed += 1,
                }
            }
        }

        // Records on every node before the migration, so keys move with the slots: 2,000 of
        // them, so a slot holds keys long enough to answer `ASK`. (With 200 keys and 16 a
        // round, the pre-#7 store passed this test; as written, it failed 9 runs of 9: a
        // waiting duplicate ran a body a second time, or the store still failed every call
        // 15 s after the migration.)
        let mut failed = 0;
        let warm: Vec<String> = (0..2000).map(|i| format!("warm-{i}")).collect();
        // In rounds of 250 keys: one burst of 8,000 calls would outlast the store's 1 s
        // response bound on a loaded machine, which is not what this test is about.
        for chunk in warm.chunks(250) {
            record(&mut results, round(chunk.to_vec()).await, &mut failed);
        }
        assert_eq!(failed, 0);

        let started = std::time::Instant::now();
        let mut reshard = cluster.start_reshard(0, 1, 3000);
        let mut rounds = 0;
        let mut during = 0;
        loop {
            if let Some(status) = reshard.try_wait().unwrap() {
                assert!(status.success(), "redis-cli --cluster reshard failed");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the reshard did not finish"
            );
            // New keys, and replays of the warm keys whose slots are moving.
            let mut ids: Vec<String> = (0..64).map(|i| format!("new-{rounds}-{i}")).collect();
            ids.extend((0..64).map(|i| warm[(rounds * 64 + i) % warm.len()].clone()));
            record(&mut results, round(ids).await, &mut during);
            rounds += 1;
        }
        let migrated = started.elapsed();

        // Afterwards: both stores serve every call again within a few seconds. (A store
        // whose cluster connection got stuck fails its calls closed until it has replaced
        // the connection.)
        let after = std::time::Instant::now();
        let mut failed_after = 0;
        let mut pass = 0;
        loop {
            let mut failed = 0;
            let mut ids: Vec<String> = (0..50).map(|i| format!("after-{pass}-{i}")).collect();
            ids.extend(warm.iter().skip(pass * 50 % warm.len()).take(50).cloned());
            record(&mut results, round(ids).await, &mut failed);
            failed_after += failed;
            pass += 1;
            if failed == 0 {
                break;
            }
            // Seconds, not minutes: a store stuck on its old connection failed for minutes
            // (issue #7 A7). Recovery took 0.06-5.3 s in six runs here.
            assert!(
                after.elapsed() < Duration::from_secs(15),
                "still failing {:?} after the migration",
                after.elapsed()
            );
        }
        let recovered = after.elapsed();
        println!(
            "reshard of 3000 slots took {migrated:?}: {rounds} rounds, {during} calls failed \
             closed during it; {failed_after} failed after it; every call succeeded again \
             {recovered:?} after it"
        );

        // Every key ran at most once, and replays what it stored, from both stores.
        let twice: Vec<_> = runs
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| format!("{id}: {n} runs"))
            .collect();
        assert!(twice.is_empty(), "bodies ran twice: {twice:?}");
        for (id, value) in results.iter().take(50) {
            for ctx in &stores {
                assert_eq!(&counted(id.clone(), ctx).await.unwrap(), value);
            }
        }

        // Broken connections: every node drops its clients. The stores reconnect by
        // themselves; within two seconds every call succeeds again.
        for node in cluster.nodes() {
            node.command(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
        }
        let killed = std::time::Instant::now();
        let ids: Vec<String> = results.keys().take(20).cloned().collect();
        loop {
            let mut failed = 0;
            record(&mut results, round(ids.clone()).await, &mut failed);
            if failed == 0 {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(2),
                "still failing {:?} after the connections broke",
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("back {:?} after every connection broke", killed.elapsed());
        assert!(runs.lock().unwrap().values().all(|n| *n == 1));
    });
}
