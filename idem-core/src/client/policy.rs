//! What the client retries: which requests get a key, which answers and errors are worth
//! another attempt, and what a `Retry-After` header asks for.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, Request, Response, StatusCode};

/// Why an attempt is retried: a metrics label and the `reason` of the retry event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reason(pub(crate) &'static str);

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The answer is final: return it.
    Final,
    /// Worth another attempt, not before `retry_after` when the server said so.
    Retry {
        reason: Reason,
        retry_after: Option<Duration>,
    },
}

/// The default choice of requests that get a minted key: POST and PATCH (the methods the
/// server layer protects by default).
pub(crate) fn keyed_by_default(request: &Request) -> bool {
    matches!(*request.method(), Method::POST | Method::PATCH)
}

/// Methods that are safe to repeat without a key (RFC 9110 §9.2.2).
pub(crate) fn idempotent_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Retries 408, 409 with `Retry-After` (a duplicate still in progress), 429, 502, 503 and
/// 504; every other status (a 422 above all: the key was reused with another body) is final.
pub(crate) fn for_response(response: &Response) -> Verdict {
    let retry_after = retry_after(response.headers());
    let reason = match response.status() {
        StatusCode::REQUEST_TIMEOUT => "408",
        StatusCode::CONFLICT if retry_after.is_some() => "409",
        StatusCode::TOO_MANY_REQUESTS => "429",
        StatusCode::BAD_GATEWAY => "502",
        StatusCode::SERVICE_UNAVAILABLE => "503",
        StatusCode::GATEWAY_TIMEOUT => "504",
        _ => return Verdict::Final,
    };
    Verdict::Retry {
        reason: Reason(reason),
        retry_after,
    }
}

/// Retries a connection that failed or broke (refused, reset, closed before the answer)
/// and a timeout; a request that could not be built, a redirect loop or another
/// middleware's error is final.
pub(crate) fn for_error(error: &reqwest_middleware::Error) -> Verdict {
    let reqwest_middleware::Error::Reqwest(error) = error else {
        return Verdict::Final;
    };
    let reason = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_request() {
        "connection"
    } else {
        return Verdict::Final;
    };
    Verdict::Retry {
        reason: Reason(reason),
        retry_after: None,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (a date in the past is no delay);
/// anything else is ignored.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_ignores_the_rest() {
        assert_eq!(retry_after(&headers("1")), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&headers(" 30 ")), Some(Duration::from_secs(30)));
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let wait = retry_after(&headers(&later)).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn only_unsafe_methods_get_a_key_by_default() {
        let request = |method| Request::new(method, "http://127.0.0.1/".parse().unwrap());
        assert!(keyed_by_default(&request(Method::POST)));
        assert!(keyed_by_default(&request(Method::PATCH)));
        assert!(!keyed_by_default(&request(Method::GET)));
        assert!(!keyed_by_default(&request(Method::PUT)));
        assert!(idempotent_method(&Method::PUT));
        assert!(!idempotent_method(&Method::POST));
    }
}
