//! A payments API whose unsafe requests are safe to retry, on axum 0.8.
//!
//! ```text
//! cargo run -p examples --features http,redis --example http_service  # in memory, on 127.0.0.1:3000
//! IDEM_REDIS_URL=redis://127.0.0.1:6379 IDEM_HTTP_ADDR=127.0.0.1:3001 \
//!     cargo run -p examples --features http,redis --example http_service  # records shared through Redis
//! ```
//!
//! - `POST /charges` is behind `IdempotencyLayer`: the client sends an `Idempotency-Key`
//!   header; the first request charges (it takes `IDEM_PROVIDER_MS`, default 2000 ms, as a
//!   payment provider would), a retry with the same key gets the same charge back with
//!   `Idempotent-Replayed: true`, the same key with another body gets 422, a retry while the
//!   first is still charging gets 409, and a request without a key gets 400.
//! - `PUT /orders/{id}` is a natural-key create with `#[idempotent]`: the path id is the key,
//!   a repeat returns the existing order, another body for the same id is refused (422).
//! - `GET /charges` lists how many charges the provider made (every run of the handler).
//!
//! Ctrl-C (or SIGTERM) stops accepting, then waits for running charges (the layer's drain handle), so a
//! deploy does not cut a charge off halfway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use idem_core::http::IdempotencyLayer;
use idem_core::{RedisStore, idempotent};
use serde::{Deserialize, Serialize};

#[derive(Clone)]
struct App {
    charges_made: Arc<AtomicU64>,
    provider_delay: Duration,
}

#[derive(Debug, Deserialize)]
struct NewCharge {
    amount_cents: u64,
    currency: String,
}

#[derive(Debug, Serialize)]
struct Charge {
    id: String,
    amount_cents: u64,
    currency: String,
    status: &'static str,
}

/// `POST /charges`: calls the payment provider (slowly) and answers 201 with the charge.
async fn create_charge(State(app): State<App>, Json(new): Json<NewCharge>) -> Response {
    if new.amount_cents == 0 {
        // Refused before any side effect: `no-store` releases the key, so the client may
        // fix the request and send it again with the same key.
        let mut refused =
            (StatusCode::BAD_REQUEST, "amount_cents must be positive").into_response();
        refused
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return refused;
    }
    tokio::time::sleep(app.provider_delay).await; // the payment provider
    let n = app.charges_made.fetch_add(1, Ordering::SeqCst) + 1;
    let charge = Charge {
        id: format!("ch_{n:04}"),
        amount_cents: new.amount_cents,
        currency: new.currency,
        status: "succeeded",
    };
    (StatusCode::CREATED, Json(charge)).into_response()
}

/// `GET /charges`: how many charges the provider made.
async fn charges_made(State(app): State<App>) -> String {
    format!("{}\n", app.charges_made.load(Ordering::SeqCst))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NewOrder {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    sku: String,
    quantity: u32,
    created_at_ms: u128,
}

#[derive(Debug)]
enum OrderError {
    Idempotency(idem_core::Error),
}

impl From<idem_core::Error> for OrderError {
    fn from(err: idem_core::Error) -> Self {
        OrderError::Idempotency(err)
    }
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        let OrderError::Idempotency(err) = self;
        let (status, title) = match err {
            idem_core::Error::PayloadMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "this order id exists with another body",
            ),
            idem_core::Error::InProgress => (StatusCode::CONFLICT, "this order is being created"),
            idem_core::Error::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "try again later"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        };
        let problem = serde_json::json!({ "title": title, "status": status.as_u16() });
        let mut response = (status, Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Creates order `id` once: the path id is the key, the body is fingerprinted with it.
#[idempotent(key = "id", name = "orders.create.v1", ttl = "7d")]
async fn create_order(id: String, order: NewOrder) -> Result<Order, OrderError> {
    let created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Ok(Order {
        id,
        sku: order.sku,
        quantity: order.quantity,
        created_at_ms,
    })
}

/// `PUT /orders/{id}`: the order, created by the first PUT and returned by every repeat.
async fn put_order(
    Path(id): Path<String>,
    Json(order): Json<NewOrder>,
) -> Result<Json<Order>, OrderError> {
    create_order(id, order).await.map(Json)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One store for the layer and the attribute: the process default.
    match std::env::var("IDEM_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => {
            idem_core::install(RedisStore::connect(&url).await?)?;
            println!("records in Redis at {url}");
        }
        _ => println!("records in memory (set IDEM_REDIS_URL to share them through Redis)"),
    }
    let provider_ms = std::env::var("IDEM_PROVIDER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(2000);
    let app = App {
        charges_made: Arc::new(AtomicU64::new(0)),
        provider_delay: Duration::from_millis(provider_ms),
    };
    let layer = IdempotencyLayer::new().namespace("payments");
    let drain = layer.drain();
    let router = Router::new()
        .route("/charges", post(create_charge).get(charges_made))
        .route("/orders/{id}", put(put_order))
        .layer(layer)
        .with_state(app);

    let addr = std::env::var("IDEM_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await?;
    println!("draining {} running request(s)", drain.running());
    drain.wait().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what a deploy sends).
async fn shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
