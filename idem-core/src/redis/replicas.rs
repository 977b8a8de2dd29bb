//! Waiting for replicas to acknowledge a write (`WAIT`), for stores built with
//! [`wait_for_replicas`](super::RedisStoreBuilder::wait_for_replicas).

use std::time::Duration;

use redis::Value;

use super::conn::Runner;
use super::wire::millis_arg;
use crate::error::Error;

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
}

impl Runner {
    /// `WAIT {count} {timeout}` on the node that holds `key`: `Ok` once `count` replicas
    /// acknowledged every write this connection made, an [`Error::Store`] when fewer did
    /// within the timeout. (`WAIT` counts the connection's writes, which include the
    /// caller's; other calls' writes on the shared connection only make it stricter.)
    pub(super) async fn wait_for_replicas(
        &self,
        what: &'static str,
        key: &str,
        replicas: Replicas,
    ) -> Result<(), Error> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas.count).arg(millis_arg(replicas.timeout));
        let reply = self.query_on_key_node(what, &wait, key).await?;
        match reply {
            Ok(Value::Int(acked)) if acked >= i64::from(replicas.count) => Ok(()),
            Ok(Value::Int(acked)) => Err(Error::store(format!(
                "redis {what} on {}: acknowledged by {acked} of {} replicas within {:?}",
                self.target, replicas.count, replicas.timeout
            ))),
            Ok(other) => Err(super::wire::unexpected(what, &other)),
            Err(err) => Err(self.failed(what, err)),
        }
    }
}
