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
pub mod postgres;
pub mod redis_server;
