//! The [`Store`] impl of [`RedisStore`]: the record protocol as Redis commands.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::RedisStore;
use super::token::new_token;
use super::wire::{
    CLAIM_PREFIX_LEN, SCRIPTS, claim_prefix, claim_prefix_into, encode_record, int_reply,
    millis_arg, millis_into, parse_claim, redis_key_into, unexpected,
};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::store::{BoxFuture, Claim, Record, Store, Token};

/// The delays between attempts to release a claim whose reply timed out.
const TIMED_OUT_RELEASE: Backoff =
    Backoff::new(Duration::from_millis(20)).max(Duration::from_millis(500));

impl RedisStore {
    /// A claim whose reply did not come in time may still be applied when a stalled server
    /// wakes up, and would then hold the key for a whole lease with nobody running. Its
    /// token is this call's alone, so it is released (compare-and-delete) as soon as the
    /// store answers again. The release may overtake the claim (the client may have
    /// reconnected, and the server reads the new connection first), so a release that
    /// found nothing is repeated a few times before the claim is presumed never applied.
    fn release_once_answered(&self, key: Key, token: Token, lease: Duration) {
        /// Releases that found nothing, before the claim is presumed never applied.
        const ANSWERED_MISSES: u32 = 4;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            let until = tokio::time::Instant::now() + lease;
            let mut delay = TIMED_OUT_RELEASE.first_delay();
            let mut misses = 0;
            loop {
                match store.release(&key, token).await {
                    Ok(true) => return,
                    Ok(false) => {
                        misses += 1;
                        if misses == ANSWERED_MISSES {
                            return;
                        }
                    }
                    Err(_) => {}
                }
                if tokio::time::Instant::now() + delay >= until {
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = TIMED_OUT_RELEASE.next_delay(delay);
            }
        });
    }
}

impl Store for RedisStore {
    fn claim<'a>(
        &'a self,
        key: &'a Key,
        _fingerprint: &'a Fingerprint,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, Error>> {
        Box::pin(async move {
            if let Some(record) = self.inner.near.as_ref().and_then(|near| near.get(key)) {
                return Ok(Claim::Completed(record));
            }
            let token = new_token();
            // The hit path: every argument is written on the stack.
            let (mut key_buf, mut value_buf, mut px_buf) =
                ([0; 160], [0; CLAIM_PREFIX_LEN], [0; 20]);
            let mut set = redis::cmd("SET");
            match redis_key_into(&self.inner.prefix, key, &mut key_buf) {
                Some(redis_key) => set.arg(redis_key),
                None => set.arg(self.redis_key(key)),
            };
            set.arg(claim_prefix_into(token, &mut value_buf))
                .arg("NX")
                .arg("PX")
                .arg(millis_into(lease, &mut px_buf))
                .arg("GET");
            let reply = match self.inner.runner.query("claim", &set).await {
                Ok(reply) => reply,
                Err(err) => {
                    self.release_once_answered(*key, token, lease);
                    return Err(err);
                }
            };
            let claim = match reply {
                Ok(reply) => parse_claim(reply, token),
                Err(err) if err.code() == Some("WRONGTYPE") => Err(Error::codec(
                    "the record's Redis key holds a value of another type than a string",
                )),
                // Before 7.0, Redis refuses NX together with GET.
                Err(err) if err.to_string().contains("syntax error") => {
                    Err(self.inner.runner.failed_with_hint(
                        "claim",
                        err,
                        " (idem needs Redis 7.0 or later: SET with NX and GET)",
                    ))
                }
                Err(err) => {
                    // No reply from the server (a timeout, a dropped connection): the
                    // claim may still be applied.
                    if err.code().is_none() {
                        self.release_once_answered(*key, token, lease);
                    }
                    Err(self.inner.runner.failed("claim", err))
                }
            }?;
            if let (Claim::Claimed { .. }, Some(replicas)) = (&claim, self.inner.replicas)
                && let Err(err) = self
                    .inner
                    .runner
                    .wait_for_replicas("claim", &self.redis_key(key), replicas)
                    .await
            {
                // Fail closed: the body does not run on a claim a failover could lose.
                // Released so that a retry need not wait for the lease.
                let _ = self.release(key, token).await;
                return Err(err);
            }
            if let (Claim::Completed(record), Some(near)) = (&claim, &self.inner.near) {
                near.insert(key, record);
            }
            Ok(claim)
        })
    }

    fn renew<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut invocation = SCRIPTS.renew.key(self.redis_key(key));
            invocation.arg(claim_prefix(token)).arg(millis_arg(lease));
            let reply = self.inner.runner.invoke("renew", &invocation).await?;
            int_reply("renew", reply)
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a Key,
        token: Token,
        record: Arc<Record>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut invocation = SCRIPTS.complete.key(self.redis_key(key));
            invocation
                .arg(claim_prefix(token))
                .arg(encode_record(&record))
                .arg(millis_arg(ttl));
            let reply = self.inner.runner.invoke("complete", &invocation).await?;
            let stored = int_reply("complete", reply)?;
            if stored && let Some(replicas) = self.inner.replicas {
                // Not acknowledged: reported as a store error (the caller still gets its
                // result); a retry of `complete` finds its own record and waits again.
                self.inner
                    .runner
                    .wait_for_replicas("complete", &self.redis_key(key), replicas)
                    .await?;
            }
            if stored && let Some(near) = &self.inner.near {
                near.insert(key, &record);
            }
            Ok(stored)
        })
    }

    fn release<'a>(&'a self, key: &'a Key, token: Token) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut invocation = SCRIPTS.release.key(self.redis_key(key));
            invocation.arg(claim_prefix(token));
            let reply = self.inner.runner.invoke("release", &invocation).await?;
            int_reply("release", reply)
        })
    }

    fn forget<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            if let Some(near) = &self.inner.near {
                near.remove(key);
            }
            let mut del = redis::cmd("DEL");
            del.arg(self.redis_key(key));
            let reply = self.inner.runner.run("forget", &del).await?;
            match reply {
                Value::Int(n) => Ok(n > 0),
                other => Err(unexpected("forget", &other)),
            }
        })
    }

    fn claim_now(
        &self,
        key: &Key,
        _fingerprint: &Fingerprint,
        _lease: Duration,
    ) -> Option<Result<Claim, Error>> {
        let record = self.inner.near.as_ref()?.get(key)?;
        Some(Ok(Claim::Completed(record)))
    }

    fn poll_backoff(&self) -> Backoff {
        self.inner.poll
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
