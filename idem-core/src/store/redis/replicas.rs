//! Waiting for replicas to acknowledge a write (`WAIT`), for stores built with
//! [`wait_for_replicas`](super::RedisStoreBuilder::wait_for_replicas).
//!
//! `WAIT` blocks the connection it is sent on until its timeout, and counts that
//! connection's own writes. So on one server, the write that must be acknowledged and its
//! `WAIT` go over a connection of their own, taken from a small pool: the store's shared
//! connection, which every other call uses, is never blocked. (In a cluster, `WAIT` goes
//! to the key's node over the cluster connection, with its timeout kept below the
//! response timeout by the builder.)

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ScriptInvocation, Value};

use super::conn::Runner;
use super::wire::{int_reply, millis_arg};
use crate::error::Error;

/// Idle connections kept for the next `WAIT`.
const MAX_IDLE: usize = 8;

/// How many replicas must acknowledge a claim or a stored result, and how long to wait.
#[derive(Clone, Copy, Debug)]
pub(super) struct Replicas {
    count: u32,
    timeout: Duration,
}

impl Replicas {
    pub(super) fn new(count: u32, timeout: Duration) -> Self {
        Replicas {
            count,
            timeout: timeout.max(Duration::from_millis(1)),
        }
    }

    /// The same count, with the timeout at most `longest`.
    #[cfg(feature = "redis-cluster")]
    pub(super) fn at_most(self, longest: Duration) -> Self {
        Replicas::new(self.count, self.timeout.min(longest))
    }
}

/// Where the writes to acknowledge and their `WAIT` are sent.
pub(super) struct Waiter {
    pub(super) replicas: Replicas,
    /// One server: its own connections. `None` in a cluster.
    own: Option<OwnConnections>,
}

struct OwnConnections {
    client: Client,
    config: AsyncConnectionConfig,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl Waiter {
    /// `WAIT` on connections of its own to the server of `client`.
    pub(super) fn single(replicas: Replicas, client: Client, connect_timeout: Duration) -> Self {
        // No response timeout on the connection: the bound is the caller's, and a `WAIT`
        // legitimately takes up to its own timeout.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        Waiter {
            replicas,
            own: Some(OwnConnections {
                client,
                config,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// `WAIT` over the cluster connection.
    #[cfg(feature = "redis-cluster")]
    pub(super) fn cluster(replicas: Replicas) -> Self {
        Waiter {
            replicas,
            own: None,
        }
    }

    /// Runs `write` (a token-checked script), then waits until the replicas acknowledged
    /// it. `Ok(false)` when the script wrote nothing (the claim was lost: nothing to wait
    /// for); an [`Error::Store`] when fewer replicas acknowledged within the timeout.
    pub(super) async fn write_and_wait(
        &self,
        runner: &Runner,
        what: &'static str,
        redis_key: &str,
        write: &ScriptInvocation<'_>,
    ) -> Result<bool, Error> {
        let Some(own) = &self.own else {
            if !int_reply(what, runner.invoke(what, write).await?)? {
                return Ok(false);
            }
            let reply = runner
                .query_on_key_node(what, &self.wait_cmd(), redis_key)
                .await?
                .map_err(|err| runner.failed(what, err))?;
            return self.acknowledged(runner, what, &reply).map(|()| true);
        };
        let bound = runner.op_timeout.saturating_add(self.replicas.timeout);
        let attempt = async {
            let (mut conn, pooled) = own.take().await.map_err(|err| runner.failed(what, err))?;
            let wrote = match write.invoke_async::<Value>(&mut conn).await {
                // An idle connection the server closed meanwhile: once more on a new one
                // (both scripts may run twice: they are token-checked and idempotent).
                Err(err) if pooled && (err.is_connection_dropped() || err.is_io_error()) => {
                    conn = own
                        .connect()
                        .await
                        .map_err(|err| runner.failed(what, err))?;
                    write.invoke_async::<Value>(&mut conn).await
                }
                other => other,
            }
            .map_err(|err| runner.failed(what, err))?;
            if !int_reply(what, wrote)? {
                own.put_back(conn);
                return Ok(false);
            }
            let reply = self
                .wait_cmd()
                .query_async::<Value>(&mut conn)
                .await
                .map_err(|err| runner.failed(what, err))?;
            own.put_back(conn);
            self.acknowledged(runner, what, &reply).map(|()| true)
        };
        // A connection that timed out is dropped with the attempt, never reused.
        tokio::time::timeout(bound, attempt).await.map_err(|_| {
            Error::store(format!(
                "redis {what} on {}: no acknowledgement within {bound:?}",
                runner.target
            ))
        })?
    }

    fn wait_cmd(&self) -> redis::Cmd {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replicas.count)
            .arg(millis_arg(self.replicas.timeout));
        wait
    }

    /// `Ok` once `count` replicas acknowledged, an [`Error::Store`] when fewer did.
    fn acknowledged(
        &self,
        runner: &Runner,
        what: &'static str,
        reply: &Value,
    ) -> Result<(), Error> {
        match reply {
            Value::Int(acked) if *acked >= i64::from(self.replicas.count) => Ok(()),
            Value::Int(acked) => Err(Error::store(format!(
                "redis {what} on {}: acknowledged by {acked} of {} replicas within {:?}",
                runner.target, self.replicas.count, self.replicas.timeout
            ))),
            other => Err(super::wire::unexpected(what, other)),
        }
    }
}

impl OwnConnections {
    /// An idle connection (`true`) or a new one.
    async fn take(&self) -> redis::RedisResult<(MultiplexedConnection, bool)> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(conn) => Ok((conn, true)),
            None => self.connect().await.map(|conn| (conn, false)),
        }
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    fn put_back(&self, conn: MultiplexedConnection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}
