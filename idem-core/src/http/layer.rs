//! The layer and its builder: where records go, how long they last, which requests are
//! protected, and what is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use serde::Serialize;
use tokio_util::task::TaskTracker;
use tower::Layer;

use super::capture::{CaptureRules, ietf_stores_status, stripe_stores_status};
use super::config::{Config, Shared};
use super::drain::Drain;
use super::fingerprint::BodyFingerprint;
use super::scope::{self, ScopeRule, ScopeSource};
use super::service::IdempotencyService;
use crate::spec::{InFlight, Spec};
use crate::store::SharedStore;

/// The per-request headers a replay does not repeat by default: they describe the first
/// request, not the operation.
const NOT_REPLAYED: [HeaderName; 3] = [
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("server-timing"),
];

/// Which responses are stored, as a whole policy; [`IdempotencyLayer::stored_statuses`]
/// sets any other.
///
/// ```
/// use idem_core::http::{IdempotencyLayer, ResponseProfile};
///
/// let layer = IdempotencyLayer::new().profile(ResponseProfile::Stripe);
/// # drop(layer);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ResponseProfile {
    /// The default, after the IETF draft (which lets the server choose): 2xx, 3xx and 4xx
    /// are stored except 401, 403, 404, 405, 408, 409, 413, 425 and 429 (the request was
    /// not handled: a retry after the fix must run); 5xx is never stored, so a retry
    /// after a failure runs the handler again.
    #[default]
    Ietf,
    /// Stripe's: once the handler ran, its answer is final — 2xx, 3xx, 402 and every 5xx
    /// are stored and replayed (a retry never reruns a half-failed handler); other 4xx are
    /// not stored.
    Stripe,
}

/// The longest duration a setting takes; longer ones are cut to it (no `Instant` overflow).
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The shortest lease: it is renewed every third of itself.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// A tower [`Layer`] that makes unsafe HTTP requests idempotent with the `Idempotency-Key`
/// header: the first request with a key runs the handler and stores its response; a retry
/// with the same key gets the stored response (with `Idempotent-Replayed: true`) and the
/// handler does not run again.
///
/// Works as axum 0.8's `Router::layer(..)` or `route_layer(..)`, and around any tower
/// service whose request body can be built from [`Bytes`](bytes::Bytes). Every setting is
/// a by-value builder method; the defaults are in each method's doc.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::post};
/// use idem_core::http::IdempotencyLayer;
///
/// let app: Router = Router::new()
///     .route("/charges", post(|| async { (axum::http::StatusCode::CREATED, "charged") }))
///     .layer(
///         IdempotencyLayer::new()
///             .namespace("payments")
///             .ttl(Duration::from_secs(24 * 3600))
///             .wait(Duration::from_secs(5)),
///     );
/// # drop(app);
/// ```
#[derive(Clone, Debug)]
pub struct IdempotencyLayer {
    config: Arc<Config>,
    spec: Arc<OnceLock<&'static Spec>>,
    tasks: TaskTracker,
}

impl Default for IdempotencyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl IdempotencyLayer {
    /// A layer on the process default store ([`install`](crate::install)ed, or a
    /// `MokaStore`), protecting POST and PATCH, with the `Idempotency-Key` header required.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new();
    /// # drop(layer);
    /// ```
    pub fn new() -> Self {
        IdempotencyLayer {
            config: Arc::new(Config {
                store: None,
                namespace: "default".into(),
                ttl: Duration::from_secs(24 * 3600),
                lease: Duration::from_secs(30),
                wait: None,
                header: HeaderName::from_static("idempotency-key"),
                methods: vec![Method::POST, Method::PATCH],
                optional: false,
                scope: ScopeRule::default(),
                body_fingerprint: BodyFingerprint::Bytes,
                max_request_body: 1024 * 1024,
                capture: CaptureRules {
                    max_body: 1024 * 1024,
                    max_time: Duration::from_millis(100),
                    stores_status: Arc::new(ietf_stores_status),
                    honor_cache_control: false,
                },
                not_replayed: Arc::new(NOT_REPLAYED),
                record: true,
            }),
            spec: Arc::new(OnceLock::new()),
            tasks: TaskTracker::new(),
        }
    }

    fn with(mut self, edit: impl FnOnce(&mut Config)) -> Self {
        edit(Arc::make_mut(&mut self.config));
        self.spec = Arc::new(OnceLock::new());
        self
    }

