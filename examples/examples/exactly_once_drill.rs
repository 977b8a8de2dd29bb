//! The exactly-once drill: many concurrent clients with idem's retry middleware
//! (`idem_core::client::IdempotentRetry`) charge through two `http_service` processes that
//! share a private Redis, while faults are injected on a schedule: kill -9 of a server
//! mid-request (and a restart), a frozen Redis (SIGSTOP, then SIGCONT), and connections
//! cut after the server answered (a proxy drops the first answer of one operation in five:
//! the charge was made, the client never hears of it and retries), and a restart of a
//! private PostgreSQL. One operation in five is an order (`POST /orders`: the row and its
//! idempotency record in one PostgreSQL transaction), the rest are charges. At the end it counts the charges
//! from the provider's charge log itself (`IDEM_CHARGE_LOG`: one line per charge, with its
//! idempotency key and charge id) and checks that every operation a client saw succeed
//! was charged exactly once, every one it saw fail at most once, and that every client got
//! its own operation's charge back. Orders are counted the same way, from the orders
//! table.
//!
//! ```text
//! cargo run -p examples --features client --example exactly_once_drill  # 2,400 operations
//! cargo run -p examples --features client --example exactly_once_drill -- --ops 300 --workers 16 --fault-every-ms 400
//! cargo run -p examples --features client --example exactly_once_drill -- --no-guard  # the control run: must fail
//! ```
//!
//! `--no-guard` starts the servers with `IDEM_HTTP_UNPROTECTED=1` (no `IdempotencyLayer`):
//! the same faults then charge operations twice, and the drill exits with an error.
//!
//! It needs `redis-server`, and `initdb` and `pg_ctl` (run as the `postgres` user when the
//! drill runs as root) unless `--no-postgres`, on the `PATH`; the server binary is `IDEM_DRILL_SERVER`, or
//! `http_service` built by cargo next to this example.
//!
//! The last line is the summary: operations, faults by kind, retries, replays, duplicates
//! and lost (both must be 0), and operations answered with a charge that is not theirs
//! (must be 0).

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
    postgres: bool,
}

