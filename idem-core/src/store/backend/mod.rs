//! What the shared stores (Redis, PostgreSQL) have in common: how an operation's failure
//! reads, and URLs without their credentials.

mod operation_error;
mod redact;

pub(crate) use operation_error::OperationError;
pub(crate) use redact::redact_url;
