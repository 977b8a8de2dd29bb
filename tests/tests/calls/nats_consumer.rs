//! `idem_core::nats` against the real NATS JetStream at `NATS_URL` (default 127.0.0.1:4222;
//! unreachable: skipped, or failed with `CI=true`): each test makes its
//! own stream, subject and consumer (a unique name) and deletes the stream at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use idem_core::nats::async_nats::jetstream::{
    self,
    consumer::{AckPolicy, PullConsumer, pull, push},
    stream,
};
use idem_core::nats::{
    Delivery, Disposition, HandlerError, Processor, ProcessorBuilder, SetupError, async_nats,
};
use idem_core::{MokaStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};
use tests::redis_server::unique;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    amount_cents: u64,
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error(transparent)]
    Idem(#[from] idem_core::Error),
    #[error("the order service failed")]
    Unavailable,
    #[error("an order of nothing")]
    Invalid,
}

impl HandlerError for OrderError {
    fn idem_error(&self) -> Option<&idem_core::Error> {
        match self {
            OrderError::Idem(err) => Some(err),
            OrderError::Unavailable | OrderError::Invalid => None,
        }
    }

    fn is_permanent(&self) -> bool {
        matches!(self, OrderError::Invalid)
    }
}

/// What the handlers write: orders by id, how many times each was written, and how many
/// times a body started.
struct Orders {
    store: SharedStore,
    written: Mutex<HashMap<String, u32>>,
    runs: AtomicUsize,
    /// How many of the first runs fail (the failing-handler test).
    fail_first: usize,
    /// How long a body runs.
    body: Duration,
}

impl Orders {
    fn new(body: Duration, fail_first: usize) -> Arc<Self> {
        Arc::new(Orders {
            store: SharedStore::new(MokaStore::new()),
            written: Mutex::new(HashMap::new()),
            runs: AtomicUsize::new(0),
            fail_first,
            body,
        })
    }

    fn written(&self) -> HashMap<String, u32> {
        self.written.lock().unwrap().clone()
    }
}

#[idempotent(
    key = "event.order_id",
    name = "tests.nats.place_order.v1",
    in_flight = "reject",
    skip(orders),
    store = &orders.store
)]
async fn place_order(event: OrderPlaced, orders: &Orders) -> Result<String, OrderError> {
    orders.write(event).await
}

/// The same write, keyed by the publisher's `Nats-Msg-Id`.
#[idempotent(
    key = "msg_id",
    name = "tests.nats.place_order_by_msg_id.v1",
    in_flight = "reject",
    skip(orders),
    store = &orders.store
)]
async fn place_order_by_msg_id(
    msg_id: String,
    event: OrderPlaced,
    orders: &Orders,
) -> Result<String, OrderError> {
    orders.write(event).await
}

impl Orders {
    async fn write(&self, event: OrderPlaced) -> Result<String, OrderError> {
        let run = self.runs.fetch_add(1, SeqCst);
        tokio::time::sleep(self.body).await;
        if run < self.fail_first {
            return Err(OrderError::Unavailable);
        }
        if event.amount_cents == 0 {
            return Err(OrderError::Invalid);
        }
        *self
            .written
            .lock()
            .unwrap()
            .entry(event.order_id.clone())
            .or_default() += 1;
        Ok(format!("order {} placed", event.order_id))
    }
}

/// Which key the handler uses.
#[derive(Debug, Clone, Copy)]
enum KeyBy {
    OrderId,
    MsgId,
}

/// One test's stream (subject `NAME.orders`) and durable pull consumer.
struct Fixture {
    js: jetstream::Context,
    name: String,
    consumer: PullConsumer,
}

impl Fixture {
    async fn new(test: &str, ack_wait: Duration) -> Fixture {
        Fixture::with_duplicate_window(test, ack_wait, Duration::from_secs(120)).await
    }

