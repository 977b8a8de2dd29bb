//! The protocol's scenarios, one function per property: a few steps on fresh keys, each
//! answer checked against what the protocol requires.

use std::time::Duration;

use super::context::{Ctx, FINGERPRINT, LONG, OTHER_FINGERPRINT, record, store_error};
use super::steps::{busy, complete, ensure, fenced, replays, take};
use crate::store::Claim;

/// A lease or TTL meant to lapse during a check, and how long the check waits for it:
/// long enough that a slow round trip does not lapse it early.
const SHORT: Duration = Duration::from_millis(500);
const LAPSE: Duration = Duration::from_millis(1_000);

/// How many keys `claim_is_atomic` races on, and how many claimants per key.
const ATOMIC_ROUNDS: u64 = 8;
const CLAIMANTS: usize = 16;
pub(super) async fn claim_is_atomic(ctx: &Ctx) -> Result<(), String> {
    for round in 0..ATOMIC_ROUNDS {
        let key = ctx.key("atomic", round);
        let mut claimants = tokio::task::JoinSet::new();
        for _ in 0..CLAIMANTS {
            let (store, key) = (ctx.store.clone(), key);
            claimants.spawn(async move { store.store().claim(&key, &FINGERPRINT, LONG).await });
        }
        let mut granted = 0;
        while let Some(answer) = claimants.join_next().await {
            let answer = answer.map_err(|panic| format!("a claim panicked: {panic}"))?;
            match answer.map_err(store_error("a concurrent claim"))? {
                Claim::Claimed { .. } => granted += 1,
                Claim::InProgress(_) => {}
                Claim::Completed(_) => {
                    return Err(
                        "a concurrent claim of a key never completed answered completed".into(),
                    );
                }
            }
        }
        ensure!(
            granted == 1,
            "{granted} of {CLAIMANTS} concurrent claims of one free key were granted (round {round}): \
             claim must be one atomic step, exactly one holder"
        );
    }
    Ok(())
}

pub(super) async fn completed_replays(ctx: &Ctx) -> Result<(), String> {
    let key = ctx.key("replays", 0);
    let token = take(ctx, &key, LONG, "the first claim of a free key").await?;
    complete(ctx, &key, token, "value-1", LONG, "complete by the holder").await?;
    for attempt in 0..3 {
        let step = format!("claim {attempt} after completion");
        replays(ctx, &key, &FINGERPRINT, "value-1", &step).await?;
    }
    // The runtime, not the store, tells a payload mismatch: the store answers the record
    // with the fingerprint it was stored with.
    replays(
        ctx,
        &key,
        &OTHER_FINGERPRINT,
        "value-1",
        "a claim with another fingerprint",
    )
    .await
}

pub(super) async fn in_progress(ctx: &Ctx) -> Result<(), String> {
    let key = ctx.key("in_progress", 0);
    let token = take(ctx, &key, LONG, "the first claim of a free key").await?;
    busy(
        ctx,
        &key,
        &FINGERPRINT,
        "a second claim while the first holds",
    )
    .await?;
    busy(
        ctx,
        &key,
        &OTHER_FINGERPRINT,
        "a claim with another fingerprint while the first holds",
    )
    .await?;
    let renewed = ctx
        .store
        .store()
        .renew(&key, token, LONG)
        .await
        .map_err(store_error("renew"))?;
    ensure!(renewed, "renew by the live holder was refused");
    busy(ctx, &key, &FINGERPRINT, "a claim after the holder renewed").await?;
    complete(
        ctx,
        &key,
        token,
        "done",
        LONG,
        "complete by the holder after renewing",
    )
    .await?;
    replays(ctx, &key, &FINGERPRINT, "done", "a claim after completion").await
}

pub(super) async fn fencing(ctx: &Ctx) -> Result<(), String> {
    // Taken over after its lease lapsed: the old holder cannot touch its successor's key.
    let key = ctx.key("fencing.takeover", 0);
    let old = take(ctx, &key, SHORT, "the first claim (short lease)").await?;
    tokio::time::sleep(LAPSE).await;
    let new = take(ctx, &key, LONG, "a claim after the lease lapsed").await?;
    ensure!(
        new != old,
        "the takeover got the lapsed holder's token {old:?} again"
    );
    fenced(ctx, &key, old, false, "stale", "the taken-over holder").await?;
    busy(
        ctx,
        &key,
        &FINGERPRINT,
        "a claim after the old holder was fenced out",
    )
    .await?;
    complete(ctx, &key, new, "fresh", LONG, "complete by the new holder").await?;
    replays(
        ctx,
        &key,
        &FINGERPRINT,
        "fresh",
        "a claim after the new holder completed",
    )
    .await?;
    fenced(
        ctx,
        &key,
        old,
        false,
        "stale",
        "the taken-over holder, after completion",
    )
    .await?;
    // The completed holder's own token no longer holds either: a late release (a dropped
    // guard) must not delete the record, a second complete must not overwrite it (it may
    // be told its completion holds: a retry of a complete whose reply was lost).
    fenced(ctx, &key, new, true, "again", "the holder that completed").await?;
    replays(
        ctx,
        &key,
        &FINGERPRINT,
        "fresh",
        "a claim after the completed holder was fenced out",
    )
    .await?;

    // Released, then claimed again: the released token is dead.
    let key = ctx.key("fencing.released", 0);
    let first = take(ctx, &key, LONG, "the first claim").await?;
    let released = ctx
        .store
        .store()
        .release(&key, first)
        .await
        .map_err(store_error("release"))?;
    ensure!(released, "release by the live holder was refused");
    let second = take(ctx, &key, LONG, "a claim after the release").await?;
    ensure!(
        second != first,
        "a claim after a release got the released token {first:?} again"
    );
    fenced(ctx, &key, first, false, "stale", "the holder that released").await?;
    complete(
        ctx,
        &key,
        second,
        "second",
        LONG,
        "complete by the second holder",
    )
    .await?;
    replays(
        ctx,
        &key,
        &FINGERPRINT,
        "second",
        "a claim after the second holder completed",
    )
    .await
}

