//! The returned future is `Send` whenever the body's future is: it can be spawned.
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

#[derive(Debug, Serialize, Deserialize)]
enum RefundError {
    Idempotency(String),
}

impl From<idem_core::Error> for RefundError {
    fn from(err: idem_core::Error) -> Self {
        RefundError::Idempotency(err.to_string())
    }
}

fn assert_send<T: Send>(_: T) {}

struct Db;

impl Db {
    async fn insert(&self, _row: &str) {}
}

#[idempotent(key = "id", skip(db))]
async fn charge(id: &str, amount: u64, db: &Db) -> Result<u64, MyError> {
    db.insert(id).await;
    tokio::task::yield_now().await;
    Ok(amount)
}

struct Service {
    db: Db,
}

impl Service {
    #[idempotent(in_flight = "reject", cache_errors)]
    async fn refund(&self, id: String) -> Result<u64, RefundError> {
        self.db.insert(&id).await;
        Ok(1)
    }
}

#[idempotent(detach)]
async fn ship<T: Serialize + Send + Sync + 'static>(item: T) -> Result<(), MyError> {
    let _ = item;
    Ok(())
}

pub fn main() {
    // Only type checks: the futures are built and dropped, never run.
    assert_send(charge("order-1", 5, &Db));
    let service = Service { db: Db };
    assert_send(service.refund("r-1".into()));
    assert_send(ship(1u8));
    assert_send(ship(String::new()));
}
