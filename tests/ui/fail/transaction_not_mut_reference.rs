use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

struct Conn;

#[idempotent(key = "id", transaction = "tx")]
async fn place(id: u64, tx: &Conn) -> Result<u64, MyError> {
    let _ = tx;
    Ok(id)
}

#[idempotent(key = "id", transaction = "conn")]
async fn place_owned(id: u64, conn: Conn) -> Result<u64, MyError> {
    let _ = conn;
    Ok(id)
}

fn main() {
    let _ = place(1, &Conn);
    let _ = place_owned(1, Conn);
}
