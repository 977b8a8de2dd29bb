//! Redis benchmarks: idem on `RedisStore` beside raw commands on the same connection type
//! and `cached`'s `AsyncRedisCache`. Spawns its own `redis-server` on a free loopback port.
//! `cargo bench -p idem-core --features bench-redis --bench redis`.
//!
//! A loopback round trip flips between ~27 µs and ~110 µs from batch to batch on this
//! machine, so latency is measured in a paired loop: each iteration runs the raw command
//! and the idem call back to back (alternating which goes first), and the table gives the
//! median per-iteration extra. Command counts come from `SLOWLOG` (client commands) and
//! `INFO commandstats` (everything Redis ran, script internals included). The private
//! server runs with persistence off (`--save ''`, `--appendonly no`), and the bench prints
//! the machine first. `--profile-hit N`, `--profile-raw-claim N`, `--profile-moka-hit N`,
//! `--profile-first N` and `--profile-raw-pair N` run one path N times for callgrind (see
//! `run`).
#![allow(missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cached::macros::concurrent_cached;
use idem_core::__private::{InFlight, Spec};
use idem_core::{Key, RedisStore, SharedStore, idempotent};
use redis::aio::ConnectionManager;

use common::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static STORE: OnceLock<SharedStore> = OnceLock::new();
static URL: OnceLock<String> = OnceLock::new();

fn store() -> &'static SharedStore {
    STORE.get().expect("store set up")
}

#[idempotent(name = "bench.redis", ttl = "10m", store = store())]
async fn charge_redis(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

static NEAR_STORE: OnceLock<SharedStore> = OnceLock::new();
static MOKA_STORE: OnceLock<SharedStore> = OnceLock::new();

/// The same function on a `RedisStore` with a near-cache ...
#[idempotent(name = "bench.redis", ttl = "10m", store = NEAR_STORE.get().expect("near store"))]
async fn charge_near(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

/// ... and on a `MokaStore`, the in-memory baseline of a near-cached hit.
#[idempotent(name = "bench.redis", ttl = "10m", store = MOKA_STORE.get().expect("moka store"))]
async fn charge_moka(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(name = "bench.redis.slow", ttl = "10m", store = store())]
async fn slow_redis(req: &Request) -> Result<Receipt, BenchError> {
    SLOW_RUNS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(body(req))
}

#[concurrent_cached(
    map_error = |e| BenchError(format!("{e:?}")),
    ty = "cached::AsyncRedisCache<String, Receipt>",
    create = {
        cached::AsyncRedisCache::builder("cached-bench")
            .ttl(Duration::from_secs(600))
            .connection_string(URL.get().expect("url"))
            .connection_manager(true)
            .build()
            .await
            .expect("AsyncRedisCache")
    },
    convert = { req.id.clone() }
)]
async fn charge_cached_redis(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

static SPEC: Spec = Spec {
    name: "bench.redis",
    ttl: Duration::from_secs(600),
    lease: Duration::from_secs(30),
    wait: Duration::from_secs(60),
    in_flight: InFlight::Wait,
};

/// The key idem derives for `charge_redis(req)`.
fn key_of(req: &Request) -> Key {
    #[allow(clippy::needless_borrows_for_generic_args)]
    idem_core::__private::derive(
        &SPEC,
        idem_core::__private::Site::named(),
        None::<&()>,
        &(idem_core::__private::arg(req),),
    )
    .unwrap()
    .0
}

/// A `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connection(url: &str) -> ConnectionManager {
    let client = redis::Client::open(url).unwrap();
    ConnectionManager::new(client).await.unwrap()
}

/// `INFO commandstats` as (command, calls), without the bench's own INFO/CONFIG.
async fn command_stats(admin: &mut ConnectionManager) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let line = line.strip_prefix("cmdstat_")?;
            let (name, rest) = line.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| {
            name != "info" && !name.starts_with("config") && !name.starts_with("slowlog")
        })
        .collect()
}

/// `INFO commandstats` as (command, (calls, usec_per_call)), without the bench's own
/// INFO/CONFIG/SLOWLOG.
async fn server_time(admin: &mut ConnectionManager) -> BTreeMap<String, (u64, f64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let line = line.strip_prefix("cmdstat_")?;
            let (name, rest) = line.split_once(':')?;
            let field = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            Some((
                name.to_owned(),
                (field("calls=")? as u64, field("usec_per_call=")?),
            ))
        })
        .filter(|(name, _)| {
            name != "info" && !name.starts_with("config") && !name.starts_with("slowlog")
        })
        .collect()
}

