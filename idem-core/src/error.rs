//! The error type of every idem operation.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// A boxed error from a store backend or a codec.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong in an idempotent call, instead of running or replaying it.
///
/// An `#[idempotent]` function's error type `E` must implement `From<idem_core::Error>`,
/// so these errors come back through the function's own `Result`.
///
/// ```
/// use idem_core::Error;
///
/// #[derive(Debug)]
/// enum PayError {
///     Declined,
///     Idempotency(Error),
/// }
///
/// impl From<Error> for PayError {
///     fn from(err: Error) -> Self {
///         PayError::Idempotency(err)
///     }
/// }
///
/// let err = PayError::from(Error::PayloadMismatch);
/// assert!(matches!(err, PayError::Idempotency(Error::PayloadMismatch)));
/// # let _ = PayError::Declined;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another call with the same key is running: the policy is `in_flight = "reject"`,
    /// or a waiting duplicate's `wait` bound ran out. Retry later (HTTP 409).
    #[error("an idempotent call with the same key is still in progress")]
    InProgress,

    /// The key was used before with different arguments; the body did not run (HTTP 422).
    #[error("idempotency key reused with a different payload")]
    PayloadMismatch,

    /// The store failed or could not be reached (the body did not run), or no store is
    /// installed and the `moka` feature is off. What failed is the [`source`](StdError::source)
    /// (for Redis and PostgreSQL, the client's own error further down the chain).
    #[error("idempotency store failed")]
    Store(#[source] BoxError),

    /// A key, an argument or a result could not be encoded, or a stored record could not be
    /// decoded. The body did not run. What failed is the [`source`](StdError::source).
    #[error("idempotency codec failed")]
    Codec(#[source] BoxError),

    /// A `detach`ed body's task was cancelled before it finished (the runtime shut down).
    #[error("the detached task running the idempotent body was cancelled")]
    Cancelled,

    /// The store is at its bound and refused a *new* claim; the body did not run. A bounded
    /// store never drops a completed record before its TTL to make room, so a flood of new
    /// keys cannot push out the records retries depend on: the flood's excess fails
    /// instead. Retry later, or raise the bound (HTTP 503 with `Retry-After`).
    ///
    /// ```
    /// assert_eq!(
    ///     idem_core::Error::StoreFull.to_string(),
    ///     "idempotency store full: no new key accepted until records expire",
    /// );
    /// ```
    #[error("idempotency store full: no new key accepted until records expire")]
    StoreFull,
}

impl Error {
    /// An [`Error::Store`] from any error or message, which becomes its source: the
    /// message does not repeat it, so reporters that print the chain print it once.
    ///
    /// ```
    /// use std::error::Error as _;
    ///
    /// let err = idem_core::Error::store("connection refused");
    /// assert_eq!(err.to_string(), "idempotency store failed");
    /// assert_eq!(err.source().unwrap().to_string(), "connection refused");
    /// ```
    pub fn store(err: impl Into<BoxError>) -> Self {
        Error::Store(err.into())
    }

    /// An [`Error::Codec`] from any error or message, which becomes its source.
    ///
    /// ```
    /// use std::error::Error as _;
    ///
    /// let err = idem_core::Error::codec("bad record version");
    /// assert_eq!(err.to_string(), "idempotency codec failed");
    /// assert_eq!(err.source().unwrap().to_string(), "bad record version");
    /// ```
    pub fn codec(err: impl Into<BoxError>) -> Self {
        Error::Codec(err.into())
    }

    /// Whether the store refused this call to break a conflict between transactions, so
    /// the same call (in transaction mode: the caller's whole transaction, rolled back
    /// first) may be retried at once: PostgreSQL's serialization failure (`40001`) or
    /// deadlock (`40P01`). `false` for everything else — an outage or timeout
    /// ([`Error::Store`]; back off), [`Error::InProgress`] (retry later), and errors a
    /// retry cannot fix.
    ///
    /// ```
    /// let down = idem_core::Error::store("connection refused");
    /// assert!(!down.is_retryable());
    /// assert!(!idem_core::Error::InProgress.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        let Error::Store(source) = self else {
            return false;
        };
        let mut next: Option<&(dyn StdError + 'static)> = Some(&**source);
        while let Some(err) = next {
            #[cfg(feature = "postgres")]
            if crate::postgres::chose_victim(err) {
                return true;
            }
            next = err.source();
        }
        false
    }
}

/// One error handed to every local duplicate that shared the failed claim (see
/// `flight`): each gets an `Error` of the same kind whose source is this one. It stands in
/// for the backend's error in the chain (same message, same source), so the chain reads
/// the same for the caller that claimed and for its duplicates.
#[derive(Debug, Clone)]
pub(crate) struct SharedError(Arc<Error>);

impl SharedError {
    pub(crate) fn new(error: Error) -> Self {
        SharedError(Arc::new(error))
    }

    /// A copy of the error, as one caller's own.
    pub(crate) fn to_error(&self) -> Error {
        match &*self.0 {
            Error::InProgress => Error::InProgress,
            Error::PayloadMismatch => Error::PayloadMismatch,
            Error::Store(_) => Error::Store(Box::new(self.clone())),
            Error::Codec(_) => Error::Codec(Box::new(self.clone())),
            Error::Cancelled => Error::Cancelled,
            Error::StoreFull => Error::StoreFull,
        }
    }

    /// The backend's error inside the shared one.
    fn inner(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        match &*self.0 {
            Error::Store(inner) | Error::Codec(inner) => Some(&**inner),
            _ => None,
        }
    }
}

// Transparent: it reads as the backend's error it carries, and the `Error` that wraps it
// prints only its kind, so nothing is printed twice.
impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner() {
            Some(inner) => fmt::Display::fmt(inner, f),
            None => fmt::Display::fmt(&self.0, f),
        }
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner().and_then(StdError::source)
    }
}
