//! rustc cannot point inside the `key` string, so it must not suggest replacing the whole
//! literal with bare code (`key = order_id`).
use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[derive(serde::Serialize)]
struct Request {
    order_id: u64,
}

#[idempotent(key = "req.orderid")]
async fn charge(req: Request) -> Result<u64, MyError> {
    Ok(req.order_id)
}

fn main() {
    let _ = charge(Request { order_id: 1 });
}
