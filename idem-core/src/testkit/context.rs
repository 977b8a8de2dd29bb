//! What every check works with: the store and the run's keys, the fingerprints and
//! records the checks store, and how a store error reads in a failure. Its own module so
//! the checks and the suite that runs them do not depend on each other.

use std::sync::Arc;
use std::time::Duration;

use crate::key::{Fingerprint, Key, KeyHasher};
use crate::store::{Record, SharedStore};

/// A lease or TTL that does not lapse during a check.
pub(super) const LONG: Duration = Duration::from_secs(60);

/// What one property's check works with: the store, and the run's key namespace.
pub(super) struct Ctx {
    pub(super) store: SharedStore,
    pub(super) run: Arc<str>,
}

impl Ctx {
    /// The key `name`/`index` of this run.
    pub(super) fn key(&self, name: &str, index: u64) -> Key {
        key(&self.run, name, index)
    }
}

/// The key `name`/`index` under `run`.
pub(super) fn key(run: &str, name: &str, index: u64) -> Key {
    KeyHasher::unkeyed()
        .key(&["idem.testkit", run, name], &index)
        .expect("a u64 always encodes")
}

/// The fingerprint calls of the suite claim with, and another one.
pub(super) const FINGERPRINT: Fingerprint = Fingerprint::from_bytes([7; 32]);
pub(super) const OTHER_FINGERPRINT: Fingerprint = Fingerprint::from_bytes([9; 32]);

/// A record of `value` under [`FINGERPRINT`].
pub(super) fn record(value: &str) -> Arc<Record> {
    Arc::new(Record::new(FINGERPRINT, value.as_bytes().to_vec()))
}

/// A store error as a failure's detail: the suite cannot go on past it.
pub(super) fn store_error(step: &str) -> impl FnOnce(crate::Error) -> String + '_ {
    move |err| {
        let mut detail = format!("{step}: the store failed: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(err) = source {
            detail.push_str(&format!(": {err}"));
            source = err.source();
        }
        detail
    }
}
