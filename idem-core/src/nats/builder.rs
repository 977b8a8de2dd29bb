//! The processor's settings, and its start: reading and checking the consumer's config.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, Config, Consumer, IntoConsumerConfig};

use super::Processor;
use super::dead_letter::DeadLetter;
use super::setup::SetupError;

/// JetStream's default consumer `AckWait`, used if the server reports none.
const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// The last allowed delivery when the consumer's own `max_deliver` is unlimited.
const DEFAULT_FALLBACK_MAX_DELIVER: u32 = 10;

/// The settings of a [`Processor`]; [`build`](Self::build) reads the consumer's own
/// configuration and checks it. Made by [`Processor::builder`].
///
/// ```
/// use std::time::Duration;
/// use idem_core::nats::Processor;
///
/// let builder = Processor::builder()
///     .backoff(Duration::from_millis(500), Duration::from_secs(30))
///     .fallback_max_deliver(5);
/// # drop(builder);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ProcessorBuilder {
    progress: bool,
    backoff_first: Duration,
    backoff_max: Duration,
    dead_letter: Option<(Context, String)>,
    fallback_max_deliver: u32,
}

impl Default for ProcessorBuilder {
    fn default() -> Self {
        ProcessorBuilder::new()
    }
}

impl ProcessorBuilder {
    /// The defaults: in-progress acks every third of the consumer's `AckWait`; naks back
    /// off from 1 s, doubling per delivery, up to 60 s; no dead-letter subject; a consumer
    /// without a `max_deliver` of its own gives up at the 10th delivery.
    ///
    /// ```
    /// let builder = idem_core::nats::ProcessorBuilder::new();
    /// # drop(builder);
    /// ```
    pub const fn new() -> Self {
        ProcessorBuilder {
            progress: true,
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            dead_letter: None,
            fallback_max_deliver: DEFAULT_FALLBACK_MAX_DELIVER,
        }
    }

    /// Sends no in-progress acks: a handler that runs past `AckWait` is redelivered while it
    /// runs, and that redelivery is naked (and spends a delivery of `max_deliver`). Only
    /// for handlers that always finish well within `AckWait`.
    ///
    /// ```
    /// let builder = idem_core::nats::Processor::builder().without_progress();
    /// # drop(builder);
    /// ```
    pub fn without_progress(mut self) -> Self {
        self.progress = false;
        self
    }

