//! The layer's settings of what becomes of a response: stored whole, streamed, or not
//! stored; and which of its headers a replay repeats.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, StatusCode};

use super::{IdempotencyLayer, MAX_DURATION};
use crate::http::capture::{ietf_stores_status, stripe_stores_status};

/// The per-request headers a replay does not repeat by default: they describe the first
/// request, not the operation.
pub(super) const NOT_REPLAYED: [HeaderName; 3] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("server-timing"),
];

/// Which responses are stored, as a whole policy; [`IdempotencyLayer::stored_statuses`]
/// sets any other.
///
/// ```
/// use idem_core::http::{IdempotencyLayer, ResponseProfile};
///
/// let layer = IdempotencyLayer::new().profile(ResponseProfile::Stripe);
/// # drop(layer);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResponseProfile {
    /// The default, after the IETF draft (which lets the server choose): 2xx, 3xx and 4xx
    /// are stored except 401, 403, 404, 405, 408, 409, 413, 425 and 429 (the request was
    /// not handled: a retry after the fix must run); 5xx is never stored, so a retry
    /// after a failure runs the handler again.
    #[default]
    Ietf,
    /// Stripe's: once the handler ran, its answer is final — 2xx, 3xx, 402 and every 5xx
    /// are stored and replayed (a retry never reruns a half-failed handler); other 4xx are
    /// not stored.
    Stripe,
}

impl IdempotencyLayer {
    /// The largest response body stored (default 1 MiB). A larger response, a
    /// `text/event-stream`, or one whose body is not complete within
    /// [`stream_after`](Self::stream_after) is passed on live and stored as "completed, not
    /// replayable": a retry gets 409 `idempotent-response-not-replayable`, never a second run.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().max_response_body(8 * 1024 * 1024);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn max_response_body(self, bytes: usize) -> Self {
        self.with(|c| c.capture.max_body = bytes)
    }

    /// How long after the response head its body may take to complete and still be stored
    /// whole (default 100 ms). A body still running then (NDJSON, a ticker, a long
    /// download) is passed on live from its first byte, and its key is recorded at once as
    /// completed but not replayable; the [`Drain`](crate::http::Drain) never waits on a response body.
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = idem_core::http::IdempotencyLayer::new().stream_after(Duration::from_secs(1));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn stream_after(self, time: Duration) -> Self {
        let time = time.min(MAX_DURATION);
        self.with(|c| c.capture.max_time = time)
    }

    /// Which response statuses are stored and replayed (default
    /// [`ResponseProfile::Ietf`]). An unstored response releases the key, so a retry runs
    /// the handler again. 1xx is never stored.
    ///
    /// ```
    /// use http::StatusCode;
    /// let layer = idem_core::http::IdempotencyLayer::new()
    ///     .stored_statuses(|status| status.is_success() || status == StatusCode::PAYMENT_REQUIRED);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn stored_statuses<F>(self, stores: F) -> Self
    where
        F: Fn(StatusCode) -> bool + Send + Sync + 'static,
    {
        self.with(|c| c.capture.stores_status = Arc::new(stores))
    }

    /// Which responses are stored, as a named policy (default [`ResponseProfile::Ietf`]).
    ///
    /// ```
    /// use idem_core::http::{IdempotencyLayer, ResponseProfile};
    /// let layer = IdempotencyLayer::new().profile(ResponseProfile::Stripe);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn profile(self, profile: ResponseProfile) -> Self {
        match profile {
            ResponseProfile::Ietf => self.stored_statuses(ietf_stores_status),
            ResponseProfile::Stripe => self.stored_statuses(stripe_stores_status),
        }
    }

    /// Honour `Cache-Control: no-store` on a response as "do not store it" (off by default:
    /// many frameworks send it on every response, which would turn idempotency off). The
    /// opt-out meant for handlers is the [`NoStore`](crate::http::NoStore) response extension.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().honor_cache_control_no_store();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn honor_cache_control_no_store(self) -> Self {
        self.with(|c| c.capture.honor_cache_control = true)
    }

    /// The response headers a replay does not repeat, because they describe the first
    /// request rather than the operation (default `x-request-id`, `traceparent`,
    /// `server-timing`). Replaces the list. Hop-by-hop headers, `Date`, `Set-Cookie` and
    /// `Content-Length` are never stored whatever the list.
    ///
    /// ```
    /// use http::HeaderName;
    /// let layer = idem_core::http::IdempotencyLayer::new().not_replayed_headers([
    ///     HeaderName::from_static("x-request-id"),
    ///     HeaderName::from_static("x-trace-id"),
    /// ]);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn not_replayed_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let headers: Arc<[HeaderName]> = headers.into_iter().collect();
        self.with(|c| c.not_replayed = headers)
    }
}
