//! The `Idempotency-Key` layer against a real axum server on loopback, with a real client:
//! behaviours 1–9 and 11 of the layer (see `idem_core::http`).

use std::time::Duration;

use idem_core::http::IdempotencyLayer;
use idem_core::{MokaStore, RedisStore};
use reqwest::{Response, StatusCode};
use tests::http_server::{TestServer, client};

fn layer() -> IdempotencyLayer {
    // Each test its own store: counts and records never leak between tests.
    IdempotencyLayer::new().store(MokaStore::new())
}

async fn problem(response: Response, status: StatusCode, slug: &str) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let json: serde_json::Value = response.json_body().await;
    assert_eq!(json["status"], status.as_u16());
    assert!(
        json["type"].as_str().unwrap().ends_with(slug),
        "type {} is not {slug}",
        json["type"]
    );
    assert!(json["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()));
    json
}

trait JsonBody {
    async fn json_body(self) -> serde_json::Value;
}

impl JsonBody for Response {
    async fn json_body(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn unprotected_methods_pass_through_and_are_never_stored() {
    let server = TestServer::start(layer()).await;
    let http = client();
    for expected in ["0", "0"] {
        let got = http.get(server.url("/charges")).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert!(got.headers().get("idempotent-replayed").is_none());
        // Passed through as it is: the length is still known.
        assert_eq!(got.headers()["content-length"], "1");
        assert_eq!(got.text().await.unwrap(), expected);
    }
    // A GET with a key is not stored either: the handler sees every request.
    let post = |key: &str| {
        http.post(server.url("/charges"))
            .header("idempotency-key", key)
            .body("{}")
    };
    assert_eq!(
        post("g1").send().await.unwrap().status(),
        StatusCode::CREATED
    );
    for expected in ["1", "1"] {
        let got = http
            .get(server.url("/charges"))
            .header("idempotency-key", "g1")
            .send()
            .await
            .unwrap();
        assert!(got.headers().get("idempotent-replayed").is_none());
        assert_eq!(got.text().await.unwrap(), expected);
    }
}

#[tokio::test]
async fn the_first_request_runs_and_a_retry_replays_its_response() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let send = || {
        http.post(server.url("/charges"))
            .header("idempotency-key", "8e03978e-40d5-43e8-bc93-6894a57f9324")
            .header("content-type", "application/json")
            .body(r#"{"amount":500}"#)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(first.headers()["set-cookie"], "session=abc");
    assert_eq!(first.headers()["x-charge"], "yes");
    let first_body = first.bytes().await.unwrap();

    let retry = send().await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.headers()["content-type"], "application/json");
    assert_eq!(retry.headers()["x-charge"], "yes");
    // Never stored or replayed: Set-Cookie, Date (the server writes a fresh one).
    assert!(retry.headers().get("set-cookie").is_none());
    assert_eq!(retry.headers().get_all("date").iter().count(), 1);
    assert_eq!(retry.bytes().await.unwrap(), first_body);
    assert_eq!(server.counts.started(), 1);
}

#[tokio::test]
async fn a_quoted_and_a_bare_key_are_the_same_key() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let send = |key: &'static str| {
        http.post(server.url("/charges"))
            .header("idempotency-key", key)
            .body("{}")
            .send()
    };
    let first = send("\"k-123\"").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let bare = send("k-123").await.unwrap();
    assert_eq!(bare.headers()["idempotent-replayed"], "true");
    let with_parameter = send("\"k-123\";v=1").await.unwrap();
    assert_eq!(with_parameter.headers()["idempotent-replayed"], "true");
    assert_eq!(server.counts.started(), 1);
}

#[tokio::test]
async fn bad_keys_get_400_and_claim_nothing() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let long = "k".repeat(256);
    for bad in [
        "",
        "\"\"",
        "has space",
        "\"has space\"",
        "\"open",
        long.as_str(),
        "caf\u{e9}",
    ] {
        let response = http
            .post(server.url("/charges"))
            .header("idempotency-key", bad)
            .body("{}")
            .send()
            .await
            .unwrap();
        let json = problem(
            response,
            StatusCode::BAD_REQUEST,
            "idempotency-key-malformed",
        )
        .await;
        assert!(json["detail"].as_str().unwrap().contains("key"), "{json}");
    }
    let twice = http
        .post(server.url("/charges"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "a")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(twice, StatusCode::BAD_REQUEST, "idempotency-key-repeated").await;
    assert_eq!(server.counts.started(), 0);
    // 255 characters is a key.
    let ok = http
        .post(server.url("/charges"))
        .header("idempotency-key", "k".repeat(255))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_missing_key_is_400_unless_optional() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let missing = http
        .post(server.url("/charges"))
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(missing, StatusCode::BAD_REQUEST, "idempotency-key-missing").await;
    assert_eq!(server.counts.started(), 0);

    let optional = TestServer::start(layer().optional()).await;
    for _ in 0..2 {
        let through = http
            .post(optional.url("/charges"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(through.status(), StatusCode::CREATED);
        assert!(through.headers().get("idempotent-replayed").is_none());
    }
    assert_eq!(
        optional.counts.started(),
        2,
        "unprotected: each request ran"
    );
}

#[tokio::test]
async fn the_scope_keeps_clients_apart() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let send = |auth: &'static str, body: &'static str| {
        http.post(server.url("/charges"))
            .header("idempotency-key", "same-key")
            .header("authorization", auth)
            .body(body)
            .send()
    };
    assert_eq!(
        send("Bearer alice", "{}").await.unwrap().status(),
        StatusCode::CREATED
    );
    // Bob's same key is his own: it runs, and another body is no mismatch.
    let bob = send("Bearer bob", "{\"other\":1}").await.unwrap();
    assert_eq!(bob.status(), StatusCode::CREATED);
    assert!(bob.headers().get("idempotent-replayed").is_none());
    assert_eq!(server.counts.started(), 2);
    let alice_again = send("Bearer alice", "{}").await.unwrap();
    assert_eq!(alice_again.headers()["idempotent-replayed"], "true");

    // A tenant scope instead of the credentials.
    let tenants = TestServer::start(
        layer().scope(|parts| parts.headers.get("x-tenant").map(|t| t.as_bytes().to_vec())),
    )
    .await;
    let send = |tenant: &'static str, auth: &'static str| {
        http.post(tenants.url("/charges"))
            .header("idempotency-key", "k")
            .header("x-tenant", tenant)
            .header("authorization", auth)
            .body("{}")
            .send()
    };
    send("t1", "Bearer one").await.unwrap();
    let same_tenant_other_user = send("t1", "Bearer two").await.unwrap();
    assert_eq!(
        same_tenant_other_user.headers()["idempotent-replayed"],
        "true"
    );
    let other_tenant = send("t2", "Bearer one").await.unwrap();
    assert!(other_tenant.headers().get("idempotent-replayed").is_none());
    assert_eq!(tenants.counts.started(), 2);
}

#[tokio::test]
async fn raw_keys_and_credentials_never_reach_the_store() {
    let server = redis_or_skip();
    let Some((url, _redis)) = server else { return };
    let prefix = format!("idem-http-raw-{}:", std::process::id());
    let store = RedisStore::builder(&url)
        .prefix(&prefix)
        .build()
        .await
        .unwrap();
    let app = TestServer::start(IdempotencyLayer::new().store(store)).await;
    let http = client();
    let response = http
        .post(app.url("/charges"))
        .header("idempotency-key", "raw-client-key-visible")
        .header("authorization", "Bearer secret-token-visible")
        .body("body-bytes-visible")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let everything = format!("{} {}", keys[0], String::from_utf8_lossy(&value));
    for raw in [
        "raw-client-key-visible",
        "secret-token-visible",
        "body-bytes-visible",
    ] {
        assert!(
            !everything.contains(raw),
            "{raw} is in the store: {everything}"
        );
    }
}

fn redis_or_skip() -> Option<(String, Option<tests::redis_server::RedisServer>)> {
    tests::redis_server::shared_redis()
}

#[tokio::test]
async fn another_request_with_the_same_key_is_422() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let send = |path: &str, content_type: &'static str, body: &'static str| {
        http.post(server.url(path))
            .header("idempotency-key", "k422")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        send("/charges", "application/json", "{\"amount\":1}")
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    for (path, content_type, body) in [
        ("/charges", "application/json", "{\"amount\":2}"),
        ("/charges?x=1", "application/json", "{\"amount\":1}"),
        ("/charges", "text/plain", "{\"amount\":1}"),
    ] {
        let response = send(path, content_type, body).await.unwrap();
        problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
        )
        .await;
    }
    // Another method with the same key (PATCH is protected too).
    let patch = http
        .patch(server.url("/charges"))
        .header("idempotency-key", "k422")
        .header("content-type", "application/json")
        .body("{\"amount\":1}")
        .send()
        .await
        .unwrap();
    problem(
        patch,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
    )
    .await;
    let identical = send("/charges", "application/json", "{\"amount\":1}")
        .await
        .unwrap();
    assert_eq!(identical.headers()["idempotent-replayed"], "true");
    assert_eq!(server.counts.started(), 1);
}

#[tokio::test]
async fn a_duplicate_in_flight_is_409_with_retry_after_or_waits() {
    let server = TestServer::start(layer()).await;
    let http = client();
    let send = || {
        http.post(server.url("/charges?ms=600"))
            .header("idempotency-key", "slow")
            .body("{}")
            .send()
    };
    let first = tokio::spawn(send());
    while server.counts.started() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let duplicate = send().await.unwrap();
    assert_eq!(duplicate.headers()["retry-after"], "1");
    problem(
        duplicate,
        StatusCode::CONFLICT,
        "idempotency-key-in-progress",
    )
    .await;
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);

    // With `.wait`: the duplicate gets the first response; with too short a wait, 409.
    let waiting = TestServer::start(layer().wait(Duration::from_secs(5))).await;
    let short = TestServer::start(layer().wait(Duration::from_millis(100))).await;
    for (server, key) in [(&waiting, "w"), (&short, "s")] {
        let send = || {
            http.post(server.url("/charges?ms=600"))
                .header("idempotency-key", key)
                .body("{}")
                .send()
        };
        let first = tokio::spawn(send());
        while server.counts.started() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let duplicate = send().await.unwrap();
        if key == "w" {
            assert_eq!(duplicate.status(), StatusCode::CREATED);
            assert_eq!(duplicate.headers()["idempotent-replayed"], "true");
        } else {
            problem(
                duplicate,
                StatusCode::CONFLICT,
                "idempotency-key-in-progress",
            )
            .await;
        }
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
        assert_eq!(server.counts.started(), 1);
    }
}

