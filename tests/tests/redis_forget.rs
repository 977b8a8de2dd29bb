//! Issue 22 B7: what `forget` on a `RedisStore` answers in its three cases: a completed
//! record removed (`true`); a running claim removed, so its holder's result is not stored
//! (`true`, as on every store, and a warning event that says it was a running claim);
//! nothing there (`false`). In its own test binary, since it sets the global subscriber.

use std::sync::Arc;
use std::time::Duration;

use idem_core::store::{Claim, Record, Store};
use idem_core::{KeyHasher, RedisStore};
use tests::redis_server::{RedisServer, redis_available, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_reports_a_record_a_running_claim_and_nothing_apart() {
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
    let store = RedisStore::builder(server.url())
        .prefix(unique("forget"))
        .build()
        .await
        .unwrap();
    let hasher = KeyHasher::unkeyed();
    let fp = hasher.fingerprint(&"payload").unwrap();
    let lease = Duration::from_secs(30);
    let running_claim = |log: &str| log.contains("forget removed a running claim");

    let done = hasher.key(&["tests.forget.v1"], &"done").unwrap();
    let Claim::Claimed { token, .. } = store.claim(&done, &fp, lease).await.unwrap() else {
        panic!("free key");
    };
    let record = Arc::new(Record::new(fp, b"O1".to_vec()));
    assert!(
        store
            .complete(&done, token, record, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(store.forget(&done).await.unwrap(), "a record was removed");
    assert!(!running_claim(&captured.text()), "a record is not a claim");

    let running = hasher.key(&["tests.forget.v1"], &"running").unwrap();
    let Claim::Claimed { token, .. } = store.claim(&running, &fp, lease).await.unwrap() else {
        panic!("free key");
    };
    assert!(store.forget(&running).await.unwrap(), "a claim was removed");
    let log = captured.text();
    assert!(
        running_claim(&log) && log.contains(&running.to_hex()),
        "the running claim is reported as such: {log}"
    );
    // The claim is gone: its holder's result is not stored.
    let record = Arc::new(Record::new(fp, b"O2".to_vec()));
    assert!(
        !store
            .complete(&running, token, record, Duration::from_secs(60))
            .await
            .unwrap()
    );

    let nothing = hasher.key(&["tests.forget.v1"], &"nothing").unwrap();
    assert!(!store.forget(&nothing).await.unwrap());
}
