//! The model-based schedule check: a small reference model of one store's keys and holders,
//! and seeded random schedules of claim, complete, release, drop (the drop path:
//! `release_now`, else `release`), renew, lease expiry, takeover and forget. After every
//! step the store's answer must be one the model allows: no second live holder of a key, a
//! completed record never claimed again and always the value its own holder stored. Where
//! stores may differ (a lapsed claim nobody took over is still there on one store and gone
//! on another) the model allows both answers and follows the one given.

use std::sync::Arc;
use std::time::Duration;

use super::context::{Ctx, FINGERPRINT, LONG, key, record, store_error};
use crate::key::Key;
use crate::store::{Claim, Store, Token};

const ACTORS: usize = 3;
const KEYS: usize = 2;
const STEPS: usize = 24;
/// How long an expiring lease lasts, and how long `Expire` waits for it to lapse.
const SHORT: Duration = Duration::from_millis(1);
const LAPSE: Duration = Duration::from_millis(3);

#[derive(Clone, Copy, Debug)]
enum Op {
    Claim(usize, usize),
    Complete(usize),
    Release(usize),
    /// A dropped or panicking holder: `release_now`, else `release` (as idem's guard).
    Drop(usize),
    Renew(usize),
    /// The holder stalls past its lease (its lease is cut to 1 ms, then lapses).
    Expire(usize),
    Forget(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyState {
    Free,
    /// Claim number `claim` holds it; `live` until its lease lapsed.
    Held {
        claim: u64,
        live: bool,
    },
    Done {
        value: u64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Actor {
    Idle,
    Holding {
        key: usize,
        token: Token,
        claim: u64,
    },
}

struct Model {
    keys: [KeyState; KEYS],
    actors: [Actor; ACTORS],
    claims: u64,
    values: u64,
}

fn pick(rng: &mut fastrand::Rng, model: &Model) -> Op {
    let actor = rng.usize(..ACTORS);
    let r = rng.u8(..100);
    match model.actors[actor] {
        Actor::Idle if r < 85 => Op::Claim(actor, rng.usize(..KEYS)),
        Actor::Idle => Op::Forget(rng.usize(..KEYS)),
        Actor::Holding { key, .. } => match r {
            0..30 => Op::Complete(actor),
            30..42 => Op::Release(actor),
            42..54 => Op::Drop(actor),
            54..70 => Op::Renew(actor),
            70..92 => Op::Expire(actor),
            _ => Op::Forget(key),
        },
    }
}

/// A claim through the store's synchronous fast path when it has one (half the time, as the
/// runtime tries it first), else `claim`.
async fn claim(store: &dyn Store, key: &Key, use_fast_path: bool) -> Result<Claim, crate::Error> {
    if use_fast_path && let Some(answer) = store.claim_now(key, &FINGERPRINT, LONG) {
        return answer;
    }
    store.claim(key, &FINGERPRINT, LONG).await
}

/// Runs one schedule of `STEPS` steps on `store`, with keys of its own.
async fn schedule(store: &dyn Store, run: &str, seed: u64) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let keys: Vec<Key> = (0..KEYS as u64).map(|k| key(run, "model", k)).collect();
    let mut model = Model {
        keys: [KeyState::Free; KEYS],
        actors: [Actor::Idle; ACTORS],
        claims: 0,
        values: 0,
    };
    let mut history = Vec::new();
    for _ in 0..STEPS {
        let op = pick(&mut rng, &model);
        history.push(format!("{op:?}"));
        let fail = |history: &[String], what: String| {
            Err(format!(
                "seed {seed}: {what}\n  schedule: {}",
                history.join(", ")
            ))
        };
        let step = format!("seed {seed}, step {op:?}");
        match op {
            Op::Claim(a, k) => {
                let answer = claim(store, &keys[k], rng.bool())
                    .await
                    .map_err(store_error(&step))?;
                match (model.keys[k], answer) {
                    (KeyState::Done { value }, Claim::Completed(found)) => {
                        if found.value() != format!("O{value}").as_bytes() {
                            return fail(&history, format!("key {k} replayed another value"));
                        }
                    }
                    (KeyState::Held { live: true, .. }, Claim::InProgress(_)) => {}
                    (
                        KeyState::Free | KeyState::Held { live: false, .. },
                        Claim::Claimed { token, .. },
                    ) => {
                        model.claims += 1;
                        model.keys[k] = KeyState::Held {
                            claim: model.claims,
                            live: true,
                        };
                        model.actors[a] = Actor::Holding {
                            key: k,
                            token,
                            claim: model.claims,
                        };
                    }
                    (state, answer) => {
                        return fail(
                            &history,
                            format!("claim of key {k} in {state:?} answered {answer:?}"),
                        );
                    }
                }
            }
            Op::Complete(a) | Op::Release(a) | Op::Drop(a) | Op::Renew(a) | Op::Expire(a) => {
                let Actor::Holding {
                    key: k,
                    token,
                    claim,
                } = model.actors[a]
                else {
                    unreachable!("picked for a holder");
                };
                let own = match model.keys[k] {
                    KeyState::Held { claim: c, live } if c == claim => Some(live),
                    _ => None,
                };
                let key = &keys[k];
                let done = match op {
                    Op::Complete(_) => {
                        model.values += 1;
                        let value = model.values;
                        let stored = store
                            .complete(key, token, record(&format!("O{value}")), LONG)
                            .await
                            .map_err(store_error(&step))?;
                        model.actors[a] = Actor::Idle;
                        (stored, KeyState::Done { value })
                    }
                    Op::Release(_) => {
                        model.actors[a] = Actor::Idle;
                        let released = store
                            .release(key, token)
                            .await
                            .map_err(store_error(&step))?;
                        (released, KeyState::Free)
                    }
                    Op::Drop(_) => {
                        model.actors[a] = Actor::Idle;
                        let released = store.release_now(key, token)
                            || store
                                .release(key, token)
                                .await
                                .map_err(store_error(&step))?;
                        (released, KeyState::Free)
                    }
                    Op::Renew(_) => (
                        store
                            .renew(key, token, LONG)
                            .await
                            .map_err(store_error(&step))?,
                        KeyState::Held { claim, live: true },
                    ),
                    Op::Expire(_) => {
                        let lease = if own.is_some() { SHORT } else { LONG };
                        let renewed = store
                            .renew(key, token, lease)
                            .await
                            .map_err(store_error(&step))?;
                        if renewed && own.is_some() {
                            tokio::time::sleep(LAPSE).await;
                        }
                        (renewed, KeyState::Held { claim, live: false })
                    }
                    Op::Claim(..) | Op::Forget(_) => unreachable!("a holder's step"),
                };
                match (own, done) {
                    // The holder's own live claim: the step must act.
                    (Some(true), (true, next)) => model.keys[k] = next,
                    // Its lapsed claim that nobody took over: still there (act), or gone
                    // (a no-op that leaves the key free, and never writes to it).
                    (Some(false), (true, next)) => {
                        model.keys[k] = match next {
                            // Renewing a lapsed claim that is still there revives it.
                            KeyState::Held { claim, .. } if matches!(op, Op::Renew(_)) => {
                                KeyState::Held { claim, live: true }
                            }
                            other => other,
                        }
                    }
                    (Some(false), (false, _)) => model.keys[k] = KeyState::Free,
                    // Taken over, completed, released or forgotten since: fenced out.
                    (None, (false, _)) => {}
                    (own, (acted, _)) => {
                        return fail(
                            &history,
                            format!(
                                "{op:?} on key {k} in {:?} (own claim: {own:?}) answered {acted}",
                                model.keys[k]
                            ),
                        );
                    }
                }
            }
            Op::Forget(k) => {
                let forgot = store.forget(&keys[k]).await.map_err(store_error(&step))?;
                let expected = match model.keys[k] {
                    KeyState::Free => Some(false),
                    KeyState::Held { live: false, .. } => None,
                    _ => Some(true),
                };
                if expected.is_some_and(|e| e != forgot) {
                    return fail(
                        &history,
                        format!("forget of key {k} in {:?} answered {forgot}", model.keys[k]),
                    );
                }
                model.keys[k] = KeyState::Free;
            }
        }
    }
    Ok(())
}

/// Runs `count` schedules, `parallel` at a time, seeds `seed..seed + count`; the failure
/// of the lowest seed, and how many failed.
pub(super) async fn schedules(
    ctx: &Ctx,
    seed: u64,
    count: u64,
    parallel: usize,
) -> Result<(), String> {
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (store, gate, run) = (ctx.store.clone(), Arc::clone(&gate), Arc::clone(&ctx.run));
        tasks.spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .expect("the gate is never closed");
            let seed = seed.wrapping_add(i);
            (
                seed,
                schedule(store.store(), &format!("{run}-{i}"), seed).await,
            )
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (seed, result) = joined.map_err(|panic| format!("a schedule panicked: {panic}"))?;
        if let Err(failure) = result {
            failures.push((seed, failure));
        }
    }
    failures.sort_by_key(|(seed, _)| *seed);
    match failures.first() {
        None => Ok(()),
        Some((_, first)) => Err(format!(
            "{} of {count} schedules ({STEPS} steps, {ACTORS} holders, {KEYS} keys, seeds {seed}..{}) \
             broke the protocol, e.g. {first}",
            failures.len(),
            seed.wrapping_add(count)
        )),
    }
}