#[tokio::test]
async fn failures_are_not_stored_and_run_again() {
    let server = TestServer::start(layer()).await;
    let http = client();
    for code in [500u16, 503, 408, 429] {
        for run in 1..=2 {
            let response = http
                .post(server.url(&format!("/status/{code}")))
                .header("idempotency-key", format!("fail-{code}"))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), code);
            assert!(response.headers().get("idempotent-replayed").is_none());
            assert!(
                response.text().await.unwrap().starts_with("run "),
                "run {run}"
            );
        }
    }
    assert_eq!(server.counts.started(), 8, "every failed attempt ran again");

    // A 4xx is stored (the request was understood and refused: retrying changes nothing).
    for _ in 0..2 {
        http.post(server.url("/status/402"))
            .header("idempotency-key", "declined")
            .body("{}")
            .send()
            .await
            .unwrap();
    }
    assert_eq!(server.counts.started(), 9);

    // The handler's `NoStore` extension opts a response out.
    for _ in 0..2 {
        let response = http
            .post(server.url("/status/400?opt_out"))
            .header("idempotency-key", "nostore")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    assert_eq!(server.counts.started(), 11);

    // Configurable: store 500s too (Stripe's choice).
    let stripe = TestServer::start(layer().stored_statuses(|status| status.as_u16() != 429)).await;
    for _ in 0..2 {
        http.post(stripe.url("/status/500"))
            .header("idempotency-key", "stored-500")
            .body("{}")
            .send()
            .await
            .unwrap();
    }
    assert_eq!(stripe.counts.started(), 1);
}

