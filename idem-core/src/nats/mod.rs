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
//! | is running (in this process or another) | `+WPI` every third of the consumer's `AckWait`, so it is not redelivered meanwhile |
//! | `Err(InProgress)`: the same key is running elsewhere | `-NAK` with a delay |
//! | `Err` of its own, or the store is down | `-NAK` with a backoff by delivery count |
//! | either of the two above, on the last allowed delivery | `+TERM`, an `ERROR` event, and the dead letter |
//! | `Err(PayloadMismatch)`, undecodable message, [`HandlerError::is_permanent`] | `+TERM`, an `ERROR` event, and the dead letter |
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
//! # Starting a processor
//!
//! A [`Processor`] serves one consumer: [`Processor::for_consumer`] (or
//! [`ProcessorBuilder::build`], for other settings) reads the consumer's configuration
//! from the server once and
//!
//! - refuses any ack policy but `AckPolicy::Explicit` ([`SetupError::AckPolicy`]): with
//!   `All` an ack also acks every earlier message, so a naked one is never redelivered
//!   once a later one is acked; with `None` nothing is ever redelivered;
//! - sends in-progress acks every third of its `AckWait` (or of its shortest `backoff`
//!   step), so a handler that runs longer than `AckWait` is not redelivered while it runs
//!   and spends no delivery of `max_deliver`;
//! - takes its `max_deliver` as the last allowed delivery.
//!
//! Build the processor again after changing the consumer's configuration. `AckWait` runs
//! from the delivery, so a message that waits in the client's buffer before `process`
//! sees it spends it unprotected: fetch in batches the handlers start on well within it.
//!
//! # Poison messages
//!
//! A message that can never be handled is not retried forever and not dropped silently.
//! On its last allowed delivery, a failing message (an `Err`, a store that is down, or a
//! key still in progress elsewhere) is terminated ([`Disposition::Exhausted`]) with an
//! `ERROR` event, where a nak would let the broker drop it unseen. The last allowed
//! delivery is the consumer's `max_deliver`; when that is unlimited (−1, JetStream's
//! default), the processor gives up at its own
//! [`fallback_max_deliver`](ProcessorBuilder::fallback_max_deliver) (default 10, about
//! four minutes of the default backoff) — set either higher where a store outage may last
//! longer.
//!
//! With a dead-letter subject ([`ProcessorBuilder::dead_letter`]), every message the
//! processor terminates — exhausted, undecodable, a payload mismatch, a permanent error —
//! is first published there, payload and headers as received (less the `Nats-*` ones),
//! with:
//!
//! | header | value |
//! |---|---|
//! | `Idem-Outcome` | `exhausted`, `undecodable`, `mismatch` or `permanent` |
//! | `Idem-Error` | the error and its sources, on one line (at most 1 KiB) |
//! | `Idem-Subject`, `Idem-Stream`, `Idem-Consumer` | where the message came from |
//! | `Idem-Stream-Sequence`, `Idem-Delivered` | its stream sequence and delivery count |
//! | `Idem-Msg-Id` | its `Nats-Msg-Id`, if it had one |
//!
//! The dead letter is confirmed stored by its stream before the message is terminated
//! (its own `Nats-Msg-Id` makes a retried publish a duplicate). Keep the dead-letter
//! subject out of the consumer's filter: a dead letter the same consumer reads back is
//! terminated without a second dead letter, and its event says so. If it cannot be stored,
//! the message is naked to be dead-lettered at its next delivery; on its last one it is
//! terminated all the same, and the event carries `dead_letter_error`.
//!
//! ```
//! use idem_core::idempotent;
//! use idem_core::nats::{Delivery, Disposition, Processor, async_nats};
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
//!     filter_subject: subject.clone(),
//!     max_deliver: 5,
//!     ..Default::default()
//! }).await?;
//! let processor = Processor::builder()
//!     .dead_letter(&js, format!("{name}.dead")) // a subject the stream stores
//!     .build(&consumer)
//!     .await?;
//! let mut messages = consumer.fetch().max_messages(2).messages().await?;
//! while let Some(message) = messages.next().await {
//!     let outcome = processor
//!         .process(&message?, |delivery: Delivery<OrderPlaced>| place_order(delivery.payload))
//!         .await;
//!     assert_eq!(outcome, Disposition::Acked); // executed once, then replayed; both acked
//! }
//! # js.delete_stream(&name).await?;
//! # Ok(())
//! # }
//! ```