    async fn with_duplicate_window(test: &str, ack_wait: Duration, window: Duration) -> Fixture {
        Fixture::with_config(test, window, |name| pull::Config {
            durable_name: Some("orders".into()),
            filter_subject: format!("{name}.orders"),
            ack_wait,
            ..Default::default()
        })
        .await
    }

    /// A stream `NAME` storing `NAME.>` (orders on `NAME.orders`, dead letters on
    /// `NAME.dead`), and a pull consumer made by `config(NAME)`.
    async fn with_config(
        test: &str,
        window: Duration,
        config: impl FnOnce(&str) -> pull::Config,
    ) -> Fixture {
        let url = tests::nats::nats_url();
        let client = async_nats::connect(url.as_str())
            .await
            .unwrap_or_else(|err| panic!("NATS JetStream must run at {url}: {err}"));
        let js = jetstream::new(client);
        let name = unique(test).replace('-', "_");
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                duplicate_window: window,
                ..Default::default()
            })
            .await
            .unwrap();
        let consumer = stream.create_consumer(config(&name)).await.unwrap();
        Fixture { js, name, consumer }
    }

    /// Publishes `payload` with `msg_id` as its `Nats-Msg-Id`, and waits for the stream's ack.
    async fn publish(&self, msg_id: &str, payload: Vec<u8>) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
        self.js
            .publish_with_headers(format!("{}.orders", self.name), headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn publish_order(&self, msg_id: &str, order: &OrderPlaced) {
        self.publish(msg_id, serde_json::to_vec(order).unwrap())
            .await;
    }

    /// Consumes with `slots` messages handled at once, recording every outcome, until
    /// `done(outcomes)` holds or `limit` passes. Returns the outcomes: (stream sequence,
    /// delivery count, outcome).
    async fn consume(
        &self,
        processor: ProcessorBuilder,
        orders: &Arc<Orders>,
        key_by: KeyBy,
        slots: usize,
        limit: Duration,
        done: impl Fn(&[(u64, i64, Disposition)]) -> bool,
    ) -> Vec<(u64, i64, Disposition)> {
        let processor = processor.build(&self.consumer).await.unwrap();
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let messages = self.consumer.messages().await.unwrap();
        let task = {
            let (outcomes, orders) = (Arc::clone(&outcomes), Arc::clone(orders));
            tokio::spawn(messages.for_each_concurrent(slots, move |message| {
                let (processor, outcomes, orders) = (
                    processor.clone(),
                    Arc::clone(&outcomes),
                    Arc::clone(&orders),
                );
                async move {
                    let message = message.unwrap();
                    let info = message.info().unwrap();
                    let (sequence, delivered) = (info.stream_sequence, info.delivered);
                    let outcome = processor
                        .process(&message, |d: Delivery<OrderPlaced>| async move {
                            match key_by {
                                KeyBy::OrderId => place_order(d.payload, &orders).await,
                                KeyBy::MsgId => {
                                    let msg_id = d.msg_id()?.to_owned();
                                    place_order_by_msg_id(msg_id, d.payload, &orders).await
                                }
                            }
                        })
                        .await;
                    outcomes
                        .lock()
                        .unwrap()
                        .push((sequence, delivered, outcome));
                }
            }))
        };
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&outcomes.lock().unwrap()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let _ = task.await;
        let outcomes = outcomes.lock().unwrap().clone();
        assert!(done(&outcomes), "not done within {limit:?}: {outcomes:?}");
        outcomes
    }

    /// The consumer's (messages not yet delivered, delivered and not acked, redelivered).
    async fn pending(&mut self) -> (u64, usize, usize) {
        let info = self.consumer.info().await.unwrap();
        (info.num_pending, info.num_ack_pending, info.num_redelivered)
    }

    async fn delete(self) {
        self.js.delete_stream(&self.name).await.unwrap();
    }
}

fn order(i: usize) -> OrderPlaced {
    OrderPlaced {
        order_id: format!("order-{i}"),
        amount_cents: 100 + i as u64,
    }
}

