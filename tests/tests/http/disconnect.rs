//! The client goes away while the handler runs: the handler runs to completion, its
//! response is stored, and the retry replays it (handler count 1). On shutdown, the layer's
//! drain handle waits for handlers whose client is gone.

use std::time::Duration;

use idem_core::MokaStore;
use idem_core::http::IdempotencyLayer;
use reqwest::StatusCode;
use tests::http_server::{TestServer, client};

async fn abandoned_request(server: &TestServer, key: &str, ms: u64) {
    // The client gives up long before the handler is done: reqwest drops the connection.
    let gave_up = client()
        .post(server.url(&format!("/charges?ms={ms}")))
        .header("idempotency-key", key)
        .body("{}")
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.unwrap_err().is_timeout());
}

#[tokio::test]
async fn a_client_that_disconnects_mid_handler_gets_the_stored_response_on_retry() {
    let server = TestServer::start(IdempotencyLayer::new().store(MokaStore::new())).await;
    abandoned_request(&server, "gone", 500).await;
    assert_eq!(server.counts.started(), 1);
    assert_eq!(
        server.counts.finished(),
        0,
        "still running after the client left"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.counts.finished() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler never finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The response is stored right after the handler returns.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let retry = client()
        .post(server.url("/charges?ms=500"))
        .header("idempotency-key", "gone")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert!(retry.text().await.unwrap().contains("\"charge\":\"ch_1\""));
    assert_eq!(server.counts.started(), 1, "the handler ran once");
}

#[tokio::test]
async fn the_drain_handle_waits_for_handlers_whose_client_is_gone() {
    let mut server = TestServer::start(IdempotencyLayer::new().store(MokaStore::new())).await;
    abandoned_request(&server, "deploy", 700).await;
    assert_eq!(server.drain.running(), 1);
    // The listener stops; the server has no connection left to wait for.
    server.shut_down().await;
    assert_eq!(
        server.counts.finished(),
        0,
        "the server stopped before the handler ended"
    );
    tokio::time::timeout(Duration::from_secs(5), server.drain.wait())
        .await
        .expect("drained within 5 s");
    assert_eq!(
        server.counts.finished(),
        1,
        "drained: the handler completed"
    );
    assert_eq!(server.drain.running(), 0);
}
