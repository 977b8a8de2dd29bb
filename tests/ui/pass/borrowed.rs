//! Borrowed arguments (`&str`, `&T`, `&[T]`) in the key and the fingerprint, and a skipped
//! borrowed handle.
#![deny(warnings)]

use idem_core::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[derive(Serialize)]
struct ChargeRequest {
    id: String,
    amount_cents: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
}

struct Db;

#[idempotent(key = "req.id", skip(db))]
async fn charge(req: &ChargeRequest, db: &Db, note: &str) -> Result<Receipt, MyError> {
    let _ = (db, note, req.amount_cents);
    Ok(Receipt {
        charge_id: format!("ch_{}", req.id),
    })
}

#[idempotent]
async fn tag(name: &str, values: &[u32]) -> Result<String, MyError> {
    Ok(format!("{name}:{}", values.len()))
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() {
    let req = ChargeRequest {
        id: "order-1".into(),
        amount_cents: 500,
    };
    let first = charge(&req, &Db, "first").await.unwrap();
    assert_eq!(first.charge_id, "ch_order-1");
    assert_eq!(tag("a", &[1, 2, 3]).await.unwrap(), "a:3");
}
