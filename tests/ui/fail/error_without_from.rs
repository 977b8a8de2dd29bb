use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

#[idempotent]
async fn charge(id: u64) -> Result<u64, MyError> {
    Ok(id)
}

fn main() {
    let _ = charge(1);
}
