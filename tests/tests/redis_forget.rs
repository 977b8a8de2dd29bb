//! Issue 22 B7: what `forget` on a `RedisStore` answers in its three cases: a completed
//! record removed (`true`); a running claim removed, so its holder's result is not stored
//! (`false`: there was no record, and a warning event says a claim was removed); nothing
//! there (`false`).

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
    let server = RedisServer::spawn();
    let store = RedisStore::builder(server.url())
        .prefix(unique("forget"))
        .build()
        .await
        .unwrap();
    let hasher = KeyHasher::unkeyed();
    let fp = hasher.fingerprint(&"payload").unwrap();
    let lease = Duration::from_secs(30);

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

    let running = hasher.key(&["tests.forget.v1"], &"running").unwrap();
    let Claim::Claimed { token, .. } = store.claim(&running, &fp, lease).await.unwrap() else {
        panic!("free key");
    };
    assert!(
        !store.forget(&running).await.unwrap(),
        "a running claim is not a record"
    );
    // The claim is gone all the same: its holder's result is not stored.
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
