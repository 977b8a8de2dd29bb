//! [`DeadlineExceeded`]: the error of a request whose overall deadline ran out mid-attempt.

use std::fmt;
use std::time::Duration;

/// The request's overall deadline ([`IdempotentRetry::deadline`](super::IdempotentRetry::deadline))
/// ran out while an attempt was still waiting for its answer. It reaches the caller as
/// `reqwest_middleware::Error::Middleware`; the server may still complete that attempt, so
/// the operation's outcome is unknown: send it again with the same key
/// ([`key`](DeadlineExceeded::key)) to learn it without running it twice.
///
/// ```
/// use std::time::Duration;
/// use idem_core::client::{DeadlineExceeded, IdempotentRetry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// # let url = format!("http://{}/slow", listener.local_addr().unwrap());
/// # let app = axum::Router::new().route("/slow", axum::routing::post(|| async {
/// #     tokio::time::sleep(Duration::from_secs(5)).await;
/// # }));
/// # tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(IdempotentRetry::new().deadline(Duration::from_millis(200)))
///     .build();
/// let err = client.post(&url).send().await.unwrap_err();
/// let reqwest_middleware::Error::Middleware(err) = err else { panic!("{err}") };
/// let deadline = err.downcast_ref::<DeadlineExceeded>().unwrap();
/// assert_eq!(deadline.attempts(), 1);
/// assert!(deadline.key().is_some());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineExceeded {
    pub(crate) deadline: Duration,
    pub(crate) attempts: u32,
    pub(crate) key: Option<String>,
}

impl DeadlineExceeded {
    /// The attempts sent, the one cut short included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The idempotency key the attempts carried, to send the request again with.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The deadline that ran out.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request's deadline of {:?} ran out during attempt {}; its outcome is unknown",
            self.deadline, self.attempts
        )
    }
}

impl std::error::Error for DeadlineExceeded {}
