//! The HTTP layer beside the bare route, in the same run.
//! `cargo bench -p idem-core --features http --bench http`.
//!
//! Criterion group `http_in_process`: one `POST /charges` with a 1 KiB JSON body through
//! `tower::ServiceExt::oneshot` on an axum 0.8 router, response body read whole — the bare
//! route, the layer's replay, and the layer's first call (a fresh key each time), on
//! `MokaStore` — timed in wall time (`http_in_process`) and in the thread's CPU time
//! (`http_in_process_cpu`, which other processes on a shared machine do not inflate). Then
//! the `loopback` section (a table on stdout): HTTP/1.1 keep-alive
//! throughput and latency over 64 connections, the bare route against the layer's replays,
//! in alternating timed rounds. `IDEM_BENCH_SECTIONS=criterion,loopback` picks sections;
//! `--profile replay|bare N` runs one path N times for a profiler; `--ab A B ROUNDS MS`
//! alternates short loopback rounds of two of `bare`, `replay` and `hash` (the bare route
//! plus only the fingerprint's hashing, the part of a replay the contract requires).
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use criterion::Criterion;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use http_body_util::BodyExt;
use idem_core::MokaStore;
use idem_core::http::IdempotencyLayer;
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 64;
const WARM_UP: Duration = Duration::from_millis(500);
const ROUND: Duration = Duration::from_secs(2);
const ROUNDS: usize = 5;

/// A 1 KiB JSON request body.
fn request_body() -> Bytes {
    let mut json =
        String::from(r#"{"amount_cents":4250,"currency":"EUR","customer":"cus_8f2a91","note":""#);
    while json.len() < 1024 - 2 {
        json.push('x');
    }
    json.push_str("\"}");
    assert_eq!(json.len(), 1024);
    Bytes::from(json)
}

const RESPONSE: &str = r#"{"id":"ch_3Mtw9aLkdIwHu7ix0aXvcBqS","amount_cents":4250,"currency":"EUR","status":"succeeded"}"#;

/// The route: reads the body, answers 201 with a small JSON charge.
fn route() -> Router {
    Router::new().route(
        "/charges",
        post(|body: Bytes| async move {
            black_box(body);
            (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                RESPONSE,
            )
        }),
    )
}

fn request(key: &str, body: &Bytes) -> Request<Body> {
    Request::post("/charges")
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.clone()))
        .unwrap()
}

async fn call(app: &Router, req: Request<Body>) -> Bytes {
    let response = app.clone().oneshot(req).await.unwrap();
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap().to_bytes()
}

/// The calling thread's CPU time: on a current-thread runtime every part of a call runs on
/// it, and unlike wall time it does not count the time other processes hold the CPU (this
/// machine is shared; see BENCHMARKS.md).
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = cpu_time::ThreadTime;
    type Value = Duration;

    fn start(&self) -> cpu_time::ThreadTime {
        cpu_time::ThreadTime::now()
    }

    fn end(&self, start: cpu_time::ThreadTime) -> Duration {
        start.elapsed()
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

fn in_process<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = request_body();
    let bare = route();
    let layered = route().layer(IdempotencyLayer::new().store(MokaStore::new()));
    rt.block_on(call(&layered, request("replayed-key", &body)));
    let mut group = c.benchmark_group(group);
    group.bench_function("bare_route", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&bare, request("replayed-key", &body)).await) })
    });
    group.bench_function("layer_replay", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&layered, request("replayed-key", &body)).await) })
    });
    let next = AtomicU64::new(0);
    group.bench_function("layer_first_call", |b| {
        b.to_async(&rt).iter(|| async {
            let key = format!("first-{}", next.fetch_add(1, Ordering::Relaxed));
            black_box(call(&layered, request(&key, &body)).await)
        })
    });
    group.finish();
}

/// Serves `app` on a loopback port from `rt`.
fn serve(rt: &tokio::runtime::Runtime, app: Router) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

