//! The exactly-once drill: many concurrent clients with idem's retry middleware
//! (`idem_core::client::IdempotentRetry`) charge through two `http_service` processes that
//! share a private Redis, while faults are injected on a schedule: kill -9 of a server
//! mid-request (and a restart), a frozen Redis (SIGSTOP, then SIGCONT), and clients that
//! hang up before the answer (a short client timeout). At the end it counts the charges
//! from the provider's charge log itself (one file per charge) and checks that every
//! operation a client saw succeed was charged exactly once, every one it saw fail at most
//! once, and that no client got another operation's answer.
//!
//! ```text
//! cargo run -p examples --example exactly_once_drill                  # 2,400 operations
//! cargo run -p examples --example exactly_once_drill -- --ops 300 --workers 16 --fault-every-ms 400
//! cargo run -p examples --example exactly_once_drill -- --no-guard    # the control run: must fail
//! ```
//!
//! `--no-guard` starts the servers with `IDEM_HTTP_LAYER=off` (no `IdempotencyLayer`, so no
//! key reaches the provider either): the same faults then charge operations twice, and the
//! drill exits with an error. It needs `redis-server` on the `PATH`; the server binary is
//! `IDEM_DRILL_SERVER`, or `http_service` built by cargo next to this example.
//!
//! The last line is the summary: operations, faults by kind, retries, replays, the reruns
//! the provider deduplicated by key (a server killed after charging, before storing its
//! response: `current_key()` passed downstream is what catches those), duplicates and lost
//! (both must be 0), and operations answered with another operation's charge (must be 0).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idem_core::Backoff;
use idem_core::client::{Delivery, IdempotentRetry};
use reqwest_middleware::ClientWithMiddleware;
use tokio::process::{Child, Command};

/// The drill's size and schedule, from the command line.
struct Settings {
    ops: usize,
    workers: usize,
    fault_every: Duration,
    provider_ms: u64,
    guard: bool,
}

impl Settings {
    fn from_args() -> Result<Settings, String> {
        let mut settings = Settings {
            ops: 2400,
            workers: 24,
            fault_every: Duration::from_millis(1500),
            provider_ms: 150,
            guard: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{name} takes a number"))
            };
            match arg.as_str() {
                "--ops" => settings.ops = number("--ops")? as usize,
                "--workers" => settings.workers = number("--workers")?.max(1) as usize,
                "--fault-every-ms" => {
                    settings.fault_every =
                        Duration::from_millis(number("--fault-every-ms")?.max(50))
                }
                "--provider-ms" => settings.provider_ms = number("--provider-ms")?,
                "--no-guard" => settings.guard = false,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(settings)
    }
}

/// A loopback port free right now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits (bounded) until `port` accepts connections.
async fn wait_listening(port: u16, what: &str) -> Result<(), String> {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("{what} did not listen on port {port} within 5 s"))
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
async fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .map_err(|e| format!("kill -{signal}: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("kill -{signal} {pid} failed"))
}

/// A private `redis-server`, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Result<Redis, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("redis-server (is it installed?): {e}"))?;
        wait_listening(port, "redis-server").await?;
        Ok(Redis { child, port })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// One `http_service` process on a fixed port, restartable.
struct Server {
    binary: PathBuf,
    port: u16,
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
}

impl Server {
    async fn start(&mut self) -> Result<(), String> {
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("IDEM_HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        self.child = Some(child);
        wait_listening(self.port, "http_service").await
    }

    /// kill -9, and waits for the process to be gone.
    async fn kill(&mut self) -> Option<u32> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let _ = child.kill().await;
        pid
    }
}

/// The `http_service` binary: `IDEM_DRILL_SERVER`, or built by cargo beside this example.
fn server_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("IDEM_DRILL_SERVER") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no directory of the drill binary")?;
    let release = dir.components().any(|c| c.as_os_str() == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "examples",
        "--example",
        "http_service",
    ]);
    if release {
        build.arg("--release");
    }
    let built = build.status().map_err(|e| format!("cargo build: {e}"))?;
    if !built.success() {
        return Err("cargo build of the http_service example failed".into());
    }
    Ok(dir.join(format!("http_service{}", std::env::consts::EXE_SUFFIX)))
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    ok: AtomicUsize,
    failed: AtomicUsize,
    confused: AtomicUsize,
    retries: AtomicU64,
    replays: AtomicUsize,
    client_drops: AtomicUsize,
    /// Per operation: the client saw it succeed.
    succeeded: std::sync::Mutex<Vec<bool>>,
}

