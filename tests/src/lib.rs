//! Shared helpers of idem's integration tests (and the Redis servers and worker processes of the Redis tests).

use serde::{Deserialize, Serialize};

/// Which `idem_core::Error` a call returned, comparable in assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdemKind {
    /// `Error::InProgress`
    InProgress,
    /// `Error::PayloadMismatch`
    PayloadMismatch,
    /// `Error::Store`
    Store,
    /// `Error::Codec`
    Codec,
    /// `Error::StoreFull`
    StoreFull,
    /// Anything else.
    Other,
}

/// The error type of the test functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestError {
    /// idem refused or failed the call.
    Idem(IdemKind),
    /// The body failed.
    Body(String),
}

impl From<idem_core::Error> for TestError {
    fn from(err: idem_core::Error) -> Self {
        TestError::Idem(match err {
            idem_core::Error::InProgress => IdemKind::InProgress,
            idem_core::Error::PayloadMismatch => IdemKind::PayloadMismatch,
            idem_core::Error::Store(_) => IdemKind::Store,
            idem_core::Error::Codec(_) => IdemKind::Codec,
            idem_core::Error::StoreFull => IdemKind::StoreFull,
            _ => IdemKind::Other,
        })
    }
}

/// An error and its sources as one line, `error: source: ..`, as an error reporter
/// (anyhow's `{:#}`) prints it: an idem error's message names only its kind, the detail is
/// in the chain.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(err), |err| err.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

pub mod http_server;
pub mod nats;
pub mod postgres;
pub mod redis_server;
pub mod skips;

/// Captures what a `tracing_subscriber::fmt` subscriber writes (pass a clone to its
/// `with_writer`), for the tests that read idem's log lines.
#[derive(Clone, Default)]
pub struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("the log is UTF-8")
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
