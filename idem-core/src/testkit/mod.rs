//! A conformance suite for [`Store`] implementations (feature `testkit`).
//!
//! Write your own [`Store`], then run [`check_store`] against it in a test: it checks the
//! record protocol every backend speaks (see the [`store`](crate::store) module docs) with
//! real calls on the store, no mocks. idem runs the same suite on `MokaStore`, `RedisStore`
//! and `PostgresStore` in its own tests. The examples below use `MokaStore` (feature
//! `moka`, on by default); the suite itself needs only tokio's runtime.
//!
//! The properties, in the order they are checked (see [`Property`]):
//!
//! | property | what must hold |
//! |---|---|
//! | `claim_is_atomic` | many concurrent claims of one free key: exactly one is granted, the others answer in progress |
//! | `completed_replays` | a completed key answers its stored record (value and fingerprint) to every later claim, whatever the caller's fingerprint |
//! | `in_progress` | a live claim answers in progress to every other claim |
//! | `fencing` | renew, complete and release act only with the live token: a holder that was taken over, released or completed cannot touch the key |
//! | `lease_takeover` | a claim whose lease lapsed is taken by the next claim with a new token; a renewed lease holds |
//! | `release_frees_key` | a release by the holder lets the next claim run; a second release is refused |
//! | `forget` | forget removes a completed record or a running claim (whose holder then cannot complete) and reports whether there was one |
//! | `ttl_expiry` | a completed record replays until its TTL, and is gone after it |
//! | `random_schedules` | seeded random schedules of claim, complete, release, drop, renew, lease expiry and forget on a few keys, each step checked against a reference model |
//! | `concurrent_stress` | seeded concurrent holders racing on a few keys: never two live holders, never a second completion, every replay the one stored value |
//!
//! The suite stops at the first property that fails and returns a [`Failure`] naming it;
//! a failing random schedule names its seed, and [`Suite::seed`] (or the environment
//! variable `IDEM_TESTKIT_SEED`) runs the same schedules again. The timed properties use
//! leases and TTLs of a few hundred milliseconds, so a store must honour durations at
//! millisecond resolution; the whole suite takes a few seconds on a local server.
//!
//! Run it inside a tokio runtime (`#[tokio::test]`): a current-thread runtime interleaves
//! the racing claims at every await, a multi-thread one also in parallel.
//!
//! Each property uses keys of its own, fresh for every run (a random run id in the key's
//! namespace), so a store shared with other tests or earlier runs can be checked in place.
//! `make` is called once per property, so each may get a fresh store, or a clone of one.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use idem_core::MokaStore;
//! use idem_core::testkit::{Property, check_store};
//!
//! let report = check_store(|| async { MokaStore::new() }).await.unwrap();
//! assert!(report.checked().any(|property| property == Property::ClaimIsAtomic));
//! println!("{report}");
//! # }
//! ```
//!
//! [`Store`]: crate::store::Store

mod context;
mod model;
mod properties;
mod report;
mod steps;
mod stress;
mod suite;

pub use report::{Failure, Property, Report};
pub use suite::{Suite, check_store};
