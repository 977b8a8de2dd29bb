//! The request's idempotency key: the caller's, kept as it is, or a minted one.

use reqwest::Request;
use reqwest::header::{HeaderName, HeaderValue};

/// The key `request` carries under `header`, after minting one (a random UUID, bare, as
/// Stripe's clients send it; idem's layer also reads the RFC 8941 quoted form) when it has
/// none and `mint` says it should (a caller's key that is not text is shown lossily);
/// `None`: the request has no key.
pub(crate) fn ensure(request: &mut Request, header: &HeaderName, mint: bool) -> Option<String> {
    if let Some(value) = request.headers().get(header) {
        return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    if !mint {
        return None;
    }
    let key = uuid::Uuid::new_v4().to_string();
    // A UUID's hex and dashes are always a valid value.
    let value = HeaderValue::from_str(&key).ok()?;
    request.headers_mut().insert(header.clone(), value);
    Some(key)
}
