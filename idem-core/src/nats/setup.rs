//! Why a [`Processor`](super::Processor) could not be built for a consumer.

use async_nats::jetstream::consumer::AckPolicy;

use crate::error::BoxError;

/// The consumer cannot be served by a [`Processor`](super::Processor), or its configuration
/// could not be read. Returned by [`ProcessorBuilder::build`](super::ProcessorBuilder::build)
/// before any message is handled.
///
/// ```
/// use idem_core::nats::SetupError;
/// use idem_core::nats::async_nats::jetstream::consumer::AckPolicy;
///
/// let err = SetupError::AckPolicy { consumer: "orders".into(), policy: AckPolicy::All };
/// assert!(err.to_string().contains("AckPolicy::Explicit"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The consumer's configuration could not be read from the server.
    #[error("could not read the configuration of consumer `{consumer}`")]
    ConsumerInfo {
        /// The consumer's name.
        consumer: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// The consumer does not acknowledge each message on its own. With `All`, an ack
    /// also acks every earlier message, so a naked one is never redelivered once a later
    /// one is acked; with `None`, nothing is ever redelivered.
    #[error(
        "consumer `{consumer}` has ack policy {policy:?}; idem's processor needs \
         AckPolicy::Explicit (set `ack_policy: AckPolicy::Explicit` in its config, the \
         pull consumer's default)"
    )]
    AckPolicy {
        /// The consumer's name.
        consumer: String,
        /// Its ack policy.
        policy: AckPolicy,
    },

    /// No stream stores the dead-letter subject (or it is not a valid subject): a dead
    /// letter is confirmed stored before its message is terminated.
    #[error("no stream stores the dead-letter subject `{subject}`; create one that does")]
    DeadLetter {
        /// The dead-letter subject.
        subject: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
}
