//! Redis client-side caching for the near-cache: one RESP3 connection per store with
//! `CLIENT TRACKING ON`, on which the near-cache reads what it keeps, so Redis pushes an
//! `invalidate` message for each of those keys when it changes (a `forget` or a rerun in
//! any process, an expiry, an eviction) and the entry is dropped when it arrives.
//!
//! A background task keeps the connection: it connects, turns tracking on, and flushes the
//! near-cache each time the connection comes up or goes down (keys read on a lost
//! connection are no longer tracked). Between the two, fills go through the store's own
//! connection and only the bound applies. A `PING` every second finds a connection that
//! died silently. The task ends when the store is dropped.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::near::NearCache;
use crate::backoff::Backoff;
use crate::key::Key;

/// How often an idle tracking connection is checked.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Reconnect delays of the tracking connection.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(50)).max(Duration::from_secs(2));

/// The near-cache and its tracking connection, while it is up.
pub(super) struct Tracked {
    pub(super) cache: NearCache,
    conn: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
}

impl Tracked {
    pub(super) fn new(cache: NearCache, prefix: &str) -> Self {
        Tracked {
            cache,
            conn: Mutex::new(None),
            prefix: format!("{prefix}:"),
        }
    }

    /// The tracking connection, if it is up now.
    pub(super) fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().ok()?.clone()
    }

    fn set_connection(&self, conn: Option<MultiplexedConnection>) {
        // The flush comes after the swap: a fill that took its ticket before it is refused.
        if let Ok(mut slot) = self.conn.lock() {
            *slot = conn;
        }
        self.cache.flush();
    }

    /// Handles one push message of the tracking connection.
    fn pushed(&self, push: &PushInfo, lost: &Notify) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for name in keys {
                        if let Some(key) = self.key_of(name) {
                            self.cache.remove(&key);
                        }
                    }
                }
                // A nil list: the server flushed (FLUSHALL, FLUSHDB) or its tracking table
                // overflowed.
                _ => self.cache.flush(),
            },
            PushKind::Disconnection => {
                self.set_connection(None);
                lost.notify_one();
            }
            _ => {}
        }
    }

    fn key_of(&self, name: &Value) -> Option<Key> {
        let bytes = match name {
            Value::BulkString(bytes) => bytes.as_slice(),
            Value::SimpleString(text) => text.as_bytes(),
            _ => return None,
        };
        let hex = std::str::from_utf8(bytes.strip_prefix(self.prefix.as_bytes())?).ok()?;
        Key::from_hex(hex).ok()
    }
}

/// Starts the task that keeps the tracking connection of `tracked` to `client`'s server.
pub(super) fn spawn(
    tracked: &Arc<Tracked>,
    client: &Client,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<(), redis::RedisError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = Client::open(info.set_redis_settings(settings))?;
    let weak = Arc::downgrade(tracked);
    tokio::spawn(keep(weak, client, connect_timeout, response_timeout));
    Ok(())
}

async fn keep(
    tracked: Weak<Tracked>,
    client: Client,
    connect_timeout: Duration,
    response_timeout: Duration,
) {
    let mut failures: u32 = 0;
    let mut delay = RECONNECT.first_delay();
    while tracked.strong_count() > 0 {
        let lost = Arc::new(Notify::new());
        let sender = {
            let tracked = tracked.clone();
            let lost = Arc::clone(&lost);
            move |push: PushInfo| -> Result<(), ()> {
                if let Some(tracked) = tracked.upgrade() {
                    tracked.pushed(&push, &lost);
                } else {
                    lost.notify_one();
                }
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_push_sender(sender);
        match connect(&client, &config, connect_timeout + response_timeout).await {
            Ok(mut conn) => {
                let Some(strong) = tracked.upgrade() else {
                    return;
                };
                strong.set_connection(Some(conn.clone()));
                drop(strong);
                failures = 0;
                delay = RECONNECT.first_delay();
                // Up until a disconnection, a failed heartbeat, or the store's end.
                loop {
                    if tokio::time::timeout(HEARTBEAT, lost.notified())
                        .await
                        .is_ok()
                        || tracked.strong_count() == 0
                    {
                        break;
                    }
                    let ping = redis::cmd("PING");
                    let alive = tokio::time::timeout(
                        response_timeout,
                        ping.query_async::<Value>(&mut conn),
                    )
                    .await;
                    if !matches!(alive, Ok(Ok(_))) {
                        break;
                    }
                }
                if let Some(strong) = tracked.upgrade() {
                    strong.set_connection(None);
                }
            }
            Err(err) => {
                if failures == 0 {
                    tracing::warn!(
                        target: "idem",
                        error = %err,
                        "redis near-cache: the tracking connection is down; entries live up to the near-cache bound"
                    );
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::time::sleep(delay).await;
        if failures > 0 {
            delay = RECONNECT.next_delay(delay);
        }
    }
}

/// A RESP3 connection with `CLIENT TRACKING ON`.
async fn connect(
    client: &Client,
    config: &AsyncConnectionConfig,
    bound: Duration,
) -> Result<MultiplexedConnection, String> {
    let connecting = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await
            .map_err(|err| err.to_string())?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .query_async::<Value>(&mut conn)
            .await
            .map_err(|err| err.to_string())?;
        Ok(conn)
    };
    tokio::time::timeout(bound, connecting)
        .await
        .map_err(|_| format!("no connection within {bound:?}"))?
}
