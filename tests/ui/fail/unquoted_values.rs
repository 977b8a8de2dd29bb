// A newcomer writes option values as Rust code, not as string literals.
use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[derive(serde::Serialize)]
struct ChargeRequest {
    id: String,
}

#[idempotent(key = req.id, ttl = 30)]
async fn charge(req: ChargeRequest) -> Result<u64, MyError> {
    let _ = req;
    Ok(1)
}

fn main() {}