/// `name=µs per call (calls)` of each command Redis ran since the last reset.
fn fmt_server_time(stats: &BTreeMap<String, (u64, f64)>) -> String {
    stats
        .iter()
        .map(|(name, (calls, usec))| format!("{name} {usec:.2} µs ({calls})"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn set_slowlog(admin: &mut ConnectionManager, us: i64) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(us)
        .query_async(admin)
        .await
        .unwrap();
}

/// Resets `INFO commandstats` and starts logging every command in `SLOWLOG`, which (unlike
/// commandstats) tells the commands a client sent from those a Lua script ran inside.
async fn start_counting(admin: &mut ConnectionManager) {
    reset_stats(admin).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-max-len")
        .arg(100_000)
        .query_async(admin)
        .await
        .unwrap();
    set_slowlog(admin, 0).await;
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(admin)
        .await
        .unwrap();
}

/// The commands clients sent since [`start_counting`] (oldest first, each as its
/// arguments), without the bench's own; stops logging.
async fn client_commands(admin: &mut ConnectionManager) -> Vec<Vec<Vec<u8>>> {
    let log: redis::Value = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(admin)
        .await
        .unwrap();
    set_slowlog(admin, 10_000).await;
    let bulk = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let redis::Value::Array(entries) = log else {
        panic!("SLOWLOG GET: {log:?}");
    };
    let mut sent: Vec<Vec<Vec<u8>>> = entries
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let redis::Value::Array(args) = fields.get(3)? else {
                return None;
            };
            // A script's own commands are logged with the client `?:0`.
            let client = bulk(fields.get(4)?)?;
            let args: Vec<Vec<u8>> = args.iter().filter_map(bulk).collect();
            let name = String::from_utf8_lossy(args.first()?).to_ascii_lowercase();
            let admin = ["slowlog", "config", "info", "ping"].contains(&name.as_str());
            (!client.starts_with(b"?") && !admin).then_some(args)
        })
        .collect();
    sent.reverse();
    sent
}

async fn reset_stats(admin: &mut ConnectionManager) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(admin)
        .await
        .unwrap();
}

/// Stops counting: the commands clients sent (from `SLOWLOG`: each EVALSHA once, whatever
/// the script calls inside), their names, and everything Redis counted (commandstats,
/// script internals included).
async fn summarize(admin: &mut ConnectionManager) -> (u64, String) {
    let sent = client_commands(admin).await;
    let names: Vec<String> = sent
        .iter()
        .map(|args| String::from_utf8_lossy(&args[0]).to_ascii_lowercase())
        .collect();
    let detail = command_stats(admin)
        .await
        .iter()
        .map(|(name, calls)| format!("{name}={calls}"))
        .collect::<Vec<_>>()
        .join(" ");
    let shown: Vec<String> = names.iter().take(6).cloned().collect();
    let more = if names.len() > shown.len() {
        " …"
    } else {
        ""
    };
    (
        sent.len() as u64,
        format!("sent: {}{more}; counted: {detail}", shown.join(" ")),
    )
}