/// One timed round: 64 keep-alive connections each sending requests back to back until
/// `until`. Returns (requests, latencies in ns).
async fn round(addr: SocketAddr, body: Bytes, run: Duration) -> (u64, Vec<u64>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut latencies = Vec::with_capacity(4096);
                while start.elapsed() < run {
                    let req = Request::post(format!("http://{addr}/charges"))
                        .header(header::HOST, "127.0.0.1")
                        .header(header::CONTENT_TYPE, "application/json")
                        .header("idempotency-key", "replayed-key")
                        .body(http_body_util::Full::new(body.clone()))
                        .unwrap();
                    let sent = Instant::now();
                    sender.ready().await.unwrap();
                    let response = sender.send_request(req).await.unwrap();
                    assert!(response.status().is_success());
                    black_box(response.into_body().collect().await.unwrap().to_bytes());
                    latencies.push(sent.elapsed().as_nanos() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all.len() as u64, all)
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    Duration::from_nanos(sorted[((sorted.len() - 1) as f64 * p) as usize])
}

fn loopback() {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let body = request_body();
    let bare = serve(&server, route());
    let layered = serve(
        &server,
        route().layer(IdempotencyLayer::new().store(MokaStore::new())),
    );
    // The layered route's first request stores the response; every later one replays it.
    client.block_on(round(layered, body.clone(), Duration::ZERO));
    let variants = [("bare route", bare), ("layer, replays", layered)];
    let mut results: Vec<(f64, Vec<u64>, Vec<f64>)> = vec![(0.0, Vec::new(), Vec::new()); 2];
    for (_, addr) in variants {
        client.block_on(round(addr, body.clone(), WARM_UP));
    }
    for _ in 0..ROUNDS {
        for (i, (_, addr)) in variants.iter().enumerate() {
            let (count, latencies) = client.block_on(round(*addr, body.clone(), ROUND));
            let rate = count as f64 / ROUND.as_secs_f64();
            results[i].0 += count as f64;
            results[i].1.extend(latencies);
            results[i].2.push(rate);
        }
    }
    println!(
        "\nloopback: HTTP/1.1 keep-alive, {CONNECTIONS} connections, 1 KiB JSON POST, {ROUNDS} alternating rounds of {ROUND:?}"
    );
    println!("| variant | requests/s (mean of rounds) | rounds | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let mut rates = Vec::new();
    for (i, (name, _)) in variants.iter().enumerate() {
        let (total, latencies, per_round) = &mut results[i];
        latencies.sort_unstable();
        let rate = *total / (ROUND.as_secs_f64() * ROUNDS as f64);
        rates.push(rate);
        let rounds: Vec<String> = per_round.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {name} | {rate:.0} | {} | {:?} | {:?} |",
            rounds.join(", "),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99)
        );
    }
    // Each round of the layer beside the bare round just before it: load from other
    // processes drifts slower than a pair of rounds.
    let mut paired: Vec<f64> = results[1]
        .2
        .iter()
        .zip(&results[0].2)
        .map(|(layer, bare)| layer / bare)
        .collect();
    paired.sort_by(f64::total_cmp);
    println!(
        "layer replays / bare route: {:.3}x (totals), {:.3}x (median of {ROUNDS} paired rounds)",
        rates[1] / rates[0],
        paired[paired.len() / 2]
    );
    drop(server);
    drop(client);
}

/// A route by name, for `--ab`.
fn route_named(name: &str) -> Router {
    match name {
        "bare" => route(),
        "replay" => route().layer(IdempotencyLayer::new().store(MokaStore::new())),
        "hash" => Router::new().route("/charges", post(hash_then_answer)),
        other => panic!("unknown route {other} (bare, replay, hash)"),
    }
}

/// The bare route's answer after hashing the request as the layer's fingerprint does
/// (method, path and query, content type, body): the floor of any replay.
async fn hash_then_answer(
    req: Request<Body>,
) -> (
    StatusCode,
    [(header::HeaderName, &'static str); 1],
    &'static str,
) {
    struct Raw<'a>(&'a [u8]);
    impl serde::Serialize for Raw<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| Raw(v.as_bytes()));
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let fingerprint = idem_core::key_hasher()
        .fingerprint(&(parts.method.as_str(), path, content_type, Raw(&body)))
        .unwrap();
    black_box(fingerprint);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        RESPONSE,
    )
}

/// `--ab A B ROUNDS MS`: short alternating loopback rounds of two routes, so load from
/// other processes falls on both alike; prints B/A of the totals and the median pair.
fn ab(a: &str, b: &str, rounds: usize, round_ms: u64) {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let (server, client) = (runtime(), runtime());
    let body = request_body();
    let addrs = [
        serve(&server, route_named(a)),
        serve(&server, route_named(b)),
    ];
    for addr in addrs {
        client.block_on(round(addr, body.clone(), WARM_UP));
    }
    let round_time = Duration::from_millis(round_ms);
    let mut totals = [0u64; 2];
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let mut pair = [0u64; 2];
        for (i, addr) in addrs.iter().enumerate() {
            pair[i] = client.block_on(round(*addr, body.clone(), round_time)).0;
            totals[i] += pair[i];
        }
        ratios.push(pair[1] as f64 / pair[0] as f64);
    }
    ratios.sort_by(f64::total_cmp);
    let secs = round_time.as_secs_f64() * rounds as f64;
    println!(
        "{a}: {:.0} req/s, {b}: {:.0} req/s, {b}/{a}: {:.3}x (totals), {:.3}x (median of {rounds} pairs)",
        totals[0] as f64 / secs,
        totals[1] as f64 / secs,
        totals[1] as f64 / totals[0] as f64,
        ratios[ratios.len() / 2]
    );
}

fn section_enabled(name: &str) -> bool {
    std::env::var("IDEM_BENCH_SECTIONS")
        .map(|sections| sections.split(',').any(|s| s.trim() == name))
        .unwrap_or(true)
}

/// `http-<hash> --profile replay|bare N`: one path N times, for a profiler.
fn profile(what: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = request_body();
    let app = match what {
        "bare" => route(),
        "replay" => route().layer(IdempotencyLayer::new().store(MokaStore::new())),
        other => panic!("unknown profile {other}"),
    };
    rt.block_on(async {
        for _ in 0..n {
            black_box(call(&app, request("replayed-key", &body)).await);
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--ab") {
        let number = |at: usize| args[i + at].parse().unwrap();
        ab(&args[i + 1], &args[i + 2], number(3) as usize, number(4));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        profile(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if section_enabled("criterion") {
        let mut c = Criterion::default().configure_from_args();
        in_process(&mut c, "http_in_process");
        c.final_summary();
        let mut c = Criterion::default()
            .with_measurement(ThreadCpu)
            .configure_from_args();
        in_process(&mut c, "http_in_process_cpu");
        c.final_summary();
    }
    if section_enabled("loopback") {
        loopback();
    }
}
