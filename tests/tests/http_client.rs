//! The client middleware (`idem_core::client::IdempotentRetry`) over a real axum server
//! behind idem's own `IdempotencyLayer`, with a real reqwest client: one key per logical
//! request, reused on every retry; what is retried and what is not; the attempt and
//! deadline bounds. A recording TCP proxy between the two sees every attempt's headers and
//! can cut a connection after the server answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_core::Backoff;
use idem_core::client::{DeadlineExceeded, Delivery, IdempotentRetry};
use idem_core::http::IdempotencyLayer;
use reqwest::StatusCode;
use reqwest_middleware::ClientWithMiddleware;
use tests::http_server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `upstream` that records what clients send, and cuts the first
/// `cut` connections once the server's answer started arriving (the handler ran and its
/// response was stored), so the client never reads it.
struct Proxy {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, cut: usize) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let to_cut = Arc::new(AtomicUsize::new(cut));
        let recorded = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut_this = to_cut
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                tokio::spawn(relay(client, upstream, recorded.clone(), cut_this));
            }
        });
        Proxy { addr, sent }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `Idempotency-Key` value of every request sent through the proxy, in order.
    fn keys(&self) -> Vec<String> {
        self.header_values("idempotency-key")
    }

    /// How many requests went through the proxy.
    fn requests(&self) -> usize {
        let sent = self.sent.lock().unwrap();
        String::from_utf8_lossy(&sent)
            .matches(" HTTP/1.1\r\n")
            .count()
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        let sent = self.sent.lock().unwrap();
        String::from_utf8_lossy(&sent)
            .split("\r\n")
            .filter_map(|line| {
                let (header, value) = line.split_once(':')?;
                header
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
            .collect()
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, sent: Arc<Mutex<Vec<u8>>>, cut: bool) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upward = async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sent.lock().unwrap().extend_from_slice(&buf[..n]);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let downward = async {
        if cut {
            // Wait for the answer's first bytes, then drop it: the server committed.
            let mut buf = [0u8; 16 * 1024];
            let _ = server_read.read(&mut buf).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        }
    };
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
    }
}

fn client(retry: IdempotentRetry) -> ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(tests::http_server::client())
        .with(retry)
        .build()
}

