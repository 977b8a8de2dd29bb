//! Every line idem logs is under the target `idem` (one filter directive selects them
//! all), and an error in it carries its source chain: an idem error's own message names
//! only its kind. Against its own `redis-server`, which the test stops. In its own test
//! binary, since it sets the global subscriber.

use std::sync::Mutex;

use idem_core::{RedisStore, SharedStore, idempotent};
use tests::redis_server::{RedisServer, redis_available};
use tests::{IdemKind, TestError};

struct Ctx {
    store: SharedStore,
    server: Mutex<RedisServer>,
}

/// Stops the store's server, then fails: idem cannot release the claim.
#[idempotent(key = "id", name = "tests.log_targets.stop_then_fail.v1", skip(ctx), store = &ctx.store)]
async fn stop_then_fail(id: u64, ctx: &Ctx) -> Result<u64, TestError> {
    ctx.server.lock().unwrap().stop();
    Err(TestError::Body(format!("failed {id}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_and_errors_are_under_target_idem_with_their_chain() {
    if !redis_available() {
        return;
    }
    let captured = tests::CapturedLog::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let server = RedisServer::spawn();
    let ctx = Ctx {
        store: SharedStore::new(RedisStore::connect(&server.url()).await.unwrap()),
        server: Mutex::new(server),
    };

    // The body stops Redis, then fails: the release fails (a warning).
    assert_eq!(
        stop_then_fail(1, &ctx).await,
        Err(TestError::Body("failed 1".into()))
    );
    // Redis is down: the next claim fails (an error event).
    assert_eq!(
        stop_then_fail(2, &ctx).await,
        Err(TestError::Idem(IdemKind::Store))
    );

    let log = captured.text();
    println!("{log}");
    let release = log
        .lines()
        .find(|line| line.contains("could not release a claim"))
        .unwrap_or_else(|| panic!("a release warning:\n{log}"));
    assert!(release.contains("WARN idem:"), "{release}");
    assert!(
        release.contains("error=idempotency store failed: redis release on "),
        "the warning carries the chain: {release}"
    );
    let claim = log
        .lines()
        .find(|line| line.contains("outcome=\"store_error\""))
        .unwrap_or_else(|| panic!("a store_error event:\n{log}"));
    assert!(claim.contains("ERROR idem:"), "{claim}");
    assert!(
        claim.contains("error=idempotency store failed: redis claim on "),
        "the event carries the chain: {claim}"
    );
}
