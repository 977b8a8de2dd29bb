//! The client half of the `Idempotency-Key` contract (feature `client`): a
//! [`reqwest-middleware`](reqwest_middleware) middleware, [`IdempotentRetry`], that makes
//! a request safe to retry and retries it.
//!
//! - **One key per logical request.** A POST or PATCH without an `Idempotency-Key` gets a
//!   minted one (a random UUID; [`mint_key_for`](IdempotentRetry::mint_key_for) chooses
//!   other requests); a key the caller set is kept. Every attempt sends that key and the
//!   same body, so a server behind idem's [`IdempotencyLayer`](crate::http::IdempotencyLayer)
//!   (or Stripe, or any server of the IETF draft) runs the operation once and replays it to
//!   the retries.
//! - **Only what is safe to retry.** A connection error, a timeout, a connection cut before
//!   the answer, 408, 409 with `Retry-After` (the same key still in progress), 429, 502, 503
//!   and 504 are retried; a 422 (the key was reused with another body) and every other
//!   status are returned at once. A request without a key is retried only when its method
//!   is idempotent (GET, PUT, DELETE, ...); a streamed body is sent once.
//! - **Bounded.** Exponential backoff with full jitter (0.5 s doubling to 5 s by default),
//!   never sooner than the server's `Retry-After` (waited out up to 60 s; a longer one is
//!   returned to the caller), at most [`DEFAULT_MAX_ATTEMPTS`] attempts, all within an
//!   overall [`deadline`](IdempotentRetry::deadline) ([`DeadlineExceeded`] when it cuts an
//!   attempt short).
//! - **Reported.** Each response carries a [`Delivery`] extension: the attempts made,
//!   whether the answer was a replay (`Idempotent-Replayed: true`), and the key. Each
//!   retry is a `tracing` event (target `idem`, `outcome = "retry"`, the key as a hash);
//!   with the `metrics` feature, `idem_client_retries_total{reason}`,
//!   `idem_client_gave_up_total{reason}` and `idem_client_replays_total` count them.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use axum::http::StatusCode;
//! use idem_core::Backoff;
//! use idem_core::client::{Delivery, IdempotentRetry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A server that is unavailable for its first two requests.
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let app = axum::Router::new().route("/charges", axum::routing::post(move || async move {
//!     match seen.fetch_add(1, Ordering::SeqCst) {
//!         0 | 1 => StatusCode::SERVICE_UNAVAILABLE,
//!         _ => StatusCode::CREATED,
//!     }
//! }));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let url = format!("http://{}/charges", listener.local_addr().unwrap());
//! tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(IdempotentRetry::new().backoff(Backoff::new(Duration::from_millis(10))))
//!     .build();
//! let response = client.post(&url).body(r#"{"amount_cents":500}"#).send().await.unwrap();
//! assert_eq!(response.status(), StatusCode::CREATED);
//! assert_eq!(Delivery::of(&response).unwrap().attempts(), 3);
//! # }
//! ```

mod deadline;
mod delay;
mod delivery;
mod event;
mod key;
mod middleware;
mod policy;
mod retry;

pub use deadline::DeadlineExceeded;
pub use delivery::Delivery;
pub use retry::{
    DEFAULT_BACKOFF, DEFAULT_DEADLINE, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RETRY_AFTER,
    IdempotentRetry,
};
