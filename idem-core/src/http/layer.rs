//! The layer and its builder: where records go, how long they last, which requests are
//! protected, and what is stored.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use tokio_util::task::TaskTracker;
use tower::Layer;

use super::capture::{CaptureRules, default_stores_status};
use super::drain::Drain;
use super::fingerprint::Scope;
use super::service::IdempotencyService;
use crate::spec::{InFlight, Spec};
use crate::store::SharedStore;

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

/// The settings of a layer.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) store: Option<SharedStore>,
    pub(crate) namespace: String,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) wait: Option<Duration>,
    pub(crate) header: HeaderName,
    pub(crate) methods: Vec<Method>,
    pub(crate) optional: bool,
    pub(crate) scope: Scope,
    pub(crate) max_request_body: usize,
    pub(crate) capture: CaptureRules,
}

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) spec: &'static Spec,
    pub(crate) tasks: TaskTracker,
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
                scope: Scope::Authorization,
                max_request_body: 1024 * 1024,
                capture: CaptureRules {
                    max_body: 1024 * 1024,
                    stores_status: default_stores_status,
                },
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

    /// Whose key space a request belongs to, from its head: a tenant or principal id. Two
    /// scopes never share a record, even with the same client key; `None` is the shared
    /// anonymous scope. The default is the `Authorization` header (hashed into the key,
    /// never stored as itself). The scope is hashed, so any bytes will do.
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
        let scope = Scope::Custom(Arc::new(move |parts| scope(parts).map(Into::into)));
        self.with(|c| c.scope = scope)
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

    /// The largest response body stored (default 1 MiB). A larger response, or a
    /// `text/event-stream`, is streamed to its client and stored as "completed, not
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

    /// Which response statuses are stored and replayed. Default: all but 5xx, 408 and 429,
    /// which say the attempt failed and may be retried — their key is released, so a retry
    /// runs the handler again. 1xx is never stored. A response with `Cache-Control:
    /// no-store` is never stored whatever its status.
    ///
    /// ```
    /// use http::StatusCode;
    /// // Stripe's choice: store 500s too, so a retry never runs a half-failed handler again.
    /// let layer = idem_core::http::IdempotencyLayer::new()
    ///     .stored_statuses(|status| status != StatusCode::TOO_MANY_REQUESTS);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn stored_statuses(self, stores: fn(StatusCode) -> bool) -> Self {
        self.with(|c| c.capture.stores_status = stores)
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
        // One leaked `Spec` per configured layer: the record protocol's events and its
        // background store retries hold it for as long as the process runs.
        self.spec.get_or_init(|| {
            let c = &self.config;
            Box::leak(Box::new(Spec {
                name: Box::leak(format!("http:{}", c.namespace).into_boxed_str()),
                ttl: c.ttl,
                lease: c.lease,
                wait: c.wait.unwrap_or(Duration::ZERO),
                in_flight: if c.wait.is_some() {
                    InFlight::Wait
                } else {
                    InFlight::Reject
                },
            }))
        })
    }
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
