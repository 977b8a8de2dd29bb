//! Inner attributes of the body (`#![allow(..)]`) stay inside the function and apply to it.
#![deny(warnings)]
// The case is an item with both outer attributes and inner ones in its body.
#![allow(clippy::mixed_attributes_style)]

use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

/// Documented, so outer attributes still apply before the function.
#[idempotent]
#[allow(clippy::unused_async)]
async fn charge(id: u64) -> Result<u64, MyError> {
    #![allow(unused_variables)]
    let unused = 5;
    Ok(id)
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() {
    assert_eq!(charge(3).await.unwrap(), 3);
}
