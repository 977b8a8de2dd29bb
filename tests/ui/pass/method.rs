//! Methods: `&self` is left out of the key (unless the key names it), and the `Self` type
//! is part of the namespace.
#![deny(warnings)]

use idem_core::idempotent;
use serde::Serialize;

#[derive(Debug)]
struct MyError;

impl From<idem_core::Error> for MyError {
    fn from(_: idem_core::Error) -> Self {
        MyError
    }
}

struct Mailer {
    sent: std::sync::atomic::AtomicU64,
}

impl Mailer {
    #[idempotent]
    async fn send(&self, to: String, body: String) -> Result<u64, MyError> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(to.len() as u64 + body.len() as u64)
    }

    #[idempotent(key = "to", ttl = "1h")]
    pub async fn send_once(&self, to: &str, body: &str) -> Result<u64, MyError> {
        Ok(self.sent.load(std::sync::atomic::Ordering::SeqCst) + body.len() as u64)
    }
}

#[derive(Serialize)]
struct Account {
    id: u64,
}

impl Account {
    // The key names `self`, so `self` must be `Serialize` and is fingerprinted.
    #[idempotent(key = "self.id")]
    async fn close(&self) -> Result<u64, MyError> {
        Ok(self.id)
    }
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() {
    let mailer = Mailer {
        sent: Default::default(),
    };
    assert_eq!(mailer.send("ada".into(), "hi".into()).await.unwrap(), 5);
    assert_eq!(mailer.send("ada".into(), "hi".into()).await.unwrap(), 5);
    assert_eq!(mailer.sent.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(mailer.send_once("ada", "hey").await.unwrap(), 4);
    assert_eq!(Account { id: 7 }.close().await.unwrap(), 7);
}
