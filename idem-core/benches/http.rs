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
//! The harness lives in `common/http.rs`, shared with the peer comparison in `benches/peers/`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::post;
use http_body_util::BodyExt;

#[path = "common/http.rs"]
mod http_common;
#[path = "common/machine.rs"]
mod machine;
use http_common::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn loopback() {
    let (server, client) = (runtime(), runtime());
    let body = request_body();
    let bare = Target::without_cookies(serve(&server, route()));
    let layered = Target::without_cookies(serve(&server, idem_route()));
    // The layered route's first request stores the response; every later one replays it.
    client.block_on(round(&layered, body.clone(), Duration::ZERO));
    let variants = [
        Variant::new("bare route", "bare route", bare),
        Variant::new("layer, replays", "layer replays", layered),
    ];
    http_common::loopback(&client, &variants);
    drop(server);
    drop(client);
}

/// A route by name, for `--ab`.
fn route_named(name: &str) -> Router {
    match name {
        "bare" => route(),
        "replay" => idem_route(),
        "hash" => Router::new().route("/charges", post(hash_then_answer)),
        other => panic!("unknown route {other} (bare, replay, hash)"),
    }
}

/// The bare route's answer after hashing the request as the layer's fingerprint does
/// (method, path and query, content type and encoding, body, each framed, through xxh3-128):
/// the floor of any replay.
async fn hash_then_answer(
    req: Request<Body>,
) -> (
    StatusCode,
    [(header::HeaderName, &'static str); 1],
    &'static str,
) {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let header = |name| {
        parts
            .headers
            .get(name)
            .map(|v: &header::HeaderValue| v.as_bytes())
    };
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    hasher.update(b"B");
    for part in [
        Some(parts.method.as_str().as_bytes()),
        Some(path.as_bytes()),
        header(header::CONTENT_TYPE),
        header(header::CONTENT_ENCODING),
        Some(&body[..]),
    ] {
        match part {
            None => hasher.update(&[0]),
            Some(bytes) => {
                let mut frame = [1; 9];
                frame[1..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
                hasher.update(&frame);
                hasher.update(bytes);
            }
        }
    }
    black_box(hasher.digest128());
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        RESPONSE,
    )
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
        "replay" => idem_route(),
        other => panic!("unknown profile {other}"),
    };
    rt.block_on(async {
        for _ in 0..n {
            black_box(call(&app, request("replayed-key", &body)).await);
        }
    });
}

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        machine::print_machine();
    }
    if ab_if_asked(|server, name| Target::without_cookies(serve(server, route_named(name)))) {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        profile(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if section_enabled("criterion") {
        criterion_groups(&());
    }
    if section_enabled("loopback") {
        loopback();
    }
}