async fn used_memory(admin: &mut ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

const PAIRS: usize = 3_000;

/// A pair whose both halves take less than this (ns) ran with the vCPUs awake; a pair whose
/// both halves take more, idle.
const AWAKE_BELOW_NS: f64 = 60_000.0;

/// Medians of one paired loop (ns).
#[derive(Clone, Copy)]
struct Paired {
    baseline: f64,
    measured: f64,
    extra: f64,
    /// Pairs with both halves under `AWAKE_BELOW_NS`, and their extra.
    awake: usize,
    extra_awake: f64,
    /// Pairs with both halves over it, and their extra.
    idle: usize,
    extra_idle: f64,
}

/// Runs `baseline(i)` and `measured(i)` back to back `PAIRS` times, alternating which goes
/// first; returns the medians of the baseline, of the measured, and of the per-iteration
/// extra, overall and split by whether the baseline round trip was fast (vCPUs awake).
async fn paired<A, B, FA, FB>(mut baseline: A, mut measured: B) -> Paired
where
    A: FnMut(usize) -> FA,
    B: FnMut(usize) -> FB,
    FA: std::future::Future<Output = ()>,
    FB: std::future::Future<Output = ()>,
{
    let mut extra = Vec::with_capacity(PAIRS);
    let mut base_t = Vec::with_capacity(PAIRS);
    let mut meas_t = Vec::with_capacity(PAIRS);
    for i in 0..PAIRS {
        let (b, m) = if i % 2 == 0 {
            let t = Instant::now();
            baseline(i).await;
            let b = t.elapsed().as_nanos() as f64;
            let t = Instant::now();
            measured(i).await;
            (b, t.elapsed().as_nanos() as f64)
        } else {
            let t = Instant::now();
            measured(i).await;
            let m = t.elapsed().as_nanos() as f64;
            let t = Instant::now();
            baseline(i).await;
            (t.elapsed().as_nanos() as f64, m)
        };
        base_t.push(b);
        meas_t.push(m);
        extra.push(m - b);
    }
    let (mut awake, mut idle): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for ((b, m), e) in base_t.iter().zip(&meas_t).zip(&extra) {
        // Both halves of the pair in the same regime; mixed pairs count only overall.
        if b.max(*m) < AWAKE_BELOW_NS {
            awake.push(*e);
        } else if b.min(*m) >= AWAKE_BELOW_NS {
            idle.push(*e);
        }
    }
    let med = |v: &mut Vec<f64>| if v.is_empty() { f64::NAN } else { median(v) };
    Paired {
        baseline: median(&mut base_t),
        measured: median(&mut meas_t),
        extra: median(&mut extra),
        awake: awake.len(),
        extra_awake: med(&mut awake),
        idle: idle.len(),
        extra_idle: med(&mut idle),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    common::machine::print_machine();
    let server = Server::start();
    let url = server.url();
    URL.set(url.clone()).unwrap();
    // A profile runs on the calling thread alone: worker threads that park and steal
    // between replies add instructions that vary from run to run.
    let profiling = std::env::args().any(|a| a.starts_with("--profile-"));
    let rt = if profiling {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    }
    .enable_all()
    .build()
    .unwrap();
    rt.block_on(run(url.clone()));
    if !profiling {
        near_cache(&rt, &url);
    }
    drop(server);
}

/// Criterion group `redis_near_cache_hit`: a repeat hit answered by `RedisStore`'s
/// near-cache, beside a `MokaStore` hit (target ≤ 1.5×) and a plain `RedisStore` hit;
/// then the Redis commands 10,000 near-cached hits sent (`INFO commandstats`).
fn near_cache(rt: &tokio::runtime::Runtime, url: &str) {
    let req = request("redis-near-hit");
    rt.block_on(async {
        let near = RedisStore::builder(url)
            .near_cache(64 << 20, Duration::from_secs(60))
            .build()
            .await
            .expect("near-cached RedisStore");
        NEAR_STORE.set(SharedStore::new(near)).ok().unwrap();
        MOKA_STORE
            .set(SharedStore::new(idem_core::MokaStore::new()))
            .ok()
            .unwrap();
        charge_near(&req).await.unwrap();
        charge_moka(&req).await.unwrap();
        charge_redis(&req).await.unwrap();
    });
    let mut c = criterion::Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("redis_near_cache_hit");
    g.bench_function("idem RedisStore, near-cached hit", |b| {
        b.to_async(rt).iter(|| charge_near(black_box(&req)))
    });
    g.bench_function("idem MokaStore hit (baseline)", |b| {
        b.to_async(rt).iter(|| charge_moka(black_box(&req)))
    });
    g.bench_function("idem RedisStore hit, no near-cache (one round trip)", |b| {
        b.to_async(rt).iter(|| charge_redis(black_box(&req)))
    });
    g.finish();
    let sent = rt.block_on(async {
        let mut admin = connection(url).await;
        reset_stats(&mut admin).await;
        for _ in 0..10_000 {
            black_box(charge_near(&req).await.unwrap());
        }
        command_stats(&mut admin).await
    });
    let sent: Vec<String> = sent
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "config" | "slowlog"))
        .map(|(name, calls)| format!("{name} {calls}"))
        .collect();
    println!(
        "\nRedis commands during 10,000 near-cached hits: {}",
        if sent.is_empty() {
            "none".to_owned()
        } else {
            sent.join(", ")
        }
    );
    c.final_summary();
}