fn acked(outcomes: &[(u64, i64, Disposition)]) -> usize {
    outcomes
        .iter()
        .filter(|o| o.2 == Disposition::Acked)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_events_with_fifty_duplicates_make_150_orders_all_acked() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let mut fx = Fixture::new("nats-dupes", Duration::from_secs(5)).await;
    let orders = Orders::new(Duration::from_millis(5), 0);
    // 150 orders, and 50 of them published again under a new Nats-Msg-Id (a producer that
    // retried after the broker's duplicate window), interleaved so duplicates can meet
    // their first delivery in flight.
    for i in 0..150 {
        fx.publish_order(&format!("evt-{i}"), &order(i)).await;
        if i % 3 == 0 {
            fx.publish_order(&format!("evt-{i}-retry"), &order(i)).await;
        }
    }
    let processor =
        Processor::builder().backoff(Duration::from_millis(50), Duration::from_millis(200));
    let outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::OrderId,
            16,
            Duration::from_secs(30),
            |o| acked(o) == 200,
        )
        .await;

    let written = orders.written();
    assert_eq!(written.len(), 150);
    assert!(written.values().all(|&n| n == 1), "{written:?}");
    assert_eq!(orders.runs.load(SeqCst), 150, "one body run per order");
    let mut sequences: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.2 == Disposition::Acked)
        .map(|o| o.0)
        .collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(sequences.len(), 200, "every message acked");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.2, Disposition::Acked | Disposition::InProgress { .. })),
        "{outcomes:?}"
    );
    let (pending, ack_pending, _) = fx.pending().await;
    assert_eq!((pending, ack_pending), (0, 0), "nothing pending");
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_three_ack_waits_is_handled_once_without_redelivery() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let ack_wait = Duration::from_secs(1);
    let mut fx = Fixture::new("nats-long", ack_wait).await;
    let orders = Orders::new(ack_wait * 3, 0);
    fx.publish_order("evt-long", &order(1)).await;
    let outcomes = fx
        .consume(
            Processor::builder(),
            &orders,
            KeyBy::OrderId,
            4,
            Duration::from_secs(10),
            |o| acked(o) == 1,
        )
        .await;
    // Long enough for a redelivery to show if the in-progress acks had not held it.
    tokio::time::sleep(ack_wait * 2).await;
    assert_eq!(outcomes, [(1, 1, Disposition::Acked)]);
    assert_eq!(orders.runs.load(SeqCst), 1);
    assert_eq!(fx.pending().await, (0, 0, 0));
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_during_a_running_handler_is_naked_not_handled_twice() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let ack_wait = Duration::from_secs(1);
    let mut fx = Fixture::new("nats-redeliver", ack_wait).await;
    let orders = Orders::new(Duration::from_millis(2500), 0);
    fx.publish_order("evt-slow", &order(1)).await;
    // No in-progress acks: the broker redelivers the message after AckWait while the first
    // delivery is still running.
    let processor = Processor::builder()
        .without_progress()
        .backoff(Duration::from_millis(300), Duration::from_millis(300));
    let outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::OrderId,
            4,
            Duration::from_secs(15),
            |o| acked(o) >= 1 && o.iter().any(|o| o.1 > 1),
        )
        .await;
    let naked = outcomes
        .iter()
        .filter(|o| matches!(o.2, Disposition::InProgress { .. }))
        .count();
    assert!(naked >= 1, "the redelivery was naked: {outcomes:?}");
    assert_eq!(orders.runs.load(SeqCst), 1, "handled once: {outcomes:?}");
    assert_eq!(orders.written().len(), 1);
    let (pending, ack_pending, _) = fx.pending().await;
    assert_eq!((pending, ack_pending), (0, 0), "{outcomes:?}");
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_and_a_reused_order_id_are_terminated_after_one_try() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let ack_wait = Duration::from_secs(1);
    let mut fx = Fixture::new("nats-poison", ack_wait).await;
    let orders = Orders::new(Duration::ZERO, 0);
    fx.publish("evt-poison", b"{not json".to_vec()).await;
    fx.publish_order("evt-a", &order(1)).await;
    // The same order id with other content: a bug upstream, not a retry.
    let mut other = order(1);
    other.amount_cents += 1;
    fx.publish_order("evt-b", &other).await;
    // An order the handler refuses for good (`HandlerError::is_permanent`).
    let mut empty = order(2);
    empty.amount_cents = 0;
    fx.publish_order("evt-c", &empty).await;
    let processor =
        Processor::builder().backoff(Duration::from_millis(50), Duration::from_millis(50));
    let mut outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::OrderId,
            1,
            Duration::from_secs(10),
            |o| o.len() >= 4,
        )
        .await;
    // Long enough for a redelivery to show if the terminated messages had been naked.
    tokio::time::sleep(ack_wait * 2).await;
    outcomes.sort_by_key(|o| o.0);
    assert_eq!(
        outcomes,
        [
            (1, 1, Disposition::Undecodable),
            (2, 1, Disposition::Acked),
            (3, 1, Disposition::Mismatch),
            (4, 1, Disposition::Permanent),
        ]
    );
    assert_eq!(
        orders.runs.load(SeqCst),
        2,
        "the mismatch did not run the body"
    );
    assert_eq!(fx.pending().await, (0, 0, 0));
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_with_backoff_then_succeeds() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let mut fx = Fixture::new("nats-retry", Duration::from_secs(5)).await;
    let orders = Orders::new(Duration::ZERO, 2);
    fx.publish_order("evt-flaky", &order(1)).await;
    let processor =
        Processor::builder().backoff(Duration::from_millis(100), Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    let outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::OrderId,
            2,
            Duration::from_secs(10),
            |o| acked(o) == 1,
        )
        .await;
    assert_eq!(
        outcomes,
        [
            (
                1,
                1,
                Disposition::Retry {
                    delay: Duration::from_millis(100)
                }
            ),
            (
                1,
                2,
                Disposition::Retry {
                    delay: Duration::from_millis(200)
                }
            ),
            (1, 3, Disposition::Acked),
        ]
    );
    // The naks' delays held the redeliveries back (not the 5 s AckWait, not at once).
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(orders.runs.load(SeqCst), 3);
    assert_eq!(orders.written().len(), 1);
    assert_eq!(fx.pending().await, (0, 0, 0));
    fx.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_by_nats_msg_id_a_republished_message_is_replayed_and_one_without_it_terminated() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    // A short duplicate window: the publisher's retry after it is stored again by the
    // broker, and only the handler's key catches it.
    let window = Duration::from_millis(200);
    let mut fx = Fixture::with_duplicate_window("nats-msgid", Duration::from_secs(5), window).await;
    let orders = Orders::new(Duration::ZERO, 0);
    fx.publish_order("pub-1:evt-1", &order(1)).await;
    tokio::time::sleep(window * 3).await;
    fx.publish_order("pub-1:evt-1", &order(1)).await;
    // No Nats-Msg-Id: a handler keyed by it cannot run.
    fx.js
        .publish(
            format!("{}.orders", fx.name),
            serde_json::to_vec(&order(2)).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let processor = Processor::builder();
    let mut outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::MsgId,
            1,
            Duration::from_secs(10),
            |o| o.len() >= 3,
        )
        .await;
    outcomes.sort_by_key(|o| o.0);
    assert_eq!(
        outcomes,
        [
            (1, 1, Disposition::Acked),
            (2, 1, Disposition::Acked),
            (3, 1, Disposition::Undecodable),
        ]
    );
    assert_eq!(
        orders.runs.load(SeqCst),
        1,
        "the republished copy was replayed"
    );
    assert_eq!(fx.pending().await, (0, 0, 0));
    fx.delete().await;
}

