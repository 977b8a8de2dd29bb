use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

// A lease this short lapses before the holder can renew it.
#[idempotent(lease = "1ms")]
async fn charge(id: u64) -> Result<u64, MyError> {
    Ok(id)
}

fn main() {
    let _ = charge(1);
}
