//! [`Disposition`]: what a handler's result means to the broker — the answer, and which errors are whose.

use std::time::Duration;

use crate::error::Error;

/// How [`Processor::process`](super::Processor::process) answered the broker for one message.
///
/// ```
/// use idem_core::nats::Disposition;
///
/// assert_eq!(Disposition::Acked.as_str(), "acked");
/// assert!(Disposition::Mismatch.is_terminal());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// The handler's outcome is stored — it ran now, or ran before and was replayed — and
    /// the broker confirmed the ack (`+ACK`, double ack).
    Acked,
    /// The same key is being handled right now (this message's earlier delivery, or a
    /// duplicate): naked with a delay, so it comes back once the first one is stored.
    InProgress {
        /// The `-NAK` delay.
        delay: Duration,
    },
    /// The handler returned an error (or the store failed): naked with a backoff by
    /// delivery count, so the message is retried.
    Retry {
        /// The `-NAK` delay.
        delay: Duration,
    },
    /// The key was used before with different content (`Error::PayloadMismatch`):
    /// terminated (`+TERM`), never retried.
    Mismatch,
    /// The message (or its stored outcome) cannot be decoded: terminated (`+TERM`).
    Undecodable,
    /// The handler said the error is permanent ([`HandlerError::is_permanent`]):
    /// terminated (`+TERM`).
    Permanent,
    /// The handler failed (or its key was in progress elsewhere) on the message's last
    /// allowed delivery — the consumer's `max_deliver`, or the processor's
    /// [fallback](super::ProcessorBuilder::fallback_max_deliver) when that is unlimited:
    /// terminated (`+TERM`) with an error event, after its dead letter was stored when a
    /// dead-letter subject is set.
    Exhausted,
    /// The answer did not reach the broker (connection lost, double ack not confirmed):
    /// the broker redelivers after its `AckWait`, and the redelivery is replayed.
    AnswerLost,
}

impl Disposition {
    /// The name used in tracing events: `acked`, `in_progress`, `retry`, `mismatch`,
    /// `undecodable`, `permanent`, `exhausted`, `answer_lost`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem_core::nats::Disposition;
    ///
    /// assert_eq!(Disposition::Retry { delay: Duration::from_secs(1) }.as_str(), "retry");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Acked => "acked",
            Disposition::InProgress { .. } => "in_progress",
            Disposition::Retry { .. } => "retry",
            Disposition::Mismatch => "mismatch",
            Disposition::Undecodable => "undecodable",
            Disposition::Permanent => "permanent",
            Disposition::Exhausted => "exhausted",
            Disposition::AnswerLost => "answer_lost",
        }
    }

    /// Whether the message was terminated (`+TERM`): the broker will not deliver it again.
    ///
    /// ```
    /// use idem_core::nats::Disposition;
    ///
    /// assert!(Disposition::Undecodable.is_terminal());
    /// assert!(!Disposition::Acked.is_terminal());
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Disposition::Mismatch
                | Disposition::Undecodable
                | Disposition::Permanent
                | Disposition::Exhausted
        )
    }
}

/// The error type of a message handler: says which errors came from idem, so the processor
/// can tell "in progress elsewhere" (nak with a delay) and "same key, other content"
/// (terminate) from the handler's own failures (nak with a backoff).
///
/// Implemented for [`idem_core::Error`](Error) itself; for an `#[idempotent]` handler's own
/// error type (which has a `From<idem_core::Error>`), return the wrapped error:
///
/// ```
/// use idem_core::nats::HandlerError;
///
/// #[derive(Debug)]
/// enum OrderError {
///     Idem(idem_core::Error),
///     Database(String),
///     Invalid(String),
/// }
///
/// impl From<idem_core::Error> for OrderError {
///     fn from(err: idem_core::Error) -> Self { OrderError::Idem(err) }
/// }
///
/// impl std::fmt::Display for OrderError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "{self:?}")
///     }
/// }
///
/// impl HandlerError for OrderError {
///     fn idem_error(&self) -> Option<&idem_core::Error> {
///         match self {
///             OrderError::Idem(err) => Some(err),
///             _ => None,
///         }
///     }
///
///     // A message that can never succeed is terminated instead of retried.
///     fn is_permanent(&self) -> bool {
///         matches!(self, OrderError::Invalid(_))
///     }
/// }
///
/// let err = OrderError::from(idem_core::Error::PayloadMismatch);
/// assert!(matches!(err.idem_error(), Some(idem_core::Error::PayloadMismatch)));
/// assert!(!OrderError::Database("timeout".into()).is_permanent());
/// ```
pub trait HandlerError: std::fmt::Display {
    /// The idem error this is, if it is one.
    fn idem_error(&self) -> Option<&Error>;

    /// Whether retrying can never succeed (the message is poison): terminated instead of
    /// naked. Default: `false`.
    fn is_permanent(&self) -> bool {
        false
    }
}

impl HandlerError for Error {
    fn idem_error(&self) -> Option<&Error> {
        Some(self)
    }
}

/// What to answer for a handler's error.
pub(super) enum Verdict {
    InProgress,
    Retry,
    Mismatch,
    Undecodable,
    Permanent,
}

pub(super) fn verdict<E: HandlerError>(err: &E) -> Verdict {
    match err.idem_error() {
        Some(Error::InProgress) => Verdict::InProgress,
        Some(Error::PayloadMismatch) => Verdict::Mismatch,
        // A key or argument that cannot be encoded, or a stored outcome that cannot be
        // decoded: retrying gives the same answer.
        Some(Error::Codec(_)) => Verdict::Undecodable,
        // The store is down (the handler did not run), or anything else from idem.
        Some(_) => Verdict::Retry,
        None if err.is_permanent() => Verdict::Permanent,
        None => Verdict::Retry,
    }
}
