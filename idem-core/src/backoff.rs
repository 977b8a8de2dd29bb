//! [`Backoff`]: the delays between a store's attempts (a waiter's polls, Redis reconnects).

use std::time::Duration;

/// The default bounds of a waiter's polling: 5 ms, doubled up to 250 ms.
pub(crate) const DEFAULT_POLL: Backoff =
    Backoff::new(Duration::from_millis(5)).max(Duration::from_millis(250));

/// Delays between attempts: the first delay, doubled after each attempt up to the longest
/// ([`max`](Backoff::max)), and — where an API gives up after a number of attempts — how
/// many attempts follow the first ([`retries`](Backoff::retries)).
///
/// `RedisStoreBuilder::reconnect_backoff` and the `poll_backoff` of the Redis and
/// PostgreSQL builders take one, and [`Store::poll_backoff`](crate::store::Store::poll_backoff)
/// returns one. Durations saturate: `Duration::MAX` means "no bound", never a panic.
///
/// ```
/// use std::time::Duration;
/// use idem_core::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(10))
///     .max(Duration::from_millis(500))
///     .retries(3);
/// assert_eq!(backoff.first_delay(), Duration::from_millis(10));
/// assert_eq!(backoff.max_delay(), Duration::from_millis(500));
/// assert_eq!(backoff.max_retries(), Some(3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub struct Backoff {
    first: Duration,
    max: Duration,
    retries: Option<usize>,
}

impl Backoff {
    /// Delays that start at `first`. Until [`max`](Backoff::max) is set, every delay is
    /// `first`; until [`retries`](Backoff::retries) is set, the API's own number of
    /// retries applies.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// let constant = Backoff::new(Duration::from_millis(50));
    /// assert_eq!(constant.max_delay(), Duration::from_millis(50));
    /// assert_eq!(constant.max_retries(), None);
    /// ```
    pub const fn new(first: Duration) -> Self {
        Backoff {
            first,
            max: first,
            retries: None,
        }
    }

    /// The longest delay: each delay doubles until it reaches this. A `longest` below the
    /// first delay counts as the first delay.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// let backoff = Backoff::new(Duration::from_millis(5)).max(Duration::from_millis(250));
    /// assert_eq!(backoff.max_delay(), Duration::from_millis(250));
    /// let inverted = Backoff::new(Duration::from_millis(100)).max(Duration::from_millis(10));
    /// assert_eq!(inverted.max_delay(), Duration::from_millis(100));
    /// ```
    pub const fn max(mut self, longest: Duration) -> Self {
        self.max = longest;
        self
    }

    /// How many attempts follow the first one, for an API that gives up
    /// (`RedisStoreBuilder::reconnect_backoff`); polling ignores it, since a waiter's
    /// `wait` bounds it instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// let backoff = Backoff::new(Duration::from_millis(25)).retries(2);
    /// assert_eq!(backoff.max_retries(), Some(2));
    /// ```
    pub const fn retries(mut self, retries: usize) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The delay before the second attempt.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// assert_eq!(Backoff::new(Duration::from_millis(5)).first_delay(), Duration::from_millis(5));
    /// ```
    pub const fn first_delay(&self) -> Duration {
        self.first
    }

    /// The longest delay: [`max`](Backoff::max), never below the first delay.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// let backoff = Backoff::new(Duration::from_millis(5)).max(Duration::from_secs(1));
    /// assert_eq!(backoff.max_delay(), Duration::from_secs(1));
    /// ```
    pub const fn max_delay(&self) -> Duration {
        if self.max.as_nanos() < self.first.as_nanos() {
            self.first
        } else {
            self.max
        }
    }

    /// How many attempts follow the first one, when set (`None`: the API's own number).
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// assert_eq!(Backoff::new(Duration::from_millis(5)).max_retries(), None);
    /// ```
    pub const fn max_retries(&self) -> Option<usize> {
        self.retries
    }

    /// The delay after `delay`: doubled, at most the longest; saturating.
    pub(crate) fn next_delay(&self, delay: Duration) -> Duration {
        delay.saturating_mul(2).min(self.max_delay())
    }

    /// This backoff with its first delay at least `floor` (a store polls no faster).
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub(crate) fn first_at_least(self, floor: Duration) -> Self {
        let first = if self.first < floor {
            floor
        } else {
            self.first
        };
        Backoff { first, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_longest_and_saturate() {
        let backoff = Backoff::new(Duration::from_millis(5)).max(Duration::from_millis(18));
        let delays: Vec<u64> = std::iter::successors(Some(backoff.first_delay()), |d| {
            Some(backoff.next_delay(*d))
        })
        .take(5)
        .map(|d| d.as_millis() as u64)
        .collect();
        assert_eq!(delays, [5, 10, 18, 18, 18]);
        let unbounded = Backoff::new(Duration::MAX).max(Duration::MAX);
        assert_eq!(unbounded.next_delay(Duration::MAX), Duration::MAX);
        assert_eq!(DEFAULT_POLL.first_delay(), Duration::from_millis(5));
        assert_eq!(DEFAULT_POLL.max_delay(), Duration::from_millis(250));
    }

    #[cfg(any(feature = "redis", feature = "postgres"))]
    #[test]
    fn a_floor_raises_the_first_delay_and_keeps_the_longest() {
        let backoff = Backoff::new(Duration::ZERO).first_at_least(Duration::from_millis(1));
        assert_eq!(backoff.first_delay(), Duration::from_millis(1));
        assert_eq!(backoff.max_delay(), Duration::from_millis(1));
        let kept = Backoff::new(Duration::from_millis(3))
            .max(Duration::from_millis(9))
            .first_at_least(Duration::from_millis(1));
        assert_eq!(
            (kept.first_delay(), kept.max_delay()),
            (Duration::from_millis(3), Duration::from_millis(9))
        );
    }
}
