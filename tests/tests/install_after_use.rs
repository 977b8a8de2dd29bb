//! Installing a store after the default store was already used is an error, so records
//! are never split across two stores. In its own test binary.

use idem_core::{Error, MokaStore, idempotent};
use tests::TestError;

#[idempotent]
async fn early(id: u32) -> Result<u32, TestError> {
    Ok(id)
}

#[tokio::test]
async fn install_after_the_default_was_used_is_an_error() {
    assert_eq!(early(1).await, Ok(1));
    let late = idem_core::install(MokaStore::new());
    assert!(
        matches!(late, Err(Error::AlreadyInstalled("store"))),
        "{late:?}"
    );
    // The key hasher follows the same rule.
    let hasher = idem_core::install_key_hasher(idem_core::KeyHasher::keyed("too late"));
    assert!(
        matches!(hasher, Err(Error::AlreadyInstalled("key hasher"))),
        "{hasher:?}"
    );
}