// One thread, so the subscriber set for this thread sees every event of the test.
#[tokio::test(flavor = "current_thread")]
async fn each_message_emits_an_event_with_stream_consumer_sequence_delivery_and_outcome() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let captured = tests::CapturedLog::default();
    let writer = captured.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let fx = Fixture::new("nats-events", Duration::from_secs(5)).await;
    let orders = Orders::new(Duration::ZERO, 0);
    fx.publish_order("evt-1", &order(1)).await;
    fx.publish("evt-2", b"not json".to_vec()).await;
    let mut messages = fx
        .consumer
        .fetch()
        .max_messages(2)
        .messages()
        .await
        .unwrap();
    let processor = Processor::for_consumer(&fx.consumer).await.unwrap();
    while let Some(message) = messages.next().await {
        processor
            .process(&message.unwrap(), |d: Delivery<OrderPlaced>| {
                place_order(d.payload, &orders)
            })
            .await;
    }
    let log = captured.text();
    let event = |outcome: &str| {
        log.lines()
            .find(|l| l.contains("idem::nats") && l.contains(&format!("outcome=\"{outcome}\"")))
            .unwrap_or_else(|| panic!("no {outcome} event in:\n{log}"))
            .to_owned()
    };
    let acked = event("acked");
    let undecodable = event("undecodable");
    for (line, sequence) in [(&acked, 1), (&undecodable, 2)] {
        assert!(line.contains(&format!("stream=\"{}\"", fx.name)), "{line}");
        assert!(line.contains("consumer=\"orders\""), "{line}");
        assert!(
            line.contains(&format!("stream_sequence={sequence}")),
            "{line}"
        );
        assert!(line.contains("delivered=1"), "{line}");
    }
    assert!(
        undecodable.contains("ERROR") && undecodable.contains("error="),
        "{undecodable}"
    );
    // What the handler's idempotent call did.
    assert!(acked.contains("call=\"executed\""), "{acked}");
    fx.delete().await;
}