/// Quick retries, so a test waits on the server's hints, not on the default backoff.
fn fast() -> IdempotentRetry {
    IdempotentRetry::new()
        .backoff(Backoff::new(Duration::from_millis(10)).max(Duration::from_millis(50)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_after_the_server_committed_is_retried_with_the_same_key_and_replayed() {
    let server = TestServer::start(IdempotencyLayer::new()).await;
    let proxy = Proxy::start(server.addr, 1).await;
    let response = client(fast())
        .post(proxy.url("/charges"))
        .header("content-type", "application/json")
        .body(r#"{"amount_cents":500}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let delivery = Delivery::of(&response).unwrap().clone();
    let body = response.text().await.unwrap();
    assert!(body.contains(r#""charge":"ch_1""#), "{body}");
    assert_eq!(server.counts.started(), 1, "the handler ran once");
    assert_eq!(delivery.attempts(), 2);
    assert!(delivery.replayed(), "the retry got the stored response");
    let keys = proxy.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "the retry reused the key");
    assert_eq!(delivery.key(), Some(keys[0].as_str()));
    assert_eq!(keys[0].len(), 36, "a minted UUID: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_with_retry_after_is_waited_out_then_replayed_and_the_callers_key_is_kept() {
    let server = TestServer::start(IdempotencyLayer::new()).await;
    let proxy = Proxy::start(server.addr, 0).await;
    let key = "caller-key-409";
    // The first request with the key: the handler takes 800 ms.
    let first = {
        let url = server.url("/charges?ms=800");
        tokio::spawn(async move {
            tests::http_server::client()
                .post(url)
                .header("idempotency-key", key)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let response = client(fast())
        .post(proxy.url("/charges?ms=800"))
        .header("idempotency-key", key)
        .body("{}")
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(first.await.unwrap(), StatusCode::CREATED);
    assert_eq!(response.status(), StatusCode::CREATED);
    let delivery = Delivery::of(&response).unwrap();
    assert_eq!(delivery.attempts(), 2, "a 409, then the replay");
    assert!(delivery.replayed());
    assert_eq!(delivery.key(), Some(key));
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 was waited out: {waited:?}"
    );
    assert_eq!(server.counts.started(), 1);
    assert_eq!(
        proxy.keys(),
        [key, key],
        "the caller's key, on every attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_is_returned_at_once_not_retried() {
    let server = TestServer::start(IdempotencyLayer::new()).await;
    let proxy = Proxy::start(server.addr, 0).await;
    let plain = tests::http_server::client();
    let first = plain
        .post(server.url("/charges"))
        .header("idempotency-key", "reused")
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let started = Instant::now();
    let response = client(IdempotentRetry::new())
        .post(proxy.url("/charges"))
        .header("idempotency-key", "reused")
        .body("another body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(Delivery::of(&response).unwrap().attempts(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "no backoff wait"
    );
    assert_eq!(proxy.requests(), 1);
    assert_eq!(server.counts.started(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_answers_503_is_tried_exactly_max_attempts_times() {
    let server = TestServer::start(IdempotencyLayer::new()).await;
    let proxy = Proxy::start(server.addr, 0).await;
    let response = client(fast().max_attempts(3))
        .post(proxy.url("/status/503"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(Delivery::of(&response).unwrap().attempts(), 3);
    assert_eq!(
        server.counts.started(),
        3,
        "a 503 is not stored: each attempt ran"
    );
    assert_eq!(proxy.requests(), 3);
    let keys = proxy.keys();
    assert!(
        keys.len() == 3 && keys.iter().all(|k| *k == keys[0]),
        "{keys:?}"
    );
    // Other statuses that are not retried: one attempt each.
    for status in [400, 404, 500] {
        let response = client(fast())
            .post(proxy.url(&format!("/status/{status}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(Delivery::of(&response).unwrap().attempts(), 1, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_bounds_retries_and_a_running_attempt() {
    let server = TestServer::start(IdempotencyLayer::new()).await;
    // Retries of a 503 stop before the deadline, far below max_attempts.
    let retry = IdempotentRetry::new()
        .backoff(Backoff::new(Duration::from_millis(100)).max(Duration::from_millis(100)))
        .max_attempts(1000)
        .deadline(Duration::from_millis(700));
    let started = Instant::now();
    let response = client(retry.clone())
        .post(server.url("/status/503"))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let attempts = Delivery::of(&response).unwrap().attempts();
    assert!(
        (4..=7).contains(&attempts),
        "{attempts} attempts in {took:?}"
    );
    assert!(took < Duration::from_millis(700), "{took:?}");
    // An attempt still running at the deadline is abandoned.
    let started = Instant::now();
    let err = client(retry)
        .post(server.url("/charges?ms=3000"))
        .send()
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "{took:?}");
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("{err}")
    };
    let deadline = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert_eq!(deadline.attempts(), 1);
    assert!(deadline.key().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_gets_no_key_and_a_post_gets_a_fresh_one_per_logical_request() {
    let server = TestServer::start(IdempotencyLayer::new()).await;
    let proxy = Proxy::start(server.addr, 0).await;
    let client = client(fast());
    let response = client.get(proxy.url("/charges")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(Delivery::of(&response).unwrap().key(), None);
    assert!(proxy.keys().is_empty(), "{:?}", proxy.keys());
    for _ in 0..2 {
        let response = client
            .post(proxy.url("/charges"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(!Delivery::of(&response).unwrap().replayed());
    }
    let keys = proxy.keys();
    assert!(keys.len() == 2 && keys[0] != keys[1], "{keys:?}");
    assert_eq!(server.counts.started(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_timeout_is_retried_with_the_same_key_and_the_handler_runs_once() {
    let server = TestServer::start(IdempotencyLayer::new()).await;
    let proxy = Proxy::start(server.addr, 0).await;
    // The first attempt gives up after 300 ms; the handler takes 600 ms and finishes anyway.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(plain)
        .with(fast().max_attempts(10))
        .build();
    let response = client
        .post(proxy.url("/charges?ms=600"))
        .header("authorization", tests::http_server::TEST_AUTHORIZATION)
        .body("{}")
        .send()
        .await
        .unwrap();
    let delivery = Delivery::of(&response).unwrap().clone();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{delivery:?} {body}");
    assert!(delivery.replayed());
    assert!(delivery.attempts() >= 2, "{delivery:?}");
    assert_eq!(server.counts.started(), 1);
    let keys = proxy.keys();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn each_retry_is_an_event_under_target_idem_with_the_key_hashed() {
    let captured = tests::CapturedLog::default();
    let writer = captured.clone();
    // This thread's subscriber: the current-thread runtime runs the client and server here.
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let server = TestServer::start(IdempotencyLayer::new()).await;
    let response = client(fast().max_attempts(3))
        .post(server.url("/status/503?token=hunter2"))
        .header("idempotency-key", "secret-key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = captured.text();
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("outcome=\"retry\""))
        .collect();
    assert_eq!(retries.len(), 2, "{log}");
    assert!(
        retries
            .iter()
            .all(|l| l.contains(" idem:") && l.contains("reason=\"503\"") && l.contains(" key=")),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("outcome=\"gave_up\""))
            .count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains("secret-key-1"),
        "the raw key is never logged: {log}"
    );
    assert!(!log.contains("hunter2"), "nor the query: {log}");
    assert!(log.contains("path=\"/status/503\""), "{log}");
}
