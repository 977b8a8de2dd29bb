//! [`Outcome`]: what happened to one idempotent call. A leaf, so that the events that
//! report it, [`observe`](crate::observe) and the metrics all read it without depending on
//! each other.

/// What happened to an idempotent call: its `tracing` event's `outcome`, and what
/// [`observe`](crate::observe) reports.
///
/// ```
/// assert_eq!(idem_core::Outcome::Replayed.as_str(), "replayed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The body ran and its outcome was stored.
    Executed,
    /// A stored outcome was returned without waiting.
    Replayed,
    /// A stored outcome was returned after waiting for a running holder.
    Waited,
    /// A duplicate was refused (`reject` policy, or its wait ran out).
    Rejected,
    /// The key was reused with a different payload.
    Mismatch,
    /// A claim whose lease had lapsed was taken over.
    TakenOver,
    /// The claim was lost before the outcome was stored (fenced out).
    LeaseLost,
    /// The body returned an `Err` that is not cached; the claim was released.
    Released,
    /// The store failed (the body did not run, or its result could not be stored).
    StoreError,
    /// A record could not be decoded, or a result could not be stored as JSON.
    CodecError,
    /// The store was at its bound and refused a new claim (the body did not run).
    StoreFull,
}

impl Outcome {
    /// The outcome's name, as in the `tracing` events and metrics labels.
    ///
    /// ```
    /// assert_eq!(idem_core::Outcome::Executed.as_str(), "executed");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Replayed => "replayed",
            Outcome::Waited => "waited",
            Outcome::Rejected => "rejected",
            Outcome::Mismatch => "mismatch",
            Outcome::TakenOver => "taken_over",
            Outcome::LeaseLost => "lease_lost",
            Outcome::Released => "released",
            Outcome::StoreError => "store_error",
            Outcome::CodecError => "codec_error",
            Outcome::StoreFull => "store_full",
        }
    }
}
