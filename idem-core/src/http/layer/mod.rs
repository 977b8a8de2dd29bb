//! The layer and its builder: where records go, how long they last, which requests are
//! protected, and what is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{HeaderName, Method};
use tokio_util::task::TaskTracker;
use tower::Layer;

mod request;
mod response;
mod scope;

use response::NOT_REPLAYED;
pub use response::ResponseProfile;

use super::capture::{CaptureRules, ietf_stores_status};
use super::config::{Config, Shared};
use super::drain::Drain;
use super::fingerprint::BodyFingerprint;
use super::key_header;
use super::scope::ScopeRule;
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
                header: key_header::DEFAULT_HEADER,
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