async fn run(url: String) {
    let redis_store = RedisStore::connect(&url).await.expect("RedisStore");
    let hit_req = request("redis-hit");
    let hit_key = redis_store.redis_key(&key_of(&hit_req));
    STORE.set(SharedStore::new(redis_store)).ok().unwrap();
    let mut raw = connection(&url).await;
    let mut admin = connection(&url).await;

    // `IDEM_BENCH_REDIS_PROFILE=1`: only the 64-task idem run, five times (for perf).
    let profile = std::env::var("IDEM_BENCH_REDIS_PROFILE").is_ok();
    charge_redis(&hit_req).await.unwrap();
    let lua_get = redis::Script::new("return redis.call('GET', KEYS[1])");
    let _: Option<Vec<u8>> = lua_get.key(&hit_key).invoke_async(&mut raw).await.unwrap();
    let lua_sha = lua_get.get_hash().to_owned();
    // `--profile-hit N`: N sequential hits, then exit (for callgrind). Beside it, the two
    // parts of a hit's instruction budget: `--profile-raw-claim N`, N raw
    // `SET .. NX PX .. GET` on the record over the same connection type, and
    // `--profile-moka-hit N`, N hits of the same function on a `MokaStore`.
    let args: Vec<String> = std::env::args().collect();
    let profiled = |flag: &str| {
        let i = args.iter().position(|a| a == flag)?;
        Some(args[i + 1].parse::<usize>().unwrap())
    };
    if let Some(n) = profiled("--profile-hit") {
        for _ in 0..n {
            black_box(charge_redis(&hit_req).await.unwrap());
        }
        return;
    }
    if let Some(n) = profiled("--profile-raw-claim") {
        for _ in 0..n {
            let v: Option<Vec<u8>> = redis::cmd("SET")
                .arg(&hit_key)
                .arg("claim-placeholder-of-50-bytes-xxxxxxxxxxxxxxxxxxxxx")
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .arg("GET")
                .query_async(&mut raw)
                .await
                .unwrap();
            black_box(v.unwrap());
        }
        return;
    }
    // `--profile-first N` and `--profile-raw-pair N`: N first calls on new keys, and N
    // hand-written claim + complete pairs (`SET NX PX`, `SET XX PX`).
    if let Some(n) = profiled("--profile-first") {
        let reqs: Vec<Request> = (0..n)
            .map(|i| request(format!("profile-first-{i}")))
            .collect();
        for req in &reqs {
            black_box(charge_redis(req).await.unwrap());
        }
        return;
    }
    if let Some(n) = profiled("--profile-raw-pair") {
        let value: Vec<u8> = redis::cmd("GET")
            .arg(&hit_key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let keys: Vec<String> = (0..n).map(|i| format!("profile-pair:{i}")).collect();
        for key in &keys {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg("claim-placeholder-of-50-bytes-xxxxxxxxxxxxxxxxxxxxx")
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query_async(&mut raw)
                .await
                .unwrap();
            let stored: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value.as_slice())
                .arg("XX")
                .arg("PX")
                .arg(600_000)
                .query_async(&mut raw)
                .await
                .unwrap();
            black_box((claimed.unwrap(), stored.unwrap()));
        }
        return;
    }
    if let Some(n) = profiled("--profile-moka-hit") {
        MOKA_STORE
            .set(SharedStore::new(idem_core::MokaStore::new()))
            .ok()
            .unwrap();
        charge_moka(&hit_req).await.unwrap();
        for _ in 0..n {
            black_box(charge_moka(&hit_req).await.unwrap());
        }
        return;
    }
    if !profile {
        counts_and_paired(&hit_req, &hit_key, &raw, &mut admin, &lua_sha).await;
    }

    // --- 64 tasks, distinct keys ----------------------------------------------------------
    const TASKS: usize = 64;
    const KEYS: usize = 16;
    const CALLS: usize = 400;
    let reqs: Vec<Arc<Vec<Request>>> = (0..TASKS)
        .map(|t| {
            Arc::new(
                (0..KEYS)
                    .map(|k| request(format!("redis-t{t}-k{k}")))
                    .collect(),
            )
        })
        .collect();
    let redis_keys: Vec<Arc<Vec<String>>> = reqs
        .iter()
        .map(|rs| {
            Arc::new(
                rs.iter()
                    .map(|r| format!("idem:{}", key_of(r).to_hex()))
                    .collect(),
            )
        })
        .collect();
    // Warm: every key stored by idem and by cached.
    for rs in &reqs {
        for r in rs.iter() {
            charge_redis(r).await.unwrap();
            charge_cached_redis(r).await.unwrap();
        }
    }
    let summarize_run = |mut lat: Vec<u64>, elapsed: Duration| {
        lat.sort_unstable();
        (
            lat.len() as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
        )
    };
    /// Spawns a task that makes `CALLS` calls of `$call` (with `$i` the call's index) and
    /// returns each call's latency in ns.
    macro_rules! timed_task {
        (|$i:ident| $call:expr) => {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(CALLS);
                for $i in 0..CALLS {
                    let s = Instant::now();
                    black_box($call);
                    lat.push(s.elapsed().as_nanos() as u64);
                }
                lat
            })
        };
    }
    macro_rules! run_tasks {
        ($make:expr) => {{
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS).map($make).collect();
            let mut lat = Vec::with_capacity(TASKS * CALLS);
            for t in tasks {
                lat.extend(t.await.unwrap());
            }
            summarize_run(lat, start.elapsed())
        }};
    }
    if profile {
        for _ in 0..5 {
            let r = run_tasks!(|t: usize| {
                let rs = Arc::clone(&reqs[t]);
                timed_task!(|i| charge_redis(&rs[i % KEYS]).await.unwrap())
            });
            println!("idem 64 tasks: {:.0} k/s", r.0 / 1e3);
        }
        return;
    }
    reset_stats(&mut admin).await;
    let raw_run = run_tasks!(|t: usize| {
        let keys = Arc::clone(&redis_keys[t]);
        let mut conn = raw.clone();
        timed_task!(|i| {
            let v: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&keys[i % KEYS])
                .query_async(&mut conn)
                .await
                .unwrap();
            v.unwrap()
        })
    });
    let raw_server = server_time(&mut admin).await;
    reset_stats(&mut admin).await;
    let lua_run = run_tasks!(|t: usize| {
        let keys = Arc::clone(&redis_keys[t]);
        let mut conn = raw.clone();
        let sha = lua_sha.clone();
        timed_task!(|i| {
            let v: Option<Vec<u8>> = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(&keys[i % KEYS])
                .query_async(&mut conn)
                .await
                .unwrap();
            v.unwrap()
        })
    });
    let lua_server = server_time(&mut admin).await;
    reset_stats(&mut admin).await;
    let native_run = run_tasks!(|t: usize| {
        let keys = Arc::clone(&redis_keys[t]);
        let mut conn = raw.clone();
        timed_task!(|i| {
            let v: Option<Vec<u8>> = redis::cmd("SET")
                .arg(&keys[i % KEYS])
                .arg("claim-placeholder-of-50-bytes-xxxxxxxxxxxxxxxxxxxxx")
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .arg("GET")
                .query_async(&mut conn)
                .await
                .unwrap();
            v.unwrap()
        })
    });
    let native_server = server_time(&mut admin).await;
    reset_stats(&mut admin).await;
    let idem_run = run_tasks!(|t: usize| {
        let rs = Arc::clone(&reqs[t]);
        timed_task!(|i| charge_redis(&rs[i % KEYS]).await.unwrap())
    });
    let idem_server = server_time(&mut admin).await;
    reset_stats(&mut admin).await;
    let cached_run = run_tasks!(|t: usize| {
        let rs = Arc::clone(&reqs[t]);
        timed_task!(|i| charge_cached_redis(&rs[i % KEYS]).await.unwrap())
    });
    let cached_server = server_time(&mut admin).await;
    let row = |name: &str, r: (f64, u64, u64)| {
        vec![
            name.to_owned(),
            format!("{:.0} k/s", r.0 / 1e3),
            fmt_ns(r.1 as f64),
            fmt_ns(r.2 as f64),
            format!("{:.2}×", r.0 / raw_run.0),
            format!("{:.2}×", r.0 / cached_run.0),
        ]
    };
    print_table(
        &format!(
            "Redis: {TASKS} tasks × {CALLS} hits on distinct keys, 2 workers, one multiplexed connection each"
        ),
        &[
            "variant",
            "throughput",
            "p50",
            "p99",
            "vs raw GET",
            "vs AsyncRedisCache",
        ],
        &[
            row("idem RedisStore (SET .. NX PX .. GET claim)", idem_run),
            row("raw multiplexed GET", raw_run),
            row("cached AsyncRedisCache (#[concurrent_cached])", cached_run),
            row(
                "(reference) raw EVALSHA `return redis.call('GET', KEYS[1])`",
                lua_run,
            ),
            row(
                "(reference) raw SET .. NX PX .. GET (a native one-command claim)",
                native_run,
            ),
        ],
    );

    print_table(
        &format!(
            "Redis: server time per command during each {TASKS}-task run (INFO commandstats usec_per_call, calls)"
        ),
        &["variant", "commands run by Redis"],
        &[
            vec!["idem RedisStore".into(), fmt_server_time(&idem_server)],
            vec!["raw multiplexed GET".into(), fmt_server_time(&raw_server)],
            vec![
                "cached AsyncRedisCache".into(),
                fmt_server_time(&cached_server),
            ],
            vec![
                "(reference) raw EVALSHA of a GET script".into(),
                fmt_server_time(&lua_server),
            ],
            vec![
                "(reference) raw SET .. NX PX .. GET".into(),
                fmt_server_time(&native_server),
            ],
        ],
    );

    // --- 64 tasks, first calls on distinct keys ------------------------------------------
    // Every call a new key: idem's claim, body and complete beside the pair a hand-written
    // client would send (claim with `SET NX PX`, then the result with `SET XX PX`), on the
    // same connection type. Two rounds each, alternating, every round on fresh keys.
    let record_value: Vec<u8> = redis::cmd("GET")
        .arg(&hit_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let record_value = Arc::new(record_value);
    let mut first_rows = Vec::new();
    let (mut idem_total, mut pair_total) = (0.0, 0.0);
    for round in 0..4 {
        let idem_turn = round % 2 == 1;
        reset_stats(&mut admin).await;
        let r = if idem_turn {
            let reqs: Vec<Arc<Vec<Request>>> = (0..TASKS)
                .map(|t| {
                    Arc::new(
                        (0..CALLS)
                            .map(|i| request(format!("redis-first-r{round}-t{t}-c{i}")))
                            .collect(),
                    )
                })
                .collect();
            run_tasks!(|t: usize| {
                let rs = Arc::clone(&reqs[t]);
                timed_task!(|i| charge_redis(&rs[i]).await.unwrap())
            })
        } else {
            let keys: Vec<Arc<Vec<String>>> = (0..TASKS)
                .map(|t| {
                    Arc::new(
                        (0..CALLS)
                            .map(|i| format!("raw:first:r{round}:t{t}:c{i}"))
                            .collect(),
                    )
                })
                .collect();
            run_tasks!(|t: usize| {
                let keys = Arc::clone(&keys[t]);
                let value = Arc::clone(&record_value);
                let mut conn = raw.clone();
                timed_task!(|i| {
                    let claimed: Option<String> = redis::cmd("SET")
                        .arg(&keys[i])
                        .arg("claim-placeholder-of-50-bytes-xxxxxxxxxxxxxxxxxxxxx")
                        .arg("NX")
                        .arg("PX")
                        .arg(30_000)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    assert!(claimed.is_some(), "a fresh key is claimed");
                    let stored: Option<String> = redis::cmd("SET")
                        .arg(&keys[i])
                        .arg(value.as_slice())
                        .arg("XX")
                        .arg("PX")
                        .arg(600_000)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    stored.unwrap()
                })
            })
        };
        if idem_turn {
            idem_total += r.0;
        } else {
            pair_total += r.0;
        }
        first_rows.push(vec![
            format!(
                "round {}: {}",
                round + 1,
                if idem_turn {
                    "idem RedisStore first call (claim + body + complete)"
                } else {
                    "hand-written pair: SET NX PX, then SET XX PX of the result"
                }
            ),
            format!("{:.1} k/s", r.0 / 1e3),
            fmt_ns(r.1 as f64),
            fmt_ns(r.2 as f64),
            fmt_server_time(&server_time(&mut admin).await),
        ]);
    }
    first_rows.push(vec![
        "idem / hand-written pair (sum of rounds)".into(),
        format!("{:.2}×", idem_total / pair_total),
        String::new(),
        "target ≥ 0.8×".into(),
        String::new(),
    ]);
    print_table(
        &format!(
            "Redis: {TASKS} tasks × {CALLS} first calls, each on a new key, 2 workers, ConnectionManager"
        ),
        &[
            "variant",
            "throughput",
            "p50",
            "p99",
            "server time per command (usec_per_call, calls)",
        ],
        &first_rows,
    );

    // --- Memory ------------------------------------------------------------------------
    const RECORDS: usize = 100_000;
    let before = used_memory(&mut admin).await;
    let fill: Vec<_> = (0..TASKS)
        .map(|t| {
            tokio::spawn(async move {
                for i in (t..RECORDS).step_by(TASKS) {
                    charge_redis(&request(format!("mem-{i}"))).await.unwrap();
                }
            })
        })
        .collect();
    for f in fill {
        f.await.unwrap();
    }
    let after_idem = used_memory(&mut admin).await;
    let sample: Vec<u8> = redis::cmd("GET")
        .arg(format!("idem:{}", key_of(&request("mem-0")).to_hex()))
        .query_async(&mut raw)
        .await
        .unwrap();
    // The same number of keys of the same shape, written raw.
    for chunk in 0..RECORDS / 1_000 {
        let mut pipe = redis::pipe();
        for i in chunk * 1_000..(chunk + 1) * 1_000 {
            let key = format!("rawmem:{}", key_of(&request(format!("raw-{i}"))).to_hex());
            pipe.cmd("SET")
                .arg(key)
                .arg(&sample)
                .arg("PX")
                .arg(600_000)
                .ignore();
        }
        let _: () = pipe.query_async(&mut raw).await.unwrap();
    }
    let after_raw = used_memory(&mut admin).await;
    let idem_per = (after_idem - before) as f64 / RECORDS as f64;
    let raw_per = (after_raw - after_idem) as f64 / RECORDS as f64;
    print_table(
        &format!(
            "Redis: used_memory per record ({RECORDS} records, {} value bytes)",
            sample.len()
        ),
        &["variant", "bytes/record", "vs raw SET"],
        &[
            vec![
                "idem RedisStore record".into(),
                format!("{idem_per:.0}"),
                format!("{:.2}×", idem_per / raw_per),
            ],
            vec![
                "raw SET of the same key and value, PX".into(),
                format!("{raw_per:.0}"),
                "1.00×".into(),
            ],
        ],
    );
}

