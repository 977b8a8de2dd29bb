//! [`IdempotencyKey`]: the request's key and scope, for a handler — with exactly the
//! layer's rules, so `"ordo-1"` (an RFC 8941 string) and `ordo-1` (bare) are one key, and a
//! bad key gets the layer's own 400.

use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use serde::{Serialize, Serializer};

use super::fingerprint::Raw;
use super::key_header::{self, KeyError};
use super::problem::Problem;
use super::scope::{ScopeError, ScopeRule};

/// The request's `Idempotency-Key`, canonical, with the scope (principal) it belongs to.
///
/// Behind an [`IdempotencyLayer`](super::IdempotencyLayer) — [`keys_only`] for a route that
/// records idempotency itself — it is the key and scope the layer resolved, with the
/// layer's header and scope rules. Without a layer it reads the `Idempotency-Key` header
/// and scopes by `Authorization`, as a default layer does. A missing or malformed key, or
/// no principal, is the layer's 400 problem+json.
///
/// It serializes as its scope and key, so it is an `#[idempotent]` key as it is: the same
/// client key from two principals is two keys.
///
/// ```
/// use axum::{Router, routing::post};
/// use idem_core::http::{IdempotencyKey, IdempotencyLayer};
///
/// #[derive(Clone, serde::Serialize)]
/// struct UserId(u64);
///
/// #[idem_core::idempotent(key = "key", name = "orders.place.v1")]
/// async fn place_order(key: IdempotencyKey, sku: String) -> Result<String, idem_core::Error> {
///     Ok(format!("order for {sku}"))
/// }
///
/// async fn handler(key: IdempotencyKey, body: String) -> String {
///     assert_eq!(key.as_str(), "ordo-1"); // also for `"ordo-1"`, quoted
///     place_order(key, body).await.unwrap_or_else(|err| err.to_string())
/// }
///
/// let app: Router = Router::new().route("/orders", post(handler)).layer(
///     IdempotencyLayer::new().scope_from_extension::<UserId>().keys_only(),
/// );
/// # drop(app);
/// ```
///
/// [`keys_only`]: super::IdempotencyLayer::keys_only
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: Arc<str>,
    scope: Option<Arc<[u8]>>,
}

impl IdempotencyKey {
    pub(crate) fn new(key: &str, scope: Option<&[u8]>) -> Self {
        IdempotencyKey {
            key: key.into(),
            scope: scope.map(Into::into),
        }
    }

    /// The client's key, unquoted (the same for `"k-1"` and `k-1`).
    ///
    /// ```
    /// use axum::extract::FromRequestParts;
    /// use idem_core::http::IdempotencyKey;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (mut parts, ()) = http::Request::post("/orders")
    ///     .header("idempotency-key", "\"k-1\"")
    ///     .header("authorization", "Bearer t1")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// let key = IdempotencyKey::from_request_parts(&mut parts, &()).await.unwrap();
    /// assert_eq!(key.as_str(), "k-1");
    /// # }
    /// ```
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The bytes the scope was resolved to (a credential, a cookie, or the hash of the
    /// principal extension); `None` in a layer's anonymous scope. Treat them as secret: for
    /// `Authorization` they are the credential itself.
    ///
    /// ```
    /// use axum::extract::FromRequestParts;
    /// use idem_core::http::IdempotencyKey;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (mut parts, ()) = http::Request::post("/orders")
    ///     .header("idempotency-key", "\"k-1\"")
    ///     .header("authorization", "Bearer t1")
    ///     .body(())
    ///     .unwrap()
    ///     .into_parts();
    /// let key = IdempotencyKey::from_request_parts(&mut parts, &()).await.unwrap();
    /// assert_eq!(key.scope(), Some(&b"Bearer t1"[..]));
    /// # }
    /// ```
    pub fn scope(&self) -> Option<&[u8]> {
        self.scope.as_deref()
    }
}

/// As (scope bytes, client key): what the layer's stored key hashes too, so a function
/// keyed by it and the layer agree on one key per principal and client key.
impl Serialize for IdempotencyKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The scope is hashed into the key by the key encoder; it is never stored.
        (self.scope.as_deref().map(Raw), &*self.key).serialize(serializer)
    }
}

/// Why a request has no usable [`IdempotencyKey`]: answered as the layer's own 400
/// problem+json.
///
/// ```
/// use axum::extract::FromRequestParts;
/// use axum::response::IntoResponse;
/// use idem_core::http::IdempotencyKey;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (mut parts, ()) = http::Request::post("/orders").body(()).unwrap().into_parts();
/// let rejection = IdempotencyKey::from_request_parts(&mut parts, &()).await.unwrap_err();
/// assert_eq!(rejection.into_response().status(), http::StatusCode::BAD_REQUEST);
/// # }
/// ```
#[derive(Debug)]
pub struct IdempotencyKeyRejection(Problem);

impl IntoResponse for IdempotencyKeyRejection {
    fn into_response(self) -> Response {
        self.0.into_response().map(axum_core::body::Body::new)
    }
}

impl std::fmt::Display for IdempotencyKeyRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.title())
    }
}

impl std::error::Error for IdempotencyKeyRejection {}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = IdempotencyKeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(key) = parts.extensions.get::<IdempotencyKey>() {
            return Ok(key.clone());
        }
        let key = key_header::client_key(&parts.headers, &key_header::DEFAULT_HEADER)
            .map_err(|err: KeyError| IdempotencyKeyRejection(Problem::Key(err)))?;
        let scope = ScopeRule::default()
            .resolve(parts)
            .map_err(|err: ScopeError| IdempotencyKeyRejection(Problem::Scope(err)))?;
        Ok(IdempotencyKey::new(&key, scope.as_deref()))
    }
}

/// `Option<IdempotencyKey>`: `None` when the request has no key header; a malformed key or
/// a missing principal is still the layer's 400.
impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = IdempotencyKeyRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <Self as FromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(key) => Ok(Some(key)),
            Err(IdempotencyKeyRejection(Problem::Key(KeyError::Missing))) => Ok(None),
            Err(rejection) => Err(rejection),
        }
    }
}
