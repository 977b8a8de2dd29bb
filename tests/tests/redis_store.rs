//! `RedisStore` in one process, against real Redis servers: round trips per call, the
//! record protocol (takeover, fencing), renewal, cancellation, corrupt values, and faults
//! (server down, server back, complete failing after the body ran).
//!
//! Tests that do not injure the server use `IDEM_REDIS_URL` when it is set, else their own
//! `redis-server`; fault tests always spawn their own on a free loopback port.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_core::store::Store;
use idem_core::{Error, KeyHasher, RedisStore, SharedStore, idempotent};
use tests::redis_server::{RedisServer, free_port, redis_available, shared_redis, unique};
use tests::{IdemKind, TestError, chain};

type Hook = Box<dyn FnOnce() + Send>;

/// What a test function's body sees: the store, a run counter, how long the body takes,
/// and an optional action run inside the body.
struct Ctx {
    store: SharedStore,
    runs: Arc<AtomicUsize>,
    body: Duration,
    hook: Mutex<Option<Hook>>,
}

impl Ctx {
    fn new(store: SharedStore, body: Duration) -> Ctx {
        Ctx {
            store,
            runs: Arc::new(AtomicUsize::new(0)),
            body,
            hook: Mutex::new(None),
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(SeqCst)
    }
}

async fn body(id: &str, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    let hook = ctx.hook.lock().unwrap().take();
    if let Some(hook) = hook {
        hook();
    }
    tokio::time::sleep(ctx.body).await;
    Ok(format!("receipt-{id}-{amount}-run{run}"))
}

/// Lease 1 s: waiters wait up to 10 s.
#[idempotent(key = "id", name = "tests.redis.charge.v1", lease = "1s", wait = "10s", skip(ctx), store = &ctx.store)]
async fn charge(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    body(&id, amount, ctx).await
}

/// The same function (same name and key), but a duplicate fails at once.
#[idempotent(key = "id", name = "tests.redis.charge.v1", lease = "1s", in_flight = "reject", skip(ctx), store = &ctx.store)]
async fn charge_or_reject(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    body(&id, amount, ctx).await
}

/// A long lease, so "released at once" and "freed by the lease" are far apart.
#[idempotent(key = "id", name = "tests.redis.long_lease.v1", lease = "20s", wait = "10s", skip(ctx), store = &ctx.store)]
async fn charge_long_lease(id: String, amount: u64, ctx: &Ctx) -> Result<String, TestError> {
    body(&id, amount, ctx).await
}

fn key_of(id: &str) -> idem_core::Key {
    KeyHasher::unkeyed()
        .key(&["tests.redis.charge.v1"], &id)
        .unwrap()
}

/// A store on `url` whose records live under `prefix` (one prefix per test).
async fn prefixed_store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .build()
        .await
        .unwrap()
}

async fn raw_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

macro_rules! shared_or_skip {
    () => {
        match shared_redis() {
            Some(found) => found,
            None => return,
        }
    };
}

macro_rules! spawned_or_skip {
    () => {{
        if !redis_available() {
            return;
        }
        RedisServer::spawn()
    }};
}

/// Starts counting the commands clients send: every command is logged by `SLOWLOG`
/// (threshold 0), which, unlike `INFO commandstats`, tells the commands a client sent from
/// those a Lua script ran inside Redis.
fn reset_counts(server: &RedisServer) {
    for args in [
        &["CONFIG", "SET", "slowlog-log-slower-than", "0"][..],
        &["CONFIG", "SET", "slowlog-max-len", "100000"],
        &["SLOWLOG", "RESET"],
    ] {
        server.command(args).unwrap();
    }
}

