//! The return type is any `Result`, by alias too: the type checker decides, not its name.
#![deny(warnings)]

use idem_core::idempotent;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

type Fallible<T> = Result<T, MyError>;

mod app {
    pub type Outcome = Result<String, super::MyError>;
}

#[idempotent]
async fn charge(id: u64) -> Fallible<u64> {
    Ok(id)
}

#[idempotent]
async fn label(id: u64) -> app::Outcome {
    Ok(id.to_string())
}

// `Box<dyn Error + Send + Sync>` has `From<idem_core::Error>` already.
#[idempotent]
async fn boxed(id: u64) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    Ok(id)
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() {
    assert_eq!(charge(3).await.unwrap(), 3);
    assert_eq!(label(4).await.unwrap(), "4");
    assert_eq!(boxed(5).await.unwrap(), 5);
}
