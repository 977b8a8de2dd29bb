use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

// Durations past 100 years would overflow `Instant::now() + d`.
#[idempotent(ttl = "200y", wait = "500000000000y")]
async fn charge(id: u64) -> Result<u64, MyError> {
    Ok(id)
}

fn main() {
    let _ = charge(1);
}
