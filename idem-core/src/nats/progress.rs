//! In-progress acks (`+WPI`) while a handler runs: the broker's twin of lease renewal.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Aborts the ticker when the handler ends, however it ends (result, panic, cancellation).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `handler`, sending `+WPI` for `message` every `every` while it is pending.
///
/// The ticker is its own task, so a handler that blocks its worker thread for a while
/// (a synchronous call) does not silence it on a multi-threaded runtime.
pub(super) async fn while_running<F: Future>(
    message: &Message,
    every: Option<Duration>,
    handler: F,
) -> F::Output {
    let Some(every) = every else {
        return handler.await;
    };
    let message = message.clone();
    let _ticker = AbortOnDrop(tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match message.ack_with(AckKind::Progress).await {
                Ok(()) => tracing::trace!(target: "idem::nats", "in-progress ack sent"),
                // The next tick tries again; if the connection stays down, the broker
                // redelivers after AckWait and the redelivery is naked while this runs.
                Err(err) => crate::event::nats_progress_ack_failed(&*err),
            }
        }
    }));
    handler.await
}
