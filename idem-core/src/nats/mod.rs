//! Idempotent consumers of NATS JetStream messages (feature `nats`).
//!
//! JetStream delivers at least once: after a crash, a lost ack, or a producer's retry, a
//! consumer sees the same event again. [`Processor::process`] runs an idempotent handler
//! (an `#[idempotent(in_flight = "reject")]` fn) for one message and answers the broker
//! by what became of it:
//!
//! | the handler | the answer |
//! |---|---|
//! | `Ok` — ran now and its outcome is stored, or replayed | `+ACK`, double ack (the broker confirms it) |
//! | is running (in this process or another) | `+WPI` every `AckWait / 3`, so it is not redelivered meanwhile |
//! | `Err(InProgress)`: the same key is running elsewhere | `-NAK` with a delay |
//! | `Err` of its own, or the store is down | `-NAK` with a backoff by delivery count |
//! | `Err(PayloadMismatch)`, undecodable message, [`HandlerError::is_permanent`] | `+TERM`, logged |
//!
//! The key is the handler's choice — a business id in the event, or the publisher's
//! `Nats-Msg-Id` ([`Delivery::msg_id`]) — never the stream sequence: a producer that
//! retries publishes the same event again under a new sequence.
//!
//! The handler's own `#[idempotent]` call does the claiming, storing and replaying
//! (records in any store, or in the handler's PostgreSQL transaction); this module only
//! decodes the message, keeps the broker informed while the handler runs, and answers it.
//! Because the handler returns only after its outcome is stored (or committed), the ack
//! always comes after the outcome: a crash between the two leads to a redelivery that is
//! replayed and acked.
//!
//! ```
//! use idem_core::idempotent;
//! use idem_core::nats::{Delivery, Outcome, Processor, async_nats};
//! use async_nats::jetstream::{self, consumer::pull, stream};
//! use futures_util::StreamExt;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct OrderPlaced { order_id: String, amount_cents: u64 }
//!
//! #[idempotent(key = "event.order_id", in_flight = "reject", name = "docs.orders.place.v1")]
//! async fn place_order(event: OrderPlaced) -> Result<u64, idem_core::Error> {
//!     // ... write the order; return what a replay should return
//!     Ok(event.amount_cents)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), async_nats::Error> {
//! # let name = format!("docs_orders_{}", std::process::id());
//! let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
//! # js.create_stream(stream::Config { name: name.clone(), subjects: vec![format!("{name}.>")], ..Default::default() }).await?;
//! # let subject = format!("{name}.placed");
//! let event = serde_json::to_vec(&OrderPlaced { order_id: "o-1".into(), amount_cents: 500 })?;
//! js.publish(subject.clone(), event.clone().into()).await?.await?;
//! js.publish(subject.clone(), event.into()).await?.await?; // a producer's retry
//!
//! let consumer = js.get_stream(&name).await?.create_consumer(pull::Config {
//!     durable_name: Some("orders".into()),
//!     ..Default::default()
//! }).await?;
//! let processor = Processor::new().ack_wait(consumer.cached_info().config.ack_wait);
//! let mut messages = consumer.fetch().max_messages(2).messages().await?;
//! while let Some(message) = messages.next().await {
//!     let outcome = processor
//!         .process(&message?, |delivery: Delivery<OrderPlaced>| place_order(delivery.payload))
//!         .await;
//!     assert_eq!(outcome, Outcome::Acked); // executed once, then replayed; both acked
//! }
//! # js.delete_stream(&name).await?;
//! # Ok(())
//! # }
//! ```

mod outcome;
mod progress;

use std::future::Future;
use std::time::Duration;

/// The async-nats crate this module is built on, so your code names the same version.
pub use async_nats;
use async_nats::jetstream::{AckKind, Message};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::event::Outcome as CallOutcome;
pub use outcome::{HandlerError, Outcome};
use outcome::{Verdict, verdict};

/// JetStream's default consumer `AckWait`.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// How many times an ack or a term is sent before the answer is given up as lost.
const ANSWER_ATTEMPTS: u32 = 3;