/// The commands the store sent since [`reset_counts`], oldest first, lower-case
/// (`"set"`, `"evalsha"`, ..): `SLOWLOG` entries of real clients (a script's own commands
/// are logged with the client `?:0`), without the test's own `CONFIG`/`SLOWLOG`/`INFO`/`PING`.
fn store_commands(server: &RedisServer) -> Vec<String> {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("SLOWLOG field {other:?}"),
    };
    let mut sent: Vec<String> = entries
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                panic!("SLOWLOG entry {entry:?}");
            };
            let redis::Value::Array(args) = &fields[3] else {
                panic!("SLOWLOG args {:?}", fields[3]);
            };
            let client = text(&fields[4]);
            let name = text(&args[0]).to_ascii_lowercase();
            let admin = ["slowlog", "config", "info", "ping"].contains(&name.as_str());
            (!client.starts_with('?') && !admin).then_some(name)
        })
        .collect();
    sent.reverse();
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_costs_two_commands_and_a_hit_one() {
    let server = spawned_or_skip!();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_millis(10));
    reset_counts(&server);

    let first = charge("rt-1".into(), 100, &ctx).await.unwrap();
    assert_eq!(
        store_commands(&server),
        ["set", "evalsha"],
        "a first call is claim (SET NX PX GET) + complete (EVALSHA), no script upload"
    );

    for hit in 1..=3 {
        reset_counts(&server);
        assert_eq!(charge("rt-1".into(), 100, &ctx).await.unwrap(), first);
        assert_eq!(store_commands(&server), ["set"], "hit {hit} is one SET");
    }
    assert_eq!(ctx.runs(), 1);
    println!(
        "commands: first call 2 (SET .. NX PX .. GET claim, EVALSHA complete), hit 1 (SET .. NX PX .. GET)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_come_back_after_a_script_flush() {
    let server = spawned_or_skip!();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_millis(1));
    server.command(&["SCRIPT", "FLUSH"]).unwrap();
    let first = charge("flush-1".into(), 1, &ctx).await.unwrap();
    assert_eq!(charge("flush-1".into(), 1, &ctx).await.unwrap(), first);
    assert_eq!(ctx.runs(), 1);
    // The NOSCRIPT fall-back loaded the script again: later completes are one EVALSHA.
    reset_counts(&server);
    charge("flush-2".into(), 1, &ctx).await.unwrap();
    assert_eq!(store_commands(&server), ["set", "evalsha"]);
    assert_eq!(ctx.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_waiters_share_one_claim_and_one_poller() {
    let server = spawned_or_skip!();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let ctx = Arc::new(Ctx::new(
        SharedStore::new(store),
        Duration::from_millis(300),
    ));
    reset_counts(&server);
    let callers: Vec<_> = (0..500)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move { charge("flight-1".into(), 5, &ctx).await })
        })
        .collect();
    let mut results = Vec::new();
    for caller in callers {
        results.push(caller.await.unwrap().unwrap());
    }
    assert_eq!(ctx.runs(), 1);
    assert!(results.iter().all(|r| *r == results[0]));
    let sent = store_commands(&server);
    println!(
        "500 local callers of one key: {} commands ({sent:?})",
        sent.len()
    );
    assert!(sent.len() <= 6, "500 local callers sent {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_key_is_the_hash_under_the_prefix_and_holds_no_raw_arguments() {
    let (url, _server) = shared_or_skip!();
    let prefix = unique("layout");
    let store = prefixed_store(&url, &prefix).await;
    let id = "customer-ada@example.com";
    let ctx = Ctx::new(SharedStore::new(store.clone()), Duration::from_millis(1));
    charge(id.into(), 4242, &ctx).await.unwrap();

    let mut conn = raw_conn(&url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected = format!("{prefix}:{}", key_of(id));
    assert_eq!(keys, vec![expected.clone()]);
    assert_eq!(store.redis_key(&key_of(id)), expected);
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&expected)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value[0], b'R');
    assert_eq!(value[1], idem_core::store::RECORD_VERSION);
    let fp = KeyHasher::unkeyed().fingerprint(&(id, 4242u64)).unwrap();
    assert_eq!(&value[2..34], fp.as_bytes(), "then the payload fingerprint");
    assert_eq!(
        &value[34..],
        format!("O\"receipt-{id}-4242-run1\"").as_bytes(),
        "then the encoded result, and nothing else"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&expected)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl > 23 * 3600 * 1000,
        "the default ttl is 24h, got {ttl} ms"
    );

    // forget removes it; the next call runs the body again.
    assert!(
        SharedStore::new(store.clone())
            .forget(&key_of(id))
            .await
            .unwrap()
    );
    assert!(!SharedStore::new(store).forget(&key_of(id)).await.unwrap());
    charge(id.into(), 4242, &ctx).await.unwrap();
    assert_eq!(ctx.runs(), 2);
}

