//! `tracing` events, one per call outcome, with the function name and key hash (never the
//! raw arguments). Target: `idem`. Each outcome also reaches [`observe`](crate::observe) and,
//! with the `metrics` feature, the `metrics` facade.

use std::error::Error as StdError;
use std::fmt;

use crate::error::Error;
use crate::key::Key;
use crate::spec::Spec;

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
        }
    }
}

pub(crate) fn emit(spec: &Spec, key: &Key, outcome: Outcome) {
    crate::observe::record(key, outcome);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, outcome);
    match outcome {
        Outcome::LeaseLost | Outcome::TakenOver => tracing::warn!(
            target: "idem",
            outcome = outcome.as_str(),
            function = spec.name,
            key = %key,
        ),
        _ => tracing::debug!(
            target: "idem",
            outcome = outcome.as_str(),
            function = spec.name,
            key = %key,
        ),
    }
}

pub(crate) fn store_error(spec: &Spec, key: &Key, operation: &'static str, error: &Error) {
    crate::observe::record(key, Outcome::StoreError);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, Outcome::StoreError);
    tracing::error!(
        target: "idem",
        outcome = "store_error",
        function = spec.name,
        key = %key,
        operation,
        error = %Chain(error),
    );
}

pub(crate) fn codec_error(spec: &Spec, key: &Key, error: &Error) {
    crate::observe::record(key, Outcome::CodecError);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, Outcome::CodecError);
    tracing::error!(
        target: "idem",
        outcome = "codec_error",
        function = spec.name,
        key = %key,
        error = %Chain(error),
    );
}

/// An error and its sources, as `error: source: source's source`: an idem [`Error`] names
/// only its kind and leaves what failed to its chain, which a log line must carry.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            // Some clients print their source in their own message too (redis-rs: `broken
            // pipe: broken pipe`); a line that says the same thing twice helps no one.
            let message = error.to_string();
            if message != shown {
                write!(f, ": {message}")?;
            }
            shown = message;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_error_carries_its_chain_once() {
        let shared = crate::error::SharedError::new(Error::store("connection refused"));
        let err = shared.to_error();
        assert_eq!(
            Chain(&err).to_string(),
            "idempotency store failed: connection refused"
        );
    }
}
