use idem_core::idempotent;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ChargeResult {
    id: u64,
}

#[idempotent]
async fn charge(id: u64) -> u64 {
    id
}

#[idempotent]
async fn notify(id: u64) {
    let _ = id;
}

// Named like a `Result`, but it is not one: the type checker decides, not the name.
#[idempotent]
async fn refund(id: u64) -> ChargeResult {
    ChargeResult { id }
}

fn main() {
    let _ = charge(1);
    let _ = notify(1);
    let _ = refund(1);
}
