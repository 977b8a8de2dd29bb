//! A server process for the two-process HTTP test.
//!
//! ```text
//! idem_http_server REDIS_URL PREFIX
//! ```
//!
//! Serves the test routes (`tests::http_server::routes`) behind an `IdempotencyLayer` on a
//! `RedisStore` (keys under `PREFIX`) on 127.0.0.1, port 0; prints `LISTENING <addr>`, and
//! serves until killed.

use idem_core::RedisStore;
use idem_core::http::IdempotencyLayer;
use tests::http_server::{Counts, routes};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix)) = (args.next(), args.next()) else {
        eprintln!("usage: idem_http_server REDIS_URL PREFIX");
        std::process::exit(2);
    };
    let store = match RedisStore::builder(url).prefix(prefix).build().await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("idem_http_server: {err}");
            std::process::exit(1);
        }
    };
    let app = routes(Counts::default()).layer(IdempotencyLayer::new().store(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