/// Operation `op`: charge `op + 1` cents (the amount names the operation in the charge
/// log) through server `op % 2`; one in ten hangs up after 60 ms, before the answer.
async fn operation(client: &ClientWithMiddleware, ports: &[u16; 2], op: usize, seen: &Seen) {
    let amount = op as u64 + 1;
    let url = format!("http://127.0.0.1:{}/charges", ports[op % 2]);
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(format!(r#"{{"amount_cents":{amount},"currency":"eur"}}"#));
    if op % 10 == 3 {
        request = request.timeout(Duration::from_millis(60));
        seen.client_drops.fetch_add(1, Ordering::Relaxed);
    }
    let response = match request.send().await {
        Ok(response) if response.status() == reqwest::StatusCode::CREATED => response,
        _ => {
            seen.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let delivery = Delivery::of(&response).cloned();
    let charged = response
        .text()
        .await
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|charge| charge["amount_cents"].as_u64());
    let Some(charged) = charged else {
        seen.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if charged != amount {
        seen.confused.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(delivery) = delivery {
        seen.retries
            .fetch_add(u64::from(delivery.attempts() - 1), Ordering::Relaxed);
        if delivery.replayed() {
            seen.replays.fetch_add(1, Ordering::Relaxed);
        }
    }
    seen.ok.fetch_add(1, Ordering::Relaxed);
    seen.succeeded.lock().unwrap()[op] = true;
}

/// The charge log: charges per amount (operation), and the reruns the provider
/// deduplicated by key.
fn read_charges(dir: &Path) -> std::io::Result<(HashMap<u64, usize>, usize)> {
    let mut charges = HashMap::new();
    let mut dedups = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("dedup-") {
            dedups += 1;
        } else if name.starts_with("charge-") {
            let text = std::fs::read_to_string(entry.path())?;
            let amount = text
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad charge {name}: {text:?}")))?;
            *charges.entry(amount).or_insert(0) += 1;
        }
    }
    Ok((charges, dedups))
}

#[tokio::main]
async fn main() {
    match drill().await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(err) => {
            eprintln!("drill failed to run: {err}");
            std::process::exit(2);
        }
    }
}

/// Runs the drill; `Ok(false)` when it counted a duplicate, a lost or a confused operation.
async fn drill() -> Result<bool, String> {
    let settings = Settings::from_args()?;
    let binary = server_binary()?;
    let scratch = std::env::temp_dir().join(format!("idem-drill-{}", std::process::id()));
    let charge_dir = scratch.join("charges");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&charge_dir).map_err(|e| e.to_string())?;

    let redis = Redis::start().await?;
    let mut env = vec![
        (
            "IDEM_REDIS_URL",
            format!("redis://127.0.0.1:{}", redis.port),
        ),
        ("IDEM_CHARGE_LOG", charge_dir.display().to_string()),
        ("IDEM_PROVIDER_MS", settings.provider_ms.to_string()),
        ("IDEM_LEASE_MS", "2000".into()),
    ];
    if !settings.guard {
        env.push(("IDEM_HTTP_LAYER", "off".into()));
    }
    let mut servers = Vec::new();
    for _ in 0..2 {
        let mut server = Server {
            binary: binary.clone(),
            port: free_port().map_err(|e| e.to_string())?,
            env: env.clone(),
            child: None,
        };
        server.start().await?;
        servers.push(server);
    }
    let ports = [servers[0].port, servers[1].port];
    println!(
        "drill: {} operations, {} workers, two http_service processes (ports {} and {}) on a private Redis (port {}), a fault every {:?}{}",
        settings.ops,
        settings.workers,
        ports[0],
        ports[1],
        redis.port,
        settings.fault_every,
        if settings.guard {
            ""
        } else {
            ", IdempotencyLayer OFF (control run)"
        },
    );

    let client = reqwest_middleware::ClientBuilder::new(
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?,
    )
    .with(
        IdempotentRetry::new()
            .backoff(Backoff::new(Duration::from_millis(50)).max(Duration::from_secs(1)))
            .max_attempts(100)
            .max_retry_after(Duration::from_secs(5))
            .deadline(Duration::from_secs(10)),
    )
    .build();
    let seen = Arc::new(Seen {
        succeeded: std::sync::Mutex::new(vec![false; settings.ops]),
        ..Seen::default()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..settings.workers {
        let (client, seen, next, ops) = (client.clone(), seen.clone(), next.clone(), settings.ops);
        workers.spawn(async move {
            loop {
                let op = next.fetch_add(1, Ordering::Relaxed);
                if op >= ops {
                    break;
                }
                operation(&client, &ports, op, &seen).await;
            }
        });
    }

    // The fault schedule, in turn: kill -9 server 0, freeze Redis, kill -9 server 1,
    // freeze Redis, ... until the operations are done.
    let done = Arc::new(AtomicBool::new(false));
    let finished = {
        let done = done.clone();
        tokio::spawn(async move {
            while workers.join_next().await.is_some() {}
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut kills, mut freezes) = (0usize, 0usize);
    let mut fault = 0usize;
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(settings.fault_every).await;
        if done.load(Ordering::SeqCst) {
            break;
        }
        let at = started.elapsed().as_secs_f64();
        let progress = next.load(Ordering::Relaxed).min(settings.ops);
        if fault % 2 == 0 {
            let server = &mut servers[(fault / 2) % 2];
            let pid = server.kill().await.unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(200)).await;
            server.start().await?;
            kills += 1;
            println!(
                "t={at:5.1}s fault {:2}: kill -9 http_service pid {pid} (port {}) mid-request at operation {progress}, restarted after 200 ms",
                fault + 1,
                server.port
            );
        } else {
            signal(redis.pid(), "STOP").await?;
            tokio::time::sleep(Duration::from_millis(1000)).await;
            signal(redis.pid(), "CONT").await?;
            freezes += 1;
            println!(
                "t={at:5.1}s fault {:2}: SIGSTOP redis-server for 1 s at operation {progress}, then SIGCONT",
                fault + 1
            );
        }
        fault += 1;
    }
    finished.await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    for server in &mut servers {
        server.kill().await;
    }
    drop(redis);

    let (charges, dedups) = read_charges(&charge_dir).map_err(|e| e.to_string())?;
    let succeeded = seen.succeeded.lock().unwrap();
    let (mut duplicates, mut lost) = (0usize, 0usize);
    for (op, ok) in succeeded.iter().enumerate() {
        let n = charges.get(&(op as u64 + 1)).copied().unwrap_or(0);
        if n > 1 {
            duplicates += n - 1;
        }
        if *ok && n == 0 {
            lost += 1;
        }
    }
    let confused = seen.confused.load(Ordering::Relaxed);
    let drops = seen.client_drops.load(Ordering::Relaxed);
    println!(
        "exactly-once drill{}: operations={} ok={} failed={} faults={} (server_kill={kills} redis_freeze={freezes} client_drop={drops}) retries={} replays={} provider_dedups={dedups} duplicates={duplicates} lost={lost} confused={confused} in {:.1}s",
        if settings.guard {
            ""
        } else {
            " WITHOUT the layer"
        },
        settings.ops,
        seen.ok.load(Ordering::Relaxed),
        seen.failed.load(Ordering::Relaxed),
        kills + freezes + drops,
        seen.retries.load(Ordering::Relaxed),
        seen.replays.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
    );
    let clean = duplicates == 0 && lost == 0 && confused == 0;
    if clean {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        println!("the charge log is kept in {}", charge_dir.display());
    }
    Ok(clean)
}