    /// The store of this layer's records (default: the process default store). Share one
    /// `RedisStore` between processes, and with `#[idempotent]` functions.
    ///
    /// ```
    /// use idem_core::{MokaStore, http::IdempotencyLayer};
    ///
    /// let layer = IdempotencyLayer::new().store(MokaStore::new());
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn store(self, store: impl Into<SharedStore>) -> Self {
        let store = store.into();
        self.with(|c| c.store = Some(store))
    }

    /// The namespace of this layer's keys (default `"default"`): two layers with other
    /// namespaces never share a record, even for the same client key and scope. Also the
    /// `function` field of the layer's `tracing` events (`http:{namespace}`).
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().namespace("payments.v1");
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.with(|c| c.namespace = namespace)
    }

    /// How long a stored response is replayed (default 24 h, as Stripe).
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = idem_core::http::IdempotencyLayer::new().ttl(Duration::from_secs(3600));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn ttl(self, ttl: Duration) -> Self {
        let ttl = ttl.clamp(Duration::from_millis(1), MAX_DURATION);
        self.with(|c| c.ttl = ttl)
    }

    /// How long a running request holds its key without renewal before it is presumed
    /// crashed and the key may be taken over (default 30 s; at least 100 ms). A live handler
    /// renews its lease, so a short lease does not cut a slow handler short.
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = idem_core::http::IdempotencyLayer::new().lease(Duration::from_secs(10));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn lease(self, lease: Duration) -> Self {
        let lease = lease.clamp(MIN_LEASE, MAX_DURATION);
        self.with(|c| c.lease = lease)
    }

    /// A duplicate that arrives while the first request runs waits up to `wait` for the
    /// first response and gets it (then 409 if the wait runs out). Default: no wait, the
    /// duplicate gets 409 with `Retry-After` at once (the IETF draft's behaviour).
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = idem_core::http::IdempotencyLayer::new().wait(Duration::from_secs(10));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn wait(self, wait: Duration) -> Self {
        let wait = wait.min(MAX_DURATION);
        self.with(|c| c.wait = Some(wait))
    }

    /// The key header (default `Idempotency-Key`).
    ///
    /// ```
    /// use http::HeaderName;
    /// let layer = idem_core::http::IdempotencyLayer::new()
    ///     .header(HeaderName::from_static("x-request-key"));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn header(self, header: HeaderName) -> Self {
        self.with(|c| c.header = header)
    }

    /// The methods that are protected (default POST and PATCH); others pass through.
    ///
    /// ```
    /// use http::Method;
    /// let layer = idem_core::http::IdempotencyLayer::new()
    ///     .methods([Method::POST, Method::PATCH, Method::DELETE]);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn methods(self, methods: impl IntoIterator<Item = Method>) -> Self {
        let methods = methods.into_iter().collect();
        self.with(|c| c.methods = methods)
    }

    /// A protected request without a key passes through unprotected, instead of 400.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().optional();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn optional(self) -> Self {
        self.with(|c| c.optional = true)
    }

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
    /// hands them to the handler as an [`IdempotencyKey`](super::IdempotencyKey), but stores
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

    /// The largest response body stored (default 1 MiB). A larger response, a
    /// `text/event-stream`, or one whose body is not complete within
    /// [`stream_after`](Self::stream_after) is passed on live and stored as "completed, not
    /// replayable": a retry gets 409 `idempotent-response-not-replayable`, never a second run.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().max_response_body(8 * 1024 * 1024);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn max_response_body(self, bytes: usize) -> Self {
        self.with(|c| c.capture.max_body = bytes)
    }

    /// How long after the response head its body may take to complete and still be stored
    /// whole (default 100 ms). A body still running then (NDJSON, a ticker, a long
    /// download) is passed on live from its first byte, and its key is recorded at once as
    /// completed but not replayable; the [`Drain`] never waits on a response body.
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = idem_core::http::IdempotencyLayer::new().stream_after(Duration::from_secs(1));
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn stream_after(self, time: Duration) -> Self {
        let time = time.min(MAX_DURATION);
        self.with(|c| c.capture.max_time = time)
    }

    /// Which response statuses are stored and replayed (default
    /// [`ResponseProfile::Ietf`]). An unstored response releases the key, so a retry runs
    /// the handler again. 1xx is never stored.
    ///
    /// ```
    /// use http::StatusCode;
    /// let layer = idem_core::http::IdempotencyLayer::new()
    ///     .stored_statuses(|status| status.is_success() || status == StatusCode::PAYMENT_REQUIRED);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn stored_statuses<F>(self, stores: F) -> Self
    where
        F: Fn(StatusCode) -> bool + Send + Sync + 'static,
    {
        self.with(|c| c.capture.stores_status = Arc::new(stores))
    }

    /// Which responses are stored, as a named policy (default [`ResponseProfile::Ietf`]).
    ///
    /// ```
    /// use idem_core::http::{IdempotencyLayer, ResponseProfile};
    /// let layer = IdempotencyLayer::new().profile(ResponseProfile::Stripe);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn profile(self, profile: ResponseProfile) -> Self {
        match profile {
            ResponseProfile::Ietf => self.stored_statuses(ietf_stores_status),
            ResponseProfile::Stripe => self.stored_statuses(stripe_stores_status),
        }
    }

    /// Honour `Cache-Control: no-store` on a response as "do not store it" (off by default:
    /// many frameworks send it on every response, which would turn idempotency off). The
    /// opt-out meant for handlers is the [`NoStore`](super::NoStore) response extension.
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new().honor_cache_control_no_store();
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn honor_cache_control_no_store(self) -> Self {
        self.with(|c| c.capture.honor_cache_control = true)
    }

    /// The response headers a replay does not repeat, because they describe the first
    /// request rather than the operation (default `x-request-id`, `traceparent`,
    /// `server-timing`). Replaces the list. Hop-by-hop headers, `Date`, `Set-Cookie` and
    /// `Content-Length` are never stored whatever the list.
    ///
    /// ```
    /// use http::HeaderName;
    /// let layer = idem_core::http::IdempotencyLayer::new().not_replayed_headers([
    ///     HeaderName::from_static("x-request-id"),
    ///     HeaderName::from_static("x-trace-id"),
    /// ]);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn not_replayed_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let headers: Arc<[HeaderName]> = headers.into_iter().collect();
        self.with(|c| c.not_replayed = headers)
    }

    /// A handle to await the handlers this layer (and its clones) are running, on shutdown.
    /// See [`Drain`].
    ///
    /// ```
    /// let layer = idem_core::http::IdempotencyLayer::new();
    /// let drain = layer.drain();
    /// # drop(drain);
    /// ```
    pub fn drain(&self) -> Drain {
        Drain {
            tasks: self.tasks.clone(),
        }
    }

    fn spec(&self) -> &'static Spec {
        self.spec.get_or_init(|| {
            let c = &self.config;
            let in_flight = if c.wait.is_some() {
                InFlight::Wait
            } else {
                InFlight::Reject
            };
            interned_spec(
                format!("http:{}", c.namespace),
                c.ttl,
                c.lease,
                c.wait.unwrap_or(Duration::ZERO),
                in_flight,
            )
        })
    }
}

