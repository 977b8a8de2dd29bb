//! Two server processes behind one Redis (a `redis-server` of the test's own) share their
//! records: a request answered by one is replayed by the other, and a request running in
//! one is in progress for the other.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use tests::http_server::client;
use tests::redis_server::{RedisServer, redis_available};

const SERVER: &str = env!("CARGO_BIN_EXE_idem_http_server");

/// A server process, killed on drop.
struct Process {
    child: Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(url: &str, prefix: &str) -> Process {
    let mut child = Command::new(SERVER)
        .args([url, prefix])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start idem_http_server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("server said {line:?}"))
        .trim()
        .to_owned();
    Process {
        child,
        base: format!("http://{addr}"),
    }
}

#[tokio::test]
async fn two_processes_behind_one_redis_share_records() {
    if !redis_available() {
        return;
    }
    let redis = RedisServer::spawn();
    let prefix = format!("idem-http-{}:", std::process::id());
    let (a, b) = (start(&redis.url(), &prefix), start(&redis.url(), &prefix));
    let http = client();
    let post = |base: &str, key: &str, ms: u64| {
        http.post(format!("{base}/charges?ms={ms}"))
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(r#"{"amount":500}"#)
            .send()
    };

    let first = post(&a.base, "k1", 0).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.text().await.unwrap();
    assert!(
        first_body.contains(&format!("\"pid\":{}", a.child.id())),
        "{first_body}"
    );

    let other = post(&b.base, "k1", 0).await.unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert_eq!(other.headers()["idempotent-replayed"], "true");
    assert_eq!(
        other.text().await.unwrap(),
        first_body,
        "B replays A's response"
    );

    // While A runs a slow request, B answers its duplicate with 409; then replays it.
    let slow = tokio::spawn(post(&a.base, "k2", 800));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let duplicate = post(&b.base, "k2", 800).await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    let slow_body = slow.await.unwrap().unwrap().text().await.unwrap();
    let replay = post(&b.base, "k2", 800).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), slow_body);

    // B's handler never ran; A's ran twice.
    let runs = |base: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/charges"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert_eq!(runs(b.base.clone()).await, "0");
    assert_eq!(runs(a.base.clone()).await, "2");
}
