//! When connections were last found lost. After a server restart every idle connection
//! of the store's own pool is broken at once; once one is found lost, the pool discards
//! every idle connection opened before that moment instead of handing them out one by
//! one (each would fail one more statement).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The moment the store last found a connection lost, on a monotonic clock.
pub(crate) struct LossMark {
    base: Instant,
    /// Nanoseconds from `base` to the last loss; 0 for none yet.
    at: AtomicU64,
}

impl LossMark {
    pub(crate) fn new() -> LossMark {
        LossMark {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A connection was found lost now.
    pub(crate) fn note(&self) {
        self.at
            .fetch_max(self.nanos(Instant::now()), Ordering::Relaxed);
    }

    /// Whether a connection of this `age` was opened before the last loss was noted.
    pub(crate) fn predates(&self, age: Duration) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        if at == 0 {
            return false;
        }
        let opened = Instant::now().checked_sub(age).unwrap_or(self.base);
        self.nanos(opened) < at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_a_loss_predate_it() {
        let mark = LossMark::new();
        assert!(!mark.predates(Duration::from_secs(3600)), "no loss yet");
        std::thread::sleep(Duration::from_millis(5));
        mark.note();
        assert!(mark.predates(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!mark.predates(Duration::from_millis(1)), "opened after it");
    }
}