/// A claim is the tag, the version and the token: no deadline after it (nothing read it).
/// A claim an earlier version wrote, with its deadline, is still a live claim, and its
/// holder's `renew`, `complete` and `release` still find it theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_holds_only_its_token_and_a_claim_with_a_deadline_is_still_read() {
    let (url, _server) = shared_or_skip!();
    let prefix = unique("claim-layout");
    let store = prefixed_store(&url, &prefix).await;
    let (key, other) = (key_of("claim-layout-1"), key_of("claim-layout-2"));
    let fp = KeyHasher::unkeyed().fingerprint(&1u64).unwrap();
    let lease = Duration::from_secs(10);
    let mut conn = raw_conn(&url).await;

    let idem_core::store::Claim::Claimed { token, .. } =
        store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("a free key is claimed");
    };
    let claim: Vec<u8> = redis::cmd("GET")
        .arg(store.redis_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected = [
        &[b'C', idem_core::store::RECORD_VERSION][..],
        format!("{:032x}", token.get()).as_bytes(),
    ]
    .concat();
    assert_eq!(claim, expected, "tag, version, token and nothing else");
    assert!(store.renew(&key, token, lease).await.unwrap());
    let renewed: Vec<u8> = redis::cmd("GET")
        .arg(store.redis_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(renewed, expected, "a renewal writes the same value");

    // As an earlier version wrote it: the deadline in ms after the token.
    let mut older = expected.clone();
    older.extend_from_slice(b"1767225600000");
    let _: () = redis::cmd("SET")
        .arg(store.redis_key(&other))
        .arg(&older)
        .arg("PX")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        store.claim(&other, &fp, lease).await.unwrap(),
        idem_core::store::Claim::InProgress(_)
    ));
    assert!(store.renew(&other, token, lease).await.unwrap());
    assert!(store.release(&other, token).await.unwrap());
    assert!(store.release(&key, token).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_claim_is_taken_over_after_its_lease_and_the_old_holder_is_fenced() {
    let (url, _server) = shared_or_skip!();
    let prefix = unique("fence");
    let store = prefixed_store(&url, &prefix).await;
    let key = key_of("fence-1");
    let fp = KeyHasher::unkeyed()
        .fingerprint(&("fence-1", 1u64))
        .unwrap();
    let lease = Duration::from_millis(600);
    let mut conn = raw_conn(&url).await;
    let pttl = async |conn: &mut redis::aio::MultiplexedConnection| -> i64 {
        redis::cmd("PTTL")
            .arg(format!("{prefix}:{key}"))
            .query_async(conn)
            .await
            .unwrap()
    };

    let idem_core::store::Claim::Claimed { token: old, .. } =
        store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("a free key is claimed");
    };
    let left = pttl(&mut conn).await;
    assert!(
        left > 0 && left <= 600,
        "the claim's expiry is its lease: {left} ms"
    );
    assert!(matches!(
        store.claim(&key, &fp, lease).await.unwrap(),
        idem_core::store::Claim::InProgress(_)
    ));
    // Half a lease later, a renewal gives it a whole lease again.
    tokio::time::sleep(lease / 2).await;
    assert!(store.renew(&key, old, lease).await.unwrap());
    let renewed = Instant::now();
    let left = pttl(&mut conn).await;
    assert!(left > 450 && left <= 600, "renewed to one lease: {left} ms");

    // Not taken over before the lease ends (probes up to 100 ms before it).
    while renewed.elapsed() + Duration::from_millis(100) < lease {
        assert!(
            matches!(
                store.claim(&key, &fp, lease).await.unwrap(),
                idem_core::store::Claim::InProgress(_)
            ),
            "taken over {:?} after the renewal, lease {lease:?}",
            renewed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Taken over once it ended.
    tokio::time::sleep((lease + Duration::from_millis(50)).saturating_sub(renewed.elapsed())).await;
    let idem_core::store::Claim::Claimed {
        token: new,
        taken_over,
    } = store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("a lapsed claim is taken over");
    };
    assert!(
        !taken_over,
        "on Redis a lapsed claim has expired: a takeover looks like a first claim"
    );
    assert_ne!(old, new);

    // The old holder can neither renew, nor complete, nor release.
    let stale = Arc::new(idem_core::store::Record::new(fp, b"O\"old\"".to_vec()));
    assert!(!store.renew(&key, old, lease).await.unwrap());
    assert!(
        !store
            .complete(&key, old, Arc::clone(&stale), Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(!store.release(&key, old).await.unwrap());
    let fresh = Arc::new(idem_core::store::Record::new(fp, b"O\"new\"".to_vec()));
    assert!(
        store
            .complete(&key, new, fresh, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !store.release(&key, new).await.unwrap(),
        "a completed record is not a claim"
    );
    assert!(
        !store
            .complete(&key, old, stale, Duration::from_secs(60))
            .await
            .unwrap(),
        "nor can it overwrite the successor's record"
    );
    assert!(!store.renew(&key, old, lease).await.unwrap());
    match store.claim(&key, &fp, lease).await.unwrap() {
        idem_core::store::Claim::Completed(record) => assert_eq!(record.value(), b"O\"new\""),
        other => panic!("expected the new holder's record, got {other:?}"),
    }
}

/// A holder whose key no longer holds its token — forgotten by an operator, or its lease
/// lapsed — has lost the claim: it can neither renew it nor store its result, so nothing
/// is written to the absent key (as on `MokaStore`, and as `forget` promises).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_or_lapsed_claim_can_no_longer_be_renewed_or_completed() {
    let (url, _server) = shared_or_skip!();
    let store = prefixed_store(&url, &unique("absent")).await;
    let fp = KeyHasher::unkeyed().fingerprint(&("absent", 1u64)).unwrap();
    let lease = Duration::from_millis(100);
    let record = Arc::new(idem_core::store::Record::new(fp, b"O\"late\"".to_vec()));
    let mut raw = raw_conn(&url).await;

    for (case, forget) in [("forgotten", true), ("lapsed", false)] {
        let key = key_of(&format!("absent-{case}"));
        let idem_core::store::Claim::Claimed { token, .. } =
            store.claim(&key, &fp, lease).await.unwrap()
        else {
            panic!("a free key is claimed");
        };
        if forget {
            assert!(store.forget(&key).await.unwrap());
        } else {
            tokio::time::sleep(lease * 2).await;
        }
        assert!(
            !store
                .renew(&key, token, Duration::from_secs(5))
                .await
                .unwrap(),
            "{case}: renew of a lost claim"
        );
        assert!(
            !store
                .complete(&key, token, Arc::clone(&record), Duration::from_secs(60))
                .await
                .unwrap(),
            "{case}: complete of a lost claim"
        );
        let exists: u64 = redis::cmd("EXISTS")
            .arg(store.redis_key(&key))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(exists, 0, "{case}: nothing was written to the absent key");
        assert!(matches!(
            store.claim(&key, &fp, lease).await.unwrap(),
            idem_core::store::Claim::Claimed { .. }
        ));
    }

    // A stale token does not complete a key someone else holds.
    let key = key_of("absent-retaken");
    let idem_core::store::Claim::Claimed { token, .. } =
        store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("a free key is claimed");
    };
    assert!(store.release(&key, token).await.unwrap());
    let idem_core::store::Claim::Claimed { token: other, .. } =
        store.claim(&key, &fp, lease).await.unwrap()
    else {
        panic!("a released key is claimed");
    };
    assert!(
        !store
            .complete(&key, token, record, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(store.release(&key, other).await.unwrap());
}

/// Forgets its own key on the first run, as an operator would while it runs.
#[idempotent(key = "id", name = "tests.redis.forgotten.v1", lease = "1s", wait = "10s", skip(ctx), store = &ctx.store)]
async fn forgotten_while_running(id: String, ctx: &Ctx) -> Result<String, TestError> {
    let run = ctx.runs.fetch_add(1, SeqCst) + 1;
    if run == 1 {
        let key = idem_core::current_key().unwrap();
        assert!(ctx.store.forget(&key).await.unwrap(), "the claim was there");
    }
    Ok(format!("{id}-run{run}"))
}

/// `forget` of a running call: the caller still gets its result, but it is not stored, so
/// the next call runs the body again (the README's promise, as on `MokaStore`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_of_a_running_call_means_its_result_is_not_stored() {
    let (url, _server) = shared_or_skip!();
    let store = prefixed_store(&url, &unique("forget-running")).await;
    let ctx = Ctx::new(SharedStore::new(store), Duration::ZERO);
    assert_eq!(
        forgotten_while_running("f".into(), &ctx).await.unwrap(),
        "f-run1"
    );
    assert_eq!(
        forgotten_while_running("f".into(), &ctx).await.unwrap(),
        "f-run2",
        "the forgotten result was not stored"
    );
    assert_eq!(
        forgotten_while_running("f".into(), &ctx).await.unwrap(),
        "f-run2"
    );
    assert_eq!(ctx.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_three_times_longer_than_its_lease_is_not_taken_over() {
    let (url, _server) = shared_or_skip!();
    let prefix = unique("renew");
    let holder_store = prefixed_store(&url, &prefix).await;
    // A second store (its own connection, no shared single-flight) plays another process.
    let prober_store = prefixed_store(&url, &prefix).await;
    let holder = Arc::new(Ctx::new(
        SharedStore::new(holder_store),
        Duration::from_millis(3000),
    ));
    let mut prober = Ctx::new(SharedStore::new(prober_store), Duration::from_millis(1));
    prober.runs = Arc::clone(&holder.runs);

    let started = Instant::now();
    let running = {
        let holder = Arc::clone(&holder);
        tokio::spawn(async move { charge("renew-1".into(), 9, &holder).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut probes = 0;
    while started.elapsed() < Duration::from_millis(2800) {
        match charge_or_reject("renew-1".into(), 9, &prober).await {
            Err(TestError::Idem(IdemKind::InProgress)) => probes += 1,
            other => panic!("probe at {:?} got {other:?}", started.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(probes >= 20, "{probes} probes");
    let result = running.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(3000));
    assert_eq!(holder.runs(), 1, "the body ran once, never taken over");
    assert_eq!(
        charge_or_reject("renew-1".into(), 9, &prober)
            .await
            .unwrap(),
        result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_releases_its_claim_at_once() {
    let (url, _server) = shared_or_skip!();
    let store = prefixed_store(&url, &unique("cancel")).await;
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_secs(30));
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        charge_long_lease("cancel-1".into(), 3, &ctx),
    )
    .await;
    assert!(cancelled.is_err(), "the call was cancelled");
    assert_eq!(ctx.runs(), 1);

    let mut quick = Ctx::new(ctx.store.clone(), Duration::from_millis(1));
    quick.runs = Arc::clone(&ctx.runs);
    let retry_started = Instant::now();
    let result = charge_long_lease("cancel-1".into(), 3, &quick)
        .await
        .unwrap();
    let took = retry_started.elapsed();
    assert_eq!(result, "receipt-cancel-1-3-run2");
    assert!(
        took < Duration::from_secs(2),
        "the retry waited {took:?} (lease is 20 s)"
    );
    println!("retry after cancellation ran after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_mismatch_is_refused_and_an_identical_payload_replays() {
    let (url, _server) = shared_or_skip!();
    let store = prefixed_store(&url, &unique("payload")).await;
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_millis(1));
    let first = charge("pay-1".into(), 100, &ctx).await.unwrap();
    assert_eq!(
        charge("pay-1".into(), 200, &ctx).await,
        Err(TestError::Idem(IdemKind::PayloadMismatch))
    );
    for _ in 0..3 {
        assert_eq!(charge("pay-1".into(), 100, &ctx).await.unwrap(), first);
    }
    assert_eq!(ctx.runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_value_is_a_codec_error_and_the_body_does_not_run() {
    let (url, _server) = shared_or_skip!();
    let prefix = unique("corrupt");
    let store = prefixed_store(&url, &prefix).await;
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_millis(1));
    let mut conn = raw_conn(&url).await;
    let redis_key = |id: &str| format!("{prefix}:{}", key_of(id));

    let corrupt: [(&str, &[u8]); 5] = [
        ("garbage", b"not an idem value at all"),
        ("empty", b""),
        ("short-record", b"R\x01abc"),
        ("future-version", b"R\x09aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaO1"),
        (
            "bad-claim",
            b"C\x0100000000000000000000000000000000notanumber",
        ),
    ];
    for (id, bytes) in corrupt {
        let _: () = redis::cmd("SET")
            .arg(redis_key(id))
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            charge(id.into(), 1, &ctx).await,
            Err(TestError::Idem(IdemKind::Codec)),
            "{id}"
        );
    }
    // A valid record whose outcome bytes are not JSON of the result type.
    let fp = KeyHasher::unkeyed()
        .fingerprint(&("bad-json", 1u64))
        .unwrap();
    let mut record = vec![b'R', idem_core::store::RECORD_VERSION];
    record.extend_from_slice(fp.as_bytes());
    record.extend_from_slice(b"O{\"not\":\"a string\"");
    let _: () = redis::cmd("SET")
        .arg(redis_key("bad-json"))
        .arg(record)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        charge("bad-json".into(), 1, &ctx).await,
        Err(TestError::Idem(IdemKind::Codec))
    );
    // A key of another type.
    let _: () = redis::cmd("HSET")
        .arg(redis_key("a-hash"))
        .arg("f")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        charge("a-hash".into(), 1, &ctx).await,
        Err(TestError::Idem(IdemKind::Codec))
    );
    assert_eq!(ctx.runs(), 0, "a corrupt record never reruns the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_is_a_store_error_well_under_a_second() {
    if !redis_available() {
        return;
    }
    let port = free_port(false);
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    println!("connect to a refused port: Error::Store after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_fails_closed_and_a_restart_on_the_same_port_recovers() {
    let mut server = spawned_or_skip!();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_millis(1));
    let before = charge("down-0".into(), 1, &ctx).await.unwrap();
    assert_eq!(ctx.runs(), 1);

    server.stop();
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        let result = charge(format!("down-{}", i + 1), 1, &ctx).await;
        let took = started.elapsed();
        worst = worst.max(took);
        assert_eq!(result, Err(TestError::Idem(IdemKind::Store)), "call {i}");
        assert!(took < Duration::from_millis(900), "call {i} took {took:?}");
    }
    assert_eq!(ctx.runs(), 1, "no body ran while the store was down");
    println!("server down: Error::Store within {worst:?} (worst of 10 calls)");

    server.restart();
    let restarted = Instant::now();
    let mut recovered = None;
    for _ in 0..100 {
        match charge("down-after".into(), 1, &ctx).await {
            Ok(receipt) => {
                recovered = Some(receipt);
                break;
            }
            Err(TestError::Idem(IdemKind::Store)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    let recovered = recovered.expect("calls succeed again after the restart");
    println!("server back: first success after {:?}", restarted.elapsed());
    assert!(restarted.elapsed() < Duration::from_secs(2));
    assert_eq!(recovered, "receipt-down-after-1-run2");
    assert_eq!(
        charge("down-after".into(), 1, &ctx).await.unwrap(),
        recovered
    );
    // The restarted server is empty: the record from before is gone and runs again.
    assert_ne!(charge("down-0".into(), 1, &ctx).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_timed_out_is_released_once_the_store_answers() {
    let server = spawned_or_skip!();
    let store = RedisStore::builder(server.url())
        .response_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_millis(1));

    // A frozen server: the claim is sent, its reply never comes in time.
    server.signal("STOP");
    let started = Instant::now();
    let result = charge_long_lease("frozen-1".into(), 1, &ctx).await;
    let took = started.elapsed();
    assert_eq!(result, Err(TestError::Idem(IdemKind::Store)));
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(ctx.runs(), 0, "the body did not run unprotected");
    println!("frozen server: Error::Store after {took:?} (response timeout 300 ms)");
    // Frozen well past the timeout, as a stalled server is.
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.signal("CONT");

    // The server applies the queued claim when it wakes up, then its release: the key is
    // free again at once, not held for the claim's 20 s lease with nobody running.
    let retried = Instant::now();
    let receipt = charge_long_lease("frozen-1".into(), 1, &ctx).await.unwrap();
    let waited = retried.elapsed();
    assert_eq!(receipt, "receipt-frozen-1-1-run1");
    assert!(
        waited < Duration::from_millis(700),
        "the timed-out claim held the key for {waited:?}"
    );
    println!("after the freeze: the retry ran after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_failing_after_the_body_ran_still_returns_the_result() {
    let mut server = spawned_or_skip!();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let ctx = Ctx::new(SharedStore::new(store), Duration::from_millis(50));
    let port = server.port();
    *ctx.hook.lock().unwrap() = Some(Box::new(move || {
        // The store goes away while the body runs: `complete` will fail.
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "SHUTDOWN", "NOSAVE"])
            .output();
    }));
    let result = charge("complete-fails".into(), 7, &ctx).await;
    assert_eq!(result.unwrap(), "receipt-complete-fails-7-run1");
    assert_eq!(ctx.runs(), 1);
    server.restart();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_url_is_a_store_error() {
    // Only meaningful when the variable is not set for this process.
    if std::env::var("IDEM_REDIS_URL").is_ok() {
        return;
    }
    let err = RedisStore::from_env().await.unwrap_err();
    assert!(matches!(err, Error::Store(_)));
    assert!(chain(&err).contains("IDEM_REDIS_URL"), "{}", chain(&err));
}
