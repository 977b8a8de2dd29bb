//! `idem_core::install` sets the default store once; a second install is an error. In its
//! own test binary, since it sets the process default store.

use std::time::Duration;

use idem_core::{MokaStore, idempotent};
use tests::TestError;

#[idempotent]
async fn counted(id: u32) -> Result<u32, TestError> {
    Ok(id)
}

#[tokio::test]
async fn install_twice_is_an_error_and_the_first_store_stays() {
    let mine = MokaStore::new();
    idem_core::install(mine).expect("the first install succeeds");
    let second = idem_core::install(MokaStore::new()).unwrap_err();
    assert_eq!(
        second.to_string(),
        "idem's default store is already installed or already in use; \
         install it once, before the first idempotent call"
    );

    // Calls use the installed store: its record is visible through the default store.
    assert_eq!(counted(5).await, Ok(5));
    let key = idem_core::key_hasher().key_from_fingerprint(
        &[concat!(module_path!(), "::counted")],
        &idem_core::key_hasher().fingerprint(&(&5u32,)).unwrap(),
    );
    let store = idem_core::default_store().unwrap();
    let fp = idem_core::key_hasher().fingerprint(&(&5u32,)).unwrap();
    let claim = store
        .store()
        .claim(&key, &fp, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        matches!(claim, idem_core::store::Claim::Completed(_)),
        "{claim:?}"
    );
}
