//! The steps the scenarios are made of: a store call, checked against the one answer the
//! protocol allows there; a failure names the step.

use std::time::Duration;

use super::context::{Ctx, FINGERPRINT, LONG, record, store_error};
use crate::key::{Fingerprint, Key};
use crate::store::{Claim, Token};

/// `Err(detail)` unless `condition`.
macro_rules! ensure {
    ($condition:expr, $($detail:tt)+) => {
        if !$condition {
            return Err(format!($($detail)+));
        }
    };
}
pub(super) use ensure;

/// Claims `key` (with `fingerprint`, for `lease`); `step` names the step in a failure.
pub(super) async fn claim(
    ctx: &Ctx,
    key: &Key,
    fingerprint: &Fingerprint,
    lease: Duration,
    step: &str,
) -> Result<Claim, String> {
    ctx.store
        .store()
        .claim(key, fingerprint, lease)
        .await
        .map_err(store_error(step))
}

/// Claims `key`, which must be granted.
pub(super) async fn take(
    ctx: &Ctx,
    key: &Key,
    lease: Duration,
    step: &str,
) -> Result<Token, String> {
    match claim(ctx, key, &FINGERPRINT, lease, step).await? {
        Claim::Claimed { token, .. } => Ok(token),
        other => Err(format!("{step}: expected the claim granted, got {other:?}")),
    }
}

/// Claims `key`, which must answer in progress.
pub(super) async fn busy(
    ctx: &Ctx,
    key: &Key,
    fingerprint: &Fingerprint,
    step: &str,
) -> Result<(), String> {
    match claim(ctx, key, fingerprint, LONG, step).await? {
        Claim::InProgress(_) => Ok(()),
        other => Err(format!("{step}: expected in progress, got {other:?}")),
    }
}

/// Claims `key`, which must replay a record of `value` under [`FINGERPRINT`].
pub(super) async fn replays(
    ctx: &Ctx,
    key: &Key,
    fingerprint: &Fingerprint,
    value: &str,
    step: &str,
) -> Result<(), String> {
    match claim(ctx, key, fingerprint, LONG, step).await? {
        Claim::Completed(found) => {
            ensure!(
                found.value() == value.as_bytes(),
                "{step}: replayed {:?}, stored {value:?}",
                String::from_utf8_lossy(found.value())
            );
            ensure!(
                *found.fingerprint() == FINGERPRINT,
                "{step}: the replayed record has another fingerprint than the one stored with it"
            );
            Ok(())
        }
        other => Err(format!(
            "{step}: expected the completed record {value:?}, got {other:?}"
        )),
    }
}

/// `renew`, `complete` (with `value`) and `release` with `token`, which no longer holds
/// `key`: each must be refused.
pub(super) async fn fenced(
    ctx: &Ctx,
    key: &Key,
    token: Token,
    own_record: bool,
    value: &str,
    step: &str,
) -> Result<(), String> {
    let store = ctx.store.store();
    let renewed = store
        .renew(key, token, LONG)
        .await
        .map_err(store_error(step))?;
    ensure!(
        !renewed,
        "{step}: renew with a token that no longer holds the key acted"
    );
    let completed = store
        .complete(key, token, record(value), LONG)
        .await
        .map_err(store_error(step))?;
    // The holder whose record this is may be told its completion holds (a retry of a
    // complete whose reply was lost); the caller then checks the record is unchanged.
    ensure!(
        !completed || own_record,
        "{step}: complete with a token that no longer holds the key acted"
    );
    let released = store.release(key, token).await.map_err(store_error(step))?;
    ensure!(
        !released,
        "{step}: release with a token that no longer holds the key acted"
    );
    Ok(())
}

/// Completes `key` with `value`, which must be stored.
pub(super) async fn complete(
    ctx: &Ctx,
    key: &Key,
    token: Token,
    value: &str,
    ttl: Duration,
    step: &str,
) -> Result<(), String> {
    let stored = ctx
        .store
        .store()
        .complete(key, token, record(value), ttl)
        .await
        .map_err(store_error(step))?;
    ensure!(stored, "{step}: complete by the live holder was refused");
    Ok(())
}
