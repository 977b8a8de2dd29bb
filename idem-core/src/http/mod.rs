//! The `Idempotency-Key` header, as a tower layer (feature `http`).
//!
//! [`IdempotencyLayer`] protects unsafe requests (POST and PATCH by default) the way the
//! IETF draft `draft-ietf-httpapi-idempotency-key-header` and Stripe do: the first request
//! with a key runs the handler and stores its response; a retry with the same key gets the
//! stored response with `Idempotent-Replayed: true`, and the handler does not run again.
//! Records live in the same stores, under the same record protocol, as `#[idempotent]`
//! functions, so a service can use both on one Redis.
//!
//! | request | answer |
//! |---|---|
//! | method not protected (GET, ...) | passed through, never stored |
//! | no key (and not [`optional`](IdempotencyLayer::optional)), key empty, over 255 characters, not visible ASCII, or the header twice | 400, nothing claimed |
//! | no principal to scope the key by (and not [`allow_anonymous`](IdempotencyLayer::allow_anonymous)), or two | 400, nothing claimed |
//! | body over [`max_request_body`](IdempotencyLayer::max_request_body) | 413, nothing claimed |
//! | first request with a key | the handler's response; stored by the [`ResponseProfile`] (default: 2xx, 3xx, 4xx but 401, 403, 404, 405, 408, 409, 413, 425, 429) unless the handler set [`NoStore`] |
//! | same key, same request, after it completed | the stored response, `Idempotent-Replayed: true` |
//! | same key, another method, path, query, `Content-Type` or body | 422 |
//! | same key while the first still runs | 409 with `Retry-After` (or, with [`wait`](IdempotencyLayer::wait), the first response) |
//! | same key after a streamed, unstored response | 409, never a second run |
//! | store unreachable, or at its bound for a new key | 503 with `Retry-After`; the handler does not run |
//! | the handler panicked | 500; the key is released |
//! | a response body still running after [`stream_after`](IdempotencyLayer::stream_after), or larger than [`max_response_body`](IdempotencyLayer::max_response_body) | passed on live; recorded as not replayable |
//!
//! Errors the layer writes are RFC 9457 `application/problem+json` documents.
//!
//! ```
//! use axum::{Router, http::StatusCode, routing::post};
//! use idem_core::http::IdempotencyLayer;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = Router::new()
//!     .route("/charges", post(|| async { (StatusCode::CREATED, "ch_1") }))
//!     .layer(IdempotencyLayer::new());
//!
//! let request = || {
//!     axum::http::Request::post("/charges")
//!         .header("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
//!         .header("authorization", "Bearer alice") // the principal keys are scoped by
//!         .body(axum::body::Body::empty())
//!         .unwrap()
//! };
//! let first = app.clone().oneshot(request()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//! let retry = app.oneshot(request()).await.unwrap();
//! assert_eq!(retry.status(), StatusCode::CREATED);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! # }
//! ```

mod body;
mod capture;
mod config;
mod drain;
mod extract;
mod fingerprint;
mod key_header;
mod layer;
mod problem;
mod request_body;
mod scope;
mod service;
mod stored_response;

pub use body::ResponseBody;
pub use capture::NoStore;
pub use drain::Drain;
pub use extract::{IdempotencyKey, IdempotencyKeyRejection};
pub use layer::{IdempotencyLayer, ResponseProfile};
pub use service::{IdempotencyService, REPLAYED_HEADER, ResponseFuture};
