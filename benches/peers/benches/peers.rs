//! idem's HTTP layer beside `axum-idempotent` 0.2.7 and the bare route, in the same run.
//! `cargo bench` in `benches/peers/`.
//!
//! The harness is idem-core's (`idem-core/benches/common/http.rs`): the same 1 KiB JSON
//! `POST /charges`, route, criterion groups `http_in_process` / `http_in_process_cpu` and
//! 64-connection loopback client. This file adds axum-idempotent's rows: its layer configured
//! as its README says (`use_idempotency_key_header(Some("Idempotency-Key"))`, behind ruts'
//! `SessionLayer` on a `MemoryStore`, behind tower-cookies' `CookieManagerLayer`). It keeps
//! responses in the client's cookie session, so every request of a replay carries the
//! session cookie its first response set. `IDEM_BENCH_SECTIONS=criterion,store_size,loopback`
//! picks sections; `--ab A B ROUNDS MS` alternates loopback rounds of two of `bare`, `replay`
//! (idem) and `axum-idempotent`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, header};
use axum_idempotent::{IdempotentLayer, IdempotentOptions};
use criterion::BenchmarkGroup;
use criterion::measurement::Measurement;
use ruts::store::memory::MemoryStore;
use ruts::{CookieOptions, SessionLayer};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_cookies::CookieManagerLayer;

#[path = "../../../idem-core/benches/common/http.rs"]
mod http_common;
#[path = "../../../idem-core/benches/common/machine.rs"]
mod machine;
use http_common::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// First calls between two fresh stores: ruts' `MemoryStore` scans every stored field of
/// every session on each write (`cleanup_expired`), so a first call costs more the more
/// responses it holds; the row is timed on a store holding 0 to 999 of them.
const FIRST_CALLS_PER_STORE: u64 = 1_000;

/// The route behind axum-idempotent, keyed by the `Idempotency-Key` header's value, on a
/// fresh session store.
fn axum_idempotent_route() -> Router {
    let options = IdempotentOptions::default().use_idempotency_key_header(Some("Idempotency-Key"));
    route()
        .layer(IdempotentLayer::<MemoryStore>::new(options))
        .layer(
            SessionLayer::new(Arc::new(MemoryStore::new()))
                .with_cookie_options(CookieOptions::build().name("session")),
        )
        .layer(CookieManagerLayer::new())
}

/// A first call without a session: axum-idempotent stores the response in a new session
/// and ruts answers its cookie, returned as the `Cookie` header that replays must send.
async fn open_session(app: &Router, key: &str, body: &Bytes) -> HeaderValue {
    let response = app.clone().oneshot(request(key, body)).await.unwrap();
    assert!(response.status().is_success());
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let pair = set_cookie.split(';').next().unwrap();
    HeaderValue::from_str(pair).unwrap()
}

/// Checks, untimed, that a request with `cookie` is a replay: axum-idempotent marks one
/// with `idempotency-replayed: true`.
async fn assert_replays(app: &Router, cookie: &HeaderValue, body: &Bytes) {
    let req = with_cookie(request("replayed-key", body), cookie);
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.headers()["idempotency-replayed"], "true");
}

fn with_cookie(mut req: Request<Body>, cookie: &HeaderValue) -> Request<Body> {
    req.headers_mut().insert(header::COOKIE, cookie.clone());
    req
}

struct AxumIdempotentRows;