pub(super) async fn lease_takeover(ctx: &Ctx) -> Result<(), String> {
    let lapsing = ctx.key("takeover.lapsing", 0);
    let renewed = ctx.key("takeover.renewed", 0);
    let dead = take(ctx, &lapsing, SHORT, "the first claim (short lease)").await?;
    let live = take(
        ctx,
        &renewed,
        SHORT,
        "the first claim of another key (short lease)",
    )
    .await?;
    let kept = ctx
        .store
        .store()
        .renew(&renewed, live, LONG)
        .await
        .map_err(store_error("renew"))?;
    ensure!(
        kept,
        "renew by the live holder (before its lease lapsed) was refused"
    );
    tokio::time::sleep(LAPSE).await;
    let successor = take(ctx, &lapsing, LONG, "a claim after the lease lapsed").await?;
    ensure!(
        successor != dead,
        "the takeover got the lapsed holder's token {dead:?} again"
    );
    busy(ctx, &lapsing, &FINGERPRINT, "a claim after the takeover").await?;
    busy(
        ctx,
        &renewed,
        &FINGERPRINT,
        "a claim past the first lease of a renewed claim",
    )
    .await?;
    complete(
        ctx,
        &lapsing,
        successor,
        "taken",
        LONG,
        "complete by the successor",
    )
    .await?;
    replays(
        ctx,
        &lapsing,
        &FINGERPRINT,
        "taken",
        "a claim after the successor completed",
    )
    .await?;
    complete(
        ctx,
        &renewed,
        live,
        "renewed",
        LONG,
        "complete by the renewed holder",
    )
    .await?;
    replays(
        ctx,
        &renewed,
        &FINGERPRINT,
        "renewed",
        "a claim after the renewed holder completed",
    )
    .await
}

pub(super) async fn release_frees_key(ctx: &Ctx) -> Result<(), String> {
    let store = ctx.store.store();
    let key = ctx.key("release", 0);
    let first = take(ctx, &key, LONG, "the first claim").await?;
    let released = store
        .release(&key, first)
        .await
        .map_err(store_error("release"))?;
    ensure!(released, "release by the live holder was refused");
    let second = take(ctx, &key, LONG, "a claim after the release").await?;
    let released = store
        .release(&key, second)
        .await
        .map_err(store_error("release"))?;
    ensure!(released, "release by the second holder was refused");
    let again = store
        .release(&key, second)
        .await
        .map_err(store_error("release"))?;
    ensure!(!again, "a second release with the same token acted");
    // The synchronous path a dropped holder takes first, where the store has one.
    let third = take(ctx, &key, LONG, "a claim after two releases").await?;
    if store.release_now(&key, third) {
        take(ctx, &key, LONG, "a claim after release_now").await?;
    }
    Ok(())
}

pub(super) async fn forget(ctx: &Ctx) -> Result<(), String> {
    let store = ctx.store.store();
    let key = ctx.key("forget", 0);
    let forgot = store
        .forget(&key)
        .await
        .map_err(store_error("forget of a free key"))?;
    ensure!(
        !forgot,
        "forget of a key that never had a record answered true"
    );
    let first = take(ctx, &key, LONG, "the first claim").await?;
    complete(
        ctx,
        &key,
        first,
        "forgotten",
        LONG,
        "complete by the holder",
    )
    .await?;
    let forgot = store
        .forget(&key)
        .await
        .map_err(store_error("forget of a completed key"))?;
    ensure!(forgot, "forget of a completed record answered false");
    let rerun = take(ctx, &key, LONG, "a claim after the record was forgotten").await?;
    let forgot = store
        .forget(&key)
        .await
        .map_err(store_error("forget of a running claim"))?;
    ensure!(forgot, "forget of a running claim answered false");
    let stored = store
        .complete(&key, rerun, record("late"), LONG)
        .await
        .map_err(store_error("complete after forget"))?;
    ensure!(
        !stored,
        "complete by a holder whose claim was forgotten acted"
    );
    let next = take(
        ctx,
        &key,
        LONG,
        "a claim after a forgotten holder tried to complete",
    )
    .await?;
    complete(
        ctx,
        &key,
        next,
        "after",
        LONG,
        "complete by the next holder",
    )
    .await?;
    replays(
        ctx,
        &key,
        &FINGERPRINT,
        "after",
        "a claim after the next holder completed",
    )
    .await
}

pub(super) async fn ttl_expiry(ctx: &Ctx) -> Result<(), String> {
    let key = ctx.key("ttl", 0);
    let token = take(ctx, &key, LONG, "the first claim").await?;
    complete(
        ctx,
        &key,
        token,
        "short-lived",
        SHORT,
        "complete with a short TTL",
    )
    .await?;
    replays(
        ctx,
        &key,
        &FINGERPRINT,
        "short-lived",
        "a claim within the TTL",
    )
    .await?;
    tokio::time::sleep(LAPSE).await;
    let token = take(ctx, &key, LONG, "a claim after the TTL").await?;
    complete(ctx, &key, token, "renewed", LONG, "complete after the TTL").await?;
    replays(
        ctx,
        &key,
        &FINGERPRINT,
        "renewed",
        "a claim after the second completion",
    )
    .await
}