mod builder;
mod dead_letter;
mod delivery;
mod disposition;
mod progress;
mod setup;

use std::future::Future;
use std::time::Duration;

/// The async-nats crate this module is built on, so your code names the same version.
pub use async_nats;
use async_nats::jetstream::{AckKind, Message};
use serde::de::DeserializeOwned;

use crate::error::BoxError;
use crate::event::Outcome as CallOutcome;
pub use builder::ProcessorBuilder;
use dead_letter::DeadLetter;
pub use delivery::Delivery;
pub use disposition::{Disposition, HandlerError};
use disposition::{Verdict, verdict};
pub use setup::SetupError;

/// How many times an ack or a term is sent before the answer is given up as lost.
const ANSWER_ATTEMPTS: u32 = 3;

/// Runs idempotent handlers for JetStream messages of one consumer and answers the broker
/// by their outcome (see the [module documentation](self)). Built for a consumer by
/// [`Processor::for_consumer`] or [`Processor::builder`], which read and check its
/// configuration.
///
/// ```
/// # use idem_core::nats::{Processor, async_nats};
/// # use async_nats::jetstream::{self, consumer::pull, stream};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), async_nats::Error> {
/// # let name = format!("docs_processor_{}", std::process::id());
/// let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
/// # js.create_stream(stream::Config { name: name.clone(), subjects: vec![name.clone()], ..Default::default() }).await?;
/// let consumer = js.get_stream(&name).await?.create_consumer(pull::Config {
///     durable_name: Some("orders".into()),
///     ack_wait: std::time::Duration::from_secs(3), // +WPI every second
///     max_deliver: 5,                              // the 5th failure is terminated
///     ..Default::default()
/// }).await?;
/// let processor = Processor::for_consumer(&consumer).await?;
/// # drop(processor);
/// # js.delete_stream(&name).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Processor {
    /// The in-progress ack interval, from the consumer's `AckWait`.
    progress: Option<Duration>,
    backoff_first: Duration,
    backoff_max: Duration,
    /// The last delivery the broker (or, for an unlimited consumer, the processor) allows.
    last_delivery: i64,
    dead_letter: Option<DeadLetter>,
}

