//! The client's `tracing` events (target `idem`, outcome `retry`, `gave_up` or
//! `replayed`) and, with the `metrics` feature, its counters
//! `idem_client_retries_total{reason}`, `idem_client_gave_up_total{reason}` and
//! `idem_client_replays_total`. The key appears only as a hash.

use std::time::Duration;

use reqwest::{Method, Request};

use super::policy::Reason;

/// The first 16 hex digits of the key's BLAKE3 hash: enough to match the events of one
/// request, never the key itself (a key may be guessable or reused as a secret).
pub(crate) fn key_hash(key: Option<&str>) -> String {
    key.map_or_else(String::new, |key| {
        blake3::hash(key.as_bytes()).to_hex()[..16].to_string()
    })
}

/// What the events name of a request: its method and path (never the query, which may
/// hold secrets).
pub(crate) struct Route {
    method: Method,
    path: String,
}

impl Route {
    pub(crate) fn of(request: &Request) -> Route {
        Route {
            method: request.method().clone(),
            path: request.url().path().to_owned(),
        }
    }
}

/// One retry is about to wait `delay` and send the request again.
pub(crate) fn retry(
    route: &Route,
    key: Option<&str>,
    attempt: u32,
    reason: Reason,
    delay: Duration,
) {
    tracing::info!(
        target: "idem",
        outcome = "retry",
        method = %route.method,
        path = route.path,
        key = %key_hash(key),
        attempt,
        reason = reason.0,
        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
    );
    #[cfg(feature = "metrics")]
    ::metrics::counter!("idem_client_retries_total", "reason" => reason.0).increment(1);
}

/// The answer to a retryable failure is returned as it is: `why` says what stopped the
/// retries (`max_attempts`, `deadline`, `retry_after`).
pub(crate) fn gave_up(
    route: &Route,
    key: Option<&str>,
    attempts: u32,
    reason: Reason,
    why: &'static str,
) {
    tracing::warn!(
        target: "idem",
        outcome = "gave_up",
        method = %route.method,
        path = route.path,
        key = %key_hash(key),
        attempts,
        reason = reason.0,
        why,
    );
    #[cfg(feature = "metrics")]
    ::metrics::counter!("idem_client_gave_up_total", "reason" => why).increment(1);
}

/// The server replayed a stored response.
pub(crate) fn replayed(route: &Route, key: Option<&str>, attempts: u32) {
    tracing::debug!(
        target: "idem",
        outcome = "replayed",
        method = %route.method,
        path = route.path,
        key = %key_hash(key),
        attempts,
    );
    #[cfg(feature = "metrics")]
    ::metrics::counter!("idem_client_replays_total").increment(1);
}
