//! Commands on a Redis Cluster that follow slot migrations (`ASK`, `MOVED`, `TRYAGAIN`)
//! and broken node connections until the operation's bound ends.
//!
//! The cluster client's own redirect handling is turned off (`retries(0)`) because its
//! `ASK` path sends `ASKING` and the redirected command as two separate requests on a
//! multiplexed connection: another request can be sent between them and take the one-shot
//! `ASKING` flag. Then a claim could run on the importing node while the record still
//! lives on the migrating node (a second execution), and the redirected command bounces
//! between the nodes until its retries run out (a `complete` that never lands). Here the
//! `ASKING` and the command go out as one pipeline, so nothing comes between them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, RetryMethod, Value};

/// The first and the longest pause before trying again while the cluster is busy
/// (`TRYAGAIN`, `CLUSTERDOWN`) or a node's connection is being re-established.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(200));
/// At most this many attempts; the operation's time bound usually ends it first.
const MAX_ATTEMPTS: u32 = 64;

/// The least time between two rebuilds of the connection.
const REBUILD_GAP: Duration = Duration::from_millis(500);

/// A cluster connection that replaces itself when it stops answering.
///
/// The `redis` crate's cluster connection (1.8) stops sending while it refreshes its slot
/// map, and under load during a slot migration one refresh now and then never finishes:
/// every command then times out although the cluster is healthy and a new connection
/// works at once (seen in `tests/tests/redis_cluster.rs`). So a command that times out, or
/// finds the connection broken, fails closed as usual and starts one rebuild in the
/// background (at most one at a time, at most one per [`REBUILD_GAP`]): the calls after
/// it run on a fresh connection.
pub(super) struct Cluster {
    client: ClusterClient,
    current: Mutex<(ClusterConnection, Instant)>,
    rebuilding: AtomicBool,
    connect_bound: Duration,
}

impl Cluster {
    /// Connects through `client`.
    pub(super) async fn connect(
        client: ClusterClient,
        connect_bound: Duration,
    ) -> RedisResult<Arc<Self>> {
        let conn = client.get_async_connection().await?;
        Ok(Arc::new(Cluster {
            client,
            current: Mutex::new((conn, Instant::now())),
            rebuilding: AtomicBool::new(false),
            connect_bound,
        }))
    }

    fn conn(&self) -> ClusterConnection {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Starts a rebuild unless one runs or the last one was less than [`REBUILD_GAP`] ago.
    pub(super) fn rebuild(self: &Arc<Self>) {
        let recent = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .elapsed()
            < REBUILD_GAP;
        if recent || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let fresh =
                tokio::time::timeout(this.connect_bound, this.client.get_async_connection()).await;
            if let Ok(Ok(conn)) = fresh {
                crate::event::cluster_connection_replaced();
                *this.current.lock().unwrap_or_else(PoisonError::into_inner) =
                    (conn, Instant::now());
            }
            this.rebuilding.store(false, Ordering::Release);
        });
    }

    /// Runs `cmd` (one key) on the cluster: see [`query`].
    pub(super) async fn query(self: &Arc<Self>, cmd: &Cmd) -> RedisResult<Value> {
        let result = query(self.conn(), cmd).await;
        if let Err(err) = &result
            && (err.is_timeout() || err.is_unrecoverable_error() || err.is_connection_dropped())
        {
            self.rebuild();
        }
        result
    }

    /// Runs `cmd`, which names no key, on the primary that holds `key`'s slot.
    pub(super) async fn query_on_key_node(
        self: &Arc<Self>,
        cmd: &Cmd,
        key: &str,
    ) -> RedisResult<Value> {
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
            Route::with_key(key, SlotAddr::Master),
        ));
        let result = self.conn().route_command(cmd.clone(), routing).await;
        if let Err(err) = &result
            && err.is_timeout()
        {
            self.rebuild();
        }
        result
    }

    /// The database of the connection.
    pub(super) fn get_db(&self) -> i64 {
        use redis::aio::ConnectionLike;
        self.conn().get_db()
    }

    /// A pipeline (not used by the store; for `ConnectionLike`).
    pub(super) async fn pipeline(
        &self,
        pipeline: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        use redis::aio::ConnectionLike;
        self.conn()
            .req_packed_commands(pipeline, offset, count)
            .await
    }
}

/// Where the next attempt goes.
enum Next {
    /// Wherever the client's slot map says.
    Slot,
    /// `ASKING` then the command, to the node that is importing the slot.
    Ask(String, u16),
    /// The node that owns the slot now (the client refreshes its slot map meanwhile).
    Moved(String, u16),
}

/// Runs `cmd` (one key) on the cluster, following redirects and waiting out a busy or
/// reconnecting cluster; errors that retrying cannot fix are returned at once.
async fn query(mut conn: ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    let mut next = Next::Slot;
    let mut pause = BACKOFF.0;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = match next {
            Next::Slot => cmd.query_async(&mut conn).await,
            Next::Ask(host, port) => {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").add_command(cmd.clone());
                conn.route_pipeline(pipe, 1, 1, SingleNodeRoutingInfo::ByAddress { host, port })
                    .await
                    .and_then(|replies| replies.into_iter().next().ok_or_else(no_reply))
                    .and_then(Value::extract_error)
            }
            Next::Moved(host, port) => conn
                .route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port }),
                )
                .await
                .and_then(Value::extract_error),
        };
        let err = match result {
            Ok(value) => return Ok(value),
            Err(err) if attempt >= MAX_ATTEMPTS => return Err(err),
            Err(err) => err,
        };
        next = match err.retry_method() {
            RetryMethod::AskRedirect => match redirect(&err) {
                Some((host, port)) => Next::Ask(host, port),
                None => return Err(err),
            },
            RetryMethod::MovedRedirect => match redirect(&err) {
                Some((host, port)) => Next::Moved(host, port),
                None => return Err(err),
            },
            RetryMethod::WaitAndRetry => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF.1);
                Next::Slot
            }
            // The command was not sent (no connection to the node, or it refused one):
            // the client is reconnecting or refreshing its slot map meanwhile. A command
            // whose connection broke after it was sent may have run, so it is not sent
            // again: its caller decides (a claim is then held until its lease lapses).
            RetryMethod::Reconnect
            | RetryMethod::ReconnectFromInitialConnections
            | RetryMethod::RefreshSlotsAndRetry
                if err.is_connection_refusal()
                    || err.kind() == ErrorKind::ClusterConnectionNotFound =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF.1);
                Next::Slot
            }
            _ => return Err(err),
        };
    }
}

/// The node an `ASK` or `MOVED` error names.
fn redirect(err: &RedisError) -> Option<(String, u16)> {
    let (addr, _slot) = err.redirect_node()?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

fn no_reply() -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        "the cluster sent no reply to the command",
    ))
}
