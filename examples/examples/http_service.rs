//! A payments API whose unsafe requests are safe to retry, on axum 0.8.
//!
//! ```text
//! cargo run -p examples --features http,redis,postgres --example http_service  # in memory, on 127.0.0.1:3000
//! IDEM_REDIS_URL=redis://127.0.0.1:6379 IDEM_HTTP_ADDR=127.0.0.1:3001 \
//!     cargo run -p examples --features http,redis,postgres --example http_service  # records shared through Redis
//! ```
//!
//! Every request is authenticated first (`Authorization: Bearer <user>.<token>`; the
//! toy auth layer resolves the token to the user before the dot, so a refreshed token is
//! the same principal). Keys are scoped by that principal — an auth extension
//! (`scope_from_extension`) — so two users never share a key and a token refresh between
//! a timeout and its retry still replays.
//!
//! - `POST /charges` is behind `IdempotencyLayer`: the client sends an `Idempotency-Key`
//!   header; the first request charges (it takes `IDEM_PROVIDER_MS`, default 2000 ms, as a
//!   payment provider would), a retry with the same key gets the same charge back with
//!   `Idempotent-Replayed: true`, the same key with another body gets 422, a retry while the
//!   first is still charging gets 409, and a request without a key gets 400.
//! - `PUT /orders/{id}` is a natural-key create with `#[idempotent]`: the path id is the key,
//!   a repeat returns the existing order, another body for the same id is refused (422).
//! - `POST /orders` (with `IDEM_DATABASE_URL`): the order row and its idempotency record in
//!   one PostgreSQL transaction (`transaction = "tx"`), keyed by the `IdempotencyKey`
//!   extractor (the layer's rules: a quoted and a bare key are one key).
//! - `GET /charges` lists how many charges the provider made (every run of the handler).
//!
//! `IDEM_CHARGE_LOG=path` appends one line per charge the provider made (user, key,
//! charge id) — the side effect itself, which the exactly-once drill counts;
//! `IDEM_HTTP_UNPROTECTED=1` serves without the layer (the drill's control run);
//! `IDEM_LEASE_MS` sets the layer's lease (the drill's killed servers hold keys that long).
//!
//! Ctrl-C (or SIGTERM) stops accepting, then waits for running charges (the layer's drain
//! handle), so a deploy does not cut a charge off halfway.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Extension, Json, Router};
use idem_core::http::{IdempotencyKey, IdempotencyLayer, NoStore};
use idem_core::{PostgresStore, RedisStore, SharedStore, idempotent};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

#[derive(Clone)]
struct App {
    charges_made: Arc<AtomicU64>,
    provider_delay: Duration,
    /// One line per charge the provider made.
    charge_log: Option<Arc<Mutex<std::fs::File>>>,
    orders: Option<Orders>,
}

/// The principal the auth layer decided on: what idempotency keys are scoped by.
#[derive(Clone, Debug, Serialize)]
struct UserId(String);