/// One decoded message, as a handler gets it.
///
/// ```
/// use idem_core::nats::Delivery;
///
/// let delivery = Delivery::new("payload", Some("evt-7".to_owned()));
/// assert_eq!(delivery.msg_id().unwrap(), "evt-7");
/// assert!(Delivery::new((), None).msg_id().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Delivery<T> {
    /// The message's payload, decoded from JSON.
    pub payload: T,
    msg_id: Option<String>,
}

impl<T> Delivery<T> {
    /// A delivery of `payload` with the publisher's `Nats-Msg-Id` (for handler tests).
    ///
    /// ```
    /// let delivery = idem_core::nats::Delivery::new(42u32, None);
    /// assert_eq!(delivery.payload, 42);
    /// ```
    pub fn new(payload: T, msg_id: Option<String>) -> Self {
        Delivery { payload, msg_id }
    }

    /// The publisher's `Nats-Msg-Id` header: an idempotency key chosen by the publisher,
    /// the same on each of its retries. A message without one is an
    /// [`Error::Codec`], which terminates it (return it with `?`).
    ///
    /// ```
    /// use idem_core::nats::Delivery;
    ///
    /// let delivery = Delivery::new(vec![1u8], Some("pub-1:evt-9".to_owned()));
    /// assert_eq!(delivery.msg_id().unwrap(), "pub-1:evt-9");
    /// ```
    pub fn msg_id(&self) -> Result<&str, Error> {
        self.msg_id
            .as_deref()
            .ok_or_else(|| Error::codec("the message has no Nats-Msg-Id header"))
    }
}

/// Runs idempotent handlers for JetStream messages and answers the broker by their outcome
/// (see the [module documentation](self)).
///
/// ```
/// use std::time::Duration;
/// use idem_core::nats::Processor;
///
/// let processor = Processor::new()
///     .ack_wait(Duration::from_secs(30)) // the consumer's AckWait: +WPI every 10 s
///     .backoff(Duration::from_secs(1), Duration::from_secs(60));
/// # drop(processor);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Processor {
    progress: Option<Duration>,
    backoff_first: Duration,
    backoff_max: Duration,
}

impl Default for Processor {
    fn default() -> Self {
        Processor::new()
    }
}

impl Processor {
    /// A processor for a consumer with JetStream's default `AckWait` (30 s): in-progress
    /// acks every 10 s; naks back off from 1 s, doubling per delivery, up to 60 s.
    ///
    /// ```
    /// let processor = idem_core::nats::Processor::new();
    /// # drop(processor);
    /// ```
    pub const fn new() -> Self {
        Processor {
            progress: Some(Duration::from_secs(DEFAULT_ACK_WAIT.as_secs() / 3)),
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }

    /// The consumer's `AckWait` (`consumer.cached_info().config.ack_wait`): in-progress
    /// acks are sent every third of it, so a handler that runs longer is not redelivered
    /// meanwhile (two acks may be lost before the broker gives up on it).
    ///
    /// ```
    /// use std::time::Duration;
    /// let processor = idem_core::nats::Processor::new().ack_wait(Duration::from_secs(3));
    /// # drop(processor);
    /// ```
    pub fn ack_wait(self, ack_wait: Duration) -> Self {
        self.progress_every(ack_wait / 3)
    }

    /// Sends an in-progress ack every `every` while the handler runs (clamped to at
    /// least 1 ms).
    ///
    /// ```
    /// use std::time::Duration;
    /// let processor = idem_core::nats::Processor::new().progress_every(Duration::from_secs(5));
    /// # drop(processor);
    /// ```
    pub fn progress_every(mut self, every: Duration) -> Self {
        self.progress = Some(every.max(Duration::from_millis(1)));
        self
    }

    /// Sends no in-progress acks: a handler that runs past `AckWait` is redelivered while it
    /// runs, and that redelivery is naked. Only for handlers that always finish well
    /// within `AckWait`.
    ///
    /// ```
    /// let processor = idem_core::nats::Processor::new().without_progress();
    /// # drop(processor);
    /// ```
    pub fn without_progress(mut self) -> Self {
        self.progress = None;
        self
    }

    /// The nak delays: `first` at the first delivery, doubled for each further delivery,
    /// at most `max`. Used for a failed handler and for a key in progress elsewhere.
    ///
    /// ```
    /// use std::time::Duration;
    /// let processor = idem_core::nats::Processor::new()
    ///     .backoff(Duration::from_millis(200), Duration::from_secs(10));
    /// # drop(processor);
    /// ```
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff_first = first;
        self.backoff_max = max.max(first);
        self
    }

