//! A real axum 0.8 server on a loopback port for the HTTP layer's tests, with handlers that
//! count their runs, and a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use idem_core::http::{Drain, IdempotencyLayer, NoStore};
use serde::Deserialize;

/// How often the handlers started and finished.
#[derive(Clone, Default)]
pub struct Counts {
    /// Handler runs started.
    pub started: Arc<AtomicUsize>,
    /// Handler runs finished.
    pub finished: Arc<AtomicUsize>,
}

impl Counts {
    /// Runs started.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Runs finished.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }
}

#[derive(Deserialize)]
struct Slow {
    #[serde(default)]
    ms: u64,
}

/// `POST /charges?ms=N`: sleeps N ms, then 201 with a fresh charge id (the run number)
/// and the server's process id, a `Set-Cookie`, and an `X-Charge` header.
async fn charge(State(counts): State<Counts>, Query(slow): Query<Slow>, body: String) -> Response {
    let run = counts.started.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(slow.ms)).await;
    counts.finished.fetch_add(1, Ordering::SeqCst);
    let json = format!(
        r#"{{"charge":"ch_{run}","pid":{},"request_bytes":{}}}"#,
        std::process::id(),
        body.len()
    );
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::SET_COOKIE, "session=abc"),
            (header::HeaderName::from_static("x-charge"), "yes"),
        ],
        json,
    )
        .into_response()
}

/// `POST /status/{code}`: answers `code` with the run number as body; with `?no_store`,
/// adds `Cache-Control: no-store` (what frameworks send on every response); with
/// `?opt_out`, the `NoStore` extension (idem's own opt-out); with `?panic`, panics.
async fn status(
    State(counts): State<Counts>,
    Path(code): Path<u16>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let run = counts.started.fetch_add(1, Ordering::SeqCst) + 1;
    if q.contains_key("panic") {
        panic!("handler panicked on purpose");
    }
    counts.finished.fetch_add(1, Ordering::SeqCst);
    let _ = headers;
    let mut response = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
        format!("run {run}"),
    )
        .into_response();
    if q.contains_key("no_store") {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("private, no-store"),
        );
    }
    if q.contains_key("opt_out") {
        response.extensions_mut().insert(NoStore);
    }
    response
}

/// `POST /bytes/{n}`: `n` bytes of `x`, in chunks of 1 KiB; with `?sse`, as
/// `text/event-stream`.
async fn bytes(
    State(counts): State<Counts>,
    Path(n): Path<usize>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    counts.started.fetch_add(1, Ordering::SeqCst);
    counts.finished.fetch_add(1, Ordering::SeqCst);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..n)
        .step_by(1024)
        .map(|at| Ok(vec![b'x'; (n - at).min(1024)]))
        .collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let content_type = if q.contains_key("sse") {
        "text/event-stream"
    } else {
        "application/octet-stream"
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[derive(Deserialize)]
struct Ticker {
    /// Between lines.
    ms: u64,
    /// Lines to send; 0: never ends.
    #[serde(default)]
    lines: u64,
    /// The `Content-Type` (default `application/x-ndjson`).
    content_type: Option<String>,
}

/// `POST /ticker?ms=N&lines=L&content_type=T`: a body of unknown length, one line every N
/// ms, L lines (0: forever).
async fn ticker(State(counts): State<Counts>, Query(q): Query<Ticker>) -> Response {
    counts.started.fetch_add(1, Ordering::SeqCst);
    counts.finished.fetch_add(1, Ordering::SeqCst);
    let period = Duration::from_millis(q.ms);
    let lines = futures_util::stream::unfold(0u64, move |n| async move {
        if q.lines != 0 && n >= q.lines {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(period).await;
        }
        Some((
            Ok::<_, std::io::Error>(format!("{{\"tick\":{n}}}\n")),
            n + 1,
        ))
    });
    let content_type = q
        .content_type
        .unwrap_or_else(|| "application/x-ndjson".into());
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(lines),
    )
        .into_response()
}

/// The test routes: `POST /charges`, `GET /charges`, `POST /status/{code}`,
/// `POST /bytes/{n}`, `POST /ticker`, all sharing `counts`.
pub fn routes(counts: Counts) -> Router {
    Router::new()
        .route(
            "/charges",
            post(charge).get(|State(c): State<Counts>| async move { format!("{}", c.started()) }),
        )
        .route("/status/{code}", post(status))
        .route("/bytes/{n}", post(bytes))
        .route("/ticker", post(ticker))
        .with_state(counts)
}

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handlers' counts.
    pub counts: Counts,
    /// The layer's drain handle.
    pub drain: Drain,
    /// Resolves when the server stops.
    pub served: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves the test routes behind `layer` on 127.0.0.1, port 0.
    pub async fn start(layer: IdempotencyLayer) -> TestServer {
        let counts = Counts::default();
        let drain = layer.drain();
        let app = routes(counts.clone()).layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            addr,
            counts,
            drain,
            served,
            shutdown: Some(tx),
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting, and resolves when the open connections are done.
    pub async fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.served).await.unwrap();
    }
}

/// The principal [`client`] authenticates as, unless a request sets its own
/// `Authorization`: a default layer scopes keys by it and refuses requests without one.
pub const TEST_AUTHORIZATION: &str = "Bearer test-user";

/// A keep-alive HTTP/1.1 client without proxies, authenticated as [`TEST_AUTHORIZATION`].
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static(TEST_AUTHORIZATION),
    );
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A client that sends no credentials.
pub fn anonymous_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
