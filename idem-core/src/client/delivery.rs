//! [`Delivery`]: what the middleware did to get a response, as a response extension.

use reqwest::Response;

/// How a response was obtained: the attempts the middleware made, whether the server
/// answered with a stored response (`Idempotent-Replayed: true`), and the idempotency key
/// the request carried. Every response that passed through
/// [`IdempotentRetry`](super::IdempotentRetry) has one in its extensions.
///
/// ```
/// use idem_core::client::Delivery;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// # let url = format!("http://{}/charges", listener.local_addr().unwrap());
/// # let app = axum::Router::new().route("/charges", axum::routing::post(|| async {
/// #     ([("idempotent-replayed", "true")], "ch_1")
/// # }));
/// # tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(idem_core::client::IdempotentRetry::new())
///     .build();
/// let response = client.post(&url).body("{}").send().await.unwrap();
/// let delivery = Delivery::of(&response).unwrap();
/// assert_eq!(delivery.attempts(), 1);
/// assert!(delivery.replayed());
/// assert!(delivery.key().is_some()); // a POST gets a key
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub(crate) attempts: u32,
    pub(crate) replayed: bool,
    pub(crate) key: Option<String>,
}

impl Delivery {
    /// The `Delivery` of a response that went through the middleware.
    pub fn of(response: &Response) -> Option<&Delivery> {
        response.extensions().get::<Delivery>()
    }

    /// How many times the request was sent (1: no retry).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the server answered with the stored response of an earlier attempt (or an
    /// earlier request with the same key) instead of running the handler again.
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// The idempotency key every attempt carried (minted, or the caller's); `None` for a
    /// request that had none (a GET).
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}