#[tokio::test]
async fn bodies_are_bounded() {
    let server = TestServer::start(layer().max_request_body(1024).max_response_body(4096)).await;
    let http = client();
    // Request over the limit: 413, nothing claimed.
    let big = http
        .post(server.url("/charges"))
        .header("idempotency-key", "big-request")
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    problem(
        big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "idempotent-request-too-large",
    )
    .await;
    // Also when the length is not declared (chunked).
    let chunks: Vec<Result<_, std::io::Error>> = vec![
        Ok(http_body::Frame::data(bytes::Bytes::from(vec![b'a'; 800]))),
        Ok(http_body::Frame::data(bytes::Bytes::from(vec![b'a'; 800]))),
    ];
    let chunked = http
        .post(server.url("/charges"))
        .header("idempotency-key", "big-request")
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(
            futures_util::stream::iter(chunks),
        )))
        .send()
        .await
        .unwrap();
    problem(
        chunked,
        StatusCode::PAYLOAD_TOO_LARGE,
        "idempotent-request-too-large",
    )
    .await;
    assert_eq!(server.counts.started(), 0);
    let at_limit = http
        .post(server.url("/charges"))
        .header("idempotency-key", "big-request")
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), StatusCode::CREATED);

    // A response at the limit is stored and replayed.
    for replayed in [false, true] {
        let response = http
            .post(server.url("/bytes/4096"))
            .header("idempotency-key", "fits")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers().get("idempotent-replayed").is_some(),
            replayed
        );
        assert_eq!(response.bytes().await.unwrap().len(), 4096);
    }
    // Over the limit, or an event stream: passed on whole, stored as not replayable; the
    // retry gets 409 and the handler does not run again.
    for (path, key) in [("/bytes/100000", "too-big"), ("/bytes/10?sse", "sse")] {
        let first = http
            .post(server.url(path))
            .header("idempotency-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let expected = if key == "sse" { 10 } else { 100_000 };
        assert_eq!(first.bytes().await.unwrap().len(), expected);
        let before = server.counts.started();
        let retry = http
            .post(server.url(path))
            .header("idempotency-key", key)
            .send()
            .await
            .unwrap();
        assert!(retry.headers().get("retry-after").is_none());
        let json = problem(
            retry,
            StatusCode::CONFLICT,
            "idempotent-response-not-replayable",
        )
        .await;
        assert!(json["detail"].as_str().unwrap().contains("200"), "{json}");
        assert_eq!(server.counts.started(), before);
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_reached_is_503_and_the_handler_does_not_run() {
    if !tests::redis_server::redis_available() {
        return;
    }
    let redis = tests::redis_server::RedisServer::spawn();
    let store = RedisStore::builder(redis.url())
        .connect_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    drop(redis); // the server is gone: its port refuses
    let server = TestServer::start(IdempotencyLayer::new().store(store)).await;
    let started = std::time::Instant::now();
    let response = client()
        .post(server.url("/charges"))
        .header("idempotency-key", "down")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "idempotency-store-unavailable",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.counts.started(), 0);
}
