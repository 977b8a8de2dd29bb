//! What the HTTP benches share (`benches/http.rs` and the peer comparison in
//! `benches/peers/`, which includes this file by path): the request, the route, the
//! in-process criterion groups, and the loopback client and its table. Both binaries run
//! the same rows from here, so a peer's figures sit beside the bare route and idem's layer
//! measured the same way in the same run.
#![allow(dead_code, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::routing::post;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkGroup, Criterion};
use http_body_util::BodyExt;
use idem_core::MokaStore;
use idem_core::http::IdempotencyLayer;
use tokio::runtime::Runtime;
use tower::ServiceExt;

pub const CONNECTIONS: usize = 64;
pub const WARM_UP: Duration = Duration::from_millis(500);
pub const ROUND: Duration = Duration::from_secs(2);
pub const ROUNDS: usize = 5;

/// A 1 KiB JSON request body.
pub fn request_body() -> Bytes {
    let mut json =
        String::from(r#"{"amount_cents":4250,"currency":"EUR","customer":"cus_8f2a91","note":""#);
    while json.len() < 1024 - 2 {
        json.push('x');
    }
    json.push_str("\"}");
    assert_eq!(json.len(), 1024);
    Bytes::from(json)
}

pub const RESPONSE: &str = r#"{"id":"ch_3Mtw9aLkdIwHu7ix0aXvcBqS","amount_cents":4250,"currency":"EUR","status":"succeeded"}"#;

/// The route: reads the body, answers 201 with a small JSON charge.
pub fn route() -> Router {
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

/// The route behind idem's layer on a fresh `MokaStore`.
pub fn idem_route() -> Router {
    route().layer(IdempotencyLayer::new().store(MokaStore::new()))
}

pub fn request(key: &str, body: &Bytes) -> Request<Body> {
    Request::post("/charges")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, "Bearer bench-user")
        .header("idempotency-key", key)
        .body(Body::from(body.clone()))
        .unwrap()
}

pub async fn call(app: &Router, req: Request<Body>) -> Bytes {
    let response = app.clone().oneshot(req).await.unwrap();
    assert!(response.status().is_success());
    response.into_body().collect().await.unwrap().to_bytes()
}

/// The calling thread's CPU time: on a current-thread runtime every part of a call runs on
/// it, and unlike wall time it does not count the time other processes hold the CPU (this
/// machine is shared; see BENCHMARKS.md).
pub struct ThreadCpu;

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

/// Rows a bench adds to each in-process group after the bare route and idem's rows.
/// `clock` is the group's own measurement, for rows that time themselves (`iter_custom`).
pub trait MoreRows {
    fn rows<M: Measurement<Value = Duration>>(
        &self,
        group: &mut BenchmarkGroup<'_, M>,
        clock: &M,
        rt: &Runtime,
        body: &Bytes,
    );
}

/// No rows beyond the bare route and idem's.
impl MoreRows for () {
    fn rows<M: Measurement<Value = Duration>>(
        &self,
        _: &mut BenchmarkGroup<'_, M>,
        _: &M,
        _: &Runtime,
        _: &Bytes,
    ) {
    }
}

fn in_process<M: Measurement<Value = Duration>>(
    c: &mut Criterion<M>,
    group: &str,
    clock: &M,
    more: &impl MoreRows,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = request_body();
    let bare = route();
    let layered = idem_route();
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
    more.rows(&mut group, clock, &rt, &body);
    group.finish();
}

/// Criterion groups `http_in_process` (wall time) and `http_in_process_cpu` (the thread's
/// CPU time), each with the bare route, idem's replay and first call, then `more`.
pub fn criterion_groups(more: &impl MoreRows) {
    let mut c = Criterion::default().configure_from_args();
    in_process(&mut c, "http_in_process", &WallTime, more);
    c.final_summary();
    let mut c = Criterion::default()
        .with_measurement(ThreadCpu)
        .configure_from_args();
    in_process(&mut c, "http_in_process_cpu", &ThreadCpu, more);
    c.final_summary();
}

/// A 2-worker multi-thread runtime: the loopback server's, or its client's.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves `app` on a loopback port from `rt`.
pub fn serve(rt: &Runtime, app: Router) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

/// A served route and the `Cookie` header each connection sends on it (connection `i`
/// sends `cookies[i]`; none when empty, as for the bare route and idem's layer).
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub cookies: Arc<[HeaderValue]>,
}

impl Target {
    pub fn without_cookies(addr: SocketAddr) -> Self {
        Target {
            addr,
            cookies: Arc::from([]),
        }
    }
}

