//! The layer's `tracing` events carry the outcome, the route and the key hash — never the
//! client's raw key.

use idem_core::MokaStore;
use idem_core::http::IdempotencyLayer;
use tests::http_server::{TestServer, client};

#[tokio::test]
async fn events_name_the_outcome_the_route_and_the_key_hash() {
    let captured = tests::CapturedLog::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let server = TestServer::start(
        IdempotencyLayer::new()
            .store(MokaStore::new())
            .namespace("payments"),
    )
    .await;
    let http = client();
    let send = |body: &'static str| {
        http.post(server.url("/charges"))
            .header("idempotency-key", "raw-key-never-logged")
            .body(body)
            .send()
    };
    send("{}").await.unwrap();
    send("{}").await.unwrap();
    send("{\"other\":1}").await.unwrap();
    http.post(server.url("/charges")).send().await.unwrap();
    let log = captured.text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("outcome=")).collect();
    let find = |outcome: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .unwrap_or_else(|| panic!("no {outcome} event in:\n{log}"))
    };
    for outcome in ["executed", "replayed", "mismatch"] {
        let line = find(outcome);
        assert!(line.contains("route=POST /charges"), "{line}");
        assert!(line.contains("function=\"http:payments\""), "{line}");
        let key = line.split("key=").nth(1).unwrap();
        assert!(key[..64].bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    }
    assert!(find("bad_key").contains("route=POST /charges"));
    assert!(!log.contains("raw-key-never-logged"), "{log}");
}