/// Command counts and the paired loops.
async fn counts_and_paired(
    hit_req: &Request,
    hit_key: &str,
    raw: &ConnectionManager,
    admin: &mut ConnectionManager,
    lua_sha: &str,
) {
    let (hit_req, hit_key, lua_sha) = (hit_req.clone(), hit_key.to_owned(), lua_sha.to_owned());
    let mut raw = raw.clone();
    start_counting(admin).await;
    charge_redis(&request("redis-first-count")).await.unwrap();
    let (first_sent, first_detail) = summarize(admin).await;
    start_counting(admin).await;
    charge_redis(&hit_req).await.unwrap();
    let (hit_sent, hit_detail) = summarize(admin).await;

    start_counting(admin).await;
    let one = Arc::new(request("redis-one-key"));
    let start = Instant::now();
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let one = Arc::clone(&one);
            tokio::spawn(async move { slow_redis(&one).await.is_ok() })
        })
        .collect();
    let mut got = 0;
    for t in tasks {
        got += usize::from(t.await.unwrap());
    }
    let waiters_time = start.elapsed();
    let (waiters_sent, waiters_detail) = summarize(admin).await;
    print_table(
        "Redis: commands per call (sent: client commands from SLOWLOG; counted: INFO commandstats, with what the Lua scripts call inside)",
        &["case", "commands sent", "all counted by Redis", "target"],
        &[
            vec!["hit".into(), hit_sent.to_string(), hit_detail, "1".into()],
            vec![
                "first call".into(),
                first_sent.to_string(),
                first_detail,
                "2".into(),
            ],
            vec![
                format!(
                    "1,000 local waiters, one key, 100 ms body: {got}/1000 got the result, {} execution(s), {}",
                    SLOW_RUNS.load(Ordering::Relaxed),
                    fmt_dur(waiters_time)
                ),
                waiters_sent.to_string(),
                waiters_detail,
                "≤ 50".into(),
            ],
        ],
    );

    // --- Paired loops -------------------------------------------------------------------
    let record: Vec<u8> = redis::cmd("GET")
        .arg(&hit_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let raw_get = {
        let conn = raw.clone();
        let key = hit_key.clone();
        move |_i: usize| {
            let mut conn = conn.clone();
            let key = key.clone();
            async move {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(v.unwrap());
            }
        }
    };
    let idem_hit = |_i: usize| {
        let req = &hit_req;
        async move {
            black_box(charge_redis(req).await.unwrap());
        }
    };
    let raw_evalsha = {
        let conn = raw.clone();
        let key = hit_key.clone();
        let sha = lua_sha.clone();
        move |_i: usize| {
            let mut conn = conn.clone();
            let key = key.clone();
            let sha = sha.clone();
            async move {
                let v: Option<Vec<u8>> = redis::cmd("EVALSHA")
                    .arg(&sha)
                    .arg(1)
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(v.unwrap());
            }
        }
    };
    let raw_set_nx_get = {
        let conn = raw.clone();
        let key = hit_key.clone();
        move |_i: usize| {
            let mut conn = conn.clone();
            let key = key.clone();
            async move {
                let v: Option<Vec<u8>> = redis::cmd("SET")
                    .arg(&key)
                    .arg("claim-placeholder-of-50-bytes-xxxxxxxxxxxxxxxxxxxxx")
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(v.unwrap());
            }
        }
    };
    let value = vec![b'x'; 60];
    let raw_set_nx = {
        let conn = raw.clone();
        let value = value.clone();
        move |i: usize| {
            let mut conn = conn.clone();
            let value = value.clone();
            async move {
                let v: Option<String> = redis::cmd("SET")
                    .arg(format!("raw:first:{i}"))
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(600_000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                black_box(v);
            }
        }
    };
    let first_reqs: Vec<Request> = (0..PAIRS)
        .map(|i| request(format!("redis-first-{i}")))
        .collect();
    let idem_first = |i: usize| {
        let req = &first_reqs[i];
        async move {
            black_box(charge_redis(req).await.unwrap());
        }
    };
    // idem's own claim command, captured with SLOWLOG, replayed raw: the server and protocol
    // cost of the claim without idem's client side.
    let own_claim = {
        start_counting(admin).await;
        charge_redis(&hit_req).await.unwrap();
        let sent = client_commands(admin).await;
        assert_eq!(sent.len(), 1, "a hit is one command");
        sent.into_iter().next().unwrap()
    };
    let raw_own_claim = {
        let conn = raw.clone();
        let args = Arc::new(own_claim);
        move |_i: usize| {
            let mut conn = conn.clone();
            let args = Arc::clone(&args);
            async move {
                let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
                for arg in &args[1..] {
                    cmd.arg(arg.as_slice());
                }
                let v: redis::Value = cmd.query_async(&mut conn).await.unwrap();
                black_box(v);
            }
        }
    };
    let hit = paired(raw_get.clone(), idem_hit).await;
    let own = paired(raw_get.clone(), raw_own_claim).await;
    let lua = paired(raw_get.clone(), raw_evalsha.clone()).await;
    let native = paired(raw_get.clone(), raw_set_nx_get.clone()).await;
    let first = paired(raw_set_nx, idem_first).await;
    let _ = record;
    let row = |name: &str, r: Paired, target: &str| {
        vec![
            name.to_owned(),
            fmt_ns(r.measured),
            fmt_ns(r.baseline),
            format!("{:+.1} µs", r.extra / 1_000.0),
            format!("{:+.1} µs ({})", r.extra_awake / 1_000.0, r.awake),
            format!("{:+.1} µs ({})", r.extra_idle / 1_000.0, r.idle),
            target.to_owned(),
        ]
    };
    print_table(
        &format!(
            "Redis: paired loop, {PAIRS} iterations each, ConnectionManager on loopback (medians; awake = both halves < {} µs, idle = both over)",
            AWAKE_BELOW_NS / 1_000.0
        ),
        &[
            "case",
            "measured",
            "baseline",
            "median extra per iteration",
            "extra, vCPUs awake (n)",
            "extra, idle (n)",
            "target",
        ],
        &[
            row("idem hit vs raw GET of the same record", hit, "≤ 10 µs"),
            row(
                "(reference) raw replay of idem's own claim (same command and arguments) vs raw GET",
                own,
                "-",
            ),
            row(
                "(reference) raw EVALSHA `return redis.call('GET', KEYS[1])` vs raw GET",
                lua,
                "-",
            ),
            row(
                "(reference) raw SET .. NX PX .. GET on the record vs raw GET",
                native,
                "-",
            ),
            row(
                "idem first call (claim + body + complete) vs raw SET NX PX",
                first,
                "2 round trips vs 1",
            ),
        ],
    );
}
