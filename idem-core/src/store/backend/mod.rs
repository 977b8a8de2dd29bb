//! What the shared stores (Redis, PostgreSQL) have in common: how an operation's failure
//! reads, and URLs without their credentials.

mod operation_error;
mod redact;

pub(crate) use operation_error::OperationError;

/// The default largest record value a shared store writes: `MokaStore`'s default
/// `max_bytes`. A larger outcome is returned to its caller and stored as a marker that is
/// not replayable (`codec::too_large_marker`).
pub(crate) const DEFAULT_MAX_RECORD_BYTES: usize = 256 << 20;
pub(crate) use redact::redact_url;
