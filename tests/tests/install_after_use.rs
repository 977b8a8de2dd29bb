//! Installing a store after the default store was already used is an error, so records
//! are never split across two stores. In its own test binary.

use idem_core::{MokaStore, idempotent};
use tests::TestError;

#[idempotent]
async fn early(id: u32) -> Result<u32, TestError> {
    Ok(id)
}

#[tokio::test]
async fn install_after_the_default_was_used_is_an_error() {
    assert_eq!(early(1).await, Ok(1));
    let late = idem_core::install(MokaStore::new()).unwrap_err();
    assert!(
        late.to_string()
            .starts_with("idem's default store is already installed"),
        "{late}"
    );
    // The key hasher follows the same rule.
    let hasher =
        idem_core::install_key_hasher(idem_core::KeyHasher::keyed("too late")).unwrap_err();
    assert!(
        hasher
            .to_string()
            .starts_with("idem's default key hasher is already installed"),
        "{hasher}"
    );
    // The first store stays: the record of the early call is still replayed from it.
    let key = idem_core::key_hasher().key_from_fingerprint(
        &[concat!(module_path!(), "::early")],
        &idem_core::key_hasher().fingerprint(&(&1u32,)).unwrap(),
    );
    assert!(
        idem_core::forget(&key).await.unwrap(),
        "the early call's record is in the default store"
    );
}
