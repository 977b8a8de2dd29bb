// A newcomer's first transaction: a `&mut` connection or transaction argument without
// `transaction = "..."`. The error leads to transaction mode first (the record commits with
// the body's writes); `skip` second, with what it costs. The macro sees tokens only, so
// the sqlx types are stand-ins of the same names (this crate does not build sqlx).
use idem_core::idempotent;

mod sqlx {
    pub struct PgConnection;
    pub struct Postgres;
    pub struct Transaction<'c, DB>(&'c mut PgConnection, DB);
}

use sqlx::{PgConnection, Postgres, Transaction};

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

#[idempotent(key = "order_id")]
async fn place_order(order_id: u64, tx: &mut PgConnection) -> Result<u64, MyError> {
    let _ = tx;
    Ok(order_id)
}

#[idempotent(key = "order_id")]
async fn ship_order(order_id: u64, tx: &mut Transaction<'_, Postgres>) -> Result<u64, MyError> {
    let _ = tx;
    Ok(order_id)
}

#[idempotent(key = "order_id")]
async fn bill_order(order_id: u64, conn: &mut sqlx::PgConnection) -> Result<u64, MyError> {
    let _ = conn;
    Ok(order_id)
}

fn main() {}
