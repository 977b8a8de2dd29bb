//! With a secret installed, keys are keyed hashes: they differ from the unkeyed ones and
//! cannot be recomputed from guessed arguments without the secret. In its own test binary,
//! since it sets the process key hasher.

use idem_core::{KeyHasher, idempotent};
use tests::TestError;

#[idempotent(key = "email", name = "tests.signup.v1")]
async fn signup(email: String) -> Result<String, TestError> {
    let _ = email;
    Ok(idem_core::current_key().expect("inside the body").to_hex())
}

#[tokio::test]
async fn an_installed_secret_keys_every_call() {
    idem_core::install_key_hasher(KeyHasher::keyed("server secret")).unwrap();
    let key = signup("ada@example.com".into()).await.unwrap();
    let guessed = KeyHasher::unkeyed()
        .key(&["tests.signup.v1"], &"ada@example.com")
        .unwrap();
    let with_secret = KeyHasher::keyed("server secret")
        .key(&["tests.signup.v1"], &"ada@example.com")
        .unwrap();
    assert_ne!(
        key,
        guessed.to_hex(),
        "the key can be recomputed without the secret"
    );
    assert_eq!(key, with_secret.to_hex());
}
