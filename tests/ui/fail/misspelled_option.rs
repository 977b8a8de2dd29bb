use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent(tll = "1h", cache_error)]
async fn charge(id: u64) -> Result<u64, MyError> {
    Ok(id)
}

fn main() {
    let _ = charge(1);
}
