//! How many scopes of one kind (a [`key_of`](crate::key_of) probe, an
//! [`observe`](crate::observe) call) run right now, in the whole process. Every idempotent
//! call asks whether it runs inside one; while none runs anywhere, the answer is one atomic
//! load instead of a task-local lookup.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The number of running scopes of one kind.
pub(crate) struct ScopeCount(AtomicUsize);

impl ScopeCount {
    pub(crate) const fn new() -> ScopeCount {
        ScopeCount(AtomicUsize::new(0))
    }

    /// Whether a scope of this kind runs anywhere (a call must then look for its own).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) != 0
    }

    /// Counts one scope until the returned guard drops. Taken before the scope's future is
    /// first polled, in the same task, so its calls see the count.
    pub(crate) fn enter(&'static self) -> Entered {
        self.0.fetch_add(1, Ordering::AcqRel);
        Entered(self)
    }
}

/// One running scope, counted in its [`ScopeCount`] until dropped.
pub(crate) struct Entered(&'static ScopeCount);

impl Drop for Entered {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::AcqRel);
    }
}
