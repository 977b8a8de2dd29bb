use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent(ttl = "one day")]
async fn charge(id: u64) -> Result<u64, MyError> {
    Ok(id)
}

#[idempotent(wait = 60)]
async fn refund(id: u64) -> Result<u64, MyError> {
    Ok(id)
}

fn main() {
    let _ = charge(1);
    let _ = refund(1);
}
