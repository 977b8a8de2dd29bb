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