/// Captures every event at `DEBUG` and above on this thread (the tests that use it run on
/// a current-thread runtime, so spawned tasks log here too).
fn capture_log() -> (tests::CapturedLog, tracing::subscriber::DefaultGuard) {
    let captured = tests::CapturedLog::default();
    let writer = captured.clone();
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    (captured, guard)
}

/// Issue 17, point 8: the in-progress ack interval comes from the consumer's own AckWait
/// (before, a processor built without `.ack_wait(..)` sent them every 10 s, so this
/// message was redelivered and naked twice while it ran, spending `max_deliver`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_handler_on_a_two_second_ack_wait_is_delivered_once_run_once_and_acked() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let ack_wait = Duration::from_secs(2);
    let mut fx = Fixture::with_config("nats-ackwait", Duration::from_secs(120), |name| {
        pull::Config {
            durable_name: Some("orders".into()),
            filter_subject: format!("{name}.orders"),
            ack_wait,
            max_deliver: 3,
            ..Default::default()
        }
    })
    .await;
    let orders = Orders::new(Duration::from_secs(5), 0);
    fx.publish_order("evt-slow", &order(1)).await;
    let outcomes = fx
        .consume(
            Processor::builder(),
            &orders,
            KeyBy::OrderId,
            4,
            Duration::from_secs(15),
            |o| acked(o) == 1,
        )
        .await;
    // Long enough for a redelivery to show if the in-progress acks had not held it.
    tokio::time::sleep(ack_wait + Duration::from_millis(500)).await;
    assert_eq!(outcomes, [(1, 1, Disposition::Acked)], "one delivery");
    assert_eq!(orders.runs.load(SeqCst), 1, "one run");
    assert_eq!(fx.pending().await, (0, 0, 0), "acked, never redelivered");
    fx.delete().await;
}

