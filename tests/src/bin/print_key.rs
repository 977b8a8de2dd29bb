//! Prints the key of an idempotent call made in this process, so a test can compare it
//! with the key computed in another OS process.

use std::collections::HashMap;

use tests::TestError;

#[idem_core::idempotent(name = "tests.cross_process.v1")]
async fn cross_process(order: String, lines: HashMap<String, u64>) -> Result<String, TestError> {
    let _ = (order, lines);
    Ok(idem_core::current_key().expect("inside the body").to_hex())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Insert in reverse order: the key must not depend on map iteration order.
    let lines: HashMap<String, u64> = (0..20).rev().map(|i| (format!("sku-{i}"), i)).collect();
    let key = cross_process("order-7".to_string(), lines)
        .await
        .expect("runs");
    println!("{key}");
}
