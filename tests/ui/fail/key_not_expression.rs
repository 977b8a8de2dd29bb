use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent(key = "req.")]
async fn charge(req: String) -> Result<u64, MyError> {
    Ok(req.len() as u64)
}

fn main() {
    let _ = charge(String::new());
}
