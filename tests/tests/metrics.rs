//! The `metrics` feature: a counter per function and outcome and a call-duration histogram,
//! read through a recorder installed for this test's thread only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use idem_core::idempotent;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tests::TestError;

/// Every counter increment and histogram sample, by metric name and labels.
#[derive(Default)]
struct Seen {
    counters: Mutex<BTreeMap<String, u64>>,
    samples: Mutex<BTreeMap<String, usize>>,
}

struct Handle(Arc<Seen>, String);

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        *self
            .0
            .counters
            .lock()
            .unwrap()
            .entry(self.1.clone())
            .or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.0
            .counters
            .lock()
            .unwrap()
            .insert(self.1.clone(), value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, _value: f64) {
        *self
            .0
            .samples
            .lock()
            .unwrap()
            .entry(self.1.clone())
            .or_default() += 1;
    }
}

struct TestRecorder(Arc<Seen>);

fn describe(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle(Arc::clone(&self.0), describe(key))))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle(Arc::clone(&self.0), describe(key))))
    }
}

#[idempotent(name = "tests.metrics.charge")]
async fn charge(order: u64) -> Result<u64, TestError> {
    Ok(order)
}

#[test]
fn outcomes_are_counted_per_function_and_calls_timed() {
    let seen = Arc::new(Seen::default());
    let recorder = TestRecorder(Arc::clone(&seen));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            assert_eq!(charge(1).await, Ok(1));
            assert_eq!(charge(1).await, Ok(1));
            assert_eq!(charge(1).await, Ok(1));
        })
    });
    let counters = seen.counters.lock().unwrap().clone();
    assert_eq!(
        counters,
        BTreeMap::from([
            (
                "idem_outcomes_total{function=tests.metrics.charge,outcome=executed}".to_string(),
                1
            ),
            (
                "idem_outcomes_total{function=tests.metrics.charge,outcome=replayed}".to_string(),
                2
            ),
        ])
    );
    assert_eq!(
        seen.samples.lock().unwrap().clone(),
        BTreeMap::from([(
            "idem_call_duration_seconds{function=tests.metrics.charge}".to_string(),
            3
        )])
    );
}

#[test]
fn the_client_counts_retries_give_ups_and_replays() {
    use idem_core::Backoff;
    use idem_core::client::IdempotentRetry;
    use std::time::Duration;

    let seen = Arc::new(Seen::default());
    let recorder = TestRecorder(Arc::clone(&seen));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let server =
                tests::http_server::TestServer::start(idem_core::http::IdempotencyLayer::new())
                    .await;
            let client = reqwest_middleware::ClientBuilder::new(tests::http_server::client())
                .with(
                    IdempotentRetry::new()
                        .backoff(Backoff::new(Duration::from_millis(5)))
                        .max_attempts(3),
                )
                .build();
            let unavailable = client.post(server.url("/status/503")).send().await.unwrap();
            assert_eq!(unavailable.status().as_u16(), 503);
            for _ in 0..2 {
                let charged = client
                    .post(server.url("/charges"))
                    .header("idempotency-key", "metrics-1")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(charged.status().as_u16(), 201);
            }
        })
    });
    let client_counters: BTreeMap<String, u64> = seen
        .counters
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("idem_client_"))
        .map(|(name, n)| (name.clone(), *n))
        .collect();
    assert_eq!(
        client_counters,
        BTreeMap::from([
            (
                "idem_client_gave_up_total{reason=max_attempts}".to_string(),
                1
            ),
            ("idem_client_replays_total{}".to_string(), 1),
            ("idem_client_retries_total{reason=503}".to_string(), 2),
        ])
    );
}