/// Issue 17, point 9: a handler that always fails, `max_deliver = 3` — three runs, then
/// `+TERM`, an error event and the dead-letter message (before, the third delivery was
/// naked and the broker dropped the message silently).
#[tokio::test(flavor = "current_thread")]
async fn a_handler_that_always_fails_is_terminated_at_max_deliver_with_an_error_event_and_a_dead_letter()
 {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let (captured, _log) = capture_log();
    let mut fx = Fixture::with_config("nats-exhausted", Duration::from_secs(120), |name| {
        pull::Config {
            durable_name: Some("orders".into()),
            filter_subject: format!("{name}.orders"),
            ack_wait: Duration::from_secs(5),
            max_deliver: 3,
            ..Default::default()
        }
    })
    .await;
    let orders = Orders::new(Duration::ZERO, usize::MAX);
    fx.publish_order("evt-doomed", &order(1)).await;
    let dead = format!("{}.dead", fx.name);
    let processor = Processor::builder()
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .dead_letter(&fx.js, dead.clone());
    let outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::OrderId,
            1,
            Duration::from_secs(10),
            |o| o.len() >= 3,
        )
        .await;
    let retry = Disposition::Retry {
        delay: Duration::from_millis(50),
    };
    assert_eq!(
        outcomes,
        [(1, 1, retry), (1, 2, retry), (1, 3, Disposition::Exhausted)]
    );
    assert_eq!(orders.runs.load(SeqCst), 3, "three runs");
    // Terminated: nothing pending, nothing more delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pending, ack_pending, _) = fx.pending().await;
    assert_eq!((pending, ack_pending), (0, 0));

    let log = captured.text();
    let event = log
        .lines()
        .find(|l| l.contains("outcome=\"exhausted\""))
        .unwrap_or_else(|| panic!("no exhausted event in:\n{log}"));
    assert!(event.contains("ERROR"), "{event}");
    assert!(event.contains("the order service failed"), "{event}");
    assert!(event.contains("delivered=3"), "{event}");
    assert!(
        event.contains(&format!("dead_letter=\"{dead}\"")),
        "{event}"
    );

    let letter = fx
        .js
        .get_stream(&fx.name)
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&dead)
        .await
        .expect("the dead letter is stored");
    assert_eq!(letter.payload, serde_json::to_vec(&order(1)).unwrap());
    let header = |name: &str| {
        letter
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", letter.headers))
            .as_str()
            .to_owned()
    };
    assert_eq!(header("Idem-Outcome"), "exhausted");
    assert_eq!(header("Idem-Error"), "the order service failed");
    assert_eq!(header("Idem-Stream"), fx.name);
    assert_eq!(header("Idem-Consumer"), "orders");
    assert_eq!(header("Idem-Subject"), format!("{}.orders", fx.name));
    assert_eq!(header("Idem-Stream-Sequence"), "1");
    assert_eq!(header("Idem-Delivered"), "3");
    assert_eq!(header("Idem-Msg-Id"), "evt-doomed");
    fx.delete().await;
}

/// Issue 17, point 9, with JetStream's default unlimited `max_deliver`: the processor
/// gives up at its own fallback (before, the message was retried forever), and an
/// undecodable message is dead-lettered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_unlimited_max_deliver_the_processor_gives_up_at_its_fallback() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let fx = Fixture::new("nats-fallback", Duration::from_secs(5)).await;
    assert_eq!(fx.consumer.cached_info().config.max_deliver, -1);
    let orders = Orders::new(Duration::ZERO, usize::MAX);
    fx.publish_order("evt-doomed", &order(1)).await;
    fx.publish("evt-garbage", b"{not json".to_vec()).await;
    let dead = format!("{}.dead", fx.name);
    let processor = Processor::builder()
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .fallback_max_deliver(2)
        .dead_letter(&fx.js, dead.clone());
    let mut outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::OrderId,
            1,
            Duration::from_secs(10),
            |o| o.iter().filter(|o| o.2.is_terminal()).count() == 2,
        )
        .await;
    outcomes.sort_by_key(|o| (o.0, o.1));
    let retry = Disposition::Retry {
        delay: Duration::from_millis(50),
    };
    assert_eq!(
        outcomes,
        [
            (1, 1, retry),
            (1, 2, Disposition::Exhausted),
            (2, 1, Disposition::Undecodable)
        ]
    );
    assert_eq!(orders.runs.load(SeqCst), 2);
    let mut stream = fx.js.get_stream(&fx.name).await.unwrap();
    let letters = stream.info().await.unwrap().state.messages;
    assert_eq!(letters, 4, "two messages and their two dead letters");
    let mut letters = Vec::new();
    for sequence in [3, 4] {
        let letter = stream.get_raw_message(sequence).await.unwrap();
        assert_eq!(letter.subject.as_str(), dead);
        let outcome = letter.headers.get("Idem-Outcome").unwrap().as_str();
        letters.push((outcome.to_owned(), letter.payload.to_vec()));
    }
    letters.sort();
    assert_eq!(
        letters,
        [
            (
                "exhausted".to_owned(),
                serde_json::to_vec(&order(1)).unwrap()
            ),
            ("undecodable".to_owned(), b"{not json".to_vec()),
        ]
    );
    fx.delete().await;
}

