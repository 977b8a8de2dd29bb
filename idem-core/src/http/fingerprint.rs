//! What a request's record is stored under, and what it is compared with: the stored key is
//! a hash of the layer's namespace, the scope and the client's key; the fingerprint hashes
//! the method, path and query, `Content-Type`, `Content-Encoding` and the body (its bytes,
//! its canonical JSON, or what the app's own function takes from it). Raw keys, credentials
//! and bodies never reach the store.

use std::fmt;
use std::sync::Arc;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::request::Parts;
use serde::{Serialize, Serializer};

use crate::error::Error;
use crate::global::key_hasher;
use crate::key::{Fingerprint, Key};

/// The first part of every HTTP key's namespace, so no `#[idempotent]` function shares one.
const NAMESPACE_ROOT: &str = "idem::http";

/// The stored key of a request: namespace, scope (`None`: anonymous) and client key.
pub(crate) fn key(namespace: &str, scope: Option<&[u8]>, client_key: &str) -> Result<Key, Error> {
    key_hasher().key(&[NAMESPACE_ROOT, namespace], &(scope.map(Raw), client_key))
}

/// How a request's body is compared with the first request's.
#[derive(Clone, Default)]
pub(crate) enum BodyFingerprint {
    /// Byte for byte.
    #[default]
    Bytes,
    /// As JSON, canonically: key order and whitespace do not matter; the query's parameter
    /// order and `Content-Type` parameters (`; charset=utf-8`) do not either. A body that is
    /// not JSON is compared byte for byte.
    Json,
    /// What the app's function takes from the request (say, a few fields of the body).
    Custom(CustomFingerprint),
}

/// The app's own fingerprint function.
pub(crate) type CustomFingerprint = Arc<dyn Fn(&Parts, &[u8]) -> Vec<u8> + Send + Sync>;

impl fmt::Debug for BodyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyFingerprint::Bytes => f.write_str("Bytes"),
            BodyFingerprint::Json => f.write_str("Json"),
            BodyFingerprint::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The fingerprint of a request.
pub(crate) fn fingerprint(
    rule: &BodyFingerprint,
    parts: &Parts,
    body: &[u8],
) -> Result<Fingerprint, Error> {
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let header = |name| {
        parts
            .headers
            .get(name)
            .map(|v: &http::HeaderValue| Raw(v.as_bytes()))
    };
    let (content_type, encoding) = (header(CONTENT_TYPE), header(CONTENT_ENCODING));
    let method = parts.method.as_str();
    match rule {
        BodyFingerprint::Bytes => {
            key_hasher().fingerprint(&(method, path, content_type, encoding, Raw(body)))
        }
        BodyFingerprint::Json => {
            let json = serde_json::from_slice::<serde_json::Value>(body).ok();
            let Some(json) = json.filter(|_| encoding.is_none()) else {
                return key_hasher().fingerprint(&(
                    method,
                    path,
                    content_type,
                    encoding,
                    Raw(body),
                ));
            };
            let mut query: Vec<&str> = parts.uri.query().unwrap_or("").split('&').collect();
            query.sort_unstable();
            let essence = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                });
            // The key encoder sorts map keys, so two spellings of one object are one.
            key_hasher().fingerprint(&("json", method, parts.uri.path(), query, essence, json))
        }
        BodyFingerprint::Custom(custom) => {
            let taken = custom(parts, body);
            key_hasher().fingerprint(&("custom", method, path, Raw(&taken)))
        }
    }
}

/// Bytes encoded as bytes (length-prefixed), not as a sequence of numbers.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    fn bytes(req: http::request::Builder, body: &[u8]) -> Fingerprint {
        fingerprint(&BodyFingerprint::Bytes, &parts(req), body).unwrap()
    }

    fn json(req: http::request::Builder, body: &[u8]) -> Fingerprint {
        fingerprint(&BodyFingerprint::Json, &parts(req), body).unwrap()
    }

    #[test]
    fn every_part_of_the_request_is_in_the_fingerprint() {
        let base = || Request::post("/charges?x=1").header(CONTENT_TYPE, "application/json");
        let a = bytes(base(), b"{}");
        assert_eq!(a, bytes(base(), b"{}"));
        assert_ne!(a, bytes(base(), b"{ }"));
        let other_query = Request::post("/charges?x=2").header(CONTENT_TYPE, "application/json");
        assert_ne!(a, bytes(other_query, b"{}"));
        let other_method = Request::patch("/charges?x=1").header(CONTENT_TYPE, "application/json");
        assert_ne!(a, bytes(other_method, b"{}"));
        let other_type = Request::post("/charges?x=1").header(CONTENT_TYPE, "text/plain");
        assert_ne!(a, bytes(other_type, b"{}"));
        assert_ne!(a, bytes(base().header(CONTENT_ENCODING, "gzip"), b"{}"));
    }

    #[test]
    fn json_fingerprints_ignore_spelling() {
        let base = || Request::post("/charges?a=1&b=2").header(CONTENT_TYPE, "application/json");
        let a = json(base(), br#"{"amount":1,"currency":"eur"}"#);
        assert_eq!(a, json(base(), br#"{ "currency": "eur", "amount": 1 }"#));
        let reordered = Request::post("/charges?b=2&a=1")
            .header(CONTENT_TYPE, "Application/JSON; charset=utf-8");
        assert_eq!(a, json(reordered, br#"{"amount":1,"currency":"eur"}"#));
        assert_ne!(a, json(base(), br#"{"amount":2,"currency":"eur"}"#));
        assert_ne!(
            a,
            json(
                Request::post("/charges?a=1&b=3"),
                br#"{"amount":1,"currency":"eur"}"#
            )
        );
    }

    #[test]
    fn the_scope_separates_clients() {
        let a = key("ns", Some(b"alice"), "k1").unwrap();
        assert_eq!(a, key("ns", Some(b"alice"), "k1").unwrap());
        assert_ne!(a, key("ns", Some(b"bob"), "k1").unwrap());
        assert_ne!(a, key("other", Some(b"alice"), "k1").unwrap());
        assert_ne!(a, key("ns", None, "k1").unwrap());
    }
}
