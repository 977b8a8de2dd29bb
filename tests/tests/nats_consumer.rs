//! `idem_core::nats` against the real NATS JetStream at `NATS_URL` (default 127.0.0.1:4222;
//! unreachable: skipped, or failed with `CI=true`): each test makes its
//! own stream, subject and consumer (a unique name) and deletes the stream at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use idem_core::nats::async_nats::jetstream::{
    self, consumer::PullConsumer, consumer::pull, stream,
};
use idem_core::nats::{Delivery, HandlerError, Outcome, Processor, async_nats};
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
        let url = tests::nats::nats_url();
        let client = async_nats::connect(url.as_str())
            .await
            .unwrap_or_else(|err| panic!("NATS JetStream must run at {url}: {err}"));
        let js = jetstream::new(client);
        let name = unique(test).replace('-', "_");
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.orders")],
                duplicate_window: window,
                ..Default::default()
            })
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("orders".into()),
                ack_wait,
                ..Default::default()
            })
            .await
            .unwrap();
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
        processor: Processor,
        orders: &Arc<Orders>,
        key_by: KeyBy,
        slots: usize,
        limit: Duration,
        done: impl Fn(&[(u64, i64, Outcome)]) -> bool,
    ) -> Vec<(u64, i64, Outcome)> {
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

fn acked(outcomes: &[(u64, i64, Outcome)]) -> usize {
    outcomes.iter().filter(|o| o.2 == Outcome::Acked).count()
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
    let processor = Processor::new()
        .ack_wait(Duration::from_secs(5))
        .backoff(Duration::from_millis(50), Duration::from_millis(200));
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
        .filter(|o| o.2 == Outcome::Acked)
        .map(|o| o.0)
        .collect();
    sequences.sort_unstable();
    sequences.dedup();
    assert_eq!(sequences.len(), 200, "every message acked");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.2, Outcome::Acked | Outcome::InProgress { .. })),
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
            Processor::new().ack_wait(ack_wait),
            &orders,
            KeyBy::OrderId,
            4,
            Duration::from_secs(10),
            |o| acked(o) == 1,
        )
        .await;
    // Long enough for a redelivery to show if the in-progress acks had not held it.
    tokio::time::sleep(ack_wait * 2).await;
    assert_eq!(outcomes, [(1, 1, Outcome::Acked)]);
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
    let processor = Processor::new()
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
        .filter(|o| matches!(o.2, Outcome::InProgress { .. }))
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
    let processor = Processor::new()
        .ack_wait(ack_wait)
        .backoff(Duration::from_millis(50), Duration::from_millis(50));
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
            (1, 1, Outcome::Undecodable),
            (2, 1, Outcome::Acked),
            (3, 1, Outcome::Mismatch),
            (4, 1, Outcome::Permanent),
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
    let processor = Processor::new()
        .ack_wait(Duration::from_secs(5))
        .backoff(Duration::from_millis(100), Duration::from_secs(1));
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
                Outcome::Retry {
                    delay: Duration::from_millis(100)
                }
            ),
            (
                1,
                2,
                Outcome::Retry {
                    delay: Duration::from_millis(200)
                }
            ),
            (1, 3, Outcome::Acked),
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
    let processor = Processor::new().ack_wait(Duration::from_secs(5));
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
            (1, 1, Outcome::Acked),
            (2, 1, Outcome::Acked),
            (3, 1, Outcome::Undecodable),
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
    while let Some(message) = messages.next().await {
        Processor::new()
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
