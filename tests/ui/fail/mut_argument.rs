//! A `&mut` argument in the key or fingerprint: a replay would not redo the body's change
//! to it.
use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent]
async fn add(total: &mut u64, amount: u64) -> Result<u64, MyError> {
    *total += amount;
    Ok(*total)
}

#[idempotent(key = "id")]
async fn push<'a>(id: u64, items: Option<&'a mut Vec<u64>>) -> Result<(), MyError> {
    if let Some(items) = items {
        items.push(id);
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Account {
    id: u64,
    balance: u64,
}

impl Account {
    #[idempotent(key = "self.id")]
    async fn credit(&mut self, amount: u64) -> Result<u64, MyError> {
        self.balance += amount;
        Ok(self.balance)
    }
}

fn main() {}
