//! What the suite checked, or the first property a store broke.

use std::fmt;
use std::time::Duration;

/// One property of the record protocol the suite checks (see the
/// [module docs](crate::testkit) for what each requires).
///
/// ```
/// use idem_core::testkit::Property;
///
/// assert_eq!(Property::ClaimIsAtomic.name(), "claim_is_atomic");
/// assert_eq!(Property::ALL.len(), 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Property {
    /// Concurrent claims of one free key: exactly one is granted.
    ClaimIsAtomic,
    /// A completed key replays its record to every later claim.
    CompletedReplays,
    /// A live claim answers in progress to every other claim.
    InProgress,
    /// Renew, complete and release act only with the live token.
    Fencing,
    /// A lapsed lease is taken over by the next claim; a renewed one holds.
    LeaseTakeover,
    /// A release by the holder frees the key.
    ReleaseFreesKey,
    /// Forget removes a record or a running claim.
    Forget,
    /// A completed record is gone after its TTL.
    TtlExpiry,
    /// Seeded random schedules agree with a reference model at every step.
    RandomSchedules,
    /// Seeded concurrent holders: one holder at a time, one completion per key.
    ConcurrentStress,
}

impl Property {
    /// Every property, in the order the suite checks them.
    pub const ALL: [Property; 10] = [
        Property::ClaimIsAtomic,
        Property::CompletedReplays,
        Property::InProgress,
        Property::Fencing,
        Property::LeaseTakeover,
        Property::ReleaseFreesKey,
        Property::Forget,
        Property::TtlExpiry,
        Property::RandomSchedules,
        Property::ConcurrentStress,
    ];

    /// The property's name in reports (`snake_case`).
    ///
    /// ```
    /// assert_eq!(idem_core::testkit::Property::TtlExpiry.name(), "ttl_expiry");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Property::ClaimIsAtomic => "claim_is_atomic",
            Property::CompletedReplays => "completed_replays",
            Property::InProgress => "in_progress",
            Property::Fencing => "fencing",
            Property::LeaseTakeover => "lease_takeover",
            Property::ReleaseFreesKey => "release_frees_key",
            Property::Forget => "forget",
            Property::TtlExpiry => "ttl_expiry",
            Property::RandomSchedules => "random_schedules",
            Property::ConcurrentStress => "concurrent_stress",
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first property a store broke, and how (the answer it gave, the steps before it, the
/// seed of a random schedule).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use idem_core::MokaStore;
/// use idem_core::testkit::Suite;
///
/// // A conforming store has no failure; a broken one's `Err` says what broke, e.g.
/// // "store conformance: property `fencing` failed: the taken-over holder: renew with a
/// // token that no longer holds the key acted".
/// if let Err(failure) = Suite::new().run(|| async { MokaStore::new() }).await {
///     panic!("{} broke: {}", failure.property(), failure.detail());
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Failure {
    property: Property,
    detail: String,
}

impl Failure {
    pub(crate) fn new(property: Property, detail: String) -> Self {
        Failure { property, detail }
    }

    /// The property that failed.
    pub fn property(&self) -> Property {
        self.property
    }

    /// What the store answered, where, and what the protocol required instead.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store conformance: property `{}` failed: {}",
            self.property, self.detail
        )
    }
}

impl std::error::Error for Failure {}

/// What a passing run checked: each property and how long it took, and the seed of its
/// random schedules.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use idem_core::MokaStore;
/// use idem_core::testkit::{Property, Suite};
///
/// let report = Suite::new()
///     .seed(42)
///     .only(&[Property::InProgress])
///     .run(|| async { MokaStore::new() })
///     .await
///     .unwrap();
/// assert_eq!(report.checked().collect::<Vec<_>>(), [Property::InProgress]);
/// assert_eq!(report.seed(), 42);
/// assert!(report.elapsed(Property::InProgress).is_some());
/// assert!(report.elapsed(Property::Fencing).is_none());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Report {
    pub(crate) checked: Vec<(Property, Duration)>,
    pub(crate) seed: u64,
}

impl Report {
    /// The properties checked, in order.
    pub fn checked(&self) -> impl Iterator<Item = Property> + '_ {
        self.checked.iter().map(|(property, _)| *property)
    }

    /// How long checking `property` took, if it was checked.
    pub fn elapsed(&self, property: Property) -> Option<Duration> {
        self.checked
            .iter()
            .find(|(p, _)| *p == property)
            .map(|(_, elapsed)| *elapsed)
    }

    /// The first seed of the random schedules and the stress rounds.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store conformance passed (seed {}):", self.seed)?;
        for (property, elapsed) in &self.checked {
            write!(f, " {property} ({elapsed:.0?})")?;
        }
        Ok(())
    }
}
