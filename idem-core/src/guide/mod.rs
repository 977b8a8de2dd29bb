//! The reference guide, one page per surface: what the README leaves out of a first hour.
//!
//! - [`attribute`]: the mistakes the macro and the type checker report, `&mut` arguments,
//!   `current_key()` (the options table is on [`idempotent`](crate::idempotent));
//! - [`guarantees`]: what holds, and the honest limit;
//! - [`errors`]: `idem_core::Error`, its source chain, and its HTTP statuses;
//! - [`stores`]: the default store, `install`, `forget`, `key_of` / `forget_call`;
//! - `redis` (feature `redis`): `RedisStore`, its cost, faults, key layout, Cluster,
//!   near-cache and replica waits;
//! - `postgres` (feature `postgres`): shared-store and transaction mode, cost, faults, the
//!   table and its DDL;
//! - `http` (feature `http`): the `Idempotency-Key` layer and a walk-through;
//! - `client` (feature `client`): the retrying HTTP client and the exactly-once drill;
//! - `nats` (feature `nats`): JetStream consumers and the crash drill;
//! - [`observability`]: events, outcomes, metrics;
//! - [`choices`]: the choices made where the contract is silent.
//!
//! Every Rust example on these pages is a doctest (`cargo test --doc -p idem-core
//! --all-features`); the ones that need a running Redis, PostgreSQL or NATS are compiled
//! but not run (`no_run`). Measurements are in `BENCHMARKS.md`, history in `CHANGELOG.md`.

#[doc = include_str!("attribute.md")]
pub mod attribute {}

#[doc = include_str!("guarantees.md")]
pub mod guarantees {}

#[doc = include_str!("errors.md")]
pub mod errors {}

#[doc = include_str!("stores.md")]
pub mod stores {}

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc = include_str!("redis.md")]
pub mod redis {}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
#[doc = include_str!("postgres.md")]
pub mod postgres {}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[doc = include_str!("http.md")]
pub mod http {}

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
#[doc = include_str!("client.md")]
pub mod client {}

#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
#[doc = include_str!("nats.md")]
pub mod nats {}

#[doc = include_str!("observability.md")]
pub mod observability {}

#[doc = include_str!("choices.md")]
pub mod choices {}