/// One timed round: 64 keep-alive connections each sending requests back to back until
/// `until`. Returns (requests, latencies in ns).
pub async fn round(target: &Target, body: Bytes, run: Duration) -> (u64, Vec<u64>) {
    let start = Instant::now();
    let addr = target.addr;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|connection| {
            let body = body.clone();
            let cookie = target.cookies.get(connection).cloned();
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
                    let mut req = Request::post(format!("http://{addr}/charges"))
                        .header(header::HOST, "127.0.0.1")
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(header::AUTHORIZATION, "Bearer bench-user")
                        .header("idempotency-key", "replayed-key");
                    if let Some(cookie) = &cookie {
                        req = req.header(header::COOKIE, cookie.clone());
                    }
                    let req = req.body(http_body_util::Full::new(body.clone())).unwrap();
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

/// A row of the loopback table: its name in the table, its name in the ratio lines.
pub struct Variant {
    pub name: &'static str,
    pub short: &'static str,
    pub target: Target,
}

impl Variant {
    pub fn new(name: &'static str, short: &'static str, target: Target) -> Self {
        Variant {
            name,
            short,
            target,
        }
    }
}

/// The `loopback` section: a warm-up round of each variant, then `ROUNDS` rounds of each in
/// turn, a table, and each variant after the first against the first (totals, and the
/// median of the rounds paired with the first variant's round just before).
pub fn loopback(client: &Runtime, variants: &[Variant]) {
    let body = request_body();
    let mut results: Vec<(f64, Vec<u64>, Vec<f64>)> =
        vec![(0.0, Vec::new(), Vec::new()); variants.len()];
    for variant in variants {
        client.block_on(round(&variant.target, body.clone(), WARM_UP));
    }
    for _ in 0..ROUNDS {
        for (i, variant) in variants.iter().enumerate() {
            let (count, latencies) = client.block_on(round(&variant.target, body.clone(), ROUND));
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
    for (i, variant) in variants.iter().enumerate() {
        let (total, latencies, per_round) = &mut results[i];
        latencies.sort_unstable();
        let rate = *total / (ROUND.as_secs_f64() * ROUNDS as f64);
        rates.push(rate);
        let rounds: Vec<String> = per_round.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {} | {rate:.0} | {} | {:?} | {:?} |",
            variant.name,
            rounds.join(", "),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99)
        );
    }
    // Each round of a variant beside the first variant's round just before it: load from
    // other processes drifts slower than a pair of rounds.
    for i in 1..variants.len() {
        let mut paired: Vec<f64> = results[i]
            .2
            .iter()
            .zip(&results[0].2)
            .map(|(variant, first)| variant / first)
            .collect();
        paired.sort_by(f64::total_cmp);
        println!(
            "{} / {}: {:.3}x (totals), {:.3}x (median of {ROUNDS} paired rounds)",
            variants[i].short,
            variants[0].short,
            rates[i] / rates[0],
            paired[paired.len() / 2]
        );
    }
}

/// `--ab A B ROUNDS MS`: short alternating loopback rounds of two routes, so load from
/// other processes falls on both alike; prints B/A of the totals and the median pair.
/// `serve_named` serves a route by name on the server runtime.
pub fn ab(
    a: &str,
    b: &str,
    rounds: usize,
    round_ms: u64,
    serve_named: impl Fn(&Runtime, &str) -> Target,
) {
    let (server, client) = (runtime(), runtime());
    let body = request_body();
    let targets = [serve_named(&server, a), serve_named(&server, b)];
    for target in &targets {
        client.block_on(round(target, body.clone(), WARM_UP));
    }
    let round_time = Duration::from_millis(round_ms);
    let mut totals = [0u64; 2];
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let mut pair = [0u64; 2];
        for (i, target) in targets.iter().enumerate() {
            pair[i] = client.block_on(round(target, body.clone(), round_time)).0;
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

/// Runs `--ab A B ROUNDS MS` if the command line asks for it; whether it did.
pub fn ab_if_asked(serve_named: impl Fn(&Runtime, &str) -> Target) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--ab") else {
        return false;
    };
    let number = |at: usize| args[i + at].parse().unwrap();
    ab(
        &args[i + 1],
        &args[i + 2],
        number(3) as usize,
        number(4),
        serve_named,
    );
    true
}

/// Whether a section runs: all unless `IDEM_BENCH_SECTIONS` lists some (comma-separated).
pub fn section_enabled(name: &str) -> bool {
    std::env::var("IDEM_BENCH_SECTIONS")
        .map(|sections| sections.split(',').any(|s| s.trim() == name))
        .unwrap_or(true)
}
