//! [`OperationError`]: one store operation that failed, as the source of an
//! [`Error::Store`](crate::Error::Store).

/// A store operation that failed: it names the backend, the operation and the server
/// (without credentials), and carries the client's own error as its `source()`, so a
/// caller can walk to it and `downcast_ref` it (`redis::RedisError`, `sqlx::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{backend} {operation} on {target} failed{hint}")]
pub(crate) struct OperationError<E: std::error::Error + 'static> {
    /// `redis` or `postgres`.
    pub(crate) backend: &'static str,
    /// The store operation or command: `claim`, `renew`, `SCRIPT LOAD`, `connect`, ..
    pub(crate) operation: &'static str,
    /// The server or cluster without credentials, or the caller's transaction.
    pub(crate) target: String,
    /// A likely cause, in parentheses after the message, or empty.
    pub(crate) hint: &'static str,
    #[source]
    pub(crate) source: E,
}