impl MoreRows for AxumIdempotentRows {
    fn rows<M: Measurement<Value = Duration>>(
        &self,
        group: &mut BenchmarkGroup<'_, M>,
        clock: &M,
        rt: &Runtime,
        body: &Bytes,
    ) {
        let app = axum_idempotent_route();
        let cookie = rt.block_on(async {
            let cookie = open_session(&app, "replayed-key", body).await;
            assert_replays(&app, &cookie, body).await;
            cookie
        });
        group.bench_function("axum_idempotent_replay", |b| {
            b.to_async(rt).iter(|| async {
                let req = with_cookie(request("replayed-key", body), &cookie);
                black_box(call(&app, req).await)
            })
        });
        group.bench_function("axum_idempotent_first_call", |b| {
            b.to_async(rt).iter_custom(|iters| async move {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    // A fresh store and session, untimed.
                    let app = axum_idempotent_route();
                    let cookie = open_session(&app, "opening-key", body).await;
                    let calls = FIRST_CALLS_PER_STORE.min(iters - done);
                    let start = clock.start();
                    for n in 0..calls {
                        let req = with_cookie(request(&format!("first-{n}"), body), &cookie);
                        black_box(call(&app, req).await);
                    }
                    timed += clock.end(start);
                    done += calls;
                }
                timed
            })
        });
    }
}

/// Serves axum-idempotent's route; each of the 64 connections gets its own session, opened
/// by a first call on the served router (its clones share the session store), so every
/// request in a round is a replay from that connection's session.
fn serve_axum_idempotent(server: &Runtime) -> Target {
    let app = axum_idempotent_route();
    let body = request_body();
    let cookies: Vec<HeaderValue> = server.block_on(async {
        let mut cookies = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let cookie = open_session(&app, "replayed-key", &body).await;
            assert_replays(&app, &cookie, &body).await;
            cookies.push(cookie);
        }
        cookies
    });
    Target {
        addr: serve(server, app),
        cookies: cookies.into(),
    }
}

fn serve_named(server: &Runtime, name: &str) -> Target {
    match name {
        "bare" => Target::without_cookies(serve(server, route())),
        "replay" => {
            // The first request stores the response; every request of a round replays it.
            let app = idem_route();
            server.block_on(call(&app, request("replayed-key", &request_body())));
            Target::without_cookies(serve(server, app))
        }
        "axum-idempotent" => serve_axum_idempotent(server),
        other => panic!("unknown route {other} (bare, replay, axum-idempotent)"),
    }
}

fn loopback() {
    let (server, client) = (runtime(), runtime());
    let bare = serve_named(&server, "bare");
    let idem = serve_named(&server, "replay");
    let axum_idempotent = serve_named(&server, "axum-idempotent");
    let variants = [
        Variant::new("bare route", "bare route", bare),
        Variant::new("idem layer, replays", "idem replays", idem),
        Variant::new(
            "axum-idempotent, replays (per-session lookups, session cookie sent)",
            "axum-idempotent replays",
            axum_idempotent,
        ),
    ];
    http_common::loopback(&client, &variants);
    drop(server);
    drop(client);
}

/// The `store_size` section: axum-idempotent's first call in one session (wall time, mean
/// of 1,000 calls) after 0 to 30,000 responses stored, on a current-thread runtime.
fn first_call_by_store_size() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = request_body();
    println!("\naxum-idempotent first call by responses already stored (MemoryStore, one session)");
    println!("| stored | first call, mean of 1,000 |");
    println!("|---|---|");
    for stored in [0, 1_000, 10_000, 30_000] {
        let mean = rt.block_on(async {
            let app = axum_idempotent_route();
            let cookie = open_session(&app, "opening-key", &body).await;
            let first = |n: u32| with_cookie(request(&format!("first-{n}"), &body), &cookie);
            for n in 0..stored {
                call(&app, first(n)).await;
            }
            let start = std::time::Instant::now();
            for n in stored..stored + 1_000 {
                black_box(call(&app, first(n)).await);
            }
            start.elapsed() / 1_000
        });
        println!("| {stored} | {mean:?} |");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        machine::print_machine();
    }
    if ab_if_asked(serve_named) {
        return;
    }
    if section_enabled("criterion") {
        criterion_groups(&AxumIdempotentRows);
    }
    if section_enabled("store_size") {
        first_call_by_store_size();
    }
    if section_enabled("loopback") {
        loopback();
    }
}
