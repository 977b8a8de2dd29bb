//! Golden key vectors: the canonical encoding and hash must never change silently.
//!
//! If one of these fails, keys computed by this build differ from keys stored by earlier
//! builds, so every stored result would be missed and every side effect rerun. A deliberate
//! encoding change must bump `idem_core::ENCODING_VERSION` and these vectors together.

use std::collections::{BTreeMap, HashMap};

use idem_core::{ENCODING_VERSION, KeyHasher};
use serde::Serialize;

#[derive(Serialize)]
struct ChargeRequest {
    id: String,
    amount: u64,
    currency: String,
    tags: Vec<String>,
    metadata: HashMap<String, String>,
}

#[derive(Serialize)]
enum Command {
    Refund { charge: String, cents: i64 },
    Cancel(u32),
    Noop,
}

fn request() -> ChargeRequest {
    ChargeRequest {
        id: "order-42".into(),
        amount: 2_500,
        currency: "EUR".into(),
        tags: vec!["web".into(), "promo".into(), "first".into()],
        metadata: HashMap::from([
            ("customer".into(), "cus_ada".into()),
            ("channel".into(), "app".into()),
            ("region".into(), "eu-west".into()),
        ]),
    }
}

fn key<T: Serialize + ?Sized>(hasher: &KeyHasher, value: &T) -> String {
    hasher.key(&["golden.v1"], value).unwrap().to_hex()
}

#[test]
fn golden_vectors() {
    assert_eq!(ENCODING_VERSION, 1);
    let plain = KeyHasher::unkeyed();
    let keyed = KeyHasher::keyed("golden secret");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "string",
            key(&plain, "order-42"),
            "6baedd9f54fb581ac8cae01dc522aadd94a6cd14aa95d679ea62f08e659634a0",
        ),
        (
            "u64",
            key(&plain, &42u64),
            "e458fb5ece1ab3b2ca8176e79e9bdfec76ba57fc90c4bb06ee92ea593f65bb4b",
        ),
        (
            "negative",
            key(&plain, &-42i32),
            "199fe57d472847e462b0d98d3d658b655b789bef6e4c0f5a493e5ff9b432e6fd",
        ),
        (
            "float",
            key(&plain, &0.1f64),
            "a33bb3c49219c00f7a281c95b5499db30cd5b4f01e780b8c6256a80acc2d82e9",
        ),
        (
            "tuple",
            key(&plain, &("a:b", "", 7u8, true, None::<u8>)),
            "57cf5ee77a3f6dff1a2fef962468193351f6f487881f526fa2a5eebfcbe05863",
        ),
        (
            "request",
            key(&plain, &request()),
            "2bbd713cd4bd28043dbd60f6ef4253305f885d4f68fb58124f99b896004d242a",
        ),
        (
            "enum",
            key(
                &plain,
                &vec![
                    Command::Refund {
                        charge: "ch_1".into(),
                        cents: -5,
                    },
                    Command::Cancel(3),
                    Command::Noop,
                ],
            ),
            "2f4bb20b3328290ee4d3e5d021936c1f04361a977c65a72db1f9c52478f77822",
        ),
        (
            "btreemap",
            key(&plain, &BTreeMap::from([(1u32, "one"), (2, "two")])),
            "4ab27473606a338ec465895e864822d655e2f9b784f73e28717f5871279baa8a",
        ),
        (
            "keyed",
            key(&keyed, "order-42"),
            "7df69994812db4b27a41144901ffdc1dcd3713f3d71ed2b227985503d9e29ebb",
        ),
        (
            "fingerprint",
            plain
                .fingerprint(&(&"order-42", &2_500u64))
                .unwrap()
                .to_hex(),
            "11747454df59b47229f3f6cf5472543c0b24f432a008b65eac45816aaa7eb819",
        ),
    ];
    let mut failures = Vec::new();
    for (name, actual, expected) in &cases {
        if actual != expected {
            failures.push(format!("{name}: expected {expected}, got {actual}"));
        }
    }
    assert!(
        failures.is_empty(),
        "golden keys changed:\n{}",
        failures.join("\n")
    );
}

// The namespaces the macro gives. Keys of plain free functions and of functions with an
// explicit `name` (generic ones: `name` plus their type arguments) must not change, or
// every stored result would be missed after an upgrade.

#[derive(Debug)]
struct E;

impl From<idem_core::Error> for E {
    fn from(_: idem_core::Error) -> Self {
        E
    }
}

fn call_key() -> Result<String, E> {
    idem_core::current_key().map(|key| key.to_hex()).ok_or(E)
}

#[idem_core::idempotent]
async fn plain_free_fn(order: u64, note: String) -> Result<String, E> {
    let _ = (order, note);
    call_key()
}

#[idem_core::idempotent(key = "order")]
async fn plain_with_key(order: u64) -> Result<String, E> {
    call_key()
}

#[idem_core::idempotent(name = "golden.charge.v1")]
async fn named_free_fn(order: u64) -> Result<String, E> {
    let _ = order;
    call_key()
}

#[idem_core::idempotent(name = "golden.generic.v1")]
async fn named_generic_fn<T: Send, U: Send>(order: u64) -> Result<String, E> {
    let _ = order;
    call_key()
}

struct Mailer;

impl Mailer {
    #[idem_core::idempotent(name = "golden.mailer.v1")]
    async fn send(&self, order: u64) -> Result<String, E> {
        let _ = order;
        call_key()
    }
}

#[tokio::test]
async fn golden_macro_namespaces() {
    let cases = [
        (
            "plain free fn",
            plain_free_fn(42, "hi".into()).await.unwrap(),
            "3685fc604058475d66510a2f738ee48593a489d29456b87618540e1dff13cd5c",
        ),
        (
            "plain with key",
            plain_with_key(42).await.unwrap(),
            "f15e503e0f2d23388ef9dab8b3e8e6dd73c07c1da6b220fd5e271ca86951b28d",
        ),
        (
            "named free fn",
            named_free_fn(42).await.unwrap(),
            "76985df74b1f76d9d98643d00fd00a8366a22915188b28a92bfe53ac1bfab31e",
        ),
        (
            "named generic fn",
            named_generic_fn::<u8, String>(42).await.unwrap(),
            "2becfd76da1a6b36dc328eb19e67be12501354f85d9e12781f12f70655bf6812",
        ),
        (
            "named method",
            Mailer.send(42).await.unwrap(),
            "f77c3b351d1d6e005cf725dcc3ce5d75f429afab42b20c2e04e5cc166f0dae58",
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter(|(_, actual, expected)| actual != expected)
        .map(|(name, actual, expected)| format!("{name}: expected {expected}, got {actual}"))
        .collect();
    assert!(
        failures.is_empty(),
        "golden keys changed:\n{}",
        failures.join("\n")
    );
}
