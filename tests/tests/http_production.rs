//! The HTTP layer's production defaults (issue 16), over a real server and client: what a
//! team gets without configuring anything, tried as an attacker would.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use idem_core::MokaStore;
use idem_core::http::IdempotencyLayer;
use tests::http_server::{TestServer, anonymous_client, client};

fn layer() -> IdempotencyLayer {
    IdempotencyLayer::new().store(MokaStore::new())
}

async fn post(
    http: &reqwest::Client,
    url: String,
    key: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http.post(url).header("idempotency-key", key).body("{}");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// A flood of new keys from another principal against a bounded store: the victim's
/// record stays replayable, and the flood's excess claims get 503 with `Retry-After`. The
/// victim talks to a real server; the flood goes through the same router and layer in
/// process (100,000 requests over loopback take minutes on two cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_another_tenant_never_evicts_a_stored_response() {
    use tower::ServiceExt;

    let store = MokaStore::builder().max_capacity(10_000).build();
    let counts = tests::http_server::Counts::default();
    let app =
        tests::http_server::routes(counts.clone()).layer(IdempotencyLayer::new().store(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/charges", listener.local_addr().unwrap());
    let served = app.clone();
    tokio::spawn(async move { axum::serve(listener, served).await.unwrap() });
    let http = anonymous_client();
    let victim = [("authorization", "Bearer victim")];
    let first = post(&http, url.clone(), "pay-1", &victim).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = first.text().await.unwrap();

    const FLOOD: usize = 100_000;
    const TASKS: usize = 4;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut full, mut retry_after) = (0usize, 0usize, true);
            for i in (task..FLOOD).step_by(TASKS) {
                let request = axum::http::Request::post("/charges")
                    .header("authorization", "Bearer attacker")
                    .header("idempotency-key", format!("flood-{i}"))
                    .body(axum::body::Body::from("{}"))
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                match response.status() {
                    StatusCode::CREATED => ok += 1,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        full += 1;
                        retry_after &= response.headers().contains_key("retry-after");
                    }
                    other => panic!("flood request {i}: {other}"),
                }
            }
            (ok, full, retry_after)
        }));
    }
    let (mut ok, mut full) = (0, 0);
    for task in tasks {
        let (o, f, retry_after) = task.await.unwrap();
        assert!(retry_after, "a 503 without Retry-After");
        ok += o;
        full += f;
    }
    assert_eq!(ok + full, FLOOD);
    assert!(
        ok < 10_000,
        "{ok} flood requests stored in a store bounded at 10,000"
    );
    assert!(full >= FLOOD - 10_000, "{full} flood requests refused");

    let runs = counts.started();
    let retry = post(&http, url, "pay-1", &victim).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), first);
    assert_eq!(counts.started(), runs, "the victim's retry ran the handler");
}

/// A body of unknown length that is still running after the time bound streams from its
/// first byte; its key answers "not replayable" at once; the drain does not wait on it.
#[tokio::test]
async fn a_slow_stream_is_passed_through_live_and_never_holds_its_key() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let started = Instant::now();
    let mut response = post(&http, server.url("/ticker?ms=300&lines=6"), "nd-1", &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.chunk().await.unwrap().expect("a first line");
    let first_byte = started.elapsed();
    assert!(
        first_byte < Duration::from_millis(280),
        "first byte after {first_byte:?}: the stream was held back"
    );
    // While the stream still runs, a retry is answered at once, and never runs it again.
    let retry = post(&http, server.url("/ticker?ms=300&lines=6"), "nd-1", &[]).await;
    assert_eq!(retry.status(), StatusCode::CONFLICT);
    let problem = retry.text().await.unwrap();
    assert!(problem.contains("not-replayable"), "{problem}");
    assert_eq!(server.counts.started(), 1);
    assert_eq!(
        server.drain.running(),
        0,
        "the drain counts a response body"
    );
    drop(response);
}

#[tokio::test]
async fn an_endless_stream_does_not_hold_its_key_or_the_drain() {
    let server = TestServer::start(layer()).await;
    let http = client();
    for (key, content_type) in [
        ("tick-1", "application/x-ndjson"),
        ("tick-2", "Text/Event-Stream"),
    ] {
        let url = server.url(&format!("/ticker?ms=200&content_type={content_type}"));
        let mut response =
            tokio::time::timeout(Duration::from_secs(2), post(&http, url.clone(), key, &[]))
                .await
                .expect("the head of an endless stream");
        tokio::time::timeout(Duration::from_secs(1), response.chunk())
            .await
            .expect("the first line of an endless stream")
            .unwrap();
        drop(response); // the client leaves
        let retry = post(&http, url, key, &[]).await;
        assert_eq!(retry.status(), StatusCode::CONFLICT, "{content_type}");
        let problem = retry.text().await.unwrap();
        assert!(
            problem.contains("not-replayable"),
            "{content_type}: {problem}"
        );
    }
    tokio::time::timeout(Duration::from_secs(2), server.drain.wait())
        .await
        .expect("the drain waits on a response body");
    assert_eq!(server.counts.started(), 2);
}

