use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

struct Conn;

#[idempotent(key = "id", skip(tx), transaction = "txn")]
async fn place(id: u64, tx: &mut Conn) -> Result<u64, MyError> {
    let _ = tx;
    Ok(id)
}

fn main() {
    let _ = place(1, &mut Conn);
}
