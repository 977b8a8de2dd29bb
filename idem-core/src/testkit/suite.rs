//! The suite's settings and the loop that checks each property on a store from `make`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::context::Ctx;
use super::report::{Failure, Property, Report};
use super::{model, properties, stress};
use crate::store::SharedStore;

/// Checks `make`'s store against every [`Property`] with the default [`Suite`] settings.
///
/// `make` is called once per property; return a fresh store, or a clone of one you keep.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use idem_core::{MokaStore, SharedStore};
///
/// let store = SharedStore::new(MokaStore::new());
/// let report = idem_core::testkit::check_store(|| async { store.clone() }).await;
/// assert!(report.is_ok(), "{}", report.unwrap_err());
/// # }
/// ```
pub async fn check_store<F, Fut, S>(make: F) -> Result<Report, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Into<SharedStore>,
{
    Suite::new().run(make).await
}

/// The conformance suite's settings: how many random schedules, how many stress rounds,
/// the seed, which properties.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use idem_core::MokaStore;
/// use idem_core::testkit::Suite;
///
/// let report = Suite::new()
///     .schedules(200)
///     .parallel(16)
///     .stress_rounds(4)
///     .seed(7)
///     .run(|| async { MokaStore::new() })
///     .await
///     .unwrap();
/// assert_eq!(report.seed(), 7);
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Suite {
    schedules: u64,
    parallel: usize,
    stress_rounds: u64,
    seed: Option<u64>,
    only: Option<Vec<Property>>,
}

impl Default for Suite {
    fn default() -> Self {
        Suite::new()
    }
}

impl Suite {
    /// 1,000 random schedules, 32 at a time; 20 stress rounds; a random seed (or
    /// `IDEM_TESTKIT_SEED`); every property.
    pub fn new() -> Self {
        Suite {
            schedules: 1_000,
            parallel: 32,
            stress_rounds: 20,
            seed: None,
            only: None,
        }
    }

    /// How many random schedules `random_schedules` runs (each 24 steps on 2 keys).
    pub fn schedules(mut self, count: u64) -> Self {
        self.schedules = count;
        self
    }

    /// How many schedules run at once (at least 1).
    pub fn parallel(mut self, tasks: usize) -> Self {
        self.parallel = tasks.max(1);
        self
    }

    /// How many rounds `concurrent_stress` runs (each 8 racing holders on 2 keys).
    pub fn stress_rounds(mut self, rounds: u64) -> Self {
        self.stress_rounds = rounds;
        self
    }

    /// The first seed of the random schedules and stress rounds (a failure names its
    /// seed; set it here to run the same schedules again).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks only these properties (in the suite's order).
    pub fn only(mut self, properties: &[Property]) -> Self {
        self.only = Some(properties.to_vec());
        self
    }

    /// Checks `make`'s store against each property in turn; the first that fails ends the
    /// run with a [`Failure`] naming it. `make` is called once per property.
    pub async fn run<F, Fut, S>(&self, mut make: F) -> Result<Report, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = S>,
        S: Into<SharedStore>,
    {
        let seed = self.seed.unwrap_or_else(|| {
            std::env::var("IDEM_TESTKIT_SEED")
                .ok()
                .and_then(|seed| seed.trim().parse().ok())
                .unwrap_or_else(|| fastrand::u64(..u64::MAX / 2))
        });
        // Keys of this run only, so a shared store's earlier records never meet it.
        let run = format!("{:016x}-{}", fastrand::u64(..), std::process::id());
        let mut checked = Vec::new();
        for property in Property::ALL {
            if self
                .only
                .as_ref()
                .is_some_and(|only| !only.contains(&property))
            {
                continue;
            }
            let ctx = Ctx {
                store: make().await.into(),
                run: Arc::from(format!("{run}-{}", property.name())),
            };
            let started = Instant::now();
            let result = match property {
                Property::ClaimIsAtomic => properties::claim_is_atomic(&ctx).await,
                Property::CompletedReplays => properties::completed_replays(&ctx).await,
                Property::InProgress => properties::in_progress(&ctx).await,
                Property::Fencing => properties::fencing(&ctx).await,
                Property::LeaseTakeover => properties::lease_takeover(&ctx).await,
                Property::ReleaseFreesKey => properties::release_frees_key(&ctx).await,
                Property::Forget => properties::forget(&ctx).await,
                Property::TtlExpiry => properties::ttl_expiry(&ctx).await,
                Property::RandomSchedules => {
                    model::schedules(&ctx, seed, self.schedules, self.parallel).await
                }
                Property::ConcurrentStress => stress::rounds(&ctx, seed, self.stress_rounds).await,
            };
            result.map_err(|detail| match property {
                Property::RandomSchedules | Property::ConcurrentStress => Failure::new(
                    property,
                    format!(
                        "{detail}\n  (the same schedules again: `Suite::new().seed({seed})`, \
                         or IDEM_TESTKIT_SEED={seed})"
                    ),
                ),
                _ => Failure::new(property, detail),
            })?;
            checked.push((property, started.elapsed()));
        }
        Ok(Report { checked, seed })
    }
}
