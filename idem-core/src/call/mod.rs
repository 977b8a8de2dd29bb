//! One idempotent call: claim, then replay, wait, or run the body and store its outcome.
//!
//! The generated code of `#[idempotent]` derives the key and fingerprint and hands the
//! body's future to [`run`]; everything else happens here, in ordinary Rust.

pub(crate) mod codec;
pub(crate) mod flight;
pub(crate) mod lossless;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::codec::{DecodeFn, EncodeFn, StoredOutcome};
use crate::error::{Error, SharedError};
use crate::event::{self, Outcome};
use crate::flight::{FlightLead, Joined, Published};
use crate::global::{self, FRAME, Frame, idem_error};
use crate::key::{Fingerprint, Key};
use crate::spec::{InFlight, Spec};
use crate::store::{self, Claim, NoticeKind, Record, SharedStore, Token};

/// The delays between the background retries of a `complete` the store failed.
const COMPLETE_RETRY: Backoff = Backoff::new(Duration::from_millis(20)).max(Duration::from_secs(1));

/// How an `Err` outcome is encoded and decoded: only with `cache_errors`.
pub struct ErrCodec<E> {
    pub(crate) encode: Option<EncodeFn<E>>,
    pub(crate) decode: Option<DecodeFn<E>>,
}

impl<E> ErrCodec<E> {
    pub(crate) fn none() -> Self {
        ErrCodec {
            encode: None,
            decode: None,
        }
    }
}

impl<E: Serialize + DeserializeOwned> ErrCodec<E> {
    pub(crate) fn json() -> Self {
        ErrCodec {
            encode: Some(codec::encode_err::<E>),
            decode: Some(codec::decode_json::<E>),
        }
    }
}

/// How a call's outcome becomes a record value and back: [`ErrCodec`] is the JSON codec of
/// `#[idempotent]`; the HTTP layer stores responses in its own wire format.
pub(crate) trait OutcomeCodec<T, E> {
    /// The value to store, or `None` to release the key (a retry runs the body again).
    fn encode(&self, outcome: &Result<T, E>) -> Result<Option<Vec<u8>>, Error>;

    /// The outcome a stored record replays.
    fn decode(&self, record: &Arc<Record>) -> Result<Result<T, E>, Error>;
}

impl<T: Serialize + DeserializeOwned, E> OutcomeCodec<T, E> for ErrCodec<E> {
    fn encode(&self, outcome: &Result<T, E>) -> Result<Option<Vec<u8>>, Error> {
        match outcome {
            Ok(value) => codec::encode_ok(value).map(Some),
            Err(err) => match self.encode {
                Some(encode) => encode(err).map(Some),
                None => Ok(None),
            },
        }
    }

    fn decode(&self, record: &Arc<Record>) -> Result<Result<T, E>, Error> {
        Ok(match codec::decode(record.value(), self.decode)? {
            StoredOutcome::Ok(value) => Ok(value),
            StoredOutcome::Err(err) => Err(err),
        })
    }
}

/// Everything a call needs besides its body.
pub(crate) struct Call<'a, C> {
    pub(crate) spec: &'static Spec,
    pub(crate) store: &'a SharedStore,
    pub(crate) key: Key,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) codec: C,
}