/// Cookie sessions and API-key headers: one principal never sees another's response, and
/// a layer that was not told where principals are refuses rather than sharing one scope.
#[tokio::test]
async fn cookie_and_api_key_principals_never_share_a_scope() {
    let http = anonymous_client();
    // Default layer, an app that authenticates by cookie: no principal it can see.
    let default = TestServer::start(layer()).await;
    let response = post(
        &http,
        default.url("/charges"),
        "k",
        &[("cookie", "sid=alice")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("scope-missing"));
    assert_eq!(default.counts.started(), 0);

    let cookies = TestServer::start(layer().scope_from_cookie("sid")).await;
    let alice = post(
        &http,
        cookies.url("/charges"),
        "k",
        &[("cookie", "sid=alice")],
    )
    .await;
    let alice = alice.text().await.unwrap();
    let bob = post(
        &http,
        cookies.url("/charges"),
        "k",
        &[("cookie", "sid=bob")],
    )
    .await;
    assert!(bob.headers().get("idempotent-replayed").is_none());
    assert_ne!(bob.text().await.unwrap(), alice, "bob got alice's response");
    // Bob with another body is not told about alice's key.
    let probe = http
        .post(cookies.url("/charges"))
        .header("idempotency-key", "k")
        .header("cookie", "sid=bob")
        .body("other")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), StatusCode::UNPROCESSABLE_ENTITY); // his own key's body
    assert_eq!(cookies.counts.started(), 2);

    let keys = TestServer::start(
        layer().scope_from_header(axum::http::HeaderName::from_static("x-api-key")),
    )
    .await;
    post(&http, keys.url("/charges"), "k", &[("x-api-key", "a")]).await;
    let other = post(&http, keys.url("/charges"), "k", &[("x-api-key", "b")]).await;
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_eq!(keys.counts.started(), 2);

    // The explicit opt-in shares one anonymous scope.
    let anonymous = TestServer::start(layer().allow_anonymous()).await;
    post(&http, anonymous.url("/charges"), "k", &[]).await;
    let again = post(&http, anonymous.url("/charges"), "k", &[]).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let server = TestServer::start(layer()).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("authorization", "Bearer a".parse().unwrap());
    headers.append("authorization", "Bearer b".parse().unwrap());
    let response = anonymous_client()
        .post(server.url("/charges"))
        .header("idempotency-key", "k")
        .headers(headers)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.counts.started(), 0);
}

