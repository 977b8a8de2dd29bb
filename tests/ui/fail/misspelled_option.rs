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

struct Conn;

// A mistake in the attribute does not turn the skipped `&mut` argument into an error.
#[idempotent(skip(conn), in_flite = "reject")]
async fn refund(conn: &mut Conn, id: u64) -> Result<u64, MyError> {
    let _ = conn;
    Ok(id)
}
