//! The record protocol, the same on every store (`MokaStore` and `RedisStore`):
//!
//! - `forget` of a running claim: the holder's result is not stored, on both stores.
//! - A model-based schedule test: a small reference model of one store's keys and
//!   holders, and thousands of seeded random schedules of claim, complete, release,
//!   cancel/panic (the drop path: `release_now`, else `release`), renew, lease expiry,
//!   takeover and forget, run against each store. After every step the store's answer must
//!   be one the model allows: no second live holder of a key (at most one body runs), a
//!   completed record never claimed again (never reruns) and always the value its own
//!   holder stored (fencing). Where the stores may differ (a lapsed claim nobody took
//!   over is still there on `MokaStore` and gone on Redis) the model allows both answers
//!   and follows the one given.
//!
//! A failing schedule prints its seed; `IDEM_MODEL_SEED=<seed>` runs that schedule first.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_core::store::{Claim, Record, Token};
use idem_core::{Fingerprint, Key, KeyHasher, MokaStore, RedisStore, SharedStore, idempotent};
use tests::TestError;
use tests::redis_server::{RedisServer, shared_redis, unique};

/// The stores under test: a fresh `MokaStore`, and a `RedisStore` under a prefix of its own
/// (the shared Redis when `IDEM_REDIS_URL` is set, else one spawned for the test).
async fn stores() -> Vec<(&'static str, SharedStore, Option<RedisServer>)> {
    let mut out = vec![("moka", SharedStore::new(MokaStore::new()), None)];
    if let Some((url, guard)) = shared_redis() {
        // A generous response timeout: thousands of schedules at once on a busy CI machine
        // must not turn a slow reply into a failed schedule.
        let store = RedisStore::builder(url)
            .prefix(unique("protocol"))
            .response_timeout(Duration::from_secs(5))
            .build()
            .await
            .unwrap();
        out.push(("redis", SharedStore::new(store), guard));
    }
    out
}

// ---------------------------------------------------------------------------------------
// `forget` of a running claim.

struct Ctx {
    store: SharedStore,
    runs: AtomicUsize,
    key: Mutex<Option<String>>,
}

/// The lease is 300 ms, so the holder renews every 100 ms while its 500 ms body runs.
#[idempotent(key = "id", name = "tests.protocol.forget.v1", lease = "300ms", skip(ctx), store = &ctx.store)]
async fn forgotten(id: u64, ctx: &Ctx) -> Result<usize, TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    *ctx.key.lock().unwrap() = idem_core::current_key().map(|key| key.to_hex());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = id;
    Ok(run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_of_a_running_claim_means_its_result_is_not_stored_on_every_store() {
    for (name, store, _guard) in stores().await {
        let ctx = Arc::new(Ctx {
            store,
            runs: AtomicUsize::new(0),
            key: Mutex::new(None),
        });
        let holder = {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move { forgotten(1, &ctx).await })
        };
        // Past the holder's first renewal, so a renewal after the forget is tested too.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let key = ctx
            .key
            .lock()
            .unwrap()
            .clone()
            .expect("the body is running");
        let key = Key::from_hex(&key).unwrap();
        assert!(
            ctx.store.forget(&key).await.unwrap(),
            "{name}: the claim was there"
        );
        assert_eq!(
            holder.await.unwrap(),
            Ok(1),
            "{name}: the holder gets its result"
        );
        assert_eq!(
            forgotten(1, &ctx).await,
            Ok(2),
            "{name}: the forgotten holder's result was stored"
        );
        assert_eq!(
            forgotten(1, &ctx).await,
            Ok(2),
            "{name}: the rerun was stored"
        );
        assert_eq!(ctx.runs.load(SeqCst), 2, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// The model-based schedule test.

const ACTORS: usize = 3;
const KEYS: usize = 2;
const STEPS: usize = 24;
/// Leases that do not lapse by themselves during a schedule (only `Expire` lapses one).
const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(30);
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

fn record(fingerprint: Fingerprint, value: u64) -> Arc<Record> {
    Arc::new(Record::new(fingerprint, format!("O{value}").into_bytes()))
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

/// Runs one schedule of `STEPS` steps on `store`, with keys of its own.
async fn schedule(store: &SharedStore, id: &str, seed: u64) -> Result<(), String> {
    let store = store.store();
    let mut rng = fastrand::Rng::with_seed(seed);
    let hasher = KeyHasher::unkeyed();
    let keys: Vec<Key> = (0..KEYS)
        .map(|k| hasher.key(&["tests.protocol.model", id], &k).unwrap())
        .collect();
    let fp = Fingerprint::from_bytes([7; 32]);
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
        let err = |e: idem_core::Error| format!("seed {seed}: store error {e}");
        match op {
            Op::Claim(a, k) => {
                let answer = store.claim(&keys[k], &fp, LEASE).await.map_err(err)?;
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
                            .complete(key, token, record(fp, value), TTL)
                            .await
                            .map_err(err)?;
                        model.actors[a] = Actor::Idle;
                        (stored, KeyState::Done { value })
                    }
                    Op::Release(_) => {
                        model.actors[a] = Actor::Idle;
                        (
                            store.release(key, token).await.map_err(err)?,
                            KeyState::Free,
                        )
                    }
                    Op::Drop(_) => {
                        model.actors[a] = Actor::Idle;
                        let released = store.release_now(key, token)
                            || store.release(key, token).await.map_err(err)?;
                        (released, KeyState::Free)
                    }
                    Op::Renew(_) => (
                        store.renew(key, token, LEASE).await.map_err(err)?,
                        KeyState::Held { claim, live: true },
                    ),
                    Op::Expire(_) => {
                        let lease = if own.is_some() { SHORT } else { LEASE };
                        let renewed = store.renew(key, token, lease).await.map_err(err)?;
                        if renewed && own.is_some() {
                            tokio::time::sleep(LAPSE).await;
                        }
                        (renewed, KeyState::Held { claim, live: false })
                    }
                    _ => unreachable!(),
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
                let forgot = store.forget(&keys[k]).await.map_err(err)?;
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

/// Runs `count` schedules on `store`, `parallel` at a time, from `base` seed on.
async fn schedules(name: &str, store: SharedStore, count: u64, parallel: usize) {
    let base = std::env::var("IDEM_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..u64::MAX / 2));
    let started = Instant::now();
    let run = unique("model");
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (store, gate, run) = (store.clone(), Arc::clone(&gate), run.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            schedule(&store, &format!("{run}-{i}"), base + i).await
        });
    }
    let mut failures = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Err(failure) = result.unwrap() {
            failures.push(failure);
        }
    }
    println!(
        "{name}: {count} schedules of {STEPS} steps ({ACTORS} holders, {KEYS} keys) in {:?}, seeds {base}..{}",
        started.elapsed(),
        base + count
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {count} schedules broke the protocol, e.g.\n{}",
        failures.len(),
        failures[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_schedules_keep_one_holder_and_never_rerun_a_completed_record() {
    for (name, store, _guard) in stores().await {
        schedules(name, store, 10_000, 128).await;
    }
}
