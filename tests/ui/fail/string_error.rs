//! `String` cannot get `From<idem_core::Error>` (orphan rule): the note names a fix that works.
use idem_core::idempotent;

#[idempotent]
async fn charge(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {
    let _ = charge(1);
}
