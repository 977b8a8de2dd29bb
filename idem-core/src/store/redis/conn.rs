//! The connection a [`RedisStore`](super::RedisStore) runs its commands on, and the bound
//! on each operation.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, RedisError, RedisFuture, RedisResult, Script, ScriptInvocation, Value};

use crate::error::Error;

/// One multiplexed connection that reconnects by itself (to one server, or to every node
/// of a cluster). Cloning shares it.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(std::sync::Arc<super::cluster::Cluster>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(cluster) => Box::pin(cluster.query(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(cluster) => Box::pin(cluster.pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Runs commands on the connection, each within a hard bound.
pub(super) struct Runner {
    pub(super) conn: Conn,
    /// A hard bound on one store operation, on top of the client's own timeouts.
    pub(super) op_timeout: Duration,
    /// The target without credentials, for messages.
    pub(super) target: String,
}

impl Runner {
    /// Runs `op` on the connection within the operation bound and hands back the server's
    /// answer, error replies included; `Err` only when no answer came in time. An operation
    /// that could not be sent because the (re)connection was refused is tried once more,
    /// within the same bound: the connection manager starts a fresh connection attempt on
    /// such an error, so the first call after Redis came back does not fail on a stale
    /// attempt.
    async fn bounded<T, F, Fut>(&self, what: &'static str, op: F) -> Result<RedisResult<T>, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            match op(self.conn.clone()).await {
                Err(err) if err.is_connection_refusal() => op(self.conn.clone()).await,
                other => other,
            }
        };
        tokio::time::timeout(self.op_timeout, attempt)
            .await
            .map_err(|_| {
                #[cfg(feature = "redis-cluster")]
                if let Conn::Cluster(cluster) = &self.conn {
                    cluster.rebuild();
                }
                Error::store(format!(
                    "redis {what} on {}: no reply within {:?}",
                    self.target, self.op_timeout
                ))
            })
    }

    /// Runs one command within the operation bound; see [`Runner::bounded`].
    pub(super) async fn query(
        &self,
        what: &'static str,
        cmd: &Cmd,
    ) -> Result<RedisResult<Value>, Error> {
        self.bounded(
            what,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs a pipeline within the operation bound; see [`Runner::bounded`].
    pub(super) async fn pipeline(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<RedisResult<Vec<Value>>, Error> {
        self.bounded(
            what,
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs `cmd`, which names no key, on the node that holds `key` (the one server, or
    /// that key's primary in a cluster), within the operation bound; see
    /// [`Runner::bounded`].
    pub(super) async fn query_on_key_node(
        &self,
        what: &'static str,
        cmd: &Cmd,
        key: &str,
    ) -> Result<RedisResult<Value>, Error> {
        match &self.conn {
            Conn::Single(_) => {
                let _ = key; // one server holds every key
                self.query(what, cmd).await
            }
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(cluster) => {
                self.bounded(what, |_| async move {
                    cluster.query_on_key_node(cmd, key).await
                })
                .await
            }
        }
    }

    /// Invokes a script (`EVALSHA`, loading it when the server answers `NOSCRIPT`) within
    /// the operation bound; any failure is an [`Error::Store`].
    pub(super) async fn invoke(
        &self,
        what: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<Value, Error> {
        self.bounded(what, |mut conn| async move {
            script.invoke_async(&mut conn).await
        })
        .await?
        .map_err(|err| self.failed(what, err))
    }

    /// Loads `script` (`SCRIPT LOAD`; on every node of a cluster) within the operation
    /// bound.
    pub(super) async fn load(&self, script: &Script) -> Result<(), Error> {
        self.bounded("SCRIPT LOAD", |mut conn| async move {
            script.load_async(&mut conn).await
        })
        .await?
        .map(drop)
        .map_err(|err| self.failed("SCRIPT LOAD", err))
    }

    /// A failed command as an [`Error::Store`] naming the operation and the target, with
    /// the client's error as the source.
    pub(super) fn failed(&self, what: &'static str, err: RedisError) -> Error {
        self.failed_with_hint(what, err, "")
    }

    /// [`Runner::failed`], with a hint at the likely cause after the message.
    pub(super) fn failed_with_hint(
        &self,
        what: &'static str,
        err: RedisError,
        hint: &'static str,
    ) -> Error {
        Error::store(crate::store::backend::OperationError {
            backend: "redis",
            operation: what,
            target: self.target.clone(),
            hint,
            source: err,
        })
    }
}
