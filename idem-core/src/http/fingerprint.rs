//! What a request's record is stored under, and what it is compared with: the stored key is
//! a hash of the layer's namespace, the scope and the client's key; the fingerprint hashes
//! the method, path and query, `Content-Type`, `Content-Encoding` and the body (its bytes,
//! its canonical JSON, or what the app's own function takes from it). Raw keys, credentials
//! and bodies never reach the store.
//!
//! # Why the fingerprint is not a cryptographic hash
//!
//! The *key* must resist attackers (a collision would hand one principal another's record),
//! so it stays a BLAKE3 hash. The fingerprint is only ever compared with the fingerprint of
//! the first request *under the same scope and key*: a collision could only make a caller's
//! second request replay that caller's own first response instead of a 422, and building
//! one means knowing the first request, which could simply be resent. So the byte and
//! custom fingerprints are xxh3-128 (non-cryptographic, 128 bits: two honest different
//! requests collide with probability 2⁻¹²⁸), which hashes a 1 KiB body in a fraction of
//! BLAKE3's instructions (a 1 KiB input is one BLAKE3 chunk, so its SIMD lanes go unused):
//! measured with callgrind in BENCHMARKS.md ("Issue 19").
//!
//! The 32-byte [`Fingerprint`] holds the 16 digest bytes (little-endian) followed by
//! [`FAST_TAG`], which names the function: a fast fingerprint never equals a BLAKE3 one
//! (of an older build, of `.fingerprint_json()`, or of a keyed hasher). With a secret
//! installed ([`KeyHasher::keyed`](crate::KeyHasher::keyed)), fingerprints stay keyed
//! BLAKE3: a store reader cannot confirm a guessed low-entropy body by hashing it, which an
//! unkeyed hash of any speed would allow (the unkeyed BLAKE3 fingerprint allowed it too).

use std::fmt;
use std::sync::Arc;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::request::Parts;
use serde::{Serialize, Serializer};
use xxhash_rust::xxh3::xxh3_128;

use crate::error::Error;
use crate::global::key_hasher;
use crate::key::{Fingerprint, Key, KeyHasher, with_buffer};

/// The second half of every fast fingerprint: which function made the first half (and its
/// framing's version), so no fast fingerprint equals a BLAKE3 one.
const FAST_TAG: [u8; 16] = *b"idem http xxh3.1";

/// The first part of every HTTP key's namespace, so no `#[idempotent]` function shares one.
const NAMESPACE_ROOT: &str = "idem::http";