impl Settings {
    fn from_args() -> Result<Settings, String> {
        let mut settings = Settings {
            ops: 2400,
            workers: 24,
            fault_every: Duration::from_millis(1500),
            provider_ms: 150,
            guard: true,
            postgres: true,
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
                "--no-postgres" => settings.postgres = false,
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

/// Runs a PostgreSQL tool, as the `postgres` user when the drill runs as root (the server
/// refuses to run as root).
fn pg_tool(tool: &str, args: &[&str]) -> Result<(), String> {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    let mut command = if root {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--", tool]);
        command
    } else {
        std::process::Command::new(tool)
    };
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{tool} (is PostgreSQL installed?): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A private PostgreSQL cluster in the drill's scratch directory, stopped when dropped.
struct Postgres {
    data: String,
    port: u16,
}

impl Postgres {
    async fn start(scratch: &Path) -> Result<Postgres, String> {
        let dir = scratch.join("pg");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // The server runs as `postgres` when the drill is root: it must own its directory.
        let _ = std::process::Command::new("chown")
            .args(["postgres:", &dir.display().to_string()])
            .stderr(Stdio::null())
            .status();
        let port = free_port().map_err(|e| e.to_string())?;
        let data = dir.join("data").display().to_string();
        pg_tool(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        let pg = Postgres { data, port };
        pg.ctl("start").await?;
        Ok(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn ctl(&self, action: &'static str) -> Result<(), String> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            Path::new(&self.data)
                .parent()
                .map_or("/tmp".into(), |d| d.display().to_string())
        );
        let (data, log) = (self.data.clone(), format!("{}.log", self.data));
        tokio::task::spawn_blocking(move || {
            pg_tool(
                "pg_ctl",
                &[
                    "-D", &data, "-l", &log, "-o", &options, "-m", "fast", "-w", action,
                ],
            )
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Every order row: the ids made per idempotency key.
    async fn orders(&self) -> Result<HashMap<String, Vec<String>>, String> {
        let pool = sqlx::PgPool::connect(&self.url())
            .await
            .map_err(|e| e.to_string())?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT idempotency_key, id::text FROM http_service_orders")
                .fetch_all(&pool)
                .await
                .map_err(|e| e.to_string())?;
        let mut orders: HashMap<String, Vec<String>> = HashMap::new();
        for (key, id) in rows {
            orders.entry(key).or_default().push(id);
        }
        Ok(orders)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = pg_tool(
            "pg_ctl",
            &["-D", &self.data, "-m", "immediate", "-w", "stop"],
        );
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
        "--features",
        "http,redis,postgres",
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
    /// The operations the clients saw succeed: an order (or a charge), its key, and the
    /// order (or charge) id they got.
    succeeded: std::sync::Mutex<Vec<(bool, String, String)>>,
}

/// Where the operations go: the servers directly, or through their answer-cutting proxies
/// with a client that opens a new connection per attempt.
struct Targets {
    orders: bool,
    client: ClientWithMiddleware,
    servers: [u16; 2],
    cut_client: ClientWithMiddleware,
    proxies: [u16; 2],
}

/// Operation `op` through server `op % 2`: an order of `sku-{op}` (one in five, with
/// PostgreSQL), or a charge of `op + 1` cents; one in five (charges and orders) goes
/// through the server's proxy, which cuts the first answer it sees for a key.
async fn operation(targets: &Targets, op: usize, seen: &Seen) {
    let amount = op as u64 + 1;
    let order = targets.orders && op % 5 == 1;
    let (client, port) = if matches!(op % 10, 3 | 6) {
        (&targets.cut_client, targets.proxies[op % 2])
    } else {
        (&targets.client, targets.servers[op % 2])
    };
    let (path, body) = if order {
        ("orders", format!(r#"{{"sku":"sku-{op}","quantity":1}}"#))
    } else {
        (
            "charges",
            format!(r#"{{"amount_cents":{amount},"currency":"eur"}}"#),
        )
    };
    let request = client
        .post(format!("http://127.0.0.1:{port}/{path}"))
        .header("authorization", format!("Bearer drill-{}.token", op % 7))
        .header("content-type", "application/json")
        .body(body);
    let response = match request.send().await {
        Ok(response) if response.status() == reqwest::StatusCode::CREATED => response,
        _ => {
            seen.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let Some(delivery) = Delivery::of(&response).cloned() else {
        seen.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let charge = response
        .text()
        .await
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
    let (Some(charge), Some(key)) = (charge, delivery.key()) else {
        seen.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let own = if order {
        charge["sku"].as_str() == Some(&format!("sku-{op}"))
    } else {
        charge["amount_cents"].as_u64() == Some(amount)
    };
    if !own {
        seen.confused.fetch_add(1, Ordering::Relaxed);
    }
    seen.retries
        .fetch_add(u64::from(delivery.attempts() - 1), Ordering::Relaxed);
    if delivery.replayed() {
        seen.replays.fetch_add(1, Ordering::Relaxed);
    }
    seen.ok.fetch_add(1, Ordering::Relaxed);
    let id = if order {
        charge["order_id"].as_i64().unwrap_or_default().to_string()
    } else {
        charge["id"].as_str().unwrap_or_default().to_owned()
    };
    seen.succeeded
        .lock()
        .unwrap()
        .push((order, key.to_owned(), id));
}

/// A TCP proxy to a server that cuts the connection once the answer to the first
/// request it sees with a given `Idempotency-Key` starts arriving: the server ran the
/// handler (and, behind the layer, stored its answer), the client never reads it.
struct CutProxy {
    port: u16,
    cuts: Arc<AtomicUsize>,
}

impl CutProxy {
    async fn start(upstream: u16) -> Result<CutProxy, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let seen_keys = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let counted = cuts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (cuts, seen_keys) = (counted.clone(), seen_keys.clone());
                tokio::spawn(async move {
                    let _ = relay(client, upstream, &seen_keys, &cuts).await;
                });
            }
        });
        Ok(CutProxy { port, cuts })
    }
}

async fn relay(
    mut client: tokio::net::TcpStream,
    upstream: u16,
    seen_keys: &std::sync::Mutex<std::collections::HashSet<String>>,
    cuts: &AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The request head (bounded), for its key.
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let key = String::from_utf8_lossy(&head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("idempotency-key")
            .then(|| value.trim().to_owned())
    });
    let cut = key.is_some_and(|key| seen_keys.lock().unwrap().insert(key));
    let mut server = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await?;
    server.write_all(&head).await?;
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upward = tokio::io::copy(&mut client_read, &mut server_write);
    let downward = async {
        if cut {
            let n = server_read.read(&mut buf).await?;
            if n > 0 {
                cuts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(0)
        } else {
            tokio::io::copy(&mut server_read, &mut client_write).await
        }
    };
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
    }
    Ok(())
}

/// The charge log (`user \t key \t charge id` per line): the charge ids made per key.
fn read_charges(log: &Path) -> Result<HashMap<String, Vec<String>>, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut charges: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        let [_user, key, id] = line.split('\t').collect::<Vec<_>>()[..] else {
            return Err(format!(
                "a charge log line that is not user, key, id: {line:?}"
            ));
        };
        charges
            .entry(key.to_owned())
            .or_default()
            .push(id.to_owned());
    }
    Ok(charges)
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
    let charge_log = scratch.join("charges.log");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;

    let redis = Redis::start().await?;
    let postgres = if settings.postgres {
        Some(Postgres::start(&scratch).await?)
    } else {
        None
    };
    let mut env = vec![
        (
            "IDEM_REDIS_URL",
            format!("redis://127.0.0.1:{}", redis.port),
        ),
        ("IDEM_CHARGE_LOG", charge_log.display().to_string()),
        ("IDEM_PROVIDER_MS", settings.provider_ms.to_string()),
        ("IDEM_LEASE_MS", "2000".into()),
    ];
    if !settings.guard {
        env.push(("IDEM_HTTP_UNPROTECTED", "1".into()));
    }
    if let Some(postgres) = &postgres {
        env.push(("IDEM_DATABASE_URL", postgres.url()));
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
    let proxies = [
        CutProxy::start(ports[0]).await?,
        CutProxy::start(ports[1]).await?,
    ];
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

    let retry = IdempotentRetry::new()
        .backoff(Backoff::new(Duration::from_millis(50)).max(Duration::from_secs(1)))
        .max_attempts(100)
        .max_retry_after(Duration::from_secs(5))
        .deadline(Duration::from_secs(30));
    let client = |pooled: bool| -> Result<ClientWithMiddleware, String> {
        let mut builder = reqwest::Client::builder().no_proxy();
        if !pooled {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(reqwest_middleware::ClientBuilder::new(client)
            .with(retry.clone())
            .build())
    };
    let targets = Arc::new(Targets {
        orders: postgres.is_some(),
        client: client(true)?,
        servers: ports,
        cut_client: client(false)?,
        proxies: [proxies[0].port, proxies[1].port],
    });
    let seen = Arc::new(Seen::default());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..settings.workers {
        let (targets, seen, next, ops) =
            (targets.clone(), seen.clone(), next.clone(), settings.ops);
        workers.spawn(async move {
            loop {
                let op = next.fetch_add(1, Ordering::Relaxed);
                if op >= ops {
                    break;
                }
                operation(&targets, op, &seen).await;
            }
        });
    }

    // The fault schedule, in turn: kill -9 server 0, freeze Redis, kill -9 server 1,
    // restart PostgreSQL (or freeze Redis again without it), ... until the operations are
    // done.
    let done = Arc::new(AtomicBool::new(false));
    let finished = {
        let done = done.clone();
        tokio::spawn(async move {
            while workers.join_next().await.is_some() {}
            done.store(true, Ordering::SeqCst);
        })
    };
    let (mut kills, mut freezes, mut pg_restarts) = (0usize, 0usize, 0usize);
    let mut fault = 0usize;
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(settings.fault_every).await;
        if done.load(Ordering::SeqCst) {
            break;
        }
        let at = started.elapsed().as_secs_f64();
        let progress = next.load(Ordering::Relaxed).min(settings.ops);
        if fault.is_multiple_of(2) {
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
        } else if let (3, Some(postgres)) = (fault % 4, &postgres) {
            postgres.ctl("restart").await?;
            pg_restarts += 1;
            println!(
                "t={at:5.1}s fault {:2}: pg_ctl restart -m fast of the private PostgreSQL at operation {progress}",
                fault + 1
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

    // Every key is one operation (the middleware minted it once and sent it on every
    // attempt): a key charged twice is a duplicate, whatever its client saw.
    let charges = read_charges(&charge_log)?;
    let orders = match &postgres {
        Some(postgres) => postgres.orders().await?,
        None => HashMap::new(),
    };
    drop(postgres);
    let duplicates: usize = charges
        .values()
        .chain(orders.values())
        .map(|ids| ids.len() - 1)
        .sum();
    let (mut lost, mut confused) = (0usize, seen.confused.load(Ordering::Relaxed));
    for (order, key, id) in seen.succeeded.lock().unwrap().iter() {
        let made = if *order { &orders } else { &charges };
        match made.get(key) {
            None => lost += 1,
            Some(ids) if !ids.contains(id) => confused += 1,
            Some(_) => {}
        }
    }
    let drops: usize = proxies.iter().map(|p| p.cuts.load(Ordering::Relaxed)).sum();
    println!(
        "exactly-once drill{}: operations={} (orders={}) ok={} failed={} faults={} (server_kill={kills} redis_freeze={freezes} pg_restart={pg_restarts} answer_cut={drops}) retries={} replays={} duplicates={duplicates} lost={lost} confused={confused} in {:.1}s",
        if settings.guard {
            ""
        } else {
            " WITHOUT the layer"
        },
        settings.ops,
        if settings.postgres {
            (settings.ops + 3) / 5
        } else {
            0
        },
        seen.ok.load(Ordering::Relaxed),
        seen.failed.load(Ordering::Relaxed),
        kills + freezes + pg_restarts + drops,
        seen.retries.load(Ordering::Relaxed),
        seen.replays.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
    );
    let clean = duplicates == 0 && lost == 0 && confused == 0;
    if clean {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        println!("the charge log is kept in {}", charge_log.display());
    }
    Ok(clean)
}
