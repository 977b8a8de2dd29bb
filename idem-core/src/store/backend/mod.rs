//! What the shared stores (Redis, PostgreSQL) have in common: how an operation's failure
//! reads, and URLs without their credentials.

mod operation_error;
mod redact;

pub(crate) use operation_error::OperationError;

/// The default largest record value a shared store writes: `MokaStore`'s default
/// `max_bytes`. A larger outcome is returned to its caller and stored as a marker that is
/// not replayable (`codec::too_large_marker`).
pub(crate) const DEFAULT_MAX_RECORD_BYTES: usize = 256 << 20;

/// The record a shared store writes for `record`: itself, or, over `max` bytes, the marker
/// a retry reads as "ran, too large to replay" (with a warning). The caller of the
/// idempotent function still gets its outcome either way.
pub(crate) fn within_record_limit(
    key: &crate::key::Key,
    record: std::sync::Arc<crate::store::Record>,
    max: usize,
) -> std::sync::Arc<crate::store::Record> {
    let bytes = record.value().len();
    if bytes <= max {
        return record;
    }
    crate::event::record_too_large(key, bytes, max);
    let marker = crate::codec::too_large_marker(bytes);
    std::sync::Arc::new(crate::store::Record::new(*record.fingerprint(), marker))
}
pub(crate) use redact::redact_url;