/// What became of a dead letter, for the message's event.
enum DeadLetterReport<'a> {
    Published(&'a str),
    Lost(&'a str, BoxError),
}

impl Processor {
    /// The settings of a processor, to [`build`](ProcessorBuilder::build) for a consumer.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = idem_core::nats::Processor::builder()
    ///     .backoff(Duration::from_millis(200), Duration::from_secs(10));
    /// # drop(builder);
    /// ```
    pub const fn builder() -> ProcessorBuilder {
        ProcessorBuilder::new()
    }

    /// A processor with the default settings for `consumer`:
    /// `Processor::builder().build(consumer)`.
    ///
    /// # Errors
    ///
    /// As [`ProcessorBuilder::build`]: the consumer's ack policy is not `Explicit`, or its
    /// configuration cannot be read.
    ///
    /// ```
    /// # use idem_core::nats::{Processor, SetupError, async_nats};
    /// # use async_nats::jetstream::{self, consumer::{AckPolicy, push}, stream};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), async_nats::Error> {
    /// # let name = format!("docs_for_consumer_{}", std::process::id());
    /// # let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
    /// # let stream = js.create_stream(stream::Config { name: name.clone(), subjects: vec![name.clone()], ..Default::default() }).await?;
    /// let consumer = stream.create_consumer(push::Config {
    ///     deliver_subject: format!("{name}.deliver"),
    ///     ack_policy: AckPolicy::All,
    ///     ..Default::default()
    /// }).await?;
    /// let refused = Processor::for_consumer(&consumer).await;
    /// assert!(matches!(refused, Err(SetupError::AckPolicy { policy: AckPolicy::All, .. })));
    /// # js.delete_stream(&name).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn for_consumer<C>(
        consumer: &async_nats::jetstream::consumer::Consumer<C>,
    ) -> Result<Processor, SetupError>
    where
        C: async_nats::jetstream::consumer::IntoConsumerConfig,
    {
        Processor::builder().build(consumer).await
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
    /// its key's content is wrong or its last allowed delivery failed (dead-lettered
    /// first, when a subject is set). Emits one `tracing` event (target `idem::nats`) with
    /// the stream, consumer, stream sequence, delivery count and outcome, and what the
    /// handler's idempotent call did (`call`: `executed`, `replayed`, `rejected`, ..; see
    /// [`observe`](crate::observe)).
    ///
    /// `message` must come from the consumer the processor was built for: its
    /// `AckWait` and `max_deliver` are the ones applied.
    ///
    /// The handler should be an `#[idempotent(in_flight = "reject")]` fn (or call one):
    /// `reject` makes a duplicate that arrives while the first is running come back here
    /// at once as `Error::InProgress`, to be naked with a delay, instead of holding a
    /// consumer slot while it waits. Its `Ok` value is what a replay returns; it is
    /// dropped here.
    ///
    /// ```
    /// # use idem_core::nats::{Delivery, Disposition, Processor, async_nats};
    /// # use async_nats::jetstream::{self, consumer::pull, stream};
    /// # use futures_util::StreamExt;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), async_nats::Error> {
    /// # let name = format!("docs_poison_{}", std::process::id());
    /// # let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
    /// # let stream = js.create_stream(stream::Config { name: name.clone(), subjects: vec![name.clone()], ..Default::default() }).await?;
    /// # let consumer = stream.create_consumer(pull::Config::default()).await?;
    /// let processor = Processor::for_consumer(&consumer).await?;
    /// js.publish(name.clone(), "not json".into()).await?.await?;
    /// let message = consumer.fetch().max_messages(1).messages().await?.next().await.unwrap()?;
    /// let outcome = processor
    ///     .process(&message, |d: Delivery<u64>| async move { Ok::<_, idem_core::Error>(d.payload) })
    ///     .await;
    /// assert_eq!(outcome, Disposition::Undecodable); // terminated, never redelivered
    /// # js.delete_stream(&name).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn process<T, R, E, F, Fut>(&self, message: &Message, handler: F) -> Disposition
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
                let error = err.to_string();
                let (outcome, dead) = self
                    .give_up(message, delivered, Disposition::Undecodable, &error)
                    .await;
                report(message, outcome, None, Some(&error), dead);
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
            handler(Delivery::new(payload, msg_id)),
        ))
        .await;
        let Err(err) = &result else {
            let outcome = self.answer(message, AckKind::Ack, Disposition::Acked).await;
            report(message, outcome, call, None, None);
            return outcome;
        };
        // An idem error in the handler's error names only its kind: log its chain too.
        let line = crate::event::HandlerErrorLine {
            error: err,
            idem: err.idem_error(),
        }
        .to_string();
        // On the last allowed delivery a nak would be the end of the message, unseen.
        let last = delivered >= self.last_delivery;
        let (outcome, dead) = match verdict(err) {
            Verdict::InProgress | Verdict::Retry if last => {
                self.give_up(message, delivered, Disposition::Exhausted, &line)
                    .await
            }
            Verdict::InProgress => {
                let delay = self.delay(delivered);
                let outcome = self
                    .nak(message, delay, Disposition::InProgress { delay })
                    .await;
                (outcome, None)
            }
            Verdict::Retry => {
                let delay = self.delay(delivered);
                (
                    self.nak(message, delay, Disposition::Retry { delay }).await,
                    None,
                )
            }
            Verdict::Mismatch => {
                self.give_up(message, delivered, Disposition::Mismatch, &line)
                    .await
            }
            Verdict::Undecodable => {
                self.give_up(message, delivered, Disposition::Undecodable, &line)
                    .await
            }
            Verdict::Permanent => {
                self.give_up(message, delivered, Disposition::Permanent, &line)
                    .await
            }
        };
        report(message, outcome, call, Some(&line), dead);
        outcome
    }

    /// Terminates `message` as `outcome` (a terminal one), after publishing it to the
    /// dead-letter subject if one is set. A dead letter that could not be stored leaves
    /// the message naked instead, to be dead-lettered at its next delivery — unless this
    /// is its last one, where it is terminated all the same (the event says so).
    async fn give_up(
        &self,
        message: &Message,
        delivered: i64,
        outcome: Disposition,
        error: &str,
    ) -> (Disposition, Option<DeadLetterReport<'_>>) {
        let Some(dead_letter) = &self.dead_letter else {
            return (self.answer(message, AckKind::Term, outcome).await, None);
        };
        if dead_letter::is_own(message) {
            let loop_ = "the message is a dead letter of this consumer, not dead-lettered \
                         again: this consumer reads its own dead-letter subject";
            return (
                self.answer(message, AckKind::Term, outcome).await,
                Some(DeadLetterReport::Lost(dead_letter.subject(), loop_.into())),
            );
        }
        // The broker keeps waiting for an answer while the dead letter is stored.
        let published = progress::while_running(
            message,
            self.progress,
            dead_letter.publish(message, outcome.as_str(), error),
        )
        .await;
        let subject = dead_letter.subject();
        match published {
            Ok(()) => (
                self.answer(message, AckKind::Term, outcome).await,
                Some(DeadLetterReport::Published(subject)),
            ),
            Err(err) if delivered < self.last_delivery => {
                let delay = self.delay(delivered);
                let outcome = self.nak(message, delay, Disposition::Retry { delay }).await;
                (outcome, Some(DeadLetterReport::Lost(subject, err)))
            }
            Err(err) => (
                self.answer(message, AckKind::Term, outcome).await,
                Some(DeadLetterReport::Lost(subject, err)),
            ),
        }
    }

    /// Sends `kind` and waits for the broker to confirm it (double ack), retrying a lost
    /// confirmation: a lost ack would otherwise be a silent redelivery later.
    async fn answer(&self, message: &Message, kind: AckKind, outcome: Disposition) -> Disposition {
        for attempt in 1..=ANSWER_ATTEMPTS {
            match message.double_ack_with(kind).await {
                Ok(()) => return outcome,
                Err(err) => crate::event::nats_answer_unconfirmed(attempt, &kind, &*err),
            }
        }
        Disposition::AnswerLost
    }

    /// Sends a nak with `delay`. Not confirmed: a lost nak is a redelivery at `AckWait`.
    async fn nak(&self, message: &Message, delay: Duration, outcome: Disposition) -> Disposition {
        match message.ack_with(AckKind::Nak(Some(delay))).await {
            Ok(()) => outcome,
            Err(err) => {
                crate::event::nats_nak_failed(&*err);
                Disposition::AnswerLost
            }
        }
    }
}

