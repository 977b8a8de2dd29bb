//! What a layer was built with, and what every service of one layer shares: its own
//! module so that the layer (which builds them) and the service (which reads them) do not
//! depend on each other.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use tokio_util::task::TaskTracker;

use super::capture::CaptureRules;
use super::fingerprint::BodyFingerprint;
use super::scope::ScopeRule;
use crate::spec::Spec;
use crate::store::SharedStore;

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
    pub(crate) scope: ScopeRule,
    pub(crate) body_fingerprint: BodyFingerprint,
    pub(crate) max_request_body: usize,
    pub(crate) capture: CaptureRules,
    pub(crate) not_replayed: Arc<[HeaderName]>,
    /// `false`: keys are checked and handed to the handler, nothing is stored.
    pub(crate) record: bool,
}

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) spec: &'static Spec,
    pub(crate) tasks: TaskTracker,
}