/// The record protocol's events and background store retries hold a `&'static Spec`: one
/// is leaked per distinct setting, shared by every layer built with it, so layers built
/// and dropped at run time (per tenant, per request) do not grow memory.
fn interned_spec(
    name: String,
    ttl: Duration,
    lease: Duration,
    wait: Duration,
    in_flight: InFlight,
) -> &'static Spec {
    type Settings = (String, Duration, Duration, Duration, InFlight);
    static SPECS: OnceLock<Mutex<HashMap<Settings, &'static Spec>>> = OnceLock::new();
    let mut specs = SPECS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let settings = (name, ttl, lease, wait, in_flight);
    if let Some(spec) = specs.get(&settings) {
        return spec;
    }
    let spec: &'static Spec = Box::leak(Box::new(Spec {
        name: Box::leak(settings.0.clone().into_boxed_str()),
        ttl,
        lease,
        wait,
        in_flight,
    }));
    specs.insert(settings, spec);
    spec
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(
            inner,
            Arc::new(Shared {
                config: Arc::clone(&self.config),
                spec: self.spec(),
                tasks: self.tasks.clone(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_built_at_run_time_share_one_spec_per_setting() {
        let spec = |namespace: &str| IdempotencyLayer::new().namespace(namespace).spec();
        let first = spec("tenant-a");
        for _ in 0..1_000 {
            assert!(
                std::ptr::eq(first, spec("tenant-a")),
                "a spec leaked per layer"
            );
        }
        assert!(!std::ptr::eq(first, spec("tenant-b")));
        assert_eq!(first.name, "http:tenant-a");
    }
}
