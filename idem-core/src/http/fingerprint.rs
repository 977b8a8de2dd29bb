//! What a request's record is stored under, and what it is compared with: the stored key is
//! a hash of the layer's namespace, the scope (by default the `Authorization` header) and
//! the client's key; the fingerprint hashes the method, path and query, `Content-Type` and
//! body bytes. Raw keys, credentials and bodies never reach the store.

use std::fmt;
use std::sync::Arc;

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::request::Parts;
use serde::{Serialize, Serializer};

use crate::error::Error;
use crate::global::key_hasher;
use crate::key::{Fingerprint, Key};

/// The first part of every HTTP key's namespace, so no `#[idempotent]` function shares one.
const NAMESPACE_ROOT: &str = "idem::http";

/// Whose key space a request belongs to: the same client key in two scopes is two keys.
#[derive(Clone, Default)]
pub(crate) enum Scope {
    /// The `Authorization` header's bytes (none: the shared anonymous scope).
    #[default]
    Authorization,
    /// Whatever the user's function returns (none: the shared anonymous scope).
    Custom(ScopeFn),
}

/// A user's scope function.
pub(crate) type ScopeFn = Arc<dyn Fn(&Parts) -> Option<Vec<u8>> + Send + Sync>;

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Authorization => f.write_str("Authorization"),
            Scope::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// The stored key of a request.
pub(crate) fn key(
    namespace: &str,
    scope: &Scope,
    parts: &Parts,
    client_key: &str,
) -> Result<Key, Error> {
    let hasher = key_hasher();
    let namespace = [NAMESPACE_ROOT, namespace];
    match scope {
        Scope::Authorization => {
            let auth = parts.headers.get(AUTHORIZATION).map(|v| Raw(v.as_bytes()));
            hasher.key(&namespace, &(auth, client_key))
        }
        Scope::Custom(scope) => {
            let scope = scope(parts);
            hasher.key(&namespace, &(scope.as_deref().map(Raw), client_key))
        }
    }
}

/// The fingerprint of a request: method, path and query, `Content-Type`, body bytes.
pub(crate) fn fingerprint(parts: &Parts, body: &[u8]) -> Result<Fingerprint, Error> {
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let content_type = parts.headers.get(CONTENT_TYPE).map(|v| Raw(v.as_bytes()));
    key_hasher().fingerprint(&(parts.method.as_str(), path, content_type, Raw(body)))
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

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn every_part_of_the_request_is_in_the_fingerprint() {
        let base = || Request::post("/charges?x=1").header(CONTENT_TYPE, "application/json");
        let a = fingerprint(&parts(base().body(()).unwrap()), b"{}").unwrap();
        assert_eq!(
            a,
            fingerprint(&parts(base().body(()).unwrap()), b"{}").unwrap()
        );
        assert_ne!(
            a,
            fingerprint(&parts(base().body(()).unwrap()), b"{ }").unwrap()
        );
        let other_query = Request::post("/charges?x=2").header(CONTENT_TYPE, "application/json");
        assert_ne!(
            a,
            fingerprint(&parts(other_query.body(()).unwrap()), b"{}").unwrap()
        );
        let other_method = Request::patch("/charges?x=1").header(CONTENT_TYPE, "application/json");
        assert_ne!(
            a,
            fingerprint(&parts(other_method.body(()).unwrap()), b"{}").unwrap()
        );
        let other_type = Request::post("/charges?x=1").header(CONTENT_TYPE, "text/plain");
        assert_ne!(
            a,
            fingerprint(&parts(other_type.body(()).unwrap()), b"{}").unwrap()
        );
    }

    #[test]
    fn the_scope_separates_clients() {
        let with_auth = |auth: &str| {
            parts(
                Request::post("/")
                    .header(AUTHORIZATION, auth)
                    .body(())
                    .unwrap(),
            )
        };
        let scope = Scope::Authorization;
        let a = key("ns", &scope, &with_auth("Bearer a"), "k1").unwrap();
        assert_eq!(a, key("ns", &scope, &with_auth("Bearer a"), "k1").unwrap());
        assert_ne!(a, key("ns", &scope, &with_auth("Bearer b"), "k1").unwrap());
        assert_ne!(
            a,
            key("other", &scope, &with_auth("Bearer a"), "k1").unwrap()
        );
        let anonymous = parts(Request::post("/").body(()).unwrap());
        assert_ne!(a, key("ns", &scope, &anonymous, "k1").unwrap());
    }
}
