//! The concurrency stress check: in each round, holders race on a few keys with seeded
//! choices (claim, pause, renew, then complete or release). Leases never lapse and nothing
//! is forgotten, so every answer is determined: a granted claim while another holder holds
//! the key, a claim granted on a completed key, a live holder's step refused, or a replay
//! of anything but the one stored value is a broken protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::context::{Ctx, FINGERPRINT, LONG, key, record, store_error};
use crate::store::Claim;

const HOLDERS: u64 = 8;
const KEYS: u64 = 2;
const STEPS: u64 = 12;

/// What the holders of one round saw, shared between them.
#[derive(Default)]
struct Seen {
    /// The holder that holds each key now (set after its claim was granted, cleared before
    /// it completes or releases).
    holder: HashMap<u64, u64>,
    /// The value whose `complete` was accepted, per key.
    stored: HashMap<u64, String>,
    /// Every value replayed, per key (checked at the end of the round against `stored`).
    replayed: Vec<(u64, String)>,
}

/// Runs `rounds` rounds, seeds `seed..seed + rounds`.
pub(super) async fn rounds(ctx: &Ctx, seed: u64, rounds: u64) -> Result<(), String> {
    for round in 0..rounds {
        let seed = seed.wrapping_add(round);
        one_round(ctx, round, seed)
            .await
            .map_err(|detail| format!("round {round} (seed {seed}): {detail}"))?;
    }
    Ok(())
}

async fn one_round(ctx: &Ctx, round: u64, seed: u64) -> Result<(), String> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let run = format!("{}-{round}", ctx.run);
    let mut holders = tokio::task::JoinSet::new();
    for holder in 0..HOLDERS {
        let (store, seen, run) = (ctx.store.clone(), Arc::clone(&seen), run.clone());
        let mut rng = fastrand::Rng::with_seed(seed ^ holder.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        holders.spawn(async move {
            let store = store.store();
            for step in 0..STEPS {
                let k = rng.u64(..KEYS);
                let key = key(&run, "stress", k);
                let at = format!("holder {holder}, step {step}, key {k}");
                let was_done = seen
                    .lock()
                    .expect("no panics while locked")
                    .stored
                    .contains_key(&k);
                let answer = store
                    .claim(&key, &FINGERPRINT, LONG)
                    .await
                    .map_err(store_error(&at))?;
                let token = match answer {
                    Claim::Claimed { token, .. } => token,
                    Claim::InProgress(_) => continue,
                    Claim::Completed(found) => {
                        let value = String::from_utf8_lossy(found.value()).into_owned();
                        seen.lock()
                            .expect("no panics while locked")
                            .replayed
                            .push((k, value));
                        continue;
                    }
                };
                {
                    let mut seen = seen.lock().expect("no panics while locked");
                    if was_done {
                        return Err(format!("{at}: a claim of a completed key was granted"));
                    }
                    if let Some(other) = seen.holder.insert(k, holder) {
                        return Err(format!(
                            "{at}: the claim was granted while holder {other} held the key"
                        ));
                    }
                }
                // Hold a moment, so other holders' claims meet the live claim.
                if rng.bool() {
                    tokio::time::sleep(Duration::from_millis(rng.u64(..3))).await;
                } else {
                    tokio::task::yield_now().await;
                }
                if rng.u8(..4) == 0 {
                    let renewed = store
                        .renew(&key, token, LONG)
                        .await
                        .map_err(store_error(&at))?;
                    if !renewed {
                        return Err(format!("{at}: renew by the live holder was refused"));
                    }
                }
                let completing = rng.bool();
                let value = format!("{holder}-{step}");
                seen.lock()
                    .expect("no panics while locked")
                    .holder
                    .remove(&k);
                let acted = if completing {
                    store.complete(&key, token, record(&value), LONG).await
                } else {
                    store.release(&key, token).await
                }
                .map_err(store_error(&at))?;
                if !acted {
                    return Err(format!(
                        "{at}: {} by the live holder was refused",
                        if completing { "complete" } else { "release" }
                    ));
                }
                if completing {
                    let mut seen = seen.lock().expect("no panics while locked");
                    if let Some(first) = seen.stored.insert(k, value) {
                        return Err(format!(
                            "{at}: a second completion was accepted (the first stored {first:?})"
                        ));
                    }
                }
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = holders.join_next().await {
        joined.map_err(|panic| format!("a holder panicked: {panic}"))??;
    }
    let seen = seen.lock().expect("no panics while locked");
    for (k, value) in &seen.replayed {
        match seen.stored.get(k) {
            Some(stored) if stored == value => {}
            stored => {
                return Err(format!(
                    "key {k} replayed {value:?}, but the one accepted completion stored {stored:?}"
                ));
            }
        }
    }
    Ok(())
}
