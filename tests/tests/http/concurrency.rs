//! 50 concurrent identical requests to a slow handler, over 50 real connections: the
//! handler runs once; every answer is its 201 or a 409 (with `.wait`, all get the 201).

use std::time::Duration;

use idem_core::MokaStore;
use idem_core::http::IdempotencyLayer;
use reqwest::StatusCode;
use tests::http_server::{TestServer, client};

const REQUESTS: usize = 50;

/// Sends 50 identical requests at once, each on its own connection; returns (status,
/// replayed, body) of each.
async fn burst(server: &TestServer, key: &str) -> Vec<(StatusCode, bool, String)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (url, key, barrier) = (
                server.url("/charges?ms=300"),
                key.to_owned(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                let http = client(); // its own connection
                barrier.wait().await;
                let response = http
                    .post(url)
                    .header("idempotency-key", key)
                    .header("content-type", "application/json")
                    .body(r#"{"amount":500}"#)
                    .send()
                    .await
                    .unwrap();
                let replayed = response.headers().contains_key("idempotent-replayed");
                (response.status(), replayed, response.text().await.unwrap())
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_run_the_handler_once() {
    let server = TestServer::start(IdempotencyLayer::new().store(MokaStore::new())).await;
    let answers = burst(&server, "burst").await;
    assert_eq!(server.counts.started(), 1, "the handler ran once");
    let created: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::CREATED)
        .collect();
    let conflicts = answers
        .iter()
        .filter(|a| a.0 == StatusCode::CONFLICT)
        .count();
    assert_eq!(created.len() + conflicts, REQUESTS, "{answers:?}");
    assert!(!created.is_empty());
    assert!(conflicts > 0, "the burst overlapped the slow handler");
    let first = &created[0].2;
    assert!(
        created.iter().all(|a| &a.2 == first),
        "every 201 is the same response"
    );
    // After it finished, a retry replays it.
    let retry = client()
        .post(server.url("/charges?ms=300"))
        .header("idempotency-key", "burst")
        .header("content-type", "application/json")
        .body(r#"{"amount":500}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(&retry.text().await.unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_all_fifty_get_the_201() {
    let layer = IdempotencyLayer::new()
        .store(MokaStore::new())
        .wait(Duration::from_secs(10));
    let server = TestServer::start(layer).await;
    let answers = burst(&server, "burst-wait").await;
    assert_eq!(server.counts.started(), 1, "the handler ran once");
    assert!(
        answers.iter().all(|a| a.0 == StatusCode::CREATED),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| !a.1).count(),
        1,
        "one first response"
    );
    let first = &answers[0].2;
    assert!(answers.iter().all(|a| &a.2 == first));
}
