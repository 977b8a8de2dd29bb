use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent(key = "id", fingerprint = "AMOUNT")]
async fn charge(id: u64, amount: u64) -> Result<u64, MyError> {
    Ok(id + amount)
}

const AMOUNT: u64 = 5;

fn main() {
    let _ = charge(1, AMOUNT);
}