    /// The nak delays: `first` at the first delivery, doubled for each further delivery,
    /// at most `max`. Used for a failed handler and for a key in progress elsewhere.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = idem_core::nats::Processor::builder()
    ///     .backoff(Duration::from_millis(200), Duration::from_secs(10));
    /// # drop(builder);
    /// ```
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff_first = first;
        self.backoff_max = max.max(first);
        self
    }

    /// Where a message goes when the processor gives up on it (see the
    /// [module documentation](super#poison-messages)): published to `subject` through `js`
    /// with its payload and `Idem-*` headers naming its error, stream, sequence and
    /// delivery count, and confirmed stored, before it is terminated. A stream must store
    /// `subject` ([`build`](Self::build) checks), and this consumer must not read it.
    ///
    /// ```
    /// # use idem_core::nats::{Processor, async_nats};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), async_nats::Error> {
    /// let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
    /// let builder = Processor::builder().dead_letter(&js, "orders.dead");
    /// # drop(builder);
    /// # Ok(())
    /// # }
    /// ```
    pub fn dead_letter(mut self, js: &Context, subject: impl Into<String>) -> Self {
        self.dead_letter = Some((js.clone(), subject.into()));
        self
    }

    /// The last allowed delivery when the consumer's own `max_deliver` is unlimited (−1,
    /// JetStream's default): the broker would redeliver a failing message forever, so the
    /// processor gives up at this delivery instead (default 10: about four minutes of
    /// the default backoff). The consumer's own `max_deliver`, when set, always rules.
    /// Clamped to at least 1.
    ///
    /// ```
    /// let builder = idem_core::nats::Processor::builder().fallback_max_deliver(20);
    /// # drop(builder);
    /// ```
    pub fn fallback_max_deliver(mut self, deliveries: u32) -> Self {
        self.fallback_max_deliver = deliveries.max(1);
        self
    }

    /// Reads `consumer`'s configuration from the server and builds the processor for it:
    /// the in-progress ack interval is a third of its `AckWait` (or of its shortest
    /// `backoff` step, which replaces `AckWait` for redeliveries), and its `max_deliver`
    /// is the last allowed delivery.
    ///
    /// # Errors
    ///
    /// [`SetupError::AckPolicy`] unless the consumer's ack policy is
    /// `AckPolicy::Explicit`; [`SetupError::ConsumerInfo`] if its configuration cannot
    /// be read; [`SetupError::DeadLetter`] if no stream stores the dead-letter subject.
    ///
    /// ```
    /// # use idem_core::nats::{Processor, async_nats};
    /// # use async_nats::jetstream::{self, consumer::pull, stream};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), async_nats::Error> {
    /// # let name = format!("docs_build_{}", std::process::id());
    /// let js = jetstream::new(async_nats::connect("127.0.0.1:4222").await?);
    /// # js.create_stream(stream::Config { name: name.clone(), subjects: vec![format!("{name}.>")], ..Default::default() }).await?;
    /// let consumer = js.get_stream(&name).await?.create_consumer(pull::Config {
    ///     durable_name: Some("orders".into()),
    ///     filter_subject: format!("{name}.placed"),
    ///     max_deliver: 5,
    ///     ..Default::default()
    /// }).await?;
    /// let processor = Processor::builder()
    ///     .dead_letter(&js, format!("{name}.dead")) // stored by the same stream, not consumed
    ///     .build(&consumer)
    ///     .await?;
    /// # drop(processor);
    /// # js.delete_stream(&name).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn build<C: IntoConsumerConfig>(
        self,
        consumer: &Consumer<C>,
    ) -> Result<Processor, SetupError> {
        let name = consumer.cached_info().name.clone();
        // Fresh from the server: the cached copy may predate an update of the consumer.
        let info = consumer
            .get_info()
            .await
            .map_err(|err| SetupError::ConsumerInfo {
                consumer: name.clone(),
                source: Box::new(err),
            })?;
        let config = &info.config;
        if config.ack_policy != AckPolicy::Explicit {
            return Err(SetupError::AckPolicy {
                consumer: name,
                policy: config.ack_policy,
            });
        }
        if let Some((js, subject)) = &self.dead_letter {
            js.stream_by_subject(subject.as_str())
                .await
                .map_err(|err| SetupError::DeadLetter {
                    subject: subject.clone(),
                    source: Box::new(err),
                })?;
        }
        let last_delivery = if config.max_deliver > 0 {
            config.max_deliver
        } else {
            i64::from(self.fallback_max_deliver)
        };
        Ok(Processor {
            progress: self.progress.then(|| progress_interval(config)),
            backoff_first: self.backoff_first,
            backoff_max: self.backoff_max,
            last_delivery,
            dead_letter: self
                .dead_letter
                .map(|(js, subject)| DeadLetter::new(js, Arc::from(subject))),
        })
    }
}

/// A third of the shortest time the broker waits for an answer before it redelivers:
/// two in-progress acks may be lost before it gives up on the handler.
fn progress_interval(config: &Config) -> Duration {
    let ack_wait = if config.ack_wait.is_zero() {
        DEFAULT_ACK_WAIT
    } else {
        config.ack_wait
    };
    let shortest = config
        .backoff
        .iter()
        .copied()
        .filter(|step| !step.is_zero())
        .fold(ack_wait, Duration::min);
    (shortest / 3).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_interval_is_a_third_of_the_shortest_wait() {
        let config = |ack_wait, backoff: &[u64]| Config {
            ack_wait,
            backoff: backoff.iter().map(|&s| Duration::from_secs(s)).collect(),
            ..Default::default()
        };
        let interval = |c: Config| progress_interval(&c).as_millis();
        assert_eq!(interval(config(Duration::from_secs(3), &[])), 1000);
        assert_eq!(interval(config(Duration::ZERO, &[])), 10_000);
        assert_eq!(interval(config(Duration::from_secs(30), &[6, 60])), 2000);
        assert_eq!(interval(config(Duration::from_nanos(1), &[])), 1);
    }
}