/// Issue 17, point 9: a dead letter that cannot be stored never loses its message
/// unseen — naked to try again while deliveries are left, terminated on the last one with
/// `dead_letter_error` in the event.
#[tokio::test(flavor = "current_thread")]
async fn a_dead_letter_that_cannot_be_stored_is_retried_then_reported() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let (captured, _log) = capture_log();
    let fx = Fixture::with_config("nats-dlq-lost", Duration::from_secs(120), |name| {
        pull::Config {
            durable_name: Some("orders".into()),
            filter_subject: format!("{name}.orders"),
            ack_wait: Duration::from_secs(5),
            max_deliver: 2,
            ..Default::default()
        }
    })
    .await;
    // A dead-letter stream of its own, deleted after the processor checked it.
    let dead = format!("{}_dead", fx.name);
    fx.js
        .create_stream(stream::Config {
            name: dead.clone(),
            subjects: vec![dead.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let processor = Processor::builder()
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .dead_letter(&fx.js, dead.clone());
    fx.publish("evt-garbage", b"{not json".to_vec()).await;
    let orders = Orders::new(Duration::ZERO, 0);
    let processor = processor.build(&fx.consumer).await.unwrap();
    fx.js.delete_stream(&dead).await.unwrap();
    let mut outcomes = Vec::new();
    let mut messages = fx.consumer.messages().await.unwrap();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a delivery within 10 s")
            .unwrap()
            .unwrap();
        let delivered = message.info().unwrap().delivered;
        let outcome = processor
            .process(&message, |d: Delivery<OrderPlaced>| {
                place_order(d.payload, &orders)
            })
            .await;
        outcomes.push((delivered, outcome));
    }
    let retry = Disposition::Retry {
        delay: Duration::from_millis(50),
    };
    assert_eq!(outcomes, [(1, retry), (2, Disposition::Undecodable)]);
    let log = captured.text();
    let lost = log
        .lines()
        .filter(|l| l.contains("idem::nats") && l.contains("dead_letter_error="))
        .collect::<Vec<_>>();
    assert_eq!(lost.len(), 2, "{log}");
    assert!(lost.iter().all(|l| l.contains("ERROR")), "{log}");
    assert!(lost[1].contains("outcome=\"undecodable\""), "{log}");
    fx.delete().await;
}

/// A consumer that reads its own dead-letter subject (no filter) gets each dead letter
/// back once: it is terminated without a second dead letter, instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_read_back_by_its_own_consumer_is_not_dead_lettered_again() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let fx = Fixture::with_config("nats-dlq-loop", Duration::from_secs(120), |_| {
        pull::Config {
            durable_name: Some("orders".into()),
            ack_wait: Duration::from_secs(5),
            ..Default::default()
        }
    })
    .await;
    fx.publish("evt-garbage", b"{not json".to_vec()).await;
    let processor = Processor::builder().dead_letter(&fx.js, format!("{}.dead", fx.name));
    let orders = Orders::new(Duration::ZERO, 0);
    let outcomes = fx
        .consume(
            processor,
            &orders,
            KeyBy::OrderId,
            1,
            Duration::from_secs(10),
            |o| o.len() >= 2,
        )
        .await;
    // Long enough for a third message to show if the dead letter had looped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        outcomes,
        [
            (1, 1, Disposition::Undecodable),
            (2, 1, Disposition::Undecodable)
        ]
    );
    let mut stream = fx.js.get_stream(&fx.name).await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    assert_eq!(messages, 2, "the message and one dead letter");
    fx.delete().await;
}

