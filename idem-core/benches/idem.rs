//! In-memory benchmarks: idem on `MokaStore` beside the hand-built floor, a plain call and
//! the `cached` crate. `cargo bench -p idem-core --bench idem`.
//!
//! Criterion groups: `key_derivation`, `in_memory_hit`, `in_memory_first_call`. Then custom
//! measured sections (tables on stdout): `concurrency` (64 tasks on distinct keys, 1,000
//! tasks on one key) and `memory` (RSS per record at 1,000,000 records, in child processes).
//! `IDEM_BENCH_SECTIONS=criterion,concurrency,memory` picks sections.
#![allow(missing_docs)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cached::macros::{cached, concurrent_cached};
use criterion::{BatchSize, Criterion};
use idem_core::__private::{InFlight, Spec};
use idem_core::{Key, MokaStore, SharedStore, idempotent, key_hasher};

use common::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAME: &str = "bench.charge";

// ---------------------------------------------------------------------------------------
// The functions under test. Every variant runs the same body on the same `&Request`.

/// idem on the process default store (a `MokaStore`, 100,000 records).
#[idempotent(name = "bench.charge")]
async fn charge_idem(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

/// The same, on a store of its own for the first-call group (which fills its store to
/// capacity, so moka evicts from then on) ...
#[idempotent(name = "bench.charge", store = &*FIRST_STORE)]
async fn charge_idem_first(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

/// ... and for the concurrency section.
#[idempotent(name = "bench.charge", store = &*CONCURRENT_STORE)]
async fn charge_idem_concurrent(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

static FIRST_STORE: LazyLock<SharedStore> = LazyLock::new(|| SharedStore::new(MokaStore::new()));
static CONCURRENT_STORE: LazyLock<SharedStore> =
    LazyLock::new(|| SharedStore::new(MokaStore::new()));

/// The body, called directly.
async fn charge_plain(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(black_box(req)))
}

/// `cached`'s `#[cached]`, bounded and TTL'd like `MokaStore`.
#[cached(
    max_size = 100_000,
    ttl_secs = 86_400,
    key = "Request",
    convert = { req.clone() }
)]
async fn charge_cached(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

/// `#[cached]` again, with a cache of its own for the first-call group.
#[cached(
    max_size = 100_000,
    ttl_secs = 86_400,
    key = "Request",
    convert = { req.clone() }
)]
async fn charge_cached_first(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

/// `cached`'s `#[concurrent_cached]` (sharded store), bounded and TTL'd like `MokaStore`.
#[concurrent_cached(
    max_size = 100_000,
    ttl_secs = 86_400,
    key = "Request",
    convert = { req.clone() }
)]
async fn charge_concurrent_cached(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

/// The hand-built floor: the same canonical encoding and hash, a raw `moka::future::Cache`
/// get, and the same decode (tag byte + serde_json). Fills itself on a miss.
static FLOOR: LazyLock<moka::future::Cache<Key, Arc<[u8]>>> = LazyLock::new(|| {
    moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(Duration::from_secs(86_400))
        .build()
});

async fn charge_floor(req: &Request) -> Result<Receipt, BenchError> {
    let key = key_hasher().key(&[NAME], req)?;
    if let Some(bytes) = FLOOR.get(&key).await {
        return serde_json::from_slice(&bytes[1..]).map_err(|e| BenchError(e.to_string()));
    }
    let receipt = body(req);
    let mut bytes = vec![b'O'];
    serde_json::to_writer(&mut bytes, &receipt).map_err(|e| BenchError(e.to_string()))?;
    FLOOR.insert(key, bytes.into()).await;
    Ok(receipt)
}

// ---------------------------------------------------------------------------------------
// Criterion groups.

static DERIVE_SPEC: Spec = Spec {
    name: NAME,
    ttl: Duration::from_secs(86_400),
    lease: Duration::from_secs(30),
    wait: Duration::from_secs(60),
    in_flight: InFlight::Wait,
};

fn key_derivation(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_derivation");
    let btree = request("order-42");
    let hashmap = request_hashmap("order-42");
    let hasher = key_hasher();
    g.bench_function("idem key, BTreeMap", |b| {
        b.iter(|| hasher.key(&[NAME], black_box(&btree)).unwrap())
    });
    g.bench_function("idem key, HashMap", |b| {
        b.iter(|| hasher.key(&[NAME], black_box(&hashmap)).unwrap())
    });
    g.bench_function("serde_json::to_vec + blake3", |b| {
        b.iter(|| blake3::hash(&serde_json::to_vec(black_box(&btree)).unwrap()))
    });
    g.bench_function("idem derive (key + fingerprint, as generated)", |b| {
        // The function's site, from the same two markers the macro writes.
        fn marker() {}
        b.iter(|| {
            idem_core::__private::derive(
                &DERIVE_SPEC,
                idem_core::__private::Site::new(&|| (), &marker, Some("bench::derive")),
                None::<&()>,
                #[allow(clippy::needless_borrows_for_generic_args)]
                &(idem_core::__private::arg(black_box(&btree)),),
            )
            .unwrap()
        })
    });
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn in_memory_hit(c: &mut Criterion) {
    let rt = runtime();
    let req = request("order-hit");
    // Store the result in every cache first.
    rt.block_on(async {
        charge_idem(&req).await.unwrap();
        charge_floor(&req).await.unwrap();
        charge_cached(&req).await.unwrap();
    });
    let mut g = c.benchmark_group("in_memory_hit");
    g.bench_function("idem (MokaStore)", |b| {
        b.to_async(&rt).iter(|| charge_idem(black_box(&req)))
    });
    g.bench_function("floor (encode + hash + moka::future get + decode)", |b| {
        b.to_async(&rt).iter(|| charge_floor(black_box(&req)))
    });
    g.bench_function("plain body", |b| {
        b.to_async(&rt).iter(|| charge_plain(black_box(&req)))
    });
    g.bench_function("cached #[cached]", |b| {
        b.to_async(&rt).iter(|| charge_cached(black_box(&req)))
    });
    g.finish();
}

fn in_memory_first_call(c: &mut Criterion) {
    let rt = runtime();
    let counter = AtomicU64::new(0);
    let fresh = || request(format!("first-{}", counter.fetch_add(1, Ordering::Relaxed)));
    let mut g = c.benchmark_group("in_memory_first_call");
    g.bench_function("idem (claim + body + complete)", |b| {
        b.to_async(&rt).iter_batched(
            fresh,
            |req| async move { charge_idem_first(&req).await },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("plain body", |b| {
        b.to_async(&rt).iter_batched(
            fresh,
            |req| async move { charge_plain(&req).await },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("cached #[cached] (miss + insert)", |b| {
        b.to_async(&rt).iter_batched(
            fresh,
            |req| async move { charge_cached_first(&req).await },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Custom section: concurrency.

const TASKS: usize = 64;
const KEYS_PER_TASK: usize = 64;
const CALLS_PER_TASK: usize = 20_000;

/// 64 tasks on a 2-worker runtime, each calling `f` on its own keys; one warm pass (the
/// first calls), then a measured pass of hits. Returns calls/s, p50, p99 (ns).
fn distinct_keys<F, Fut>(rt: &tokio::runtime::Runtime, label: &str, f: F) -> (f64, u64, u64)
where
    F: Fn(Arc<Vec<Request>>, usize) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Vec<u64>> + Send + 'static,
{
    let keys: Vec<Arc<Vec<Request>>> = (0..TASKS)
        .map(|t| {
            Arc::new(
                (0..KEYS_PER_TASK)
                    .map(|k| request(format!("{label}-t{t}-k{k}")))
                    .collect(),
            )
        })
        .collect();
    rt.block_on(async {
        // Warm: every key once (first calls).
        let warm: Vec<_> = keys
            .iter()
            .map(|k| tokio::spawn(f(Arc::clone(k), KEYS_PER_TASK)))
            .collect();
        for t in warm {
            t.await.unwrap();
        }
        let start = Instant::now();
        let tasks: Vec<_> = keys
            .iter()
            .map(|k| tokio::spawn(f(Arc::clone(k), CALLS_PER_TASK)))
            .collect();
        let mut all = Vec::with_capacity(TASKS * CALLS_PER_TASK);
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        all.sort_unstable();
        if std::env::var("IDEM_BENCH_DEBUG").is_ok() {
            let mean = all.iter().sum::<u64>() as f64 / all.len() as f64;
            let total: u64 = all.iter().sum();
            let slow: u64 = all.iter().filter(|&&x| x > 10_000).sum();
            let n_slow = all.iter().filter(|&&x| x > 10_000).count();
            eprintln!(
                "{label}: elapsed {elapsed:?} mean {mean:.0} ns p99.9 {} p99.99 {} max {} ns; >10µs: {n_slow} calls, {:.0}% of time",
                percentile(&all, 0.999),
                percentile(&all, 0.9999),
                all[all.len() - 1],
                slow as f64 * 100.0 / total as f64
            );
        }
        let throughput = all.len() as f64 / elapsed.as_secs_f64();
        (throughput, percentile(&all, 0.50), percentile(&all, 0.99))
    })
}

macro_rules! timed_loop {
    ($f:ident) => {
        |reqs: Arc<Vec<Request>>, calls: usize| async move {
            let mut lat = Vec::with_capacity(calls);
            for i in 0..calls {
                let req = &reqs[i % reqs.len()];
                let start = Instant::now();
                black_box($f(req).await.unwrap());
                lat.push(start.elapsed().as_nanos() as u64);
            }
            lat
        }
    };
}

static SLOW_RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(name = "bench.slow")]
async fn slow_idem(req: &Request) -> Result<Receipt, BenchError> {
    SLOW_RUNS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(body(req))
}

static SLOW_CACHED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(sync_writes = "by_key", key = "String", convert = { req.id.clone() })]
async fn slow_cached_sync(req: &Request) -> Result<Receipt, BenchError> {
    SLOW_CACHED_RUNS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(body(req))
}

fn one_key<F, Fut>(rt: &tokio::runtime::Runtime, f: F, id: &str) -> (Duration, usize)
where
    F: Fn(Arc<Request>) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let req = Arc::new(request(id));
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..1_000)
            .map(|_| tokio::spawn(f(Arc::clone(&req))))
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        (start.elapsed(), ok)
    })
}

fn concurrency() {
    let workers = std::env::var("IDEM_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let idem = distinct_keys(&rt, "idem", timed_loop!(charge_idem_concurrent));
    let conc = distinct_keys(&rt, "conc", timed_loop!(charge_concurrent_cached));
    let single = distinct_keys(&rt, "cached", timed_loop!(charge_cached));
    let row = |name: &str, r: (f64, u64, u64)| {
        vec![
            name.to_owned(),
            format!("{:.2} M/s", r.0 / 1e6),
            fmt_ns(r.1 as f64),
            fmt_ns(r.2 as f64),
            format!("{:.2}×", r.0 / conc.0),
        ]
    };
    print_table(
        &format!(
            "concurrency: {TASKS} tasks × {CALLS_PER_TASK} hits, distinct keys ({KEYS_PER_TASK} per task), 2 workers"
        ),
        &[
            "variant",
            "throughput",
            "p50",
            "p99",
            "vs #[concurrent_cached]",
        ],
        &[
            row("idem (MokaStore)", idem),
            row("cached #[concurrent_cached]", conc),
            row("cached #[cached]", single),
        ],
    );

    let (idem_time, idem_ok) = one_key(
        &rt,
        |req| async move { slow_idem(&req).await.is_ok() },
        "one-key",
    );
    let idem_runs = SLOW_RUNS.load(Ordering::Relaxed);
    let (cached_time, cached_ok) = one_key(
        &rt,
        |req| async move { slow_cached_sync(&req).await.is_ok() },
        "one-key",
    );
    let cached_runs = SLOW_CACHED_RUNS.load(Ordering::Relaxed);
    print_table(
        "concurrency: 1,000 tasks on one key, 100 ms body (wait policy)",
        &["variant", "total time", "got the result", "body executions"],
        &[
            vec![
                "idem (MokaStore)".into(),
                fmt_dur(idem_time),
                idem_ok.to_string(),
                idem_runs.to_string(),
            ],
            vec![
                "cached #[cached(sync_writes = \"by_key\")]".into(),
                fmt_dur(cached_time),
                cached_ok.to_string(),
                cached_runs.to_string(),
            ],
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Custom section: memory, measured in child processes (one per variant).

const MEMORY_RECORDS: u64 = 1_000_000;

#[idempotent(name = "bench.memory", store = MEMORY_STORE.clone())]
async fn charge_memory(req: &Request) -> Result<Receipt, BenchError> {
    Ok(body(req))
}

static MEMORY_STORE: LazyLock<SharedStore> = LazyLock::new(|| {
    SharedStore::new(
        MokaStore::builder()
            .max_capacity(MEMORY_RECORDS + 1_000)
            .build(),
    )
});

fn memory_child(variant: &str) {
    let rt = runtime();
    let mut req = request("");
    // Touch everything that is allocated once before the baseline.
    let _ = &*MEMORY_STORE;
    let raw: moka::sync::Cache<Key, Arc<[u8]>> = moka::sync::Cache::builder()
        .max_capacity(MEMORY_RECORDS + 1_000)
        .time_to_live(Duration::from_secs(86_400))
        .build();
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes();
    rt.block_on(async {
        for i in 0..MEMORY_RECORDS {
            req.id.clear();
            use std::fmt::Write;
            write!(req.id, "mem-{i}").unwrap();
            match variant {
                "idem" => {
                    charge_memory(&req).await.unwrap();
                }
                _ => {
                    // The same encoded key and value idem stores.
                    let key = key_hasher().key(&["bench.memory"], &req).unwrap();
                    let mut bytes = vec![b'O'];
                    serde_json::to_writer(&mut bytes, &body(&req)).unwrap();
                    raw.insert(key, bytes.into());
                }
            }
        }
    });
    raw.run_pending_tasks();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_bytes();
    let entries = if variant == "idem" {
        MEMORY_RECORDS
    } else {
        raw.entry_count()
    };
    println!("memory-child {variant} {before} {after} {entries}");
}

fn memory() {
    let exe = std::env::current_exe().unwrap();
    let run = |variant: &str| -> (u64, u64) {
        let out = std::process::Command::new(&exe)
            .args(["--memory-child", variant])
            .output()
            .expect("memory child");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("memory-child"))
            .unwrap_or_else(|| {
                panic!(
                    "memory child failed: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(2)
            .map(|s| s.parse().unwrap())
            .collect();
        (f[1].saturating_sub(f[0]), f[2])
    };
    let (idem, idem_n) = run("idem");
    let (raw, raw_n) = run("raw");
    let per = |bytes: u64, n: u64| bytes as f64 / n.max(1) as f64;
    print_table(
        "memory: RSS per stored record at 1,000,000 records",
        &[
            "variant",
            "RSS growth",
            "records",
            "bytes/record",
            "vs raw moka",
        ],
        &[
            vec![
                "idem MokaStore".into(),
                format!("{:.1} MiB", idem as f64 / 1048576.0),
                idem_n.to_string(),
                format!("{:.0}", per(idem, idem_n)),
                format!("{:.2}×", per(idem, idem_n) / per(raw, raw_n)),
            ],
            vec![
                "raw moka::sync::Cache<Key, Arc<[u8]>>".into(),
                format!("{:.1} MiB", raw as f64 / 1048576.0),
                raw_n.to_string(),
                format!("{:.0}", per(raw, raw_n)),
                "1.00×".into(),
            ],
        ],
    );
}

/// A bounded loop of one path, for `valgrind --tool=callgrind` or `perf record`:
/// `idem-<hash> --profile hit|first|derive|floor|cached N`.
fn profile(what: &str, n: u64) {
    let rt = runtime();
    let req = request("order-hit");
    rt.block_on(async {
        charge_idem(&req).await.unwrap();
        charge_floor(&req).await.unwrap();
        charge_cached(&req).await.unwrap();
        for i in 0..n {
            match what {
                "hit" => drop(black_box(charge_idem(&req).await)),
                "floor" => drop(black_box(charge_floor(&req).await)),
                "cached" => drop(black_box(charge_cached(&req).await)),
                "derive" => drop(black_box(key_hasher().key(&[NAME], black_box(&req)))),
                "first" => {
                    let fresh = request(format!("profile-{i}"));
                    drop(black_box(charge_idem_first(&fresh).await));
                }
                other => panic!("unknown profile {other}"),
            }
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory_child(&args[i + 1]);
        return;
    }
    if args.iter().any(|a| a == "--bench") {
        common::machine::print_machine();
    }
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        profile(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if criterion_enabled() {
        let mut c = Criterion::default().configure_from_args();
        key_derivation(&mut c);
        in_memory_hit(&mut c);
        in_memory_first_call(&mut c);
        c.final_summary();
    }
    if section_enabled("concurrency") {
        concurrency();
    }
    if section_enabled("memory") {
        memory();
    }
}
