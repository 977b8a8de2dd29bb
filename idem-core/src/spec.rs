//! The contract between `#[idempotent]`'s generated code and the runtime: a function's
//! options, as the macro checked them. Its own module so that the call, its events and
//! its metrics all read it without depending on each other.

use std::time::Duration;

/// What a duplicate does while the first call for its key is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InFlight {
    /// Wait (up to `wait`) for the first call's result.
    Wait,
    /// Fail at once with [`Error::InProgress`](crate::Error::InProgress).
    Reject,
}

/// The options of one `#[idempotent]` function, as the macro checked them.
#[derive(Debug)]
pub struct Spec {
    /// The function's namespace (`name = ".."`, or module path and fn name).
    pub name: &'static str,
    /// How long a completed result is kept.
    pub ttl: Duration,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// How long a waiting duplicate waits.
    pub wait: Duration,
    /// What a duplicate does while the first call runs.
    pub in_flight: InFlight,
}
