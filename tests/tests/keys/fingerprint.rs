//! `fingerprint = "expr"` chooses what is fingerprinted: a field that changes on an honest
//! retry (a timestamp, a trace id) is left out, while a reused key with another payload is
//! still refused.

use std::sync::atomic::{AtomicU32, Ordering};

use idem_core::idempotent;
use serde::Serialize;
use tests::{IdemKind, TestError};

#[derive(Serialize)]
struct ChargeRequest {
    id: String,
    amount: u64,
    currency: String,
    sent_at: u64,
}

fn request(id: &str, amount: u64, sent_at: u64) -> ChargeRequest {
    ChargeRequest {
        id: id.into(),
        amount,
        currency: "EUR".into(),
        sent_at,
    }
}

static CHARGES: AtomicU32 = AtomicU32::new(0);

#[idempotent(key = "req.id", fingerprint = "(&req.amount, &req.currency)")]
async fn charge(req: ChargeRequest) -> Result<u32, TestError> {
    Ok(CHARGES.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test]
async fn a_retry_with_another_timestamp_replays() {
    let first = charge(request("order-1", 500, 1_000)).await.unwrap();
    let retry = charge(request("order-1", 500, 2_000)).await.unwrap();
    assert_eq!(retry, first, "the retry was replayed");
    assert_eq!(CHARGES.load(Ordering::SeqCst), 1);
    // The key reused with another amount is still a mismatch.
    let other = charge(request("order-1", 900, 3_000)).await;
    assert_eq!(other, Err(TestError::Idem(IdemKind::PayloadMismatch)));
    assert_eq!(CHARGES.load(Ordering::SeqCst), 1);
}

static SENDS: AtomicU32 = AtomicU32::new(0);

// Without `key`, the key is still every argument not skipped; only the fingerprint is
// chosen (here it adds nothing the key does not hold, so nothing can mismatch).
#[idempotent(fingerprint = "to")]
async fn send(to: String, body: String) -> Result<u32, TestError> {
    let _ = body;
    Ok(SENDS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test]
async fn without_key_the_key_is_every_argument() {
    assert_eq!(send("ada".into(), "hi".into()).await.unwrap(), 1);
    assert_eq!(send("ada".into(), "hi".into()).await.unwrap(), 1);
    assert_eq!(send("ada".into(), "bye".into()).await.unwrap(), 2);
}