impl<C> Call<'_, C> {
    /// Runs the call to its end: a replay, an execution, or an error. (The future of
    /// [`Call::settle`] itself, not one wrapping it: a hit moves the call once less.)
    pub(crate) fn execute<T, E, Fut>(self, body: Fut) -> impl Future<Output = Result<T, E>>
    where
        C: OutcomeCodec<T, E>,
        E: From<Error>,
        Fut: Future<Output = Result<T, E>>,
    {
        crate::observe::start(&self.key);
        #[cfg(feature = "metrics")]
        {
            let (spec, started) = (self.spec, std::time::Instant::now());
            async move {
                let result = self.settle(body).await;
                crate::metrics::call_duration(spec, started.elapsed());
                result
            }
        }
        #[cfg(not(feature = "metrics"))]
        self.settle(body)
    }

    /// [`Call::execute`], untimed. (The steps below borrow the call: a hit does not move
    /// it again.)
    async fn settle<T, E, Fut>(self, body: Fut) -> Result<T, E>
    where
        C: OutcomeCodec<T, E>,
        E: From<Error>,
        Fut: Future<Output = Result<T, E>>,
    {
        let coalesce =
            self.spec.in_flight == InFlight::Wait && self.store.store().coalesce_local_waiters();
        if !coalesce {
            // The deadline is read from the clock only once it can matter: before the first
            // claim that does I/O, or when a synchronous claim finds the key in progress (no
            // time has passed since the call started). A hit reads no clock.
            return self.lead(body, None, None, false).await;
        }
        let deadline = after(Instant::now(), self.spec.wait);
        let mut followed = false;
        loop {
            match flight::join(self.store.id(), self.key) {
                Joined::Lead(lead) => {
                    return self.lead(body, Some(lead), Some(deadline), followed).await;
                }
                Joined::Follow(leader) => {
                    followed = true;
                    let published = tokio::time::timeout_at(deadline, leader.published()).await;
                    match published {
                        Ok(Published::Record(record)) => {
                            return self.replay(&record, Outcome::Waited);
                        }
                        // The leader's claim failed: the store is failing for this key now,
                        // and trying again one follower at a time would only hand the outage
                        // out slowly.
                        Ok(Published::Failed(shared)) => {
                            let err = shared.to_error();
                            event::store_error(self.spec, &self.key, "claim (shared)", &err);
                            return Err(idem_error(err));
                        }
                        // The leader ended without a result (error, panic, cancel, or its
                        // own wait ran out): try again, perhaps as the leader. (`published`
                        // returns no `Pending`.)
                        Ok(Published::Ended | Published::Pending) => continue,
                        Err(_elapsed) => return self.give_up(),
                    }
                }
            }
        }
    }

    /// Claims the key, waiting while another holder runs, until there is a result to
    /// replay, the body ran here, or the wait is over. `waited`: this call already waited
    /// (as a follower), so its claims are polls bounded by its deadline.
    async fn lead<T, E, Fut>(
        &self,
        body: Fut,
        flight: Option<FlightLead>,
        mut deadline: Option<Instant>,
        mut waited: bool,
    ) -> Result<T, E>
    where
        C: OutcomeCodec<T, E>,
        E: From<Error>,
        Fut: Future<Output = Result<T, E>>,
    {
        let store = self.store.store();
        let poll = store.poll_backoff();
        let mut backoff = poll.first_delay();
        loop {
            let claim = match store.claim_now(&self.key, &self.fingerprint, self.spec.lease) {
                Some(claim) => claim,
                // A waiter's poll: bounded by the wait's deadline, which is a hard bound.
                None if waited => {
                    let deadline =
                        *deadline.get_or_insert_with(|| after(Instant::now(), self.spec.wait));
                    match self.poll(deadline).await {
                        Some(claim) => claim,
                        None => return self.give_up(),
                    }
                }
                None => {
                    deadline.get_or_insert_with(|| after(Instant::now(), self.spec.wait));
                    store
                        .claim(&self.key, &self.fingerprint, self.spec.lease)
                        .await
                }
            };
            let claim = match claim {
                Ok(claim) => claim,
                Err(err) => {
                    event::store_error(self.spec, &self.key, "claim", &err);
                    let Some(flight) = &flight else {
                        return Err(idem_error(err));
                    };
                    let shared = SharedError::new(err);
                    flight.fail(&shared);
                    return Err(idem_error(shared.to_error()));
                }
            };
            match claim {
                Claim::Completed(record) => {
                    if let Some(flight) = &flight {
                        flight.publish(&record);
                    }
                    let outcome = if waited {
                        Outcome::Waited
                    } else {
                        Outcome::Replayed
                    };
                    return self.replay(&record, outcome);
                }
                Claim::Claimed { token, taken_over } => {
                    if taken_over {
                        event::emit(self.spec, &self.key, Outcome::TakenOver);
                    }
                    return self.hold(token, body, flight).await;
                }
                Claim::InProgress(notice) => {
                    if self.spec.in_flight == InFlight::Reject {
                        event::emit(self.spec, &self.key, Outcome::Rejected);
                        return Err(idem_error(Error::InProgress));
                    }
                    let now = Instant::now();
                    let deadline = *deadline.get_or_insert(after(now, self.spec.wait));
                    if now >= deadline {
                        return self.give_up();
                    }
                    waited = true;
                    match notice.0 {
                        // Also wake when the holder's lease could have lapsed.
                        NoticeKind::Notify(mut changed) => {
                            let until = deadline.min(after(now, self.spec.lease));
                            let _ = tokio::time::timeout_at(until, changed.changed()).await;
                        }
                        NoticeKind::Poll => {
                            let next = after(now, backoff);
                            if next >= deadline {
                                // No poll could finish before the deadline.
                                tokio::time::sleep_until(deadline).await;
                                return self.give_up();
                            }
                            tokio::time::sleep_until(next).await;
                            backoff = poll.next_delay(backoff);
                        }
                    }
                }
            }
        }
    }

    /// One waiter's claim, given up at `deadline` (`None`). A claim cut short may still
    /// take the key on the server: it is left to finish in the background, and releases
    /// the key if it took it.
    async fn poll(&self, deadline: Instant) -> Option<Result<Claim, Error>> {
        if Instant::now() >= deadline {
            return None;
        }
        let (store, key, fingerprint, lease) = (
            self.store.clone(),
            self.key,
            self.fingerprint,
            self.spec.lease,
        );
        let mut claim = Box::pin(async move {
            let claim = store.store().claim(&key, &fingerprint, lease).await;
            (store, claim)
        });
        match tokio::time::timeout_at(deadline, &mut claim).await {
            Ok((_, claim)) => Some(claim),
            Err(_elapsed) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let (store, Ok(Claim::Claimed { token, .. })) = claim.await {
                            let _ = store.store().release(&key, token).await;
                        }
                    });
                }
                None
            }
        }
    }

    /// Runs the body while holding the claim, renewing its lease, then stores the outcome.
    pub(crate) async fn hold<T, E, Fut>(
        &self,
        token: Token,
        body: Fut,
        flight: Option<FlightLead>,
    ) -> Result<T, E>
    where
        C: OutcomeCodec<T, E>,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut guard = ClaimGuard {
            store: self.store,
            key: self.key,
            token,
            armed: true,
        };
        let mut body = pin!(FRAME.scope(Frame::body(self.key), body));
        let outcome = renewing(self.store, self.spec, &self.key, token, body.as_mut()).await;
        let saw_idem_error = body
            .take_value()
            .is_some_and(|frame| frame.saw_idem_error());
        let encoded = encode_outcome(&self.codec, &outcome, saw_idem_error);
        match encoded {
            Ok(Some(bytes)) => {
                let record = Arc::new(Record::new(self.fingerprint, bytes));
                if let Some(flight) = &flight {
                    flight.publish(&record);
                }
                guard.armed = false;
                self.store_outcome(token, record).await;
            }
            // An outcome that is not stored (an `Err` without `cache_errors`): release, so a
            // retry runs the body again.
            Ok(None) => {
                guard.release().await;
                event::emit(self.spec, &self.key, Outcome::Released);
            }
            // The side effect ran but its result cannot be stored: return it anyway, and
            // release the key (a retry will run the body again).
            Err(err) => {
                event::codec_error(self.spec, &self.key, &err);
                guard.release().await;
            }
        }
        outcome
    }

    /// `complete`s the claim; if the store fails, retries in the background while the
    /// lease holds. The caller gets the body's result either way.
    async fn store_outcome(&self, token: Token, record: Arc<Record>) {
        let store = self.store.store();
        match store
            .complete(&self.key, token, Arc::clone(&record), self.spec.ttl)
            .await
        {
            Ok(true) => event::emit(self.spec, &self.key, Outcome::Executed),
            Ok(false) => event::emit(self.spec, &self.key, Outcome::LeaseLost),
            Err(err) => {
                event::store_error(self.spec, &self.key, "complete", &err);
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let (store, spec, key) = (self.store.clone(), self.spec, self.key);
                // The last renewal was at most a third of a lease ago.
                let until = after(Instant::now(), spec.lease / 3 * 2);
                runtime.spawn(async move {
                    let mut backoff = COMPLETE_RETRY.first_delay();
                    while after(Instant::now(), backoff) < until {
                        tokio::time::sleep(backoff).await;
                        backoff = COMPLETE_RETRY.next_delay(backoff);
                        match store
                            .store()
                            .complete(&key, token, Arc::clone(&record), spec.ttl)
                            .await
                        {
                            Ok(true) => return event::emit(spec, &key, Outcome::Executed),
                            Ok(false) => return event::emit(spec, &key, Outcome::LeaseLost),
                            Err(err) => event::store_error(spec, &key, "complete (retry)", &err),
                        }
                    }
                });
            }
        }
    }

    pub(crate) fn replay<T, E>(&self, record: &Arc<Record>, outcome: Outcome) -> Result<T, E>
    where
        C: OutcomeCodec<T, E>,
        E: From<Error>,
    {
        replay_record(
            self.spec,
            &self.key,
            &self.fingerprint,
            &self.codec,
            record,
            outcome,
        )
    }

    fn give_up<T, E: From<Error>>(&self) -> Result<T, E> {
        event::emit(self.spec, &self.key, Outcome::Rejected);
        Err(idem_error(Error::InProgress))
    }
}