    /// The nak delay of the `delivered`-th delivery.
    fn delay(&self, delivered: i64) -> Duration {
        let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 31)).unwrap_or(31);
        self.backoff_first
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }

    /// Decodes `message`'s JSON payload, runs `handler` on it while sending in-progress
    /// acks, and answers the broker: double ack when the handler returned `Ok`, nak with
    /// a delay when its key is in progress or it failed, terminate when the message or
    /// its key's content is wrong. Emits one `tracing` event (target `idem::nats`) with the
    /// stream, consumer, stream sequence, delivery count and outcome, and what the
    /// handler's idempotent call did (`call`: `executed`, `replayed`, `rejected`, ..; see
    /// [`observe`](crate::observe)).
    ///
    /// The handler should be an `#[idempotent(in_flight = "reject")]` fn (or call one):
    /// `reject` makes a duplicate that arrives while the first is running come back here
    /// at once as `Error::InProgress`, to be naked with a delay, instead of holding a
    /// consumer slot while it waits. Its `Ok` value is what a replay returns; it is
    /// dropped here.
    ///
    /// ```
    /// # use idem_core::nats::{Delivery, Outcome, Processor, async_nats};
    /// # use async_nats::jetstream::{self, consumer::pull, stream};
    /// # use futures_util::StreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), async_nats::Error> {
    /// # let name = format!("docs_poison_{}", std::process::id());
    /// # let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
    /// # let stream = js.create_stream(stream::Config { name: name.clone(), subjects: vec![name.clone()], ..Default::default() }).await?;
    /// # let consumer = stream.create_consumer(pull::Config::default()).await?;
    /// js.publish(name.clone(), "not json".into()).await?.await?;
    /// let message = consumer.fetch().max_messages(1).messages().await?.next().await.unwrap()?;
    /// let outcome = Processor::new()
    ///     .process(&message, |d: Delivery<u64>| async move { Ok::<_, idem_core::Error>(d.payload) })
    ///     .await;
    /// assert_eq!(outcome, Outcome::Undecodable); // terminated, never redelivered
    /// # js.delete_stream(&name).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn process<T, R, E, F, Fut>(&self, message: &Message, handler: F) -> Outcome
    where
        T: DeserializeOwned,
        E: HandlerError,
        F: FnOnce(Delivery<T>) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        let delivered = message.info().map_or(1, |info| info.delivered);
        let payload = match serde_json::from_slice::<T>(&message.payload) {
            Ok(payload) => payload,
            Err(err) => {
                let outcome = self
                    .answer(message, AckKind::Term, Outcome::Undecodable)
                    .await;
                report(message, outcome, None, Some(&err));
                return outcome;
            }
        };
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        // `observe` tells whether the handler's idempotent call executed or replayed.
        let (result, call) = crate::observe(progress::while_running(
            message,
            self.progress,
            handler(Delivery { payload, msg_id }),
        ))
        .await;
        let (outcome, error) = match &result {
            Ok(_) => (
                self.answer(message, AckKind::Ack, Outcome::Acked).await,
                None,
            ),
            Err(err) => {
                let outcome = match verdict(err) {
                    Verdict::InProgress => {
                        let delay = self.delay(delivered);
                        self.nak(message, delay, Outcome::InProgress { delay })
                            .await
                    }
                    Verdict::Retry => {
                        let delay = self.delay(delivered);
                        self.nak(message, delay, Outcome::Retry { delay }).await
                    }
                    Verdict::Mismatch => {
                        self.answer(message, AckKind::Term, Outcome::Mismatch).await
                    }
                    Verdict::Undecodable => {
                        self.answer(message, AckKind::Term, Outcome::Undecodable)
                            .await
                    }
                    Verdict::Permanent => {
                        self.answer(message, AckKind::Term, Outcome::Permanent)
                            .await
                    }
                };
                (outcome, Some(err))
            }
        };
        // An idem error in the handler's error names only its kind: log its chain too.
        let line = error.map(|err| crate::event::HandlerErrorLine {
            error: err,
            idem: err.idem_error(),
        });
        report(message, outcome, call, line.as_ref().map(|line| line as _));
        outcome
    }

    /// Sends `kind` and waits for the broker to confirm it (double ack), retrying a lost
    /// confirmation: a lost ack would otherwise be a silent redelivery later.
    async fn answer(&self, message: &Message, kind: AckKind, outcome: Outcome) -> Outcome {
        for attempt in 1..=ANSWER_ATTEMPTS {
            match message.double_ack_with(kind).await {
                Ok(()) => return outcome,
                Err(err) => crate::event::nats_answer_unconfirmed(attempt, &kind, &*err),
            }
        }
        Outcome::AnswerLost
    }

    /// Sends a nak with `delay`. Not confirmed: a lost nak is a redelivery at `AckWait`.
    async fn nak(&self, message: &Message, delay: Duration, outcome: Outcome) -> Outcome {
        match message.ack_with(AckKind::Nak(Some(delay))).await {
            Ok(()) => outcome,
            Err(err) => {
                crate::event::nats_nak_failed(&*err);
                Outcome::AnswerLost
            }
        }
    }
}