/// Issue 17, point 10: with `AckPolicy::All` a naked message was never redelivered once a
/// later one was acked, with `None` nothing was; the processor now refuses both when it
/// starts, and a dead-letter subject no stream stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_without_explicit_acks_or_a_dead_letter_without_a_stream_is_refused() {
    if tests::nats::shared_nats().is_none() {
        return;
    }
    let fx = Fixture::new("nats-policy", Duration::from_secs(5)).await;
    let stream = fx.js.get_stream(&fx.name).await.unwrap();
    for (durable, policy) in [("all", AckPolicy::All), ("none", AckPolicy::None)] {
        let consumer = stream
            .create_consumer(push::Config {
                durable_name: Some(durable.into()),
                // Outside the stream's subjects: a deliver subject it stores is a cycle.
                deliver_subject: format!("{}_deliver.{durable}", fx.name),
                ack_policy: policy,
                ..Default::default()
            })
            .await
            .unwrap();
        let err = Processor::for_consumer(&consumer)
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, SetupError::AckPolicy { consumer, policy: p } if consumer == durable && *p == policy),
            "{err:?}"
        );
        assert!(err.to_string().contains("AckPolicy::Explicit"), "{err}");
    }
    let nowhere = format!("{}_nowhere.dead", fx.name);
    let err = Processor::builder()
        .dead_letter(&fx.js, nowhere.clone())
        .build(&fx.consumer)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, SetupError::DeadLetter { subject, .. } if *subject == nowhere),
        "{err:?}"
    );
    // The explicit pull consumer, with a dead-letter subject its stream stores.
    Processor::builder()
        .dead_letter(&fx.js, format!("{}.dead", fx.name))
        .build(&fx.consumer)
        .await
        .expect("an explicit consumer is served");
    fx.delete().await;
}

/// The crash drill of `examples/examples/orders_consumer.rs` (built here as the
/// `orders_consumer` binary): consumer processes writing orders to PostgreSQL in the
/// handler's transaction, SIGKILLed 6 times — at a random moment, after the write before
/// the commit, and after the commit before the ack — then one left to finish.
#[test]
fn the_crash_drill_writes_each_order_exactly_once_and_leaves_nothing_unacked() {
    let (Some(nats), Some(database)) = (
        tests::nats::shared_nats(),
        tests::postgres::shared_postgres(),
    ) else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orders_consumer"))
        .args(["--crash-drill", "--kills", "6"])
        .env("NATS_URL", nats)
        .env("IDEM_DATABASE_URL", database)
        .output()
        .expect("run the crash drill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let figure = |label: &str| -> String {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in:\n{stdout}"));
        line[label.len()..].trim().to_owned()
    };
    assert_eq!(figure("events published:"), "200", "{stdout}");
    assert_eq!(figure("orders written:"), "150 (150 distinct)", "{stdout}");
    assert_eq!(figure("messages left unacked:"), "0", "{stdout}");
    let kills = figure("kills:");
    assert!(kills.starts_with("6 ("), "{stdout}");
    // At least one kill landed after a commit whose message had not been acked.
    let confirmed: usize = kills
        .rsplit(", ")
        .next()
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(confirmed >= 1, "{stdout}");
    eprintln!("{stdout}");
}