/// The record value of a call's outcome, or `None` to release the key. An `Err` after an
/// idem error reached the body may be that error (a nested call's `InProgress` or
/// `Store`): transient, never stored. It reaches this call's caller too, so its own frame
/// notes it. (Every mode of a call stores through this: plain, `detach`, transaction.)
pub(crate) fn encode_outcome<T, E, C: OutcomeCodec<T, E>>(
    codec: &C,
    outcome: &Result<T, E>,
    saw_idem_error: bool,
) -> Result<Option<Vec<u8>>, Error> {
    match outcome {
        Err(_) if saw_idem_error => {
            global::note_idem_error();
            Ok(None)
        }
        _ => codec.encode(outcome),
    }
}

/// The outcome a stored `record` replays for a call of `key` with `fingerprint`, and its
/// event (`outcome`, or `mismatch`, or `codec_error`). Every mode of a call replays through
/// this: plain, `detach`, transaction.
pub(crate) fn replay_record<T, E, C>(
    spec: &Spec,
    key: &Key,
    fingerprint: &Fingerprint,
    codec: &C,
    record: &Arc<Record>,
    outcome: Outcome,
) -> Result<T, E>
where
    C: OutcomeCodec<T, E>,
    E: From<Error>,
{
    if record.fingerprint() != fingerprint {
        event::emit(spec, key, Outcome::Mismatch);
        return Err(idem_error(Error::PayloadMismatch));
    }
    match codec.decode(record) {
        Ok(stored) => {
            event::emit(spec, key, outcome);
            stored
        }
        Err(err) => {
            event::codec_error(spec, key, &err);
            Err(idem_error(err))
        }
    }
}

