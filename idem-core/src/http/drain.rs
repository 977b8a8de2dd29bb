//! Draining on shutdown: the handlers the layer runs keep going after their client leaves,
//! so a server awaits them after its listener stops, before the process exits.

use tokio_util::task::TaskTracker;

/// A handle on the handlers an [`IdempotencyLayer`](super::IdempotencyLayer) is running.
///
/// Take it with [`IdempotencyLayer::drain`](super::IdempotencyLayer::drain) before serving;
/// after the server's graceful shutdown returns, [`Drain::wait`] until every handler has
/// finished and stored its response — including those whose client went away, which the
/// server no longer tracks — so a deploy does not cut a side effect off halfway.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use idem_core::http::IdempotencyLayer;
///
/// let layer = IdempotencyLayer::new();
/// let drain = layer.drain();
/// // ... axum::serve(listener, app.layer(layer)).with_graceful_shutdown(signal).await ...
/// assert_eq!(drain.running(), 0);
/// drain.wait().await; // returns once no handler is running
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Drain {
    pub(crate) tasks: TaskTracker,
}

impl Drain {
    /// How many handlers are running now.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until no handler is running. Requests that arrive meanwhile still run, and are
    /// waited for too; bound the wait with `tokio::time::timeout` if you must.
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}
