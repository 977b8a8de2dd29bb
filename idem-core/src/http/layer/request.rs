//! The layer's settings of how a request is compared with the first one, how much of it is
//! read, and whether the layer records anything at all.

use std::sync::Arc;

use http::request::Parts;

use super::IdempotencyLayer;
use crate::http::fingerprint::BodyFingerprint;

impl IdempotencyLayer {
    /// Compares request bodies as JSON, canonically, instead of byte for byte: object key
    /// order and whitespace do not matter, and neither do the query's parameter order or
    /// `Content-Type` parameters (`; charset=utf-8`). A body that is not JSON (or is
    /// compressed) is still compared byte for byte.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().fingerprint_json();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn fingerprint_json(self) -> Self {
        self.with(|c| c.body_fingerprint = BodyFingerprint::Json)
    }

    /// Compares what `fingerprint` takes from the request instead of its body, `Content-Type`
    /// and query (method and path are still compared): leave out what an honest retry may
    /// change (a timestamp the client puts in the body).
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().fingerprint_with(|_parts, body| {
    ///     // Everything but the first line (a client's send time).
    ///     body.splitn(2, |&b| b == b'\n').nth(1).unwrap_or_default().to_vec()
    /// });
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn fingerprint_with<F>(self, fingerprint: F) -> Self
    where
        F: Fn(&Parts, &[u8]) -> Vec<u8> + Send + Sync + 'static,
    {
        let fingerprint = BodyFingerprint::Custom(Arc::new(fingerprint));
        self.with(|c| c.body_fingerprint = fingerprint)
    }

    /// Checks every protected request's key and scope as usual (400 for a bad one) and
    /// hands them to the handler as an [`IdempotencyKey`](crate::http::IdempotencyKey), but stores
    /// nothing: for routes whose handler records idempotency itself, in the same database
    /// transaction as its writes (`#[idempotent(transaction = "tx")]`).
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().keys_only();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn keys_only(self) -> Self {
        self.with(|c| c.record = false)
    }

    /// The largest request body read (default 1 MiB); a larger one gets 413 and nothing is
    /// claimed. The whole body is part of the fingerprint, so it is read before the handler
    /// runs.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().max_request_body(64 * 1024);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn max_request_body(self, bytes: usize) -> Self {
        self.with(|c| c.max_request_body = bytes)
    }
}
