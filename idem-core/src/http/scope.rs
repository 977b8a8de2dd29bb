//! Whose key space a request belongs to. The same client key in two scopes is two keys,
//! so a scope must name the principal the app's own authentication decided on; a request
//! that has none is refused unless the layer was told that anonymous requests share one
//! scope.

use std::fmt;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderName};
use serde::Serialize;

use crate::key::KeyHasher;

/// Where a request's scope comes from.
#[derive(Clone, Default)]
pub(crate) enum ScopeSource {
    /// The `Authorization` header's bytes: one scope per credential (a refreshed token is
    /// another scope).
    #[default]
    Authorization,
    /// A named header's bytes (an API key header).
    Header(HeaderName),
    /// A named cookie's value (a session id).
    Cookie(Arc<str>),
    /// A value the app put in the request's extensions (the principal its auth layer
    /// decided on), or any function of the request head.
    Custom(ScopeFn),
}

/// A function from a request head to its scope's bytes.
pub(crate) type ScopeFn = Arc<dyn Fn(&Parts) -> Option<Vec<u8>> + Send + Sync>;

impl fmt::Debug for ScopeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeSource::Authorization => f.write_str("Authorization"),
            ScopeSource::Header(name) => write!(f, "Header({name})"),
            ScopeSource::Cookie(name) => write!(f, "Cookie({name})"),
            ScopeSource::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Why a request has no usable scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeError {
    /// Nothing names the principal, and anonymous requests are not allowed.
    Missing,
    /// The scope's header or cookie appears twice with different values.
    Ambiguous,
}

/// The scope rule of a layer: the source, and whether a request without one is allowed
/// into the shared anonymous scope.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScopeRule {
    pub(crate) source: ScopeSource,
    pub(crate) anonymous: bool,
}

impl ScopeRule {
    /// The request's scope bytes (`None`: the anonymous scope, when allowed).
    pub(crate) fn resolve(&self, parts: &Parts) -> Result<Option<Vec<u8>>, ScopeError> {
        let found = match &self.source {
            ScopeSource::Authorization => one_header(&parts.headers, &AUTHORIZATION)?,
            ScopeSource::Header(name) => one_header(&parts.headers, name)?,
            ScopeSource::Cookie(name) => cookie(&parts.headers, name)?,
            ScopeSource::Custom(scope) => scope(parts),
        };
        match found {
            Some(scope) => Ok(Some(scope)),
            None if self.anonymous => Ok(None),
            None => Err(ScopeError::Missing),
        }
    }
}

/// The scope bytes of an extension value: its canonical encoding, hashed (stable across
/// processes and builds, like a function's key).
pub(crate) fn of_value<T: Serialize + ?Sized>(value: &T) -> Option<Vec<u8>> {
    let fingerprint = KeyHasher::unkeyed().fingerprint(value).ok()?;
    Some(fingerprint.as_bytes().to_vec())
}

fn one_header(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Vec<u8>>, ScopeError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ScopeError::Ambiguous);
    }
    Ok(Some(first.as_bytes().to_vec()))
}

/// A cookie's value, from every `Cookie` header (HTTP/2 splits them). The same name twice
/// with two values is ambiguous: which principal is it?
fn cookie(headers: &HeaderMap, name: &str) -> Result<Option<Vec<u8>>, ScopeError> {
    let mut found: Option<&[u8]> = None;
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            let value = &pair[eq + 1..];
            match found {
                Some(seen) if seen != value => return Err(ScopeError::Ambiguous),
                _ => found = Some(value),
            }
        }
    }
    Ok(found.filter(|value| !value.is_empty()).map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::post("/");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_without_a_principal_is_refused_unless_anonymous_is_allowed() {
        let rule = ScopeRule::default();
        assert_eq!(rule.resolve(&parts(&[])), Err(ScopeError::Missing));
        let anonymous = ScopeRule {
            anonymous: true,
            ..ScopeRule::default()
        };
        assert_eq!(anonymous.resolve(&parts(&[])), Ok(None));
    }

    #[test]
    fn two_authorization_headers_are_ambiguous() {
        let rule = ScopeRule::default();
        let twice = parts(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(rule.resolve(&twice), Err(ScopeError::Ambiguous));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let rule = ScopeRule {
            source: ScopeSource::Cookie("sid".into()),
            anonymous: false,
        };
        let alice = parts(&[("cookie", "theme=dark; sid=alice")]);
        assert_eq!(rule.resolve(&alice), Ok(Some(b"alice".to_vec())));
        let split = parts(&[("cookie", "theme=dark"), ("cookie", "sid=bob")]);
        assert_eq!(rule.resolve(&split), Ok(Some(b"bob".to_vec())));
        let none = parts(&[("cookie", "sidx=alice; theme=dark")]);
        assert_eq!(rule.resolve(&none), Err(ScopeError::Missing));
        let two = parts(&[("cookie", "sid=alice; sid=bob")]);
        assert_eq!(rule.resolve(&two), Err(ScopeError::Ambiguous));
    }
}