/// With the scope taken from the principal the auth layer decided on, a token refreshed
/// between a timeout and its retry replays instead of charging again.
#[tokio::test]
async fn a_refreshed_token_of_one_principal_replays() {
    #[derive(Clone, serde::Serialize)]
    struct UserId(String);

    async fn auth(
        mut req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        // t1 and t2 are two tokens of user u1; t3 is user u2.
        let user = match req.headers().get("authorization").map(|v| v.as_bytes()) {
            Some(b"Bearer t1" | b"Bearer t2") => Some("u1"),
            Some(b"Bearer t3") => Some("u2"),
            _ => None,
        };
        if let Some(user) = user {
            req.extensions_mut().insert(UserId(user.into()));
        }
        next.run(req).await
    }

    let counts = tests::http_server::Counts::default();
    let app = tests::http_server::routes(counts.clone())
        .layer(layer().scope_from_extension::<UserId>())
        .layer(axum::middleware::from_fn(auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/charges");
    let http = anonymous_client();
    let first = post(&http, url.clone(), "pay", &[("authorization", "Bearer t1")]).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let refreshed = post(&http, url.clone(), "pay", &[("authorization", "Bearer t2")]).await;
    assert_eq!(refreshed.headers()["idempotent-replayed"], "true");
    assert_eq!(counts.started(), 1, "a refreshed token charged again");
    let other_user = post(&http, url.clone(), "pay", &[("authorization", "Bearer t3")]).await;
    assert!(other_user.headers().get("idempotent-replayed").is_none());
    let nobody = post(&http, url, "pay", &[]).await;
    assert_eq!(nobody.status(), StatusCode::BAD_REQUEST);
    assert_eq!(counts.started(), 2);
}

/// `Cache-Control: no-store`, which frameworks send on every response, does not turn
/// idempotency off unless the layer is told to honour it.
#[tokio::test]
async fn cache_control_no_store_is_honoured_only_when_configured() {
    let http = client();
    let server = TestServer::start(layer()).await;
    for _ in 0..3 {
        post(&http, server.url("/status/201?no_store"), "ns", &[]).await;
    }
    assert_eq!(
        server.counts.started(),
        1,
        "no-store turned idempotency off"
    );
    let honouring = TestServer::start(layer().honor_cache_control_no_store()).await;
    for _ in 0..3 {
        post(&http, honouring.url("/status/201?no_store"), "ns", &[]).await;
    }
    assert_eq!(honouring.counts.started(), 3);
}

/// Auth and routing refusals are not stored (a rolling deploy that briefly lacks a route
/// must not poison the keys that hit it); other 4xx are.
#[tokio::test]
async fn auth_and_routing_refusals_are_not_stored() {
    let http = client();
    let server = TestServer::start(layer()).await;
    for code in [401, 403, 404, 405, 408, 409, 413, 425, 429, 500, 503] {
        for _ in 0..2 {
            let response = post(
                &http,
                server.url(&format!("/status/{code}")),
                &format!("s{code}"),
                &[],
            )
            .await;
            assert_eq!(response.status().as_u16(), code);
            assert!(
                response.headers().get("idempotent-replayed").is_none(),
                "{code} replayed"
            );
        }
    }
    assert_eq!(server.counts.started(), 22);
    for code in [200, 201, 302, 400, 402, 410, 422] {
        for _ in 0..2 {
            post(
                &http,
                server.url(&format!("/status/{code}")),
                &format!("s{code}"),
                &[],
            )
            .await;
        }
    }
    assert_eq!(server.counts.started(), 29);
    // A route the router does not have (yet): its 404 is not stored either.
    let missing = post(&http, server.url("/not-deployed-yet"), "late", &[]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let again = post(&http, server.url("/not-deployed-yet"), "late", &[]).await;
    assert!(again.headers().get("idempotent-replayed").is_none());
}

/// A panicking handler answers 500 problem+json, and its key is released.
#[tokio::test]
async fn a_handler_panic_is_500_and_releases_the_key() {
    let http = client();
    let server = TestServer::start(layer()).await;
    for _ in 0..2 {
        let response = post(&http, server.url("/status/201?panic"), "boom", &[]).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(
        server.counts.started(),
        2,
        "the retry after a panic did not run"
    );
}

/// Per-request headers of the first response are not replayed.
#[tokio::test]
async fn per_request_headers_are_not_replayed() {
    use axum::routing::post as route_post;
    let app = axum::Router::new()
        .route(
            "/r",
            route_post(|| async {
                (
                    StatusCode::CREATED,
                    [
                        ("x-request-id", "req-1"),
                        ("traceparent", "00-abc-def-01"),
                        ("server-timing", "db;dur=1"),
                        ("x-charge", "ch_1"),
                    ],
                    "done",
                )
            }),
        )
        .layer(layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = client();
    let url = format!("http://{addr}/r");
    let first = post(&http, url.clone(), "h", &[]).await;
    assert_eq!(first.headers()["x-request-id"], "req-1");
    let replay = post(&http, url, "h", &[]).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["x-charge"], "ch_1");
    for name in ["x-request-id", "traceparent", "server-timing"] {
        assert!(replay.headers().get(name).is_none(), "{name} replayed");
    }
}

/// The key extractor has the layer's exact rules: a quoted and a bare key are one key (one
/// order), and a missing key is the layer's 400.
#[tokio::test]
async fn the_key_extractor_gives_one_key_for_both_spellings() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use idem_core::http::IdempotencyKey;

    static ORDERS: AtomicUsize = AtomicUsize::new(0);

    #[idem_core::idempotent(key = "key", name = "tests.http.orders", store = store, skip(store))]
    async fn place(
        key: IdempotencyKey,
        store: &idem_core::SharedStore,
    ) -> Result<usize, idem_core::Error> {
        Ok(ORDERS.fetch_add(1, Ordering::SeqCst) + 1)
    }

    let store = Arc::new(idem_core::SharedStore::new(MokaStore::new()));
    let app = axum::Router::new()
        .route(
            "/orders",
            axum::routing::post(move |key: IdempotencyKey| {
                let store = Arc::clone(&store);
                async move { place(key, &store).await.unwrap().to_string() }
            }),
        )
        .layer(layer().keys_only());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = client();
    let url = format!("http://{addr}/orders");
    let quoted = post(&http, url.clone(), "\"ordo-1\"", &[]).await;
    let bare = post(&http, url.clone(), "ordo-1", &[]).await;
    assert_eq!(quoted.text().await.unwrap(), bare.text().await.unwrap());
    assert_eq!(
        ORDERS.load(Ordering::SeqCst),
        1,
        "two spellings, two orders"
    );
    let missing = http.post(url).body("{}").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("idempotency-key-missing")
    );
}

/// After a store stall, the request's timed-out claim is released as soon as the store
/// answers again: the retry runs, instead of 409 for a whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_timed_out_in_a_stall_is_released_when_the_store_returns() {
    use tests::redis_server::{RedisServer, redis_available};
    if !redis_available() {
        return;
    }
    let redis = RedisServer::spawn();
    let store = idem_core::RedisStore::builder(redis.url())
        .response_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let server = TestServer::start(IdempotencyLayer::new().store(store)).await;
    let http = client();
    redis.signal("STOP");
    let stalled = post(&http, server.url("/charges"), "stall-1", &[]).await;
    assert_eq!(stalled.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.signal("CONT");
    let mut answered = None;
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(3) {
        let retry = post(&http, server.url("/charges"), "stall-1", &[]).await;
        if retry.status() == StatusCode::CREATED {
            answered = Some(resumed.elapsed());
            break;
        }
        assert_eq!(
            retry.status(),
            StatusCode::CONFLICT,
            "a retry after the stall"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered = answered.expect("the key was still held 3 s after the store returned");
    assert_eq!(server.counts.started(), 1);
    println!("after the stall: the retry ran {answered:?} after the store returned");
}