/// The one tracing event of a processed message: at `ERROR` when the message was
/// terminated or its dead letter lost.
fn report(
    message: &Message,
    outcome: Disposition,
    call: Option<CallOutcome>,
    error: Option<&dyn std::fmt::Display>,
    dead: Option<DeadLetterReport<'_>>,
) {
    let info = message.info().ok();
    let stream = info.as_ref().map_or("", |info| info.stream);
    let consumer = info.as_ref().map_or("", |info| info.consumer);
    let sequence = info.as_ref().map_or(0, |info| info.stream_sequence);
    let delivered = info.as_ref().map_or(0, |info| info.delivered);
    let call = call.map(CallOutcome::as_str);
    let error = error.map(tracing::field::display);
    let (dead_letter, dead_letter_error) = match &dead {
        None => (None, None),
        Some(DeadLetterReport::Published(subject)) => (Some(*subject), None),
        Some(DeadLetterReport::Lost(subject, err)) => (
            Some(*subject),
            Some(tracing::field::display(crate::event::Chain(&**err))),
        ),
    };
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
                dead_letter,
                dead_letter_error,
            )
        };
    }
    if outcome.is_terminal() || dead_letter_error.is_some() {
        event!(tracing::Level::ERROR);
        return;
    }
    match outcome {
        Disposition::Acked => event!(tracing::Level::DEBUG),
        Disposition::InProgress { .. } => event!(tracing::Level::INFO),
        _ => event!(tracing::Level::WARN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nak_delay_doubles_per_delivery_up_to_the_max() {
        let processor = Processor {
            progress: None,
            backoff_first: Duration::from_millis(100),
            backoff_max: Duration::from_millis(700),
            last_delivery: 10,
            dead_letter: None,
        };
        let delays: Vec<_> = [0, 1, 2, 3, 4, 100, i64::MAX]
            .into_iter()
            .map(|n| processor.delay(n).as_millis())
            .collect();
        assert_eq!(delays, [100, 100, 200, 400, 700, 700, 700]);
    }
}
