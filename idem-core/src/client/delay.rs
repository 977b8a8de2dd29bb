//! The wait before a retry: exponential backoff with full jitter above the first delay.

use std::time::Duration;

use crate::Backoff;

/// The wait before retry number `retry` (1 for the second attempt): uniform between the
/// backoff's first delay and its ceiling, which doubles with each retry (twice the first
/// delay for the first retry) up to the backoff's longest delay. Full jitter spreads the
/// retries of many clients that failed together; the floor keeps a retry from hammering a
/// server that just answered 503.
pub(crate) fn backoff_delay(backoff: &Backoff, retry: u32) -> Duration {
    let floor = backoff.first_delay();
    let mut ceiling = floor;
    for _ in 0..retry.min(64) {
        ceiling = backoff.next_delay(ceiling);
    }
    let span = ceiling.saturating_sub(floor);
    let span_nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
    floor.saturating_add(Duration::from_nanos(fastrand::u64(0..=span_nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_between_the_floor_and_the_doubling_capped_ceiling() {
        let backoff = Backoff::new(Duration::from_millis(500)).max(Duration::from_secs(5));
        for (retry, ceiling_ms) in [(1, 1000), (2, 2000), (3, 4000), (4, 5000), (40, 5000)] {
            for _ in 0..200 {
                let delay = backoff_delay(&backoff, retry);
                assert!(
                    delay >= Duration::from_millis(500)
                        && delay <= Duration::from_millis(ceiling_ms),
                    "retry {retry}: {delay:?}"
                );
            }
        }
        let spread: std::collections::HashSet<Duration> =
            (0..50).map(|_| backoff_delay(&backoff, 3)).collect();
        assert!(spread.len() > 10, "jittered: {spread:?}");
        let constant = Backoff::new(Duration::from_millis(7));
        assert_eq!(backoff_delay(&constant, 9), Duration::from_millis(7));
        let unbounded = Backoff::new(Duration::MAX).max(Duration::MAX);
        assert_eq!(backoff_delay(&unbounded, u32::MAX), Duration::MAX);
    }
}
