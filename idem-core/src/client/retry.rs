//! [`IdempotentRetry`]: the middleware's settings, a by-value builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Request;
use reqwest::header::HeaderName;

use crate::Backoff;

/// The default number of attempts: the first and three retries.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// The default backoff: 0.5 s doubling up to 5 s (Stripe's client bounds).
pub const DEFAULT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(500)).max(Duration::from_secs(5));
/// The longest `Retry-After` waited out by default (Stripe's clients: 60 s).
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The default overall deadline of one logical request, its retries and waits included.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(90);

type KeyPredicate = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

/// A `reqwest-middleware` middleware that makes a request safe to retry and retries it:
/// one `Idempotency-Key` per logical request, the same key and body on every attempt.
/// See the [module documentation](super) for what is retried and how long it waits.
///
/// ```
/// use std::time::Duration;
/// use idem_core::Backoff;
/// use idem_core::client::IdempotentRetry;
///
/// let retry = IdempotentRetry::new()
///     .max_attempts(6)
///     .backoff(Backoff::new(Duration::from_millis(100)).max(Duration::from_secs(2)))
///     .max_retry_after(Duration::from_secs(10))
///     .deadline(Duration::from_secs(30));
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(retry)
///     .build();
/// # drop(client);
/// ```
#[derive(Clone)]
#[must_use]
pub struct IdempotentRetry {
    pub(crate) header: HeaderName,
    pub(crate) mint_key_for: KeyPredicate,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_retry_after: Duration,
    pub(crate) deadline: Duration,
}

impl IdempotentRetry {
    /// The defaults: the `Idempotency-Key` header, minted for POST and PATCH;
    /// [`DEFAULT_MAX_ATTEMPTS`] attempts, backoff [`DEFAULT_BACKOFF`], `Retry-After` waited
    /// out up to [`DEFAULT_MAX_RETRY_AFTER`], all within [`DEFAULT_DEADLINE`].
    ///
    /// ```
    /// let retry = idem_core::client::IdempotentRetry::new();
    /// # drop(retry);
    /// ```
    pub fn new() -> Self {
        IdempotentRetry {
            header: HeaderName::from_static("idempotency-key"),
            mint_key_for: Arc::new(super::policy::keyed_by_default),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// The key header's name (default `Idempotency-Key`).
    ///
    /// ```
    /// use reqwest::header::HeaderName;
    ///
    /// let retry = idem_core::client::IdempotentRetry::new()
    ///     .header(HeaderName::from_static("x-idempotency-key"));
    /// # drop(retry);
    /// ```
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Which requests without a key get a minted one (default: POST and PATCH). A request
    /// with a key — minted, or set by the caller — is retried; one without is retried only
    /// when its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE).
    ///
    /// ```
    /// use reqwest::Method;
    ///
    /// // DELETE gets a key too, so a retried delete replays its first answer.
    /// let retry = idem_core::client::IdempotentRetry::new()
    ///     .mint_key_for(|req| matches!(*req.method(), Method::POST | Method::PATCH | Method::DELETE));
    /// # drop(retry);
    /// ```
    pub fn mint_key_for<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&Request) -> bool + Send + Sync + 'static,
    {
        self.mint_key_for = Arc::new(predicate);
        self
    }

    /// How many times a request is sent at most, the first included (default
    /// [`DEFAULT_MAX_ATTEMPTS`]; 0 counts as 1: no retry).
    ///
    /// ```
    /// let no_retries = idem_core::client::IdempotentRetry::new().max_attempts(1);
    /// # drop(no_retries);
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The waits between attempts (default [`DEFAULT_BACKOFF`]): retry `n` waits a random
    /// time between the first delay and the first delay times 2^n, capped at the longest
    /// delay. The backoff's [`retries`](Backoff::retries) is not used:
    /// [`max_attempts`](IdempotentRetry::max_attempts) bounds the attempts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::Backoff;
    ///
    /// let fast = idem_core::client::IdempotentRetry::new()
    ///     .backoff(Backoff::new(Duration::from_millis(20)).max(Duration::from_millis(500)));
    /// # drop(fast);
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest `Retry-After` the middleware waits out (default
    /// [`DEFAULT_MAX_RETRY_AFTER`]). A retry never comes sooner than the server's
    /// `Retry-After`; an answer asking for a longer wait is returned to the caller as it is.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let retry = idem_core::client::IdempotentRetry::new().max_retry_after(Duration::from_secs(5));
    /// # drop(retry);
    /// ```
    pub fn max_retry_after(mut self, longest: Duration) -> Self {
        self.max_retry_after = longest;
        self
    }

    /// The overall deadline of one logical request, every attempt and wait included
    /// (default [`DEFAULT_DEADLINE`]). No retry starts whose wait would end after it; an
    /// attempt still running when it ends is abandoned with [`DeadlineExceeded`](super::DeadlineExceeded).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let retry = idem_core::client::IdempotentRetry::new().deadline(Duration::from_secs(10));
    /// # drop(retry);
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

impl Default for IdempotentRetry {
    fn default() -> Self {
        IdempotentRetry::new()
    }
}

impl fmt::Debug for IdempotentRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentRetry")
            .field("header", &self.header)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
