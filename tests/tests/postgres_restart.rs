//! A PostgreSQL restart (`pg_ctl restart -m fast` on a private cluster) while the store's
//! pool holds idle connections: every one of them is broken (the server sent FATAL
//! 57P01), and the calls after the restart go on: at most one of the first 15 fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use idem_core::{PostgresStore, SharedStore, idempotent};
use tests::postgres::PrivateCluster;

struct Ctx {
    store: SharedStore,
    runs: AtomicUsize,
}

#[idempotent(name = "tests.pg_restart.charge.v1", skip(ctx), store = &ctx.store)]
async fn charge(order: u64, ctx: &Ctx) -> Result<u64, idem_core::Error> {
    ctx.runs.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(order * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_at_most_one_of_the_first_fifteen_calls_fails() {
    let Some(cluster) = PrivateCluster::start("restart") else {
        return;
    };
    let store = PostgresStore::builder(cluster.url().as_str())
        .purge_interval(None)
        .build()
        .await
        .unwrap();
    let ctx = Arc::new(Ctx {
        store: SharedStore::new(store.clone()),
        runs: AtomicUsize::new(0),
    });
    // Warm the pool: concurrent calls open several connections, left idle afterwards.
    let mut warm = tokio::task::JoinSet::new();
    for order in 0..30 {
        let ctx = Arc::clone(&ctx);
        warm.spawn(async move { charge(order, &ctx).await.unwrap() });
    }
    while warm.join_next().await.is_some() {}
    let idle = store.pool().num_idle();
    println!("idle connections before the restart: {idle}");
    assert!(idle >= 5, "the pool is warm: {idle}");

    cluster.restart_fast();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut failed = Vec::new();
    for order in 1000..1015 {
        if let Err(err) = charge(order, &ctx).await {
            failed.push((order, tests::chain(&err)));
        }
    }
    println!("failed after the restart: {failed:#?}");
    assert!(
        failed.len() <= 1,
        "{} of 15 failed: {failed:#?}",
        failed.len()
    );
    // And each call replays afterwards (the ones that ran stored their record).
    let runs = ctx.runs.load(SeqCst);
    for order in 1000..1015 {
        if failed.iter().all(|(o, _)| *o != order) {
            assert_eq!(charge(order, &ctx).await.unwrap(), order * 10);
        }
    }
    assert_eq!(ctx.runs.load(SeqCst), runs, "replays, no reruns");
}
