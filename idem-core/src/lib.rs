//! # idem — idempotent async functions
//!
//! `#[idempotent]` makes a side-effecting async function safe to retry: the first call
//! with a key runs the body and stores its result; every later call with the same key —
//! from this process or any other process sharing the store — returns the stored result
//! instead of running the side effect again.
//!
//! ```
//! use idem_core::idempotent;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize)]
//! struct ChargeRequest { id: String, amount_cents: u64 }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Receipt { charge_id: String, amount_cents: u64 }
//!
//! #[derive(Debug)]
//! enum PayError { Idempotency(idem_core::Error) }
//! impl From<idem_core::Error> for PayError {
//!     fn from(err: idem_core::Error) -> Self { PayError::Idempotency(err) }
//! }
//!
//! #[idempotent(key = "req.id", ttl = "24h")]
//! async fn charge(req: ChargeRequest) -> Result<Receipt, PayError> {
//!     // ... call the payment provider, with idem_core::current_key() as its idempotency key
//!     Ok(Receipt { charge_id: format!("ch_{}", req.id), amount_cents: req.amount_cents })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let first = charge(ChargeRequest { id: "order-1".into(), amount_cents: 500 }).await.unwrap();
//! let retry = charge(ChargeRequest { id: "order-1".into(), amount_cents: 500 }).await.unwrap();
//! assert_eq!(first, retry); // the retry was replayed, not charged again
//! # }
//! ```
//!
//! The [guide] has the reference, one page per surface: the guarantees and what happens on
//! each fault, the errors and their HTTP statuses, the stores and their key layouts, and the
//! HTTP, PostgreSQL and message-consumer surfaces. Every option of the attribute is on
//! [`idempotent`].
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod call;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
mod context;
mod error;
mod event;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod key;
#[cfg(feature = "metrics")]
mod metrics;
mod namespace;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
mod outcome;
mod spec;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

// The call machinery, the per-task context and the stores each live in one folder; these
// keep their crate paths short (`crate::global`, `crate::redis`, ...).
use call::{codec, flight, lossless};
use context::{global, observe, probe, scope_count};
#[cfg(feature = "moka")]
use store::moka;
#[cfg(feature = "postgres")]
use store::postgres;
#[cfg(feature = "redis")]
use store::redis;

#[doc(hidden)]
pub mod __private;

pub mod guide;

pub use backoff::Backoff;
pub use error::{BoxError, Error};
pub use global::{
    InstallError, current_key, default_store, forget, install, install_key_hasher, key_hasher,
};
pub use key::{ENCODING_VERSION, Fingerprint, Key, KeyHasher};
#[cfg(feature = "moka")]
pub use moka::{MokaStore, MokaStoreBuilder};
pub use observe::observe;
pub use outcome::Outcome;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresSource, PostgresStore, PostgresStoreBuilder};
pub use probe::{forget_call, key_of};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStore, RedisStoreBuilder};
pub use store::SharedStore;

#[cfg(feature = "macros")]
pub use idem_macros::idempotent;
