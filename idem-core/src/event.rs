//! `tracing` events, one per call outcome, with the function name and key hash (never the
//! raw arguments). Target: `idem`. Each outcome also reaches [`observe`](crate::observe) and,
//! with the `metrics` feature, the `metrics` facade.

use std::error::Error as StdError;
use std::fmt;

use crate::error::Error;
use crate::key::Key;
pub(crate) use crate::outcome::Outcome;
use crate::spec::Spec;

pub(crate) fn emit(spec: &Spec, key: &Key, outcome: Outcome) {
    crate::observe::record(key, outcome);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, outcome);
    match outcome {
        Outcome::LeaseLost | Outcome::TakenOver => tracing::warn!(
            target: "idem",
            outcome = outcome.as_str(),
            function = spec.name,
            key = %key,
        ),
        _ => tracing::debug!(
            target: "idem",
            outcome = outcome.as_str(),
            function = spec.name,
            key = %key,
        ),
    }
}

pub(crate) fn store_error(spec: &Spec, key: &Key, operation: &'static str, error: &Error) {
    if matches!(error, Error::StoreFull) {
        return store_full(spec, key);
    }
    crate::observe::record(key, Outcome::StoreError);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, Outcome::StoreError);
    tracing::error!(
        target: "idem",
        outcome = "store_error",
        function = spec.name,
        key = %key,
        operation,
        error = %Chain(error),
    );
}

/// A new claim refused at the store's bound: a warning (the store needs a larger bound or
/// a flood is under way), never an eviction of a live record.
fn store_full(spec: &Spec, key: &Key) {
    crate::observe::record(key, Outcome::StoreFull);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, Outcome::StoreFull);
    tracing::warn!(
        target: "idem",
        outcome = "store_full",
        function = spec.name,
        key = %key,
        "idem: store at its bound, new claim refused",
    );
}

pub(crate) fn codec_error(spec: &Spec, key: &Key, error: &Error) {
    crate::observe::record(key, Outcome::CodecError);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, Outcome::CodecError);
    tracing::error!(
        target: "idem",
        outcome = "codec_error",
        function = spec.name,
        key = %key,
        error = %Chain(error),
    );
}

// Diagnostics that are not a call's outcome, every one of them here: all under target
// `idem` (the message consumer's under `idem::nats`, which an `idem` filter directive
// also selects), so one directive selects every line idem logs. Errors are logged with
// their chain.

/// An HTTP handler panicked; its claim was released and the client got a 500.
#[cfg(feature = "http")]
pub(crate) fn handler_panicked(spec: &Spec, key: &Key) {
    crate::observe::record(key, Outcome::Released);
    #[cfg(feature = "metrics")]
    crate::metrics::outcome(spec, Outcome::Released);
    tracing::error!(
        target: "idem",
        outcome = "panicked",
        function = spec.name,
        key = %key,
        "idem: the handler panicked; its key was released",
    );
}

/// A claim could not be released after the body's `Err` (not cached).
pub(crate) fn release_failed(key: &Key, error: &Error) {
    tracing::warn!(
        target: "idem",
        key = %key,
        error = %Chain(error),
        "idem: could not release a claim; it ends with its lease",
    );
}

/// A claim whose call was dropped (cancelled) could not be released: no runtime to run
/// the release on.
pub(crate) fn dropped_release_without_runtime(key: &Key) {
    tracing::warn!(
        target: "idem",
        key = %key,
        "idem: no tokio runtime to release a dropped claim; it ends with its lease",
    );
}

/// A claim whose call was dropped (cancelled) could not be released.
pub(crate) fn dropped_release_failed(key: &Key, error: &Error) {
    tracing::warn!(
        target: "idem",
        key = %key,
        error = %Chain(error),
        "idem: could not release a dropped claim; it ends with its lease",
    );
}

/// The Redis Cluster connection stopped answering and was replaced.
#[cfg(feature = "redis-cluster")]
pub(crate) fn cluster_connection_replaced() {
    tracing::warn!(
        target: "idem",
        "redis cluster: the connection stopped answering; replaced it"
    );
}

/// `PostgresStore` was built outside a tokio runtime: no background purge.
#[cfg(feature = "postgres")]
pub(crate) fn purge_off_without_runtime() {
    tracing::debug!(
        target: "idem",
        "idem: no tokio runtime at build; the PostgreSQL purge task is off"
    );
}

/// The background purge deleted `rows` expired rows of `table`.
#[cfg(feature = "postgres")]
pub(crate) fn purged(rows: u64, table: &dyn fmt::Debug) {
    tracing::debug!(target: "idem", rows, table = ?table, "idem: purged expired rows");
}

