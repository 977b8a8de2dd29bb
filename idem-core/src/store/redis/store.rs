//! The [`Store`] impl of [`RedisStore`]: the record protocol as Redis commands.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::RedisStore;
use super::token::new_token;
use super::tracking::Tracked;
use super::wire::{
    CLAIM_PREFIX_LEN, SCRIPTS, claim_prefix, claim_prefix_into, encode_record, int_reply, is_claim,
    is_record, millis_arg, millis_into, parse_claim, parse_record, redis_key_into,
};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::store::backend::within_record_limit;
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

    /// Reads the record of `key` with its remaining TTL (`GET`, `PTTL`) into the
    /// near-cache: on the tracking connection while it is up, so Redis will say when the
    /// key changes, else on the shared one (the bound applies). A failed read keeps
    /// nothing; the caller already has its answer.
    async fn fill_near(&self, near: &Tracked, key: &Key) {
        let ticket = near.cache.ticket(key);
        let redis_key = self.redis_key(key);
        let mut read = redis::pipe();
        read.cmd("GET").arg(&redis_key).cmd("PTTL").arg(&redis_key);
        let reply = match near.connection() {
            Some(mut conn) => tokio::time::timeout(
                self.inner.runner.op_timeout,
                read.query_async::<Vec<Value>>(&mut conn),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => self
                .inner
                .runner
                .pipeline("near-cache read", &read)
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some([value, Value::Int(pttl)]) = reply.as_deref() else {
            return;
        };
        let remaining = match u64::try_from(*pttl) {
            Ok(ms) => Duration::from_millis(ms),
            // -1: no expiry (set by hand); the bound applies.
            Err(_) if *pttl == -1 => Duration::MAX,
            // -2: gone.
            Err(_) => return,
        };
        if let Some(record) = parse_record(value) {
            near.cache.fill(key, ticket, &Arc::new(record), remaining);
        }
    }
}

/// What a `forget` removed (`GETDEL`'s reply): `true` for a completed record or a running
/// claim, as on every store; a claim is reported as such by a warning event (its holder's
/// result will not be stored).
fn forgotten(key: &Key, removed: Value) -> bool {
    match removed {
        Value::Nil => false,
        Value::BulkString(bytes) if is_record(&bytes) => true,
        Value::BulkString(bytes) if is_claim(&bytes) => {
            tracing::warn!(
                target: "idem",
                key = %key,
                "idem: forget removed a running claim, not a record: its holder's result will not be stored"
            );
            true
        }
        _ => {
            tracing::warn!(target: "idem", key = %key, "idem: forget removed a value that is not an idem record");
            true
        }
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
            if let Some(record) = self
                .inner
                .near
                .as_ref()
                .and_then(|near| near.cache.get(key))
            {
                return Ok(Claim::Completed(record));
            }
            let token = new_token();
            // The hit path: every argument is written on the stack.
            let (mut key_buf, mut value_buf, mut px_buf) =
                ([0; 160], [0; CLAIM_PREFIX_LEN], itoa::Buffer::new());
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
            let reply = self.inner.runner.query("claim", &set).await;
            // No reply from the server (idem's bound, the client's timeout, a dropped
            // connection): the claim may still be applied.
            let unanswered = match &reply {
                Err(_) => true,
                Ok(Err(err)) => err.code().is_none(),
                Ok(Ok(_)) => false,
            };
            if unanswered {
                self.release_once_answered(*key, token, lease);
            }
            let claim = match reply? {
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
                Err(err) => Err(self.inner.runner.failed("claim", err)),
            }?;
            if let (Claim::Claimed { token, .. }, Some(waiter)) = (&claim, &self.inner.replicas) {
                // Fail closed: the body does not run on a claim a failover could lose.
                // The `WAIT` runs on a connection of its own (never the shared one); the
                // claim's renewal there is the write it waits for.
                let redis_key = self.redis_key(key);
                let mut renew = SCRIPTS.renew.key(&redis_key);
                renew.arg(claim_prefix(*token)).arg(millis_arg(lease));
                let acknowledged = waiter
                    .write_and_wait(&self.inner.runner, "claim", &redis_key, &renew)
                    .await
                    .and_then(|kept| {
                        kept.then_some(()).ok_or_else(|| {
                            Error::store(format!(
                                "redis claim on {}: the claim was removed before replicas acknowledged it",
                                self.inner.runner.target
                            ))
                        })
                    });
                if let Err(err) = acknowledged {
                    // Released so that a retry need not wait for the lease (on the shared
                    // connection, which the `WAIT` never blocks).
                    let _ = self.release(key, *token).await;
                    return Err(err);
                }
            }
            if let (Claim::Completed(_), Some(near)) = (&claim, &self.inner.near) {
                self.fill_near(near, key).await;
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
            let record = within_record_limit(key, record, self.inner.max_record_bytes);
            let ticket = self.inner.near.as_ref().map(|near| near.cache.ticket(key));
            let redis_key = self.redis_key(key);
            let mut invocation = SCRIPTS.complete.key(&redis_key);
            invocation
                .arg(claim_prefix(token))
                .arg(encode_record(&record))
                .arg(millis_arg(ttl));
            let stored = match &self.inner.replicas {
                // Not acknowledged: reported as a store error (the caller still gets its
                // result); a retry of `complete` finds its own record and waits again.
                Some(waiter) => {
                    waiter
                        .write_and_wait(&self.inner.runner, "complete", &redis_key, &invocation)
                        .await?
                }
                None => {
                    let reply = self.inner.runner.invoke("complete", &invocation).await?;
                    int_reply("complete", reply)?
                }
            };
            if stored && let (Some(near), Some(ticket)) = (&self.inner.near, ticket) {
                if near.connection().is_some() {
                    // Tracked: the record must be read on the tracking connection to be
                    // invalidated later; read off the caller's path.
                    let store = self.clone();
                    let key = *key;
                    tokio::spawn(async move {
                        if let Some(near) = &store.inner.near {
                            store.fill_near(near, &key).await;
                        }
                    });
                } else {
                    near.cache.fill(key, ticket, &record, ttl);
                }
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
            // Before, so no hit answers from memory from now on; after, so that a lookup
            // or `complete` whose reply comes back late is not kept either.
            if let Some(near) = &self.inner.near {
                near.cache.remove(key);
            }
            let mut getdel = redis::cmd("GETDEL");
            getdel.arg(self.redis_key(key));
            let reply = self.inner.runner.query("forget", &getdel).await;
            if let Some(near) = &self.inner.near {
                near.cache.remove(key);
            }
            match reply? {
                Ok(removed) => Ok(forgotten(key, removed)),
                Err(err) if err.code() == Some("WRONGTYPE") => Err(Error::codec(
                    "the record's Redis key holds a value of another type than a string; not removed",
                )),
                Err(err) => Err(self.inner.runner.failed("forget", err)),
            }
        })
    }

    fn claim_now(
        &self,
        key: &Key,
        _fingerprint: &Fingerprint,
        _lease: Duration,
    ) -> Option<Result<Claim, Error>> {
        let record = self.inner.near.as_ref()?.cache.get(key)?;
        Some(Ok(Claim::Completed(record)))
    }

    fn poll_backoff(&self) -> Backoff {
        self.inner.poll
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
