//! The responses the layer writes itself: RFC 9457 `application/problem+json`, each with a
//! `type` naming the rule, a `title`, the `status` and a `detail`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::body::{ResponseBody, full};
use super::key_header::KeyError;
use super::scope::ScopeError;

/// Where the problem types are described.
const TYPE_BASE: &str = "https://github.com/idem-rs/idem/blob/main/README.md#";

/// A request the layer answers itself.
#[derive(Debug)]
pub(crate) enum Problem {
    Key(KeyError),
    Scope(ScopeError),
    BodyTooLarge { limit: usize },
    BodyUnreadable,
    InProgress { retry_after_secs: u64 },
    Mismatch,
    NotReplayable { status: StatusCode },
    StoreUnavailable,
    StoreFull,
    StoredUnreadable,
    HandlerPanicked,
    Internal,
}

/// The `Retry-After` of a full store, in seconds: records leave only as they expire.
const STORE_FULL_RETRY_AFTER_SECS: u64 = 5;

#[derive(Serialize)]
struct Body<'a> {
    r#type: String,
    title: &'a str,
    status: u16,
    detail: String,
}

impl Problem {
    fn parts(&self) -> (StatusCode, &'static str, &'static str, String) {
        match self {
            Problem::Key(KeyError::Missing) => (
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "Idempotency-Key header missing",
                "this endpoint requires an Idempotency-Key header: a unique value (a UUID) per operation, sent again unchanged on every retry".into(),
            ),
            Problem::Key(KeyError::Repeated) => (
                StatusCode::BAD_REQUEST,
                "idempotency-key-repeated",
                "Idempotency-Key header repeated",
                "send exactly one Idempotency-Key header".into(),
            ),
            Problem::Key(KeyError::Malformed(why)) => (
                StatusCode::BAD_REQUEST,
                "idempotency-key-malformed",
                "Idempotency-Key header malformed",
                format!("{why}: a key is 1 to 255 visible ASCII characters, bare or as an RFC 8941 string"),
            ),
            Problem::Scope(ScopeError::Missing) => (
                StatusCode::BAD_REQUEST,
                "idempotency-scope-missing",
                "No principal for this Idempotency-Key",
                "an idempotency key belongs to one principal, and this request names none (no credential, session or tenant); authenticate, or ask the service to allow anonymous keys".into(),
            ),
            Problem::Scope(ScopeError::Ambiguous) => (
                StatusCode::BAD_REQUEST,
                "idempotency-scope-ambiguous",
                "More than one principal for this Idempotency-Key",
                "the request's credential (header or cookie) appears more than once with different values; send exactly one".into(),
            ),
            Problem::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "idempotent-request-too-large",
                "Request body too large",
                format!("an idempotent request's body is limited to {limit} bytes"),
            ),
            Problem::BodyUnreadable => (
                StatusCode::BAD_REQUEST,
                "idempotent-request-unreadable",
                "Request body could not be read",
                "the request body ended with an error before it was complete".into(),
            ),
            Problem::InProgress { .. } => (
                StatusCode::CONFLICT,
                "idempotency-key-in-progress",
                "A request with this Idempotency-Key is in progress",
                "the first request with this key has not finished; retry after the Retry-After delay to get its response".into(),
            ),
            Problem::Mismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused with another request",
                "this key was used with another method, path, query, Content-Type or body; use a new key for a new request".into(),
            ),
            Problem::NotReplayable { status } => (
                StatusCode::CONFLICT,
                "idempotent-response-not-replayable",
                "The response to this Idempotency-Key cannot be replayed",
                format!("the first request with this key completed with status {} but its response was streamed, not stored; it is not run again: use a new key to repeat the operation", status.as_u16()),
            ),
            Problem::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "idempotency-store-unavailable",
                "Idempotency store unavailable",
                "the request was not processed because its key could not be checked; retry later with the same key".into(),
            ),
            Problem::StoreFull => (
                StatusCode::SERVICE_UNAVAILABLE,
                "idempotency-store-full",
                "Idempotency store full",
                "the request was not processed: the store holds as many keys as it may until some expire; retry later with the same key".into(),
            ),
            Problem::HandlerPanicked => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "idempotent-handler-failed",
                "The handler failed",
                "the request's handler failed before it answered; its key was released, so a retry with the same key runs it again".into(),
            ),
            Problem::StoredUnreadable => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "idempotent-response-unreadable",
                "The stored response for this Idempotency-Key cannot be read",
                "the request was not run again; the stored response is not in a format this server reads".into(),
            ),
            Problem::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "idempotency-internal-error",
                "Idempotency check failed",
                "the request was not processed".into(),
            ),
        }
    }

    /// The problem's title.
    pub(crate) fn title(&self) -> &'static str {
        self.parts().2
    }

    /// The problem+json response.
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let (status, slug, title, detail) = self.parts();
        let json = serde_json::to_vec(&Body {
            r#type: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail,
        })
        .expect("a struct of strings always serializes");
        let mut response = Response::new(full(Bytes::from(json)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry_after = match self {
            Problem::InProgress { retry_after_secs } => Some(retry_after_secs),
            Problem::StoreUnavailable => Some(1),
            Problem::StoreFull => Some(STORE_FULL_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
