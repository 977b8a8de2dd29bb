//! The layer's settings of whose key space a request belongs to: the principal the app's
//! authentication decided on, a credential, or — only when asked — one anonymous scope.

use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use serde::Serialize;

use super::IdempotencyLayer;
use crate::http::scope::{self, ScopeSource};

impl IdempotencyLayer {
    /// Scopes keys by a value the app's authentication put in the request's extensions:
    /// the principal (user or tenant id) its auth layer decided on, the axum way. Two
    /// principals never share a key; a refreshed token of one principal keeps its keys. The
    /// value is hashed from its canonical encoding (as function keys are), so any
    /// `Serialize` id type will do. A request without the extension gets 400
    /// `idempotency-scope-missing` (unless [`allow_anonymous`](Self::allow_anonymous)).
    /// Put this layer *inside* the auth layer, so the extension is set when it runs.
    ///
    /// ```
    /// #[derive(Clone, serde::Serialize)]
    /// struct UserId(u64); // inserted by the app's auth middleware
    ///
    /// let layer = idem_core::http::IdempotencyLayer::new().scope_from_extension::<UserId>();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn scope_from_extension<T>(self) -> Self
    where
        T: Serialize + Send + Sync + 'static,
    {
        self.scope(|parts| parts.extensions.get::<T>().and_then(scope::of_value))
    }

    /// Scopes keys by a named header's value (an API key header such as `X-Api-Key`);
    /// hashed, never stored as itself. Missing: 400 (unless
    /// [`allow_anonymous`](Self::allow_anonymous)); twice: 400.
    ///
    /// ```
    /// use http::HeaderName;
    /// let layer = idem_core::http::IdempotencyLayer::new()
    ///     .scope_from_header(HeaderName::from_static("x-api-key"));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn scope_from_header(self, header: HeaderName) -> Self {
        self.with(|c| c.scope.source = ScopeSource::Header(header))
    }

    /// Scopes keys by a named cookie's value (a session id); hashed, never stored as itself.
    /// Missing or empty: 400 (unless [`allow_anonymous`](Self::allow_anonymous)); the same
    /// cookie twice with two values: 400.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().scope_from_cookie("sid");
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn scope_from_cookie(self, cookie: impl Into<String>) -> Self {
        let cookie: Arc<str> = cookie.into().into();
        self.with(|c| c.scope.source = ScopeSource::Cookie(cookie))
    }

    /// Scopes keys by the `Authorization` header, hashed (the default). Each credential is
    /// its own scope: a client that refreshes its token between a timeout and the retry
    /// gets a *new* key space, and the retry runs the handler again. Prefer
    /// [`scope_from_extension`](Self::scope_from_extension) where the app resolves tokens
    /// to principals. Missing: 400 (unless [`allow_anonymous`](Self::allow_anonymous));
    /// twice: 400.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().scope_from_authorization();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn scope_from_authorization(self) -> Self {
        self.with(|c| c.scope.source = ScopeSource::Authorization)
    }

    /// Scopes keys by any function of the request head (a tenant from the host name, say):
    /// `None` means the request names no principal (400 unless
    /// [`allow_anonymous`](Self::allow_anonymous)). The bytes are hashed.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().scope(|parts| {
    ///     parts.headers.get("x-tenant").map(|tenant| tenant.as_bytes().to_vec())
    /// });
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn scope<F, T>(self, scope: F) -> Self
    where
        F: Fn(&Parts) -> Option<T> + Send + Sync + 'static,
        T: Into<Vec<u8>>,
    {
        let scope = ScopeSource::Custom(Arc::new(move |parts| scope(parts).map(Into::into)));
        self.with(|c| c.scope.source = scope)
    }

    /// Requests that name no principal share one anonymous key space, instead of getting
    /// 400: for public endpoints only. Any client that guesses or sees another's key then
    /// gets that client's stored response.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().allow_anonymous();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn allow_anonymous(self) -> Self {
        self.with(|c| c.scope.anonymous = true)
    }
}