/// The stored key of a request: the layer's namespace and the request's
/// [`IdempotencyKey`](super::IdempotencyKey) (its scope and client key, as it serializes).
pub(crate) fn key<K: Serialize + ?Sized>(namespace: &str, request_key: &K) -> Result<Key, Error> {
    key_hasher().key(&[NAMESPACE_ROOT, namespace], request_key)
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

/// The fingerprint of a request, with the installed key hasher.
pub(crate) fn fingerprint(
    rule: &BodyFingerprint,
    parts: &Parts,
    body: &[u8],
) -> Result<Fingerprint, Error> {
    fingerprint_with(key_hasher(), rule, parts, body)
}

/// The fingerprint of a request: fast (xxh3-128) unless `hasher` is keyed or the rule is
/// canonical JSON (see the module docs).
fn fingerprint_with(
    hasher: &KeyHasher,
    rule: &BodyFingerprint,
    parts: &Parts,
    body: &[u8],
) -> Result<Fingerprint, Error> {
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let header = |name| {
        parts
            .headers
            .get(name)
            .map(|v: &http::HeaderValue| v.as_bytes())
    };
    let (content_type, encoding) = (header(CONTENT_TYPE), header(CONTENT_ENCODING));
    let method = parts.method.as_str();
    let fast = !hasher.is_keyed();
    let bytes = || {
        if fast {
            return Ok(fast_fingerprint(
                b'B',
                &[
                    Some(method.as_bytes()),
                    Some(path.as_bytes()),
                    content_type,
                    encoding,
                    Some(body),
                ],
            ));
        }
        let (content_type, encoding) = (content_type.map(Raw), encoding.map(Raw));
        hasher.fingerprint(&(method, path, content_type, encoding, Raw(body)))
    };
    match rule {
        BodyFingerprint::Bytes => bytes(),
        BodyFingerprint::Json => {
            let json = serde_json::from_slice::<serde_json::Value>(body).ok();
            let Some(json) = json.filter(|_| encoding.is_none()) else {
                return bytes();
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
            hasher.fingerprint(&("json", method, parts.uri.path(), query, essence, json))
        }
        BodyFingerprint::Custom(custom) => {
            let taken = custom(parts, body);
            if fast {
                let parts = [Some(method.as_bytes()), Some(path.as_bytes()), Some(&taken)];
                return Ok(fast_fingerprint(b'C', &parts));
            }
            hasher.fingerprint(&("custom", method, path, Raw(&taken)))
        }
    }
}

/// xxh3-128 of `domain` and each part framed (absent, or present with its length), so no
/// two different lists of parts hash the same bytes; widened to 32 bytes with [`FAST_TAG`].
/// Framed into the thread's scratch buffer and hashed in one call: xxh3's streaming state
/// costs more per request than copying a body within `max_request_body`.
fn fast_fingerprint(domain: u8, parts: &[Option<&[u8]>]) -> Fingerprint {
    let digest = with_buffer(|buf| {
        buf.push(domain);
        for part in parts {
            match part {
                None => buf.push(0),
                Some(bytes) => {
                    buf.push(1);
                    buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                    buf.extend_from_slice(bytes);
                }
            }
        }
        xxh3_128(buf)
    });
    let mut out = [0; 32];
    out[..16].copy_from_slice(&digest.to_le_bytes());
    out[16..].copy_from_slice(&FAST_TAG);
    Fingerprint::from_bytes(out)
}

/// Bytes encoded as bytes (length-prefixed), not as a sequence of numbers.
pub(super) struct Raw<'a>(pub(super) &'a [u8]);

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
    fn byte_fingerprints_are_xxh3_and_stable() {
        let req = || Request::post("/charges?x=1").header(CONTENT_TYPE, "application/json");
        let fp = bytes(req(), br#"{"amount":1}"#);
        // Pinned: every process and build must compute the same fingerprint for a record.
        assert_eq!(
            fp.to_hex(),
            "ec55a05d6e2922e088ca19d4024b0d856964656d206874747020787868332e31"
        );
        assert_eq!(fp.as_bytes()[16..], FAST_TAG);
        // A body that is not JSON falls back to the byte fingerprint, the same one.
        assert_eq!(json(req(), b"not json"), bytes(req(), b"not json"));
        let custom = BodyFingerprint::Custom(Arc::new(|_: &Parts, body: &[u8]| body.to_vec()));
        let custom = fingerprint(&custom, &parts(req()), b"{}").unwrap();
        assert_eq!(custom.as_bytes()[16..], FAST_TAG);
        assert_ne!(custom, bytes(req(), b"{}"));
    }

    #[test]
    fn fast_framing_keeps_parts_apart() {
        let a = fast_fingerprint(b'B', &[Some(b"ab"), Some(b"c")]);
        assert_ne!(a, fast_fingerprint(b'B', &[Some(b"a"), Some(b"bc")]));
        assert_ne!(a, fast_fingerprint(b'C', &[Some(b"ab"), Some(b"c")]));
        let absent = fast_fingerprint(b'B', &[None, Some(b"x")]);
        assert_ne!(absent, fast_fingerprint(b'B', &[Some(b""), Some(b"x")]));
    }

    #[test]
    fn a_keyed_hasher_keeps_keyed_blake3_fingerprints() {
        let keyed = KeyHasher::keyed(b"a long random server secret, 32+ bytes");
        let p = parts(Request::post("/charges").header(CONTENT_TYPE, "text/plain"));
        let fp = fingerprint_with(&keyed, &BodyFingerprint::Bytes, &p, b"1234").unwrap();
        assert_ne!(fp.as_bytes()[16..], FAST_TAG);
        let expected = keyed
            .fingerprint(&(
                "POST",
                "/charges",
                Some(Raw(b"text/plain")),
                None::<Raw<'_>>,
                Raw(b"1234"),
            ))
            .unwrap();
        assert_eq!(fp, expected);
    }

    #[test]
    fn the_scope_separates_clients() {
        use crate::http::IdempotencyKey;
        let request = |scope: Option<&[u8]>, client_key| IdempotencyKey::new(client_key, scope);
        let a = key("ns", &request(Some(b"alice"), "k1")).unwrap();
        // The encoding of (scope as bytes, client key) is pinned: stored keys stay valid.
        assert_eq!(
            a.to_hex(),
            "82b31053af7e3ff4404c137f1383de41abc63d1a65a8f71a737be655a1cdee04"
        );
        assert_eq!(a, key("ns", &request(Some(b"alice"), "k1")).unwrap());
        assert_ne!(a, key("ns", &request(Some(b"bob"), "k1")).unwrap());
        assert_ne!(a, key("other", &request(Some(b"alice"), "k1")).unwrap());
        assert_ne!(a, key("ns", &request(None, "k1")).unwrap());
    }
}