/// A toy auth layer: `Bearer <user>.<token>` is user `<user>` (any token); anything else
/// is 401, before the idempotency layer runs.
async fn authenticate(mut req: Request, next: Next) -> Response {
    let user = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| token.split_once('.'))
        .map(|(user, _)| user.to_owned())
        .filter(|user| !user.is_empty());
    match user {
        Some(user) => {
            req.extensions_mut().insert(UserId(user));
            next.run(req).await
        }
        None => (
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <user>.<token>\n",
        )
            .into_response(),
    }
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
async fn create_charge(
    State(app): State<App>,
    Extension(user): Extension<UserId>,
    key: Option<IdempotencyKey>,
    Json(new): Json<NewCharge>,
) -> Response {
    if new.amount_cents == 0 {
        // Refused before any side effect: `NoStore` releases the key, so the client may
        // fix the request and send it again with the same key.
        return (
            StatusCode::BAD_REQUEST,
            Extension(NoStore),
            "amount_cents must be positive",
        )
            .into_response();
    }
    tokio::time::sleep(app.provider_delay).await; // the payment provider
    let n = app.charges_made.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("ch_{}_{n:04}", std::process::id());
    if let Some(log) = &app.charge_log {
        let key = key.as_ref().map_or("-", IdempotencyKey::as_str);
        let mut log = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write per line: two processes append to the same file.
        let _ = log.write_all(format!("{}\t{key}\t{id}\n", user.0).as_bytes());
    }
    let charge = Charge {
        id,
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
    Db(String),
}

impl From<idem_core::Error> for OrderError {
    fn from(err: idem_core::Error) -> Self {
        OrderError::Idempotency(err)
    }
}

impl IntoResponse for OrderError {
    fn into_response(self) -> Response {
        let err = match self {
            OrderError::Idempotency(err) => err,
            OrderError::Db(err) => {
                eprintln!("orders: {err}");
                return (StatusCode::SERVICE_UNAVAILABLE, "database error, retry\n")
                    .into_response();
            }
        };
        let (status, title) = match err {
            idem_core::Error::PayloadMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "this order id exists with another body",
            ),
            idem_core::Error::InProgress => (StatusCode::CONFLICT, "this order is being created"),
            idem_core::Error::Store(_) | idem_core::Error::StoreFull => {
                (StatusCode::SERVICE_UNAVAILABLE, "try again later")
            }
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

/// The transaction-mode orders: a pool for the app's transactions and the store that
/// created the record table.
#[derive(Clone)]
struct Orders {
    pool: PgPool,
    store: SharedStore,
}

/// The orders table of `POST /orders`.
const ORDERS_TABLE: &str = "http_service_orders";

#[derive(Debug, Serialize, Deserialize)]
struct PlacedOrder {
    order_id: i64,
    sku: String,
    quantity: u32,
}

/// Inserts the order through the caller's transaction; idem writes the record through it
/// too, so the order and the record commit together or not at all.
#[idempotent(key = "key", name = "http_service.orders.v1", transaction = "tx", skip(orders), store = &orders.store)]
async fn place_order(
    key: IdempotencyKey,
    order: NewOrder,
    orders: &Orders,
    tx: &mut PgConnection,
) -> Result<PlacedOrder, OrderError> {
    let query = format!(
        "INSERT INTO {ORDERS_TABLE} (idempotency_key, sku, quantity) VALUES ($1, $2, $3) RETURNING id"
    );
    let (order_id,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .bind(key.as_str())
        .bind(&order.sku)
        .bind(i64::from(order.quantity))
        .fetch_one(&mut *tx)
        .await
        .map_err(|err| OrderError::Db(err.to_string()))?;
    Ok(PlacedOrder {
        order_id,
        sku: order.sku,
        quantity: order.quantity,
    })
}

/// `POST /orders`: one transaction — the order row and its idempotency record — behind a
/// `keys_only` layer that checks the key and scope and hands them to the handler.
async fn post_order(
    State(app): State<App>,
    key: IdempotencyKey,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, Json<PlacedOrder>), OrderError> {
    let Some(orders) = &app.orders else {
        return Err(OrderError::Db(
            "set IDEM_DATABASE_URL to place orders".into(),
        ));
    };
    let db = |err: sqlx::Error| OrderError::Db(err.to_string());
    let mut tx = orders.pool.begin().await.map_err(db)?;
    let placed = place_order(key, order, orders, &mut tx).await?;
    tx.commit().await.map_err(db)?;
    Ok((StatusCode::CREATED, Json(placed)))
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
    let charge_log = match std::env::var("IDEM_CHARGE_LOG") {
        Ok(path) if !path.is_empty() => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))),
        _ => None,
    };
    let orders = match std::env::var("IDEM_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(connect_orders(&url).await?),
        _ => None,
    };
    let app = App {
        charges_made: Arc::new(AtomicU64::new(0)),
        provider_delay: Duration::from_millis(provider_ms),
        charge_log,
        orders,
    };
    let unprotected = std::env::var("IDEM_HTTP_UNPROTECTED").is_ok_and(|v| v == "1");
    let mut layer = IdempotencyLayer::new()
        .namespace("payments")
        .scope_from_extension::<UserId>();
    if let Some(ms) = std::env::var("IDEM_LEASE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        layer = layer.lease(Duration::from_millis(ms));
    }
    let drain = layer.drain();
    let charges = Router::new().route("/charges", post(create_charge).get(charges_made));
    let orders = Router::new().route("/orders", post(post_order));
    let (charges, orders) = if unprotected {
        println!("UNPROTECTED: no idempotency layer (a control run)");
        (charges, orders.route_layer(layer.clone().keys_only()))
    } else {
        (
            charges.route_layer(layer.clone()),
            orders.route_layer(layer.clone().keys_only()),
        )
    };
    let router = Router::new()
        .merge(charges)
        .merge(orders)
        .route("/orders/{id}", put(put_order))
        .layer(middleware::from_fn(authenticate))
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

/// The orders table and the transaction-mode record table (created by connecting a
/// `PostgresStore` once: transaction mode writes through the caller's connection and needs
/// the table to exist).
async fn connect_orders(url: &str) -> Result<Orders, Box<dyn std::error::Error>> {
    let store = PostgresStore::builder(url)
        .table("http_service_idem")
        .build()
        .await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(32)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await?;
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {ORDERS_TABLE} (id bigserial PRIMARY KEY, idempotency_key text NOT NULL, sku text NOT NULL, quantity bigint NOT NULL)"
    );
    sqlx::query(sqlx::AssertSqlSafe(ddl)).execute(&pool).await?;
    Ok(Orders {
        pool,
        store: SharedStore::new(store),
    })
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