/// A round of the background purge failed; the next round tries again.
#[cfg(feature = "postgres")]
pub(crate) fn purge_failed(error: &Error) {
    tracing::warn!(
        target: "idem",
        error = %Chain(error),
        "idem: purging expired rows failed; trying again later",
    );
}

/// The idem table has no index on `expires_at`: a relation named like its index existed
/// already, so `CREATE INDEX IF NOT EXISTS` did nothing, and the purge scans the table.
#[cfg(feature = "postgres")]
pub(crate) fn postgres_expiry_index_missing(table: &dyn fmt::Debug) {
    tracing::warn!(
        target: "idem",
        table = ?table,
        "idem: the table has no index on expires_at (another relation is named <table>_expires_at?); the purge scans the whole table: create one under another name, or rename that relation",
    );
}

/// A record value is larger than the store's `max_record_bytes`: the caller got its
/// outcome, the store keeps a marker that is not replayable.
#[cfg(feature = "postgres")]
pub(crate) fn record_too_large(key: &Key, bytes: usize, max: usize) {
    tracing::warn!(
        target: "idem",
        key = %key,
        bytes,
        max,
        "idem: the result is larger than the store's max_record_bytes; it is not stored, and a retry gets a codec error instead of a replay",
    );
}

/// A pooled PostgreSQL connection broke; the statement is tried once more on a new one.
#[cfg(feature = "postgres")]
pub(crate) fn pooled_connection_broke(error: &(dyn StdError + 'static)) {
    tracing::debug!(
        target: "idem",
        error = %Chain(error),
        "idem: a pooled PostgreSQL connection broke; retrying on a new one",
    );
}

/// The broker did not confirm a message's answer (ack, nak, term); tried again.
#[cfg(feature = "nats")]
pub(crate) fn nats_answer_unconfirmed(
    attempt: u32,
    answer: &dyn fmt::Debug,
    error: &(dyn StdError + 'static),
) {
    tracing::warn!(
        target: "idem::nats",
        attempt,
        answer = ?answer,
        error = %Chain(error),
        "the broker did not confirm the answer",
    );
}

/// A nak could not be sent; the broker redelivers at `AckWait`.
#[cfg(feature = "nats")]
pub(crate) fn nats_nak_failed(error: &(dyn StdError + 'static)) {
    tracing::warn!(target: "idem::nats", error = %Chain(error), "could not send a nak");
}

/// A dead letter was not confirmed stored; tried again.
#[cfg(feature = "nats")]
pub(crate) fn nats_dead_letter_unconfirmed(attempt: u32, error: &(dyn StdError + 'static)) {
    tracing::warn!(
        target: "idem::nats",
        attempt,
        error = %Chain(error),
        "the dead letter was not confirmed stored",
    );
}

/// An in-progress ack could not be sent; the next tick tries again.
#[cfg(feature = "nats")]
pub(crate) fn nats_progress_ack_failed(error: &(dyn StdError + 'static)) {
    tracing::warn!(
        target: "idem::nats",
        error = %Chain(error),
        "could not send an in-progress ack",
    );
}

/// A message handler's error, then the sources of the idem [`Error`] it carries, if any:
/// that error's own message names only its kind.
#[cfg(feature = "nats")]
pub(crate) struct HandlerErrorLine<'a> {
    pub(crate) error: &'a dyn fmt::Display,
    pub(crate) idem: Option<&'a Error>,
}

#[cfg(feature = "nats")]
impl fmt::Display for HandlerErrorLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.error.to_string();
        f.write_str(&shown)?;
        match self.idem.and_then(StdError::source) {
            Some(source) => write_sources(f, shown, Some(source)),
            None => Ok(()),
        }
    }
}

/// An error and its sources, as `error: source: source's source`: an idem [`Error`] names
/// only its kind and leaves what failed to its chain, which a log line must carry.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.0.to_string();
        f.write_str(&shown)?;
        write_sources(f, shown, self.0.source())
    }
}

/// Writes `: source` for `source` and each of its own sources; `shown` is the message
/// written last.
fn write_sources(
    f: &mut fmt::Formatter<'_>,
    mut shown: String,
    mut source: Option<&(dyn StdError + 'static)>,
) -> fmt::Result {
    while let Some(error) = source {
        // Some clients print their source in their own message too (redis-rs: `broken
        // pipe: broken pipe`); a line that says the same thing twice helps no one.
        let message = error.to_string();
        if message != shown {
            write!(f, ": {message}")?;
        }
        shown = message;
        source = error.source();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_error_carries_its_chain_once() {
        let shared = crate::error::SharedError::new(Error::store("connection refused"));
        let err = shared.to_error();
        assert_eq!(
            Chain(&err).to_string(),
            "idempotency store failed: connection refused"
        );
    }
}
