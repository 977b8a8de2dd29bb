use idem_core::idempotent;

#[idempotent]
async fn charge(id: u64) -> u64 {
    id
}

#[idempotent]
async fn notify(id: u64) {
    let _ = id;
}

fn main() {
    let _ = charge(1);
    let _ = notify(1);
}