/// [`Processor::process`] with the default [`Processor::new`] settings (for a consumer
/// with the default 30 s `AckWait`).
///
/// ```
/// # use idem_core::nats::{Delivery, Outcome, async_nats};
/// # use async_nats::jetstream::{self, consumer::pull, stream};
/// # use futures_util::StreamExt;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), async_nats::Error> {
/// # let name = format!("docs_process_{}", std::process::id());
/// # let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
/// # let stream = js.create_stream(stream::Config { name: name.clone(), subjects: vec![name.clone()], ..Default::default() }).await?;
/// # let consumer = stream.create_consumer(pull::Config::default()).await?;
/// js.publish(name.clone(), "7".into()).await?.await?;
/// let message = consumer.fetch().max_messages(1).messages().await?.next().await.unwrap()?;
/// let outcome = idem_core::nats::process(&message, |d: Delivery<u64>| async move {
///     Ok::<_, idem_core::Error>(d.payload * 2)
/// })
/// .await;
/// assert_eq!(outcome, Outcome::Acked);
/// # js.delete_stream(&name).await?;
/// # Ok(())
/// # }
/// ```
pub async fn process<T, R, E, F, Fut>(message: &Message, handler: F) -> Outcome
where
    T: DeserializeOwned,
    E: HandlerError,
    F: FnOnce(Delivery<T>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    Processor::new().process(message, handler).await
}

/// The one tracing event of a processed message.
fn report(
    message: &Message,
    outcome: Outcome,
    call: Option<CallOutcome>,
    error: Option<&dyn std::fmt::Display>,
) {
    let info = message.info().ok();
    let stream = info.as_ref().map_or("", |info| info.stream);
    let consumer = info.as_ref().map_or("", |info| info.consumer);
    let sequence = info.as_ref().map_or(0, |info| info.stream_sequence);
    let delivered = info.as_ref().map_or(0, |info| info.delivered);
    let call = call.map(CallOutcome::as_str);
    let error = error.map(tracing::field::display);
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: "idem::nats",
                $level,
                stream,
                consumer,
                stream_sequence = sequence,
                delivered,
                outcome = outcome.as_str(),
                call,
                error,
            )
        };
    }
    match outcome {
        Outcome::Acked => event!(tracing::Level::DEBUG),
        Outcome::InProgress { .. } => event!(tracing::Level::INFO),
        Outcome::Retry { .. } | Outcome::AnswerLost => event!(tracing::Level::WARN),
        Outcome::Mismatch | Outcome::Undecodable | Outcome::Permanent => {
            event!(tracing::Level::ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_doubles_per_delivery_up_to_the_max() {
        let processor =
            Processor::new().backoff(Duration::from_millis(100), Duration::from_millis(700));
        let delays: Vec<_> = [0, 1, 2, 3, 4, 100, i64::MAX]
            .into_iter()
            .map(|n| processor.delay(n).as_millis())
            .collect();
        assert_eq!(delays, [100, 100, 200, 400, 700, 700, 700]);
    }
}