/// Polls `body`; while it is pending, renews the claim's lease every third of a lease.
async fn renewing<F: Future>(
    store: &SharedStore,
    spec: &'static Spec,
    key: &Key,
    token: Token,
    body: F,
) -> F::Output {
    let renew = async {
        let mut lost = false;
        loop {
            tokio::time::sleep(spec.lease / 3).await;
            if lost {
                continue;
            }
            match store.store().renew(key, token, spec.lease).await {
                Ok(true) => {}
                Ok(false) => {
                    lost = true;
                    event::emit(spec, key, Outcome::LeaseLost);
                }
                Err(err) => event::store_error(spec, key, "renew", &err),
            }
        }
    };
    let mut body = pin!(body);
    let mut renew = pin!(renew);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = body.as_mut().poll(cx) {
            return Poll::Ready(output);
        }
        let _ = renew.as_mut().poll(cx);
        Poll::Pending
    })
    .await
}

/// Releases the claim if the call ends without storing an outcome: a panic or a dropped
/// future releases at once (synchronously in memory, by a spawned task otherwise).
struct ClaimGuard<'a> {
    store: &'a SharedStore,
    key: Key,
    token: Token,
    armed: bool,
}

impl ClaimGuard<'_> {
    async fn release(&mut self) {
        self.armed = false;
        if let Err(err) = self.store.store().release(&self.key, self.token).await {
            event::release_failed(&self.key, &err);
        }
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if !self.armed || self.store.store().release_now(&self.key, self.token) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            event::dropped_release_without_runtime(&self.key);
            return;
        };
        let (store, key, token) = (self.store.clone(), self.key, self.token);
        runtime.spawn(async move {
            if let Err(err) = store.store().release(&key, token).await {
                event::dropped_release_failed(&key, &err);
            }
        });
    }
}

/// `now + duration` on tokio's clock, saturating (see [`store::after`]).
fn after(now: Instant, duration: Duration) -> Instant {
    Instant::from_std(store::after(now.into_std(), duration))
}
