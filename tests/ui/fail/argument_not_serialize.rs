use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

struct Db;

#[idempotent]
async fn charge(id: u64, db: &Db) -> Result<u64, MyError> {
    let _ = db;
    Ok(id)
}

fn main() {
    let _ = charge(1, &Db);
}
