// `transaction = "tx"` in a crate that depends on idem-core without its `postgres`
// feature: the error names the feature to turn on.
use idem_core::idempotent;

mod sqlx {
    pub struct PgConnection;
}

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent(key = "order_id", transaction = "tx")]
async fn place_order(order_id: u64, tx: &mut sqlx::PgConnection) -> Result<u64, MyError> {
    let _ = tx;
    Ok(order_id)
}

fn main() {}
